//! Who may use the admin app: with and without an admin token, through
//! `actix_web::test` (no socket).

use actix_web::http::Method;
use actix_web::{test, web};
use feed_http::{
    Admin, AdminAccess, AdminToken, Exposition, Lifecycle, RequestGate, Snapshot, admin_app,
};

use super::UNLIMITED;

const TOKEN: &str = "0123456789abcdef0123";

/// `method path` with `authorization` (if any) to the admin app under
/// `access` answers `status`; a 401 says why as JSON and names the scheme.
async fn check(
    access: &AdminAccess,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    status: u16,
) {
    let lifecycle = web::Data::new(Lifecycle::loading());
    let gate = RequestGate::new(UNLIMITED, lifecycle.clone());
    let (_snapshots, snapshot) = tokio::sync::watch::channel(Snapshot::default());
    let admin =
        Admin::new(Exposition::registry(gate), snapshot, lifecycle).with_access(access.clone());
    let app = test::init_service(admin_app(web::Data::new(admin))).await;
    let mut req = test::TestRequest::default()
        .method(method.clone())
        .uri(path);
    if let Some(value) = authorization {
        req = req.insert_header(("authorization", value));
    }
    let resp = test::call_service(&app, req.to_request()).await;
    let what = format!("{method} {path} with {authorization:?}");
    assert_eq!(resp.status().as_u16(), status, "{what}");
    if status == 401 {
        assert_eq!(
            resp.headers().get("www-authenticate").unwrap(),
            r#"Bearer realm="feed-server admin""#,
            "{what}"
        );
        let body: serde_json::Value = test::read_body_json(resp).await;
        assert!(
            body["error"].as_str().unwrap().contains("Bearer"),
            "{what}: {body}"
        );
    }
}

fn token(metrics_too: bool) -> AdminAccess {
    AdminAccess::token(AdminToken::new(TOKEN).unwrap(), metrics_too)
}

/// Without a token (the default) everything is served, as before.
#[actix_rt::test]
async fn without_a_token_everything_is_open() {
    let open = AdminAccess::open();
    check(&open, Method::GET, "/metrics", None, 200).await;
    check(&open, Method::GET, "/stats", None, 200).await;
    check(&open, Method::GET, "/openapi.json", None, 200).await;
    check(&open, Method::GET, "/dashboard", None, 200).await;
    // No data control in this app: 404, not 401.
    check(&open, Method::POST, "/admin/reload", None, 404).await;
    check(&open, Method::GET, "/nope", None, 404).await;
}

#[actix_rt::test]
async fn with_a_token_only_metrics_and_the_dashboard_page_are_open() {
    let access = token(false);
    let right = format!("Bearer {TOKEN}");
    let wrong = format!("Bearer {TOKEN}x");
    check(&access, Method::GET, "/metrics", None, 200).await;
    check(&access, Method::GET, "/dashboard", None, 200).await;
    for (method, path, with_token) in [
        (Method::GET, "/stats", 200),
        (Method::GET, "/openapi.json", 200),
        (Method::POST, "/admin/reload", 404),
        (Method::POST, "/admin/rollback", 404),
        (Method::GET, "/nope", 404),
    ] {
        check(&access, method.clone(), path, None, 401).await;
        check(&access, method.clone(), path, Some(&wrong), 401).await;
        check(&access, method.clone(), path, Some(TOKEN), 401).await;
        check(
            &access,
            method.clone(),
            path,
            Some(&format!("Basic {TOKEN}")),
            401,
        )
        .await;
        check(&access, method.clone(), path, Some(&right), with_token).await;
        let lower = format!("bearer {TOKEN}");
        check(&access, method, path, Some(&lower), with_token).await;
    }
    // The profiler needs it too (with the token: 404 without the feature,
    // 400 for seconds=0 with it).
    check(
        &access,
        Method::GET,
        "/debug/pprof/profile?seconds=0",
        None,
        401,
    )
    .await;
    let profiled = if cfg!(feature = "profiler") { 400 } else { 404 };
    check(
        &access,
        Method::GET,
        "/debug/pprof/profile?seconds=0",
        Some(&right),
        profiled,
    )
    .await;
}

#[actix_rt::test]
async fn metrics_can_require_the_token_too() {
    let access = token(true);
    check(&access, Method::GET, "/metrics", None, 401).await;
    let right = format!("Bearer {TOKEN}");
    check(&access, Method::GET, "/metrics", Some(&right), 200).await;
    check(&access, Method::GET, "/dashboard", None, 200).await;
}
