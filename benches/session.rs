//! CPU cost of the session layer, with Criterion: the in-process backend does no I/O, so what
//! a request costs over the same router without the layer is the layer's own work.
//!
//! - `no-layer`: the router without the session layer (baseline);
//! - `memory-read`: read one value of a small session;
//! - `memory-untouched`: a route that carries the cookie but never touches the session.
//!
//! Comparisons with tower-sessions and with the Redis floor are not here: they run
//! interleaved in one process (`bench/src/bin/bench-latency.rs`), which a noisy machine
//! needs. `BENCH_QUICK=1` shortens every measurement. Results land in
//! `$CRITERION_HOME/ours/<id>/` (default `target/criterion`).

mod support;

use std::time::Duration;

use axum::{routing::get, Router};
use criterion::{criterion_group, criterion_main, Criterion};
use support::{seed_ours, send};
use tower_redis_session::{Session, SessionError, SessionStore};

/// `BENCH_QUICK=1` shortens every measurement.
fn criterion() -> Criterion {
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

fn app(store: &SessionStore) -> Router {
    Router::new()
        .route("/read", get(read))
        .route("/untouched", get(|| async { "ok" }))
        .route("/seed/{size}", get(seed_ours))
        .layer(store.layer())
}

async fn read(s: Session) -> Result<String, SessionError> {
    Ok(s.get::<String>("user").await?.unwrap_or_default())
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("ours");

    let bare = Router::new().route("/read", get(|| async { "ok" }));
    group.bench_function("no-layer", |b| {
        b.to_async(&rt)
            .iter(|| async { send(&bare, "/read", None).await })
    });
    let memory = rt.block_on(async {
        SessionStore::builder()
            .memory()
            .signing_keys([[7u8; 32]])
            .build()
            .await
            .expect("memory store")
    });
    let memory_app = app(&memory);
    let cookie = rt
        .block_on(send(&memory_app, "/seed/small", None))
        .expect("seeded cookie");
    for scenario in ["read", "untouched"] {
        let path = format!("/{scenario}");
        group.bench_function(format!("memory-{scenario}"), |b| {
            b.to_async(&rt)
                .iter(|| async { send(&memory_app, &path, Some(&cookie)).await })
        });
    }
    group.finish();
}

criterion_group! {
    name = session;
    config = criterion();
    targets = benches
}
criterion_main!(session);
