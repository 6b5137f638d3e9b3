//! The floor answers like the feed route: same path shape, status, content
//! type, and the body length it is given.

use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{App, test};
use feed_bench::floor;

#[actix_rt::test]
async fn the_floor_answers_any_user_with_the_fixed_body() {
    let body = floor::fixed_body(floor::DEFAULT_BODY_BYTES, floor::DEFAULT_ITEMS).unwrap();
    let body: &'static [u8] = Box::leak(body.into_boxed_slice());
    let app = test::init_service(App::new().configure(|cfg| floor::configure(cfg, body))).await;
    for path in ["/feed/0", "/feed/4999999", "/feed/12?size=200"] {
        let response =
            test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.headers().get(CONTENT_TYPE).unwrap(),
            "application/json",
            "{path}"
        );
        let got = test::read_body(response).await;
        assert_eq!(&got[..], body, "{path}");
    }
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/other").to_request()).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
