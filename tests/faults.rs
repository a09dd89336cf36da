//! Faults against real redis-server processes: killed, paused, restarted empty, out of
//! memory, and holding a key of the wrong type. Every request is answered within the
//! configured timeout, nothing panics or hangs, nothing is half-written, and the service
//! recovers by itself.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::record::{iterations, record};
use common::{app, builder, join_by, Browser, RedisServer};
use serde_json::json;
use tokio::task::JoinSet;

const TIMEOUT: Duration = Duration::from_millis(300);
/// What a request may take beyond the command timeout: scheduling on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(700);

async fn store_on(redis: &RedisServer) -> tower_redis_session::SessionStore {
    builder()
        .redis_url(redis.url())
        .command_timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .build()
        .await
        .expect("store")
}

/// Clients that keep sending reads, writes and increments until `until`; each request's
/// status and duration.
async fn traffic(b: &Browser, clients: usize, until: Instant) -> Vec<(StatusCode, Duration)> {
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        let mut b = Browser::new(b.app.clone());
        tasks.spawn(async move {
            let mut seen = Vec::new();
            let paths = ["/get/user", "/set/user/alice", "/incr/n/1", "/untouched"];
            // Bounded: by time, and by count.
            for i in 0..100_000 {
                if Instant::now() >= until {
                    break;
                }
                let start = Instant::now();
                let r = b.get(paths[(i + c) % paths.len()]).await;
                seen.push((r.status, start.elapsed()));
            }
            seen
        });
    }
    // No task may hang: each must be done shortly after the deadline.
    let deadline = until + TIMEOUT + SLACK + Duration::from_secs(2);
    join_by(tasks, deadline).await.concat()
}

fn summary(seen: &[(StatusCode, Duration)]) -> (usize, usize, Duration) {
    let ok = seen.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let unavailable = seen
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    let slowest = seen.iter().map(|(_, d)| *d).max().unwrap_or_default();
    for (status, _) in seen {
        assert!(
            matches!(
                *status,
                StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT
            ),
            "unexpected status {status}"
        );
    }
    (ok, unavailable, slowest)
}

enum Fault {
    /// Killed, then restarted empty.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
}

/// Traffic from 8 clients while `fault` strikes, a few times over: every request answered
/// within the timeout with 200 or 503 (no hang, no panic), and afterwards, with nothing
/// restarted on our side, every request of a fresh burst succeeds.
async fn under_fault(fault: Fault, name: &str) {
    let mut redis = RedisServer::start();
    let b = Browser::new(app(&store_on(&redis).await));
    let cycles = iterations(3);
    let (mut requests, mut unavailable, mut slowest) = (0, 0, Duration::ZERO);
    let mut recovery = Duration::ZERO;
    for _ in 0..cycles {
        let flowing = traffic(&b, 8, Instant::now() + Duration::from_millis(1500));
        let strike = async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            match fault {
                Fault::Kill => redis.kill(),
                Fault::Pause => redis.signal("-STOP"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            match fault {
                Fault::Kill => redis.restart(),
                Fault::Pause => redis.signal("-CONT"),
            }
        };
        let (seen, ()) = tokio::join!(flowing, strike);
        let (ok, down, slow) = summary(&seen);
        assert!(ok > 0 && down > 0, "ok {ok}, 503 {down}");
        assert!(slow <= TIMEOUT + SLACK, "a request took {slow:?}");
        requests += seen.len();
        unavailable += down;
        slowest = slowest.max(slow);
        // The reconnect task backs off while Redis is down (at most 1 s between attempts):
        // service is back within about that, by itself.
        let back = Instant::now();
        while Browser::new(b.app.clone())
            .get("/set/user/alice")
            .await
            .status
            != StatusCode::OK
        {
            assert!(back.elapsed() < Duration::from_secs(3), "not recovered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        recovery = recovery.max(back.elapsed());
        let after = traffic(&b, 4, Instant::now() + Duration::from_millis(300)).await;
        let (ok, down, _) = summary(&after);
        assert_eq!((down, ok), (0, after.len()), "not recovered");
    }
    record(
        name,
        json!({"faults": cycles, "requests": requests, "answered_503": unavailable,
               "slowest_ms": slowest.as_millis(), "timeout_ms": TIMEOUT.as_millis(),
               "slowest_recovery_ms_after_traffic": recovery.as_millis()}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_gives_fast_503s_then_recovers_when_restarted_empty() {
    under_fault(Fault::Kill, "fault_kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_fails_fast_and_resumes() {
    under_fault(Fault::Pause, "fault_pause").await;
}

/// Redis closes connections idle past its `timeout` (as proxies and load balancers do).
/// Requests pack onto the first connection, so the others can idle for long: each socket's
/// watchdog finds them closed and they are replaced before a request needs them, so that
/// even a request that is never sent twice (a counter) is not the one to find out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_by_redis_while_idle_are_replaced_before_use() {
    let redis = RedisServer::start();
    let pool = 4;
    let store = builder()
        .redis_url(redis.url())
        .command_timeout(TIMEOUT)
        .pool_size(pool as usize)
        .build()
        .await
        .expect("store");
    let mut b = Browser::new(app(&store));
    assert_eq!(b.get("/incr/n/1").await.body, "1");
    let before = store.stats();
    let _: () = redis.cmd(&["CONFIG", "SET", "timeout", "1"]);
    // Each connection idles past 1 s at least once in 2.5 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _: () = redis.cmd(&["CONFIG", "SET", "timeout", "0"]);
    let closed = store.stats().connections_retired - before.connections_retired;
    assert!(closed >= pool, "idle connections found closed: {closed}");
    // Replaced within a watchdog tick and a reconnect.
    tokio::time::sleep(TIMEOUT).await;
    let reply = b.get("/incr/n/1").await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "2"));
}

/// The same on a Cluster, whose node connections are ours: a node socket that Redis closed
/// while idle is reopened by the next request to that node, and the cluster connection
/// around it never sees it fail (it used to be retired, and rebuilt: every node again).
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_sockets_closed_while_idle_are_reopened() {
    let cluster = tokio::task::spawn_blocking(|| common::topology::Cluster::start(0))
        .await
        .expect("cluster");
    let store = builder()
        .redis_cluster(cluster.urls())
        .command_timeout(TIMEOUT)
        .pool_size(2)
        .build()
        .await
        .expect("store");
    let app = app(&store);
    // Sessions in several slots, so that every master has been used.
    let mut browsers: Vec<Browser> = (0..12).map(|_| Browser::new(app.clone())).collect();
    for b in &mut browsers {
        assert_eq!(b.get("/incr/n/1").await.body, "1");
    }
    let before = store.stats();
    for m in &cluster.masters {
        let _: () = m.cmd(&["CONFIG", "SET", "timeout", "1"]);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for m in &cluster.masters {
        let _: () = m.cmd(&["CONFIG", "SET", "timeout", "0"]);
    }
    for b in &mut browsers {
        let reply = b.get("/incr/n/1").await;
        assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "2"));
    }
    let after = store.stats();
    assert_eq!(
        after.connections_retired, before.connections_retired,
        "a cluster connection was retired for an idle node socket"
    );
}

#[tokio::test]
async fn out_of_memory_refuses_writes_and_half_writes_nothing() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let mut b = Browser::new(app(&store_on(&redis).await));
    b.get("/set/a/1").await;
    b.get("/set/b/2").await;
    let key = redis.keys().remove(0);
    let before: Vec<String> = redis.cmd(&["HGETALL", &key]);
    // Redis over its limit: the limit drops below what it already holds. Filling it up to the
    // limit instead left it hovering there, and a write got through whenever Redis freed a client
    // buffer (a flaky /regenerate that answered 200).
    let _: () = redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    let mut refused = 0;
    for path in ["/set/c/3", "/clear", "/incr/n/1", "/regenerate"] {
        let r = b.peek(path).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            r.body
        );
        refused += 1;
    }
    // A new session cannot be created either, and leaves nothing behind.
    let r = Browser::new(b.app.clone()).get("/set/x/1").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    refused += 1;
    let after: Vec<String> = redis.cmd(&["HGETALL", &key]);
    let half_written = usize::from(before != after);
    assert_eq!(before, after, "nothing half-written");
    let sessions = redis
        .keys()
        .iter()
        .filter(|k| k.starts_with("session:"))
        .count();
    assert_eq!(sessions, 1);
    // Reads still work while Redis is full.
    assert_eq!(b.peek("/get/a").await.body, "1");
    record(
        "fault_oom",
        json!({"writes_refused": refused, "half_written": half_written}),
    );
}

#[tokio::test]
async fn wrong_type_at_session_key_is_a_clear_error_for_every_operation() {
    let redis = RedisServer::start();
    let mut b = Browser::new(app(&store_on(&redis).await));
    b.get("/set/user/alice").await;
    let key = redis.keys().remove(0);
    let _: () = redis.cmd(&["DEL", &key]);
    let _: () = redis.cmd(&["SET", &key, "not a hash"]);
    for path in [
        "/get/user",
        "/set/x/1",
        "/incr/n/1",
        "/regenerate",
        "/untouched",
    ] {
        let r = b.peek(path).await;
        if path == "/untouched" {
            assert_eq!(r.status, StatusCode::OK);
        } else {
            assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
            // The extractor's answer, or the layer's empty one when the save failed.
            assert!(
                r.body.is_empty() || r.body == "session error",
                "{path}: internals stay in the logs: {}",
                r.body
            );
        }
    }
    let value: String = redis.cmd(&["GET", &key]);
    assert_eq!(value, "not a hash", "left alone");
}
