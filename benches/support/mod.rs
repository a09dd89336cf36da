//! What the benchmarks share: Criterion settings, session contents, and one request through
//! a router. Included by `benches/session.rs` and by the `bench/` workspace member.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::{body::Body, http::Request, Router};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use tower::ServiceExt;

/// Session sizes: 3 short fields, or 50 fields of about 4 KB in all.
pub const SIZES: [&str; 2] = ["small", "large"];

/// Criterion settings; `BENCH_QUICK=1` shortens every measurement.
pub fn criterion() -> Criterion {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let (warm, measure, samples) = if quick {
        (300, 1000, 20)
    } else {
        (1000, 4000, 60)
    };
    Criterion::default()
        .warm_up_time(Duration::from_millis(warm))
        .measurement_time(Duration::from_millis(measure))
        .sample_size(samples)
        .without_plots()
}

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

/// The per-session scenarios both libraries share, on a session of `size` held by `cookie`:
/// `read`, `write`, `untouched` and `counter` send that cookie; `regenerate` carries the
/// new cookie from one request to the next.
pub fn session_scenarios(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    app: &Router,
    cookie: &str,
    size: &str,
) {
    for scenario in ["read", "write", "untouched", "counter"] {
        let path = format!("/{scenario}");
        group.bench_function(format!("{scenario}-{size}"), |b| {
            b.to_async(rt)
                .iter(|| async { send(app, &path, Some(cookie)).await })
        });
    }
    let current = Arc::new(Mutex::new(cookie.to_owned()));
    group.bench_function(format!("regenerate-{size}"), |b| {
        b.to_async(rt)
            .iter_custom(|iters| regenerate_chain(app.clone(), Arc::clone(&current), iters))
    });
}

/// Times `iters` requests to `/regenerate`, each with the cookie the previous one set: the id
/// changes every time, so the cookie is carried from one request (and one call) to the next.
async fn regenerate_chain(app: Router, current: Arc<Mutex<String>>, iters: u64) -> Duration {
    let mut cookie = current.lock().expect("cookie").clone();
    let start = Instant::now();
    for _ in 0..iters {
        if let Some(next) = send(&app, "/regenerate", Some(&cookie)).await {
            cookie = next;
        }
    }
    let took = start.elapsed();
    *current.lock().expect("cookie") = cookie;
    took
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
