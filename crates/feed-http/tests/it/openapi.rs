//! The OpenAPI document (docs/openapi.json, served at the admin
//! `/openapi.json`) against the app: every documented path is a route, every
//! route a documented path, and every documented answer of every path is
//! produced, with the documented body shape, by a request made for it.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use actix_web::test::{self as actix_test};
use actix_web::web;
use feed_http::{FeedSlot, Lifecycle, OPENAPI, RateLimiter, RequestGate, RequestLimits, Route};
use serde_json::Value;

use super::{UNLIMITED, feeds, guarded};

fn document() -> Value {
    serde_json::from_str(OPENAPI).unwrap()
}

/// The documented statuses of `GET path`.
fn statuses(doc: &Value, path: &str) -> BTreeSet<u16> {
    doc["paths"][path]["get"]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{path} has no GET"))
        .keys()
        .map(|k| k.parse().unwrap())
        .collect()
}

/// The schema name a documented answer's JSON body has.
fn schema(doc: &Value, path: &str, status: u16) -> String {
    let mut response = &doc["paths"][path]["get"]["responses"][status.to_string()];
    if let Some(reference) = response["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        response = &doc["components"]["responses"][name];
    }
    let reference = response["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{path} {status} has no JSON schema"));
    reference.rsplit('/').next().unwrap().to_owned()
}

/// A body matches the named schema of the document.
fn matches(name: &str, body: &Value) -> bool {
    match name {
        "Items" => body.as_array().is_some_and(|a| a.iter().all(Value::is_u64)),
        "Error" => body["error"].is_string(),
        "Status" => ["alive", "ready", "loading", "draining"]
            .contains(&body["status"].as_str().unwrap_or("")),
        other => panic!("the test does not know schema {other}"),
    }
}

#[test]
fn documented_paths_are_the_routes() {
    let doc = document();
    let documented: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // The route table `configure` registers from (the bare `/feed` and
    // `/feed/` only answer 400 and are not separate routes).
    let routes: BTreeSet<&str> = Route::API.iter().map(|r| r.path()).collect();
    assert_eq!(documented, routes);
}

#[actix_rt::test]
async fn every_documented_answer_is_produced() {
    let doc = document();
    let lifecycle = web::Data::new(Lifecycle::loading());
    lifecycle.mark_loaded();
    let limits = RequestLimits {
        max_in_flight: 0,
        max_url_bytes: 100,
        max_header_bytes: 300,
    };
    let gate = RequestGate::builder(limits, lifecycle.clone())
        .rate_limiter(RateLimiter::new(1, 1))
        .build();
    let app = guarded(web::Data::new(FeedSlot::holding(feeds(2, 1_000))), gate).await;
    let loading_lifecycle = web::Data::new(Lifecycle::loading());
    let loading = guarded(
        web::Data::new(FeedSlot::empty()),
        RequestGate::new(UNLIMITED, loading_lifecycle),
    )
    .await;

    let peer = |n: u8| SocketAddr::from(([10, 0, 0, n], 1));
    let produced = [
        (
            "/feed/{user_id}",
            200,
            actix_test::TestRequest::get()
                .uri("/feed/1")
                .peer_addr(peer(1)),
        ),
        (
            "/feed/{user_id}",
            400,
            actix_test::TestRequest::get()
                .uri("/feed/x")
                .peer_addr(peer(2)),
        ),
        (
            "/feed/{user_id}",
            414,
            actix_test::TestRequest::get()
                .uri(&format!("/feed/1?p={}", "x".repeat(100)))
                .peer_addr(peer(3)),
        ),
        (
            "/feed/{user_id}",
            429,
            actix_test::TestRequest::get()
                .uri("/feed/1")
                .peer_addr(peer(1)),
        ),
        (
            "/feed/{user_id}",
            200,
            actix_test::TestRequest::get()
                .uri("/feed/1?size=3")
                .insert_header(("idempotency-key", "k-1"))
                .peer_addr(peer(5)),
        ),
        (
            "/feed/{user_id}",
            422,
            actix_test::TestRequest::get()
                .uri("/feed/1?size=4")
                .insert_header(("idempotency-key", "k-1"))
                .peer_addr(peer(6)),
        ),
        (
            "/feed/{user_id}",
            431,
            actix_test::TestRequest::get()
                .uri("/feed/1")
                .insert_header(("x-big", "y".repeat(400)))
                .peer_addr(peer(4)),
        ),
        ("/livez", 200, actix_test::TestRequest::get().uri("/livez")),
        (
            "/readyz",
            200,
            actix_test::TestRequest::get().uri("/readyz"),
        ),
    ];
    let mut seen: BTreeSet<(&str, u16)> = BTreeSet::new();
    for (path, status, req) in produced {
        let resp = actix_test::call_service(&app, req.to_request()).await;
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let body: Value = actix_test::read_body_json(resp).await;
        assert!(
            matches(&schema(&doc, path, status), &body),
            "{path} {status}: {body}"
        );
        seen.insert((path, status));
    }
    for (path, uri) in [("/feed/{user_id}", "/feed/1"), ("/readyz", "/readyz")] {
        let resp = actix_test::call_service(
            &loading,
            actix_test::TestRequest::get().uri(uri).to_request(),
        )
        .await;
        assert_eq!(resp.status().as_u16(), 503, "{uri}");
        assert!(resp.headers().contains_key("retry-after"));
        let body: Value = actix_test::read_body_json(resp).await;
        assert!(matches(&schema(&doc, path, 503), &body), "{uri}: {body}");
        seen.insert((path, 503));
    }

    for path in Route::API.map(Route::path) {
        for status in statuses(&doc, path) {
            assert!(
                seen.contains(&(path, status)),
                "{path} {status} is documented but not produced"
            );
        }
    }
}
