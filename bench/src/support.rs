//! What the benchmarks of this member share: session contents, the seed handler, and one
//! request through a router. The Criterion bench of the crate (`benches/session.rs`, which
//! ships with it and so cannot depend on this member) seeds the same small session with a copy
//! of its own in `benches/support/mod.rs`: keep the two in step.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::{body::Body, http::Request, Router};
use tower::ServiceExt;

/// Session sizes: 3 short fields, or 50 fields of about 4 KB in all.
pub const SIZES: [&str; 2] = ["small", "large"];

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

/// Fields of a session of the given size.
pub fn fields(size: &str) -> Vec<(String, String)> {
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

/// A value that differs on every call, so that every "write" scenario really writes (both
/// libraries skip setting a value a key already holds).
pub fn next_value() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("theme-{}", NEXT.fetch_add(1, Ordering::Relaxed))
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
