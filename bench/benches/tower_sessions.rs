//! The scenarios of `benches/session.rs` through tower-sessions 0.14 with
//! tower-sessions-redis-store 0.16, in its default mode and with `always_save`. Results land
//! in `target/criterion/tower-sessions[-always-save]/<scenario>-<size>/`.

use criterion::{criterion_group, criterion_main, Criterion};
use trs_bench::apps::{tower_sessions_app, tower_sessions_layer};
use trs_bench::redis_server::RedisServer;
use trs_bench::support::{criterion, send, session_scenarios, SIZES};

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let redis = RedisServer::start();
    for (group_name, always_save) in [
        ("tower-sessions", false),
        ("tower-sessions-always-save", true),
    ] {
        let app = tower_sessions_app(rt.block_on(tower_sessions_layer(&redis.url(), always_save)));
        let mut group = c.benchmark_group(group_name);
        group.bench_function("create", |b| {
            b.to_async(&rt)
                .iter(|| async { send(&app, "/write", None).await })
        });
        for size in SIZES {
            let cookie = rt
                .block_on(send(&app, &format!("/seed/{size}"), None))
                .expect("seeded cookie");
            session_scenarios(&mut group, &rt, &app, &cookie, size);
        }
        group.finish();
    }
}

criterion_group! {
    name = tower_sessions;
    config = criterion();
    targets = benches
}
criterion_main!(tower_sessions);
