//! The routes and their handlers.

use std::cell::Cell;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse, fn_service};
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{App, HttpResponse, ResponseError, web};
use feed_domain::{ErrorRecorder, FeedService, FeedStorage, IdempotencyKey, ItemId, RandomFeed};
use serde::Serialize;

use crate::counters::Counters;
use crate::encode::encode_items;
use crate::error::ApiError;
use crate::gate::RequestGate;
use crate::parse;
use crate::route::Route;
use crate::state::Lifecycle;

thread_local! {
    /// Each worker thread's item buffer, reused by every request it serves so
    /// that the domain path allocates nothing.
    static ITEMS: Cell<Vec<ItemId>> = const { Cell::new(Vec::new()) };
}

/// The feed service being served, once the data is loaded; replaced
/// atomically when new data is swapped in. A request holds the version it
/// started with to its end (a guard taken without any shared write in the
/// common case), and a version is dropped, its memory released, when its
/// last request is done.
#[derive(Debug)]
pub struct FeedSlot<T>(ArcSwapOption<T>);

impl<T> Default for FeedSlot<T> {
    fn default() -> Self {
        Self(ArcSwapOption::empty())
    }
}

impl<T> FeedSlot<T> {
    /// An empty slot: the data is loading.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A slot holding `service`.
    pub fn holding(service: T) -> Self {
        Self(ArcSwapOption::from_pointee(service))
    }

    /// Serves `service` from now on and returns the one it replaces.
    pub fn replace(&self, service: Arc<T>) -> Option<Arc<T>> {
        self.0.swap(Some(service))
    }

    /// The service served now, if any.
    pub fn current(&self) -> Option<Arc<T>> {
        self.0.load_full()
    }
}

/// The whole public app: the [`RequestGate`] middleware around
/// [`configure`]'s routes. The server runs exactly this, and so do the tests.
pub fn app<S, R, E>(
    feeds: web::Data<FeedSlot<FeedService<S, R, E>>>,
    gate: RequestGate,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
>
where
    S: FeedStorage,
    R: RandomFeed,
    E: ErrorRecorder,
{
    App::new()
        .wrap(gate.middleware())
        .configure(|cfg| configure(cfg, feeds, &gate))
}

/// What the feed route reads, in one app-data value (one lookup a
/// request): the slot and where its answers are counted.
struct FeedRoute<T> {
    feeds: web::Data<FeedSlot<T>>,
    counters: Arc<Counters>,
}

/// Registers the public API, exactly the routes of [`Route::API`], on an
/// app or scope:
///
/// - `GET /feed/{user_id}?size=N`: the user's next items, a JSON array
///   (503 with `Retry-After` while the feeds are loading);
/// - `/feed` and `/feed/` without an id: 400;
/// - `GET /livez`: 200 while the process runs;
/// - `GET /readyz`: 200 when loaded and not draining, else 503;
/// - any other method on those paths: 405 with `Allow: GET`;
/// - anything else: 404.
///
/// Every body is JSON. Readiness follows the `gate`'s lifecycle, and feed
/// answers are counted in its counters.
pub fn configure<S, R, E>(
    cfg: &mut web::ServiceConfig,
    feeds: web::Data<FeedSlot<FeedService<S, R, E>>>,
    gate: &RequestGate,
) where
    S: FeedStorage,
    R: RandomFeed,
    E: ErrorRecorder,
{
    cfg.app_data(FeedRoute {
        feeds,
        counters: Arc::clone(gate.counters()),
    })
    .app_data(gate.lifecycle().clone());
    for route in Route::API {
        match route {
            // One prefix scope for everything under /feed: its handler splits
            // the rest of the path itself. A `/feed/{user_id}` resource would
            // match with a regular expression, which a profile showed to be
            // a large share of the server's CPU.
            // A plain service function rather than a handler: the feed
            // route needs no extractor, and skipping actix's extraction and
            // responder layers saves a measurable share of a request's
            // instructions (docs/BENCHMARKS.md).
            Route::Feed => cfg.service(
                web::scope(Route::FEED_PREFIX).default_service(fn_service(feed_route::<S, R, E>)),
            ),
            Route::Livez => cfg.service(
                web::resource(route.path())
                    .route(web::get().to(livez))
                    .default_service(web::to(method_not_allowed)),
            ),
            Route::Readyz => cfg.service(
                web::resource(route.path())
                    .route(web::get().to(readyz))
                    .default_service(web::to(method_not_allowed)),
            ),
            Route::Unmatched => cfg,
        };
    }
    cfg.default_service(web::to(not_found));
}

/// Everything under `/feed`: `GET /feed/{user_id}` serves, `/feed` and
/// `/feed/` lack an id (400), deeper paths do not exist (404), other methods
/// are not allowed (405). An error answer carries its [`ApiError`], as a
/// handler's would, for the gate's error log.
async fn feed_route<S, R, E>(req: ServiceRequest) -> Result<ServiceResponse, actix_web::Error>
where
    S: FeedStorage,
    R: RandomFeed,
    E: ErrorRecorder,
{
    let response = match feed_answer::<S, R, E>(&req).await {
        Ok(response) => response,
        Err(error) => HttpResponse::from_error(error),
    };
    Ok(req.into_response(response))
}

/// The answer of [`feed_route`].
async fn feed_answer<S, R, E>(req: &ServiceRequest) -> Result<HttpResponse, ApiError>
where
    S: FeedStorage,
    R: RandomFeed,
    E: ErrorRecorder,
{
    if req.method() != Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    // The percent-decoded path after "/feed".
    let user = match req.match_info().unprocessed() {
        "" | "/" => return Err(ApiError::InvalidUserId),
        rest => match rest.strip_prefix('/') {
            // An id is digits only: a deeper path is found when one fails.
            Some(id) => match parse::user_id(id) {
                Err(_) if id.contains('/') => return Err(ApiError::NotFound),
                parsed => parsed?,
            },
            None => return Err(ApiError::NotFound),
        },
    };
    let route = req
        .app_data::<FeedRoute<FeedService<S, R, E>>>()
        .ok_or(ApiError::Loading)?;
    let service = route.feeds.0.load();
    let service = service.as_ref().ok_or(ApiError::Loading)?;
    let size = parse::size(req.query_string(), service.limits())?;
    let key = idempotency_key(req)?;
    // The worker's buffer is moved out for the await (a remote store's answer
    // may interleave with other requests on this thread) and put back after.
    let mut items = ITEMS.take();
    let served = service.next_page(user, size, key, &mut items).await;
    let body = served.map(|served| {
        // A replay hands out nothing new: it is counted as one, not as items.
        if served.replayed {
            route.counters.record_replay();
        } else {
            route
                .counters
                .record_feed(served.personal, served.random, served.exhausted_now);
        }
        (encode_items(&items), served.replayed)
    });
    ITEMS.set(items);
    let (body, replayed) = body?;
    let mut response = HttpResponse::with_body(StatusCode::OK, BoxBody::new(body));
    // Constant header values: `insert_header(ContentType::json())` formats
    // the media type for every answer. The new head has no header yet, so
    // `append` (which makes no "removed" value to drop) cannot duplicate one.
    let headers = response.headers_mut();
    headers.append(CONTENT_TYPE, JSON);
    // The answer moved the user's progress: no cache may keep it and hand
    // it out again.
    headers.append(CACHE_CONTROL, NO_STORE);
    if replayed {
        headers.append(IDEMPOTENT_REPLAYED, TRUE);
    }
    Ok(response)
}

/// The request's `Idempotency-Key`, if it has one.
///
/// # Errors
/// [`ApiError::InvalidIdempotencyKey`] for a key that is not 1 to 255
/// visible ASCII characters, or for two of them.
fn idempotency_key(req: &ServiceRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut keys = req.headers().get_all(IDEMPOTENCY_KEY);
    let Some(raw) = keys.next() else {
        return Ok(None);
    };
    if keys.next().is_some() {
        return Err(ApiError::InvalidIdempotencyKey(
            "sent more than once, expected one key",
        ));
    }
    Ok(Some(IdempotencyKey::parse(raw.as_bytes())?))
}

/// The retry key's request header (IETF httpapi's `Idempotency-Key`).
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The header that marks a retry's answer, made at compile time.
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// `true`, made at compile time.
const TRUE: HeaderValue = HeaderValue::from_static("true");

/// `Content-Type: application/json`, made at compile time.
const JSON: HeaderValue = HeaderValue::from_static("application/json");
/// `Cache-Control: no-store`, made at compile time.
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "alive" })
}

async fn readyz(lifecycle: web::Data<Lifecycle>) -> HttpResponse {
    let status = match (lifecycle.is_loaded(), lifecycle.is_draining()) {
        (_, true) => "draining",
        (false, false) => "loading",
        (true, false) => return HttpResponse::Ok().json(Status { status: "ready" }),
    };
    HttpResponse::ServiceUnavailable()
        .insert_header(("retry-after", "1"))
        .json(Status { status })
}

async fn method_not_allowed() -> HttpResponse {
    ApiError::MethodNotAllowed.error_response()
}

async fn not_found() -> HttpResponse {
    ApiError::NotFound.error_response()
}
