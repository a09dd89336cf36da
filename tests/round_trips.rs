//! Round trips per request, counted by Redis itself: socket reads (`total_reads_processed`)
//! for round trips, `INFO commandstats` for the commands. These are the figures of the
//! README's table.

mod common;
#[path = "../examples/login.rs"]
#[allow(dead_code)]
mod example;

use axum::http::StatusCode;
use common::{all_commands, app, builder, calls, round_trips, send, tags, Browser, RedisServer};
use std::time::Duration;
use tower_redis_session::SessionStore;

async fn setup() -> (RedisServer, SessionStore, Browser) {
    let redis = RedisServer::start();
    let store = builder()
        .redis_url(redis.url())
        .build()
        .await
        .expect("store");
    let b = Browser::new(app(&store));
    (redis, store, b)
}

/// Round trips of one request, and the reply.
/// Round trips of `path` for a browser that first sent `setup`, and the reply. Redis counts
/// every socket read, so an unrelated one (a closing helper connection, say) can add one:
/// the least of three tries, each with a fresh browser, is the request's own count.
async fn measure(
    redis: &RedisServer,
    b: &Browser,
    setup: &[&str],
    path: &str,
) -> (u64, common::Reply) {
    let mut best: Option<(u64, common::Reply)> = None;
    for _ in 0..3 {
        let mut fresh = Browser::new(b.app.clone());
        for step in setup {
            fresh.get(step).await;
        }
        let before = redis.snapshot();
        let reply = fresh.get(path).await;
        let after = redis.snapshot();
        let n = round_trips(&before, &after);
        if best.as_ref().is_none_or(|(m, _)| n < *m) {
            best = Some((n, reply));
        }
    }
    best.expect("three tries")
}

#[tokio::test]
async fn read_is_one_round_trip() {
    let (redis, _store, b) = setup().await;
    let (n, r) = measure(&redis, &b, &["/set/user/alice"], "/get/user").await;
    assert_eq!(r.body, "alice");
    assert_eq!(n, 1, "HGETALL + PEXPIRE in one pipeline");
    // And it did slide the expiry: the TTL is back near the full idle timeout.
    let key = &redis.keys()[0];
    let ttl: i64 = redis.cmd(&["PTTL", key]);
    assert!(ttl > 29 * 60 * 1000, "ttl {ttl}");
}

#[tokio::test]
async fn write_is_one_more_round_trip() {
    let (redis, _store, mut b) = setup().await;
    let (n, r) = measure(&redis, &b, &["/set/user/alice"], "/set/theme/dark").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        n, 1,
        "a request that only writes never loads: one guarded write"
    );
    let (n, r) = measure(
        &redis,
        &b,
        &["/set/user/alice"],
        "/read-then-slow-set/0/theme/dark",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(n, 2, "load, then one guarded write of the changed field");
    b.get("/set/user/alice").await;
    let before = redis.snapshot();
    b.get("/read-then-slow-set/0/theme/light").await;
    let after = redis.snapshot();
    assert_eq!(
        calls(&before, &after, "hset"),
        1,
        "only the changed field is written"
    );
    assert_eq!(calls(&before, &after, "hgetall"), 1, "the load only");
    assert_eq!(calls(&before, &after, "evalsha"), 1);
}

#[tokio::test]
async fn a_session_taken_but_never_used_costs_nothing() {
    let (redis, _store, b) = setup().await;
    let (n, r) = measure(&redis, &b, &["/set/user/alice"], "/early").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.set_cookie.is_empty());
    assert_eq!(
        n, 0,
        "the extractor loads nothing; the refresh goes in the background"
    );
    // Removing from, or clearing, no session sends nothing at all.
    for path in ["/remove/a", "/clear"] {
        let before = redis.snapshot();
        let r = send(&b.app, path, None).await;
        let after = redis.snapshot();
        assert!(r.set_cookie.is_empty(), "{path}");
        assert_eq!(all_commands(&before, &after), 0, "{path}");
    }
}

#[tokio::test]
async fn new_session_costs_one_round_trip() {
    let (redis, _store, b) = setup().await;
    let (n, r) = measure(&redis, &b, &[], "/set/user/alice").await;
    assert_eq!(r.set_cookie.len(), 1);
    assert_eq!(n, 1, "no load without a cookie; one create script");
}

#[tokio::test]
async fn incr_is_one_more_round_trip() {
    let (redis, _store, b) = setup().await;
    let (n, r) = measure(&redis, &b, &["/set/user/alice"], "/incr/visits/1").await;
    assert_eq!(r.body, "1");
    assert_eq!(n, 1, "one HINCRBY script, no load");
}

#[tokio::test]
async fn take_is_one_round_trip() {
    let (redis, _store, b) = setup().await;
    let (n, r) = measure(&redis, &b, &["/set/flash/hello"], "/take/flash").await;
    assert_eq!(r.body, "hello");
    assert_eq!(
        n, 1,
        "take.lua reads and removes in one step, no load, nothing after"
    );
}

#[tokio::test]
async fn no_cookie_and_no_write_sends_nothing() {
    let (redis, _store, mut b) = setup().await;
    let before = redis.snapshot();
    let r = b.get("/get/user").await;
    let after = redis.snapshot();
    assert_eq!(all_commands(&before, &after), 0);
    assert!(r.set_cookie.is_empty());
    let (n, _) = measure(&redis, &b, &[], "/get/user").await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn forged_or_malformed_cookies_send_nothing() {
    let (redis, _store, mut b) = setup().await;
    b.get("/set/user/alice").await;
    let good = b.cookie.clone().unwrap();
    let (name, value) = good.split_once('=').unwrap();
    let mut flipped = value.to_string().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let forged = [
        format!("{name}={}", String::from_utf8(flipped).unwrap()),
        format!("{name}=garbage"),
        format!("{name}="),
        format!("{name}={}", &value[..43]),
        format!("{name}={}.1700000000000.{}", "A".repeat(43), "A".repeat(43)),
        format!("{name}={}", value.replacen('.', ".9", 1)),
    ];
    for cookie in &forged {
        let before = redis.snapshot();
        let r = send(&b.app, "/get/user", Some(cookie)).await;
        let after = redis.snapshot();
        assert_eq!(r.body, "none", "{cookie}");
        assert_eq!(all_commands(&before, &after), 0, "{cookie}");
        assert!(r.set_cookie.is_empty(), "{cookie}");
    }
}

#[tokio::test]
async fn untouched_session_refreshes_in_background() {
    let (mut redis, _store, mut b) = setup().await;
    b.get("/set/user/alice").await;
    let before = redis.snapshot();
    let r = b.get("/untouched").await;
    assert_eq!(r.status, StatusCode::OK);
    // The refresh arrives shortly after, as one pipelined PEXPIRE.
    let mut after = redis.snapshot();
    for _ in 0..100 {
        if calls(&before, &after, "pexpire") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        after = redis.snapshot();
    }
    assert_eq!(calls(&before, &after, "pexpire"), 1);
    assert_eq!(all_commands(&before, &after), 1, "nothing but the refresh");
    // The response never waits for it: with Redis frozen, untouched routes still answer,
    // while a route that reads the session fails fast.
    redis.signal("-STOP");
    let r = b.get("/untouched").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = b.get("/get/user").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    redis.signal("-CONT");
    redis.kill();
}

/// Many sessions, each carried once or twice by untouched requests from several threads at
/// once: each gets exactly one refresh, whatever their cookies have in common (the queue
/// keeps a small table of cookies per thread; colliding ones must not be lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_untouched_session_gets_one_refresh() {
    const SESSIONS: usize = 700;
    let (redis, store, _b) = setup().await;
    let app = app(&store);
    let mut cookies = Vec::new();
    for _ in 0..SESSIONS {
        let r = send(&app, "/set/a/1", None).await;
        cookies.push(r.cookie_pair().expect("a session cookie"));
    }
    let before = redis.snapshot();
    let tasks: Vec<_> = (0..4)
        .map(|part| {
            let (app, cookies) = (app.clone(), cookies.clone());
            tokio::spawn(async move {
                // Every cookie twice, by two tasks at once.
                for cookie in cookies.iter().skip(part / 2).step_by(2) {
                    let r = send(&app, "/untouched", Some(cookie)).await;
                    assert_eq!(r.status, StatusCode::OK);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("requests");
    }
    let mut after = redis.snapshot();
    for _ in 0..200 {
        if calls(&before, &after, "pexpire") >= SESSIONS as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        after = redis.snapshot();
    }
    assert_eq!(calls(&before, &after, "pexpire"), SESSIONS as u64);
}

#[tokio::test]
async fn logout_is_one_round_trip() {
    let (redis, _store, b) = setup().await;
    let (n, _) = measure(&redis, &b, &["/set/user/alice"], "/destroy").await;
    assert_eq!(n, 1, "end.lua: the hash becomes the ended marker");
}

#[tokio::test]
async fn regenerate_is_one_round_trip() {
    let (redis, _store, b) = setup().await;
    let (n, _) = measure(&redis, &b, &["/set/user/alice"], "/regenerate").await;
    assert_eq!(n, 1, "rename.lua moves the hash and leaves the marker");
    let (n, r) = measure(&redis, &b, &["/set/user/alice", "/regenerate"], "/get/user").await;
    assert_eq!((n, r.body.as_str()), (1, "alice"), "the data moved with it");
}

#[tokio::test]
async fn login_is_two_round_trips() {
    let (redis, _store, b) = setup().await;
    let (n, r) = measure(&redis, &b, &["/set/cart/full"], "/login/alice").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        n, 2,
        "end the old hash; then create the new one and index its key, in one pipeline"
    );
    let _: () = redis.cmd(&["SCRIPT", "FLUSH"]);
    // A logged-in session's new id: the same two (the index entry moves with it), and a login
    // as someone else too (the previous user's index drops it in the same pipeline).
    let (n, r) = measure(&redis, &b, &["/login/alice"], "/regenerate").await;
    assert_eq!(
        (n, r.status),
        (2, StatusCode::OK),
        "regenerate when logged in"
    );
    let (n, r) = measure(&redis, &b, &["/login/alice"], "/login/bob").await;
    assert_eq!((n, r.status), (2, StatusCode::OK), "login as someone else");
    // After a flush the scripts are sent again, and the login still works.
    let _: () = redis.cmd(&["SCRIPT", "FLUSH"]);
    let mut b = Browser::new(b.app.clone());
    b.get("/set/cart/full").await;
    assert_eq!(b.get("/login/alice").await.status, StatusCode::OK);
    assert_eq!(b.get("/get/cart").await.body, "full");
}

/// The example app's logged-in page reads the user's name and counts the visit: one round
/// trip, since `incr` loads the session it counts in.
#[tokio::test]
async fn the_example_logged_in_page_is_one_round_trip() {
    let redis = RedisServer::start();
    let store = builder()
        .redis_url(redis.url())
        .build()
        .await
        .expect("store");
    let app = example::app(&store);
    let mut b = Browser::new(app.clone());
    let r = b.post_form("/login", "username=alice").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    for visit in 1..=3 {
        let before = redis.snapshot();
        let r = b.get("/").await;
        let after = redis.snapshot();
        assert!(r.body.contains("Logged in as alice"), "{}", r.body);
        assert!(r.body.contains(&format!("Visits: {visit}")), "{}", r.body);
        assert_eq!(round_trips(&before, &after), 1, "visit {visit}");
        assert_eq!(calls(&before, &after, "hgetall"), 1, "loaded by incr.lua");
        assert_eq!(
            calls(&before, &after, "evalsha"),
            1,
            "incr.lua, nothing else"
        );
    }
    // Without a session cookie the page asks Redis nothing.
    let before = redis.snapshot();
    let r = Browser::new(app).get("/").await;
    assert!(r.body.contains("You are not logged in"), "{}", r.body);
    assert_eq!(all_commands(&before, &redis.snapshot()), 0);
}

#[tokio::test]
async fn read_sends_nothing_after_the_response_either() {
    let (redis, _store, mut b) = setup().await;
    b.get("/set/user/alice").await;
    let before = redis.snapshot();
    b.get("/get/user").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = redis.snapshot();
    assert_eq!(
        all_commands(&before, &after),
        2,
        "HGETALL and PEXPIRE, nothing later"
    );
    assert_eq!(tags(&before, &after), 1, "one request, one tag");
}

#[tokio::test]
async fn refreshes_of_untouched_sessions_are_coalesced() {
    let (redis, _store, mut b) = setup().await;
    b.get("/set/user/alice").await;
    let before = redis.snapshot();
    for _ in 0..300 {
        assert_eq!(b.peek("/untouched").await.status, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = redis.snapshot();
    let pexpires = calls(&before, &after, "pexpire");
    assert!(
        (1..=5).contains(&pexpires),
        "{pexpires} refreshes for 300 requests"
    );
    assert_eq!(all_commands(&before, &after), pexpires);
}

/// Socket reads that a set of Redis nodes served, over lasting connections (so that reading
/// the counters adds exactly one read per node).
struct Counters(Vec<::redis::Connection>);

impl Counters {
    fn new(nodes: &[&common::topology::Daemon]) -> Self {
        Self(nodes.iter().map(|d| d.conn()).collect())
    }

    fn reads(&mut self) -> u64 {
        self.0
            .iter_mut()
            .map(|c| {
                let info: String = ::redis::cmd("INFO").arg("stats").query(c).expect("INFO");
                info.lines()
                    .find_map(|l| l.strip_prefix("total_reads_processed:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .expect("reads")
            })
            .sum()
    }
}

/// The README's table, on a deployment: each request's round trips, the least of three tries
/// (sentinels, replicas and the cluster bus also talk to the nodes now and then).
/// `regenerate` is one round trip where the hash can move (`RENAME`), two on a cluster.
async fn table_on(
    store: SessionStore,
    mut counters: Counters,
    regenerate: u64,
) -> Vec<(&'static str, u64)> {
    let app = app(&store);
    let scenarios: [(&str, &[&str], &str, u64); 8] = [
        ("read", &["/set/user/alice"], "/get/user", 1),
        ("write only", &["/set/user/alice"], "/set/theme/dark", 1),
        (
            "read and write",
            &["/set/user/alice"],
            "/read-then-slow-set/0/theme/dark",
            2,
        ),
        ("create", &[], "/set/user/alice", 1),
        ("incr", &["/set/user/alice"], "/incr/visits/1", 1),
        ("logout", &["/set/user/alice"], "/destroy", 1),
        (
            "regenerate",
            &["/set/user/alice"],
            "/regenerate",
            regenerate,
        ),
        ("untouched", &["/set/user/alice"], "/early", 0),
    ];
    let nodes = counters.0.len() as u64;
    let mut seen = Vec::new();
    for (name, setup, path, expected) in scenarios {
        let mut least = u64::MAX;
        for _ in 0..3 {
            let mut b = Browser::new(app.clone());
            for step in setup {
                assert_eq!(b.get(step).await.status, StatusCode::OK, "{name}: {step}");
            }
            let before = counters.reads();
            let r = b.get(path).await;
            let after = counters.reads();
            assert!(
                r.status.is_success() || r.status.is_redirection(),
                "{name}: {r:?}"
            );
            least = least.min(after - before - nodes);
        }
        assert_eq!(least, expected, "{name}");
        seen.push((name, least));
    }
    seen
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_holds_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(|| common::topology::Cluster::start(0))
        .await
        .expect("cluster");
    let store = builder()
        .redis_cluster(cluster.urls())
        .build()
        .await
        .expect("store");
    let masters: Vec<_> = cluster.masters.iter().collect();
    table_on(store, Counters::new(&masters), 2).await;
    // Our own node connections served it: they alone end each request with an `ECHO` tag.
    let echoes: u64 = masters.iter().map(|m| echo_calls(m)).sum();
    assert!(echoes > 0, "no tagged request on the cluster's nodes");
}

/// `ECHO` calls a node has served: our own connection's tags.
fn echo_calls(node: &common::topology::Daemon) -> u64 {
    let stats: String = node.cmd(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_echo:calls="))
        .and_then(|v| v.split(',').next()?.parse::<u64>().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_holds_behind_sentinel() {
    let s = tokio::task::spawn_blocking(common::topology::Sentinels::start)
        .await
        .expect("sentinels");
    let store = builder()
        .redis_sentinel(common::topology::SERVICE, s.urls())
        .build()
        .await
        .expect("store");
    let primary = s
        .data_node(s.primary_port().expect("primary"))
        .expect("node");
    table_on(store, Counters::new(&[primary]), 1).await;
}

#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_holds_over_tls() {
    let server = tokio::task::spawn_blocking(|| common::topology::TlsServer::start(false))
        .await
        .expect("tls");
    let certs = common::topology::Certs::get();
    let store = builder()
        .redis_url(server.url())
        .tls_ca_file(certs.path("ca.crt"))
        .build()
        .await
        .expect("store");
    table_on(store, Counters::new(&[&server.daemon]), 1).await;
    // Our own connection served it: it alone ends each request with its `ECHO` tag.
    assert!(echo_calls(&server.daemon) > 0, "no tagged request over TLS");
}
