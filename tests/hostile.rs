//! Hostile input: random and mutated Cookie headers, huge headers, non-UTF-8 bytes, and
//! session data over the configured limits. Nothing panics, only cookies we signed are
//! accepted, a rejected cookie costs no Redis command, and an oversized change writes nothing.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::{http::StatusCode, Router};
use common::record::{iterations, record};
use common::{all_commands, app, builder, send_bytes, Browser, RedisServer};
use proptest::prelude::*;
use serde_json::json;

/// Sends `/get/user` with a raw Cookie header; the status, the body and whether a cookie
/// was set.
async fn send_raw(app: &Router, cookie: &[u8]) -> (StatusCode, String, bool) {
    let r = send_bytes(app, "/get/user", Some(cookie)).await;
    (r.status, r.body, !r.set_cookie.is_empty())
}

/// The session cookie's name: the default, with the default (Secure) attributes.
const NAME: &str = "__Host-session";

struct Fixture {
    rt: tokio::runtime::Runtime,
    redis: RedisServer,
    app: Router,
    /// `<NAME>=<value>` of a live session whose "user" is "alice".
    cookie: String,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let redis = RedisServer::start();
    let (app, cookie) = rt.block_on(async {
        let store = builder()
            .redis_url(redis.url())
            .build()
            .await
            .expect("store");
        let mut b = Browser::new(app(&store));
        b.get("/set/user/alice").await;
        (b.app, b.cookie.expect("cookie"))
    });
    assert!(cookie.starts_with(&format!("{NAME}=")), "{cookie}");
    Fixture {
        rt,
        redis,
        app,
        cookie,
    }
}

/// Runs `cases` proptest cases of the strategy that `inputs` makes from the fixture's
/// genuine cookie; each input must be rejected (no session, no Set-Cookie) unless it holds
/// that cookie's name and value, and no rejected one may reach Redis.
fn rejected_without_redis<S: Strategy<Value = Vec<u8>>>(
    name: &str,
    inputs: impl FnOnce(&str) -> S,
    cases: u32,
) {
    let f = fixture();
    let strategy = inputs(&f.cookie);
    let (cookie_name, cookie_value) = f.cookie.split_once('=').expect("name=value");
    let tried = AtomicUsize::new(0);
    let accepted = AtomicUsize::new(0);
    let before = f.redis.snapshot();
    let config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(&strategy, |input| {
            tried.fetch_add(1, Ordering::Relaxed);
            // Whitespace around a pair or its `=` is tolerated, as browsers do: a pair that
            // trims to our name and the signed value is the genuine cookie, not a forgery.
            let genuine = input.split(|&b| b == b';').any(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|&b| b == b'=').unwrap_or(pair.len());
                pair[..eq].trim_ascii() == cookie_name.as_bytes()
                    && pair.get(eq + 1..).map(<[u8]>::trim_ascii) == Some(cookie_value.as_bytes())
            });
            prop_assume!(!genuine);
            let (status, body, set_cookie) = f.rt.block_on(send_raw(&f.app, &input));
            if body != "none" || set_cookie {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            prop_assert_eq!(status, StatusCode::OK);
            prop_assert_eq!(body, "none");
            prop_assert!(!set_cookie);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let after = f.redis.snapshot();
    let commands = all_commands(&before, &after);
    assert_eq!(commands, 0, "{name}: a rejected cookie reached Redis");
    record(
        name,
        json!({"inputs": tried.load(Ordering::Relaxed), "accepted": accepted.load(Ordering::Relaxed),
               "redis_commands": commands}),
    );
}

#[test]
fn random_cookie_headers_are_rejected_without_a_redis_command() {
    let cases = iterations(2000) as u32;
    let strategy = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        // Well-formed pairs with our name and random values.
        "[ -~]{0,120}".prop_map(|v| format!("{NAME}={v}").into_bytes()),
        // Our shape: token.created.idle.expires.tag, with random content.
        (
            "[A-Za-z0-9_-]{43}",
            "[0-9]{1,15}",
            "[0-9]{0,15}",
            "[0-9]{0,15}",
            "[A-Za-z0-9_-]{43}"
        )
            .prop_map(|(t, c, i, e, m)| {
                format!("a=b; {NAME}={t}.{c}.{i}.{e}.{m}").into_bytes()
            }),
    ];
    rejected_without_redis("hostile_random_cookies", |_| strategy, cases);
}

#[test]
fn every_mutation_of_a_signed_cookie_is_rejected_without_a_redis_command() {
    let cases = iterations(2000) as u32;
    let mutations = |cookie: &str| {
        let genuine = cookie.as_bytes().to_vec();
        (0..genuine.len(), any::<u8>(), 0..3u8).prop_map(move |(at, byte, how)| {
            let mut v = genuine.clone();
            match how {
                0 => {
                    v[at] = if v[at] == byte {
                        byte.wrapping_add(1)
                    } else {
                        byte
                    }
                }
                1 => v.truncate(at),
                _ => v.insert(at, byte),
            }
            v
        })
    };
    rejected_without_redis("hostile_mutated_cookies", mutations, cases);
}

#[test]
fn the_signed_cookie_is_found_among_junk() {
    let f = fixture();
    let header = format!("a=1; {NAME}=junk; {}; b=\u{e9}2", f.cookie);
    let (status, body, _) = f.rt.block_on(send_raw(&f.app, header.as_bytes()));
    assert_eq!((status, body.as_str()), (StatusCode::OK, "alice"));
}

#[test]
fn huge_and_non_utf8_headers_are_handled_and_bounded() {
    let f = fixture();
    let before = f.redis.snapshot();
    let many = format!("{NAME}=x.1.y; ").repeat(10_000);
    let huge_value = format!("{NAME}={}", "A".repeat(200_000));
    let inputs: Vec<Vec<u8>> = vec![
        many.into_bytes(),
        huge_value.into_bytes(),
        [NAME.as_bytes(), b"=\xff\xfe\xfd; other=\x80"].concat(),
        vec![0x80; 50_000],
    ];
    for input in &inputs {
        let start = std::time::Instant::now();
        let (status, body, _) = f.rt.block_on(send_raw(&f.app, input));
        assert_eq!((status, body.as_str()), (StatusCode::OK, "none"));
        // Generous: a linear scan of 200 kB, not a benchmark.
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
    // A genuine cookie behind thousands of decoys with our name is not even looked at:
    // at most 4 candidates are checked, so the cost stays bounded.
    let decoys = format!("{}{}", format!("{NAME}=decoy; ").repeat(1000), f.cookie);
    let (_, body, _) = f.rt.block_on(send_raw(&f.app, decoys.as_bytes()));
    assert_eq!(body, "none");
    let after = f.redis.snapshot();
    let commands = all_commands(&before, &after);
    assert_eq!(commands, 0);
    let largest = inputs.iter().map(Vec::len).max().unwrap_or(0);
    record(
        "hostile_huge_headers",
        json!({"inputs": inputs.len() + 1, "largest_bytes": largest, "redis_commands": commands}),
    );
}

#[tokio::test]
async fn oversized_changes_are_refused_and_write_nothing() {
    let redis = RedisServer::start();
    let store = builder()
        .redis_url(redis.url())
        .max_value_bytes(100)
        .max_keys(3)
        .max_session_bytes(150)
        .build()
        .await
        .expect("store");
    let mut b = Browser::new(app(&store));
    b.get("/set/a/1").await;
    let key = redis.keys().remove(0);
    // Each oversized change answers 500 and leaves the stored hash exactly as it was. Write-
    // only requests never load the session: the key-count and size limits are then checked
    // by the save script in Redis; `incr` is checked the same way.
    let long = "x".repeat(120);
    let medium = "y".repeat(90);
    let (mut refused, mut written) = (0, 0);
    let paths = [
        format!("/set/b/{long}"),           // value size
        "/set/b/2".into(),                  // fits
        "/set/c/3".into(),                  // fits
        "/set/d/4".into(),                  // key count, checked in Redis
        "/incr/e/1".into(),                 // key count, checked in Redis
        "/read-then-slow-set/0/d/4".into(), // key count, loaded
        format!("/set/a/{medium}"),         // fits
        format!("/set/b/{medium}"),         // session size, checked in Redis
    ];
    for path in paths {
        let before: Vec<String> = redis.cmd(&["HGETALL", &key]);
        let r = b.get(&path).await;
        let after: Vec<String> = redis.cmd(&["HGETALL", &key]);
        if r.status == StatusCode::OK {
            continue;
        }
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert!(r.body.is_empty() || r.body == "session error", "{}", r.body);
        refused += 1;
        if after != before {
            written += 1;
        }
    }
    assert_eq!((refused, written), (5, 0));
    let after: Vec<String> = redis.cmd(&["HGETALL", &key]);
    assert!(
        !after.iter().any(|v| v.contains(&long)) && after.len() == 10, // with "" and \\0id
        "{after:?}"
    );
    record(
        "hostile_limits",
        json!({"oversized_changes": refused, "written": written}),
    );
}
