//! What the runners write and bench-report reads: `target/bench/latency.json`
//! (bench-latency), `target/bench/load.json` (bench-load), Criterion's estimates, and the
//! names under which those files record libraries and apps.

use serde::{Deserialize, Serialize};

// The names under which the runners record libraries (latency.json) and apps (load.json).
pub const OURS: &str = "tower-redis-session";
pub const TS: &str = "tower-sessions";
pub const TS_ALWAYS: &str = "tower-sessions always_save";
pub const UNTOUCHED: &str = "tower-redis-session, untouched route";
pub const NO_LAYER: &str = "no layer";
pub const FLOOR: &str = "floor";
pub const FLOOR_REDIS_RS: &str = "floor (redis-rs)";
pub const EXTENSION: &str = "extension only";
pub const NO_LAYER_AGAIN: &str = "no layer, again";
pub const RAW_FLOOR: &str = "raw floor";
pub const RAW_CREATE: &str = "raw create";

/// `target/bench/latency.json`: every round's median per cell and library.
#[derive(Deserialize)]
pub struct LatencyFile {
    pub rounds: usize,
    pub budget: serde_json::Value,
    pub runs: Vec<LatencyRun>,
}

#[derive(Deserialize)]
pub struct LatencyRun {
    pub round: usize,
    pub scenario: String,
    pub size: Option<String>,
    pub library: String,
    pub median_us: f64,
}

/// `target/bench/load.json`: every wrk run, and Redis memory per session.
#[derive(Deserialize)]
pub struct LoadFile {
    pub rounds: usize,
    pub seconds_per_run: u64,
    /// Where the server, wrk and redis-server ran.
    #[serde(default)]
    pub placement: String,
    pub load: Vec<LoadRun>,
    pub memory: Vec<MemoryRow>,
}

#[derive(Deserialize, Clone)]
pub struct LoadRun {
    pub round: usize,
    pub app: String,
    pub connections: u32,
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// From the wrk script's `done` hook; absent in files from before it.
    #[serde(default)]
    pub p999_us: Option<f64>,
    pub errors: u64,
    pub server_cpu_us: f64,
    pub redis_cpu_us: f64,
}

#[derive(Deserialize, Serialize)]
pub struct MemoryRow {
    pub library: String,
    pub size: String,
    pub bytes: u64,
}

/// Criterion's median of `ours/<id>`, in µs.
pub fn criterion_us(id: &str) -> Option<f64> {
    let home = std::env::var("CRITERION_HOME").unwrap_or_else(|_| "target/criterion".into());
    let text = std::fs::read_to_string(format!("{home}/ours/{id}/new/estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64().map(|ns| ns / 1e3)
}

/// The JSON at `path`, or `None` (said on stderr) if it is missing or unreadable.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &str) -> Option<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| eprintln!("{path}: {e}"))
        .ok()?;
    serde_json::from_str(&text)
        .map_err(|e| eprintln!("{path}: {e}"))
        .ok()
}
