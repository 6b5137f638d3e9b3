//! [`Guard`]: the limits every request passes before it reaches a handler.
//!
//! In order: the URL and header size limits (414, 431), then, for everything
//! but the health endpoints, the per-client rate limit (429) and the bound on
//! requests in flight (503). Each refusal is immediate and has a JSON body
//! and, where waiting helps, `Retry-After`. While the server drains, every
//! response carries `Connection: close` so that clients move elsewhere.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError, web};

use crate::error::ApiError;
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
/// the rate limiter and the lifecycle.
#[derive(Debug)]
pub struct Guard {
    limits: GuardLimits,
    in_flight: AtomicUsize,
    rate: Option<RateLimiter>,
    lifecycle: web::Data<Lifecycle>,
    counts: GuardCounts,
}

impl Guard {
    /// A guard with these limits; `rate` is `None` when rate limiting is off.
    pub fn new(
        limits: GuardLimits,
        rate: Option<RateLimiter>,
        lifecycle: web::Data<Lifecycle>,
    ) -> Self {
        Self {
            limits,
            in_flight: AtomicUsize::new(0),
            rate,
            lifecycle,
            counts: GuardCounts::default(),
        }
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

/// The middleware: `App::new().app_data(guard).wrap(from_fn(guard::check))`.
/// Without a [`Guard`] in the app data it lets everything through.
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
    guard.counts.requests.fetch_add(1, Ordering::Relaxed);
    let refuse = |req: ServiceRequest, error: ApiError, counter: &AtomicU64| {
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(req
            .into_response(error.error_response())
            .map_into_right_body())
    };

    if let Err(error) = guard.check_size(&req) {
        return refuse(req, error, &guard.counts.too_large);
    }
    let mut _permit = None;
    if !is_health(req.path()) {
        if let (Some(rate), Some(peer)) = (&guard.rate, req.peer_addr())
            && let Err(wait) = rate.check(peer.ip())
        {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let error = ApiError::RateLimited {
                retry_after_s: seconds.max(1),
            };
            return refuse(req, error, &guard.counts.rate_limited);
        }
        match guard.enter() {
            Some(permit) => _permit = Some(permit),
            None => return refuse(req, ApiError::Overloaded, &guard.counts.shed),
        }
    }

    let mut response = next.call(req).await?;
    if guard.lifecycle.is_draining() {
        response
            .response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    Ok(response.map_into_left_body())
}
