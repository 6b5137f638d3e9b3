//! [`Guard`]: the limits every request passes before it reaches a handler.
//!
//! In order: the URL and header size limits (414, 431), then, for everything
//! but the health endpoints, the per-client rate limit (429) and the bound on
//! requests in flight (503). Each refusal is immediate and has a JSON body
//! and, where waiting helps, `Retry-After`. While the server drains, every
//! response carries `Connection: close` so that clients move elsewhere.
//!
//! It is also where each request is timed and counted ([`Metrics`]), given
//! an `x-request-id`, and logged when it fails (or, sampled, when it
//! succeeds).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError, web};
use slog::{Logger, info};

use crate::error::ApiError;
use crate::metrics::{Metrics, Route};
use crate::rate::RateLimiter;
use crate::state::Lifecycle;

/// The configured limits. A limit of 0 is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    /// Requests being handled at once, across all workers, beyond which new
    /// ones are shed with 503.
    pub max_in_flight: usize,
    /// Bytes of path and query beyond which a request gets 414.
    pub max_url_bytes: usize,
    /// Bytes of header names and values beyond which a request gets 431.
    pub max_header_bytes: usize,
}

/// Requests refused by the guard, by reason, and all requests seen.
#[derive(Debug, Default)]
pub struct GuardCounts {
    requests: AtomicU64,
    shed: AtomicU64,
    rate_limited: AtomicU64,
    too_large: AtomicU64,
}

impl GuardCounts {
    /// Requests seen, refused or not.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests shed because too many were in flight.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Requests refused by the rate limit.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Requests refused for their URL or header size.
    pub fn too_large(&self) -> u64 {
        self.too_large.load(Ordering::Relaxed)
    }
}

/// The shared state of the guard middleware: limits, the in-flight count,
/// the rate limiter, the lifecycle, the request metrics and the access log.
#[derive(Debug)]
pub struct Guard {
    limits: GuardLimits,
    in_flight: AtomicUsize,
    rate: Option<RateLimiter>,
    lifecycle: web::Data<Lifecycle>,
    counts: GuardCounts,
    metrics: Arc<Metrics>,
    logger: Logger,
    access_sample: f64,
}

impl Guard {
    /// A guard with these limits, no rate limit, metrics off and no log.
    pub fn new(limits: GuardLimits, lifecycle: web::Data<Lifecycle>) -> Self {
        Self {
            limits,
            in_flight: AtomicUsize::new(0),
            rate: None,
            lifecycle,
            counts: GuardCounts::default(),
            metrics: Arc::new(Metrics::new(false)),
            logger: Logger::root(slog::Discard, slog::o!()),
            access_sample: 0.0,
        }
    }

    /// Limits each client address (`None`: no rate limit).
    #[must_use]
    pub fn with_rate_limiter(mut self, rate: Option<RateLimiter>) -> Self {
        self.rate = rate;
        self
    }

    /// Records every request in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Logs every error response to `logger`, and a random `access_sample`
    /// share (0 to 1) of the others.
    #[must_use]
    pub fn with_logger(mut self, logger: Logger, access_sample: f64) -> Self {
        self.logger = logger;
        self.access_sample = access_sample.clamp(0.0, 1.0);
        self
    }

    /// The request metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The lifecycle the guard reads.
    pub fn lifecycle(&self) -> &web::Data<Lifecycle> {
        &self.lifecycle
    }

    /// The rate limiter, when rate limiting is on.
    pub fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.rate.as_ref()
    }

    /// What the guard has counted.
    pub fn counts(&self) -> &GuardCounts {
        &self.counts
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Lets `req` in, holding an in-flight slot unless it is a health check,
    /// or says which limit it breaks (and counts the refusal).
    fn admit(&self, req: &ServiceRequest) -> Result<Option<InFlight<'_>>, ApiError> {
        if let Err(error) = self.check_size(req) {
            self.counts.too_large.fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
        if is_health(req.path()) {
            return Ok(None);
        }
        if let (Some(rate), Some(peer)) = (&self.rate, req.peer_addr())
            && let Err(wait) = rate.check(peer.ip())
        {
            self.counts.rate_limited.fetch_add(1, Ordering::Relaxed);
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(ApiError::RateLimited {
                retry_after_s: seconds.max(1),
            });
        }
        match self.enter() {
            Some(permit) => Ok(Some(permit)),
            None => {
                self.counts.shed.fetch_add(1, Ordering::Relaxed);
                Err(ApiError::Overloaded)
            }
        }
    }

    /// A slot for one request, or `None` when all are taken.
    fn enter(&self) -> Option<InFlight<'_>> {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let permit = InFlight(&self.in_flight);
        (self.limits.max_in_flight == 0 || before < self.limits.max_in_flight).then_some(permit)
    }

    /// The first limit `req` breaks, if any.
    fn check_size(&self, req: &ServiceRequest) -> Result<(), ApiError> {
        let limits = &self.limits;
        let url = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if limits.max_url_bytes > 0 && url > limits.max_url_bytes {
            return Err(ApiError::UriTooLong);
        }
        if limits.max_header_bytes > 0 {
            let headers: usize = req
                .headers()
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len())
                .sum();
            if headers > limits.max_header_bytes {
                return Err(ApiError::HeadersTooLarge);
            }
        }
        Ok(())
    }
}

/// One request in flight; leaving decrements the count, even when the
/// request is cancelled.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Paths that are never shed nor rate limited: an orchestrator must always
/// be able to ask.
fn is_health(path: &str) -> bool {
    matches!(path, "/livez" | "/readyz")
}

/// The request id of `req`: its own `x-request-id` when that is a short
/// token, else a fresh random one.
fn request_id(req: &ServiceRequest) -> HeaderValue {
    let given = req.headers().get(REQUEST_ID).filter(|v| {
        let bytes = v.as_bytes();
        (1..=64).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    match given {
        Some(value) => value.clone(),
        None => {
            let mut hex = [0u8; 16];
            let id = fastrand::u64(..);
            for (i, digit) in hex.iter_mut().enumerate() {
                *digit = b"0123456789abcdef"[((id >> (60 - 4 * i)) & 0xf) as usize];
            }
            HeaderValue::from_bytes(&hex).unwrap_or(HeaderValue::from_static("0"))
        }
    }
}

/// The header that carries the request id, in and out.
pub const REQUEST_ID: &str = "x-request-id";

/// The middleware: `App::new().app_data(guard).wrap(from_fn(guard::check))`.
/// Without a [`Guard`] in the app data it lets everything through.
///
/// Every answer gets an `x-request-id` header; every answer is counted in
/// the metrics; every error answer is logged with its request id, path
/// (which holds the user id) and cause.
///
/// # Errors
/// Only what the wrapped service returns.
pub async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, BoxBody>>, Error> {
    let Some(guard) = req.app_data::<web::Data<Guard>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let started = Instant::now();
    guard.counts.requests.fetch_add(1, Ordering::Relaxed);
    let id = request_id(&req);
    let route = Route::of(req.path());

    let (mut response, refusal) = match guard.admit(&req) {
        Ok(permit) => {
            let response = next.call(req).await?;
            drop(permit);
            (response.map_into_left_body(), None)
        }
        Err(error) => {
            let response = req.into_response(error.error_response());
            (response.map_into_right_body(), Some(error))
        }
    };

    let status = response.status();
    if guard.lifecycle.is_draining() {
        response
            .response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    guard
        .metrics
        .record_request(route, status.as_u16(), started.elapsed());
    if status.is_client_error() || status.is_server_error() {
        let cause = refusal
            .map(|e| e.to_string())
            .or_else(|| response.response().error().map(ToString::to_string));
        let req = response.request();
        info!(guard.logger, "error response";
            "request_id" => id.to_str().unwrap_or(""), "status" => status.as_u16(),
            "method" => %req.method(), "path" => req.path(),
            "user_id" => req.path().strip_prefix("/feed/").unwrap_or(""),
            "cause" => cause.as_deref().unwrap_or(""));
    } else if guard.access_sample > 0.0 && fastrand::f64() < guard.access_sample {
        let req = response.request();
        info!(guard.logger, "request";
            "request_id" => id.to_str().unwrap_or(""), "status" => status.as_u16(),
            "method" => %req.method(), "path" => req.path(),
            "micros" => started.elapsed().as_micros());
    }
    response
        .headers_mut()
        .insert(HeaderName::from_static(REQUEST_ID), id);
    Ok(response)
}
