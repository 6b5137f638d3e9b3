//! Lines 1, 2, 4, 5 and 6 of the contract, one request at a time.

use std::collections::HashSet;

use actix_web::http::Method;

use super::{app, call, feeds, personal};

/// The items of a 200 answer.
fn ids(body: &serde_json::Value) -> Vec<u32> {
    serde_json::from_value(body.clone()).unwrap()
}

#[actix_rt::test]
async fn a_feed_is_served_in_order_and_progress_is_saved() {
    let service = feeds(5, 10_000_000);
    let feed = personal(&service, 1);
    let app = app(service).await;

    let (status, content_type, body, headers) = call(&app, Method::GET, "/feed/1").await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    assert_eq!(ids(&body), feed[..10]);
    // The answer moved the user's progress: no cache may keep it.
    let caching: Vec<_> = headers.get_all("cache-control").collect();
    assert_eq!(caching, ["no-store"]);

    let (_, _, body, _) = call(&app, Method::GET, "/feed/1").await;
    assert_eq!(ids(&body), feed[10..20]);

    let (_, _, body, _) = call(&app, Method::GET, "/feed/1?size=5").await;
    assert_eq!(ids(&body), feed[20..25]);

    // Five personal items are left; the other fifteen are random and new.
    let (_, _, body, _) = call(&app, Method::GET, "/feed/1?size=20").await;
    let got = ids(&body);
    assert_eq!(got.len(), 20);
    assert_eq!(got[..5], feed[25..30]);
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 20);
    assert!(got[5..].iter().all(|i| !feed[25..].contains(i)));
    assert!(got.iter().all(|&i| i != 0));

    // Exhausted: a full random answer.
    let (status, _, body, _) = call(&app, Method::GET, "/feed/1?size=7").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body).len(), 7);

    // Another user is untouched.
    let (_, _, body, _) = call(&app, Method::GET, "/feed/2?size=3").await;
    assert_eq!(ids(&body), personal(&feeds(5, 10_000_000), 2)[..3]);
}

#[actix_rt::test]
async fn sizes() {
    let service = feeds(1, 10_000_000);
    let app = app(service).await;
    for (query, expected) in [
        ("", 10),
        ("?size=0", 10),
        ("?size=1", 1),
        ("?size=200", 200),
        ("?size=%33", 3),
        ("?other=x&size=4", 4),
    ] {
        // User 9 has no feed: every answer is random, so the size is all that shows.
        let (status, _, body, _) = call(&app, Method::GET, &format!("/feed/9{query}")).await;
        assert_eq!((status, ids(&body).len()), (200, expected), "{query}");
    }
    for query in [
        "size=-1",
        "size=201",
        "size=abc",
        "size=",
        "size=1.5",
        "size=4294967296",
        "size=99999999999999999999999",
        "size=1&size=2",
        "size=%2D1",
    ] {
        let (status, content_type, body, _) =
            call(&app, Method::GET, &format!("/feed/0?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(content_type, "application/json");
        assert!(
            body["error"].as_str().unwrap().contains("size"),
            "{query}: {body}"
        );
    }
}

#[actix_rt::test]
async fn invalid_user_ids() {
    let app = app(feeds(1, 10_000_000)).await;
    for path in [
        "/feed/abc",
        "/feed/-1",
        "/feed/18446744073709551616",
        "/feed/99999999999999999999",
        "/feed/1.5",
        "/feed/+1",
        "/feed/%20",
        "/feed/",
        "/feed",
    ] {
        let (status, content_type, body, _) = call(&app, Method::GET, path).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(content_type, "application/json");
        assert!(
            body["error"].as_str().unwrap().contains("user_id"),
            "{path}: {body}"
        );
    }
    let (status, _, body, _) = call(&app, Method::GET, "/feed/4294967295").await;
    assert_eq!((status, ids(&body).len()), (200, 10));
}

#[actix_rt::test]
async fn other_methods_and_paths() {
    let app = app(feeds(1, 10_000_000)).await;
    for method in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
    ] {
        let (status, _, body, headers) = call(&app, method.clone(), "/feed/1").await;
        assert_eq!(status, 405, "{method}");
        assert_eq!(headers.get("allow").unwrap(), "GET");
        assert!(body["error"].is_string());
    }
    for path in ["/", "/feeds/1", "/feed/1/2", "/metrics", "/feed/1/"] {
        let (status, content_type, body, _) = call(&app, Method::GET, path).await;
        assert_eq!(
            (status, content_type.as_str()),
            (404, "application/json"),
            "{path}"
        );
        assert!(body["error"].is_string());
    }
}

#[actix_rt::test]
async fn unknown_users_get_a_full_random_feed_and_are_recorded() {
    let service = feeds(2, 10_000_000);
    let errors = std::sync::Arc::clone(service.errors());
    let app = app(service).await;
    let (status, _, body, _) = call(&app, Method::GET, "/feed/77?size=50").await;
    let got = ids(&body);
    assert_eq!((status, got.len()), (200, 50));
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 50);
    assert!(got.iter().all(|&i| (1..=10_000_000).contains(&i)));
    assert_eq!(errors.unknown_users(), 1);
    // Known users are not errors.
    call(&app, Method::GET, "/feed/1").await;
    assert_eq!(errors.unknown_users(), 1);
}

#[actix_rt::test]
async fn nothing_to_serve_is_503() {
    // No catalog to draw from: an unknown user gets nothing at all.
    let app = app(feeds(1, 0)).await;
    let (status, content_type, body, headers) = call(&app, Method::GET, "/feed/5").await;
    assert_eq!((status, content_type.as_str()), (503, "application/json"));
    assert!(body["error"].is_string());
    assert!(headers.contains_key("retry-after"));
}
