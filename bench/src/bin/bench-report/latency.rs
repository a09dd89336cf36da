//! The latency tables (bench-latency's rounds): per cell ours against tower-sessions, the
//! floors under a read, and create against the raw create.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::schema::{
    LatencyFile, FLOOR, FLOOR_REDIS_RS, NO_LAYER, OURS, RAW_CREATE, RAW_FLOOR, TS, TS_ALWAYS,
};
use crate::stats::{ratio, Series, Spread};

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

/// One cell: µs per library, and the ratios between them.
#[derive(Serialize)]
pub struct LatencyRow {
    pub scenario: String,
    pub size: Option<String>,
    /// µs per library.
    pub us: BTreeMap<String, Spread>,
    pub ours_to_tower_sessions: Option<Spread>,
    pub ours_to_always_save: Option<Spread>,
    pub always_save_to_tower_sessions: Option<Spread>,
}

/// One session size: our read against the floors under it.
#[derive(Serialize)]
pub struct FloorRow {
    pub size: String,
    pub us: BTreeMap<String, Spread>,
    pub read_to_floor: Option<Spread>,
    /// The floor (our connection) over the redis-rs floor (the same through redis-rs's
    /// multiplexed connection): what our own connection buys, below 1×.
    pub floor_to_redis_rs_floor: Option<Spread>,
    pub floor_to_raw_floor: Option<Spread>,
    pub ours_to_raw_floor: Option<Spread>,
    /// The physical limit of a one-round-trip request against tower-sessions' whole read:
    /// below 0.9, "ours ≤ 0.9 × tower-sessions" is out of reach for any client.
    pub raw_floor_to_tower_sessions_read: Option<Spread>,
}

/// `create` against its own physical limit, the raw create (our create's commands on a bare
/// socket, in the same rounds of the create cell).
#[derive(Serialize, Default)]
pub struct CreateLimit {
    pub us: BTreeMap<String, Spread>,
    pub raw_create_to_tower_sessions: Option<Spread>,
    pub ours_to_raw_create: Option<Spread>,
}

/// `read (small)`, or `create` for a cell without a size.
pub fn cell_label(scenario: &str, size: Option<&str>) -> String {
    size.map_or(scenario.to_string(), |s| format!("{scenario} ({s})"))
}

/// Every latency table of the report.
pub struct Latency {
    pub rows: Vec<LatencyRow>,
    pub floors: Vec<FloorRow>,
    pub create_limit: CreateLimit,
    pub no_layer: Option<Spread>,
}

/// The latency tables from bench-latency's file (empty tables without one).
pub fn latency(file: Option<&LatencyFile>) -> Latency {
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
