//! The targets: each one's figure over rounds, its limit, whether its median meets it
//! and in how many rounds, and the same figure for what bounds any implementation.

use serde::Serialize;

use crate::latency::{cell_label, Latency};
use crate::load::{Load, LoadRatios};
use crate::schema::{FLOOR, RAW_CREATE, RAW_FLOOR};
use crate::stats::Spread;

/// Connection counts the HTTP targets are stated at.
const TARGET_CONNECTIONS: [u32; 3] = [16, 64, 256];

/// One target, as the report's table and BENCHMARKS.json show it.
#[derive(Serialize)]
pub struct Target {
    pub target: String,
    /// The figure the target is about, over rounds (a ratio, or µs for CPU).
    pub measured: Option<Spread>,
    pub limit: f64,
    pub at_most: bool,
    pub unit: String,
    pub rounds_met: usize,
    pub rounds: usize,
    pub met: bool,
    /// The same figure for what bounds any implementation (the raw socket, the floor, a
    /// layer that only adds an extension), where the suite measures one: if it misses or
    /// barely meets the target too, the miss is the machine's, not the code's.
    pub limit_figure: Option<Spread>,
    pub limit_by: Option<String>,
    /// How far the A/A control (two identical apps) strays from no difference, in the
    /// target's terms (relative for a ratio, µs for CPU), where the suite runs one.
    pub noise: Option<f64>,
    /// "met", "within noise" (missed by less than the A/A's spread) or "missed".
    pub verdict: String,
}

impl Target {
    /// Whether `v` meets the limit.
    pub fn meets(&self, v: f64) -> bool {
        if self.at_most {
            v <= self.limit
        } else {
            v >= self.limit
        }
    }

    /// Gives the target the A/A control's spread: a median that misses the limit by no more
    /// than that reads "within noise", neither met nor missed.
    pub fn with_noise(mut self, noise: Option<f64>) -> Self {
        self.noise = noise;
        let within = |m: f64, n: f64| {
            if self.unit == "×" {
                crate::stats::within_noise(m, self.limit, n)
            } else {
                (m - self.limit).abs() <= n
            }
        };
        if let (false, Some(n), Some(m)) = (self.met, noise, self.measured.as_ref()) {
            if within(m.median, n) {
                self.verdict = "within noise".into();
            }
        }
        self
    }

    /// Gives the target the same figure measured for `by`, what bounds any implementation.
    pub fn bounded_by(mut self, by: &str, figure: Option<Spread>) -> Self {
        if figure.is_some() {
            self.limit_figure = figure;
            self.limit_by = Some(by.into());
        }
        self
    }
}

/// `measured` against `limit` (`at_most`, or at least): met if the median meets it.
pub(crate) fn target(
    name: String,
    measured: Option<Spread>,
    limit: f64,
    at_most: bool,
    unit: &str,
) -> Target {
    let ok = |v: f64| if at_most { v <= limit } else { v >= limit };
    let met = measured.as_ref().is_some_and(|s| ok(s.median));
    Target {
        target: name,
        met,
        verdict: if met { "met" } else { "missed" }.into(),
        noise: None,
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

/// The targets, in its order.
pub fn targets(latency: &Latency, load: &Load) -> Vec<Target> {
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
    // The A/A control's spread at `c`: how far two identical apps' ratio strays from 1, and
    // their CPU difference from 0.
    let aa = |c: u32| {
        at(c)
            .and_then(|r| r.again_to_no_layer.as_ref())
            .map(Spread::noise)
    };
    let aa_cpu = |c: u32| {
        at(c)
            .and_then(|r| r.again_cpu_over_no_layer_us.as_ref())
            .map(|s| s.max.abs().max(s.min.abs()))
    };
    // HTTP requests/s, judged against the A/A's spread as the TLS and Cluster tables are.
    for c in TARGET_CONNECTIONS {
        t.push(
            target(
                format!("HTTP read, {c} connections: ours ≥ 1.3 × tower-sessions (req/s)"),
                at(c).and_then(|r| r.ours_to_tower_sessions.clone()),
                1.3,
                false,
                "×",
            )
            .bounded_by(FLOOR, at(c).and_then(|r| r.floor_to_tower_sessions.clone()))
            .with_noise(aa(c)),
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
            .bounded_by(FLOOR, at(c).and_then(|r| r.floor_to_always_save.clone()))
            .with_noise(aa(c)),
        );
    }
    // The decided targets: (name after the connection count, figure, limit, at
    // most, unit), each at every connection count, judged against the A/A's spread too.
    type Figure = fn(&LoadRatios) -> Option<Spread>;
    let decided: [(&str, Figure, f64, bool, &str); 3] = [
        (
            "HTTP untouched route, {c} connections: ≥ 0.97 × extension only (req/s)",
            |r| r.untouched_to_extension.clone(),
            0.97,
            false,
            "×",
        ),
        (
            "HTTP read, {c} connections: ours ≥ 0.9 × floor (req/s)",
            |r| r.ours_to_floor.clone(),
            0.9,
            false,
            "×",
        ),
        (
            "server CPU per read request, {c} connections: ≤ floor's + 1.5 µs",
            |r| r.server_cpu_over_floor_us.clone(),
            1.5,
            true,
            " µs",
        ),
    ];
    for (name, figure, limit, at_most, unit) in decided {
        for c in TARGET_CONNECTIONS {
            let noise = if unit == "×" { aa(c) } else { aa_cpu(c) };
            let name = name.replace("{c}", &c.to_string());
            t.push(target(name, at(c).and_then(figure), limit, at_most, unit).with_noise(noise));
        }
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
