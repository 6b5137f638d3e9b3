//! The admin listener's app: metrics, live stats, the dashboard, the OpenAPI
//! document and, with the `profiler` feature, a CPU profiler. It runs on its
//! own port (by default on loopback only), so the public port exposes the
//! feed and health only. With an admin token, its requests must carry it
//! ([`AdminAccess`], in `access.rs`).
//!
//! The profiler is off by default: a sampling profiler interrupts every
//! thread with a signal and walks its stack inside the handler, and pprof's
//! default unwinder (libgcc's) is not async-signal-safe, a known deadlock
//! and crash class. With the feature, pprof walks frame pointers instead,
//! which only reads the stack; build with `-C force-frame-pointers=yes` for
//! whole stacks (docs/PROFILING.md). The flamegraph is built on a blocking
//! thread, so `/metrics` on the single admin worker never waits for it.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
#[cfg(feature = "profiler")]
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::HttpRequest;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{CacheControl, CacheDirective, ContentType};
use actix_web::{App, HttpResponse, web};
use bytes::Bytes;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::WatchStream;

use crate::access::{AdminAccess, require_token};
use feed_domain::{BlocklistControl, DataControl, DataControlError, DataInfo, ItemId};

use crate::error::ApiError;
use crate::exposition::Exposition;
use crate::serving::DataBody;
use crate::state::Lifecycle;
use crate::stats::Snapshot;

/// The dashboard: one self-contained page, no external resources.
const DASHBOARD: &str = include_str!("../assets/dashboard.html");

/// The OpenAPI 3 document of the public API.
pub const OPENAPI: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/openapi.json"
));

/// Longest CPU profile one request may ask for.
#[cfg(feature = "profiler")]
const MAX_PROFILE_SECONDS: u32 = 60;

/// The largest admin request body: a blocklist change of
/// `feed_memory::MAX_BLOCKED` ten-digit ids, with room to spare.
const ADMIN_BODY_LIMIT: usize = 16 << 20;

/// What the admin endpoints read.
#[derive(Debug)]
pub struct Admin {
    registry: Registry,
    snapshots: watch::Receiver<Snapshot>,
    lifecycle: web::Data<Lifecycle>,
    data: Option<Arc<dyn DataControl>>,
    blocklist: Option<Arc<dyn BlocklistControl>>,
    access: AdminAccess,
    #[cfg(feature = "profiler")]
    profiling: AtomicBool,
}

/// The JSON body of a reload request; every field optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadRequest {
    path: Option<PathBuf>,
}

/// The answer of a successful reload or rollback.
#[derive(Debug, serde::Serialize)]
struct DataChanged {
    status: &'static str,
    data: DataBody,
}

impl Admin {
    /// Admin endpoints over `registry` (for `/metrics`) and the snapshots a
    /// [`crate::Sampler`] publishes (for `/stats` and `/events`).
    pub fn new(
        registry: Registry,
        snapshots: watch::Receiver<Snapshot>,
        lifecycle: web::Data<Lifecycle>,
    ) -> Self {
        Self {
            registry,
            snapshots,
            lifecycle,
            data: None,
            blocklist: None,
            access: AdminAccess::open(),
            #[cfg(feature = "profiler")]
            profiling: AtomicBool::new(false),
        }
    }

    /// Serves `POST /admin/reload` and `POST /admin/rollback` through
    /// `data` (without it they answer 404).
    #[must_use]
    pub fn with_data_control(mut self, data: Arc<dyn DataControl>) -> Self {
        self.data = Some(data);
        self
    }

    /// Serves `GET` and `POST /admin/blocklist` through `blocklist`
    /// (without it they answer 404).
    #[must_use]
    pub fn with_blocklist(mut self, blocklist: Arc<dyn BlocklistControl>) -> Self {
        self.blocklist = Some(blocklist);
        self
    }

    /// Who may use the endpoints (by default: anyone who reaches them).
    #[must_use]
    pub fn with_access(mut self, access: AdminAccess) -> Self {
        self.access = access;
        self
    }

    /// Who may use the endpoints.
    pub(crate) fn access(&self) -> &AdminAccess {
        &self.access
    }
}

/// The admin app.
///
/// - `GET /metrics`: Prometheus (OpenMetrics) text;
/// - `GET /stats`: the latest [`Snapshot`] as JSON;
/// - `GET /events`: Server-Sent Events, one snapshot a second;
/// - `GET /dashboard`: live charts of the snapshots;
/// - `GET /openapi.json`: the public API's OpenAPI document;
/// - `POST /admin/reload` (optional body `{"path": "..."}`): load, verify
///   and swap in a snapshot; `POST /admin/rollback`: back to the previous
///   one. 200 with the data now served, or a JSON error (400 bad body, 404
///   no data control, 409 busy or nothing to roll back to, 422 the snapshot
///   was refused);
/// - `GET /debug/pprof/profile?seconds=N`: an N-second CPU profile as a
///   flamegraph SVG (default 10, at most 60, one at a time); 404 with a JSON
///   error when built without the `profiler` feature.
///
/// With an [`AdminAccess`] token, a request without it gets 401 (see
/// `access.rs` for the two exceptions, `/metrics` and `/dashboard`).
pub fn admin_app(
    admin: web::Data<Admin>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(admin)
        // A blocklist change of a million items is about 8 MB of JSON.
        .app_data(web::PayloadConfig::new(ADMIN_BODY_LIMIT))
        .wrap(actix_web::middleware::from_fn(require_token))
        .route("/metrics", web::get().to(metrics))
        .route("/stats", web::get().to(stats))
        .route("/events", web::get().to(events))
        .route("/dashboard", web::get().to(dashboard))
        .route("/openapi.json", web::get().to(openapi))
        .route("/admin/reload", web::post().to(reload))
        .route("/admin/rollback", web::post().to(rollback))
        .route("/admin/blocklist", web::get().to(blocklist))
        .route("/admin/blocklist", web::post().to(change_blocklist))
        .route("/debug/pprof/profile", web::get().to(profile))
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(ApiError::NotFound)
        }))
}

async fn metrics(admin: web::Data<Admin>) -> HttpResponse {
    match Exposition::encode(&admin.registry) {
        Ok(text) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(text),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

async fn stats(admin: web::Data<Admin>) -> HttpResponse {
    let snapshot = admin.snapshots.borrow().clone();
    HttpResponse::Ok()
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .json(snapshot)
}

/// One SSE message a snapshot, the current one first. The stream ends when
/// the server starts draining, so that open dashboards never hold up a
/// shutdown.
async fn events(admin: web::Data<Admin>) -> HttpResponse {
    let lifecycle = admin.lifecycle.clone();
    let stream = WatchStream::new(admin.snapshots.clone())
        .take_while(move |_| !lifecycle.is_draining())
        .map(|snapshot| {
            let json = serde_json::to_string(&snapshot).unwrap_or_else(|_| "{}".into());
            Ok::<_, Infallible>(Bytes::from(format!("data: {json}\n\n")))
        });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .streaming(stream)
}

async fn reload(admin: web::Data<Admin>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let request: ReloadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidBody(e.to_string()))?
    };
    change_data(&admin, "reloaded", move |data| data.reload(request.path)).await
}

async fn rollback(admin: web::Data<Admin>) -> Result<HttpResponse, ApiError> {
    change_data(&admin, "rolled back", |data| data.rollback()).await
}

/// The body of `POST /admin/blocklist`: both lists optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BlocklistChange {
    #[serde(default)]
    add: Vec<u32>,
    #[serde(default)]
    remove: Vec<u32>,
}

#[derive(Debug, serde::Serialize)]
struct Blocked {
    blocked: usize,
}

#[derive(Debug, serde::Serialize)]
struct BlockedItems {
    items: Vec<u32>,
}

async fn blocklist(admin: web::Data<Admin>) -> Result<HttpResponse, ApiError> {
    let list = admin.blocklist.clone().ok_or(ApiError::NotFound)?;
    let items = web::block(move || list.items())
        .await
        .map_err(|_| ApiError::Internal("the blocklist thread failed; see the log"))?;
    Ok(HttpResponse::Ok().json(BlockedItems {
        items: items.into_iter().map(ItemId::get).collect(),
    }))
}

async fn change_blocklist(
    req: HttpRequest,
    admin: web::Data<Admin>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let list = admin.blocklist.clone().ok_or(ApiError::NotFound)?;
    let change: BlocklistChange =
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidBody(e.to_string()))?;
    let client = req
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |addr| addr.ip().to_string());
    let blocked = web::block(move || {
        let ids = |items: &[u32]| items.iter().copied().map(ItemId::new).collect::<Vec<_>>();
        list.change(&ids(&change.add), &ids(&change.remove), &client)
    })
    .await
    .map_err(|_| ApiError::Internal("the blocklist thread failed; see the log"))?
    .map_err(ApiError::Blocklist)?;
    Ok(HttpResponse::Ok().json(Blocked { blocked }))
}

/// Runs a data change on a blocking thread and answers with its outcome.
async fn change_data(
    admin: &Admin,
    status: &'static str,
    change: impl FnOnce(&dyn DataControl) -> Result<DataInfo, DataControlError> + Send + 'static,
) -> Result<HttpResponse, ApiError> {
    let data = admin.data.clone().ok_or(ApiError::NotFound)?;
    let outcome = web::block(move || change(&*data))
        .await
        .map_err(|_| ApiError::Internal("the reload thread failed; see the log"))?;
    let data = outcome.map_err(ApiError::DataChange)?;
    Ok(HttpResponse::Ok().json(DataChanged {
        status,
        data: data.into(),
    }))
}

async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(ContentType::html())
        .body(DASHBOARD)
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(ContentType::json())
        .body(OPENAPI)
}

#[cfg(not(feature = "profiler"))]
async fn profile() -> Result<HttpResponse, ApiError> {
    Err(ApiError::ProfilerNotBuilt)
}

/// Clears the "profiling" flag however the request ends.
#[cfg(feature = "profiler")]
struct Profiling<'a>(&'a AtomicBool);

#[cfg(feature = "profiler")]
impl Drop for Profiling<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(feature = "profiler")]
async fn profile(req: HttpRequest, admin: web::Data<Admin>) -> Result<HttpResponse, ApiError> {
    let seconds = match crate::parse::query_u32(req.query_string(), "seconds") {
        Ok(None) => 10,
        Ok(Some(n)) if (1..=MAX_PROFILE_SECONDS).contains(&n) => n,
        _ => return Err(ApiError::InvalidSeconds(MAX_PROFILE_SECONDS)),
    };
    if admin.profiling.swap(true, Ordering::AcqRel) {
        return Err(ApiError::Busy);
    }
    let _profiling = Profiling(&admin.profiling);
    let profiler = pprof::ProfilerGuardBuilder::default()
        .frequency(99)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|_| ApiError::ProfilerUnavailable)?;
    actix_web::rt::time::sleep(std::time::Duration::from_secs(u64::from(seconds))).await;
    // Resolving symbols and drawing the flamegraph takes a while: off the
    // admin worker, so that scrapes go on meanwhile.
    let svg = web::block(move || flamegraph(&profiler, seconds))
        .await
        .map_err(|_| ApiError::ProfilerUnavailable)??;
    Ok(HttpResponse::Ok().content_type("image/svg+xml").body(svg))
}

#[cfg(feature = "profiler")]
fn flamegraph(profiler: &pprof::ProfilerGuard<'_>, seconds: u32) -> Result<Vec<u8>, ApiError> {
    let report = profiler
        .report()
        .build()
        .map_err(|_| ApiError::ProfilerUnavailable)?;
    let mut svg = Vec::new();
    if !report.data.is_empty() {
        report
            .flamegraph(&mut svg)
            .map_err(|_| ApiError::ProfilerUnavailable)?;
    }
    if svg.is_empty() {
        // An idle server gives no samples, and no flamegraph: say so in an SVG.
        svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="640" height="40"><text x="10" y="25">no CPU samples in {seconds} s: the server was idle</text></svg>"#
        )
        .into_bytes();
    }
    Ok(svg)
}
