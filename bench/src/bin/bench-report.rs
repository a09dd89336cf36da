//! Writes BENCHMARKS.md, BENCHMARKS.json and docs/latency.svg from one run of
//! `scripts/bench.sh`: `target/bench/latency.json` (bench-latency), `target/bench/load.json`
//! (bench-load) and Criterion's estimates of the layer's CPU cost under `$CRITERION_HOME`
//! (default `target/criterion`). Every figure comes from those files; nothing is typed in.
//!
//! Figures are medians over rounds with their min–max spread. A ratio is taken within each
//! round (both sides ran seconds apart), then its median over rounds; a target is met only if
//! that median meets it, and the table shows in how many rounds it did, so a marginal result
//! reads as one.
//!
//! `cargo run --release -p trs-bench --bin bench-report -- --mode quick|full --command "…"`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use serde::{Deserialize, Serialize};
use trs_bench::arg_value;

const OURS: &str = "tower-redis-session";
const TS: &str = "tower-sessions";
const TS_ALWAYS: &str = "tower-sessions always_save";
const UNTOUCHED: &str = "tower-redis-session, untouched route";
const NO_LAYER: &str = "no layer";
const FLOOR: &str = "floor";
const FLOOR_REDIS_RS: &str = "floor (redis-rs)";
const EXTENSION: &str = "extension only";
const NO_LAYER_AGAIN: &str = "no layer, again";
const RAW_FLOOR: &str = "raw floor";
const RAW_CREATE: &str = "raw create";

/// Latency cells in report order: (scenario, size).
const CELLS: [(&str, Option<&str>); 11] = [
    ("read", Some("small")),
    ("read", Some("large")),
    ("write", Some("small")),
    ("write", Some("large")),
    ("create", None),
    ("regenerate", Some("small")),
    ("regenerate", Some("large")),
    ("counter", Some("small")),
    ("counter", Some("large")),
    ("untouched", Some("small")),
    ("untouched", Some("large")),
];

/// Connection counts the HTTP targets are stated at.
const TARGET_CONNECTIONS: [u32; 3] = [16, 64, 256];

#[derive(Deserialize)]
struct LatencyFile {
    rounds: usize,
    budget: serde_json::Value,
    runs: Vec<LatencyRun>,
}

#[derive(Deserialize)]
struct LatencyRun {
    round: usize,
    scenario: String,
    size: Option<String>,
    library: String,
    median_us: f64,
}

#[derive(Deserialize)]
struct LoadFile {
    rounds: usize,
    seconds_per_run: u64,
    /// Where the server, wrk and redis-server ran.
    #[serde(default)]
    placement: String,
    load: Vec<LoadRun>,
    memory: Vec<MemoryRow>,
}

#[derive(Deserialize, Clone)]
struct LoadRun {
    round: usize,
    app: String,
    connections: u32,
    requests_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    server_cpu_us: f64,
    redis_cpu_us: f64,
}

#[derive(Deserialize, Serialize)]
struct MemoryRow {
    library: String,
    size: String,
    bytes: u64,
}

/// A figure over rounds: median, min and max, and every round's value (in round order).
#[derive(Serialize, Clone)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    rounds: Vec<f64>,
}

impl Spread {
    fn of(rounds: Vec<f64>) -> Option<Self> {
        if rounds.is_empty() {
            return None;
        }
        let mut sorted = rounds.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            rounds,
        })
    }

    /// `a ÷ b` (or another combination) within each round both have.
    fn per_round(
        a: &BTreeMap<usize, f64>,
        b: &BTreeMap<usize, f64>,
        f: fn(f64, f64) -> f64,
    ) -> Option<Self> {
        Self::of(
            a.iter()
                .filter_map(|(round, x)| Some(f(*x, *b.get(round)?)))
                .collect(),
        )
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    a / b
}

fn difference(a: f64, b: f64) -> f64 {
    a - b
}

/// `median (min–max)` with `digits` decimals.
fn fmt_spread(s: Option<&Spread>, digits: usize, unit: &str) -> String {
    s.map_or("–".into(), |s| {
        format!(
            "{:.digits$}{unit} ({:.digits$}–{:.digits$})",
            s.median, s.min, s.max
        )
    })
}

/// Per-round values of one series, by round.
type Series = BTreeMap<usize, f64>;

/// Per-round cell medians: (scenario, size, library) → round → µs.
fn latency_series(file: &LatencyFile) -> BTreeMap<(String, Option<String>, String), Series> {
    let mut out: BTreeMap<_, Series> = BTreeMap::new();
    for r in &file.runs {
        out.entry((r.scenario.clone(), r.size.clone(), r.library.clone()))
            .or_default()
            .insert(r.round, r.median_us);
    }
    out
}

#[derive(Serialize)]
struct LatencyRow {
    scenario: String,
    size: Option<String>,
    /// µs per library.
    us: BTreeMap<String, Spread>,
    ours_to_tower_sessions: Option<Spread>,
    ours_to_always_save: Option<Spread>,
    always_save_to_tower_sessions: Option<Spread>,
}

#[derive(Serialize)]
struct FloorRow {
    size: String,
    us: BTreeMap<String, Spread>,
    read_to_floor: Option<Spread>,
    /// The floor (our connection) over the redis-rs floor (the same through redis-rs's
    /// multiplexed connection): what our own connection buys, below 1×.
    floor_to_redis_rs_floor: Option<Spread>,
    floor_to_raw_floor: Option<Spread>,
    ours_to_raw_floor: Option<Spread>,
    /// The physical limit of a one-round-trip request against tower-sessions' whole read:
    /// below 0.9, "ours ≤ 0.9 × tower-sessions" is out of reach for any client.
    raw_floor_to_tower_sessions_read: Option<Spread>,
}

/// `create` against its own physical limit, the raw create (our create's commands on a bare
/// socket, in the same rounds of the create cell).
#[derive(Serialize, Default)]
struct CreateLimit {
    us: BTreeMap<String, Spread>,
    raw_create_to_tower_sessions: Option<Spread>,
    ours_to_raw_create: Option<Spread>,
}

#[derive(Serialize)]
struct LoadRow {
    app: String,
    connections: u32,
    requests_per_sec: Option<Spread>,
    p50_us: Option<Spread>,
    p99_us: Option<Spread>,
    errors: u64,
    server_cpu_us: Option<Spread>,
    redis_cpu_us: Option<Spread>,
}

#[derive(Serialize)]
struct LoadRatios {
    connections: u32,
    ours_to_tower_sessions: Option<Spread>,
    ours_to_always_save: Option<Spread>,
    untouched_to_no_layer: Option<Spread>,
    /// Server CPU µs per request, ours (read) less no layer.
    server_cpu_over_no_layer_us: Option<Spread>,
    /// The same for the floor (one round trip through our client, no session logic), and
    /// for tower-sessions: what a one-round-trip read costs the server at all.
    floor_cpu_over_no_layer_us: Option<Spread>,
    tower_sessions_cpu_over_no_layer_us: Option<Spread>,
    /// The floor's req/s over the redis-rs floor's (the same through redis-rs's multiplexed
    /// connection), and the latter's server CPU over no layer: what our own connection buys
    /// under load.
    floor_to_redis_rs_floor: Option<Spread>,
    redis_rs_floor_cpu_over_no_layer_us: Option<Spread>,
    /// The floor's req/s over tower-sessions': the most any layer on our client could reach.
    floor_to_tower_sessions: Option<Spread>,
    /// The same over tower-sessions always_save.
    floor_to_always_save: Option<Spread>,
    /// Req/s behind a layer that only adds an extension, over no layer: the most any session
    /// layer could keep on a route that never touches the session.
    extension_to_no_layer: Option<Spread>,
    /// The same app as no layer on a port of its own, over no layer: what the method reads
    /// as a difference where there is none.
    again_to_no_layer: Option<Spread>,
}

#[derive(Serialize)]
struct Target {
    target: String,
    /// The figure the target is about, over rounds (a ratio, or µs for CPU).
    measured: Option<Spread>,
    limit: f64,
    at_most: bool,
    unit: String,
    rounds_met: usize,
    rounds: usize,
    met: bool,
    /// The same figure for what bounds any implementation (the raw socket, the floor, a
    /// layer that only adds an extension), where the suite measures one: if it misses or
    /// barely meets the target too, the miss is the machine's, not the code's.
    limit_figure: Option<Spread>,
    limit_by: Option<String>,
}

impl Target {
    fn meets(&self, v: f64) -> bool {
        if self.at_most {
            v <= self.limit
        } else {
            v >= self.limit
        }
    }

    /// Gives the target the same figure measured for `by`, what bounds any implementation.
    fn bounded_by(mut self, by: &str, figure: Option<Spread>) -> Self {
        if figure.is_some() {
            self.limit_figure = figure;
            self.limit_by = Some(by.into());
        }
        self
    }
}

fn target(name: String, measured: Option<Spread>, limit: f64, at_most: bool, unit: &str) -> Target {
    let ok = |v: f64| if at_most { v <= limit } else { v >= limit };
    Target {
        target: name,
        met: measured.as_ref().is_some_and(|s| ok(s.median)),
        rounds_met: measured
            .as_ref()
            .map_or(0, |s| s.rounds.iter().filter(|v| ok(**v)).count()),
        rounds: measured.as_ref().map_or(0, |s| s.rounds.len()),
        measured,
        limit,
        at_most,
        unit: unit.to_string(),
        limit_figure: None,
        limit_by: None,
    }
}

#[derive(Serialize)]
struct Report {
    mode: String,
    command: String,
    method: BTreeMap<String, serde_json::Value>,
    machine: BTreeMap<String, String>,
    targets: Vec<Target>,
    latency: Vec<LatencyRow>,
    floors: Vec<FloorRow>,
    create_limit: CreateLimit,
    no_layer_us: Option<Spread>,
    cpu_us_per_request: BTreeMap<String, f64>,
    load_ratios: Vec<LoadRatios>,
    load: Vec<LoadRow>,
    memory: Vec<MemoryRow>,
    memory_in_redis: Option<serde_json::Value>,
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> BTreeMap<String, String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let mut m = BTreeMap::new();
    m.insert("date (UTC)".into(), sh("date", &["-u", "+%Y-%m-%d %H:%M"]));
    m.insert("cpu".into(), field(&cpuinfo, "model name"));
    m.insert("cores".into(), sh("nproc", &[]));
    m.insert("memory".into(), field(&meminfo, "MemTotal"));
    m.insert("kernel".into(), sh("uname", &["-r"]));
    m.insert("redis".into(), sh("redis-server", &["--version"]));
    m.insert("rustc".into(), sh("rustc", &["--version"]));
    m.insert(
        "wrk".into(),
        sh("sh", &["-c", "wrk --version 2>&1 | head -1"]),
    );
    m
}

/// Criterion's median of `ours/<id>`, in µs.
fn criterion_us(id: &str) -> Option<f64> {
    let home = std::env::var("CRITERION_HOME").unwrap_or_else(|_| "target/criterion".into());
    let text = std::fs::read_to_string(format!("{home}/ours/{id}/new/estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64().map(|ns| ns / 1e3)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &str) -> Option<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| eprintln!("{path}: {e}"))
        .ok()?;
    serde_json::from_str(&text)
        .map_err(|e| eprintln!("{path}: {e}"))
        .ok()
}

fn cell_label(scenario: &str, size: Option<&str>) -> String {
    size.map_or(scenario.to_string(), |s| format!("{scenario} ({s})"))
}

struct Latency {
    rows: Vec<LatencyRow>,
    floors: Vec<FloorRow>,
    create_limit: CreateLimit,
    no_layer: Option<Spread>,
}

fn latency(file: Option<&LatencyFile>) -> Latency {
    let series = file.map(latency_series).unwrap_or_default();
    let empty = Series::new();
    let get = |scenario: &str, size: Option<&str>, lib: &str| {
        series
            .get(&(scenario.into(), size.map(Into::into), lib.into()))
            .unwrap_or(&empty)
    };
    let mut rows = Vec::new();
    for (scenario, size) in CELLS {
        let mut us = BTreeMap::new();
        for lib in [OURS, TS, TS_ALWAYS] {
            if let Some(s) = Spread::of(get(scenario, size, lib).values().copied().collect()) {
                us.insert(lib.to_string(), s);
            }
        }
        let (ours, ts, always) = (
            get(scenario, size, OURS),
            get(scenario, size, TS),
            get(scenario, size, TS_ALWAYS),
        );
        rows.push(LatencyRow {
            scenario: scenario.into(),
            size: size.map(Into::into),
            us,
            ours_to_tower_sessions: Spread::per_round(ours, ts, ratio),
            ours_to_always_save: Spread::per_round(ours, always, ratio),
            always_save_to_tower_sessions: Spread::per_round(always, ts, ratio),
        });
    }
    let mut floors = Vec::new();
    for size in ["small", "large"] {
        let mut us = BTreeMap::new();
        for lib in [OURS, FLOOR, FLOOR_REDIS_RS, RAW_FLOOR] {
            if let Some(s) = Spread::of(get("read", Some(size), lib).values().copied().collect()) {
                us.insert(lib.to_string(), s);
            }
        }
        let (read, floor, raw) = (
            get("read", Some(size), OURS),
            get("read", Some(size), FLOOR),
            get("read", Some(size), RAW_FLOOR),
        );
        floors.push(FloorRow {
            size: size.into(),
            us,
            read_to_floor: Spread::per_round(read, floor, ratio),
            floor_to_redis_rs_floor: Spread::per_round(
                floor,
                get("read", Some(size), FLOOR_REDIS_RS),
                ratio,
            ),
            floor_to_raw_floor: Spread::per_round(floor, raw, ratio),
            ours_to_raw_floor: Spread::per_round(read, raw, ratio),
            raw_floor_to_tower_sessions_read: Spread::per_round(
                raw,
                get("read", Some(size), TS),
                ratio,
            ),
        });
    }
    let mut create_limit = CreateLimit::default();
    for lib in [OURS, TS, RAW_CREATE] {
        if let Some(s) = Spread::of(get("create", None, lib).values().copied().collect()) {
            create_limit.us.insert(lib.to_string(), s);
        }
    }
    let raw_create = get("create", None, RAW_CREATE);
    create_limit.raw_create_to_tower_sessions =
        Spread::per_round(raw_create, get("create", None, TS), ratio);
    create_limit.ours_to_raw_create =
        Spread::per_round(get("create", None, OURS), raw_create, ratio);
    let no_layer = Spread::of(get("no-layer", None, NO_LAYER).values().copied().collect());
    Latency {
        rows,
        floors,
        create_limit,
        no_layer,
    }
}

struct Load {
    rows: Vec<LoadRow>,
    ratios: Vec<LoadRatios>,
}

fn load(file: Option<&LoadFile>) -> Load {
    let runs: &[LoadRun] = file.map_or(&[], |f| &f.load);
    let series = |app: &str, c: u32, f: fn(&LoadRun) -> f64| -> Series {
        runs.iter()
            .filter(|r| r.app == app && r.connections == c)
            .map(|r| (r.round, f(r)))
            .collect()
    };
    let mut connections: Vec<u32> = runs.iter().map(|r| r.connections).collect();
    connections.sort_unstable();
    connections.dedup();
    let mut rows = Vec::new();
    for app in [
        NO_LAYER,
        NO_LAYER_AGAIN,
        EXTENSION,
        FLOOR,
        FLOOR_REDIS_RS,
        UNTOUCHED,
        OURS,
        TS,
        TS_ALWAYS,
    ] {
        for &c in &connections {
            // A report of a run from before an app existed leaves its rows out.
            if !runs.iter().any(|r| r.app == app && r.connections == c) {
                continue;
            }
            let spread =
                |f: fn(&LoadRun) -> f64| Spread::of(series(app, c, f).into_values().collect());
            rows.push(LoadRow {
                app: app.into(),
                connections: c,
                requests_per_sec: spread(|r| r.requests_per_sec),
                p50_us: spread(|r| r.p50_us),
                p99_us: spread(|r| r.p99_us),
                errors: runs
                    .iter()
                    .filter(|r| r.app == app && r.connections == c)
                    .map(|r| r.errors)
                    .sum(),
                server_cpu_us: spread(|r| r.server_cpu_us),
                redis_cpu_us: spread(|r| r.redis_cpu_us),
            });
        }
    }
    let rps = |r: &LoadRun| r.requests_per_sec;
    let cpu = |r: &LoadRun| r.server_cpu_us;
    let ratios = connections
        .iter()
        .map(|&c| {
            let rps_ratio = |a, b| Spread::per_round(&series(a, c, rps), &series(b, c, rps), ratio);
            let cpu_over_no_layer =
                |a| Spread::per_round(&series(a, c, cpu), &series(NO_LAYER, c, cpu), difference);
            LoadRatios {
                connections: c,
                ours_to_tower_sessions: rps_ratio(OURS, TS),
                ours_to_always_save: rps_ratio(OURS, TS_ALWAYS),
                untouched_to_no_layer: rps_ratio(UNTOUCHED, NO_LAYER),
                server_cpu_over_no_layer_us: cpu_over_no_layer(OURS),
                floor_cpu_over_no_layer_us: cpu_over_no_layer(FLOOR),
                tower_sessions_cpu_over_no_layer_us: cpu_over_no_layer(TS),
                floor_to_redis_rs_floor: rps_ratio(FLOOR, FLOOR_REDIS_RS),
                redis_rs_floor_cpu_over_no_layer_us: cpu_over_no_layer(FLOOR_REDIS_RS),
                floor_to_tower_sessions: rps_ratio(FLOOR, TS),
                floor_to_always_save: rps_ratio(FLOOR, TS_ALWAYS),
                extension_to_no_layer: rps_ratio(EXTENSION, NO_LAYER),
                again_to_no_layer: rps_ratio(NO_LAYER_AGAIN, NO_LAYER),
            }
        })
        .collect();
    Load { rows, ratios }
}

/// The issue's targets, in its order.
fn targets(latency: &Latency, load: &Load) -> Vec<Target> {
    let mut t = Vec::new();
    for row in &latency.rows {
        let cell = cell_label(&row.scenario, row.size.as_deref());
        // One round trip on a bare socket against tower-sessions' one round trip.
        let floor = |size: &str| latency.floors.iter().find(|f| f.size == size);
        let (by, raw) = match (row.scenario.as_str(), row.size.as_deref()) {
            ("read", Some(size)) => (
                RAW_FLOOR,
                floor(size).and_then(|f| f.raw_floor_to_tower_sessions_read.clone()),
            ),
            ("create", _) => (
                RAW_CREATE,
                latency.create_limit.raw_create_to_tower_sessions.clone(),
            ),
            _ => (RAW_FLOOR, None),
        };
        t.push(
            target(
                format!("{cell}: ours ≤ 0.9 × tower-sessions"),
                row.ours_to_tower_sessions.clone(),
                0.9,
                true,
                "×",
            )
            .bounded_by(by, raw),
        );
        t.push(target(
            format!("{cell}: ours ≤ 1.0 × tower-sessions always_save"),
            row.ours_to_always_save.clone(),
            1.0,
            true,
            "×",
        ));
    }
    for f in &latency.floors {
        t.push(target(
            format!("read ({}): ours ≤ 1.05 × floor", f.size),
            f.read_to_floor.clone(),
            1.05,
            true,
            "×",
        ));
    }
    for f in &latency.floors {
        t.push(target(
            format!("floor ({}) ≤ 1.3 × raw floor", f.size),
            f.floor_to_raw_floor.clone(),
            1.3,
            true,
            "×",
        ));
    }
    let at = |c: u32| load.ratios.iter().find(|r| r.connections == c);
    for c in TARGET_CONNECTIONS {
        t.push(
            target(
                format!("HTTP read, {c} connections: ours ≥ 1.3 × tower-sessions (req/s)"),
                at(c).and_then(|r| r.ours_to_tower_sessions.clone()),
                1.3,
                false,
                "×",
            )
            .bounded_by(FLOOR, at(c).and_then(|r| r.floor_to_tower_sessions.clone())),
        );
        t.push(
            target(
                format!(
                    "HTTP read, {c} connections: ours ≥ 2 × tower-sessions always_save (req/s)"
                ),
                at(c).and_then(|r| r.ours_to_always_save.clone()),
                2.0,
                false,
                "×",
            )
            .bounded_by(FLOOR, at(c).and_then(|r| r.floor_to_always_save.clone())),
        );
    }
    for c in TARGET_CONNECTIONS {
        t.push(
            target(
                format!("HTTP untouched route, {c} connections: ≥ 0.95 × no layer (req/s)"),
                at(c).and_then(|r| r.untouched_to_no_layer.clone()),
                0.95,
                false,
                "×",
            )
            .bounded_by(
                EXTENSION,
                at(c).and_then(|r| r.extension_to_no_layer.clone()),
            ),
        );
    }
    for c in TARGET_CONNECTIONS {
        t.push(
            target(
                format!("server CPU per read request, {c} connections: ≤ no layer's + 6 µs"),
                at(c).and_then(|r| r.server_cpu_over_no_layer_us.clone()),
                6.0,
                true,
                " µs",
            )
            .bounded_by(
                FLOOR,
                at(c).and_then(|r| r.floor_cpu_over_no_layer_us.clone()),
            ),
        );
    }
    let regenerate = latency
        .rows
        .iter()
        .find(|r| r.scenario == "regenerate" && r.size.as_deref() == Some("large"));
    t.push(target(
        "regenerate (large): ours ≤ 1.0 × tower-sessions".into(),
        regenerate.and_then(|r| r.ours_to_tower_sessions.clone()),
        1.0,
        true,
        "×",
    ));
    t
}

/// Which ratio of a row a chart series shows.
type RatioOf = fn(&LatencyRow) -> Option<&Spread>;

/// Ratios to tower-sessions default per cell, ours and always_save, on a log scale around a
/// 1.0 line; whiskers span the rounds' min–max.
fn svg(rows: &[LatencyRow]) -> String {
    let series: [(&str, &str, RatioOf); 2] = [
        (OURS, "#2b6cb0", |r| r.ours_to_tower_sessions.as_ref()),
        (TS_ALWAYS, "#c05621", |r| {
            r.always_save_to_tower_sessions.as_ref()
        }),
    ];
    let values: Vec<f64> = rows
        .iter()
        .flat_map(|r| series.iter().filter_map(|(_, _, f)| f(r)))
        .flat_map(|s| [s.min, s.max])
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = values.iter().fold(0.5f64, |a, &b| a.min(b)).log2().floor();
    let hi = values.iter().fold(2.0f64, |a, &b| a.max(b)).log2().ceil();
    let (label_w, plot_w, bar_h, gap, top) = (150.0, 560.0, 11.0, 12.0, 90.0);
    let x = |v: f64| label_w + (v.log2() - lo) / (hi - lo) * plot_w;
    let row_h = bar_h * 2.0 + gap;
    let height = top + row_h * rows.len() as f64 + 30.0;
    let width = label_w + plot_w + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">Latency per request ÷ tower-sessions (default), lower is better</text>"#
    );
    let _ = writeln!(
        out,
        r##"<text x="10" y="38" font-size="11" fill="#555">Median of per-round ratios, whiskers: min–max over rounds; log scale</text>"##
    );
    for (i, (lib, color, _)) in series.iter().enumerate() {
        let lx = 10.0 + i as f64 * 230.0;
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="48" width="12" height="12" fill="{color}"/><text x="{}" y="59">{lib}</text>"#,
            lx + 16.0
        );
    }
    let bottom = top + row_h * rows.len() as f64;
    for p in lo as i32..=hi as i32 {
        let v = 2f64.powi(p);
        let tx = x(v);
        let (stroke, w) = if p == 0 { ("#000", 1.5) } else { ("#ddd", 1.0) };
        let _ = writeln!(
            out,
            r#"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{bottom}" stroke="{stroke}" stroke-width="{w}"/><text x="{tx:.1}" y="{}" text-anchor="middle" font-size="10">{}×</text>"#,
            top - 4.0,
            bottom + 14.0,
            if v < 1.0 {
                format!("{v}")
            } else {
                format!("{v:.0}")
            }
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="10">tower-sessions default</text>"#,
        x(1.0),
        top - 10.0
    );
    for (i, row) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + bar_h * 1.4,
            cell_label(&row.scenario, row.size.as_deref())
        );
        for (j, (_, color, f)) in series.iter().enumerate() {
            let Some(s) = f(row) else { continue };
            let by = y + j as f64 * bar_h;
            let (x1, x0) = (x(s.median), x(1.0));
            let (left, w) = (x0.min(x1), (x1 - x0).abs().max(1.0));
            let mid = by + (bar_h - 1.0) / 2.0;
            // Right of the whisker and of the 1× line, clear of the labels.
            let tx = x(s.max).max(x0) + 4.0;
            let _ = writeln!(
                out,
                r##"<rect x="{left:.1}" y="{by}" width="{w:.1}" height="{}" fill="{color}"/><line x1="{:.1}" y1="{mid}" x2="{:.1}" y2="{mid}" stroke="#222"/><text x="{tx:.1}" y="{}" font-size="10">{:.2}×</text>"##,
                bar_h - 1.0,
                x(s.min),
                x(s.max),
                by + bar_h - 2.0,
                s.median
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let m = &report.method;
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `{}` ({} mode). Every figure below comes from that run; none is typed in.\n\n\
         The libraries run interleaved: latency in {} rounds in one process against one \
         redis-server, every round running every scenario, its libraries taking turns every few \
         milliseconds in an order rotated each round; throughput in {} rounds of wrk runs over HTTP, every app in \
         turn at each connection count. A figure is the **median over rounds**, shown with its \
         **min–max over rounds** in parentheses. A ratio is taken within each round (both sides \
         measured seconds apart), then its median over rounds. A target is met only if that \
         median meets it; \"rounds\" says in how many rounds it did, so a marginal result shows.\n",
        report.command, report.mode, m["latency_rounds"], m["load_rounds"]
    );
    let _ = writeln!(md, "## Targets\n\n| Target | Median | Min–max over rounds | Rounds meeting it | Met | The same figure at the limit |\n|---|---|---|---|---|---|");
    for t in &report.targets {
        let digits = if t.unit == "×" { 2 } else { 1 };
        let (median, range) =
            t.measured
                .as_ref()
                .map_or(("not measured".to_string(), "–".to_string()), |s| {
                    (
                        format!("{:.digits$}{}", s.median, t.unit),
                        format!("{:.digits$}–{:.digits$}", s.min, s.max),
                    )
                });
        let limit = match (&t.limit_figure, &t.limit_by) {
            (Some(s), Some(by)) => format!(
                "{by}: {} ({:.digits$}–{:.digits$}){}",
                format_args!("{:.digits$}{}", s.median, t.unit),
                s.min,
                s.max,
                if t.meets(s.median) {
                    ""
                } else {
                    ", misses too"
                }
            ),
            _ => "–".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {median} | {range} | {}/{} | {} | {limit} |",
            t.target,
            t.rounds_met,
            t.rounds,
            if t.met { "yes" } else { "**no**" }
        );
    }
    let met = report.targets.iter().filter(|t| t.met).count();
    let bounded = report
        .targets
        .iter()
        .filter(|t| !t.met && t.limit_figure.as_ref().is_some_and(|s| !t.meets(s.median)))
        .count();
    let _ = writeln!(
        md,
        "\n{met} of {} targets met; of the {} missed, {bounded} are missed by the limit too. \
         In `untouched` neither library does any I/O (tower-sessions' default mode loads \
         nothing for a route that never touches the session; ours neither), so both sides are \
         the layer's CPU cost alone. Server CPU is compared at each of 16, 64 and 256 \
         connections.\n\n\
         The last column gives, where the suite measures one, the same figure for what bounds \
         any implementation on this machine, from the same rounds: the **raw floor** (one \
         round trip on a bare socket, no client, runtime or router) against tower-sessions' \
         one-round-trip read, and the **raw create** (our create's commands the same way) \
         against its create; the **floor** (the same route without the layer, its \
         handler doing a read's Redis work through our client and nothing else) for HTTP \
         reads and their server CPU; **extension only** (a layer that does nothing but put one \
         `Arc` clone into the request's extensions, the least any layer that hands a handler \
         a session does) for the untouched route. Where the limit misses the target as well, \
         or meets it with no room for the work a session needs, the miss is the round trip's \
         or the machine's, not the session code's; the sections below break these down.\n",
        report.targets.len(),
        report.targets.len() - met
    );
    let _ = writeln!(
        md,
        "## Latency per request\n\n![latency per scenario, relative to tower-sessions](docs/latency.svg)\n\n\
         µs per request through the real tower stack (`oneshot` on the router, its routes built once as `axum::serve` does; no sockets), each \
         round's figure being the median of that library's requests in the cell ({}). Small session: 3 short \
         fields; large: 50 fields, about 4 KB. tower-sessions 0.14 with \
         tower-sessions-redis-store 0.16 runs in the same process against the same \
         redis-server; its default mode does not slide expiry on reads, `always_save` does.\n\n\
         | Scenario | Size | ours µs | tower-sessions µs | always_save µs | ours ÷ tower-sessions | ours ÷ always_save |\n\
         |---|---|---|---|---|---|---|",
        budget_text(&m["latency_budget"])
    );
    for r in &report.latency {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.size.as_deref().unwrap_or("–"),
            fmt_spread(r.us.get(OURS), 1, ""),
            fmt_spread(r.us.get(TS), 1, ""),
            fmt_spread(r.us.get(TS_ALWAYS), 1, ""),
            fmt_spread(r.ours_to_tower_sessions.as_ref(), 2, "×"),
            fmt_spread(r.ours_to_always_save.as_ref(), 2, "×"),
        );
    }
    let _ = writeln!(
        md,
        "\n### Floors\n\nThe **floor** is a request on the same router without the session layer \
         whose handler does our read's Redis work (`HGETALL key` + `PEXPIRE key 1800000`, the \
         reply read into a session's fields) through our store's own connections and nothing else. The \
         **floor (redis-rs)** is the same route doing the same pipeline through redis-rs's own \
         `MultiplexedConnection` (opened once, cloned per request, the hash read as a \
         `HashMap<String, String>`): floor ÷ floor (redis-rs) is what our own connection \
         (a RESP client of our own instead of redis-rs's) buys a read; below 1×, ours is faster. The \
         **raw floor** is the physical limit: \
         those two commands as RESP bytes written on one bare blocking TCP socket and read until \
         both replies are complete (no client library, no runtime, no router). Same session as \
         ours' `read`, same rounds.\n\n\
         | Size | ours read µs | floor µs | floor (redis-rs) µs | raw floor µs | read ÷ floor | floor (ours) ÷ floor (redis-rs) | floor ÷ raw floor |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for f in &report.floors {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            f.size,
            fmt_spread(f.us.get(OURS), 1, ""),
            fmt_spread(f.us.get(FLOOR), 1, ""),
            fmt_spread(f.us.get(FLOOR_REDIS_RS), 1, ""),
            fmt_spread(f.us.get(RAW_FLOOR), 1, ""),
            fmt_spread(f.read_to_floor.as_ref(), 2, "×"),
            fmt_spread(f.floor_to_redis_rs_floor.as_ref(), 2, "×"),
            fmt_spread(f.floor_to_raw_floor.as_ref(), 2, "×"),
        );
    }
    let _ = writeln!(
        md,
        "\nThe router alone, without a layer: {} µs.",
        fmt_spread(report.no_layer_us.as_ref(), 2, "")
    );
    let _ = writeln!(
        md,
        "\n### The physical limit against tower-sessions\n\n`read` (and tower-sessions' default \
         read) is one round trip each. The raw floor, one round trip on a bare blocking socket \
         with no client, runtime or router (our read's two commands), divided by \
         tower-sessions' whole request, round by round; and what \"≤ 0.9 × tower-sessions\" \
         then leaves a request: at most 0.9 ÷ that ratio times the raw floor. Where that \
         allowance is about 1×, a miss of the target is the round trip itself, not the code \
         around it: ours' read, and even the floor (our client with no session logic), sit \
         above it.\n\n\
         | Size | raw floor ÷ tower-sessions read | allows read ≤ | ours read ÷ raw floor |\n|---|---|---|---|"
    );
    let allows = |s: Option<&Spread>, of: &str| {
        s.map_or("–".to_string(), |s| {
            format!("{:.2}× {of}", 0.9 / s.median)
        })
    };
    for f in &report.floors {
        let read = f.raw_floor_to_tower_sessions_read.as_ref();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            f.size,
            fmt_spread(read, 2, "×"),
            allows(read, RAW_FLOOR),
            fmt_spread(f.ours_to_raw_floor.as_ref(), 2, "×"),
        );
    }
    let c = &report.create_limit;
    let raw_create = c.raw_create_to_tower_sessions.as_ref();
    let _ = writeln!(
        md,
        "\n`create` is one round trip each too, and has a limit of its own, the **raw create**: \
         our create's commands (`MULTI`, `HSET` of the creation time, the public id and the \
         handler's one value, `PEXPIRE`, `EXEC`) for a fresh key, on a bare socket as the raw \
         floor, taking turns with the libraries in the create cell. tower-sessions writes one \
         string (`SET` with `NX` and an expiry); a hash with an expiry, written atomically, \
         takes Redis four commands.\n\n\
         | ours create µs | tower-sessions create µs | raw create µs | raw create ÷ tower-sessions create | allows create ≤ | ours create ÷ raw create |\n|---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | {} | {} |",
        fmt_spread(c.us.get(OURS), 1, ""),
        fmt_spread(c.us.get(TS), 1, ""),
        fmt_spread(c.us.get(RAW_CREATE), 1, ""),
        fmt_spread(raw_create, 2, "×"),
        allows(raw_create, RAW_CREATE),
        fmt_spread(c.ours_to_raw_create.as_ref(), 2, "×"),
    );
    let _ = writeln!(
        md,
        "\n## CPU cost of the layer\n\nCriterion, on the in-process backend (no I/O): what the \
         layer adds to a request over the same router without it (µs, Criterion's median).\n\n\
         | Request | µs |\n|---|---|"
    );
    for (k, v) in &report.cpu_us_per_request {
        let _ = writeln!(md, "| {k} | {v:.2} |");
    }
    let _ = writeln!(
        md,
        "\n## Throughput over HTTP\n\nwrk, {} s per run, {} rounds; every request carries one of \
         256 session cookies in turn; `GET /read` reads one value from the session, the \
         untouched route never touches it. Placement: {}. CPU per request is the CPU time of the server process and of redis-server during \
         the run, divided by the requests served. Ratios are taken within each round.\n\n\
         The floor app is the router without the layer whose handler does a read's Redis \
         work through our client and nothing else: its server CPU over no layer is what one \
         round trip costs the server before any session logic; tower-sessions' is shown \
         beside it. The floor's requests/s over tower-sessions' (and over always_save's) is \
         the most any session layer on our client could reach on this machine. The extension \
         only app serves the untouched route behind a layer that only inserts one extension: \
         its requests/s over no layer's is the most any session layer could keep there. \
         **No layer, again** is the no-layer app once more, on a port of its own: its \
         requests/s over no layer's (1× in truth) is what the method reads as a difference \
         where there is none, the resolution of these ratios on this machine.\n\n\
         | Connections | ours ÷ tower-sessions | ours ÷ always_save | untouched ÷ no layer | extension only ÷ no layer | no layer, again ÷ no layer | server CPU µs/req, ours − no layer | floor − no layer | tower-sessions − no layer | floor ÷ tower-sessions (req/s) | floor ÷ always_save (req/s) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|",
        m["load_seconds_per_run"],
        m["load_rounds"],
        m["load_placement"].as_str().unwrap_or("not recorded")
    );
    for r in &report.load_ratios {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.connections,
            fmt_spread(r.ours_to_tower_sessions.as_ref(), 2, "×"),
            fmt_spread(r.ours_to_always_save.as_ref(), 2, "×"),
            fmt_spread(r.untouched_to_no_layer.as_ref(), 2, "×"),
            fmt_spread(r.extension_to_no_layer.as_ref(), 2, "×"),
            fmt_spread(r.again_to_no_layer.as_ref(), 2, "×"),
            fmt_spread(r.server_cpu_over_no_layer_us.as_ref(), 1, ""),
            fmt_spread(r.floor_cpu_over_no_layer_us.as_ref(), 1, ""),
            fmt_spread(r.tower_sessions_cpu_over_no_layer_us.as_ref(), 1, ""),
            fmt_spread(r.floor_to_tower_sessions.as_ref(), 2, "×"),
            fmt_spread(r.floor_to_always_save.as_ref(), 2, "×"),
        );
    }
    let _ = writeln!(
        md,
        "\nWhat our own connection buys under load: the floor against the **floor (redis-rs)**, \
         the same app doing the same pipeline through redis-rs's one `MultiplexedConnection` \
         (cloned per request, as applications use it; ours spreads over up to 4 connections \
         when one has 32 commands in flight). Above 1× in requests/s, ours is faster.\n\n\
         | Connections | floor (ours) ÷ floor (redis-rs) (req/s) | server CPU µs/req, floor − no layer | floor (redis-rs) − no layer |\n\
         |---|---|---|---|"
    );
    for r in &report.load_ratios {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            r.connections,
            fmt_spread(r.floor_to_redis_rs_floor.as_ref(), 2, "×"),
            fmt_spread(r.floor_cpu_over_no_layer_us.as_ref(), 1, ""),
            fmt_spread(r.redis_rs_floor_cpu_over_no_layer_us.as_ref(), 1, ""),
        );
    }
    let _ = writeln!(
        md,
        "\n| App | Connections | Requests/s | p50 µs | p99 µs | Errors (all rounds) | Server CPU µs/req | Redis CPU µs/req |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for r in &report.load {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.app,
            r.connections,
            fmt_spread(r.requests_per_sec.as_ref(), 0, ""),
            fmt_spread(r.p50_us.as_ref(), 0, ""),
            fmt_spread(r.p99_us.as_ref(), 0, ""),
            r.errors,
            fmt_spread(r.server_cpu_us.as_ref(), 1, ""),
            fmt_spread(r.redis_cpu_us.as_ref(), 1, ""),
        );
    }
    let _ = writeln!(
        md,
        "\n## Redis memory per session\n\nInformation, not a target. `MEMORY USAGE` of one \
         session with the same content, each in a fresh redis-server. Redis keeps a hash compact \
         (listpack) only while every value fits in `hash-max-listpack-value` bytes (64 by \
         default); the large session's values are about 80 bytes.\n\n| Library | Size | Bytes |\n|---|---|---|"
    );
    for r in &report.memory {
        let _ = writeln!(md, "| {} | {} | {} |", r.library, r.size, r.bytes);
    }
    if let Some(m) = &report.memory_in_redis {
        md.push_str(&trs_bench::memory::markdown(m));
    }
    let _ = writeln!(md, "\n## Machine\n\n| | |\n|---|---|");
    for (k, v) in &report.machine {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    md
}

fn budget_text(budget: &serde_json::Value) -> String {
    format!(
        "{} warm-up requests, then {} timed one by one, cut at {} ms once {} are in; the \
         libraries of a cell take turns, {} requests each, so that they share the machine's noise",
        budget["warmup"],
        budget["requests"],
        budget["cap"],
        budget["min_requests"],
        budget["slice"]
    )
}

fn main() {
    let mode: String = arg_value("--mode").unwrap_or_else(|| "full".into());
    let command: String = arg_value("--command").unwrap_or_else(|| "scripts/bench.sh".into());
    let latency_file: Option<LatencyFile> = read_json("target/bench/latency.json");
    let load_file: Option<LoadFile> = read_json("target/bench/load.json");
    let latency = latency(latency_file.as_ref());
    let load = load(load_file.as_ref());

    let mut cpu = BTreeMap::new();
    if let Some(base) = criterion_us("no-layer") {
        for (id, label) in [
            ("memory-read", "read a value"),
            ("memory-untouched", "cookie, session never touched"),
        ] {
            if let Some(v) = criterion_us(id) {
                cpu.insert(label.to_string(), v - base);
            }
        }
    }
    let mut method = BTreeMap::new();
    if let Some(f) = &latency_file {
        method.insert("latency_rounds".into(), f.rounds.into());
        method.insert("latency_budget".into(), f.budget.clone());
    }
    if let Some(f) = &load_file {
        method.insert("load_rounds".into(), f.rounds.into());
        method.insert("load_seconds_per_run".into(), f.seconds_per_run.into());
        method.insert("load_placement".into(), f.placement.clone().into());
    }
    method.insert(
        "spread".into(),
        "median over rounds, min–max over rounds; ratios within each round".into(),
    );
    let report = Report {
        mode,
        command,
        method,
        machine: machine(),
        targets: targets(&latency, &load),
        latency: latency.rows,
        floors: latency.floors,
        create_limit: latency.create_limit,
        no_layer_us: latency.no_layer,
        cpu_us_per_request: cpu,
        load_ratios: load.ratios,
        load: load.rows,
        memory: load_file.map(|f| f.memory).unwrap_or_default(),
        memory_in_redis: trs_bench::memory::read("target/bench/memory.json"),
    };
    std::fs::create_dir_all("docs").expect("docs/");
    std::fs::write("docs/latency.svg", svg(&report.latency)).expect("docs/latency.svg");
    std::fs::write("BENCHMARKS.md", markdown(&report)).expect("BENCHMARKS.md");
    let json = serde_json::to_string_pretty(&report).expect("json");
    std::fs::write("BENCHMARKS.json", json + "\n").expect("BENCHMARKS.json");
    for t in &report.targets {
        let measured = t.measured.as_ref().map_or("not measured".into(), |s| {
            format!("{:.2}{} ({:.2}–{:.2})", s.median, t.unit, s.min, s.max)
        });
        let limit = match (&t.limit_figure, &t.limit_by) {
            (Some(s), Some(by)) => format!("; {by}: {:.2}{}", s.median, t.unit),
            _ => String::new(),
        };
        eprintln!(
            "{} {}: {measured}, {}/{} rounds{limit}",
            if t.met { "met " } else { "MISS" },
            t.target,
            t.rounds_met,
            t.rounds
        );
    }
}
