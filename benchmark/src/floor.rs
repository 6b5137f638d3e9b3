//! The constant-response "floor" server: what actix-web costs on its own.
//!
//! It answers `GET /feed/{user_id}` with the same status, content type and
//! body length as a default-size feed answer, but does no feed work at all:
//! no id parsing, no storage, no encoding, no allocation for the body. The
//! load runner drives it with the same wrk script, connections and workers as
//! the real server, alternating the two in one run, so the ratio feed/floor
//! says how much of the time is ours and how much is the framework, the
//! kernel and the load generator sharing the same cores.

use actix_web::http::header::{CACHE_CONTROL, ContentType, HeaderValue};
use actix_web::web::{self, Bytes};
use actix_web::{HttpResponse, HttpServer};

/// Items in a default-size answer (`api.default_size` of the shipped
/// configuration): the floor's body has as many numbers.
pub const DEFAULT_ITEMS: usize = 10;

/// The body length of a default answer when every id has 7 digits, as
/// almost all ids of the default 10,000,000-item catalog do:
/// `[` + 10 x 7 digits + 9 commas + `]`.
pub const DEFAULT_BODY_BYTES: usize = 81;

/// The floor's listen backlog, the same as `feed-server`'s.
pub const BACKLOG: u32 = 2048;

/// A body length that no array of `items` `u32` numbers can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLenError {
    /// The length asked for.
    pub len: usize,
    /// The number of items.
    pub items: usize,
}

impl std::fmt::Display for BodyLenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (min, max) = body_len_range(self.items);
        write!(
            f,
            "a JSON array of {} u32 numbers is {min} to {max} bytes long, not {}",
            self.items, self.len
        )
    }
}

impl std::error::Error for BodyLenError {}

/// The shortest and longest JSON array of `items` `u32` numbers.
pub const fn body_len_range(items: usize) -> (usize, usize) {
    if items == 0 {
        return (2, 2);
    }
    // Brackets, commas, and 1 to 10 digits a number.
    (2 + (items - 1) + items, 2 + (items - 1) + 10 * items)
}

/// A JSON array of `items` `u32` numbers that is exactly `len` bytes long:
/// the digits are spread as evenly as possible, each number a 1 followed by
/// zeros (`[1000000,1000000,...]`).
///
/// # Errors
/// [`BodyLenError`] when no such array has that length.
pub fn fixed_body(len: usize, items: usize) -> Result<Vec<u8>, BodyLenError> {
    let (min, max) = body_len_range(items);
    if len < min || len > max {
        return Err(BodyLenError { len, items });
    }
    let mut body = Vec::with_capacity(len);
    body.push(b'[');
    if items > 0 {
        let digits = len - 2 - (items - 1);
        for i in 0..items {
            if i > 0 {
                body.push(b',');
            }
            let width = digits / items + usize::from(i < digits % items);
            body.push(b'1');
            body.resize(body.len() + width - 1, b'0');
        }
    }
    body.push(b']');
    debug_assert_eq!(body.len(), len);
    Ok(body)
}

/// The floor's one route on an app: everything under `/feed` answers `body`
/// with `Content-Type: application/json` and `Cache-Control: no-store`, the
/// headers of a feed answer. It is routed as the feed is, one
/// static `/feed` prefix scope and no per-request regular expression, so
/// that the floor is as fast as actix-web gets for this URL shape. The body
/// is `'static`, so each response shares it without copying or allocating.
pub fn configure(cfg: &mut web::ServiceConfig, body: &'static [u8]) {
    cfg.service(web::scope("/feed").default_service(web::to(move || answer(body))));
}

async fn answer(body: &'static [u8]) -> HttpResponse {
    let mut response = HttpResponse::Ok()
        .insert_header(ContentType::json())
        .body(Bytes::from_static(body));
    // A constant value, appended as the feed route appends it.
    response.headers_mut().append(CACHE_CONTROL, NO_STORE);
    response
}

/// `Cache-Control: no-store`, made at compile time.
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Runs the floor on `host:port` with `workers` threads (0: one per core)
/// until SIGINT or SIGTERM.
///
/// # Errors
/// The I/O error when the address cannot be bound.
pub async fn serve(
    host: &str,
    port: u16,
    workers: usize,
    body: &'static [u8],
) -> std::io::Result<()> {
    let workers = match workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    HttpServer::new(move || actix_web::App::new().configure(|cfg| configure(cfg, body)))
        .workers(workers)
        .backlog(BACKLOG)
        .bind((host, port))?
        .run()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_asked_length_and_parse() {
        for items in [1, 3, 10] {
            let (min, max) = body_len_range(items);
            for len in min..=max {
                let body = fixed_body(len, items).unwrap();
                assert_eq!(body.len(), len);
                let parsed: Vec<u32> = serde_json::from_slice(&body).unwrap();
                assert_eq!(parsed.len(), items);
            }
            assert!(fixed_body(min - 1, items).is_err());
            assert!(fixed_body(max + 1, items).is_err());
        }
        assert_eq!(fixed_body(2, 0).unwrap(), b"[]");
        assert_eq!(
            fixed_body(DEFAULT_BODY_BYTES, DEFAULT_ITEMS).unwrap(),
            b"[1000000,1000000,1000000,1000000,1000000,1000000,1000000,1000000,1000000,1000000]"
        );
    }
}
