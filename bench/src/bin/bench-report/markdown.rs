//! The text of BENCHMARKS.md, section by section, from the report BENCHMARKS.json holds.

use std::fmt::Write as _;

use crate::schema::{FLOOR, FLOOR_REDIS_RS, OURS, RAW_CREATE, RAW_FLOOR, TS, TS_ALWAYS};
use crate::stats::Spread;
use crate::Report;

/// `median (min–max)` with `digits` decimals.
fn fmt_spread(s: Option<&Spread>, digits: usize, unit: &str) -> String {
    s.map_or("–".into(), |s| {
        format!(
            "{:.digits$}{unit} ({:.digits$}–{:.digits$})",
            s.median, s.min, s.max
        )
    })
}

/// BENCHMARKS.md, whole.
pub fn markdown(report: &Report) -> String {
    let mut md = String::new();
    intro(&mut md, report);
    targets(&mut md, report);
    latency(&mut md, report);
    floors(&mut md, report);
    limits(&mut md, report);
    cpu(&mut md, report);
    load(&mut md, report);
    crate::topologies::markdown(&mut md, &report.topologies);
    memory(&mut md, report);
    crate::growth::markdown(&mut md, report.growth.as_ref());
    machine(&mut md, report);
    md
}

/// The title, and how the run was made and its figures are read.
fn intro(md: &mut String, report: &Report) {
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
}

/// The targets table, and how many are met or missed by the limit too.
fn targets(md: &mut String, report: &Report) {
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
            match t.verdict.as_str() {
                "met" => "yes",
                "within noise" => "within noise",
                _ => "**no**",
            }
        );
    }
    let met = report.targets.iter().filter(|t| t.met).count();
    let noise = report
        .targets
        .iter()
        .filter(|t| t.verdict == "within noise")
        .count();
    let bounded = report
        .targets
        .iter()
        .filter(|t| !t.met && t.limit_figure.as_ref().is_some_and(|s| !t.meets(s.median)))
        .count();
    let _ = writeln!(
        md,
        "\n{met} of {} targets met, {noise} within noise (a median that misses its line by no \
         more than the A/A control strays: two identical apps, `no layer` and `no layer, \
         again`, in req/s or server CPU at that connection count); of the {} not met, \
         {bounded} are missed by the limit too. \
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
}

/// Latency per request, ours against tower-sessions and always_save, per cell.
fn latency(md: &mut String, report: &Report) {
    let m = &report.method;
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
}

/// The floors under a read, and the router alone.
fn floors(md: &mut String, report: &Report) {
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
}

/// The physical limits (raw floor, raw create) against tower-sessions.
fn limits(md: &mut String, report: &Report) {
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
}

/// Criterion's CPU cost of the layer.
fn cpu(md: &mut String, report: &Report) {
    let _ = writeln!(
        md,
        "\n## CPU cost of the layer\n\nCriterion, on the in-process backend (no I/O): what the \
         layer adds to a request over the same router without it (µs, Criterion's median).\n\n\
         | Request | µs |\n|---|---|"
    );
    for (k, v) in &report.cpu_us_per_request {
        let _ = writeln!(md, "| {k} | {v:.2} |");
    }
}

/// Throughput over HTTP: the ratios, what our own connection buys, every app.
fn load(md: &mut String, report: &Report) {
    let m = &report.method;
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
        "\n| App | Connections | Requests/s | p50 µs | p99 µs | p99.9 µs | Errors (all rounds) | Server CPU µs/req | Redis CPU µs/req |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for r in &report.load {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.app,
            r.connections,
            fmt_spread(r.requests_per_sec.as_ref(), 0, ""),
            fmt_spread(r.p50_us.as_ref(), 0, ""),
            fmt_spread(r.p99_us.as_ref(), 0, ""),
            fmt_spread(r.p999_us.as_ref(), 0, ""),
            r.errors,
            fmt_spread(r.server_cpu_us.as_ref(), 1, ""),
            fmt_spread(r.redis_cpu_us.as_ref(), 1, ""),
        );
    }
}

/// Redis memory per session.
fn memory(md: &mut String, report: &Report) {
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
}

/// The machine the run was on.
fn machine(md: &mut String, report: &Report) {
    let _ = writeln!(md, "\n## Machine\n\n| | |\n|---|---|");
    for (k, v) in &report.machine {
        let _ = writeln!(md, "| {k} | {v} |");
    }
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
