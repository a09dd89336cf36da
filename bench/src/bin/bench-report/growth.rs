//! The "Growth" section (issue 30), from `target/bench/growth.json` (bench-growth): read
//! latency and HTTP read throughput with a large keyspace against 1,000 sessions, the A/A
//! control (1,000 sessions twice) that gives the method's resolution, and listing and
//! "end all" over one user's index. Every figure comes from that file.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::stats::{ratio, within_noise, Series, Spread};
use crate::targets::{target, Target};

/// The servers' names in growth.json.
const SMALL: &str = "1k";
const AGAIN: &str = "1k, again";

/// The A/A control's name in the targets table.
const AA: &str = "A/A (1k, again ÷ 1k)";

/// Listing and "end all" are bounded if they take at most this per index entry (10 s for
/// 100,000 entries).
const BOUND_US_PER_ENTRY: f64 = 100.0;

/// A ratio's verdict against its limit and the A/A control's spread.
#[derive(Serialize, Clone)]
pub struct Verdict {
    pub ratio: Option<Spread>,
    /// The same ratio between two servers of the same size: 1× in truth.
    pub a_a: Option<Spread>,
    pub limit: f64,
    pub at_most: bool,
    /// The largest distance from 1× of any A/A round: what the method reads as a difference
    /// where there is none.
    pub noise: Option<f64>,
    /// "met", "missed, within noise" or "missed".
    pub verdict: String,
}

fn verdict(ratio: Option<Spread>, a_a: Option<Spread>, limit: f64, at_most: bool) -> Verdict {
    let noise = a_a.as_ref().map(Spread::noise);
    let verdict = match &ratio {
        None => "not measured",
        Some(s) if (at_most && s.median <= limit) || (!at_most && s.median >= limit) => "met",
        Some(s) if noise.is_some_and(|n| within_noise(s.median, limit, n)) => {
            "missed, within noise"
        }
        Some(_) => "missed",
    };
    Verdict {
        ratio,
        a_a,
        limit,
        at_most,
        noise,
        verdict: verdict.into(),
    }
}

/// One timed index operation.
#[derive(Serialize, Clone)]
pub struct IndexRow {
    pub operation: String,
    pub entries: usize,
    /// Seconds over the runs at this size.
    pub seconds: Option<Spread>,
    pub us_per_entry: Option<f64>,
    pub slowest_command_us: u64,
    pub slowest_command: String,
}

/// The section's figures, as BENCHMARKS.json holds them.
#[derive(Serialize)]
pub struct Growth {
    pub mode: String,
    pub big: u64,
    pub big_name: String,
    pub read_sessions_big: u64,
    pub placement: String,
    pub servers: Value,
    pub latency_rounds: u64,
    pub latency_us: Vec<(String, Option<Spread>)>,
    pub latency: Verdict,
    pub load_rounds: u64,
    pub load_seconds_per_run: u64,
    pub load_connections: u64,
    pub requests_per_sec: Vec<(String, Option<Spread>)>,
    pub load_errors: u64,
    pub throughput: Verdict,
    pub index_entries: u64,
    pub logins_per_second: f64,
    pub index: Vec<IndexRow>,
    pub bound_us_per_entry: f64,
}

/// `1000000` → `1,000,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// `field` of `runs` of `server`, by round.
fn series(runs: &Value, server: &str, field: &str) -> Series {
    runs.as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter(|r| r["server"] == server)
        .filter_map(|r| Some((r["round"].as_u64()? as usize, r[field].as_f64()?)))
        .collect()
}

/// The figures of `growth.json` at `path`; `None` (said on stderr) if it is missing.
pub fn read(path: &str) -> Option<Growth> {
    let json: Value = crate::schema::read_json(path)?;
    let big_name = json["big_name"].as_str().unwrap_or("big").to_string();
    let servers = [SMALL, AGAIN, big_name.as_str()];
    let lat = &json["latency"]["runs"];
    let lat_series = |s: &str| series(lat, s, "median_us");
    let latency_us = servers
        .iter()
        .map(|s| {
            (
                s.to_string(),
                Spread::of(lat_series(s).into_values().collect()),
            )
        })
        .collect();
    let latency = verdict(
        Spread::per_round(&lat_series(&big_name), &lat_series(SMALL), ratio),
        Spread::per_round(&lat_series(AGAIN), &lat_series(SMALL), ratio),
        1.05,
        true,
    );
    let load = &json["load"]["runs"];
    let rps = |s: &str| series(load, s, "requests_per_sec");
    let requests_per_sec = servers
        .iter()
        .map(|s| (s.to_string(), Spread::of(rps(s).into_values().collect())))
        .collect();
    let throughput = verdict(
        Spread::per_round(&rps(&big_name), &rps(SMALL), ratio),
        Spread::per_round(&rps(AGAIN), &rps(SMALL), ratio),
        0.95,
        false,
    );
    let load_errors = load
        .as_array()
        .map_or(0, |runs| runs.iter().map(|r| u(&r["errors"])).sum());

    // Timed operations, grouped by operation and size, in the order they ran.
    let mut index: Vec<IndexRow> = Vec::new();
    let mut seconds: Vec<Vec<f64>> = Vec::new();
    for t in json["index"]["timed"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
    {
        let (op, entries) = (
            t["operation"].as_str().unwrap_or("?"),
            u(&t["entries"]) as usize,
        );
        let s = t["seconds"].as_f64().unwrap_or(f64::NAN);
        let (us, command) = (
            u(&t["slowest_command_us"]),
            t["slowest_command"].as_str().unwrap_or(""),
        );
        match index
            .iter()
            .position(|r| r.operation == op && r.entries == entries)
        {
            Some(i) => {
                seconds[i].push(s);
                if us > index[i].slowest_command_us {
                    index[i].slowest_command_us = us;
                    index[i].slowest_command = command.into();
                }
            }
            None => {
                index.push(IndexRow {
                    operation: op.into(),
                    entries,
                    seconds: None,
                    us_per_entry: None,
                    slowest_command_us: us,
                    slowest_command: command.into(),
                });
                seconds.push(vec![s]);
            }
        }
    }
    for (row, s) in index.iter_mut().zip(seconds) {
        row.seconds = Spread::of(s);
        row.us_per_entry = row
            .seconds
            .as_ref()
            .filter(|_| row.entries > 0)
            .map(|s| s.median * 1e6 / row.entries as f64);
    }
    Some(Growth {
        mode: json["mode"].as_str().unwrap_or("?").into(),
        big: u(&json["big"]),
        big_name,
        read_sessions_big: u(&json["read_sessions_big"]),
        placement: json["placement"].as_str().unwrap_or("not recorded").into(),
        servers: json["servers"].clone(),
        latency_rounds: u(&json["latency"]["rounds"]),
        latency_us,
        latency,
        load_rounds: u(&json["load"]["rounds"]),
        load_seconds_per_run: u(&json["load"]["seconds_per_run"]),
        load_connections: u(&json["load"]["connections"]),
        requests_per_sec,
        load_errors,
        throughput,
        index_entries: u(&json["index"]["entries"]),
        logins_per_second: json["index"]["logins_per_second"]
            .as_f64()
            .unwrap_or(f64::NAN),
        index,
        bound_us_per_entry: BOUND_US_PER_ENTRY,
    })
}

/// The growth targets (not measured, without growth.json).
pub fn targets(g: Option<&Growth>) -> Vec<Target> {
    let big = g.map_or("1M".into(), |g| g.big_name.clone());
    let entries = g.map_or(100_000, |g| g.index_entries as usize);
    let bound_s = entries as f64 * BOUND_US_PER_ENTRY / 1e6;
    let of = |f: fn(&Growth) -> &Verdict| g.map(f);
    let latency = of(|g| &g.latency);
    let throughput = of(|g| &g.throughput);
    let timed = |op: &str| {
        g.and_then(|g| {
            g.index
                .iter()
                .find(|r| r.operation == op && r.entries == entries)
                .and_then(|r| r.seconds.clone())
        })
    };
    vec![
        target(
            format!("read latency at {big} sessions ≤ 1.05 × at 1k"),
            latency.and_then(|v| v.ratio.clone()),
            1.05,
            true,
            "×",
        )
        .bounded_by(AA, latency.and_then(|v| v.a_a.clone())),
        target(
            format!("HTTP read req/s at {big} sessions ≥ 0.95 × at 1k"),
            throughput.and_then(|v| v.ratio.clone()),
            0.95,
            false,
            "×",
        )
        .bounded_by(AA, throughput.and_then(|v| v.a_a.clone())),
        target(
            format!(
                "list a user's {} index entries: ≤ {bound_s} s",
                thousands(entries as u64)
            ),
            timed("list"),
            bound_s,
            true,
            " s",
        ),
        target(
            format!(
                "\"end all\" over a user's {} index entries: ≤ {bound_s} s",
                thousands(entries as u64)
            ),
            timed("end all"),
            bound_s,
            true,
            " s",
        ),
    ]
}

fn spread(s: Option<&Spread>, digits: usize, unit: &str) -> String {
    s.map_or("–".into(), |s| {
        format!(
            "{:.digits$}{unit} ({:.digits$}–{:.digits$})",
            s.median, s.min, s.max
        )
    })
}

fn verdict_text(v: &Verdict) -> String {
    let noise = v.noise.map_or(String::new(), |n| {
        format!("; the A/A reads up to ±{:.1} %", n * 100.0)
    });
    let verdict = if v.verdict == "met" {
        "met".to_string()
    } else {
        format!("**{}**", v.verdict)
    };
    format!("{verdict}{noise}")
}

/// The section, from its `## ` heading.
pub fn markdown(md: &mut String, g: Option<&Growth>) {
    let _ = writeln!(md, "\n## Growth\n");
    let Some(g) = g else {
        let _ = writeln!(
            md,
            "Not measured in this run: `target/bench/growth.json` (bench-growth) is missing."
        );
        return;
    };
    let big = &g.big_name;
    let _ = writeln!(
        md,
        "Does a read cost more when Redis holds {} sessions than when it holds 1,000, and do a \
         user's listing and \"end all\" over {} index entries finish in bounded time \
         (bench-growth, {} mode; [method](docs/BENCHMARKS-METHOD.md#growth)). Three \
         redis-servers: `1k` and `1k, again` hold 1,000 sessions each (the second is the A/A \
         control: its ratio to `1k` is 1× in truth, so its spread is the method's resolution), \
         `{big}` holds {}, all in our store's format (a hash with the creation time, the public \
         id and three small values, and an expiry). Reads walk through cookies of distinct \
         sessions: all 1,000 of a small server, {} of `{big}`, spread over its keyspace, so that \
         `{big}`'s reads find their keys cold, as reads of a large population do, while `1k` \
         keeps all of its sessions warm. A ratio is taken within each round. Placement: {}.\n",
        thousands(g.big),
        thousands(g.index_entries),
        g.mode,
        thousands(g.big),
        thousands(g.read_sessions_big),
        g.placement,
    );
    let _ = writeln!(
        md,
        "| Figure | 1k | 1k, again | {big} | {big} ÷ 1k | A/A: 1k, again ÷ 1k | Target | Verdict |\n\
         |---|---|---|---|---|---|---|---|"
    );
    let cell = |rows: &[(String, Option<Spread>)], i: usize, digits: usize| {
        spread(rows.get(i).and_then(|r| r.1.as_ref()), digits, "")
    };
    let _ = writeln!(
        md,
        "| read latency, µs (tower stack, {} rounds) | {} | {} | {} | {} | {} | ≤ 1.05× | {} |",
        g.latency_rounds,
        cell(&g.latency_us, 0, 1),
        cell(&g.latency_us, 1, 1),
        cell(&g.latency_us, 2, 1),
        spread(g.latency.ratio.as_ref(), 3, "×"),
        spread(g.latency.a_a.as_ref(), 3, "×"),
        verdict_text(&g.latency),
    );
    let _ = writeln!(
        md,
        "| HTTP read, req/s (wrk, {} connections, {} × {} s) | {} | {} | {} | {} | {} | ≥ 0.95× | {} |",
        g.load_connections,
        g.load_rounds,
        g.load_seconds_per_run,
        cell(&g.requests_per_sec, 0, 0),
        cell(&g.requests_per_sec, 1, 0),
        cell(&g.requests_per_sec, 2, 0),
        spread(g.throughput.ratio.as_ref(), 3, "×"),
        spread(g.throughput.a_a.as_ref(), 3, "×"),
        verdict_text(&g.throughput),
    );
    let misses: Vec<String> = g
        .servers
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|s| {
            format!(
                "`{}` {} keys, {} MB used, {} misses",
                s["server"].as_str().unwrap_or("?"),
                thousands(u(&s["dbsize"])),
                u(&s["used_memory"]) >> 20,
                s["keyspace_misses_during_latency"]
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "\nwrk errors over all runs: {}. The servers (`DBSIZE`, `used_memory`, and Redis' \
         `keyspace_misses` over the latency rounds: 0 means that every read found its \
         session): {}. \"Within noise\": the ratio misses its target by no more than the A/A \
         control strays from 1× in some round.\n",
        g.load_errors,
        misses.join("; ")
    );
    let _ = writeln!(
        md,
        "One user, {} logins ({:.0} logins/s through our app, 32 in flight); listing \
         (`user_sessions`) timed as the index grows, then \"end all\" (`end_user_sessions`) \
         once. Bounded means at most {} µs per entry ({} s for {} entries). \"Slowest command\" \
         is the longest single Redis command meanwhile (`SLOWLOG`, threshold 1 ms): a script \
         over every entry blocks Redis for that long.\n\n\
         | Operation | Entries | Seconds | µs per entry | Slowest Redis command |\n|---|---|---|---|---|",
        thousands(g.index_entries),
        g.logins_per_second,
        g.bound_us_per_entry,
        g.index_entries as f64 * g.bound_us_per_entry / 1e6,
        thousands(g.index_entries)
    );
    for r in &g.index {
        let slowest = if r.slowest_command_us == 0 {
            "none over 1 ms".to_string()
        } else {
            format!(
                "{:.1} ms (`{}`)",
                r.slowest_command_us as f64 / 1e3,
                r.slowest_command.replace('\0', "\\0")
            )
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {slowest} |",
            r.operation,
            thousands(r.entries as u64),
            spread(r.seconds.as_ref(), 3, ""),
            r.us_per_entry.map_or("–".into(), |u| format!("{u:.1}")),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn runs(server: &str, values: &[f64], field: &str) -> Vec<serde_json::Value> {
        values
            .iter()
            .enumerate()
            .map(|(round, v)| json!({"round": round, "server": server, field: v, "errors": 0}))
            .collect()
    }

    #[test]
    fn thousands() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn missing_file_says_so_and_targets_are_not_measured() {
        let mut md = String::new();
        super::markdown(&mut md, None);
        assert!(md.contains("## Growth") && md.contains("missing"), "{md}");
        let t = super::targets(None);
        assert_eq!(t.len(), 4);
        assert!(t.iter().all(|t| t.measured.is_none() && !t.met));
    }

    #[test]
    fn ratios_within_rounds_and_the_noise_verdict() {
        let lat = [
            runs("1k", &[100.0, 100.0, 100.0], "median_us"),
            runs("1k, again", &[104.0, 97.0, 101.0], "median_us"),
            runs("1M", &[106.0, 107.0, 105.0], "median_us"),
        ]
        .concat();
        let load = [
            runs("1k", &[1000.0, 1000.0], "requests_per_sec"),
            runs("1k, again", &[1000.0, 1010.0], "requests_per_sec"),
            runs("1M", &[800.0, 820.0], "requests_per_sec"),
        ]
        .concat();
        let file = json!({
            "mode": "quick", "big": 1000000, "big_name": "1M", "read_sessions_big": 100000,
            "placement": "p", "servers": [{"server": "1M", "dbsize": 1000000,
                "used_memory": 200u64 << 20, "keyspace_misses_during_latency": 0}],
            "latency": {"rounds": 3, "runs": lat},
            "load": {"rounds": 2, "seconds_per_run": 1, "connections": 64, "runs": load},
            "index": {"entries": 1000, "logins_per_second": 5000.0, "timed": [
                {"operation": "list", "entries": 1000, "seconds": 0.02, "slowest_command_us": 0,
                 "slowest_command": ""},
                {"operation": "list", "entries": 1000, "seconds": 0.04, "slowest_command_us": 1500,
                 "slowest_command": "EVALSHA"},
                {"operation": "end all", "entries": 1000, "seconds": 0.05, "slowest_command_us": 0,
                 "slowest_command": ""}]}
        });
        let dir = std::env::temp_dir().join(format!("growth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("growth.json");
        std::fs::write(&path, file.to_string()).unwrap();
        let g = super::read(path.to_str().unwrap()).expect("read");
        std::fs::remove_dir_all(&dir).unwrap();
        // 1.06 misses 1.05 by 1 %, less than the A/A's 4 %: within noise. Throughput 0.81
        // misses 0.95 by 15 %, more than its A/A's 1 %: missed.
        assert_eq!(g.latency.verdict, "missed, within noise");
        assert!((g.latency.ratio.as_ref().unwrap().median - 1.06).abs() < 1e-9);
        assert_eq!(g.throughput.verdict, "missed");
        assert_eq!(g.index[0].seconds.as_ref().unwrap().rounds.len(), 2);
        assert_eq!(g.index[0].slowest_command_us, 1500);
        let t = super::targets(Some(&g));
        assert!(
            !t[0].met && t[2].met && t[3].met,
            "bounded at 0.1 s for 1,000"
        );
        let mut md = String::new();
        super::markdown(&mut md, Some(&g));
        assert!(md.contains("| 1.060× (1.050–1.070) |"), "{md}");
        assert!(md.contains("holds 1,000,000 sessions"), "{md}");
        assert!(
            md.contains("| list | 1,000 | 0.030 (0.020–0.040) | 30.0 |"),
            "{md}"
        );

        // Missed by 10 %: within an A/A spread of 12 %, not of 7 %.
        let v = |a_a: Vec<f64>| {
            let ratio = crate::stats::Spread::of(vec![1.155]);
            super::verdict(ratio, crate::stats::Spread::of(a_a), 1.05, true).verdict
        };
        assert_eq!(v(vec![0.88, 1.01]), "missed, within noise");
        assert_eq!(v(vec![0.93, 1.01]), "missed");
    }
}
