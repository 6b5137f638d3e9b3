//! The request gate: shedding, rate limits and size limits, through the real app.

use std::net::SocketAddr;

use actix_web::http::Method;
use actix_web::{test, web};
use feed_http::{
    FeedSlot, Lifecycle, RateLimiter, Refusal, RequestGate, RequestLimits, TrustedProxies,
};

use super::{UNLIMITED, call, feeds, guarded};

fn loaded() -> (web::Data<FeedSlot<super::Feeds>>, web::Data<Lifecycle>) {
    let lifecycle = web::Data::new(Lifecycle::loading());
    lifecycle.mark_loaded();
    (
        web::Data::new(FeedSlot::holding(feeds(2, 1_000))),
        lifecycle,
    )
}

/// Behind a trusted proxy the rate limit keys on the forwarded client: two
/// clients through one proxy have a bucket each, and a peer outside the
/// trusted ranges is keyed on itself whatever `X-Forwarded-For` says.
#[actix_rt::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_rate_limited() {
    let (slot, lifecycle) = loaded();
    let gate = RequestGate::builder(UNLIMITED, lifecycle)
        .rate_limiter(RateLimiter::new(1, 2))
        .trusted_proxies("10.0.0.0/8".parse::<TrustedProxies>().unwrap())
        .build();
    let app = guarded(slot, gate).await;
    let status = |peer: &'static str, forwarded: &'static str| {
        let app = &app;
        async move {
            let mut req = test::TestRequest::get()
                .uri("/feed/1")
                .peer_addr(SocketAddr::new(peer.parse().unwrap(), 4000));
            if !forwarded.is_empty() {
                req = req.insert_header(("x-forwarded-for", forwarded));
            }
            test::call_service(app, req.to_request())
                .await
                .status()
                .as_u16()
        }
    };
    // Client A through the proxy: its burst of 2, then 429.
    assert_eq!(status("10.0.0.5", "198.51.100.1").await, 200);
    assert_eq!(status("10.0.0.5", "6.6.6.6, 198.51.100.1").await, 200);
    assert_eq!(status("10.0.0.5", "198.51.100.1").await, 429);
    // Client B through the same proxy has its own bucket.
    assert_eq!(status("10.0.0.5", "198.51.100.2").await, 200);
    // The proxy's own bucket is untouched by its clients.
    assert_eq!(status("10.0.0.5", "").await, 200);
    // An untrusted peer's header is ignored: it is keyed on itself, and
    // cannot borrow B's bucket nor a fresh one.
    assert_eq!(status("203.0.113.7", "198.51.100.9").await, 200);
    assert_eq!(status("203.0.113.7", "198.51.100.10").await, 200);
    assert_eq!(status("203.0.113.7", "198.51.100.11").await, 429);
    assert_eq!(status("10.0.0.5", "198.51.100.2").await, 200);
    assert_eq!(status("10.0.0.5", "198.51.100.2").await, 429);
}

#[actix_rt::test]
async fn over_the_rate_limit_is_429_with_retry_after() {
    let (slot, lifecycle) = loaded();
    let gate = RequestGate::builder(UNLIMITED, lifecycle)
        .rate_limiter(RateLimiter::new(1, 3))
        .build();
    let app = guarded(slot, gate).await;
    let from = |ip: &str| {
        test::TestRequest::get()
            .uri("/feed/1")
            .peer_addr(SocketAddr::new(ip.parse().unwrap(), 4000))
            .to_request()
    };
    for _ in 0..3 {
        assert_eq!(
            test::call_service(&app, from("10.0.0.1")).await.status(),
            200
        );
    }
    let refused = test::call_service(&app, from("10.0.0.1")).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers().get("retry-after").unwrap(), "1");
    let body: serde_json::Value = test::read_body_json(refused).await;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many requests")
    );
    // Another client is not affected, nor are the health endpoints.
    assert_eq!(
        test::call_service(&app, from("10.0.0.2")).await.status(),
        200
    );
    let health = test::TestRequest::get()
        .uri("/readyz")
        .peer_addr("10.0.0.1:1".parse().unwrap())
        .to_request();
    assert_eq!(test::call_service(&app, health).await.status(), 200);
}

#[actix_rt::test]
async fn size_limits_answer_414_and_431() {
    let (slot, lifecycle) = loaded();
    let limits = RequestLimits {
        max_in_flight: 0,
        max_url_bytes: 64,
        max_header_bytes: 256,
    };
    let app = guarded(slot, RequestGate::new(limits, lifecycle)).await;
    let long = format!("/feed/1?pad={}", "x".repeat(64));
    let (status, _, body, _) = call(&app, Method::GET, &long).await;
    assert_eq!(status, 414);
    assert!(body["error"].is_string());

    let big = test::TestRequest::get()
        .uri("/feed/1")
        .insert_header(("x-filler", "y".repeat(300)))
        .to_request();
    let resp = test::call_service(&app, big).await;
    assert_eq!(resp.status(), 431);

    assert_eq!(call(&app, Method::GET, "/feed/1?size=3").await.0, 200);
}

/// With every slot held by requests that have not finished, the next one is
/// shed at once with 503; health checks still pass; once a slot frees up,
/// requests succeed again.
#[actix_rt::test]
async fn requests_beyond_max_in_flight_are_shed() {
    use actix_web::dev::Service;
    use actix_web::{App, HttpResponse};
    use tokio::sync::Semaphore;

    let lifecycle = web::Data::new(Lifecycle::loading());
    lifecycle.mark_loaded();
    let limits = RequestLimits {
        max_in_flight: 2,
        ..UNLIMITED
    };
    let gate = RequestGate::new(limits, lifecycle.clone());
    // A route that holds its slot until the test releases it.
    let release = web::Data::new(Semaphore::new(0));
    let app = test::init_service(
        App::new()
            .app_data(gate.clone())
            .app_data(release.clone())
            .wrap(gate.middleware())
            .route(
                "/slow",
                web::get().to(|release: web::Data<Semaphore>| async move {
                    release.acquire().await.unwrap().forget();
                    HttpResponse::Ok().finish()
                }),
            )
            .configure(|cfg| {
                feed_http::configure(
                    cfg,
                    web::Data::new(FeedSlot::holding(feeds(1, 1_000))),
                    &gate,
                )
            }),
    )
    .await;

    let slow = || app.call(test::TestRequest::get().uri("/slow").to_request());
    let first = slow();
    let second = slow();
    // Both are now inside the handler, waiting.
    let (first, second) = {
        let mut first = Box::pin(first);
        let mut second = Box::pin(second);
        assert!(futures_poll_once(&mut first).await.is_none());
        assert!(futures_poll_once(&mut second).await.is_none());
        assert_eq!(gate.in_flight(&gate.counters().totals()), 2);

        let shed =
            test::call_service(&app, test::TestRequest::get().uri("/feed/1").to_request()).await;
        assert_eq!(shed.status(), 503);
        assert_eq!(shed.headers().get("retry-after").unwrap(), "1");
        let health =
            test::call_service(&app, test::TestRequest::get().uri("/livez").to_request()).await;
        assert_eq!(health.status(), 200);
        (first, second)
    };
    release.add_permits(2);
    assert_eq!(first.await.unwrap().status(), 200);
    assert_eq!(second.await.unwrap().status(), 200);
    assert_eq!(gate.in_flight(&gate.counters().totals()), 0);
    let ok = test::call_service(&app, test::TestRequest::get().uri("/feed/1").to_request()).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(gate.counters().totals().refused(Refusal::Shed), 1);
}

/// A request cancelled while in flight (the client went away) frees its
/// slot and is counted as unanswered, once.
#[actix_rt::test]
async fn a_cancelled_request_frees_its_slot() {
    use actix_web::dev::Service;
    use actix_web::{App, HttpResponse};
    use feed_http::Counters;

    let lifecycle = web::Data::new(Lifecycle::loading());
    lifecycle.mark_loaded();
    let limits = RequestLimits {
        max_in_flight: 1,
        ..UNLIMITED
    };
    let gate = RequestGate::builder(limits, lifecycle)
        .counters(std::sync::Arc::new(Counters::new(true)))
        .build();
    let app = test::init_service(App::new().wrap(gate.middleware()).route(
        "/never",
        web::get().to(|| async {
            std::future::pending::<()>().await;
            HttpResponse::Ok().finish()
        }),
    ))
    .await;
    let mut pending = Box::pin(app.call(test::TestRequest::get().uri("/never").to_request()));
    assert!(futures_poll_once(&mut pending).await.is_none());
    let totals = gate.counters().totals();
    assert_eq!(gate.in_flight(&totals), 1);
    drop(pending);
    let totals = gate.counters().totals();
    assert_eq!(gate.in_flight(&totals), 0);
    assert_eq!(
        (totals.started, totals.unanswered, totals.all_requests),
        (1, 1, 0)
    );
}

/// Polls a future once; `Some` when it finished.
async fn futures_poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
    use std::task::Poll;
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *future).poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}
