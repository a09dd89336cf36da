//! The TLS and Cluster runs (`target/bench/latency-<topology>.json` and
//! `load-<topology>.json`, written by bench-latency and bench-load with `--topology`), set
//! against plain TCP's: their tables, the targets on each, and tail latency (p99 and
//! p99.9 of the HTTP read) on every topology, with a verdict against the run's own A/A
//! control (the layer-less app twice).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::latency::{cell_label, latency, FloorRow, LatencyRow};
use crate::load::{load, LoadRatios, LoadRow};
use crate::schema::{
    read_json, LatencyFile, LoadFile, LoadRun, FLOOR, FLOOR_REDIS_RS, NO_LAYER, NO_LAYER_AGAIN,
    OURS, TS, TS_ALWAYS,
};
use crate::stats::{ratio, within_noise, Series, Spread};
use crate::targets::{target, Target};

/// The connection count tail latency is compared at.
pub const TAIL_CONNECTIONS: u32 = 256;

/// The topologies besides plain TCP: (file suffix, title).
const TOPOLOGIES: [(&str, &str); 2] = [("tls", "TLS"), ("cluster", "Redis Cluster")];

/// One percentile of the HTTP read, ours against tower-sessions at one connection count.
#[derive(Serialize)]
pub struct TailRow {
    pub connections: u32,
    /// `p99` or `p99.9`.
    pub percentile: String,
    pub ours_us: Option<Spread>,
    pub tower_sessions_us: Option<Spread>,
    pub floor_us: Option<Spread>,
    /// Ours' percentile over tower-sessions', within each round (the target: ≤ 1).
    pub ours_to_tower_sessions: Option<Spread>,
    /// The floor's over tower-sessions': where any layer on our client would be.
    pub floor_to_tower_sessions: Option<Spread>,
    /// The same percentile of "no layer, again" over "no layer" (1× in truth): the run's
    /// resolution for this figure.
    pub a_a: Option<Spread>,
    /// `met`, `missed, within noise` (the median misses by less than the A/A reads where
    /// there is no difference) or `missed`.
    pub verdict: String,
}

/// Per connection count, what the topology's run shows beside its ratios to tower-sessions.
#[derive(Serialize)]
pub struct LoadExtra {
    pub connections: u32,
    /// Ours' requests/s over the floor's: the distance to the floor under load.
    pub ours_to_floor: Option<Spread>,
    /// "No layer, again" over "no layer", requests/s: the run's A/A control.
    pub a_a: Option<Spread>,
    /// The verdict on "ours ≥ 1.3 × tower-sessions" (see [`TailRow::verdict`]).
    pub verdict: String,
}

/// One topology's run, or the note that it did not run.
#[derive(Serialize)]
pub struct Section {
    /// `tls` or `cluster`.
    pub topology: String,
    pub title: String,
    pub ran: bool,
    pub deployment: Option<String>,
    pub latency_rounds: Option<usize>,
    pub load_rounds: Option<usize>,
    pub latency: Vec<LatencyRow>,
    pub floors: Vec<FloorRow>,
    /// Per size, the floor's read latency over tower-sessions' (the limit of the read target).
    pub floor_to_tower_sessions_read: BTreeMap<String, Spread>,
    pub load_ratios: Vec<LoadRatios>,
    pub load_extra: Vec<LoadExtra>,
    pub load: Vec<LoadRow>,
    pub tail: Vec<TailRow>,
}

/// Plain TCP and each topology, side by side: the distance to each one's floor.
#[derive(Serialize)]
pub struct Comparison {
    pub topology: String,
    /// Latency, read (small): ours ÷ tower-sessions, ours ÷ floor, floor ÷ floor (redis-rs).
    pub read_to_tower_sessions: Option<Spread>,
    pub read_to_floor: Option<Spread>,
    pub floor_to_redis_rs_floor: Option<Spread>,
    /// HTTP read at [`TAIL_CONNECTIONS`]: ours ÷ tower-sessions and ours ÷ floor (req/s).
    pub http_to_tower_sessions: Option<Spread>,
    pub http_to_floor: Option<Spread>,
}

/// Everything this module adds to the report.
#[derive(Serialize)]
pub struct Topologies {
    /// Tail latency on plain TCP (from `load.json`).
    pub plain_tail: Vec<TailRow>,
    pub sections: Vec<Section>,
    pub comparison: Vec<Comparison>,
}

/// Per-round values of `f` for `app` at `c` connections (rounds where `f` has one).
fn series(runs: &[LoadRun], app: &str, c: u32, f: Figure) -> Series {
    runs.iter()
        .filter(|r| r.app == app && r.connections == c)
        .filter_map(|r| Some((r.round, f(r)?)))
        .collect()
}

/// One figure of a wrk run, where the run has it.
type Figure = fn(&LoadRun) -> Option<f64>;

fn rps(r: &LoadRun) -> Option<f64> {
    Some(r.requests_per_sec)
}

/// `met`, `missed, within noise` or `missed` (see [`within_noise`]).
fn verdict(measured: Option<&Spread>, limit: f64, at_most: bool, a_a: Option<&Spread>) -> String {
    let Some(m) = measured else {
        return "not measured".into();
    };
    let met = if at_most {
        m.median <= limit
    } else {
        m.median >= limit
    };
    if met {
        return "met".into();
    }
    match a_a {
        Some(aa) if within_noise(m.median, limit, aa.noise()) => "missed, within noise".into(),
        _ => "missed".into(),
    }
}

/// p99 and p99.9 of the HTTP read at each connection count of `runs`.
fn tail(runs: &[LoadRun]) -> Vec<TailRow> {
    let mut connections: Vec<u32> = runs.iter().map(|r| r.connections).collect();
    connections.sort_unstable();
    connections.dedup();
    let mut rows = Vec::new();
    for c in connections {
        let percentiles: [(&str, Figure); 2] =
            [("p99", |r| Some(r.p99_us)), ("p99.9", |r| r.p999_us)];
        for (name, f) in percentiles {
            let (ours, ts, floor) = (
                series(runs, OURS, c, f),
                series(runs, TS, c, f),
                series(runs, FLOOR, c, f),
            );
            if ours.is_empty() && ts.is_empty() {
                continue;
            }
            let a_a = Spread::per_round(
                &series(runs, NO_LAYER_AGAIN, c, f),
                &series(runs, NO_LAYER, c, f),
                ratio,
            );
            let ours_to_ts = Spread::per_round(&ours, &ts, ratio);
            rows.push(TailRow {
                connections: c,
                percentile: name.into(),
                ours_us: Spread::of(ours.values().copied().collect()),
                tower_sessions_us: Spread::of(ts.values().copied().collect()),
                floor_us: Spread::of(floor.values().copied().collect()),
                verdict: verdict(ours_to_ts.as_ref(), 1.0, true, a_a.as_ref()),
                ours_to_tower_sessions: ours_to_ts,
                floor_to_tower_sessions: Spread::per_round(&floor, &ts, ratio),
                a_a,
            });
        }
    }
    rows
}

/// Per-round latency medians of one library in one cell.
fn latency_series(file: &LatencyFile, scenario: &str, size: Option<&str>, lib: &str) -> Series {
    file.runs
        .iter()
        .filter(|r| r.scenario == scenario && r.size.as_deref() == size && r.library == lib)
        .map(|r| (r.round, r.median_us))
        .collect()
}

/// The side-by-side row of one topology's files.
fn comparison(name: &str, lat: Option<&LatencyFile>, ld: Option<&LoadFile>) -> Comparison {
    let read = |lib: &str| lat.map(|f| latency_series(f, "read", Some("small"), lib));
    let per_round = |a: Option<Series>, b: Option<Series>| Spread::per_round(&a?, &b?, ratio);
    let http = |app: &str| ld.map(|f| series(&f.load, app, TAIL_CONNECTIONS, rps));
    Comparison {
        topology: name.into(),
        read_to_tower_sessions: per_round(read(OURS), read(TS)),
        read_to_floor: per_round(read(OURS), read(FLOOR)),
        floor_to_redis_rs_floor: per_round(read(FLOOR), read(FLOOR_REDIS_RS)),
        http_to_tower_sessions: per_round(http(OURS), http(TS)),
        http_to_floor: per_round(http(OURS), http(FLOOR)),
    }
}

/// One topology's section from its two files (either may be missing).
fn section(name: &str, title: &str) -> (Section, Comparison) {
    let lat: Option<LatencyFile> = read_json(&format!("target/bench/latency-{name}.json"));
    let ld: Option<LoadFile> = read_json(&format!("target/bench/load-{name}.json"));
    let mut latency = latency(lat.as_ref());
    latency.rows.retain(|r| !r.us.is_empty());
    latency.floors.retain(|f| f.us.contains_key(OURS));
    let load = load(ld.as_ref());
    let runs: &[LoadRun] = ld.as_ref().map_or(&[], |f| &f.load);
    let load_extra = load
        .ratios
        .iter()
        .map(|r| {
            let c = r.connections;
            let a_a = Spread::per_round(
                &series(runs, NO_LAYER_AGAIN, c, rps),
                &series(runs, NO_LAYER, c, rps),
                ratio,
            );
            LoadExtra {
                connections: c,
                ours_to_floor: Spread::per_round(
                    &series(runs, OURS, c, rps),
                    &series(runs, FLOOR, c, rps),
                    ratio,
                ),
                verdict: verdict(r.ours_to_tower_sessions.as_ref(), 1.3, false, a_a.as_ref()),
                a_a,
            }
        })
        .collect();
    let ran = lat.is_some() || ld.is_some();
    let deployment = ran.then(|| deployment_of(name));
    let floor_to_tower_sessions_read = lat
        .as_ref()
        .map(|f| {
            latency
                .floors
                .iter()
                .filter_map(|row| {
                    let size = Some(row.size.as_str());
                    let spread = Spread::per_round(
                        &latency_series(f, "read", size, FLOOR),
                        &latency_series(f, "read", size, TS),
                        ratio,
                    )?;
                    Some((row.size.clone(), spread))
                })
                .collect()
        })
        .unwrap_or_default();
    let cmp = comparison(title, lat.as_ref(), ld.as_ref());
    let section = Section {
        topology: name.into(),
        title: title.into(),
        ran,
        deployment,
        latency_rounds: lat.as_ref().map(|f| f.rounds),
        load_rounds: ld.as_ref().map(|f| f.rounds),
        latency: latency.rows,
        floors: latency.floors,
        floor_to_tower_sessions_read,
        load_ratios: load.ratios,
        load_extra,
        load: load.rows,
        tail: tail(runs),
    };
    (section, cmp)
}

/// What each library connects with, per topology (as `trs_bench::topology` says).
fn deployment_of(name: &str) -> String {
    let topology = match name {
        "tls" => trs_bench::topology::Topology::Tls,
        _ => trs_bench::topology::Topology::Cluster,
    };
    topology.describe().into()
}

/// The topology runs, if any, and plain TCP's tail latency (`plain_load`: `load.json`).
pub fn topologies(
    plain_latency: Option<&LatencyFile>,
    plain_load: Option<&LoadFile>,
) -> Topologies {
    let mut comparison = vec![comparison("plain TCP", plain_latency, plain_load)];
    let mut sections = Vec::new();
    for (name, title) in TOPOLOGIES {
        let (s, c) = section(name, title);
        if s.ran {
            comparison.push(c);
        }
        sections.push(s);
    }
    Topologies {
        plain_tail: tail(plain_load.map_or(&[], |f| &f.load)),
        sections,
        comparison,
    }
}

/// The tail-latency targets of one topology (`prefix`: "" for plain TCP, "TLS: ", ...).
fn tail_targets(prefix: &str, rows: &[TailRow]) -> Vec<Target> {
    rows.iter()
        .filter(|r| r.connections == TAIL_CONNECTIONS)
        .map(|r| {
            target(
                format!(
                    "{prefix}HTTP read, {} connections: {} ours ≤ 1.0 × tower-sessions'",
                    r.connections, r.percentile
                ),
                r.ours_to_tower_sessions.clone(),
                1.0,
                true,
                "×",
            )
            .bounded_by(FLOOR, r.floor_to_tower_sessions.clone())
        })
        .collect()
}

/// The targets on TLS and Cluster (those that ran), and tail latency everywhere.
pub fn targets(t: &Topologies) -> Vec<Target> {
    let mut out = tail_targets("", &t.plain_tail);
    for s in t.sections.iter().filter(|s| s.ran) {
        let prefix = format!("{}: ", s.title);
        for row in &s.latency {
            // A read's Redis work through our connection, without the session logic.
            let floor = (row.scenario == "read")
                .then(|| {
                    s.floor_to_tower_sessions_read
                        .get(row.size.as_deref()?)
                        .cloned()
                })
                .flatten();
            out.push(
                target(
                    format!(
                        "{prefix}{}: ours ≤ 0.9 × tower-sessions",
                        cell_label(&row.scenario, row.size.as_deref())
                    ),
                    row.ours_to_tower_sessions.clone(),
                    0.9,
                    true,
                    "×",
                )
                .bounded_by(FLOOR, floor),
            );
        }
        for r in &s.load_ratios {
            out.push(
                target(
                    format!(
                        "{prefix}HTTP read, {} connections: ours ≥ 1.3 × tower-sessions (req/s)",
                        r.connections
                    ),
                    r.ours_to_tower_sessions.clone(),
                    1.3,
                    false,
                    "×",
                )
                .bounded_by(FLOOR, r.floor_to_tower_sessions.clone()),
            );
        }
        out.extend(tail_targets(&prefix, &s.tail));
    }
    out
}

/// `median× (min–max)`, or `–`.
fn fmt(s: Option<&Spread>, digits: usize, unit: &str) -> String {
    s.map_or("–".into(), |s| {
        format!(
            "{:.digits$}{unit} ({:.digits$}–{:.digits$})",
            s.median, s.min, s.max
        )
    })
}

fn tail_table(md: &mut String, rows: &[TailRow]) {
    let _ = writeln!(
        md,
        "| Connections | Percentile | ours µs | tower-sessions µs | floor µs | ours ÷ tower-sessions | floor ÷ tower-sessions | A/A (no layer, again ÷ no layer) | ours ≤ tower-sessions |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.connections,
            r.percentile,
            fmt(r.ours_us.as_ref(), 0, ""),
            fmt(r.tower_sessions_us.as_ref(), 0, ""),
            fmt(r.floor_us.as_ref(), 0, ""),
            fmt(r.ours_to_tower_sessions.as_ref(), 2, "×"),
            fmt(r.floor_to_tower_sessions.as_ref(), 2, "×"),
            fmt(r.a_a.as_ref(), 2, "×"),
            r.verdict,
        );
    }
}

/// The report's sections: tail latency, then each topology, then the side-by-side table.
pub fn markdown(md: &mut String, t: &Topologies) {
    let _ = writeln!(
        md,
        "\n## Tail latency over HTTP\n\nwrk's p99 (from `--latency`) and p99.9 (its \
         script's `done` hook, `latency:percentile(99.9)`) of `GET /read`, per run, then the \
         median over rounds; ratios within each round. wrk measures each request from when it \
         sends it, so a stalled server shows as the few slow requests it held, not as the \
         requests it kept from being sent. The A/A column is the same percentile of the \
         layer-less app on a second port over the first's (1× in truth): a miss smaller than \
         its spread reads \"missed, within noise\". Plain TCP:\n"
    );
    if t.plain_tail.is_empty() {
        let _ = writeln!(md, "Not measured (no `target/bench/load.json`).");
    } else {
        tail_table(md, &t.plain_tail);
    }
    for s in &t.sections {
        section_markdown(md, s);
    }
    let _ = writeln!(
        md,
        "\n## Plain TCP, TLS and Cluster side by side\n\nThe read, small session, on each \
         deployment: latency per request (bench-latency) and HTTP requests/s at {TAIL_CONNECTIONS} \
         connections (bench-load); each ratio within a round, median (min–max) over rounds. \
         The floor is the same route without the layer, doing a read's Redis work through \
         our store's own connection to that deployment; floor (redis-rs) the same through \
         redis-rs's (multiplexed, TLS or cluster) connection.\n\n\
         | Deployment | read: ours ÷ tower-sessions | read: ours ÷ floor | read: floor ÷ floor (redis-rs) | HTTP read: ours ÷ tower-sessions | HTTP read: ours ÷ floor |\n\
         |---|---|---|---|---|---|"
    );
    for c in &t.comparison {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            c.topology,
            fmt(c.read_to_tower_sessions.as_ref(), 2, "×"),
            fmt(c.read_to_floor.as_ref(), 2, "×"),
            fmt(c.floor_to_redis_rs_floor.as_ref(), 2, "×"),
            fmt(c.http_to_tower_sessions.as_ref(), 2, "×"),
            fmt(c.http_to_floor.as_ref(), 2, "×"),
        );
    }
}

fn section_markdown(md: &mut String, s: &Section) {
    let _ = writeln!(md, "\n## {}\n", s.title);
    if !s.ran {
        let _ = writeln!(
            md,
            "Not run in this mode: `scripts/bench.sh` runs the {} topology in full mode only \
             (no `target/bench/latency-{1}.json` or `load-{1}.json`).",
            s.title, s.topology
        );
        return;
    }
    let rounds = |r: Option<usize>| r.map_or("no".into(), |r| r.to_string());
    let _ = writeln!(
        md,
        "Deployment: {}. Latency in {} rounds (the small session; no bare-socket floors: `raw floor` \
         and `raw create` run on plain TCP only), HTTP in {} rounds.\n\n\
         | Scenario | Size | ours µs | tower-sessions µs | always_save µs | ours ÷ tower-sessions | ours ÷ always_save |\n\
         |---|---|---|---|---|---|---|",
        s.deployment.as_deref().unwrap_or(""),
        rounds(s.latency_rounds),
        rounds(s.load_rounds),
    );
    for r in &s.latency {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.size.as_deref().unwrap_or("–"),
            fmt(r.us.get(OURS), 1, ""),
            fmt(r.us.get(TS), 1, ""),
            fmt(r.us.get(TS_ALWAYS), 1, ""),
            fmt(r.ours_to_tower_sessions.as_ref(), 2, "×"),
            fmt(r.ours_to_always_save.as_ref(), 2, "×"),
        );
    }
    let _ = writeln!(
        md,
        "\n| Size | ours read µs | floor µs | floor (redis-rs) µs | read ÷ floor | floor (ours) ÷ floor (redis-rs) |\n|---|---|---|---|---|---|"
    );
    for f in &s.floors {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            f.size,
            fmt(f.us.get(OURS), 1, ""),
            fmt(f.us.get(FLOOR), 1, ""),
            fmt(f.us.get(FLOOR_REDIS_RS), 1, ""),
            fmt(f.read_to_floor.as_ref(), 2, "×"),
            fmt(f.floor_to_redis_rs_floor.as_ref(), 2, "×"),
        );
    }
    let _ = writeln!(
        md,
        "\nHTTP read (`GET /read`, 256 session cookies in turn):\n\n\
         | Connections | ours ÷ tower-sessions (req/s) | ours ≥ 1.3 × tower-sessions | ours ÷ always_save | ours ÷ floor | floor ÷ tower-sessions | floor (ours) ÷ floor (redis-rs) | A/A (no layer, again ÷ no layer) |\n\
         |---|---|---|---|---|---|---|---|"
    );
    let extra: BTreeMap<u32, &LoadExtra> =
        s.load_extra.iter().map(|e| (e.connections, e)).collect();
    for r in &s.load_ratios {
        let e = extra.get(&r.connections);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.connections,
            fmt(r.ours_to_tower_sessions.as_ref(), 2, "×"),
            e.map_or("–", |e| e.verdict.as_str()),
            fmt(r.ours_to_always_save.as_ref(), 2, "×"),
            fmt(e.and_then(|e| e.ours_to_floor.as_ref()), 2, "×"),
            fmt(r.floor_to_tower_sessions.as_ref(), 2, "×"),
            fmt(r.floor_to_redis_rs_floor.as_ref(), 2, "×"),
            fmt(e.and_then(|e| e.a_a.as_ref()), 2, "×"),
        );
    }
    let _ = writeln!(
        md,
        "\n| App | Connections | Requests/s | p50 µs | p99 µs | p99.9 µs | Errors (all rounds) | Server CPU µs/req | Redis CPU µs/req |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for r in &s.load {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.app,
            r.connections,
            fmt(r.requests_per_sec.as_ref(), 0, ""),
            fmt(r.p50_us.as_ref(), 0, ""),
            fmt(r.p99_us.as_ref(), 0, ""),
            fmt(r.p999_us.as_ref(), 0, ""),
            r.errors,
            fmt(r.server_cpu_us.as_ref(), 1, ""),
            fmt(r.redis_cpu_us.as_ref(), 1, ""),
        );
    }
    let _ = writeln!(md, "\nTail latency of the HTTP read on {}:\n", s.title);
    tail_table(md, &s.tail);
}
