//! Faults of real deployments under load: a Sentinel primary killed, a forced failover with
//! the old primary still reachable, a cluster master killed and its replica promoted, a slot
//! migrated while requests run (MOVED and ASK), Redis down for 5 s, a password rotated every
//! second, requests cancelled mid-command, and a 1 MiB session read beside small ones.
//!
//! Each test records what it saw (RELIABILITY.md): requests, 503s, the slowest answer, the
//! time to recover, connection attempts; and asserts what must hold: no request hangs past
//! the command timeout, no client ever reads another client's data, service comes back by
//! itself within a bound.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::Router;
use common::credentials::Password;
use common::record::record;
use common::topology::{Cluster, Sentinels, SERVICE};
use common::{app, builder, join_by, Browser, RedisServer};
use serde_json::json;
use tokio::task::JoinSet;

const TIMEOUT: Duration = Duration::from_millis(500);
/// What a request may take beyond the command timeout: scheduling on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(700);

/// A store on `deployment` with the fault tests' timeouts.
async fn store(
    deployment: tower_redis_session::SessionStoreBuilder,
) -> tower_redis_session::SessionStore {
    deployment
        .command_timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .build()
        .await
        .expect("store")
}

/// One answer a client got.
struct Seen {
    at: Instant,
    took: Duration,
    status: StatusCode,
    /// A read returned another client's data.
    wrong: bool,
    /// The request needed the store (not an untouched route).
    stored: bool,
}

/// `clients` browsers, each with a session of its own (`owner` = its name), that read it,
/// count in it and write to it until `until`. Every answer, and whether a read ever showed
/// someone else's session.
async fn load(app: &Router, clients: usize, until: Instant) -> Vec<Seen> {
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        let mut b = Browser::new(app.clone());
        tasks.spawn(async move {
            let me = format!("c{c}");
            let mut seen = Vec::new();
            for i in 0..200_000usize {
                if Instant::now() >= until {
                    break;
                }
                let path = if b.cookie.is_none() {
                    format!("/set/owner/{me}")
                } else {
                    ["/get/owner", "/incr/n/1", "/set/last/x", "/untouched"][i % 4].to_string()
                };
                let start = Instant::now();
                let r = b.get(&path).await;
                let wrong = path == "/get/owner"
                    && r.body != me
                    && r.body != "none"
                    && r.status == StatusCode::OK;
                seen.push(Seen {
                    at: start,
                    took: start.elapsed(),
                    status: r.status,
                    wrong,
                    stored: path != "/untouched",
                });
                if r.status != StatusCode::OK {
                    // Back off a little, as a browser would not hammer an error page.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            seen
        });
    }
    let deadline = until + TIMEOUT + SLACK + Duration::from_secs(2);
    join_by(tasks, deadline)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Figures of a run around a fault at `fault`: requests, 503s, slowest, wrong data, and the
/// time from the fault to the first success after the last failure of a stored request.
struct Figures {
    requests: usize,
    failed: usize,
    slowest: Duration,
    wrong: usize,
    recovered_after: Option<Duration>,
}

fn figures(seen: &[Seen], fault: Instant) -> Figures {
    let last_failure = seen
        .iter()
        .filter(|s| s.stored && s.status != StatusCode::OK && s.at >= fault)
        .map(|s| s.at + s.took)
        .max();
    let recovered_after = match last_failure {
        None => Some(Duration::ZERO),
        Some(last) => seen
            .iter()
            .filter(|s| s.stored && s.status == StatusCode::OK && s.at >= last)
            .map(|s| s.at + s.took)
            .min()
            .map(|t| t - fault),
    };
    for s in seen {
        assert!(
            matches!(
                s.status,
                StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT
            ),
            "unexpected {}",
            s.status
        );
    }
    Figures {
        requests: seen.len(),
        failed: seen.iter().filter(|s| s.status != StatusCode::OK).count(),
        slowest: seen.iter().map(|s| s.took).max().unwrap_or_default(),
        wrong: seen.iter().filter(|s| s.wrong).count(),
        recovered_after,
    }
}

impl Figures {
    /// What every fault test asserts: no hang, no wrong data, recovered within `bound`.
    fn check(&self, bound: Duration) {
        assert!(
            self.slowest <= TIMEOUT + SLACK,
            "a request took {:?}",
            self.slowest
        );
        assert_eq!(self.wrong, 0, "a client read another client's session");
        let recovered = self.recovered_after.expect("never recovered");
        assert!(
            recovered <= bound,
            "recovered after {recovered:?}, bound {bound:?}"
        );
    }

    fn json(&self) -> serde_json::Value {
        json!({"requests": self.requests, "failed": self.failed,
               "slowest_ms": self.slowest.as_millis(), "wrong_data": self.wrong,
               "recovered_ms": self.recovered_after.map(|d| d.as_millis())})
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_primary_killed_under_load() {
    let mut s = tokio::task::spawn_blocking(Sentinels::start).await.unwrap();
    let store = store(builder().redis_sentinel(SERVICE, s.urls())).await;
    let app = app(&store);
    let start = Instant::now();
    let run = load(&app, 4, start + Duration::from_secs(14));
    let fault = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let old = s.primary_port().expect("primary");
        let at = Instant::now();
        if let Some(d) = s.data.iter_mut().find(|d| d.port == old) {
            d.kill();
        }
        (at, old)
    };
    let (seen, (at, old)) = tokio::join!(run, fault);
    let f = figures(&seen, at);
    let new = s.primary_port().expect("a new primary");
    assert_ne!(new, old, "the sentinels promoted a replica");
    // Sentinel needs about 4-5 s (down after 1 s, election); we follow it within a second.
    f.check(Duration::from_secs(10));
    let mut j = f.json();
    j["timeout_ms"] = json!(TIMEOUT.as_millis());
    j["connection_attempts"] = json!(store.stats().connection_attempts);
    record("failover_sentinel_kill", j);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_failover_with_the_old_primary_still_up() {
    let s = tokio::task::spawn_blocking(Sentinels::start).await.unwrap();
    let store = store(builder().redis_sentinel(SERVICE, s.urls())).await;
    let app = app(&store);
    let old = s.primary_port().expect("primary");
    let start = Instant::now();
    let run = load(&app, 4, start + Duration::from_secs(16));
    let fault = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let at = Instant::now();
        let _: () = s.sentinels[0].cmd(&["SENTINEL", "FAILOVER", SERVICE]);
        // The old primary stays reachable; Sentinel demotes it (REPLICAOF) some seconds later.
        let deadline = Instant::now() + Duration::from_secs(14);
        let mut demoted = None;
        while Instant::now() < deadline {
            let role = s.data_node(old).and_then(|d| d.info("role"));
            if role.as_deref() == Some("slave") {
                demoted = Some(Instant::now());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (at, demoted)
    };
    let (seen, (at, demoted)) = tokio::join!(run, fault);
    let demoted = demoted.expect("the old primary was demoted");
    let f = figures(&seen, at);
    assert_ne!(s.primary_port(), Some(old));
    // No endless READONLY: service is back within 3 s of the old primary's demotion.
    let bound = (demoted - at) + Duration::from_secs(3);
    f.check(bound);
    let mut j = f.json();
    j["demoted_after_ms"] = json!((demoted - at).as_millis());
    j["connections_retired"] = json!(store.stats().connections_retired);
    record("failover_sentinel_forced", j);
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_and_replica_promoted() {
    let mut cluster = tokio::task::spawn_blocking(|| Cluster::start(1))
        .await
        .unwrap();
    let store = store(builder().redis_cluster(cluster.urls())).await;
    let app = app(&store);
    let start = Instant::now();
    let run = load(&app, 4, start + Duration::from_secs(12));
    let fault = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let at = Instant::now();
        cluster.masters[0].kill();
        at
    };
    let (seen, at) = tokio::join!(run, fault);
    let f = figures(&seen, at);
    // Node timeout 1 s, then the replica's election: a few seconds.
    f.check(Duration::from_secs(10));
    record("failover_cluster_kill", f.json());
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_migration_under_load_follows_moved_and_ask() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(0))
        .await
        .unwrap();
    let store = builder()
        .redis_cluster(cluster.urls())
        .command_timeout(TIMEOUT)
        .build()
        .await
        .unwrap();
    let app = app(&store);
    let start = Instant::now();
    let run = load(&app, 6, start + Duration::from_secs(5));
    let migrate = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Move the slots of every session that exists now, one by one, to another master.
        let keys = cluster.keys("session:*");
        let mut moved = 0;
        for key in keys.iter().take(6) {
            let slot: i64 = cluster.masters[0].cmd(&["CLUSTER", "KEYSLOT", key]);
            let slot = u16::try_from(slot).expect("slot");
            let source = cluster.owner(slot);
            let target = cluster
                .masters
                .iter()
                .find(|m| m.port != source.port)
                .expect("another master");
            let (sid, tid): (String, String) = (
                source.cmd(&["CLUSTER", "MYID"]),
                target.cmd(&["CLUSTER", "MYID"]),
            );
            let slot_s = slot.to_string();
            let _: () = target.cmd(&["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &sid]);
            let _: () = source.cmd(&["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &tid]);
            // Keys move one at a time, with pauses, so requests meet ASK in between.
            loop {
                let batch: Vec<String> = source.cmd(&["CLUSTER", "GETKEYSINSLOT", &slot_s, "1"]);
                let Some(k) = batch.first() else { break };
                let port = target.port.to_string();
                let _: redis::Value = source.cmd(&["MIGRATE", "127.0.0.1", &port, k, "0", "1000"]);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for m in &cluster.masters {
                let _: () = m.cmd(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &tid]);
            }
            moved += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        moved
    };
    let before: u64 = asking_calls(&cluster);
    let (seen, moved) = tokio::join!(run, migrate);
    let asking = asking_calls(&cluster) - before;
    let f = figures(&seen, start);
    assert!(moved > 0, "no slot was migrated");
    assert_eq!(f.failed, 0, "every request followed MOVED and ASK");
    assert_eq!(f.wrong, 0);
    let mut j = f.json();
    j["slots_migrated"] = json!(moved);
    j["asking_sent"] = json!(asking);
    record("cluster_slot_migration", j);
}

#[cfg(feature = "cluster")]
fn asking_calls(cluster: &Cluster) -> u64 {
    cluster
        .masters
        .iter()
        .map(|m| {
            let stats: String = m.cmd(&["INFO", "commandstats"]);
            stats
                .lines()
                .find_map(|l| l.strip_prefix("cmdstat_asking:calls="))
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_five_seconds_costs_a_handful_of_connection_attempts() {
    let mut redis = RedisServer::start();
    let store = store(builder().redis_url(redis.url())).await;
    let app = app(&store);
    let start = Instant::now();
    let run = load(&app, 8, start + Duration::from_secs(8));
    let fault = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let attempts = store.stats().connection_attempts;
        let at = Instant::now();
        redis.kill();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let during = store.stats().connection_attempts - attempts;
        redis.restart();
        (at, during)
    };
    let (seen, (at, attempts)) = tokio::join!(run, fault);
    let f = figures(&seen, at);
    let down: usize = seen
        .iter()
        .filter(|s| s.at >= at && s.at < at + Duration::from_secs(5))
        .count();
    // Backoff from 50 ms to 1 s: about 9 attempts in 5 s, whatever the request rate.
    assert!(attempts <= 15, "{attempts} connection attempts in 5 s");
    assert!(
        down > 100 * attempts as usize,
        "{down} requests, {attempts} attempts"
    );
    f.check(Duration::from_secs(5) + Duration::from_secs(3));
    let mut j = f.json();
    j["requests_while_down"] = json!(down);
    j["connection_attempts_while_down"] = json!(attempts);
    record("outage_attempts", j);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_rotated_every_second_under_load() {
    let redis = RedisServer::start();
    let _: () = redis.cmd(&["ACL", "SETUSER", "app", "on", ">p0", "~*", "&*", "+@all"]);
    let current = Password::new("p0", Duration::from_millis(1500));
    let store = builder()
        .redis_url(redis.url())
        .credentials_provider(current.clone())
        .credentials_refresh_ahead(Duration::from_millis(1000))
        .build()
        .await
        .unwrap();
    let auth_before = auth_calls(&redis);
    let app = app(&store);
    let start = Instant::now();
    let run = load(&app, 4, start + Duration::from_secs(6));
    let rotate = async {
        let mut rotations = 0;
        for i in 1..=5 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _: () = redis.cmd(&["ACL", "SETUSER", "app", &format!(">p{i}")]);
            current.set(&format!("p{i}"));
            if i >= 2 {
                // The one before last stops working: connections must have moved on.
                let _: () = redis.cmd(&["ACL", "SETUSER", "app", &format!("<p{}", i - 2)]);
            }
            rotations += 1;
        }
        rotations
    };
    let (seen, rotations) = tokio::join!(run, rotate);
    let f = figures(&seen, start);
    assert_eq!(f.failed, 0, "no request failed while the password rotated");
    let reauth = auth_calls(&redis) - auth_before;
    assert!(
        reauth >= 3,
        "live connections re-authenticated: {reauth} AUTH"
    );
    // New connections use the current password: drop them all, and go on.
    let _: () = redis.cmd(&["CLIENT", "KILL", "USER", "app"]);
    let mut b = Browser::new(app.clone());
    let back = Instant::now();
    while b.get("/set/a/1").await.status != StatusCode::OK {
        assert!(back.elapsed() < Duration::from_secs(3), "no new connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
        b = Browser::new(app.clone());
    }
    let mut j = f.json();
    j["rotations"] = json!(rotations);
    j["reauthentications"] = json!(reauth);
    record("credentials_rotation", j);
}

fn auth_calls(redis: &RedisServer) -> u64 {
    *redis.commandstats().get("auth").unwrap_or(&0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_requests_never_cost_a_connection() {
    let redis = RedisServer::start();
    let store = builder().redis_url(redis.url()).build().await.unwrap();
    let app = app(&store);
    let mut b = Browser::new(app.clone());
    b.get("/set/user/alice").await;
    let cookie = b.cookie.clone().unwrap();
    let before = store.stats();
    let connections = |r: &RedisServer| -> u64 {
        let info: String = r.cmd(&["INFO", "stats"]);
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let received = connections(&redis);
    // Redis is frozen, so every command is in flight when its request is cancelled.
    redis.signal("-STOP");
    let mut cancelled = 0;
    for _ in 0..10 {
        let mut batch = JoinSet::new();
        for i in 0..100 {
            let (app, cookie) = (app.clone(), cookie.clone());
            batch.spawn(async move {
                let path = ["/get/user", "/set/x/1", "/incr/n/1", "/regenerate"][i % 4];
                let req = common::send(&app, path, Some(&cookie));
                tokio::time::timeout(Duration::from_millis(20), req)
                    .await
                    .is_err()
            });
        }
        while let Some(r) = batch.join_next().await {
            cancelled += usize::from(r.unwrap());
        }
    }
    redis.signal("-CONT");
    // The shared connections carry on: same sockets, nothing retired, nothing reopened.
    let r = b.get("/get/user").await;
    assert_eq!(r.status, StatusCode::OK);
    let after = store.stats();
    assert_eq!(cancelled, 1000);
    assert_eq!(after.connections_retired, before.connections_retired);
    assert_eq!(after.connection_attempts, before.connection_attempts);
    assert_eq!(
        connections(&redis),
        received + 1,
        "only our INFO connection is new"
    );
    record(
        "cancelled_requests",
        json!({"cancelled_mid_command": cancelled,
               "connections_retired": after.connections_retired - before.connections_retired,
               "reconnects": after.connection_attempts - before.connection_attempts}),
    );
}

/// Small reads beside a client that reads a 1 MiB session over and over: p50 and p99 of the
/// small reads, alone and with the large reader, for one connection and for four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_session_does_not_stall_small_reads() {
    let redis = RedisServer::start();
    let mut figures = serde_json::Map::new();
    for pool in [1usize, 4] {
        let store = builder()
            .redis_url(redis.url())
            .pool_size(pool)
            .max_value_bytes(1 << 21)
            .max_session_bytes(1 << 22)
            .build()
            .await
            .unwrap();
        let app = app(&store);
        let mut big = Browser::new(app.clone());
        let r = big.get(&format!("/set-big/blob/{}", 1 << 20)).await;
        assert_eq!(r.status, StatusCode::OK);
        let small = async |with_large: bool| {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let reader = {
                let (big, stop) = (big.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut n = 0;
                    while with_large
                        && !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && n < 100_000
                    {
                        let r = big.peek("/get/blob").await;
                        assert_eq!(r.body.len(), 1 << 20);
                        n += 1;
                    }
                    n
                })
            };
            let mut b = Browser::new(app.clone());
            b.get("/set/user/alice").await;
            let mut took = Vec::new();
            for _ in 0..400 {
                let start = Instant::now();
                let r = b.peek("/get/user").await;
                took.push(start.elapsed());
                assert_eq!(r.body, "alice");
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let large_reads = reader.await.unwrap();
            took.sort();
            let p = |q: f64| took[((took.len() - 1) as f64 * q) as usize].as_micros();
            (p(0.5), p(0.99), large_reads)
        };
        let (p50, p99, _) = small(false).await;
        let (p50_l, p99_l, large_reads) = small(true).await;
        assert!(large_reads > 0, "the large reader ran");
        figures.insert(
            format!("pool_{pool}"),
            json!({"small_p50_us": p50, "small_p99_us": p99, "with_1mib_reader_p50_us": p50_l,
                   "with_1mib_reader_p99_us": p99_l, "large_reads": large_reads}),
        );
    }
    record("large_session", serde_json::Value::Object(figures));
}
