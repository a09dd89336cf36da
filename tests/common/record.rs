//! Figures for RELIABILITY.md: tests that try to break a guarantee say how hard they tried.
//! `scripts/reliability.sh` sets `RELIABILITY_OUT`; plain `cargo test` records nothing.
#![allow(dead_code, unreachable_pub)]

/// Iterations for a stress loop: `normal`, or ten times that with `RELIABILITY_SOAK=1`.
pub fn iterations(normal: usize) -> usize {
    if std::env::var_os("RELIABILITY_SOAK").is_some() {
        normal * 10
    } else {
        normal
    }
}

/// Writes `figures` (a JSON object) as `$RELIABILITY_OUT/<name>.json`, if that is set.
pub fn record(name: &str, figures: serde_json::Value) {
    let Some(dir) = std::env::var_os("RELIABILITY_OUT") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("RELIABILITY_OUT");
    let text = serde_json::to_string_pretty(&figures).expect("json");
    std::fs::write(dir.join(format!("{name}.json")), text).expect("record");
}
