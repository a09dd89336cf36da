//! The first three race scenarios of `tests/races.rs`, with the same sizes, through
//! tower-sessions 0.14 with tower-sessions-redis-store 0.16: how many updates it loses and
//! whether a logged-out session comes back. Writes `$RELIABILITY_OUT/tower_sessions.json`
//! (default `target/reliability`). Run by `scripts/reliability.sh`.

use std::time::Duration;

use axum::{extract::Path, routing::get, Router};
use serde_json::json;
use tokio::task::JoinSet;
use tower_sessions::Session;
use trs_bench::apps::tower_sessions_layer;
use trs_bench::redis_server::RedisServer;
use trs_bench::support::send;

fn app(
    layer: tower_sessions::SessionManagerLayer<
        tower_sessions_redis_store::RedisStore<tower_sessions_redis_store::fred::prelude::Pool>,
    >,
) -> Router {
    Router::new()
        .route(
            "/login",
            get(|s: Session| async move { s.insert("user", "alice").await.is_ok().to_string() }),
        )
        .route(
            "/slow-set/{ms}/{k}",
            get(
                |s: Session, Path((ms, k)): Path<(u64, String)>| async move {
                    // Load first, as a handler that reads before it writes does.
                    let _ = s.get_value("user").await;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    s.insert(&k, "v").await.is_ok().to_string()
                },
            ),
        )
        .route(
            "/incr",
            get(|s: Session| async move {
                let n = s.get::<i64>("n").await.ok().flatten().unwrap_or(0);
                s.insert("n", n + 1).await.is_ok().to_string()
            }),
        )
        .route(
            "/n",
            get(|s: Session| async move {
                s.get::<i64>("n")
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(0)
                    .to_string()
            }),
        )
        .route(
            "/count/{prefix}/{n}",
            get(
                |s: Session, Path((prefix, n)): Path<(String, usize)>| async move {
                    let mut present = 0;
                    for i in 0..n {
                        if s.get_value(&format!("{prefix}{i:02}"))
                            .await
                            .ok()
                            .flatten()
                            .is_some()
                        {
                            present += 1;
                        }
                    }
                    present.to_string()
                },
            ),
        )
        .route(
            "/user",
            get(|s: Session| async move {
                s.get::<String>("user")
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            }),
        )
        .route(
            "/destroy",
            get(|s: Session| async move { s.flush().await.is_ok().to_string() }),
        )
        .layer(layer)
}

/// GET through the app; the body.
async fn body(app: &Router, path: &str, cookie: &str) -> String {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = axum::http::Request::get(path)
        .header("cookie", cookie)
        .body(axum::body::Body::empty())
        .expect("request");
    let res = app.clone().oneshot(req).await.expect("infallible");
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn login(app: &Router) -> String {
    send(app, "/login", None).await.expect("cookie")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let redis = RedisServer::start();
    let app = app(tower_sessions_layer(&redis.url(), false).await);

    // Distinct keys: 20 rounds of 16 concurrent writers.
    let (rounds, writers) = (20, 16);
    let mut lost_keys = 0;
    for _ in 0..rounds {
        let cookie = login(&app).await;
        let mut tasks = JoinSet::new();
        for i in 0..writers {
            let (app, cookie) = (app.clone(), cookie.clone());
            tasks.spawn(async move { body(&app, &format!("/slow-set/20/k{i:02}"), &cookie).await });
        }
        while tasks.join_next().await.is_some() {}
        let present: usize = body(&app, &format!("/count/k/{writers}"), &cookie)
            .await
            .parse()
            .unwrap_or(0);
        lost_keys += writers - present;
    }

    // Counter: 10 rounds of 50 concurrent increments (read, add, write back).
    let (incr_rounds, increments) = (10, 50);
    let mut lost_increments = 0i64;
    for _ in 0..incr_rounds {
        let cookie = login(&app).await;
        let mut tasks = JoinSet::new();
        for _ in 0..increments {
            let (app, cookie) = (app.clone(), cookie.clone());
            tasks.spawn(async move { body(&app, "/incr", &cookie).await });
        }
        while tasks.join_next().await.is_some() {}
        let total: i64 = body(&app, "/n", &cookie).await.parse().unwrap_or(0);
        lost_increments += increments as i64 - total;
    }

    // Logout against 8 slow writers, 20 rounds.
    let (logout_rounds, slow) = (20, 8);
    let mut resurrected = 0;
    for round in 0..logout_rounds {
        let cookie = login(&app).await;
        let mut tasks = JoinSet::new();
        for i in 0..slow {
            let (app, cookie) = (app.clone(), cookie.clone());
            let delay = (i * 7 + round * 3) % 40;
            tasks.spawn(
                async move { body(&app, &format!("/slow-set/{delay}/w{i:02}"), &cookie).await },
            );
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
        body(&app, "/destroy", &cookie).await;
        while tasks.join_next().await.is_some() {}
        let user = body(&app, "/user", &cookie).await;
        let writes: usize = body(&app, &format!("/count/w/{slow}"), &cookie)
            .await
            .parse()
            .unwrap_or(0);
        if !user.is_empty() || writes > 0 {
            resurrected += 1;
        }
    }

    let figures = json!({
        "library": "tower-sessions 0.14 + tower-sessions-redis-store 0.16 (default mode)",
        "race_distinct_keys": {"rounds": rounds, "updates": rounds * writers, "lost": lost_keys},
        "race_incr": {"rounds": incr_rounds, "increments": incr_rounds * increments, "lost": lost_increments},
        "race_logout": {"rounds": logout_rounds, "sessions_resurrected": resurrected},
    });
    eprintln!("{figures:#}");
    let dir = std::env::var_os("RELIABILITY_OUT")
        .map_or_else(|| "target/reliability".into(), std::path::PathBuf::from);
    std::fs::create_dir_all(&dir).expect("output dir");
    std::fs::write(dir.join("tower_sessions.json"), figures.to_string()).expect("write");
}
