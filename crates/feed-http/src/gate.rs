//! [`RequestGate`]: the limits every request passes before it reaches a
//! handler, and [`GateMiddleware`], the actix-web middleware that applies it.
//!
//! In order: the URL and header size limits (414, 431), then, for everything
//! but the health probes, the per-client rate limit (429) and the bound on
//! requests in flight (503). Each refusal is immediate and has a JSON body
//! and, where waiting helps, `Retry-After`. While the server drains, every
//! response carries `Connection: close` so that clients move elsewhere.
//!
//! It is also where each request is timed and counted ([`Counters`]), given
//! an `x-request-id`, and logged when it fails (at most a few lines a second,
//! see [`LogBudget`]) or, sampled, when it succeeds.
//!
//! The client a request is rate-limited as and logged as is one and the same:
//! its peer address or, when the peer is one of the [`TrustedProxies`], the
//! address that proxy forwarded for. With no trusted proxy (the default)
//! that costs one branch; the header is read only for a trusted peer, and
//! only when the rate limit is on or a log line is written.
//!
//! Architecture Invariant: the only memory shared between workers that a
//! request that is let through writes is the in-flight count (one increment
//! and one decrement), and only when `max_in_flight` is on; with the rate
//! limit on, also its own client's bucket (one compare-and-swap). Everything
//! else it records goes to the calling thread's own counter shard, including
//! error lines left out of the log; the gate's state is reached through a
//! per-worker `Rc`, and the middleware's future is a plain enum, not a boxed
//! future. A generated request id is one small allocation.

use std::cell::RefCell;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::ConnectionType;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::{Error, ResponseError, web};
use bytes::Bytes;
use slog::{Logger, info, warn};

use crate::client::TrustedProxies;
use crate::counters::{Counters, Refusal, Totals};
use crate::error::ApiError;
use crate::log_budget::LogBudget;
use crate::rate::RateLimiter;
use crate::route::Route;
use crate::state::Lifecycle;

/// The configured limits. A limit of 0 is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Requests being handled at once, across all workers, beyond which new
    /// ones are shed with 503.
    pub max_in_flight: usize,
    /// Bytes of path and query beyond which a request gets 414.
    pub max_url_bytes: usize,
    /// Bytes of header names and values beyond which a request gets 431.
    pub max_header_bytes: usize,
}

/// The size of request head (request line and headers) from which
/// actix-http's parser refuses a request by itself, with 431 and an empty
/// body, before the gate sees it. The gate's own limits must be below it to
/// mean anything.
pub const PARSER_HEAD_LIMIT: usize = 131_072;

/// Error lines a second the gate writes, beyond which they are counted and
/// summed up in the next line written.
const ERROR_LINES_PER_S: u32 = 10;

/// The request gate's state, shared by every worker: limits, the in-flight
/// count, the rate limiter, the lifecycle, the counters and the logs. Cheap
/// to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct RequestGate(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    limits: RequestLimits,
    /// On a cache line of its own: it is the one shared line requests write.
    in_flight: CacheLine<AtomicUsize>,
    rate: Option<RateLimiter>,
    proxies: TrustedProxies,
    lifecycle: web::Data<Lifecycle>,
    counters: Arc<Counters>,
    logger: Logger,
    error_budget: LogBudget,
    access_sample: f64,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct CacheLine<T>(T);

/// How a [`RequestGate`] is built: limits and lifecycle first, the rest
/// optional.
#[derive(Debug)]
pub struct RequestGateBuilder {
    shared: Shared,
}

impl RequestGateBuilder {
    /// Limits each client address (`None`: no rate limit).
    #[must_use]
    pub fn rate_limiter(mut self, rate: Option<RateLimiter>) -> Self {
        self.shared.rate = rate;
        self
    }

    /// Takes the client of a request from one of `proxies` to be the
    /// address it forwarded for (by default: none, every client is its peer).
    #[must_use]
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.shared.proxies = proxies;
        self
    }

    /// Counts into `counters` (by default: counters with the per-request
    /// metrics off).
    #[must_use]
    pub fn counters(mut self, counters: Arc<Counters>) -> Self {
        self.shared.counters = counters;
        self
    }

    /// Logs error responses to `logger` (at most a few lines a second), and
    /// a random `access_sample` share (0 to 1) of the others.
    #[must_use]
    pub fn logger(mut self, logger: Logger, access_sample: f64) -> Self {
        self.shared.logger = logger;
        self.shared.access_sample = access_sample.clamp(0.0, 1.0);
        self
    }

    /// The gate.
    pub fn build(self) -> RequestGate {
        RequestGate(Arc::new(self.shared))
    }
}

impl RequestGate {
    /// A gate with these limits, no rate limit, per-request metrics off and
    /// no log; the builder sets the rest.
    pub fn builder(limits: RequestLimits, lifecycle: web::Data<Lifecycle>) -> RequestGateBuilder {
        RequestGateBuilder {
            shared: Shared {
                limits,
                in_flight: CacheLine::default(),
                rate: None,
                proxies: TrustedProxies::none(),
                lifecycle,
                counters: Arc::new(Counters::new(false)),
                logger: Logger::root(slog::Discard, slog::o!()),
                error_budget: LogBudget::new(ERROR_LINES_PER_S),
                access_sample: 0.0,
            },
        }
    }

    /// A gate with these limits and nothing else.
    pub fn new(limits: RequestLimits, lifecycle: web::Data<Lifecycle>) -> Self {
        Self::builder(limits, lifecycle).build()
    }

    /// The middleware applying this gate, for `App::wrap`.
    pub fn middleware(&self) -> GateMiddleware {
        GateMiddleware(self.clone())
    }

    /// What the gate counts.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.0.counters
    }

    /// The lifecycle the gate reads.
    pub fn lifecycle(&self) -> &web::Data<Lifecycle> {
        &self.0.lifecycle
    }

    /// The rate limiter, when rate limiting is on.
    pub fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.0.rate.as_ref()
    }

    /// Requests being handled right now: the shared count when
    /// `max_in_flight` is on, else what `totals` say.
    pub fn in_flight(&self, totals: &Totals) -> u64 {
        if self.0.limits.max_in_flight > 0 {
            self.0.in_flight.0.load(Ordering::Relaxed) as u64
        } else {
            totals.in_flight()
        }
    }

    /// Logs (within the error lines' budget) a connection the public
    /// listener closed before HTTP: a malformed or late PROXY header.
    pub(crate) fn connection_refused(&self, error: &std::io::Error) {
        if let Some(suppressed) = self.0.error_budget.admit() {
            warn!(self.0.logger, "connection refused"; "cause" => %error,
                "suppressed_before" => suppressed);
        }
    }
}

/// A request let in: whether it holds an in-flight slot (which must be
/// released), and its client when the rate limit had to find it.
struct Admitted {
    holds_slot: bool,
    client: Option<IpAddr>,
}

impl Shared {
    /// The client of a request from `peer` with `headers`: the peer, or the
    /// address a trusted proxy forwarded for. `None` without a peer address.
    fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.ip();
        if self.proxies.is_empty() {
            return Some(peer);
        }
        Some(self.proxies.client(peer, headers))
    }

    /// Lets `req` of `route` in, or says which limit it breaks.
    fn admit(&self, req: &ServiceRequest, route: Route) -> Result<Admitted, (Refusal, ApiError)> {
        self.check_size(req).map_err(|e| (Refusal::Oversized, e))?;
        let mut admitted = Admitted {
            holds_slot: false,
            client: None,
        };
        if route.is_health() {
            return Ok(admitted);
        }
        if let Some(rate) = &self.rate {
            admitted.client = self.client(req.peer_addr(), req.headers());
            if let Some(client) = admitted.client
                && let Err(wait) = rate.check(client)
            {
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                return Err((
                    Refusal::RateLimited,
                    ApiError::RateLimited {
                        retry_after_s: seconds.max(1),
                    },
                ));
            }
        }
        let max = self.limits.max_in_flight;
        if max == 0 {
            return Ok(admitted);
        }
        let before = self.in_flight.0.fetch_add(1, Ordering::Relaxed);
        if before < max {
            admitted.holds_slot = true;
            Ok(admitted)
        } else {
            self.in_flight.0.fetch_sub(1, Ordering::Relaxed);
            Err((Refusal::Shed, ApiError::Overloaded))
        }
    }

    /// The first size limit `req` breaks, if any.
    fn check_size(&self, req: &ServiceRequest) -> Result<(), ApiError> {
        let limits = &self.limits;
        if limits.max_url_bytes > 0 {
            let url = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
            if url > limits.max_url_bytes {
                return Err(ApiError::UriTooLong);
            }
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

/// The request id of `req`: its own `x-request-id` when that is a short
/// token, else a fresh random one.
fn request_id(req: &ServiceRequest) -> HeaderValue {
    let given = req.headers().get(&REQUEST_ID_NAME).filter(|v| {
        let bytes = v.as_bytes();
        (1..=64).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    match given {
        Some(value) => value.clone(),
        None => fresh_id(),
    }
}

/// Request ids a worker makes at once.
const IDS_PER_BLOCK: usize = 64;
/// Hex digits of a request id.
const ID_LEN: usize = 16;

thread_local! {
    /// This worker's block of fresh request ids and the next one to hand
    /// out: a header value holds a slice of the block (a reference count),
    /// so a request pays no allocation and no copy for its id; a block of
    /// 64 is made every 64 requests (a pause of a few microseconds, not a
    /// tail-latency event).
    static IDS: RefCell<(Bytes, usize)> = const { RefCell::new((Bytes::new(), IDS_PER_BLOCK)) };
}

/// A fresh random request id: 16 lowercase hex digits.
fn fresh_id() -> HeaderValue {
    IDS.with_borrow_mut(|(block, next)| {
        if *next == IDS_PER_BLOCK {
            let mut hex = Vec::with_capacity(IDS_PER_BLOCK * ID_LEN);
            for _ in 0..IDS_PER_BLOCK {
                let bits = fastrand::u64(..);
                hex.extend_from_slice(&hex_digits(bits as u32));
                hex.extend_from_slice(&hex_digits((bits >> 32) as u32));
            }
            *block = Bytes::from(hex);
            *next = 0;
        }
        let id = block.slice(*next * ID_LEN..(*next + 1) * ID_LEN);
        *next += 1;
        HeaderValue::from_maybe_shared(id).unwrap_or(HeaderValue::from_static("0"))
    })
}

/// The eight nibbles of `bits` as lowercase hex digits, a byte each, all at
/// once in the lanes of one `u64` (the lowest nibble first: the order does
/// not matter for random bits).
fn hex_digits(bits: u32) -> [u8; 8] {
    let mut x = u64::from(bits);
    x = (x | x << 16) & 0x0000_FFFF_0000_FFFF;
    x = (x | x << 8) & 0x00FF_00FF_00FF_00FF;
    x = (x | x << 4) & 0x0F0F_0F0F_0F0F_0F0F;
    // '0' + n, and 39 more ('a' - '0' - 10) where n is 10 or more: n + 6
    // carries into the lane's fifth bit exactly then.
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * 39).to_le_bytes()
}

/// The header that carries the request id, in and out.
pub const REQUEST_ID: &str = "x-request-id";
/// [`REQUEST_ID`] as a header name, made at compile time (not parsed per
/// request).
const REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID);

/// The middleware factory: `App::new().wrap(gate.middleware())`, in front
/// of a service whose answers have a boxed body (as an `App`'s routes do).
///
/// Every answer gets an `x-request-id` header and is counted; every error
/// answer is logged (within the log budget) with its request id, path
/// (which holds the user id) and cause.
#[derive(Debug, Clone)]
pub struct GateMiddleware(RequestGate);

impl<S> Transform<S, ServiceRequest> for GateMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = Error>,
{
    type Response = ServiceResponse;
    type Error = Error;
    type Transform = GateService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(GateService {
            service,
            gate: Rc::new(WorkerGate(Arc::clone(&self.0.0))),
        }))
    }
}

/// One worker's gate in front of the app's service.
#[derive(Debug)]
pub struct GateService<S> {
    service: S,
    /// The shared state behind a per-worker `Rc`: handing it to a request's
    /// future is a plain (non-atomic) increment.
    gate: Rc<WorkerGate>,
}

/// One worker's handle on the shared state: the `Arc` is cloned once per
/// worker, the `Rc` around it once per request.
#[derive(Debug)]
struct WorkerGate(Arc<Shared>);

impl std::ops::Deref for WorkerGate {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl<S> Service<ServiceRequest> for GateService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = Error>,
{
    type Response = ServiceResponse;
    type Error = Error;
    type Future = GateFuture<S::Future>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let gate = &**self.gate;
        gate.counters.record_start();
        let route = Route::of(req.path());
        let id = request_id(&req);
        match gate.admit(&req, route) {
            Ok(admitted) => GateFuture {
                state: State::Admitted {
                    inner: self.service.call(req),
                },
                request: Some(InFlight::new(&self.gate, admitted, started, route, id)),
            },
            Err((reason, error)) => {
                gate.counters.record_refusal(reason);
                let response = req.into_response(error.error_response());
                GateFuture {
                    state: State::Refused {
                        response: Some((response, error)),
                    },
                    request: Some(InFlight::new(
                        &self.gate,
                        Admitted {
                            holds_slot: false,
                            client: None,
                        },
                        started,
                        route,
                        id,
                    )),
                }
            }
        }
    }
}

/// A request between the gate and its answer. Dropping it (answered or
/// cancelled) frees its in-flight slot.
struct InFlight {
    gate: Rc<WorkerGate>,
    holds_slot: bool,
    answered: bool,
    started: Instant,
    route: Route,
    id: HeaderValue,
    /// The client, when the rate limit already found it.
    client: Option<IpAddr>,
}

/// A client address in a log line: the address, or empty when unknown.
struct Client(Option<IpAddr>);

impl slog::Value for Client {
    fn serialize(
        &self,
        _: &slog::Record<'_>,
        key: slog::Key,
        serializer: &mut dyn slog::Serializer,
    ) -> slog::Result {
        match self.0 {
            Some(addr) => serializer.emit_arguments(key, &format_args!("{addr}")),
            None => serializer.emit_str(key, ""),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.holds_slot {
            self.gate.in_flight.0.fetch_sub(1, Ordering::Relaxed);
        }
        if !self.answered {
            self.gate.counters.record_unanswered();
        }
    }
}

impl InFlight {
    fn new(
        gate: &Rc<WorkerGate>,
        admitted: Admitted,
        started: Instant,
        route: Route,
        id: HeaderValue,
    ) -> Self {
        Self {
            gate: Rc::clone(gate),
            holds_slot: admitted.holds_slot,
            answered: false,
            started,
            route,
            id,
            client: admitted.client,
        }
    }

    /// Counts and logs a request whose service failed with `error` (actix
    /// turns it into a response after the gate). The request is gone by
    /// then: its client is logged if the rate limit found it, else empty.
    fn finish_error(mut self, error: &Error) {
        self.answered = true;
        let status = error.as_response_error().status_code();
        self.gate
            .counters
            .record_request(self.route, status.as_u16(), self.started.elapsed());
        if let Some(suppressed) = self.gate.error_budget.admit() {
            info!(self.gate.logger, "error response";
                "request_id" => self.id.to_str().unwrap_or(""), "status" => status.as_u16(),
                "client" => Client(self.client), "cause" => %error,
                "suppressed_before" => suppressed);
        }
    }

    /// Marks, counts and logs the answer.
    fn finish(mut self, response: &mut ServiceResponse, refusal: Option<ApiError>) {
        self.answered = true;
        let gate = &**self.gate;
        let status = response.status();
        if gate.lifecycle.is_draining() {
            response
                .response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
        }
        gate.counters
            .record_request(self.route, status.as_u16(), self.started.elapsed());
        if status.is_client_error() || status.is_server_error() {
            if let Some(suppressed) = gate.error_budget.admit() {
                let cause = refusal
                    .map(|e| e.to_string())
                    .or_else(|| response.response().error().map(ToString::to_string));
                let req = response.request();
                let client = self
                    .client
                    .or_else(|| gate.client(req.peer_addr(), req.headers()));
                info!(gate.logger, "error response";
                    "request_id" => self.id.to_str().unwrap_or(""), "status" => status.as_u16(),
                    "client" => Client(client), "method" => %req.method(), "path" => req.path(),
                    "user_id" => req.path().strip_prefix("/feed/").unwrap_or(""),
                    "cause" => cause.as_deref().unwrap_or(""),
                    "suppressed_before" => suppressed);
            }
        } else if gate.access_sample > 0.0 && fastrand::f64() < gate.access_sample {
            let req = response.request();
            let client = self
                .client
                .or_else(|| gate.client(req.peer_addr(), req.headers()));
            info!(gate.logger, "request";
                "request_id" => self.id.to_str().unwrap_or(""), "status" => status.as_u16(),
                "client" => Client(client), "method" => %req.method(), "path" => req.path(),
                "micros" => self.started.elapsed().as_micros());
        }
        let id = std::mem::replace(&mut self.id, HeaderValue::from_static(""));
        // No route sets the header, so `append` (which makes no "removed"
        // value to drop) adds the only one.
        response.headers_mut().append(REQUEST_ID_NAME, id);
    }
}

pin_project_lite::pin_project! {
    /// The gate's future: the wrapped service's future, or a refusal ready
    /// at once. A plain value, not a boxed future.
    pub struct GateFuture<F> {
        #[pin]
        state: State<F>,
        request: Option<InFlight>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Admitted { #[pin] inner: F },
        Refused { response: Option<(ServiceResponse, ApiError)> },
    }
}

impl<F> Future for GateFuture<F>
where
    F: Future<Output = Result<ServiceResponse, Error>>,
{
    type Output = Result<ServiceResponse, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (response, refusal) = match this.state.project() {
            StateProj::Admitted { inner } => match inner.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => {
                    if let Some(request) = this.request.take() {
                        request.finish_error(&error);
                    }
                    return Poll::Ready(Err(error));
                }
                Poll::Ready(Ok(response)) => (response, None),
            },
            StateProj::Refused { response } => match response.take() {
                Some((response, error)) => (response, Some(error)),
                None => panic!("GateFuture polled after completion"),
            },
        };
        let mut response = response;
        if let Some(request) = this.request.take() {
            request.finish(&mut response, refusal);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Fresh ids across several blocks: 16 lowercase hex digits each, and no
    /// two alike.
    #[test]
    fn fresh_request_ids_are_distinct_hex_tokens() {
        let ids: Vec<HeaderValue> = (0..IDS_PER_BLOCK * 3 + 7).map(|_| fresh_id()).collect();
        for id in &ids {
            let bytes = id.as_bytes();
            assert_eq!(bytes.len(), ID_LEN);
            assert!(
                bytes.iter().all(|b| b"0123456789abcdef".contains(b)),
                "{id:?}"
            );
        }
        let distinct: HashSet<&[u8]> = ids.iter().map(HeaderValue::as_bytes).collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn hex_digits_spell_every_nibble() {
        for bits in [0, 0x0123_4567, 0x89ab_cdef, u32::MAX, 0xfedc_ba98] {
            let mut expected = format!("{bits:08x}").into_bytes();
            expected.reverse();
            assert_eq!(hex_digits(bits), expected[..], "{bits:#x}");
        }
    }

    /// A client's own short token is kept; anything else is replaced.
    #[test]
    fn a_given_request_id_is_kept_only_when_it_is_a_short_token() {
        for (given, kept) in [
            ("abc-123_X.y", true),
            ("", false),
            ("has space", false),
            (&*"x".repeat(65), false),
        ] {
            let req = actix_web::test::TestRequest::default()
                .insert_header((REQUEST_ID, given))
                .to_srv_request();
            let id = request_id(&req);
            assert_eq!(id.as_bytes() == given.as_bytes(), kept, "{given:?}");
        }
    }
}
