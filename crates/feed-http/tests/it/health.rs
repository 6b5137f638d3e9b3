//! The health endpoints and the loading state.

use actix_web::http::{ConnectionType, Method};
use actix_web::{test, web};
use feed_http::{FeedSlot, Lifecycle, RequestGate};

use super::{UNLIMITED, call, feeds, guarded};

#[actix_rt::test]
async fn readiness_follows_the_lifecycle() {
    let lifecycle = web::Data::new(Lifecycle::loading());
    let slot = web::Data::new(FeedSlot::empty());
    let app = guarded(slot.clone(), RequestGate::new(UNLIMITED, lifecycle.clone())).await;

    // Loading: alive, not ready, and the feed answers 503 with Retry-After.
    let (status, _, body, _) = call(&app, Method::GET, "/livez").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("alive")));
    let (status, _, body, headers) = call(&app, Method::GET, "/readyz").await;
    assert_eq!((status, body["status"].as_str()), (503, Some("loading")));
    assert!(headers.contains_key("retry-after"));
    let (status, content_type, body, headers) = call(&app, Method::GET, "/feed/1").await;
    assert_eq!((status, content_type.as_str()), (503, "application/json"));
    assert!(body["error"].as_str().unwrap().contains("loading"));
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    // Validation still comes first: a bad id is a 400 even while loading.
    assert_eq!(call(&app, Method::GET, "/feed/x").await.0, 400);

    // Loaded.
    assert!(slot.replace(std::sync::Arc::new(feeds(2, 1_000))).is_none());
    lifecycle.mark_loaded();
    let (status, _, body, _) = call(&app, Method::GET, "/readyz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    assert_eq!(call(&app, Method::GET, "/feed/1").await.0, 200);

    // Draining: not ready, still alive, still serving, and closing connections.
    lifecycle.begin_drain();
    let (status, _, body, _) = call(&app, Method::GET, "/readyz").await;
    assert_eq!((status, body["status"].as_str()), (503, Some("draining")));
    assert_eq!(call(&app, Method::GET, "/livez").await.0, 200);
    let resp = test::call_service(&app, test::TestRequest::get().uri("/feed/1").to_request()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.response().head().connection_type(),
        ConnectionType::Close
    );

    assert_eq!(call(&app, Method::POST, "/readyz").await.0, 405);
}
