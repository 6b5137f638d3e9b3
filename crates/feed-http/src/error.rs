//! [`ApiError`]: every error the API answers with, as a status and a JSON body.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use feed_domain::{FeedUnavailable, IdempotencyKeyError, PageError, SizeLimits};

use feed_domain::{BlocklistError, DataControlError};
use serde::Serialize;

/// An error answer. Each variant maps to one status; the body is always
/// `{"error": "..."}` naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The `user_id` path segment is not a decimal user id.
    #[error("invalid user_id: expected a decimal integer from 0 to 18446744073709551615")]
    InvalidUserId,
    /// The `size` query parameter is not acceptable under these limits.
    #[error(
        "invalid size: expected an integer from 0 to {} (0 or absent means {}), given at most once",
        .0.max_size().get(),
        .0.default_size().get()
    )]
    InvalidSize(SizeLimits),
    /// Not a single item could be served.
    #[error("no feed items are available right now")]
    Unavailable,
    /// The feeds are still being loaded.
    #[error("the feeds are loading, try again shortly")]
    Loading,
    /// Too many requests are in flight: this one was shed.
    #[error("the server is overloaded, try again shortly")]
    Overloaded,
    /// This client is over its rate limit.
    #[error("too many requests from this client, retry after {retry_after_s} s")]
    RateLimited {
        /// Seconds until the client may try again.
        retry_after_s: u64,
    },
    /// The URL is longer than the limit.
    #[error("the URL is too long")]
    UriTooLong,
    /// The headers are larger than the limit.
    #[error("the request headers are too large")]
    HeadersTooLarge,
    /// A profile length outside `1..=max`.
    #[error("invalid seconds: expected an integer from 1 to {0}")]
    InvalidSeconds(u32),
    /// Another profile is being taken.
    #[error("a profile is already being taken, try again when it is done")]
    Busy,
    /// The server was built without the CPU profiler.
    #[error("the CPU profiler is not built in: build feed-server with --features profiler")]
    ProfilerNotBuilt,
    /// The CPU profiler could not run.
    #[error("the CPU profiler is not available")]
    ProfilerUnavailable,
    /// The `Idempotency-Key` header is not 1 to 255 visible ASCII
    /// characters (or is sent twice).
    #[error("invalid Idempotency-Key: {0}")]
    InvalidIdempotencyKey(&'static str),
    /// The idempotency key was used with another size.
    #[error(
        "this Idempotency-Key was used with size {first}: a retry must ask for the same size (this one asked for {requested}); use a new key for a new request"
    )]
    IdempotencyKeyReused {
        /// The size of the key's first request.
        first: u32,
        /// This request's.
        requested: u32,
    },
    /// A request body that is not the JSON expected.
    #[error("invalid body: {0}")]
    InvalidBody(String),
    /// A blocklist change did not happen.
    #[error("{0}")]
    Blocklist(BlocklistError),
    /// A reload or rollback did not happen.
    #[error("{0}")]
    DataChange(DataControlError),
    /// The server failed (a panicked background task): nothing the
    /// client sent causes this.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// An admin endpoint was asked without the admin token, or with
    /// another one.
    #[error("this admin endpoint needs the admin token: send Authorization: Bearer <token>")]
    Unauthorized,
    /// No route matches the path.
    #[error("not found")]
    NotFound,
    /// The route exists but not for this method.
    #[error("method not allowed: use GET")]
    MethodNotAllowed,
}

impl From<FeedUnavailable> for ApiError {
    fn from(_: FeedUnavailable) -> Self {
        Self::Unavailable
    }
}

impl From<PageError> for ApiError {
    fn from(error: PageError) -> Self {
        match error {
            PageError::Unavailable(_) => Self::Unavailable,
            PageError::KeyReused { first, requested } => {
                Self::IdempotencyKeyReused { first, requested }
            }
        }
    }
}

impl From<IdempotencyKeyError> for ApiError {
    fn from(error: IdempotencyKeyError) -> Self {
        Self::InvalidIdempotencyKey(match error {
            IdempotencyKeyError::Empty => "empty, expected 1 to 255 visible ASCII characters",
            IdempotencyKeyError::TooLong { .. } => "longer than 255 characters",
            IdempotencyKeyError::NotVisibleAscii { .. } => {
                "expected visible ASCII characters only (no spaces or controls)"
            }
        })
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidUserId
            | Self::InvalidSize(_)
            | Self::InvalidSeconds(_)
            | Self::InvalidIdempotencyKey(_)
            | Self::InvalidBody(_) => StatusCode::BAD_REQUEST,
            Self::IdempotencyKeyReused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Blocklist(BlocklistError::Failed(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Blocklist(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::DataChange(DataControlError::Failed(_) | DataControlError::NoPath) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::DataChange(DataControlError::Busy | DataControlError::NoPrevious) => {
                StatusCode::CONFLICT
            }
            Self::DataChange(DataControlError::Forbidden(_)) => StatusCode::FORBIDDEN,
            Self::Busy => StatusCode::CONFLICT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable | Self::Loading | Self::Overloaded | Self::ProfilerUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound | Self::ProfilerNotBuilt => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::MethodNotAllowed => {
                response.insert_header((header::ALLOW, HeaderValue::from_static("GET")));
            }
            Self::Unavailable | Self::Loading | Self::Overloaded => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            Self::RateLimited { retry_after_s } => {
                response.insert_header((header::RETRY_AFTER, *retry_after_s));
            }
            Self::Unauthorized => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="feed-server admin""#),
                ));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: &self.to_string(),
        })
    }
}
