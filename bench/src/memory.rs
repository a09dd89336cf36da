//! The "Memory in Redis" section of BENCHMARKS.md, from `target/bench/memory.json`
//! (bench-memory). Every figure comes from that file.

use std::fmt::Write as _;

use serde_json::Value;

/// Our library's name in the figures.
pub const OURS: &str = "tower-redis-session";
/// tower-sessions' name in the figures.
pub const TS: &str = "tower-sessions";

const SESSION: &str = "session";
const INDEX_ZSET: &str = "user index (sorted set)";
const INDEX_HASH: &str = "user index (hash)";

/// `memory.json` at `path`, if there is one.
pub fn read(path: &str) -> Option<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| eprintln!("{path}: {e}"))
        .ok()?;
    serde_json::from_str(&text)
        .map_err(|e| eprintln!("{path}: {e}"))
        .ok()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn yes_no(met: &Value) -> &'static str {
    if met.as_bool() == Some(true) {
        "yes"
    } else {
        "**no**"
    }
}

/// The section, in Markdown (from its `## ` heading, with a blank line before it).
pub fn markdown(json: &Value) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## Memory in Redis\n\n\
         Target: **ours ≤ tower-sessions in bytes per session, for the same data**, in each case. \
         Deterministic figures (no timing). Per library and case, a fresh redis-server \
         (`{}`, `--save '' --appendonly no`); {} sessions of warm-up, then {} sessions, each \
         created by one request through the library's app (its whole tower stack, in process). \
         **MEMORY USAGE** is `MEMORY USAGE key SAMPLES 0` summed over every key, per session; \
         **used_memory** is the growth of `INFO memory` `used_memory` over the {} sessions, per \
         session: all that Redis allocated for them, including what `MEMORY USAGE` leaves out \
         (each key's entry in the expiry table, and the keyspace's bucket arrays, which double \
         at powers of two of the key count). Logged in: ours binds the session to its user \
         (`login`), which also writes the user's index, a sorted set and a hash; **one session \
         per user**, so each login has an index of its own and both index keys count in full \
         against its session (with k sessions per user, ours' index costs about 1/k of that per \
         session). tower-sessions has no user index: its app stores the user id as a session \
         value, as an application would.\n",
        json["redis"].as_str().unwrap_or("redis-server"),
        json["warmup"],
        json["sessions"],
        json["sessions"],
    );
    let _ = writeln!(
        md,
        "| Case | Data | MEMORY USAGE: ours | tower-sessions | ours ÷ tower-sessions | \
         used_memory: ours | tower-sessions | ours ÷ tower-sessions | Target met |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    let cases = json["cases"].as_array().map_or(&[][..], Vec::as_slice);
    for c in cases {
        let (ours, ts) = (&c["libraries"][OURS], &c["libraries"][TS]);
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {:.2}× | {:.0} | {:.0} | {:.2}× | {} |",
            c["case"].as_str().unwrap_or("?"),
            c["data"].as_str().unwrap_or("?"),
            num(&ours["memory_usage_per_session"]),
            num(&ts["memory_usage_per_session"]),
            num(&c["memory_usage_ratio"]),
            num(&ours["used_memory_per_session"]),
            num(&ts["used_memory_per_session"]),
            num(&c["used_memory_ratio"]),
            yes_no(&c["met"]),
        );
    }

    let _ = writeln!(
        md,
        "\n### Where the bytes go\n\n\
         `MEMORY USAGE` of one key, mean (min–max) over the run; ours' session hash taken apart \
         by copies of one session under a name of the same length, each measured once any \
         incremental rehash of its hash table is over (a session as created may be in the \
         middle of one, with two bucket arrays, until its first reads). \"Id as 16 bytes\" stores the public id as its 16 \
         bytes instead of its 36-character text, and \"listpack\" raises \
         `hash-max-listpack-value` so that the hash keeps Redis' compact encoding: proposals \
         measured, not the format.\n\n\
         | Case | Ours: session (encoding, fields) | user index (sorted set + hash) | metadata fields (name + value bytes) | copy | without metadata | id as 16 bytes | listpack | listpack, id as 16 bytes | tower-sessions: session (encoding, value bytes) |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    for c in cases {
        let (ours, ts) = (&c["libraries"][OURS], &c["libraries"][TS]);
        let session = &ours["by_kind"][SESSION];
        let p = &ours["probes"];
        let index = match (
            ours["by_kind"].get(INDEX_ZSET),
            ours["by_kind"].get(INDEX_HASH),
        ) {
            (Some(z), Some(h)) => format!(
                "{:.0} + {:.0} = {:.0}",
                num(&z["memory_usage_mean"]),
                num(&h["memory_usage_mean"]),
                num(&z["memory_usage_mean"]) + num(&h["memory_usage_mean"])
            ),
            _ => "–".into(),
        };
        let metadata = p["metadata"].as_object().map_or("?".into(), |m| {
            m.iter()
                .map(|(name, sizes)| format!("`{name}` {}+{}", sizes[0], sizes[1]))
                .collect::<Vec<_>>()
                .join(", ")
        });
        let ts_session = &ts["by_kind"][SESSION];
        let _ = writeln!(
            md,
            "| {} | {} ({}, {}) | {} | {} | {} | {} | {} | {} | {} | {:.0} ({}, {}) |",
            c["case"].as_str().unwrap_or("?"),
            mean_range(session),
            session["encoding"].as_str().unwrap_or("?"),
            session["length"],
            index,
            metadata,
            p["copy"],
            p["without_metadata"],
            p["id_16_bytes"],
            p["listpack"],
            p["listpack_id_16_bytes"],
            num(&ts_session["memory_usage_mean"]),
            ts_session["encoding"].as_str().unwrap_or("?"),
            ts["value_bytes"],
        );
    }

    let _ = writeln!(md, "\n### Why\n");
    for c in cases {
        let _ = writeln!(md, "{}", explain(c));
    }
    md
}

/// A key kind's mean `MEMORY USAGE`, with its range when keys differ.
fn mean_range(kind: &Value) -> String {
    let (min, max) = (&kind["memory_usage_min"], &kind["memory_usage_max"]);
    if min == max {
        format!("{:.0}", num(&kind["memory_usage_mean"]))
    } else {
        format!("{:.0} ({min}–{max})", num(&kind["memory_usage_mean"]))
    }
}

/// What makes ours' figure in one case, in a sentence or three.
fn explain(c: &Value) -> String {
    let (ours, ts) = (&c["libraries"][OURS], &c["libraries"][TS]);
    let session = &ours["by_kind"][SESSION];
    let p = &ours["probes"];
    let ts_bytes = num(&ts["by_kind"][SESSION]["memory_usage_mean"]);
    let mut why = Vec::new();
    if session["encoding"] == "hashtable" {
        why.push(format!(
            "its values (up to {} bytes as JSON) are over `hash-max-listpack-value` ({}), so \
             Redis keeps the hash as a hash table (an allocation per field and per value, a \
             bucket array): {} bytes for the settled copy ({} as created), {} with the listpack \
             encoding allowed, against {:.0} for tower-sessions' one string",
            p["longest_value"],
            p["hash_max_listpack_value"],
            p["copy"],
            mean_range(session),
            p["listpack"],
            ts_bytes
        ));
    }
    let metadata = num(&p["copy"]) - num(&p["without_metadata"]);
    if metadata > 0.0 {
        why.push(format!(
            "the metadata fields (creation time, public id as 36 characters{}) cost {metadata:.0} \
             bytes of the hash; with the public id as 16 bytes the hash would cost {} ({} with \
             the listpack encoding)",
            if c["logged_in"] == true { ", user" } else { "" },
            p["id_16_bytes"],
            p["listpack_id_16_bytes"],
        ));
    } else {
        why.push(format!(
            "the metadata fields cost nothing here, the allocations rounded up to the same \
             size classes (jemalloc) with them or without: {} bytes either way",
            p["copy"]
        ));
    }
    if let (Some(z), Some(h)) = (
        ours["by_kind"].get(INDEX_ZSET),
        ours["by_kind"].get(INDEX_HASH),
    ) {
        why.push(format!(
            "the user's index is two more keys ({:.0} + {:.0} bytes, names of {:.0} bytes, each \
             with its own object, dictionary entry and expiry), which tower-sessions has no \
             counterpart of",
            num(&z["memory_usage_mean"]),
            num(&h["memory_usage_mean"]),
            num(&z["name_bytes"]),
        ));
    }
    format!(
        "- **{}**: ours {:.0} bytes against {:.0} ({:.2}×), target {}. {}.",
        c["case"].as_str().unwrap_or("?"),
        num(&ours["memory_usage_per_session"]),
        num(&ts["memory_usage_per_session"]),
        num(&c["memory_usage_ratio"]),
        if c["met"] == true { "met" } else { "missed" },
        capitalize(&why.join("; "))
    )
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or(String::new(), |first| {
        first.to_uppercase().collect::<String>() + chars.as_str()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_a_case() {
        let json = serde_json::json!({
            "redis": "Redis server v=7.0.15", "sessions": 10, "warmup": 1,
            "cases": [{
                "case": "small, anonymous", "data": "1 key", "logged_in": false,
                "memory_usage_ratio": 1.1, "used_memory_ratio": 1.05, "met": false,
                "libraries": {
                    "tower-redis-session": {
                        "memory_usage_per_session": 152.0, "used_memory_per_session": 224.0,
                        "by_kind": {"session": {"memory_usage_mean": 152.0, "encoding": "listpack",
                                                "length": 3, "name_bytes": 30.0}},
                        "probes": {"metadata": {"\"\\u0000id\"": [3, 36]}, "copy": 152,
                                   "without_metadata": 104, "id_16_bytes": 136, "listpack": 152,
                                   "listpack_id_16_bytes": 136, "longest_value": 36,
                                   "hash_max_listpack_value": 64}
                    },
                    "tower-sessions": {
                        "memory_usage_per_session": 136.0, "used_memory_per_session": 208.0,
                        "value_bytes": 49,
                        "by_kind": {"session": {"memory_usage_mean": 136.0, "encoding": "raw"}}
                    }
                }
            }]
        });
        let md = super::markdown(&json);
        assert!(md.contains("## Memory in Redis"), "{md}");
        assert!(
            md.contains("| small, anonymous | 1 key | 152 | 136 | 1.10× |"),
            "{md}"
        );
        assert!(md.contains("target missed"), "{md}");
    }
}
