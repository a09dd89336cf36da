//! HTTP load and Redis memory per session, for `scripts/bench.sh`.
//!
//! Serves the same axum app with no session layer (twice, on two ports: the second copy shows
//! what the method reads as a difference where there is none), behind a layer that only adds
//! an extension, with ours (`GET /read` reads one value from the session; `GET /untouched`
//! never touches it), through our client without a layer (the floor), the same through
//! redis-rs's multiplexed connection (the redis-rs floor: against the floor, what our own
//! connection buys), and with tower-sessions (default mode and `always_save`), all at once,
//! each on its own loopback port. Then rounds: in each, at 1, 16, 64 and 256 connections, wrk
//! drives every app in turn, in an order rotated each round, so that the apps a ratio compares
//! ran seconds apart. Every request carries one of 256 session cookies, round-robin. On two or
//! more CPUs the server runs apart from wrk and redis-server (see [`Placement`]). Then
//! measures `MEMORY USAGE` of the same session content stored by each library. Writes
//! `target/bench/load.json` with every round's figures. Each run's latency percentiles are
//! wrk's: p50 and p99 from `--latency`, p99.9 from the script's `done` hook.
//!
//! `--topology tls|cluster` serves the read apps only (no layer twice, the floors, ours and
//! tower-sessions in both modes) on that deployment (see `trs_bench::topology`), each library
//! connecting as an application would, at 16 and 256 connections in 10 rounds by default
//! (about 2.7 minutes), with no memory figures, and writes
//! `target/bench/load-<topology>.json`.
//!
//! `cargo run --release -p trs-bench --bin bench-load -- [--quick] [--rounds R] [--seconds S]
//! [--connections 16,64] [--app NAME]... [--topology plain|tls|cluster] [--out PATH]`
//! (`--app`, repeated: only the apps named, for a closer look at a few; the report needs them
//! all).

use std::fmt::Write as _;
use std::time::Duration;

use axum::Router;
use serde::Serialize;
use trs_bench::apps::{
    extension_only_app, floor_redis_rs_router, floor_router, no_layer_app, ours_app, ours_store,
    tower_sessions_app, tower_sessions_layer,
};
use trs_bench::placement::Placement;
use trs_bench::redis_server::RedisServer;
use trs_bench::support::{send, SIZES};
use trs_bench::topology::{install_crypto_provider, Deployment, Topology};
use trs_bench::wrk::wrk;
use trs_bench::{arg_value, arg_values, rotated};

const CONNECTIONS: [u32; 4] = [1, 16, 64, 256];
const SESSIONS: usize = 256;

/// The apps a TLS or Cluster run serves: the HTTP read of each library and its floors, and
/// the layer-less app twice (the A/A control of that run).
const TOPOLOGY_APPS: [&str; 7] = [
    "no layer",
    "no layer, again",
    "floor",
    "floor (redis-rs)",
    "tower-redis-session",
    "tower-sessions",
    "tower-sessions always_save",
];

#[derive(Serialize)]
struct LoadRun {
    round: usize,
    app: String,
    connections: u32,
    requests_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    /// From the wrk script's `done` hook (`--latency` prints up to p99 only).
    p999_us: f64,
    errors: u64,
    /// CPU time per request of the server process and of redis-server (every master of a
    /// cluster), in µs.
    server_cpu_us: f64,
    redis_cpu_us: f64,
}

/// CPU time of every thread of a process so far, in seconds: the sum of what the scheduler
/// has run each live thread (`/proc/PID/task/*/schedstat`, nanoseconds), so that a one-second
/// run is measured to the microsecond rather than to the 10 ms tick of `/proc/PID/stat`,
/// which is the fallback on a kernel without schedstat. (A thread that ends during a run takes
/// its time with it: here only idle threads of tokio's blocking pool can, whose work was
/// starting wrk and reading its report.)
fn cpu_seconds(pid: &str) -> f64 {
    if !std::path::Path::new("/proc/self/schedstat").exists() {
        return stat_ticks(pid) / 100.0;
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let nanos: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

/// User + system CPU ticks (1/100 s) of a process so far, from `/proc/PID/stat`.
fn stat_ticks(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum()
}

#[derive(Serialize)]
struct MemoryRow {
    library: String,
    size: String,
    bytes: u64,
}

#[derive(Serialize)]
struct Report {
    /// `plain`, `tls` or `cluster`.
    topology: &'static str,
    deployment: &'static str,
    rounds: usize,
    seconds_per_run: u64,
    /// Where the server, wrk and redis-server ran (see [`Placement`]).
    placement: String,
    load: Vec<LoadRun>,
    memory: Vec<MemoryRow>,
}

/// Serves `app` on a free loopback port.
async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Seeds `n` small sessions through `app`; their cookies.
async fn seed(app: &Router, n: usize) -> Vec<String> {
    let mut cookies = Vec::with_capacity(n);
    for _ in 0..n {
        cookies.push(send(app, "/seed/small", None).await.expect("cookie"));
    }
    cookies
}

/// A wrk script that sends the cookies round-robin. The requests are formatted once, in
/// `init`: formatting one per request would make wrk, which may share the cores with the
/// server, spend more per request than a layer does, and flatten every ratio. Its `done` hook
/// prints the percentiles `--latency` does not (p99.9), in µs, on a line of their own.
fn wrk_script(cookies: &[String]) -> String {
    let mut lua = String::from("local cookies = {\n");
    for c in cookies {
        let _ = writeln!(lua, "  {c:?},");
    }
    lua.push_str(
        "}\nlocal requests = {}\nlocal i = 0\n\
         init = function(args)\n  for n, c in ipairs(cookies) do\n    \
         requests[n] = wrk.format(nil, nil, { Cookie = c })\n  end\nend\n\
         request = function()\n  i = i % #requests + 1\n  return requests[i]\nend\n\
         done = function(summary, latency, requests)\n  \
         io.write(string.format(\"trs-latency p99.9 %d\\n\", latency:percentile(99.9)))\nend\n",
    );
    lua
}

/// One app under load: its name, address, wrk script and route.
struct Target {
    name: &'static str,
    addr: std::net::SocketAddr,
    script: String,
    path: &'static str,
}

/// One wrk run against `target`, with the CPU time the server (this process) and
/// redis-server spent meanwhile.
async fn drive(
    target: &Target,
    connections: u32,
    (round, seconds, redis_pids): (usize, u64, &[String]),
    placement: &Placement,
) -> LoadRun {
    let (addr, script, path) = (target.addr, target.script.clone(), target.path);
    let redis_cpu = || redis_pids.iter().map(|p| cpu_seconds(p)).sum::<f64>();
    let cpu_before = (cpu_seconds("self"), redis_cpu());
    let placement = placement.clone();
    let (rps, p50, p99, p999, errors) = tokio::task::spawn_blocking(move || {
        wrk(&placement, addr, &script, connections, seconds, path)
    })
    .await
    .expect("wrk task");
    let requests = rps * seconds as f64;
    let server_cpu_us = (cpu_seconds("self") - cpu_before.0) / requests * 1e6;
    let redis_cpu_us = (redis_cpu() - cpu_before.1) / requests * 1e6;
    eprintln!(
        "round {} {:38} c={connections:3}: {rps:9.0} req/s  p50 {p50:8.0} µs  p99 {p99:8.0} µs  \
         p99.9 {p999:8.0} µs  errors {errors}  cpu/req: server {server_cpu_us:.1} µs, \
         redis {redis_cpu_us:.1} µs",
        round + 1,
        target.name
    );
    // Let sockets and CPU settle before the next app.
    tokio::time::sleep(Duration::from_millis(100)).await;
    LoadRun {
        round,
        app: target.name.to_string(),
        connections,
        requests_per_sec: rps,
        p50_us: p50,
        p99_us: p99,
        p999_us: p999,
        errors,
        server_cpu_us,
        redis_cpu_us,
    }
}

/// `MEMORY USAGE` of the only key in a fresh Redis (started with `config`) after seeding one
/// session of `size`.
async fn memory_of(library: &str, size: &str, config: &[&str]) -> u64 {
    let redis = RedisServer::start_with(config);
    let app = match library {
        "tower-redis-session" => ours_app(&ours_store(&redis.url()).await),
        _ => tower_sessions_app(tower_sessions_layer(&redis.url(), false).await),
    };
    send(&app, &format!("/seed/{size}"), None)
        .await
        .expect("cookie");
    let keys = redis.keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    redis.cmd(&["MEMORY", "USAGE", &keys[0], "SAMPLES", "0"])
}

fn main() {
    // Pinned before the runtime starts, so that its threads inherit the CPUs.
    let placement = Placement::detect();
    placement.pin_self();
    eprintln!("placement: {}", placement.describe());
    install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(placement.workers)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(placement));
}

async fn run(placement: Placement) {
    let quick = std::env::args().any(|a| a == "--quick");
    let topology = Topology::from_args();
    // Many short runs rather than a few long ones: a run's ratio to its neighbour scatters
    // as much over 1 s as over 4 s (sd of its log 0.06–0.16 either way) and no less for apps
    // that ran back to back, so the spread is per run, not per second, and only more rounds
    // narrow the median. Full: 9 apps × 4 connection counts × 20 rounds; quick: 9 × 3 × 7.
    // TLS or Cluster (full mode only): 7 apps × 2 connection counts × 10 rounds, about 2.7
    // minutes.
    let (rounds, seconds) = match (topology, quick) {
        (Topology::Plain, true) => (7, 1),
        (Topology::Plain, false) => (20, 1),
        (_, true) => (3, 1),
        (_, false) => (10, 1),
    };
    // The targets are at 16, 64 and 256 connections; quick mode skips the single one; TLS
    // and Cluster run the ends, 16 and 256 (where tail latency is compared).
    let connections: &[u32] = match (topology, quick) {
        (Topology::Plain, true) => &CONNECTIONS[1..],
        (Topology::Plain, false) => &CONNECTIONS,
        _ => &[16, 256],
    };
    let rounds = arg_value("--rounds").unwrap_or(rounds);
    let seconds = arg_value("--seconds").unwrap_or(seconds);
    let connections: Vec<u32> = match arg_value::<String>("--connections") {
        Some(list) => list
            .split(',')
            .map(|c| c.parse().expect("--connections: numbers"))
            .collect(),
        None => connections.to_vec(),
    };
    // `--app NAME`, repeated: only these apps (names hold commas).
    let mut apps = arg_values("--app");
    if apps.is_empty() && topology != Topology::Plain {
        apps = TOPOLOGY_APPS.iter().map(|a| a.to_string()).collect();
    }
    let out: String = arg_value("--out").unwrap_or_else(|| match topology {
        Topology::Plain => "target/bench/load.json".into(),
        other => format!("target/bench/load-{}.json", other.name()),
    });
    let redis = tokio::task::spawn_blocking(move || Deployment::start(topology))
        .await
        .expect("deployment");
    eprintln!("topology: {}", topology.describe());
    let dir = std::path::Path::new("target/bench");
    std::fs::create_dir_all(dir).expect("target/bench");

    let redis_pids: Vec<String> = redis.pids().iter().map(u32::to_string).collect();
    assert!(!redis_pids.is_empty(), "redis pids");
    for pid in &redis_pids {
        placement.pin_load(pid);
    }
    let store = redis.ours_store().await;
    let ours = ours_app(&store);
    // The floor reads one of our sessions: the key its seed adds.
    let before = redis.keys();
    seed(&ours, 1).await;
    let key = redis
        .keys()
        .into_iter()
        .find(|k| !before.contains(k))
        .expect("the floor's session");
    // The layer-less app and our untouched route get our cookies, so that wrk and hyper do the
    // same work as for our read.
    let our_cookies = seed(&ours, SESSIONS).await;
    let ts = tower_sessions_app(redis.tower_sessions_layer(false).await);
    let ts_always = tower_sessions_app(redis.tower_sessions_layer(true).await);
    let ts_cookies = seed(&ts, SESSIONS).await;
    let ts_always_cookies = seed(&ts_always, SESSIONS).await;
    let redis_rs = redis.redis_rs().await;
    let servers: [(&str, Router, Vec<String>, &str); 8] = [
        ("no layer", no_layer_app(), our_cookies.clone(), "/read"),
        // The least a layer costs a route that never touches the session.
        (
            "extension only",
            extension_only_app(),
            our_cookies.clone(),
            "/untouched",
        ),
        // A read's Redis work through our client and nothing else: what one round trip
        // costs the server.
        (
            "floor",
            floor_router(&store, &key),
            our_cookies.clone(),
            "/read",
        ),
        // The same through redis-rs's one multiplexed connection, as applications use it.
        (
            "floor (redis-rs)",
            floor_redis_rs_router(redis_rs, &key),
            our_cookies.clone(),
            "/read",
        ),
        // The same app as "no layer" on a port of its own: what the method reads as a
        // difference where there is none (its resolution on this machine).
        (
            "no layer, again",
            no_layer_app(),
            our_cookies.clone(),
            "/read",
        ),
        ("tower-redis-session", ours, our_cookies, "/read"),
        ("tower-sessions", ts, ts_cookies, "/read"),
        (
            "tower-sessions always_save",
            ts_always,
            ts_always_cookies,
            "/read",
        ),
    ];
    let mut targets = Vec::new();
    let prefix = match topology {
        Topology::Plain => String::new(),
        other => format!("{}-", other.name()),
    };
    for (name, app, cookies, path) in servers {
        let script = dir.join(format!("{prefix}{}.lua", name.replace(' ', "-")));
        std::fs::write(&script, wrk_script(&cookies)).expect("wrk script");
        let script = script.to_string_lossy().into_owned();
        let addr = serve(app).await;
        if name == "tower-redis-session" {
            // Our layer on a route that never touches the session, with the same cookies.
            targets.push(Target {
                name: "tower-redis-session, untouched route",
                addr,
                script: script.clone(),
                path: "/untouched",
            });
        }
        targets.push(Target {
            name,
            addr,
            script,
            path,
        });
    }
    if !apps.is_empty() {
        targets.retain(|t| apps.iter().any(|a| *a == t.name));
        assert!(!targets.is_empty(), "--app: none of {apps:?} is an app");
    }
    let mut load = Vec::new();
    for round in 0..rounds {
        let order = rotated(&(0..targets.len()).collect::<Vec<_>>(), round);
        for &connections in &connections {
            for &i in &order {
                let run = (round, seconds, redis_pids.as_slice());
                load.push(drive(&targets[i], connections, run, &placement).await);
            }
        }
    }

    // Memory per session does not depend on the deployment: measured with plain TCP only.
    let mut memory = Vec::new();
    // Redis keeps a hash compact (listpack) only while every value is at most
    // hash-max-listpack-value bytes (64 by default); the last row shows the effect of raising it.
    let raised = ["--hash-max-listpack-value", "256"];
    let cases: [(&str, &str, &[&str]); 3] = [
        ("tower-redis-session", "tower-redis-session", &[]),
        ("tower-sessions", "tower-sessions", &[]),
        (
            "tower-redis-session",
            "tower-redis-session (hash-max-listpack-value 256)",
            &raised,
        ),
    ];
    let cases = if topology == Topology::Plain {
        &cases[..]
    } else {
        &[]
    };
    for &(library, label, config) in cases {
        for size in SIZES {
            let bytes = memory_of(library, size, config).await;
            let library = label;
            eprintln!("{library:20} {size:5}: {bytes} bytes");
            memory.push(MemoryRow {
                library: library.into(),
                size: size.into(),
                bytes,
            });
        }
    }

    let report = Report {
        topology: topology.name(),
        deployment: topology.describe(),
        rounds,
        seconds_per_run: seconds,
        placement: placement.describe(),
        load,
        memory,
    };
    let json = serde_json::to_string_pretty(&report).expect("json");
    std::fs::write(&out, json).expect("load.json");
    eprintln!("wrote {out}");
}
