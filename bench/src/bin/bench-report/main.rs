//! Writes BENCHMARKS.md, BENCHMARKS.json and docs/latency.svg from one run of
//! `scripts/bench.sh`: `target/bench/latency.json` (bench-latency), `target/bench/load.json`
//! (bench-load), `target/bench/growth.json` (bench-growth) and Criterion's estimates of the
//! layer's CPU cost under `$CRITERION_HOME` (default `target/criterion`). Every figure comes from those files; nothing is typed in.
//!
//! Figures are medians over rounds with their min–max spread. A ratio is taken within each
//! round (both sides ran seconds apart), then its median over rounds; a target is met only if
//! that median meets it, and the table shows in how many rounds it did, so a marginal result
//! reads as one.
//!
//! `cargo run --release -p trs-bench --bin bench-report -- --mode quick|full --command "…"`
//!
//! Modules, in the order the figures flow: `schema` (the input files and the names in them),
//! `stats` (spreads, per-round ratios), `latency` and `load` (the report's tables), `targets`
//! (met or missed, and the limit's figure), then `chart` (docs/latency.svg) and `markdown`
//! (BENCHMARKS.md); `machine` describes the machine. This file assembles the report and
//! writes the three files.

mod chart;
mod growth;
mod latency;
mod load;
mod machine;
mod markdown;
mod schema;
mod stats;
mod targets;
mod topologies;

use std::collections::BTreeMap;

use serde::Serialize;
use trs_bench::arg_value;

use crate::chart::svg;
use crate::latency::{latency, CreateLimit, FloorRow, LatencyRow};
use crate::load::{load, LoadRatios, LoadRow};
use crate::machine::machine;
use crate::markdown::markdown;
use crate::schema::{criterion_us, read_json, LatencyFile, LoadFile, MemoryRow};
use crate::stats::Spread;
use crate::targets::{targets, Target};

/// Everything the report shows, as BENCHMARKS.json holds it.
#[derive(Serialize)]
pub struct Report {
    pub mode: String,
    pub command: String,
    pub method: BTreeMap<String, serde_json::Value>,
    pub machine: BTreeMap<String, String>,
    pub targets: Vec<Target>,
    pub latency: Vec<LatencyRow>,
    pub floors: Vec<FloorRow>,
    pub create_limit: CreateLimit,
    pub no_layer_us: Option<Spread>,
    pub cpu_us_per_request: BTreeMap<String, f64>,
    pub load_ratios: Vec<LoadRatios>,
    pub load: Vec<LoadRow>,
    pub memory: Vec<MemoryRow>,
    /// `bench-memory`'s figures (`target/bench/memory.json`), if it ran.
    pub memory_in_redis: Option<serde_json::Value>,
    /// `bench-growth`'s figures (`target/bench/growth.json`), if it ran.
    pub growth: Option<growth::Growth>,
    /// Tail latency, and the TLS and Cluster runs (`topologies.rs`).
    pub topologies: topologies::Topologies,
}

fn main() {
    let mode: String = arg_value("--mode").unwrap_or_else(|| "full".into());
    let command: String = arg_value("--command").unwrap_or_else(|| "scripts/bench.sh".into());
    let latency_file: Option<LatencyFile> = read_json("target/bench/latency.json");
    let load_file: Option<LoadFile> = read_json("target/bench/load.json");
    let topologies = topologies::topologies(latency_file.as_ref(), load_file.as_ref());
    let latency = latency(latency_file.as_ref());
    let load = load(load_file.as_ref());
    let growth = growth::read("target/bench/growth.json");

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
        targets: targets(&latency, &load)
            .into_iter()
            .chain(growth::targets(growth.as_ref()))
            .chain(topologies::targets(&topologies))
            .collect(),
        latency: latency.rows,
        floors: latency.floors,
        create_limit: latency.create_limit,
        no_layer_us: latency.no_layer,
        cpu_us_per_request: cpu,
        load_ratios: load.ratios,
        load: load.rows,
        memory: load_file.map(|f| f.memory).unwrap_or_default(),
        memory_in_redis: trs_bench::memory::read("target/bench/memory.json"),
        growth,
        topologies,
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
