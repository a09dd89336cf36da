//! Latency per request, every library interleaved in one process against one redis-server,
//! for `scripts/bench.sh`.
//!
//! A round runs every cell (scenario × size) for every library: a short warm-up of each, then
//! the libraries take turns, a few milliseconds each (`SLICE` requests, in an order rotated
//! each round), until each has N requests timed one by one (cut at a time cap, see
//! `Budget`); each library's median is its figure for the round. So the libraries compared in
//! a ratio ran interleaved under the same noise, and the report takes each ratio within a
//! round.
//!
//! Libraries: our layer, tower-sessions (default and `always_save`), the router without a
//! layer, and three floors for `read`:
//! - `floor`: the router without the layer, whose handler does our read's Redis work
//!   (`HGETALL key` + `PEXPIRE key 1800000`, read into a session's fields) through our own
//!   connections (`bench_floor_load`, feature `bench-floor`), none of the session logic; its
//!   requests carry our read's cookie, as the router without a layer gets it;
//! - `floor (redis-rs)`: the same route and pipeline through redis-rs's own multiplexed
//!   connection (opened once, cloned per request, the hash read as a `HashMap<String,
//!   String>`): `floor` against it is what our own connection buys;
//! - `raw floor`: the physical limit, those two commands as RESP bytes written on one blocking
//!   `std` TcpStream and read until both replies are complete (no client, no runtime, no
//!   router);
//!
//! and one for `create`, `raw create`: our create's own commands (`MULTI`, `HSET` of the
//! creation time, the public id and one value, `PEXPIRE`, `EXEC`) for a fresh key, on a bare
//! socket as the raw floor.
//!
//! Requests go through the real tower stack (`oneshot` on the Router, its routes built once
//! as `axum::serve` does; no sockets), on a current-thread runtime as a Criterion async
//! bench would.
//!
//! `--topology tls|cluster` runs the same on another deployment (see `trs_bench::topology`):
//! one redis-server over TLS, or a 3-master Redis Cluster, each library connecting as an
//! application would. The bare-socket floors (`raw floor`, `raw create`) run on plain TCP
//! only; `floor` and `floor (redis-rs)` go through each library's own TLS or cluster
//! connection. A topology run is sized to take about a minute: by default the small session
//! only, 9 rounds, 5000 requests cut at 250 ms per library and cell.
//!
//! A bin rather than a `harness = false` bench: it takes its own flags, runs from the
//! repository root like the other runners (cargo runs benches from the package folder), and
//! a plain `cargo bench` does not start this minute-long comparison.
//!
//! `cargo run --release -p trs-bench --bin bench-latency -- [--quick] [--rounds R]
//! [--requests N] [--warmup W] [--cell-ms T] [--sizes small,large] [--topology plain|tls|cluster]
//! [--out PATH]`; writes `target/bench/latency.json` (every round's figures).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use axum::Router;
use serde::Serialize;
use tokio::runtime::Runtime;
use trs_bench::apps::{
    floor_redis_rs_router, floor_router, no_layer_app, ours_app, tower_sessions_app,
};
use trs_bench::placement::Placement;
use trs_bench::support::{fields, next_value, send, SIZES};
use trs_bench::topology::{install_crypto_provider, Deployment, Topology};
use trs_bench::{arg_value, resp, rotated};

const OURS: &str = "tower-redis-session";
const TS: &str = "tower-sessions";
const TS_ALWAYS: &str = "tower-sessions always_save";
const NO_LAYER: &str = "no layer";
const FLOOR: &str = "floor";
const FLOOR_REDIS_RS: &str = "floor (redis-rs)";
const RAW_FLOOR: &str = "raw floor";
const RAW_CREATE: &str = "raw create";

const SESSION_LIBS: [&str; 3] = [OURS, TS, TS_ALWAYS];
const READ_LIBS: [&str; 6] = [OURS, TS, TS_ALWAYS, FLOOR, FLOOR_REDIS_RS, RAW_FLOOR];
const CREATE_LIBS: [&str; 4] = [OURS, TS, TS_ALWAYS, RAW_CREATE];
/// The bare-socket floors, run on plain TCP only.
const RAW_LIBS: [&str; 2] = [RAW_FLOOR, RAW_CREATE];

/// Our read's expiry, as the floors send it.
const TTL_MS: &str = "1800000";

/// One scenario at one size, and the libraries that run it.
struct Cell {
    scenario: &'static str,
    size: Option<&'static str>,
    libs: Vec<&'static str>,
}

/// The cells at `sizes`; without the bare-socket floors unless `raw`.
fn cells(sizes: &[&'static str], raw: bool) -> Vec<Cell> {
    let libs = |libs: &[&'static str]| -> Vec<&'static str> {
        libs.iter()
            .copied()
            .filter(|l| raw || !RAW_LIBS.contains(l))
            .collect()
    };
    let mut cells = vec![
        Cell {
            scenario: "no-layer",
            size: None,
            libs: vec![NO_LAYER],
        },
        Cell {
            scenario: "create",
            size: None,
            libs: libs(&CREATE_LIBS),
        },
    ];
    for &size in sizes {
        cells.push(Cell {
            scenario: "read",
            size: Some(size),
            libs: libs(&READ_LIBS),
        });
        for scenario in ["write", "regenerate", "counter", "untouched"] {
            cells.push(Cell {
                scenario,
                size: Some(size),
                libs: libs(&SESSION_LIBS),
            });
        }
    }
    cells
}

/// A bare blocking socket to Redis: no client, no runtime.
struct RawSocket {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawSocket {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("raw socket: connect");
        stream.set_nodelay(true).expect("raw socket: nodelay");
        Self {
            stream,
            buf: vec![0; 64 * 1024],
        }
    }

    /// Writes `request` and reads until its `replies` replies are complete; their bytes.
    fn round_trip(&mut self, request: &[u8], replies: usize) -> &[u8] {
        self.stream.write_all(request).expect("raw socket: write");
        let mut len = 0;
        loop {
            if len == self.buf.len() {
                self.buf.resize(len * 2, 0);
            }
            let n = self
                .stream
                .read(&mut self.buf[len..])
                .expect("raw socket: read");
            assert!(n > 0, "raw socket: redis closed the connection");
            len += n;
            match resp::replies_end(&self.buf[..len], replies).expect("raw socket: RESP") {
                Some(end) if end == len => break,
                Some(end) => panic!("raw socket: {} bytes past the replies", len - end),
                None => {}
            }
        }
        &self.buf[..len]
    }
}

/// The same pipeline as raw RESP on a bare socket.
struct RawFloor {
    socket: RawSocket,
    request: Vec<u8>,
}

impl RawFloor {
    fn connect(port: u16, key: &str) -> Self {
        let mut request = resp::command(&["HGETALL", key]);
        request.extend(resp::command(&["PEXPIRE", key, TTL_MS]));
        Self {
            socket: RawSocket::connect(port),
            request,
        }
    }

    /// One round trip; the bytes of both replies.
    fn load(&mut self) -> &[u8] {
        let replies = self.socket.round_trip(&self.request, 2);
        // PEXPIRE answered 1: the key was there, so HGETALL read the whole session.
        assert!(replies.ends_with(b":1\r\n"), "raw floor: the key is gone");
        replies
    }
}

/// Our create's own commands as raw RESP on a bare socket, for a fresh key each time: the
/// physical limit of `create` as the raw floor is of `read`.
struct RawCreate {
    socket: RawSocket,
    made: u64,
}

impl RawCreate {
    fn connect(port: u16) -> Self {
        Self {
            socket: RawSocket::connect(port),
            made: 0,
        }
    }

    /// What ours sends for a new session holding one value (its key, the creation time, the
    /// public id and the handler's JSON value, as long as ours'), for the next fresh key.
    fn next_request(&mut self) -> Vec<u8> {
        self.made += 1;
        let key = format!("session:rawcreate{:013}", self.made);
        let created = format!("{:013}", 1_700_000_000_000u64 + self.made);
        let value = format!("\"{}\"", next_value());
        let mut request = resp::command(&["MULTI"]);
        request.extend(resp::command(&[
            "HSET",
            &key,
            "",
            &created,
            "\0id",
            "019a0b1c-2d3e-7f40-8152-6374a5b6c7d8",
            "theme",
            &value,
        ]));
        request.extend(resp::command(&["PEXPIRE", &key, TTL_MS]));
        request.extend(resp::command(&["EXEC"]));
        request
    }

    /// One round trip of `request`, from [`next_request`](Self::next_request).
    fn create(&mut self, request: &[u8]) {
        let replies = self.socket.round_trip(request, 4);
        // EXEC answered both commands: 3 fields added, the expiry set.
        assert!(
            replies.ends_with(b"*2\r\n:3\r\n:1\r\n"),
            "raw create: {:?}",
            String::from_utf8_lossy(replies)
        );
    }
}

/// Everything the cells run on, with the cookies each library's scenarios carry.
struct Bench {
    apps: HashMap<&'static str, Router>,
    floors: HashMap<&'static str, Router>,
    redis_rs_floors: HashMap<&'static str, Router>,
    raw_floors: HashMap<&'static str, RawFloor>,
    /// On plain TCP only.
    raw_create: Option<RawCreate>,
    /// The session of `read`, `write`, `counter` and `untouched`, per (library, size).
    cookies: HashMap<(&'static str, &'static str), String>,
    /// A session of its own for `regenerate`, whose id changes at every request: the cookie
    /// is carried from one request to the next, across rounds.
    regenerated: HashMap<(&'static str, &'static str), String>,
}

impl Bench {
    fn setup(rt: &Runtime, redis: &Deployment, sizes: &[&'static str]) -> Self {
        let mut apps = HashMap::new();
        apps.insert(NO_LAYER, served(no_layer_app()));
        let store = rt.block_on(redis.ours_store());
        apps.insert(OURS, served(ours_app(&store)));
        apps.insert(
            TS,
            served(tower_sessions_app(
                rt.block_on(redis.tower_sessions_layer(false)),
            )),
        );
        apps.insert(
            TS_ALWAYS,
            served(tower_sessions_app(
                rt.block_on(redis.tower_sessions_layer(true)),
            )),
        );
        let mut bench = Self {
            apps,
            floors: HashMap::new(),
            redis_rs_floors: HashMap::new(),
            raw_floors: HashMap::new(),
            raw_create: redis.plain().map(|r| RawCreate::connect(r.port)),
            cookies: HashMap::new(),
            regenerated: HashMap::new(),
        };
        let redis_rs = rt.block_on(redis.redis_rs());
        for &size in sizes {
            // The floors read our `read` session: the one key this seed adds (on a cluster,
            // on whichever master its slot is; every client routes there itself).
            let before = redis.keys();
            let cookie = bench.seed(rt, OURS, size);
            let key = redis
                .keys()
                .into_iter()
                .find(|k| !before.contains(k))
                .expect("the seeded session's key");
            let hlen = redis.hlen(&key);
            // Its fields, plus the creation time and the public id.
            assert_eq!(hlen, fields(size).len() + 2, "{key} is not the session");
            bench.cookies.insert((OURS, size), cookie);
            for lib in [TS, TS_ALWAYS] {
                let cookie = bench.seed(rt, lib, size);
                bench.cookies.insert((lib, size), cookie);
            }

            for lib in SESSION_LIBS {
                let cookie = bench.seed(rt, lib, size);
                bench.regenerated.insert((lib, size), cookie);
            }

            let floor = served(floor_router(&store, &key));
            let read = rt.block_on(send_body(&floor, None));
            assert_eq!(
                read,
                fields(size).len().to_string(),
                "the floor reads the session"
            );
            bench.floors.insert(size, floor);
            let floor = served(floor_redis_rs_router(redis_rs.clone(), &key));
            let read = rt.block_on(send_body(&floor, None));
            assert_eq!(
                read,
                fields(size).len().to_string(),
                "the redis-rs floor reads the session"
            );
            bench.redis_rs_floors.insert(size, floor);
            if let Some(plain) = redis.plain() {
                let mut raw = RawFloor::connect(plain.port, &key);
                let header = format!("*{}\r\n", 2 * hlen);
                assert!(raw.load().starts_with(header.as_bytes()), "raw floor reply");
                bench.raw_floors.insert(size, raw);
            }
        }
        bench.check_sessions(rt, sizes);
        bench
    }

    /// Every library still reads its session: a read that found none would be cheaper.
    /// (`/read` reads `user`, which only the small session holds; the large one's read is
    /// checked by the floors, which count its fields.)
    fn check_sessions(&self, rt: &Runtime, sizes: &[&'static str]) {
        for &size in sizes {
            let Some((_, user)) = fields(size).into_iter().find(|(k, _)| k == "user") else {
                continue;
            };
            for lib in SESSION_LIBS {
                let cookie = &self.cookies[&(lib, size)];
                let read = rt.block_on(send_body(&self.apps[lib], Some(cookie)));
                assert_eq!(read, user, "{lib} reads its {size} session");
            }
        }
    }

    fn seed(&self, rt: &Runtime, lib: &str, size: &str) -> String {
        rt.block_on(send(&self.apps[lib], &format!("/seed/{size}"), None))
            .expect("seeded cookie")
    }

    /// One request of `lib` in `scenario`.
    async fn request(&mut self, lib: &'static str, scenario: &str, size: &'static str) {
        match (lib, scenario) {
            // Our read's cookie, so that building, routing and dropping the request cost them
            // what they cost ours (its layer alone reads the cookie).
            (FLOOR | FLOOR_REDIS_RS | NO_LAYER, _) => {
                let app = match lib {
                    FLOOR => &self.floors[size],
                    FLOOR_REDIS_RS => &self.redis_rs_floors[size],
                    _ => &self.apps[lib],
                };
                send(app, "/read", Some(&self.cookies[&(OURS, size)])).await;
            }
            (_, "create") => {
                send(&self.apps[lib], "/write", None).await;
            }
            (_, "regenerate") => {
                let slot = self
                    .regenerated
                    .get_mut(&(lib, size))
                    .expect("regenerate's cookie");
                if let Some(next) = send(&self.apps[lib], "/regenerate", Some(slot)).await {
                    *slot = next;
                }
            }
            _ => {
                let cookie = &self.cookies[&(lib, size)];
                send(&self.apps[lib], &format!("/{scenario}"), Some(cookie)).await;
            }
        }
    }

    /// One request of `lib` (the raw floor on its socket, the others through the runtime),
    /// `n` times; their durations.
    fn requests(
        &mut self,
        rt: &Runtime,
        lib: &'static str,
        cell: &Cell,
        n: usize,
        times: &mut Vec<Duration>,
    ) {
        let size = cell.size.unwrap_or("small");
        if lib == RAW_CREATE {
            let raw_create = self.raw_create.as_mut().expect("raw create (plain TCP)");
            for _ in 0..n {
                // Built before the clock starts, as the raw floor's request is built once:
                // the limit is the round trip alone.
                let request = raw_create.next_request();
                let start = Instant::now();
                raw_create.create(&request);
                times.push(start.elapsed());
            }
        } else if lib == RAW_FLOOR {
            let raw = self.raw_floors.get_mut(size).expect("raw floor");
            for _ in 0..n {
                let start = Instant::now();
                raw.load();
                times.push(start.elapsed());
            }
        } else {
            rt.block_on(async {
                for _ in 0..n {
                    let start = Instant::now();
                    self.request(lib, cell.scenario, size).await;
                    times.push(start.elapsed());
                }
            });
        }
    }

    /// One cell: each library's warm-up, then the libraries in turn, [`SLICE`] requests each,
    /// every request timed on its own, until each has its budget; their durations, in `libs`'
    /// order. Taking turns this often, the libraries see the same noise of the machine.
    fn cell(
        &mut self,
        rt: &Runtime,
        libs: &[&'static str],
        cell: &Cell,
        budget: &Budget,
    ) -> Vec<Vec<Duration>> {
        let mut scratch = Vec::new();
        for &lib in libs {
            let warm = Instant::now();
            for _ in 0..budget.warmup {
                if warm.elapsed() >= budget.cap / 5 {
                    break;
                }
                self.requests(rt, lib, cell, 1, &mut scratch);
            }
        }
        let mut times: Vec<Vec<Duration>> = libs
            .iter()
            .map(|_| Vec::with_capacity(budget.requests))
            .collect();
        // The whole cell gets each library's time cap.
        let cap = budget.cap * u32::try_from(libs.len()).unwrap_or(1);
        let start = Instant::now();
        let running =
            |n: usize| n < budget.requests && (n < budget.min_requests || start.elapsed() < cap);
        while times.iter().any(|t| running(t.len())) {
            for (&lib, times) in libs.iter().zip(&mut times) {
                if running(times.len()) {
                    let n = SLICE.min(budget.requests - times.len());
                    self.requests(rt, lib, cell, n, times);
                }
            }
        }
        times
    }
}

/// Requests a library runs before the next takes its turn: a few milliseconds.
const SLICE: usize = 20;

/// How long a cell runs, per library: `warmup` requests (at most a fifth of `cap`), then
/// `requests`, cut at `cap` (times the cell's libraries, as they take turns) once
/// `min_requests` are in, so that a slow moment of the machine cannot blow the time budget
/// while a quiet one still gets every request.
#[derive(Serialize)]
struct Budget {
    warmup: usize,
    requests: usize,
    min_requests: usize,
    /// Requests a library runs before the next one takes its turn.
    slice: usize,
    #[serde(serialize_with = "millis")]
    cap: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

/// `router` as `axum::serve` runs it: `with_state(())` turns every handler, with the layers
/// around it, into a route once. `oneshot` on a router without it rebuilds (and boxes) them
/// on every request, a cost that no served app pays.
fn served(router: Router) -> Router {
    router.with_state(())
}

async fn send_body(app: &Router, cookie: Option<&str>) -> String {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut req = axum::http::Request::get("/read");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let res = app
        .clone()
        .oneshot(req.body(axum::body::Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let body = res.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// On a cluster each library's session lives on the master its slot names, and a round
/// trip to a process that the scheduler put on this one's CPU is much shorter than one to
/// a process waking on another (28 against 75 µs for the same read, run to run). So the
/// masters run where bench-load runs wrk and Redis, and this process where it runs the
/// server: each library's round trips cross the same way. Without `taskset` or a second
/// CPU, nothing is pinned (and the report's cluster ratios are placement's as much as the
/// libraries').
fn pin_apart(redis: &Deployment) {
    let placement = Placement::detect();
    if placement.cpus.is_some() {
        for pid in redis.pids() {
            placement.pin_load(pid);
        }
        placement.pin_self();
    }
    eprintln!("cluster placement: {}", placement.describe());
}

/// Quantile `q` of sorted µs values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[derive(Serialize)]
struct Run {
    round: usize,
    scenario: String,
    size: Option<String>,
    library: String,
    /// Position of the library within its cell this round (0 = first).
    position: usize,
    /// Requests timed (the budget's `requests` unless the cell hit its time cap).
    requests: usize,
    median_us: f64,
    p10_us: f64,
    p90_us: f64,
}

#[derive(Serialize)]
struct Output {
    /// `plain`, `tls` or `cluster`.
    topology: &'static str,
    deployment: &'static str,
    rounds: usize,
    budget: Budget,
    seconds: f64,
    runs: Vec<Run>,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let topology = Topology::from_args();
    // Quick: about 40 s on a quiet machine, at most 41 library cells × 0.2 s × 7 rounds = 57 s.
    // TLS or Cluster (full mode only): the small session, at most 21 library cells × 0.3 s
    // (cap and warm-up) × 9 rounds = 57 s.
    let (rounds, requests, cap_ms) = match (topology, quick) {
        (Topology::Plain, true) => (7, 3000, 200),
        (Topology::Plain, false) => (15, 10000, 600),
        (_, true) => (5, 3000, 200),
        (_, false) => (9, 5000, 250),
    };
    let sizes: Vec<&'static str> = match arg_value::<String>("--sizes") {
        Some(list) => list
            .split(',')
            .map(|s| {
                *SIZES
                    .iter()
                    .find(|k| **k == s)
                    .unwrap_or_else(|| panic!("--sizes: small or large, not {s:?}"))
            })
            .collect(),
        None if topology == Topology::Plain => SIZES.to_vec(),
        None => vec!["small"],
    };
    let rounds = arg_value("--rounds").unwrap_or(rounds);
    let requests: usize = arg_value("--requests").unwrap_or(requests);
    let budget = Budget {
        warmup: arg_value("--warmup").unwrap_or(requests / 10),
        requests,
        min_requests: requests.min(100),
        slice: SLICE,
        cap: Duration::from_millis(arg_value("--cell-ms").unwrap_or(cap_ms)),
    };
    let out: String = arg_value("--out").unwrap_or_else(|| match topology {
        Topology::Plain => "target/bench/latency.json".into(),
        other => format!("target/bench/latency-{}.json", other.name()),
    });
    assert!(requests > 0, "--requests must be positive");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    install_crypto_provider();
    let redis = Deployment::start(topology);
    eprintln!("topology: {}", topology.describe());
    if topology == Topology::Cluster {
        pin_apart(&redis);
    }
    let mut bench = Bench::setup(&rt, &redis, &sizes);
    let cells = cells(&sizes, redis.plain().is_some());
    let started = Instant::now();
    let mut runs = Vec::new();
    for round in 0..rounds {
        let round_start = Instant::now();
        for cell in &cells {
            let mut line = format!(
                "round {}/{rounds} {:10} {:5}:",
                round + 1,
                cell.scenario,
                cell.size.unwrap_or("-")
            );
            let libs = rotated(&cell.libs, round);
            let times = bench.cell(&rt, &libs, cell, &budget);
            for (position, (lib, times)) in libs.into_iter().zip(times).enumerate() {
                let mut us: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e6).collect();
                us.sort_by(f64::total_cmp);
                let median_us = quantile(&us, 0.5);
                line.push_str(&format!("  {lib} {median_us:.1}"));
                runs.push(Run {
                    round,
                    scenario: cell.scenario.into(),
                    size: cell.size.map(Into::into),
                    library: lib.into(),
                    position,
                    requests: us.len(),
                    median_us,
                    p10_us: quantile(&us, 0.1),
                    p90_us: quantile(&us, 0.9),
                });
            }
            eprintln!("{line}");
        }
        eprintln!(
            "round {}/{rounds} took {:.1} s",
            round + 1,
            round_start.elapsed().as_secs_f64()
        );
        bench.check_sessions(&rt, &sizes);
    }
    let output = Output {
        topology: topology.name(),
        deployment: topology.describe(),
        rounds,
        budget,
        seconds: started.elapsed().as_secs_f64(),
        runs,
    };
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir).expect("output folder");
    }
    let json = serde_json::to_string_pretty(&output).expect("json");
    std::fs::write(&out, json).expect("latency.json");
    eprintln!("wrote {out} ({:.0} s)", output.seconds);
}
