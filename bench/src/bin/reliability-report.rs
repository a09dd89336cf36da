//! Writes RELIABILITY.md from the figures that one run of `scripts/reliability.sh` recorded
//! in `target/reliability/` (each test that tries to break a guarantee records how hard it
//! tried). It runs only after every test passed, so each guarantee below held in that run.
//!
//! `cargo run --release -p trs-bench --bin reliability-report -- --command "…"`

use std::fmt::Write as _;

use serde_json::Value;

/// (guarantee, the tests that prove it, the figures file, the tower-sessions figures key).
const ROWS: [(&str, &str, Option<&str>, Option<&str>); 42] = [
    ("Concurrent requests writing different keys of one session lose no update",
     "`tests/races.rs` concurrent_writes_to_distinct_keys_never_lose_one", Some("race_distinct_keys"), Some("race_distinct_keys")),
    ("Concurrent `incr` give the exact total",
     "`tests/races.rs` concurrent_increments_give_the_exact_total", Some("race_incr"), Some("race_incr")),
    ("A logout is never undone by a slower request, not even partly",
     "`tests/races.rs` logout_is_never_undone_by_slow_writers", Some("race_logout"), Some("race_logout")),
    ("`regenerate` loses no committed write, and the old id is dead",
     "`tests/races.rs` regenerate_keeps_every_committed_write_and_kills_the_old_id", Some("race_regenerate"), None),
    ("Logging in again (a new id) is never undone by requests still carrying the old cookie: none of their answers sets or removes the cookie, their writes are refused",
     "`tests/races.rs` relogin_is_never_undone_by_requests_with_the_old_cookie; `tests/conformance.rs` {memory,redis}::relogin_in_another_tab_is_never_undone", Some("race_relogin"), None),
    ("A session that expires during a request leaves no zombie hash",
     "`tests/races.rs` expiry_during_a_request_leaves_no_zombie", Some("race_expiry"), None),
    ("Redis killed: every request answered within the timeout (503; plus scheduling on a busy machine), no panic, no hung task; restarted empty: sessions start fresh, no error page, no restart of ours",
     "`tests/faults.rs` killed_redis_gives_fast_503s_then_recovers_when_restarted_empty", Some("fault_kill"), None),
    ("Redis paused (SIGSTOP): requests fail within the command timeout (plus scheduling on a busy machine); resumed: service resumes",
     "`tests/faults.rs` paused_redis_fails_fast_and_resumes", Some("fault_pause"), None),
    ("Redis out of memory: writes refused with 503, nothing half-written, reads still served",
     "`tests/faults.rs` out_of_memory_refuses_writes_and_half_writes_nothing", Some("fault_oom"), None),
    ("A key of the wrong type at a session's address: a clear error, no panic, the key left alone",
     "`tests/faults.rs` wrong_type_at_session_key_is_a_clear_error_for_every_operation", None, None),
    ("Random Cookie headers: never a panic, never accepted, never a Redis command",
     "`tests/hostile.rs` random_cookie_headers_are_rejected_without_a_redis_command", Some("hostile_random_cookies"), None),
    ("Every mutation of a signed cookie is rejected, without a Redis command",
     "`tests/hostile.rs` every_mutation_of_a_signed_cookie_is_rejected_without_a_redis_command", Some("hostile_mutated_cookies"), None),
    ("Huge Cookie headers, thousands of cookies with our name, non-UTF-8 bytes: handled, bounded (at most 4 candidates checked)",
     "`tests/hostile.rs` huge_and_non_utf8_headers_are_handled_and_bounded", Some("hostile_huge_headers"), None),
    ("Session data over the configured limits: a clear error, nothing written",
     "`tests/hostile.rs` oversized_changes_are_refused_and_write_nothing", Some("hostile_limits"), None),
    ("No raw token in Redis (keys and values scanned) or in the logs (all tracing output captured)",
     "`tests/security.rs` no_raw_token_in_redis_or_in_the_logs; `tests/http.rs` raw_tokens_never_reach_redis", Some("security_tokens"), None),
    ("A handler that answers 5xx has its staged changes dropped; `incr`, `regenerate`, `destroy` stay done",
     "`tests/conformance.rs` {memory,redis}::a_failed_handler_saves_nothing", None, None),
    ("A request that ends with no data and no stored session (`remove`, `clear` on nothing) sends no command and no `Set-Cookie`",
     "`tests/conformance.rs` {memory,redis}::removing_from_nothing_stores_nothing; `tests/round_trips.rs` a_session_taken_but_never_used_costs_nothing", None, None),
    ("The same conformance suite holds on every deployment: in-process, standalone, a 3-master Cluster, a Sentinel-managed primary with 2 replicas, TLS with a client certificate",
     "`tests/conformance.rs` {memory,redis,cluster,sentinel,tls}::*", None, None),
    ("Sentinel primary killed under load (4 clients): no request past the command timeout (+ scheduling), no client reads another's session, service back by itself",
     "`tests/failover.rs` sentinel_primary_killed_under_load", Some("failover_sentinel_kill"), None),
    ("`SENTINEL FAILOVER` with the old primary still reachable: no endless READONLY, back within 3 s of its demotion",
     "`tests/failover.rs` forced_failover_with_the_old_primary_still_up", Some("failover_sentinel_forced"), None),
    ("A cluster master killed, its replica promoted: back by itself, no wrong data",
     "`tests/failover.rs` cluster_master_killed_and_replica_promoted", Some("failover_cluster_kill"), None),
    ("Slots migrated key by key under load: `MOVED` and `ASK` followed, no request fails",
     "`tests/failover.rs` slot_migration_under_load_follows_moved_and_ask", Some("cluster_slot_migration"), None),
    ("A slot migrated back and forth under pipelined `incr` (the script and an `HGETALL` in one pipeline, reaching Redis in two reads) and logins: only the redirected commands are sent again, so no counter is incremented twice",
     "`tests/cluster_migration.rs` slot_migrating_back_and_forth_neither_loses_nor_repeats_an_increment", Some("cluster_migration_back_and_forth"), None),
    ("Redis down 5 s under load (8 clients): a handful of connection attempts, not one per request; fast 503s; back by itself",
     "`tests/failover.rs` redis_down_for_five_seconds_costs_a_handful_of_connection_attempts", Some("outage_attempts"), None),
    ("The ACL password rotated every second under load (the one before last revoked): no request fails; live connections re-authenticate, new ones use the current password",
     "`tests/failover.rs` password_rotated_every_second_under_load", Some("credentials_rotation"), None),
    ("A connection whose re-authentication fails is retired and replaced",
     "`tests/deployments.rs` a_connection_whose_reauthentication_fails_is_retired", None, None),
    ("A proxy between the store and Redis corrupts every 40th reply (nested 20,000 deep, huge or negative lengths, a RESP3 type, a push frame), repeats one while idle, adds a surplus one, repeats a reply or a whole session read while others are in flight, closes mid-reply or half-closes (8 clients, each reading its own session): no abort, no one reads another's session, the connection hit is retired, every answer within the timeout (+ 200 ms)",
     "`tests/hostile_redis.rs` corrupt_replies_retire_the_connection_never_misdeliver", Some("hostile_redis_corrupt"), None),
    ("An endpoint that accepts and hangs up, or greets with `-ERR max number of clients reached`: a failed connection attempt, so the backoff holds; fast 503s",
     "`tests/hostile_redis.rs` endpoints_that_hang_up_or_refuse_at_accept_keep_the_backoff", Some("hostile_redis_accept"), None),
    ("Replies trickled a byte at a time are read whole (own session every time); a server that stops answering fails each request at its deadline",
     "`tests/hostile_redis.rs` slow_and_silent_servers", Some("hostile_redis_slow"), None),
    ("1000 requests cancelled while their command is in flight (Redis frozen): no connection retired, none reopened",
     "`tests/failover.rs` cancelled_requests_never_cost_a_connection", Some("cancelled_requests"), None),
    ("A 1 MiB session read over and over beside small reads (debug build; latencies of the small reads)",
     "`tests/failover.rs` a_large_session_does_not_stall_small_reads", Some("large_session"), None),
    ("`wait_for_replicas`: writes wait for the replicas in their own round trip; too few replicas: 503 after the timeout (write latencies, debug build)",
     "`tests/deployments.rs` waiting_for_replicas", Some("wait_for_replicas"), None),
    ("\"End all sessions\" of a user, racing logins of the same user (standalone): every login whose request started before the call has no session afterwards (409, or ended)",
     "`tests/user_sessions.rs` redis::end_all_against_logins_under_way", Some("end_all_race_redis"), None),
    ("The same race on a 3-master Cluster (the user's index and the sessions in different slots)",
     "`tests/user_sessions.rs` cluster::end_all_against_logins_under_way", Some("end_all_race_cluster"), None),
    ("10,000 sessions of one user: listed and ended within a bounded time (standalone; debug build)",
     "`tests/user_sessions.rs` ten_thousand_sessions_of_one_user", Some("ten_thousand_redis"), None),
    ("10,000 sessions of one user on a Cluster (debug build)",
     "`tests/user_sessions.rs` ten_thousand_sessions_of_one_user_on_a_cluster", Some("ten_thousand_cluster"), None),
    ("100,000 logins of one user, abandoned (idle 2 s, absolute 12 h): once idle-expired, \"end one\" reports false and writes no marker; a listing checks every stale entry in bounded steps and leaves the index at the 2 live sessions; \"end all\" counts 2 and writes 2 markers (standalone; debug build)",
     "`tests/user_sessions.rs` redis::abandoned_logins_leave_the_index", Some("abandoned_logins_redis"), None),
    ("Later logins alone prune an index of abandoned logins (each checks 16 stale entries)",
     "`tests/user_sessions.rs` logins_prune_the_index", Some("logins_prune_the_index"), None),
    ("A user's sessions listed, ended one by one or all but the current; the index cleaned of expired ones; on memory, standalone and Cluster",
     "`tests/user_sessions.rs` {memory,redis,cluster}::*", None, None),
    ("Key rotation: a cookie signed with an old key is accepted and re-issued with the new key; one signed with a removed key is rejected",
     "`tests/http.rs` signing_keys_rotate", None, None),
    ("The absolute timeout ends a session even under constant activity",
     "`tests/conformance.rs` {memory,redis}::absolute_timeout_ends_even_an_active_session", None, None),
    ("After `regenerate` the old cookie reads nothing and cannot revive the session; the new id keeps the absolute deadline",
     "`tests/conformance.rs` {memory,redis}::regenerate_keeps_data_and_kills_old_id, regenerate_keeps_the_absolute_deadline", None, None),
];

/// What each fuzz target (`fuzz/fuzz_targets/`) feeds arbitrary bytes to.
const FUZZ_TARGETS: [(&str, &str); 2] = [
    ("cookie", "the Cookie header through the layer"),
    (
        "resp",
        "replies from Redis through our RESP2 reader, each reply it reads checked against \
         redis-rs's parser",
    ),
];

fn load(name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(format!("target/reliability/{name}.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// `{"a": 1, "b": {"c": 2}}` → `a 1, b (c 2)`.
fn figures(v: &Value) -> String {
    v.as_object().map_or_else(String::new, |o| {
        o.iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::Object(_) => format!("({})", figures(v)),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                format!("{} {value}", k.replace('_', " "))
            })
            .collect::<Vec<_>>()
            .join(", ")
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let command = args
        .iter()
        .position(|a| a == "--command")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "scripts/reliability.sh".into());
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let tower_sessions = load("tower_sessions");
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Reliability\n\nWritten by `{command}` on {date}, from that run alone: each test that tries to \
         break a guarantee records how hard it tried, and this file is written only if every test \
         passed. Real redis-server processes, started, killed, paused and filled by the tests; \
         real concurrency (a multi-threaded runtime, requests through the tower stack).\n"
    );
    let _ = writeln!(
        md,
        "| Guarantee | Proven by | This run | tower-sessions, same scenario |\n|---|---|---|---|"
    );
    for (guarantee, test, file, ts_key) in ROWS {
        let ours = file
            .and_then(load)
            .map_or_else(|| "passed".to_string(), |v| figures(&v));
        let theirs = ts_key
            .and_then(|k| tower_sessions.as_ref().map(|t| figures(&t[k])))
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(md, "| {guarantee} | {test} | {ours} | {theirs} |");
    }
    if let Some(t) = &tower_sessions {
        let _ = writeln!(
            md,
            "\ntower-sessions figures: {}, with the same sizes of race, through `bench/src/bin/races-tower-sessions.rs`.",
            t["library"].as_str().unwrap_or("tower-sessions")
        );
    }
    if let Some(f) = load("fuzz") {
        // Each target's figures under "targets"; a fuzz.json without them has the Cookie
        // target's alone, at the top level.
        let targets = f.get("targets").and_then(Value::as_object).map(|targets| {
            targets
                .iter()
                .map(|(name, figs)| {
                    let what = FUZZ_TARGETS
                        .iter()
                        .find(|(target, _)| target == name)
                        .map_or(String::new(), |(_, what)| format!(" ({what})"));
                    format!("`{name}`{what}: {}", figures(figs))
                })
                .collect::<Vec<_>>()
                .join("; ")
        });
        let _ = match targets {
            Some(targets) => writeln!(md, "\nFuzzing (`fuzz/`, cargo-fuzz): {targets}."),
            None => writeln!(
                md,
                "\nFuzzing (`fuzz/`, cargo-fuzz, the Cookie header through the layer): {}.",
                figures(&f)
            ),
        };
    }
    std::fs::write("RELIABILITY.md", md).expect("RELIABILITY.md");
}
