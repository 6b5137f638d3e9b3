//! The routes and their handlers.

use std::cell::RefCell;

use actix_web::http::header::ContentType;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use feed_domain::{ErrorRecorder, FeedService, FeedStorage, ItemId, RandomFeed};

use crate::encode::encode_items;
use crate::error::ApiError;
use crate::parse;

thread_local! {
    /// Each worker thread's item buffer, reused by every request it serves so
    /// that the domain path allocates nothing.
    static ITEMS: RefCell<Vec<ItemId>> = const { RefCell::new(Vec::new()) };
}

/// Registers the public API on an app or scope:
///
/// - `GET /feed/{user_id}?size=N`: the user's next items, a JSON array;
/// - `/feed` and `/feed/` without an id: 400;
/// - any other method on those paths: 405 with `Allow: GET`;
/// - anything else: 404.
///
/// Every error has a JSON body `{"error": "..."}`.
pub fn configure<S, R, E>(cfg: &mut web::ServiceConfig, service: web::Data<FeedService<S, R, E>>)
where
    S: FeedStorage,
    R: RandomFeed,
    E: ErrorRecorder,
{
    cfg.app_data(service)
        .service(
            web::resource("/feed/{user_id}")
                .route(web::get().to(next_feed::<S, R, E>))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource(["/feed", "/feed/"])
                .route(web::get().to(missing_user_id))
                .default_service(web::to(method_not_allowed)),
        )
        .default_service(web::to(not_found));
}

async fn next_feed<S, R, E>(
    req: HttpRequest,
    service: web::Data<FeedService<S, R, E>>,
) -> Result<HttpResponse, ApiError>
where
    S: FeedStorage,
    R: RandomFeed,
    E: ErrorRecorder,
{
    let user = parse::user_id(req.match_info().query("user_id"))?;
    let size = parse::size(req.query_string(), service.limits())?;
    let body = ITEMS.with_borrow_mut(|items| {
        service.next_feed(user, size, items)?;
        Ok::<_, ApiError>(encode_items(items))
    })?;
    Ok(HttpResponse::Ok()
        .insert_header(ContentType::json())
        .body(body))
}

async fn missing_user_id() -> HttpResponse {
    ApiError::InvalidUserId.error_response()
}

async fn method_not_allowed() -> HttpResponse {
    ApiError::MethodNotAllowed.error_response()
}

async fn not_found() -> HttpResponse {
    ApiError::NotFound.error_response()
}
