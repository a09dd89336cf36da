//! Security properties as tests: no raw token in Redis or in the logs, whatever happens.
//! (Key rotation, the absolute timeout under activity and the death of the old id after
//! regeneration are tested in `http.rs` and `conformance.rs`.)

mod common;

use common::logs::Captured;
use common::record::record;
use common::{app, builder, send, Browser, RedisServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_token_in_redis_or_in_the_logs() {
    let captured = Captured::install(tracing::Level::TRACE);

    let mut redis = RedisServer::start();
    let store = builder()
        .redis_url(redis.url())
        .command_timeout(std::time::Duration::from_millis(300))
        .build()
        .await
        .expect("store");
    let app = app(&store);
    let mut tokens = Vec::new();
    let mut remember = |b: &Browser| {
        if let Some(c) = &b.cookie {
            let value = c.split_once('=').map_or("", |(_, v)| v);
            tokens.push(value.split('.').next().unwrap_or("").to_string());
        }
    };
    // Sessions made, used, regenerated, destroyed, raced, refused and failed.
    for i in 0..20 {
        let mut b = Browser::new(app.clone());
        b.get(&format!("/set/user/u{i}")).await;
        remember(&b);
        b.get("/incr/n/1").await;
        b.get("/untouched").await;
        b.get("/regenerate").await;
        remember(&b);
        if i % 2 == 0 {
            let slow = b.clone();
            let late = tokio::spawn(async move { slow.peek("/slow-set/50/x/1").await });
            b.get("/destroy").await;
            late.await.expect("task");
        }
        let forged = b.cookie.clone().unwrap_or_default().replace('A', "B");
        send(&app, "/get/user", Some(&forged)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut dump = String::new();
    for key in redis.keys() {
        dump.push_str(&key);
        let fields: Vec<String> = redis.cmd(&["HGETALL", &key]);
        dump.push_str(&fields.join(" "));
    }
    // Failures are logged too: with Redis gone, and the log holds their errors.
    let survivor = Browser {
        cookie: None,
        app: app.clone(),
    };
    redis.kill();
    let mut b = survivor;
    b.get("/set/user/late").await;
    let log = captured.text();
    assert!(!log.is_empty(), "the capture works: something was logged");
    assert!(!dump.is_empty());
    for t in &tokens {
        assert_eq!(t.len(), 43);
    }
    let in_redis = tokens.iter().filter(|t| dump.contains(t.as_str())).count();
    let in_logs = tokens.iter().filter(|t| log.contains(t.as_str())).count();
    assert_eq!(
        (in_redis, in_logs),
        (0, 0),
        "tokens found in Redis, in the logs"
    );
    record(
        "security_tokens",
        json!({"tokens_checked": tokens.len(), "log_bytes": log.len(), "found_in_redis": in_redis,
               "found_in_logs": in_logs}),
    );
}
