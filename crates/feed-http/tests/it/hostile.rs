//! Line 6: no input makes the app panic or answer 5xx.

use actix_web::http::Method;
use actix_web::test as actix_test;
use proptest::prelude::*;

use super::{app, feeds};

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
        "[0-9]{0,12}",
        "-?[0-9a-z%+.]{0,8}",
        Just("%FF".to_owned()),
        Just("%00".to_owned()),
    ];
    let query = prop_oneof![
        Just(String::new()),
        "size=[-0-9a-z%+&=]{0,14}",
        "[a-z=&%0-9]{0,16}",
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn never_a_5xx(requests in prop::collection::vec((method(), uri()), 1..20)) {
        actix_rt::System::new().block_on(async {
            let app = app(feeds(3, 1_000)).await;
            for (method, uri) in requests {
                let req = actix_test::TestRequest::default().method(method.clone()).uri(&uri).to_request();
                let resp = actix_test::call_service(&app, req).await;
                let status = resp.status().as_u16();
                prop_assert!(matches!(status, 200 | 400 | 404 | 405), "{method} {uri}: {status}");
                let body = actix_test::read_body(resp).await;
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok() || method == Method::HEAD, "{method} {uri}: {body:?}");
            }
            Ok(())
        })?;
    }
}
