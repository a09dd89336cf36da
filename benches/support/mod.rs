//! What `benches/session.rs` needs: the seed handler, the session contents it seeds, and one
//! request through a router. The benchmark member (`bench/src/support.rs`) seeds the same
//! contents: keep the two in step. (This bench ships with the crate, so it cannot share the
//! member's code.)

use axum::{body::Body, http::Request, Router};
use tower::ServiceExt;

/// Handler that fills our session with the fields of a size.
pub async fn seed_ours(
    s: tower_redis_session::Session,
    axum::extract::Path(size): axum::extract::Path<String>,
) -> Result<&'static str, tower_redis_session::SessionError> {
    for (k, v) in fields(&size) {
        s.insert(&k, &v)?;
    }
    Ok("ok")
}

/// Fields of a session of the given size: 3 short fields, or 50 fields of about 4 KB in all.
fn fields(size: &str) -> Vec<(String, String)> {
    match size {
        "small" => vec![
            ("user".into(), "alice".into()),
            ("theme".into(), "dark".into()),
            ("lang".into(), "en".into()),
        ],
        _ => (0..50)
            .map(|i| (format!("field{i:02}"), format!("{i:02}-{}", "x".repeat(76))))
            .collect(),
    }
}

/// Sends one GET through the router; returns the `name=value` of a Set-Cookie, if any.
pub async fn send(app: &Router, path: &str, cookie: Option<&str>) -> Option<String> {
    let mut req = Request::get(path);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}
