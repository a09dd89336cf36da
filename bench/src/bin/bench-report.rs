//! Writes BENCHMARKS.md, BENCHMARKS.json and docs/latency.svg from one run of
//! `scripts/bench.sh`: Criterion's estimates under `target/criterion/` and
//! `target/bench/load.json`. Every figure comes from those files; nothing is typed in.
//!
//! `cargo run --release -p trs-bench --bin bench-report -- --mode quick|full --command "…"`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde::Serialize;
use serde_json::Value;

const GROUPS: [(&str, &str); 3] = [
    ("ours", "tower-redis-session"),
    ("tower-sessions", "tower-sessions"),
    ("tower-sessions-always-save", "tower-sessions always_save"),
];

/// Scenarios in report order: (criterion id stem, label, sized?).
const SCENARIOS: [(&str, &str, bool); 10] = [
    ("no-layer", "(a) no session layer", false),
    ("floor", "(b) floor: load by hand, own connection", true),
    ("floor-direct", "(b') floor call alone, no router", true),
    ("read", "(c) read a value", true),
    ("write", "(d) write a value", true),
    ("create", "(e) create a session", false),
    ("regenerate", "(f) regenerate the id", true),
    ("untouched", "(g) cookie, session never touched", true),
    ("counter", "(h) counter", true),
    ("memory-read", "read, in-process backend", false),
];

/// Median latency in µs of `group/id`, if that benchmark ran.
fn median_us(group: &str, id: &str) -> Option<f64> {
    let path = format!("target/criterion/{group}/{id}/new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"]
        .as_f64()
        .map(|ns| ns / 1000.0)
}

#[derive(Serialize)]
struct Latency {
    scenario: String,
    size: Option<String>,
    /// Median µs per library label.
    median_us: BTreeMap<String, f64>,
    ratio_to_floor: Option<f64>,
    ratio_to_tower_sessions: Option<f64>,
    ratio_to_tower_sessions_always_save: Option<f64>,
}

#[derive(Serialize)]
struct Target {
    target: String,
    measured: String,
    met: bool,
}

#[derive(Serialize)]
struct Report {
    mode: String,
    command: String,
    machine: BTreeMap<String, String>,
    targets: Vec<Target>,
    latency: Vec<Latency>,
    cpu_us_per_request: BTreeMap<String, f64>,
    load: Value,
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

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{r:.2}×"))
}

fn fmt_us(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1}"))
}

fn latency() -> Vec<Latency> {
    let mut rows = Vec::new();
    for (stem, label, sized) in SCENARIOS {
        let sizes: &[Option<&str>] = if sized {
            &[Some("small"), Some("large")]
        } else {
            &[None]
        };
        for size in sizes {
            let id = size.map_or(stem.to_string(), |s| format!("{stem}-{s}"));
            let mut median = BTreeMap::new();
            for (group, lib) in GROUPS {
                if let Some(v) = median_us(group, &id) {
                    median.insert(lib.to_string(), v);
                }
            }
            if median.is_empty() {
                continue;
            }
            let ours = median.get("tower-redis-session").copied();
            let floor = median_us("ours", &format!("floor-{}", size.unwrap_or("small")));
            rows.push(Latency {
                scenario: label.to_string(),
                size: size.map(str::to_string),
                ratio_to_floor: ratio(ours, floor),
                ratio_to_tower_sessions: ratio(ours, median.get("tower-sessions").copied()),
                ratio_to_tower_sessions_always_save: ratio(
                    ours,
                    median.get("tower-sessions always_save").copied(),
                ),
                median_us: median,
            });
        }
    }
    rows
}

fn rps(load: &Value, app: &str, connections: u64) -> Option<f64> {
    load["load"].as_array()?.iter().find_map(|r| {
        (r["app"] == app && r["connections"] == connections)
            .then(|| r["requests_per_sec"].as_f64())
            .flatten()
    })
}

fn memory_bytes(load: &Value, library: &str, size: &str) -> Option<f64> {
    load["memory"].as_array()?.iter().find_map(|r| {
        (r["library"] == library && r["size"] == size)
            .then(|| r["bytes"].as_f64())
            .flatten()
    })
}

fn targets(load: &Value) -> Vec<Target> {
    let mut t = Vec::new();
    let mut check = |target: &str, value: Option<f64>, limit: f64, at_most: bool, unit: &str| {
        let met = value.is_some_and(|v| if at_most { v <= limit } else { v >= limit });
        t.push(Target {
            target: target.to_string(),
            measured: value.map_or("not measured".into(), |v| format!("{v:.2}{unit}")),
            met,
        });
    };
    for size in ["small", "large"] {
        let floor = median_us("ours", &format!("floor-{size}"));
        let read = median_us("ours", &format!("read-{size}"));
        let write = median_us("ours", &format!("write-{size}"));
        check(
            &format!("read ≤ 1.10 × floor ({size} session)"),
            ratio(read, floor),
            1.10,
            true,
            "×",
        );
        check(
            &format!("write ≤ 2.2 × floor ({size} session)"),
            ratio(write, floor),
            2.2,
            true,
            "×",
        );
    }
    let untouched = ratio(
        rps(load, "tower-redis-session, untouched route", 64),
        rps(load, "no layer", 64),
    );
    check(
        "untouched route within 5 % of no layer (HTTP throughput, 64 connections)",
        untouched,
        0.95,
        false,
        "×",
    );
    let ours = rps(load, "tower-redis-session", 64);
    check(
        "throughput at 64 connections ≥ 1.8 × tower-sessions always_save",
        ratio(ours, rps(load, "tower-sessions always_save", 64)),
        1.8,
        false,
        "×",
    );
    check(
        "throughput at 64 connections ≥ 1.0 × tower-sessions default",
        ratio(ours, rps(load, "tower-sessions", 64)),
        1.0,
        false,
        "×",
    );
    for size in ["small", "large"] {
        check(
            &format!("Redis memory per session ≤ tower-sessions' ({size} session)"),
            ratio(
                memory_bytes(load, "tower-redis-session", size),
                memory_bytes(load, "tower-sessions", size),
            ),
            1.0,
            true,
            "×",
        );
    }
    t
}

/// Horizontal bars: one group per scenario row, one bar per library.
fn svg(rows: &[Latency]) -> String {
    let libs = [
        "tower-redis-session",
        "tower-sessions",
        "tower-sessions always_save",
    ];
    let colors = ["#2b6cb0", "#dd6b20", "#9c4221"];
    let rows: Vec<&Latency> = rows
        .iter()
        .filter(|r| !r.scenario.contains("floor call alone") && !r.scenario.contains("in-process"))
        .collect();
    let max = rows
        .iter()
        .flat_map(|r| r.median_us.values())
        .fold(1.0f64, |a, &b| a.max(b));
    let (label_w, bar_w, bar_h, gap) = (300.0, 520.0, 9.0, 10.0);
    let row_h = bar_h * 3.0 + gap;
    let height = 60.0 + row_h * rows.len() as f64 + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="12">"#,
        label_w + bar_w + 90.0
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">Median latency per request, µs (lower is better)</text>"#
    );
    for (i, (lib, color)) in libs.iter().zip(colors).enumerate() {
        let x = 10.0 + i as f64 * 230.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="32" width="12" height="12" fill="{color}"/><text x="{}" y="43">{lib}</text>"#,
            x + 16.0
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let y = 60.0 + i as f64 * row_h;
        let label = match &row.size {
            Some(s) => format!("{} — {s}", row.scenario),
            None => row.scenario.clone(),
        };
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + bar_h * 1.8,
            label.replace('&', "&amp;").replace('<', "&lt;")
        );
        let bars = libs
            .iter()
            .zip(colors)
            .filter_map(|(lib, c)| Some((row.median_us.get(*lib)?, c)));
        for (j, (v, color)) in bars.enumerate() {
            let w = (v / max * bar_w).max(1.0);
            let by = y + j as f64 * bar_h;
            let _ = writeln!(
                out,
                r#"<rect x="{label_w}" y="{by}" width="{w:.1}" height="{}" fill="{color}"/><text x="{:.1}" y="{}" font-size="10">{v:.1}</text>"#,
                bar_h - 1.0,
                label_w + w + 4.0,
                by + bar_h - 1.5
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `{}` ({} mode). Every figure below comes from that run; none is typed in. \
         Latencies are Criterion medians through the real tower stack (no sockets) against a \
         redis-server on loopback; throughput is wrk over real HTTP on loopback.\n",
        report.command, report.mode
    );
    let _ = writeln!(md, "## Machine\n\n| | |\n|---|---|");
    for (k, v) in &report.machine {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(
        md,
        "\n## Targets\n\n| Target | Measured | Met |\n|---|---|---|"
    );
    for t in &report.targets {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            t.target,
            t.measured,
            if t.met { "yes" } else { "**no**" }
        );
    }
    let _ = writeln!(
        md,
        "\n## Latency per request (µs, median)\n\n![latency per scenario](docs/latency.svg)\n\n\
         Small session: 3 short fields; large: 50 fields, about 4 KB. The floor is a request on \
         the same router without the session layer whose handler sends our load pipeline \
         (`HGETALL` + `PEXPIRE`) by hand on the bench's own multiplexed connection: one round trip, the least \
         a session read can cost. tower-sessions 0.14 with tower-sessions-redis-store 0.16 runs in \
         the same process against the same redis-server; its default mode does not slide expiry \
         on reads, `always_save` does.\n\n\
         | Scenario | Size | ours | tower-sessions | always_save | ours ÷ floor | ours ÷ tower-sessions | ours ÷ always_save |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for r in &report.latency {
        let get = |lib: &str| r.median_us.get(lib).copied();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.size.as_deref().unwrap_or("–"),
            fmt_us(get("tower-redis-session")),
            fmt_us(get("tower-sessions")),
            fmt_us(get("tower-sessions always_save")),
            fmt_ratio(r.ratio_to_floor),
            fmt_ratio(r.ratio_to_tower_sessions),
            fmt_ratio(r.ratio_to_tower_sessions_always_save),
        );
    }
    let _ = writeln!(
        md,
        "\n## CPU cost of the layer\n\nOn the in-process backend (no I/O), what the layer adds to \
         a request over the same router without it (µs, median):\n\n| Request | µs |\n|---|---|"
    );
    for (k, v) in &report.cpu_us_per_request {
        let _ = writeln!(md, "| {k} | {v:.2} |");
    }
    let load = &report.load;
    let _ = writeln!(
        md,
        "\n## Throughput over HTTP\n\nwrk, {} s per run, every request carrying one of 256 session \
         cookies in turn; `GET /read` reads one value from the session. The server, Redis and wrk \
         share the machine's cores. CPU per request is the CPU time of the server process and of \
         redis-server during the run, divided by the requests served.\n\n\
         | App | Connections | Requests/s | p50 µs | p99 µs | Errors | Server CPU µs/req | Redis CPU µs/req |\n\
         |---|---|---|---|---|---|---|---|",
        load["seconds_per_run"]
    );
    for r in load["load"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {:.1} | {:.1} |",
            r["app"].as_str().unwrap_or(""),
            r["connections"],
            r["requests_per_sec"].as_f64().unwrap_or(0.0),
            r["p50_us"].as_f64().unwrap_or(0.0),
            r["p99_us"].as_f64().unwrap_or(0.0),
            r["errors"],
            r["server_cpu_us"].as_f64().unwrap_or(0.0),
            r["redis_cpu_us"].as_f64().unwrap_or(0.0),
        );
    }
    let _ = writeln!(
        md,
        "\n## Redis memory per session\n\n`MEMORY USAGE` of one session with the same content, \
         each in a fresh redis-server. Redis keeps a hash compact (listpack) only while every \
         value fits in `hash-max-listpack-value` bytes (64 by default); the large session's \
         values are about 80 bytes.\n\n| Library | Size | Bytes |\n|---|---|---|"
    );
    for r in load["memory"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            r["library"].as_str().unwrap_or(""),
            r["size"].as_str().unwrap_or(""),
            r["bytes"]
        );
    }
    md
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let mode = arg("--mode").unwrap_or_else(|| "full".into());
    let command = arg("--command").unwrap_or_else(|| "scripts/bench.sh".into());
    let load: Value = std::fs::read_to_string("target/bench/load.json")
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let latency = latency();
    let mut cpu = BTreeMap::new();
    let base = median_us("ours", "no-layer");
    for (id, label) in [
        ("memory-read", "read a value"),
        ("memory-untouched", "cookie, session never touched"),
    ] {
        if let (Some(v), Some(b)) = (median_us("ours", id), base) {
            cpu.insert(label.to_string(), v - b);
        }
    }
    let report = Report {
        mode,
        command,
        machine: machine(),
        targets: targets(&load),
        latency,
        cpu_us_per_request: cpu,
        load,
    };
    std::fs::create_dir_all("docs").expect("docs/");
    std::fs::write(Path::new("docs/latency.svg"), svg(&report.latency)).expect("svg");
    std::fs::write("BENCHMARKS.md", markdown(&report)).expect("BENCHMARKS.md");
    let json = serde_json::to_string_pretty(&report).expect("json");
    std::fs::write("BENCHMARKS.json", json + "\n").expect("BENCHMARKS.json");
    for t in &report.targets {
        eprintln!(
            "{} {}: {}",
            if t.met { "met " } else { "MISS" },
            t.target,
            t.measured
        );
    }
}
