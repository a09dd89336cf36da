//! Races with real concurrency against a real redis-server, many times over: no update is
//! lost, no logged-out session comes back, regeneration loses no committed write, a new login
//! is never undone by requests that still carry the old cookie, and expiry during a request
//! leaves no zombie hash.

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

/// Tab A logs in again (a new id) while tab B's requests, sent with the old cookie, are in
/// flight: reads, writes, reads then writes, and routes that never touch the session. The
/// browser applies every answer in the order it arrives; it must end with A's new cookie,
/// logged in. Counts the answers that arrived after A's login (the race took place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relogin_is_never_undone_by_requests_with_the_old_cookie() {
    let redis = RedisServer::start();
    let store = builder()
        .redis_url(redis.url())
        .cookie_persistent(true)
        .build()
        .await
        .expect("store");
    let b = Browser::new(app(&store));
    let rounds = iterations(20);
    let kinds = [
        "/slow-get/{d}/user",
        "/slow-set/{d}/cart/full",
        "/read-then-slow-set/{d}/cart/full",
        "/untouched",
    ];
    let (mut after_login, mut cookies_after_login, mut refused, mut landed_before) = (0, 0, 0, 0);
    let mut logged_out = 0;
    for round in 0..rounds {
        let mut a = login(&b).await;
        let old = a.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        for (i, kind) in kinds.iter().enumerate() {
            for j in 0..2 {
                let delay = (i * 7 + j * 13 + round * 3) % 40;
                let path = kind.replace("{d}", &delay.to_string());
                let (old, tx) = (old.clone(), tx.clone());
                tasks.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(delay as u64 / 2)).await;
                    let reply = old.peek(&path).await;
                    let _ = tx.send(("b", path, reply));
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let login = a.get("/regenerate").await;
        assert_eq!(login.status, StatusCode::OK);
        let new_cookie = a.cookie.clone();
        let _ = tx.send(("a", String::new(), login));
        drop(tx);
        while tasks.join_next().await.is_some() {}
        // Replay the answers in arrival order into one cookie jar.
        let mut jar = old.cookie.clone();
        let mut seen_login = false;
        while let Some((who, path, reply)) = rx.recv().await {
            if who == "a" {
                seen_login = true;
            } else {
                if seen_login {
                    after_login += 1;
                    cookies_after_login += reply.set_cookie.len();
                }
                match reply.status {
                    StatusCode::CONFLICT => refused += 1,
                    StatusCode::OK if path.contains("set") => landed_before += 1,
                    StatusCode::OK => {}
                    other => panic!("{path}: {other}"),
                }
            }
            for c in &reply.set_cookie {
                jar = (!c.contains("Max-Age=0")).then(|| c.split(';').next().unwrap_or("").into());
            }
        }
        let browser = Browser {
            cookie: jar.clone(),
            ..b.clone()
        };
        if jar != new_cookie || browser.peek("/get/user").await.body != "alice" {
            logged_out += 1;
        }
    }
    record(
        "race_relogin",
        json!({"rounds": rounds, "old_cookie_requests": rounds * kinds.len() * 2,
               "answered_after_login": after_login, "their_set_cookies": cookies_after_login,
               "writes_refused": refused, "writes_before_login": landed_before,
               "logins_undone": logged_out}),
    );
    assert_eq!((logged_out, cookies_after_login), (0, 0));
    // The race took place: answers to the old cookie arrived after the new login.
    assert!(after_login > 0 && refused > 0, "{after_login} {refused}");
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
