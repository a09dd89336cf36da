//! Bytes per session in Redis, ours against tower-sessions, for the same data, for
//! `scripts/bench.sh`. Deterministic (no timing): it can run on a busy machine.
//!
//! Four cases: a small session (one short key) and a large one (20 keys, 2 KiB of values),
//! each anonymous and logged in. Logged in, ours binds the session to a user
//! (`Session::login`), which also writes that user's index (a sorted set and a hash); every
//! user here has exactly one session, so each login has an index of its own and the index
//! keys count in full against the session. tower-sessions has no user index: its app stores
//! the user id as a session value, as an application would.
//!
//! Per library and case, a fresh redis-server (`--save '' --appendonly no`, on a free
//! loopback port, stopped by its pid at the end) and the library's app; `--warmup` sessions
//! first (connections, scripts, the first allocations), then `--sessions` more, every one
//! created by one HTTP request through the app's whole tower stack (`oneshot`, as
//! bench-latency sends them), up to 32 in flight. Two figures per session:
//! - `MEMORY USAGE key SAMPLES 0` summed over every key in Redis, divided by the sessions:
//!   the session's own key, plus (ours, logged in) its user's two index keys;
//! - the growth of `INFO memory` `used_memory` over the `--sessions` sessions, divided by
//!   them: everything Redis allocated for them, including what `MEMORY USAGE` leaves out
//!   (the key's entry in the expiry table, the tables' bucket arrays, which double at powers
//!   of two of the key count).
//!
//! Then probes on one of our sessions, to explain the figures: the same hash copied under a
//! key of the same length, without the metadata fields, with the public id as 16 bytes, with
//! the listpack encoding allowed for every value (`hash-max-listpack-value` raised), and
//! combinations (`MEMORY USAGE` of each copy once any rehash of its hash table is over).
//!
//! `cargo run --release -p trs-bench --bin bench-memory -- [--quick] [--sessions N]
//! [--warmup W] [--out PATH]`; writes `target/bench/memory.json`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::{extract::Path, routing::get, Router};
use serde::Serialize;
use tokio::task::JoinSet;
use tower_redis_session::{Session, SessionError};
use tower_sessions::Session as TsSession;
use trs_bench::apps::{ours_store, tower_sessions_layer};
use trs_bench::arg_value;
use trs_bench::memory::{OURS, TS};
use trs_bench::redis_server::RedisServer;
use trs_bench::support::send;

/// Requests in flight at once.
const IN_FLIGHT: usize = 32;

/// A session's data: one short key, or 20 keys of 100-byte values (2000 bytes of values).
fn data(size: &str) -> Vec<(String, String)> {
    match size {
        "small" => vec![("theme".into(), "dark".into())],
        _ => (0..20)
            .map(|i| (format!("field{i:02}"), format!("{i:02}-{}", "x".repeat(97))))
            .collect(),
    }
}

/// The user of session `n`: one user per session, all ids of the same length.
fn user(n: usize) -> String {
    format!("user-{n:07}")
}

async fn ours_anonymous(
    s: Session,
    Path(size): Path<String>,
) -> Result<&'static str, SessionError> {
    for (k, v) in data(&size) {
        s.insert(&k, &v)?;
    }
    Ok("ok")
}

async fn ours_login(
    s: Session,
    Path((size, user)): Path<(String, String)>,
) -> Result<&'static str, SessionError> {
    s.login(&user).await?;
    for (k, v) in data(&size) {
        s.insert(&k, &v)?;
    }
    Ok("ok")
}

async fn ts_anonymous(s: TsSession, Path(size): Path<String>) -> &'static str {
    for (k, v) in data(&size) {
        s.insert(&k, v).await.expect("insert");
    }
    "ok"
}

/// tower-sessions has no login of its own: the app keeps the user id in the session.
async fn ts_login(s: TsSession, Path((size, user)): Path<(String, String)>) -> &'static str {
    s.insert("user_id", user).await.expect("insert");
    for (k, v) in data(&size) {
        s.insert(&k, v).await.expect("insert");
    }
    "ok"
}

async fn app(library: &str, url: &str) -> Router {
    let router = Router::new();
    let router = if library == OURS {
        let store = ours_store(url).await;
        router
            .route("/anonymous/{size}", get(ours_anonymous))
            .route("/login/{size}/{user}", get(ours_login))
            .layer(store.layer())
    } else {
        router
            .route("/anonymous/{size}", get(ts_anonymous))
            .route("/login/{size}/{user}", get(ts_login))
            .layer(tower_sessions_layer(url, false).await)
    };
    // As `axum::serve` runs it (see bench-latency).
    router.with_state(())
}

/// Creates sessions `range` of a case, each by one request without a cookie; every one must
/// answer with a cookie.
async fn create(app: &Router, case: &Case, range: std::ops::Range<usize>) {
    let mut tasks = JoinSet::new();
    for n in range {
        if tasks.len() == IN_FLIGHT {
            tasks.join_next().await.expect("a task").expect("request");
        }
        let path = if case.logged_in {
            format!("/login/{}/{}", case.size, user(n))
        } else {
            format!("/anonymous/{}", case.size)
        };
        let app = app.clone();
        tasks.spawn(async move {
            send(&app, &path, None)
                .await
                .unwrap_or_else(|| panic!("{path}: no cookie"));
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("request");
    }
}

struct Case {
    size: &'static str,
    logged_in: bool,
}

impl Case {
    fn name(&self) -> String {
        format!(
            "{}, {}",
            self.size,
            if self.logged_in {
                "logged in"
            } else {
                "anonymous"
            }
        )
    }
}

const CASES: [Case; 4] = [
    Case {
        size: "small",
        logged_in: false,
    },
    Case {
        size: "small",
        logged_in: true,
    },
    Case {
        size: "large",
        logged_in: false,
    },
    Case {
        size: "large",
        logged_in: true,
    },
];

/// What a key is, by its name.
fn kind(key: &str) -> &'static str {
    if key.contains("u:{") && key.ends_with(":i") {
        "user index (sorted set)"
    } else if key.contains("u:{") && key.ends_with(":k") {
        "user index (hash)"
    } else {
        "session"
    }
}

#[derive(Serialize, Default)]
struct KeyKind {
    keys: usize,
    /// Mean `MEMORY USAGE` of a key of this kind.
    memory_usage_mean: f64,
    memory_usage_min: u64,
    memory_usage_max: u64,
    /// Mean length of the key's name.
    name_bytes: f64,
    /// `OBJECT ENCODING` of one of them.
    encoding: String,
    /// Fields (hash), members (sorted set) or bytes (string) of that one.
    length: u64,
}

#[derive(Serialize)]
struct Measured {
    sessions: usize,
    keys: usize,
    /// Σ `MEMORY USAGE` over every key, ÷ sessions.
    memory_usage_per_session: f64,
    /// `used_memory` growth over the measured sessions, ÷ them.
    used_memory_per_session: f64,
    used_memory_before: u64,
    used_memory_after: u64,
    by_kind: BTreeMap<String, KeyKind>,
    /// Ours only: probes on one session's hash (see the module's documentation).
    #[serde(skip_serializing_if = "Option::is_none")]
    probes: Option<Probes>,
    /// tower-sessions only: `STRLEN` of one session's value (its MessagePack record).
    #[serde(skip_serializing_if = "Option::is_none")]
    value_bytes: Option<u64>,
}

/// One of our session hashes, taken apart.
#[derive(Serialize)]
struct Probes {
    key_bytes: usize,
    /// Metadata fields (the empty name: creation time; names starting with NUL: public id,
    /// user, …): name → (name bytes, value bytes).
    metadata: BTreeMap<String, (usize, usize)>,
    data_fields: usize,
    /// Bytes of the data's names and values (values as stored, JSON).
    data_bytes: usize,
    longest_value: usize,
    hash_max_listpack_value: u64,
    /// `MEMORY USAGE` of the session.
    session: u64,
    /// `MEMORY USAGE` of copies of the hash, each under a key of the same length, each once
    /// any rehash of its hash table is over. A session as created may be in the middle of
    /// one (two bucket arrays), which its first reads finish.
    copy: u64,
    without_metadata: u64,
    /// With the public id as 16 bytes (a proposal, not the format).
    id_16_bytes: u64,
    /// With every value allowed in a listpack (`hash-max-listpack-value` raised).
    listpack: u64,
    listpack_without_metadata: u64,
    listpack_id_16_bytes: u64,
}

fn info_used_memory(redis: &RedisServer) -> u64 {
    let info: String = redis.cmd(&["INFO", "memory"]);
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .expect("used_memory")
        .trim()
        .parse()
        .expect("used_memory")
}

/// `used_memory` once it holds still (a rehash of the keyspace may still be under way).
fn settled_used_memory(redis: &RedisServer) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = info_used_memory(redis);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = info_used_memory(redis);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Every key with its `MEMORY USAGE`.
fn usage_of_all(redis: &RedisServer) -> Vec<(String, u64)> {
    let mut conn = redis.conn();
    let mut out = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
            .expect("SCAN");
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
        }
        let usage: Vec<u64> = pipe.query(&mut conn).expect("MEMORY USAGE");
        out.extend(keys.into_iter().zip(usage));
        cursor = next;
        if cursor == 0 {
            return out;
        }
    }
}

fn usage(conn: &mut redis::Connection, key: &[u8]) -> u64 {
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query(conn)
        .expect("MEMORY USAGE")
}

/// Copies `fields` into a fresh hash named like `key` (same length), its `MEMORY USAGE`.
fn probe(conn: &mut redis::Connection, key: &str, fields: &[(Vec<u8>, Vec<u8>)]) -> u64 {
    let name = format!("{}~probe~~", &key[..key.len() - 8]);
    let mut cmd = redis::cmd("HSET");
    cmd.arg(&name);
    for (k, v) in fields {
        cmd.arg(k).arg(v);
    }
    let _: u64 = cmd.query(conn).expect("HSET probe");
    // Every lookup moves an incremental rehash of a hash table on by a bucket or more: these
    // finish it, so that the probes compare settled hashes, whatever the fields' order.
    let mut pipe = redis::pipe();
    for _ in 0..128 {
        pipe.cmd("HEXISTS").arg(&name).arg(&fields[0].0).ignore();
    }
    let () = pipe.query(conn).expect("HEXISTS probe");
    let bytes = usage(conn, name.as_bytes());
    let _: u64 = redis::cmd("DEL").arg(&name).query(conn).expect("DEL probe");
    bytes
}

fn config_value(conn: &mut redis::Connection, name: &str) -> String {
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query(conn)
        .expect("CONFIG GET");
    pair[1].clone()
}

fn set_config(conn: &mut redis::Connection, name: &str, value: &str) {
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(conn)
        .expect("CONFIG SET");
}

fn probes(redis: &RedisServer, key: &str) -> Probes {
    let mut conn = redis.conn();
    let fields: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(key)
        .query(&mut conn)
        .expect("HGETALL");
    let is_meta = |k: &[u8]| k.is_empty() || k[0] == 0;
    let data: Vec<_> = fields
        .iter()
        .filter(|(k, _)| !is_meta(k))
        .cloned()
        .collect();
    let metadata = fields
        .iter()
        .filter(|(k, _)| is_meta(k))
        .map(|(k, v)| {
            (
                format!("{:?}", String::from_utf8_lossy(k)),
                (k.len(), v.len()),
            )
        })
        .collect();
    let limit = config_value(&mut conn, "hash-max-listpack-value");
    let session = usage(&mut conn, key.as_bytes());
    let copy = probe(&mut conn, key, &fields);
    let without_metadata = probe(&mut conn, key, &data);
    // The public id as its 16 bytes instead of the 36 characters of its text.
    let short_id: Vec<_> = fields
        .iter()
        .map(|(k, v)| match k.as_slice() {
            b"\0id" => (k.clone(), uuid_bytes(v)),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let id_16_bytes = probe(&mut conn, key, &short_id);
    set_config(&mut conn, "hash-max-listpack-value", "1000000");
    let listpack = probe(&mut conn, key, &fields);
    let listpack_without_metadata = probe(&mut conn, key, &data);
    let listpack_id_16_bytes = probe(&mut conn, key, &short_id);
    set_config(&mut conn, "hash-max-listpack-value", &limit);
    Probes {
        key_bytes: key.len(),
        metadata,
        data_fields: data.len(),
        data_bytes: data.iter().map(|(k, v)| k.len() + v.len()).sum(),
        longest_value: fields.iter().map(|(_, v)| v.len()).max().unwrap_or(0),
        hash_max_listpack_value: limit.parse().expect("hash-max-listpack-value"),
        session,
        copy,
        without_metadata,
        id_16_bytes,
        listpack,
        listpack_without_metadata,
        listpack_id_16_bytes,
    }
}

/// Bytes per session by which used_memory moved between identical runs.
const USED_MEMORY_NOISE: f64 = 1.0;

fn ratio_met(ratio: f64) -> bool {
    ratio <= 1.0
}

/// The 16 bytes of a UUID's text: hyphenated, or the 22 base64url characters the crate now
/// stores.
fn uuid_bytes(text: &[u8]) -> Vec<u8> {
    if text.len() == 22 {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {c}"),
        };
        let bits: u128 = text
            .iter()
            .fold(0u128, |acc, &c| (acc << 6) | u128::from(value(c)));
        // 22 characters hold 132 bits: the last 4 are padding.
        return (bits >> 4).to_be_bytes().to_vec();
    }
    let hex: Vec<u8> = text.iter().copied().filter(u8::is_ascii_hexdigit).collect();
    assert_eq!(hex.len(), 32, "a UUID: {:?}", String::from_utf8_lossy(text));
    hex.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).expect("hex"), 16).expect("hex"))
        .collect()
}

/// One library, one case, in a redis-server of its own.
fn measure(
    rt: &tokio::runtime::Runtime,
    library: &str,
    case: &Case,
    n: usize,
    warmup: usize,
) -> Measured {
    let redis = RedisServer::start();
    let pid = redis.pid().expect("redis-server's pid");
    let app = rt.block_on(app(library, &redis.url()));
    rt.block_on(create(&app, case, 0..warmup));
    let before = settled_used_memory(&redis);
    rt.block_on(create(&app, case, warmup..warmup + n));
    let after = settled_used_memory(&redis);
    let sessions = warmup + n;

    let all = usage_of_all(&redis);
    let mut by_kind: BTreeMap<String, KeyKind> = BTreeMap::new();
    for (key, bytes) in &all {
        let k = by_kind.entry(kind(key).into()).or_default();
        if k.keys == 0 {
            k.memory_usage_min = *bytes;
            let encoding: String = redis.cmd(&["OBJECT", "ENCODING", key]);
            let len_cmd = match encoding.as_str() {
                "listpack" | "hashtable" if kind(key) != "user index (sorted set)" => "HLEN",
                "listpack" | "skiplist" => "ZCARD",
                _ => "STRLEN",
            };
            k.length = redis.cmd(&[len_cmd, key]);
            k.encoding = encoding;
        }
        k.keys += 1;
        k.memory_usage_mean += *bytes as f64;
        k.name_bytes += key.len() as f64;
        k.memory_usage_min = k.memory_usage_min.min(*bytes);
        k.memory_usage_max = k.memory_usage_max.max(*bytes);
    }
    for k in by_kind.values_mut() {
        k.memory_usage_mean /= k.keys as f64;
        k.name_bytes /= k.keys as f64;
    }
    let sessions_found = by_kind.get("session").map_or(0, |k| k.keys);
    assert_eq!(sessions_found, sessions, "{library}: one key per session");
    if case.logged_in && library == OURS {
        for index in ["user index (sorted set)", "user index (hash)"] {
            assert_eq!(by_kind[index].keys, sessions, "{library}: {index} per user");
        }
    }
    assert_eq!(
        all.len(),
        by_kind.values().map(|k| k.keys).sum::<usize>(),
        "{library}: every key counted"
    );
    let session_key = all
        .iter()
        .find(|(k, _)| kind(k) == "session")
        .map(|(k, _)| k.clone())
        .expect("a session");
    let (probes, value_bytes) = if library == OURS {
        (Some(probes(&redis, &session_key)), None)
    } else {
        (None, Some(redis.cmd(&["STRLEN", &session_key])))
    };
    drop(app);
    // Stopped by its pid (`RedisServer` kills its own child on drop).
    drop(redis);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "redis-server {pid} stopped"
    );
    Measured {
        sessions,
        keys: all.len(),
        memory_usage_per_session: all.iter().map(|(_, b)| *b as f64).sum::<f64>() / sessions as f64,
        used_memory_per_session: after.saturating_sub(before) as f64 / n as f64,
        used_memory_before: before,
        used_memory_after: after,
        by_kind,
        probes,
        value_bytes,
    }
}

#[derive(Serialize)]
struct CaseResult {
    case: String,
    size: String,
    logged_in: bool,
    /// What the session holds, for both libraries.
    data: String,
    libraries: BTreeMap<String, Measured>,
    /// Ours ÷ tower-sessions.
    memory_usage_ratio: f64,
    used_memory_ratio: f64,
    /// The target: ours ≤ tower-sessions, by each figure, and by both.
    memory_usage_met: bool,
    used_memory_met: bool,
    met: bool,
}

#[derive(Serialize)]
struct Output {
    command: String,
    redis: String,
    sessions: usize,
    warmup: usize,
    users: String,
    target: String,
    cases: Vec<CaseResult>,
    seconds: f64,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = arg_value("--sessions").unwrap_or(if quick { 10_000 } else { 100_000 });
    let warmup: usize = arg_value("--warmup").unwrap_or(100);
    let out: String = arg_value("--out").unwrap_or_else(|| "target/bench/memory.json".into());
    assert!(
        n > 0 && warmup > 0,
        "--sessions and --warmup must be positive"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let mut cases = Vec::new();
    for case in &CASES {
        let mut libraries = BTreeMap::new();
        for library in [OURS, TS] {
            let t = Instant::now();
            let m = measure(&rt, library, case, n, warmup);
            eprintln!(
                "{:20} {:20}: MEMORY USAGE {:7.1} B/session, used_memory {:7.1} B/session ({} keys, {:.0} s)",
                case.name(),
                library,
                m.memory_usage_per_session,
                m.used_memory_per_session,
                m.keys,
                t.elapsed().as_secs_f64()
            );
            libraries.insert(library.to_string(), m);
        }
        let (ours, ts) = (&libraries[OURS], &libraries[TS]);
        let memory_usage_ratio = ours.memory_usage_per_session / ts.memory_usage_per_session;
        let used_memory_ratio = ours.used_memory_per_session / ts.used_memory_per_session;
        // used_memory moves by up to a byte per session between identical runs (allocator and
        // table growth): a difference below that is no difference.
        let used_memory_met = ratio_met(used_memory_ratio)
            || (ours.used_memory_per_session - ts.used_memory_per_session) < USED_MEMORY_NOISE;
        let fields = data(case.size);
        let mut text = format!(
            "{} key{} ({} bytes of values)",
            fields.len(),
            if fields.len() == 1 { "" } else { "s" },
            fields.iter().map(|(_, v)| v.len()).sum::<usize>()
        );
        if case.logged_in {
            text.push_str(&format!(
                ", user id `{}` ({} bytes)",
                user(0),
                user(0).len()
            ));
        }
        cases.push(CaseResult {
            case: case.name(),
            size: case.size.into(),
            logged_in: case.logged_in,
            data: text,
            memory_usage_met: ratio_met(memory_usage_ratio),
            used_memory_met,
            met: ratio_met(memory_usage_ratio) && used_memory_met,
            memory_usage_ratio,
            used_memory_ratio,
            libraries,
        });
    }
    let redis_version = std::process::Command::new(trs_bench::redis_server::server_binary())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let output = Output {
        command: std::env::args()
            .skip(1)
            .fold("bench-memory".to_string(), |s, a| s + " " + &a),
        redis: redis_version,
        sessions: n,
        warmup,
        users: "logged in: one session per user, so each login has an index of its own".into(),
        target: "ours ≤ tower-sessions in bytes per session, for the same data".into(),
        cases,
        seconds: started.elapsed().as_secs_f64(),
    };
    for c in &output.cases {
        eprintln!(
            "{} {:20}: ours/tower-sessions {:.2}× (MEMORY USAGE), {:.2}× (used_memory)",
            if c.met { "met " } else { "MISS" },
            c.case,
            c.memory_usage_ratio,
            c.used_memory_ratio
        );
    }
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir).expect("output folder");
    }
    let json = serde_json::to_string_pretty(&output).expect("json");
    std::fs::write(&out, json + "\n").expect("memory.json");
    eprintln!("wrote {out} ({:.0} s)", output.seconds);
}
