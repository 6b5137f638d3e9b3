//! [`AdminAccess`]: who may use the admin endpoints.
//!
//! Without a token (the default, for an admin listener on loopback) anyone
//! who reaches the listener may. With a token, every admin request must
//! carry `Authorization: Bearer <token>` or gets 401 with a JSON error and
//! `WWW-Authenticate: Bearer`, except:
//!
//! - `GET /metrics`, so that a scraper needs no secret, unless
//!   `metrics_need_token` (then Prometheus sends the token too);
//! - `GET /dashboard`, a static page that holds no data: it asks for the
//!   token and sends it as a bearer token on its own requests for `/stats`
//!   and `/events`, which need it like everything else.
//!
//! Everything else needs it: reload and rollback, the profiler, `/stats`,
//! `/events`, `/openapi.json`, and unknown paths too (so that probing
//! without the token does not even tell which paths exist). The health
//! probes are on the public listener and never need it.
//!
//! The check is a middleware in front of the whole admin app, so a route
//! added later is guarded unless it is added to the exceptions here. Tokens
//! are compared in constant time ([`AdminToken::matches`]).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError, web};

use crate::admin::Admin;
use crate::error::ApiError;

/// The secret admin requests must present. Never printed: its `Debug`
/// shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Box<[u8]>);

/// Why a string cannot be the admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadAdminToken {
    /// Too short to resist guessing.
    #[error("is {0} characters long: use at least {min} (e.g. `openssl rand -hex 32`)", min = AdminToken::MIN_LEN)]
    TooShort(usize),
    /// A character that cannot be sent in an `Authorization` header as is.
    #[error(
        "holds a space, a control or a non-ASCII character: a bearer token is visible ASCII only"
    )]
    Unsendable,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminToken(<{} bytes, redacted>)", self.0.len())
    }
}

impl AdminToken {
    /// The shortest token accepted.
    pub const MIN_LEN: usize = 16;

    /// `token`, which must be at least [`Self::MIN_LEN`] characters of
    /// visible ASCII (what a bearer token can carry).
    ///
    /// # Errors
    /// [`BadAdminToken`] saying what is wrong, never showing the token.
    pub fn new(token: &str) -> Result<Self, BadAdminToken> {
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BadAdminToken::Unsendable);
        }
        if token.len() < Self::MIN_LEN {
            return Err(BadAdminToken::TooShort(token.len()));
        }
        Ok(Self(token.as_bytes().into()))
    }

    /// `given` is this token. The time taken depends on the lengths only,
    /// never on where the bytes differ, so that timing the answers does not
    /// reveal the token a byte at a time. (A length that differs returns
    /// at once: that tells the length, which is not the secret.)
    pub fn matches(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(given).into()
    }
}

/// Who may use the admin endpoints: see the module's documentation.
#[derive(Debug, Clone, Default)]
pub struct AdminAccess {
    token: Option<AdminToken>,
    metrics_need_token: bool,
}

impl AdminAccess {
    /// Anyone who reaches the admin listener (no token).
    pub fn open() -> Self {
        Self::default()
    }

    /// Requests must carry `token`; `/metrics` too when `metrics_need_token`.
    pub fn token(token: AdminToken, metrics_need_token: bool) -> Self {
        Self {
            token: Some(token),
            metrics_need_token,
        }
    }

    /// Whether a token is required at all.
    pub fn is_open(&self) -> bool {
        self.token.is_none()
    }

    /// `req` may be served.
    fn allows(&self, req: &ServiceRequest) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        match req.path() {
            "/dashboard" => return true,
            "/metrics" if !self.metrics_need_token => return true,
            _ => {}
        }
        req.headers()
            .get(AUTHORIZATION)
            .and_then(|value| bearer(value.as_bytes()))
            .is_some_and(|given| token.matches(given))
    }
}

/// The credentials of an `Authorization: Bearer <credentials>` value (the
/// scheme in any case, RFC 9110 section 11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(b"Bearer".len())?;
    if !scheme.eq_ignore_ascii_case(b"Bearer") || !rest.starts_with(b" ") {
        return None;
    }
    Some(rest.trim_ascii())
}

/// The middleware in front of the admin app: 401 unless [`AdminAccess`]
/// allows the request.
pub(crate) async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let allowed = req
        .app_data::<web::Data<Admin>>()
        .is_some_and(|admin| admin.access().allows(&req));
    if allowed {
        Ok(next.call(req).await?.map_into_left_body())
    } else {
        let response = ApiError::Unauthorized.error_response();
        Ok(req.into_response(response).map_into_right_body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_itself_only() {
        let token = AdminToken::new("0123456789abcdef").unwrap();
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b"0123456789abcde"));
        assert!(!token.matches(b"0123456789abcdef0"));
        assert!(!token.matches(b""));
    }

    #[test]
    fn tokens_must_be_long_and_sendable() {
        assert_eq!(
            AdminToken::new("short").unwrap_err(),
            BadAdminToken::TooShort(5)
        );
        for bad in [
            "0123456789 abcdef",
            "0123456789abcdef\n",
            "0123456789abcdéf",
        ] {
            assert_eq!(AdminToken::new(bad).unwrap_err(), BadAdminToken::Unsendable);
        }
        let debug = format!("{:?}", AdminToken::new("0123456789abcdef").unwrap());
        assert!(!debug.contains("0123"), "{debug}");
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
