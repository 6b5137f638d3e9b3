//! HTTP behaviour of the public API, through `actix_web::test` (no socket).
//! One test binary for the crate, with a module per area.

mod admin;
mod api;
mod gate;
mod health;
mod hostile;
mod openapi;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, web};
use feed_domain::{ErrorRecorder, FeedError, FeedService, SizeLimits, UserId};
use feed_http::{Counters, FeedErrorKind, FeedSlot, Lifecycle, RequestGate, RequestLimits};
use feed_memory::{CatalogRandomFeed, DataSpec, FeedTable, MemoryFeedStorage};

/// Counts feed errors, as the server's recorder does, without logging.
#[derive(Debug)]
struct CountingRecorder(Counters);

impl CountingRecorder {
    /// Unknown-user errors recorded.
    fn unknown_users(&self) -> u64 {
        self.0.totals().feed_errors_of(FeedErrorKind::UnknownUser)
    }
}

impl ErrorRecorder for CountingRecorder {
    fn record(&self, _: UserId, error: &FeedError) {
        self.0.record_feed_error(FeedErrorKind::of(error));
    }
}

type Feeds = FeedService<MemoryFeedStorage, CatalogRandomFeed, Arc<CountingRecorder>>;

/// A service over `users` generated users with 30-item feeds, a catalog of
/// `catalog` items, default size 10 and maximum 200.
fn feeds(users: u32, catalog: u32) -> Feeds {
    let spec = DataSpec::new(users, 30, catalog.max(30), 7).unwrap();
    let table = FeedTable::generate(&spec, 2, &AtomicU64::new(0));
    FeedService::new(
        MemoryFeedStorage::new(table),
        CatalogRandomFeed::new(catalog),
        Arc::new(CountingRecorder(Counters::new(false))),
        SizeLimits::new(10, 200).unwrap(),
    )
}

/// No limit at all.
const UNLIMITED: RequestLimits = RequestLimits {
    max_in_flight: 0,
    max_url_bytes: 0,
    max_header_bytes: 0,
};

/// The app under test, loaded, with no limits.
async fn app(
    service: Feeds,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    let lifecycle = web::Data::new(Lifecycle::loading());
    let slot = web::Data::new(FeedSlot::holding(service));
    lifecycle.mark_loaded();
    guarded(slot, RequestGate::new(UNLIMITED, lifecycle)).await
}

/// The app over `slot` behind `gate`.
async fn guarded(
    slot: web::Data<FeedSlot<Feeds>>,
    gate: RequestGate,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(feed_http::app(slot, gate)).await
}

/// The personal feed of `user`, as the table holds it.
fn personal(service: &Feeds, user: u32) -> Vec<u32> {
    service
        .storage()
        .table()
        .feed(UserId::new(user.into()))
        .unwrap()
        .to_vec()
}

/// Sends `method uri` and returns the status, the content type and the body.
async fn call(
    app: &impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
    method: actix_web::http::Method,
    uri: &str,
) -> (
    u16,
    String,
    serde_json::Value,
    actix_web::http::header::HeaderMap,
) {
    let req = test::TestRequest::default()
        .method(method)
        .uri(uri)
        .to_request();
    let resp = test::call_service(app, req).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = test::read_body(resp).await;
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{uri}: body {body:?} is not JSON: {e}"));
    (status, content_type, json, headers)
}
