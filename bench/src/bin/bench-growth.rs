//! Growth (issue 30): does a read cost more when Redis holds a million sessions rather than a
//! thousand, and do listing and "end all" over a user's 100,000 index entries finish in
//! bounded time? For `scripts/bench.sh`.
//!
//! **Reads.** Three redis-servers on loopback: `1k` holds 1,000 sessions, `1k, again` another
//! 1,000 (the A/A control: the same size twice, whose ratio is 1× in truth, so that its
//! spread is the method's resolution), and `1M` holds 1,000,000 (`--big`). Every session has
//! our store's format: a hash under `session:` + 22 base64url characters, with the creation
//! time (field ``), the public id (`\0id`), the three small values of the benchmarks' small
//! session, and a `PEXPIRE` of the idle timeout. The sessions that are read are created
//! through our store (its `/seed/small` route); the rest of `1M` (the filler) are copies of
//! the field names and values of one of them, under random keys of the same shape, each with
//! its own creation time and public id, written as pipelined RESP on a raw socket. `DBSIZE`
//! is checked after.
//!
//! Which sessions are read matters more than how many are stored: a thousand keys read over
//! and over stay in the CPU's caches whatever the size of the keyspace. So each server's
//! requests walk through a list of cookies of distinct sessions: all 1,000 of `1k`, and
//! `--read` (100,000; 10,000 quick) of `1M`, spread over its whole keyspace (Redis places
//! keys by hash, whatever order they were created in), so that nearly every read of `1M`
//! finds its key, its hash and its dictionary bucket cold, as reads of a large population of
//! users do; `1k` keeps all of its sessions warm. This is the adverse case for `1M`.
//!
//! Latency: through the real tower stack (`oneshot` on our app's router, as bench-latency),
//! in rounds; in each, the three servers take turns, `SLICE` requests each, in an order
//! rotated each round; each server's median is its figure for the round, and the ratios
//! (`1M` ÷ `1k`, `1k, again` ÷ `1k`) are taken within the round. Throughput: our app per
//! server, each on its own loopback port, wrk at `--connections` (64) for `--seconds` per run,
//! the three in turn each round (rotated); every wrk script holds the same number of requests
//! (the small servers' cookies repeated), so that its set-up costs every app the same.
//! Redis' `keyspace_misses` during the reads is recorded: 0 means that every read found its
//! session.
//!
//! **Index.** A fourth redis-server; one user logs in `--index` times (100,000; 10,000
//! quick), each login one request through our app from a fresh browser, 32 in flight.
//! Listing (`user_sessions`) is timed at 1,000, 10,000 and at the full count (`--list-runs`
//! times there), then "end all" (`end_user_sessions`) once, and listing again (empty).
//! `SLOWLOG` (threshold 1 ms) gives the longest single Redis command of each: a script over
//! every entry blocks Redis for that long.
//!
//! On two or more CPUs this process runs on every CPU but the first, wrk and the
//! redis-servers on the first (as bench-load). Servers listen on 127.0.0.1 only and are
//! stopped by their pids when this ends.
//!
//! `cargo run --release -p trs-bench --bin bench-growth -- [--quick] [--big N] [--read N]
//! [--index N] [--rounds R] [--requests N] [--load-rounds R] [--seconds S]
//! [--connections C] [--out PATH]`; writes `target/bench/growth.json`.

use std::io::{BufWriter, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::{extract::Path, routing::get, Router};
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tower_redis_session::{Session, SessionError, SessionStore};
use trs_bench::apps::{ours_app, ours_store};
use trs_bench::placement::Placement;
use trs_bench::redis_server::RedisServer;
use trs_bench::support::send;
use trs_bench::wrk::wrk;
use trs_bench::{arg_value, rotated};

/// Sessions of the small servers.
const SMALL: usize = 1_000;
/// Requests a server runs before the next takes its turn (as bench-latency).
const SLICE: usize = 20;
/// Requests in flight while seeding and logging in.
const IN_FLIGHT: usize = 32;
/// The user of the index.
const USER: &str = "growth-user";
/// Listing is timed when the index reaches these sizes (and at the full count).
const CHECKPOINTS: [usize; 2] = [1_000, 10_000];

const SMALL_NAME: &str = "1k";
const AGAIN_NAME: &str = "1k, again";

/// A small fast generator for the filler's keys, ids and times (not for anything secret).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// base64url of 16 bytes without padding: 22 characters, as a store key's digest.
fn base64url_16(bytes: &[u8; 16], out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    for &b in bytes {
        bits = (bits << 8) | u32::from(b);
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(ALPHABET[((bits >> n) & 63) as usize]);
        }
    }
    if n > 0 {
        out.push(ALPHABET[((bits << (6 - n)) & 63) as usize]);
    }
}

fn bulk(w: &mut impl Write, bytes: &[u8]) {
    write!(w, "${}\r\n", bytes.len()).expect("write");
    w.write_all(bytes).expect("write");
    w.write_all(b"\r\n").expect("write");
}

/// One session as our store writes it: its field names and values, from a session the store
/// created (the creation time and the public id are drawn anew for each copy).
struct Template {
    prefix: String,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    ttl_ms: u64,
}

impl Template {
    fn of(redis: &RedisServer, key: &str) -> Self {
        let fields: Vec<(Vec<u8>, Vec<u8>)> = redis.cmd(&["HGETALL", key]);
        assert!(
            fields.iter().any(|(k, _)| k.is_empty()) && fields.iter().any(|(k, _)| k == b"\0id"),
            "{key}: no creation time or public id"
        );
        let pttl: i64 = redis.cmd(&["PTTL", key]);
        assert!(pttl > 0, "{key}: no expiry");
        // The idle timeout, to the second above.
        let ttl_ms = (pttl as u64).div_ceil(1000) * 1000;
        let digest = key.rsplit(':').next().expect("key");
        assert_eq!(digest.len(), 22, "{key}: not a store key");
        Self {
            prefix: key[..key.len() - 22].to_owned(),
            fields,
            ttl_ms,
        }
    }
}

/// Writes `n` filler sessions to the redis-server on `port`: `HSET` and `PEXPIRE` each,
/// pipelined on one raw socket (a reader thread counts the replies meanwhile). Every reply
/// must be an integer; `HSET` must have added every field (a fresh key).
fn fill(port: u16, n: usize, template: &Template, seed: u64) -> Duration {
    let start = Instant::now();
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("fill: connect");
    let mut reader = stream.try_clone().expect("fill: clone");
    reader
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("fill: timeout");
    let fields = template.fields.len();
    let added = format!(":{fields}\r\n").into_bytes();
    let counting = std::thread::spawn(move || {
        // Replies are one line each: `:n\r\n`.
        let (mut lines, mut bad, mut line) = (0usize, 0usize, Vec::with_capacity(16));
        let mut buf = vec![0u8; 1 << 16];
        while lines < 2 * n {
            let got = reader.read(&mut buf).expect("fill: read");
            assert!(got > 0, "fill: redis closed the connection");
            for &b in &buf[..got] {
                line.push(b);
                if b == b'\n' {
                    // HSET's reply, then PEXPIRE's.
                    let ok = if lines % 2 == 0 {
                        line == added
                    } else {
                        line == b":1\r\n"
                    };
                    if !ok && bad < 3 {
                        eprintln!("fill: reply {:?}", String::from_utf8_lossy(&line));
                    }
                    bad += usize::from(!ok);
                    lines += 1;
                    line.clear();
                }
            }
        }
        bad
    });
    let mut w = BufWriter::with_capacity(1 << 20, stream);
    let mut rng = SplitMix(seed);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let ttl = template.ttl_ms.to_string();
    let mut key = Vec::with_capacity(64);
    for _ in 0..n {
        key.clear();
        key.extend_from_slice(template.prefix.as_bytes());
        let mut digest = [0u8; 16];
        digest[..8].copy_from_slice(&rng.next().to_le_bytes());
        digest[8..].copy_from_slice(&rng.next().to_le_bytes());
        base64url_16(&digest, &mut key);
        // Created within the last minute; a UUID v7 of that time.
        let created = now_ms - rng.next() % 60_000;
        let (a, b) = (rng.next(), rng.next());
        let id = format!(
            "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
            created >> 16,
            created & 0xffff,
            a & 0xfff,
            0x8000 | ((a >> 12) & 0x3fff),
            b & 0xffff_ffff_ffff
        );
        write!(w, "*{}\r\n", 2 + 2 * fields).expect("write");
        bulk(&mut w, b"HSET");
        bulk(&mut w, &key);
        for (name, value) in &template.fields {
            bulk(&mut w, name);
            match name.as_slice() {
                b"" => bulk(&mut w, created.to_string().as_bytes()),
                b"\0id" => bulk(&mut w, id.as_bytes()),
                _ => bulk(&mut w, value),
            }
        }
        w.write_all(b"*3\r\n").expect("write");
        bulk(&mut w, b"PEXPIRE");
        bulk(&mut w, &key);
        bulk(&mut w, ttl.as_bytes());
    }
    w.flush().expect("fill: flush");
    let bad = counting.join().expect("fill: reader");
    assert_eq!(bad, 0, "fill: {bad} replies were not a fresh key's");
    start.elapsed()
}

/// Seeds `n` small sessions through our app; their cookies.
async fn seed(app: &Router, n: usize) -> Vec<String> {
    let mut tasks = JoinSet::new();
    let mut cookies = Vec::with_capacity(n);
    for _ in 0..n {
        if tasks.len() == IN_FLIGHT {
            cookies.push(tasks.join_next().await.expect("task").expect("seed"));
        }
        let app = app.clone();
        tasks.spawn(async move { send(&app, "/seed/small", None).await.expect("cookie") });
    }
    while let Some(c) = tasks.join_next().await {
        cookies.push(c.expect("seed"));
    }
    cookies
}

/// The body of `GET path` with `cookie`.
async fn body(app: &Router, path: &str, cookie: &str) -> String {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let res = app
        .clone()
        .oneshot(
            axum::http::Request::get(path)
                .header("cookie", cookie)
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert!(res.status().is_success(), "{path}: {}", res.status());
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn info_field(redis: &RedisServer, section: &str, field: &str) -> u64 {
    let info: String = redis.cmd(&["INFO", section]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO {section}: no {field}"))
}

/// One server of the read comparison.
struct Server {
    name: String,
    redis: RedisServer,
    sessions: usize,
    /// Cookies of distinct sessions, read in turn.
    cookies: Vec<String>,
}

/// The shuffled order of `items` (Fisher–Yates with SplitMix).
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = SplitMix(seed);
    for i in (1..items.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// Starts a server, seeds `read` sessions through our store and `sessions - read` filler.
fn populate(
    rt: &Runtime,
    name: &str,
    sessions: usize,
    read: usize,
    placement: &Placement,
    seed_rng: u64,
) -> (Server, serde_json::Value) {
    let redis = RedisServer::start();
    placement.pin_load(redis.pid().expect("redis pid"));
    let start = Instant::now();
    let mut cookies = rt.block_on(async {
        let store = ours_store(&redis.url()).await;
        seed(&ours_app(&store).with_state(()), read).await
    });
    let seeded = start.elapsed();
    let mut filled = Duration::ZERO;
    if sessions > read {
        let key = redis.keys().into_iter().next().expect("a seeded session");
        let template = Template::of(&redis, &key);
        filled = fill(redis.port, sessions - read, &template, seed_rng);
    }
    let dbsize: usize = redis.cmd(&["DBSIZE"]);
    assert_eq!(dbsize, sessions, "{name}: DBSIZE");
    let used_memory = info_field(&redis, "memory", "used_memory");
    eprintln!(
        "{name}: {sessions} sessions ({read} through the store in {:.1} s, the rest in {:.1} s), \
         used_memory {} MB",
        seeded.as_secs_f64(),
        filled.as_secs_f64(),
        used_memory >> 20
    );
    shuffle(&mut cookies, seed_rng ^ 0x5eed);
    let info = serde_json::json!({
        "server": name, "sessions": sessions, "dbsize": dbsize, "read_sessions": read,
        "seeded_seconds": seeded.as_secs_f64(), "filled_seconds": filled.as_secs_f64(),
        "used_memory": used_memory,
    });
    (
        Server {
            name: name.into(),
            redis,
            sessions,
            cookies,
        },
        info,
    )
}

#[derive(Serialize)]
struct LatencyRun {
    round: usize,
    server: String,
    position: usize,
    requests: usize,
    median_us: f64,
    p10_us: f64,
    p90_us: f64,
}

#[derive(Serialize)]
struct LoadRun {
    round: usize,
    server: String,
    connections: u32,
    requests_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

/// Quantile `q` of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct LatencyBudget {
    rounds: usize,
    requests: usize,
    warmup: usize,
    cap: Duration,
}

/// The latency rounds (see the module's documentation); every run, and each server's
/// `keyspace_misses` over them.
fn latency(servers: &[Server], budget: &LatencyBudget) -> (Vec<LatencyRun>, Vec<u64>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let apps: Vec<Router> = servers
        .iter()
        .map(|s| {
            let store = rt.block_on(ours_store(&s.redis.url()));
            ours_app(&store).with_state(())
        })
        .collect();
    // Every server reads its sessions: a sample checked through the body.
    for (s, app) in servers.iter().zip(&apps) {
        for c in s.cookies.iter().take(20) {
            assert_eq!(rt.block_on(body(app, "/read", c)), "alice", "{}", s.name);
        }
    }
    let misses: Vec<u64> = servers
        .iter()
        .map(|s| info_field(&s.redis, "stats", "keyspace_misses"))
        .collect();
    let mut cursors = vec![0usize; servers.len()];
    let mut runs = Vec::new();
    let run = |i: usize, n: usize, times: &mut Vec<f64>, cursors: &mut [usize]| {
        let (app, cookies) = (&apps[i], &servers[i].cookies);
        rt.block_on(async {
            for _ in 0..n {
                let cookie = &cookies[cursors[i] % cookies.len()];
                cursors[i] += 1;
                let start = Instant::now();
                send(app, "/read", Some(cookie)).await;
                times.push(start.elapsed().as_secs_f64() * 1e6);
            }
        });
    };
    let indices: Vec<usize> = (0..servers.len()).collect();
    for round in 0..budget.rounds {
        let order = rotated(&indices, round);
        let mut scratch = Vec::new();
        for &i in &order {
            run(i, budget.warmup, &mut scratch, &mut cursors);
        }
        let mut times: Vec<Vec<f64>> = servers
            .iter()
            .map(|_| Vec::with_capacity(budget.requests))
            .collect();
        let start = Instant::now();
        let cap = budget.cap * servers.len() as u32;
        let running = |n: usize| n < budget.requests && (n < 100 || start.elapsed() < cap);
        while times.iter().any(|t| running(t.len())) {
            for &i in &order {
                if running(times[i].len()) {
                    let n = SLICE.min(budget.requests - times[i].len());
                    run(i, n, &mut times[i], &mut cursors);
                }
            }
        }
        let mut line = format!("latency round {}/{}:", round + 1, budget.rounds);
        for (position, &i) in order.iter().enumerate() {
            let us = &mut times[i];
            us.sort_by(f64::total_cmp);
            let median_us = quantile(us, 0.5);
            line.push_str(&format!("  {} {median_us:.1} µs", servers[i].name));
            runs.push(LatencyRun {
                round,
                server: servers[i].name.clone(),
                position,
                requests: us.len(),
                median_us,
                p10_us: quantile(us, 0.1),
                p90_us: quantile(us, 0.9),
            });
        }
        eprintln!("{line}");
    }
    let misses = servers
        .iter()
        .zip(misses)
        .map(|(s, before)| info_field(&s.redis, "stats", "keyspace_misses") - before)
        .collect();
    (runs, misses)
}

/// A wrk script that reads its cookies from `path` (one a line) in `init`, formats every
/// request once there, and sends them in turn; wrk's second thread starts half-way through,
/// so that the two do not read the same sessions one after the other. Every request gets a
/// query string of its own (which the route ignores): Lua interns strings, so without it the
/// small servers' repeated cookies would make 1,000 distinct requests against the large
/// server's 100,000, and wrk (which shares a CPU and its caches with Redis) would run from a
/// smaller working set for the small servers than for the large one.
fn wrk_script(path: &str) -> String {
    format!(
        "local path = {path:?}\nlocal requests = {{}}\nlocal i = 0\nlocal threads = 0\n\
         setup = function(thread)\n  thread:set(\"id\", threads)\n  threads = threads + 1\nend\n\
         init = function(args)\n  for c in io.lines(path) do\n    \
         requests[#requests + 1] = wrk.format(nil, \"/read?r=\" .. #requests, {{ Cookie = c }})\n  \
         end\n  \
         i = ((id or 0) * math.floor(#requests / 2)) % #requests\nend\n\
         request = function()\n  i = i % #requests + 1\n  return requests[i]\nend\n"
    )
}

struct LoadBudget {
    rounds: usize,
    seconds: u64,
    connections: u32,
}

/// The wrk rounds (see the module's documentation).
async fn load(servers: &[Server], budget: &LoadBudget, placement: &Placement) -> Vec<LoadRun> {
    let dir = std::path::Path::new("target/bench");
    // Every script holds as many requests as the largest list of cookies.
    let requests = servers.iter().map(|s| s.cookies.len()).max().unwrap_or(0);
    let mut targets = Vec::new();
    for s in servers {
        let slug = s.name.replace([' ', ','], "");
        let cookies_path = dir.join(format!("growth-{slug}.cookies"));
        let mut lines = String::with_capacity(requests * 100);
        for c in s.cookies.iter().cycle().take(requests) {
            lines.push_str(c);
            lines.push('\n');
        }
        std::fs::write(&cookies_path, lines).expect("cookies file");
        let script = dir.join(format!("growth-{slug}.lua"));
        let cookies_path = std::fs::canonicalize(&cookies_path).expect("cookies path");
        std::fs::write(&script, wrk_script(&cookies_path.to_string_lossy())).expect("script");
        let store = ours_store(&s.redis.url()).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = ours_app(&store);
        tokio::spawn(async move { axum::serve(listener, app).await });
        targets.push((s.name.clone(), addr, script.to_string_lossy().into_owned()));
    }
    // One run of each, not recorded: the apps' first requests (connections, allocations)
    // and wrk's first start do not fall into the first round.
    for (_, addr, script) in targets.clone() {
        let cpus = placement.clone();
        let c = budget.connections;
        tokio::task::spawn_blocking(move || wrk(&cpus, addr, &script, c, 1, "/read"))
            .await
            .expect("wrk task");
    }
    let mut runs = Vec::new();
    let indices: Vec<usize> = (0..targets.len()).collect();
    for round in 0..budget.rounds {
        for i in rotated(&indices, round) {
            let (name, addr, script) = targets[i].clone();
            let (c, secs) = (budget.connections, budget.seconds);
            let cpus = placement.clone();
            let (rps, p50, p99, _, errors) =
                tokio::task::spawn_blocking(move || wrk(&cpus, addr, &script, c, secs, "/read"))
                    .await
                    .expect("wrk task");
            eprintln!(
                "load round {}/{} {name:10} c={c}: {rps:8.0} req/s  p50 {p50:6.0} µs  p99 \
                 {p99:7.0} µs  errors {errors}",
                round + 1,
                budget.rounds
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            runs.push(LoadRun {
                round,
                server: name,
                connections: c,
                requests_per_sec: rps,
                p50_us: p50,
                p99_us: p99,
                errors,
            });
        }
    }
    runs
}

async fn login(
    s: Session,
    Path((user, device)): Path<(String, String)>,
) -> Result<String, SessionError> {
    s.login(&user).await?;
    s.insert("device", &device)?;
    Ok("ok".into())
}

/// Logs `USER` in for logins `range`, from fresh browsers, [`IN_FLIGHT`] at a time.
async fn logins(app: &Router, range: std::ops::Range<usize>) {
    let mut tasks = JoinSet::new();
    for i in range {
        if tasks.len() == IN_FLIGHT {
            tasks.join_next().await.expect("task").expect("login");
        }
        let (app, path) = (app.clone(), format!("/login/{USER}/d{i}"));
        tasks.spawn(async move {
            send(&app, &path, None)
                .await
                .unwrap_or_else(|| panic!("{path}: no cookie"));
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("login");
    }
}

/// The longest command in `SLOWLOG` (µs; 0 if none over the threshold), then clears it.
fn slowest(redis: &RedisServer) -> (u64, String) {
    let mut conn = redis.conn();
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(1024)
        .query(&mut conn)
        .expect("SLOWLOG GET");
    let mut worst = (0u64, String::new());
    for e in entries {
        let redis::Value::Array(items) = e else {
            continue;
        };
        let us = match items.get(2) {
            Some(redis::Value::Int(us)) => *us as u64,
            _ => 0,
        };
        if us > worst.0 {
            let command = match items.get(3) {
                Some(redis::Value::Array(args)) => args
                    .iter()
                    .take(3)
                    .map(|a| match a {
                        redis::Value::BulkString(b) => {
                            String::from_utf8_lossy(&b[..b.len().min(24)]).into_owned()
                        }
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            };
            worst = (us, command);
        }
    }
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query(&mut conn)
        .expect("SLOWLOG RESET");
    worst
}

#[derive(Serialize)]
struct Timed {
    operation: String,
    entries: usize,
    seconds: f64,
    /// Sessions listed, or ended.
    result: usize,
    /// The longest single Redis command during it (SLOWLOG, threshold 1 ms; 0 if none).
    slowest_command_us: u64,
    slowest_command: String,
}

/// The index part (see the module's documentation).
async fn index(n: usize, list_runs: usize, placement: &Placement) -> serde_json::Value {
    let redis = RedisServer::start_with(&[
        "--slowlog-log-slower-than",
        "1000",
        "--slowlog-max-len",
        "1024",
    ]);
    placement.pin_load(redis.pid().expect("redis pid"));
    let store: SessionStore = ours_store(&redis.url()).await;
    let app = Router::new()
        .route("/login/{user}/{device}", get(login))
        .layer(store.layer())
        .with_state(());
    let mut timed = Vec::new();
    let mut done = 0;
    let mut login_seconds = 0.0;
    let mut sizes: Vec<usize> = CHECKPOINTS.iter().copied().filter(|&c| c < n).collect();
    sizes.push(n);
    for &size in &sizes {
        let start = Instant::now();
        logins(&app, done..size).await;
        login_seconds += start.elapsed().as_secs_f64();
        eprintln!(
            "index: {size} logins ({:.0} logins/s so far)",
            size as f64 / login_seconds
        );
        done = size;
        slowest(&redis);
        let runs = if size == n { list_runs } else { 1 };
        for _ in 0..runs {
            let start = Instant::now();
            let listed = store.user_sessions(USER, &["device"]).await.expect("list");
            let seconds = start.elapsed().as_secs_f64();
            assert_eq!(listed.len(), size, "listed");
            let (us, command) = slowest(&redis);
            eprintln!(
                "index: listing {size} entries took {:.3} s (slowest command {us} µs)",
                seconds
            );
            timed.push(Timed {
                operation: "list".into(),
                entries: size,
                seconds,
                result: listed.len(),
                slowest_command_us: us,
                slowest_command: command,
            });
        }
    }
    let start = Instant::now();
    let ended = store.end_user_sessions(USER, None).await.expect("end all");
    let seconds = start.elapsed().as_secs_f64();
    let (us, command) = slowest(&redis);
    eprintln!(
        "index: ending {n} sessions took {seconds:.3} s (slowest command {us} µs: {command})"
    );
    assert_eq!(ended, n, "end all ended every session");
    timed.push(Timed {
        operation: "end all".into(),
        entries: n,
        seconds,
        result: ended,
        slowest_command_us: us,
        slowest_command: command,
    });
    let start = Instant::now();
    let listed = store.user_sessions(USER, &["device"]).await.expect("list");
    let seconds = start.elapsed().as_secs_f64();
    let (us, command) = slowest(&redis);
    assert!(listed.is_empty(), "listed after end all");
    timed.push(Timed {
        operation: "list after end all".into(),
        entries: 0,
        seconds,
        result: 0,
        slowest_command_us: us,
        slowest_command: command,
    });
    serde_json::json!({
        "entries": n,
        "logins_seconds": login_seconds,
        "logins_per_second": n as f64 / login_seconds,
        "in_flight": IN_FLIGHT,
        "timed": timed,
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let placement = Placement::detect();
    placement.pin_self();
    eprintln!("placement: {}", placement.describe());
    let big: usize = arg_value("--big").unwrap_or(if quick { 100_000 } else { 1_000_000 });
    let read: usize = arg_value("--read").unwrap_or(if quick { 10_000 } else { 100_000 });
    let index_n: usize = arg_value("--index").unwrap_or(if quick { 10_000 } else { 100_000 });
    let lat = LatencyBudget {
        rounds: arg_value("--rounds").unwrap_or(if quick { 7 } else { 15 }),
        requests: arg_value("--requests").unwrap_or(if quick { 2_000 } else { 5_000 }),
        warmup: 200,
        cap: Duration::from_millis(if quick { 1_000 } else { 2_000 }),
    };
    let load_budget = LoadBudget {
        rounds: arg_value("--load-rounds").unwrap_or(if quick { 5 } else { 12 }),
        seconds: arg_value("--seconds").unwrap_or(if quick { 1 } else { 2 }),
        connections: arg_value("--connections").unwrap_or(64),
    };
    let list_runs: usize = arg_value("--list-runs").unwrap_or(if quick { 3 } else { 5 });
    let out: String = arg_value("--out").unwrap_or_else(|| "target/bench/growth.json".into());
    assert!(
        big > SMALL && read <= big && read > 0 && index_n > 0,
        "sizes"
    );
    assert!(
        lat.requests > 0 && lat.rounds > 0 && load_budget.rounds > 0,
        "budgets"
    );
    std::fs::create_dir_all("target/bench").expect("target/bench");
    let started = Instant::now();

    let seed_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let seed0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let big_name = if big == 1_000_000 {
        "1M".to_string()
    } else if big.is_multiple_of(1_000) {
        format!("{}k", big / 1_000)
    } else {
        big.to_string()
    };
    let mut servers = Vec::new();
    let mut populated = Vec::new();
    for (i, (name, sessions, read)) in [
        (SMALL_NAME.to_string(), SMALL, SMALL),
        (AGAIN_NAME.to_string(), SMALL, SMALL),
        (big_name.clone(), big, read),
    ]
    .into_iter()
    .enumerate()
    {
        let (server, info) = populate(
            &seed_rt,
            &name,
            sessions,
            read,
            &placement,
            seed0 + i as u64,
        );
        servers.push(server);
        populated.push(info);
    }
    drop(seed_rt);

    let (latency_runs, misses) = latency(&servers, &lat);
    let load_runs = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(placement.workers)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(load(&servers, &load_budget, &placement));
    for (s, info) in servers.iter().zip(&mut populated) {
        info["keyspace_misses_during_latency"] = misses[servers
            .iter()
            .position(|x| x.name == s.name)
            .expect("server")]
        .into();
        info["dbsize_after"] = s.redis.cmd::<usize>(&["DBSIZE"]).into();
        assert_eq!(s.redis.cmd::<usize>(&["DBSIZE"]), s.sessions, "{}", s.name);
    }
    // The read servers are stopped (by their pids, on drop) before the index part.
    drop(servers);
    let index = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(placement.workers)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(index(index_n, list_runs, &placement));

    let output = serde_json::json!({
        "mode": if quick { "quick" } else { "full" },
        "small": SMALL,
        "big": big,
        "big_name": big_name,
        "read_sessions_big": read,
        "placement": placement.describe(),
        "servers": populated,
        "latency": {
            "rounds": lat.rounds, "requests": lat.requests, "warmup": lat.warmup,
            "slice": SLICE, "cap_ms": lat.cap.as_millis() as u64, "runs": latency_runs,
        },
        "load": {
            "rounds": load_budget.rounds, "seconds_per_run": load_budget.seconds,
            "connections": load_budget.connections, "runs": load_runs,
        },
        "index": index,
        "seconds": started.elapsed().as_secs_f64(),
    });
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir).expect("output folder");
    }
    std::fs::write(&out, serde_json::to_string_pretty(&output).expect("json")).expect(&out);
    eprintln!("wrote {out} ({:.0} s)", started.elapsed().as_secs_f64());
}
