//! The HTTP tables (bench-load's wrk rounds): per app and connection count, and the ratios
//! and CPU differences the targets and the report compare.

use serde::Serialize;

use crate::schema::{
    LoadFile, LoadRun, EXTENSION, FLOOR, FLOOR_REDIS_RS, NO_LAYER, NO_LAYER_AGAIN, OURS, TS,
    TS_ALWAYS, UNTOUCHED,
};
use crate::stats::{difference, ratio, Series, Spread};

/// One app at one connection count.
#[derive(Serialize)]
pub struct LoadRow {
    pub app: String,
    pub connections: u32,
    pub requests_per_sec: Option<Spread>,
    pub p50_us: Option<Spread>,
    pub p99_us: Option<Spread>,
    pub p999_us: Option<Spread>,
    pub errors: u64,
    pub server_cpu_us: Option<Spread>,
    pub redis_cpu_us: Option<Spread>,
}

/// Per connection count, the ratios and CPU differences between apps, within each round.
#[derive(Serialize)]
pub struct LoadRatios {
    pub connections: u32,
    pub ours_to_tower_sessions: Option<Spread>,
    pub ours_to_always_save: Option<Spread>,
    pub untouched_to_no_layer: Option<Spread>,
    /// Server CPU µs per request, ours (read) less no layer.
    pub server_cpu_over_no_layer_us: Option<Spread>,
    /// The same for the floor (one round trip through our client, no session logic), and
    /// for tower-sessions: what a one-round-trip read costs the server at all.
    pub floor_cpu_over_no_layer_us: Option<Spread>,
    pub tower_sessions_cpu_over_no_layer_us: Option<Spread>,
    /// The floor's req/s over the redis-rs floor's (the same through redis-rs's multiplexed
    /// connection), and the latter's server CPU over no layer: what our own connection buys
    /// under load.
    pub floor_to_redis_rs_floor: Option<Spread>,
    pub redis_rs_floor_cpu_over_no_layer_us: Option<Spread>,
    /// The floor's req/s over tower-sessions': the most any layer on our client could reach.
    pub floor_to_tower_sessions: Option<Spread>,
    /// The same over tower-sessions always_save.
    pub floor_to_always_save: Option<Spread>,
    /// Req/s behind a layer that only adds an extension, over no layer: the most any session
    /// layer could keep on a route that never touches the session.
    pub extension_to_no_layer: Option<Spread>,
    /// The same app as no layer on a port of its own, over no layer: what the method reads
    /// as a difference where there is none.
    pub again_to_no_layer: Option<Spread>,
    /// The same A/A for server CPU µs per request (again less no layer).
    pub again_cpu_over_no_layer_us: Option<Spread>,
    /// The untouched route over extension only (req/s): what our layer costs a route that
    /// never touches the session, against the least any session layer does.
    pub untouched_to_extension: Option<Spread>,
    /// Our read over the floor (req/s), and its server CPU less the floor's (µs): what the
    /// session logic costs over the same Redis work.
    pub ours_to_floor: Option<Spread>,
    pub server_cpu_over_floor_us: Option<Spread>,
}

/// Every HTTP table of the report.
pub struct Load {
    pub rows: Vec<LoadRow>,
    pub ratios: Vec<LoadRatios>,
}

/// The HTTP tables from bench-load's file (empty tables without one).
pub fn load(file: Option<&LoadFile>) -> Load {
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
                p999_us: Spread::of(
                    runs.iter()
                        .filter(|r| r.app == app && r.connections == c)
                        .filter_map(|r| r.p999_us)
                        .collect(),
                ),
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
                again_cpu_over_no_layer_us: cpu_over_no_layer(NO_LAYER_AGAIN),
                untouched_to_extension: rps_ratio(UNTOUCHED, EXTENSION),
                ours_to_floor: rps_ratio(OURS, FLOOR),
                server_cpu_over_floor_us: Spread::per_round(
                    &series(OURS, c, cpu),
                    &series(FLOOR, c, cpu),
                    difference,
                ),
            }
        })
        .collect();
    Load { rows, ratios }
}
