//! Metrics and traces for operators: a recorder of the `metrics` facade and a `tracing`
//! subscriber see a scripted sequence of requests (Redis, then the in-process backend), and
//! the counts are what the sequence did.
//! One test in this binary: both the recorder and the subscriber are process-wide.
#![cfg(feature = "metrics")]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use axum::http::StatusCode;
use common::logs::Captured;
use common::{app, builder, Browser, RedisServer};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// Counters by `name{label=value,...}`, histograms by name with their number of samples.
fn snapshot(s: &metrics_util::debugging::Snapshotter) -> HashMap<String, u64> {
    s.snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = if labels.is_empty() {
                key.name().to_string()
            } else {
                format!("{}{{{}}}", key.name(), labels.join(","))
            };
            let n = match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(g) => g.into_inner() as u64,
            };
            (name, n)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_what_the_store_did() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("first recorder");
    let captured = Captured::install(tracing::Level::DEBUG);

    let mut redis = RedisServer::start();
    let store = builder()
        .redis_url(redis.url())
        .pool_size(1)
        .command_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let app = app(&store);
    let mut alice = Browser::new(app.clone());
    assert_eq!(alice.get("/set/user/alice").await.status, StatusCode::OK); // created, saved
    assert_eq!(alice.get("/get/user").await.body, "alice"); // loaded: hit
    assert_eq!(alice.get("/incr/n/1").await.body, "1"); // loaded with the counter: hit
    assert_eq!(alice.get("/regenerate").await.status, StatusCode::OK); // regenerated
    let mut bob = Browser::new(app.clone());
    bob.get("/set/a/1").await; // created, saved
    let old = bob.clone();
    bob.get("/destroy").await; // destroyed
    assert_eq!(old.peek("/get/a").await.body, "none"); // loaded: ended
    assert_eq!(old.peek("/set/a/2").await.status, StatusCode::CONFLICT); // conflict
    let carol = {
        let mut c = Browser::new(app.clone());
        c.get("/set/b/1").await; // created, saved
        c
    };
    let _: () = redis.cmd(&["FLUSHALL"]);
    assert_eq!(carol.peek("/get/b").await.body, "none"); // loaded: miss
    for _ in 0..3 {
        alice.peek("/untouched").await; // refreshes, gathered
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.kill();
    assert_eq!(
        alice.peek("/get/user").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let m = snapshot(&snapshotter);
    let get = |k: &str| m.get(k).copied().unwrap_or(0);
    // 3 sessions; alice's new secret moves hers (counted as regenerated, not created).
    assert_eq!(get("session_created_total"), 3, "{m:#?}");
    assert_eq!(get("session_saved_total"), 3);
    assert_eq!(get("session_bytes_written_total"), 11 + 4 + 4); // keys and JSON values
    assert_eq!(get("session_loaded_total{result=hit}"), 2);
    assert_eq!(get("session_loaded_total{result=ended}"), 1);
    assert_eq!(get("session_loaded_total{result=miss}"), 1);
    assert_eq!(get("session_conflicts_total"), 1);
    assert_eq!(get("session_destroyed_total"), 1);
    assert_eq!(get("session_regenerated_total{login=false}"), 1);
    let sent = get("session_refreshes_total{outcome=sent}");
    let skipped = get("session_refreshes_total{outcome=skipped}");
    assert_eq!((sent, sent + skipped), (1, 3), "{m:#?}");
    assert!(get("session_unavailable_total") >= 1);
    assert!(get("session_connection_attempts_total") >= 1);
    assert!(
        get("session_connections_retired_total") >= 1,
        "the killed server's connection"
    );
    let ops = get("session_store_operations_total{op=load}");
    assert_eq!(ops, 4, "{m:#?}");
    assert_eq!(get("session_store_duration_seconds{op=load}"), ops);
    assert_eq!(get("session_store_operations_total{op=save}"), 4); // 3 + refused
                                                                   // Alice's new secret (the hash moves) and bob's logout.
    assert_eq!(get("session_store_operations_total{op=end}"), 2);
    assert_eq!(get("session_store_operations_total{op=incr}"), 1);

    // Traces: a span per store operation, with the public session id; never a token.
    let log = captured.text();
    assert!(log.contains("session_store{op=\"load\" session="), "{log}");
    assert!(log.contains("outcome=\"ok\""), "{log}");
    assert!(log.contains("op=\"incr\""), "{log}");
    let token = |c: &Option<String>| {
        c.as_deref()
            .and_then(|c| c.split_once('='))
            .map(|(_, v)| v.split('.').next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    for c in [&alice.cookie, &old.cookie, &carol.cookie] {
        let t = token(c);
        assert_eq!(t.len(), 43);
        assert!(!log.contains(&t), "a token in the traces");
    }
    // The in-process backend reports the same events.
    let memory = builder().memory().build().await.unwrap();
    let mut dave = Browser::new(common::app(&memory));
    dave.get("/set/user/dave").await;
    assert_eq!(dave.get("/get/user").await.body, "dave");
    dave.get("/destroy").await;
    // The debugging recorder's counters start again from zero at each snapshot.
    let after = snapshot(&snapshotter);
    let delta = |k: &str| after.get(k).copied().unwrap_or(0);
    assert_eq!(delta("session_created_total"), 1);
    assert_eq!(delta("session_saved_total"), 1);
    assert_eq!(delta("session_loaded_total{result=hit}"), 1);
    assert_eq!(delta("session_destroyed_total"), 1);
    assert_eq!(delta("session_store_operations_total{op=save}"), 1);

    // What an operator sees, for the README.
    let mut lines: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
    lines.sort();
    println!("{}", lines.join("\n"));
    if let Some(line) = log
        .lines()
        .find(|l| l.contains("op=\"load\"") && l.contains("ok"))
    {
        println!("{line}");
    }
}
