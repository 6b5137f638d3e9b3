//! Line 6: no input makes the app panic or answer 5xx (other than the 503s
//! it means to give). Arbitrary methods, paths, queries and headers go
//! through the whole app, guard included.

use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::test as actix_test;
use actix_web::web;
use feed_http::{FeedSlot, Lifecycle, RateLimiter, RequestGate, RequestLimits};
use proptest::prelude::*;

use super::{feeds, guarded};

/// Client addresses, few enough that some clients go over the rate limit.
fn peer() -> impl Strategy<Value = std::net::SocketAddr> {
    prop_oneof![
        (0u8..4).prop_map(|n| std::net::SocketAddr::from(([10, 0, 0, n], 4000))),
        (0u16..4)
            .prop_map(|n| std::net::SocketAddr::from(([0x2001, 0xdb8, 0, n, 0, 0, 0, 1], 4000))),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::HEAD),
        Just(Method::OPTIONS),
        Just(Method::DELETE),
    ]
}

/// Paths and queries built from pieces that stress the parsers.
fn uri() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("feed".to_owned()),
        Just("readyz".to_owned()),
        Just("livez".to_owned()),
        "[0-9]{0,12}",
        "-?[0-9a-z%+.]{0,8}",
        Just("%FF".to_owned()),
        Just("%00".to_owned()),
    ];
    let query = prop_oneof![
        Just(String::new()),
        "size=[-0-9a-z%+&=]{0,14}",
        "[a-z=&%0-9]{0,16}",
        "size=[0-9]{1,30}",
    ];
    (prop::collection::vec(segment, 0..4), query).prop_map(|(segments, query)| {
        let path = format!("/{}", segments.join("/"));
        if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        }
    })
}

/// Arbitrary header names and printable values, some of them large.
fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        Just("content-length".to_owned()),
        Just("connection".to_owned()),
        Just("x-forwarded-for".to_owned()),
        Just("accept".to_owned()),
        "x-[a-z]{1,12}",
    ];
    let value = prop_oneof!["[ -~]{0,40}", "[a-z]{200,400}"];
    prop::collection::vec((name, value), 0..5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn never_a_5xx(requests in prop::collection::vec((method(), uri(), headers(), peer()), 1..20), loaded in any::<bool>()) {
        actix_rt::System::new().block_on(async {
            let lifecycle = web::Data::new(Lifecycle::loading());
            let slot = web::Data::new(FeedSlot::empty());
            if loaded {
                slot.replace(std::sync::Arc::new(feeds(3, 1_000)));
                lifecycle.mark_loaded();
            }
            let limits = RequestLimits { max_in_flight: 8, max_url_bytes: 64, max_header_bytes: 512 };
            // A small burst, so that the rate limit answers 429 within a case.
            let gate = RequestGate::builder(limits, lifecycle).rate_limiter(RateLimiter::new(1, 5)).build();
            let app = guarded(slot, gate).await;
            for (method, uri, headers, peer) in requests {
                let mut req = actix_test::TestRequest::default().method(method.clone()).uri(&uri).peer_addr(peer);
                for (name, value) in &headers {
                    if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
                        req = req.append_header((name, value));
                    }
                }
                let resp = actix_test::call_service(&app, req.to_request()).await;
                let status = resp.status().as_u16();
                let allowed = matches!(status, 200 | 400 | 404 | 405 | 414 | 429 | 431) || (status == 503 && !loaded);
                prop_assert!(allowed, "{method} {uri} {headers:?}: {status}");
                let body = actix_test::read_body(resp).await;
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok(), "{method} {uri}: {body:?}");
            }
            Ok(())
        })?;
    }
}
