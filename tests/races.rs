//! Races with real concurrency against a real redis-server, many times over: no update is
//! lost, no logged-out session comes back, regeneration loses no committed write, and expiry
//! during a request leaves no zombie hash.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::record::{iterations, record};
use common::{app, builder, Browser, RedisServer};
use serde_json::json;
use tokio::task::JoinSet;

async fn setup(idle: Duration) -> (RedisServer, Browser) {
    let redis = RedisServer::start();
    let store = builder()
        .redis_url(redis.url())
        .idle_timeout(idle)
        .build()
        .await
        .expect("store");
    (redis, Browser::new(app(&store)))
}

/// A fresh logged-in browser on the same app.
async fn login(b: &Browser) -> Browser {
    let mut fresh = Browser::new(b.app.clone());
    assert_eq!(fresh.get("/set/user/alice").await.status, StatusCode::OK);
    fresh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_distinct_keys_never_lose_one() {
    let (_redis, b) = setup(Duration::from_secs(60)).await;
    let (rounds, writers) = (iterations(20), 16);
    let mut lost = 0;
    for _ in 0..rounds {
        let session = login(&b).await;
        let mut tasks = JoinSet::new();
        for i in 0..writers {
            let s = session.clone();
            // Every writer loads before any saves: a whole-blob store loses all but one.
            tasks.spawn(async move { s.peek(&format!("/slow-set/20/k{i:02}/v")).await.status });
        }
        while let Some(status) = tasks.join_next().await {
            assert_eq!(status.expect("task"), StatusCode::OK);
        }
        let keys = session.peek("/keys").await.body;
        let present = (0..writers)
            .filter(|i| keys.split(',').any(|k| k == format!("k{i:02}")))
            .count();
        lost += writers - present;
    }
    record(
        "race_distinct_keys",
        json!({"rounds": rounds, "writers_per_round": writers, "updates": rounds * writers, "lost": lost}),
    );
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_give_the_exact_total() {
    let (_redis, b) = setup(Duration::from_secs(60)).await;
    let (rounds, increments) = (iterations(10), 50);
    let mut lost = 0i64;
    for _ in 0..rounds {
        let session = login(&b).await;
        let mut tasks = JoinSet::new();
        for _ in 0..increments {
            let s = session.clone();
            tasks.spawn(async move { s.peek("/incr/n/1").await.status });
        }
        while let Some(status) = tasks.join_next().await {
            assert_eq!(status.expect("task"), StatusCode::OK);
        }
        let total: i64 = session.peek("/incr/n/0").await.body.parse().expect("int");
        lost += increments as i64 - total;
    }
    record(
        "race_incr",
        json!({"rounds": rounds, "increments_per_round": increments, "increments": rounds * increments, "lost": lost}),
    );
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_is_never_undone_by_slow_writers() {
    let (redis, b) = setup(Duration::from_secs(60)).await;
    let (rounds, writers) = (iterations(20), 8);
    let (mut resurrected, mut refused, mut landed_before) = (0, 0, 0);
    for round in 0..rounds {
        let mut session = login(&b).await;
        let mut tasks = JoinSet::new();
        for i in 0..writers {
            let s = session.clone();
            // Spread the writers' saves around the moment of logout.
            let delay = (i * 7 + round * 3) % 40;
            tasks.spawn(async move { s.peek(&format!("/slow-set/{delay}/w{i}/v")).await.status });
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
        let old = session.clone();
        assert_eq!(session.get("/destroy").await.status, StatusCode::OK);
        while let Some(status) = tasks.join_next().await {
            match status.expect("task") {
                StatusCode::OK => landed_before += 1,
                StatusCode::CONFLICT => refused += 1,
                other => panic!("unexpected {other}"),
            }
        }
        // Nothing of the session is left: not through the old cookie, not in Redis.
        if !old.peek("/keys").await.body.is_empty() || !redis.sessions().is_empty() {
            resurrected += 1;
        }
    }
    record(
        "race_logout",
        json!({"rounds": rounds, "slow_writers": rounds * writers, "saved_before_logout": landed_before,
               "refused_after_logout": refused, "sessions_resurrected": resurrected}),
    );
    assert_eq!(resurrected, 0);
    // The race took place: some writes landed before the logout, some came after it.
    assert!(
        landed_before > 0 && refused > 0,
        "{landed_before} {refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerate_keeps_every_committed_write_and_kills_the_old_id() {
    let (redis, b) = setup(Duration::from_secs(60)).await;
    let (rounds, writers) = (iterations(20), 8);
    let (mut committed, mut lost, mut old_alive, mut refused) = (0, 0, 0, 0);
    for round in 0..rounds {
        let mut session = login(&b).await;
        let old = session.clone();
        let mut tasks = JoinSet::new();
        for i in 0..writers {
            let s = old.clone();
            let delay = (i * 5 + round) % 30;
            tasks.spawn(
                async move { (i, s.peek(&format!("/slow-set/{delay}/w{i}/v")).await.status) },
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(session.get("/regenerate").await.status, StatusCode::OK);
        let mut ok = Vec::new();
        while let Some(result) = tasks.join_next().await {
            let (i, status) = result.expect("task");
            assert!(
                matches!(status, StatusCode::OK | StatusCode::CONFLICT),
                "{status}"
            );
            if status == StatusCode::OK {
                ok.push(i);
            } else {
                refused += 1;
            }
        }
        let keys = session.get("/keys").await.body;
        committed += ok.len();
        lost += ok
            .iter()
            .filter(|i| !keys.split(',').any(|k| k == format!("w{i}")))
            .count();
        let old_reads = old.peek("/get/user").await.body != "none";
        // With the new session gone too, nothing may be left: the old hash is deleted.
        assert_eq!(session.get("/destroy").await.status, StatusCode::OK);
        if old_reads || !redis.sessions().is_empty() {
            old_alive += 1;
        }
    }
    record(
        "race_regenerate",
        json!({"rounds": rounds, "writers": rounds * writers, "committed": committed,
               "refused_after": refused, "committed_lost": lost, "old_ids_alive": old_alive}),
    );
    assert_eq!((lost, old_alive), (0, 0));
    // The race took place: writes with the old id landed before the new id, and after it.
    assert!(committed > 0 && refused > 0, "{committed} {refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_during_a_request_leaves_no_zombie() {
    let (redis, b) = setup(Duration::from_millis(200)).await;
    let rounds = iterations(10);
    let mut zombies = 0;
    for _ in 0..rounds {
        let session = login(&b).await;
        // Loads, then sleeps past the idle timeout, then writes.
        let r = session.peek("/read-then-slow-set/350/late/v").await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        if !redis.keys().is_empty() {
            zombies += 1;
        }
    }
    record(
        "race_expiry",
        json!({"rounds": rounds, "zombie_hashes": zombies}),
    );
    assert_eq!(zombies, 0);
}
