//! The machine a run was on (CPU, memory, kernel, tool versions, date), for the report's
//! last table.

use std::collections::BTreeMap;
use std::process::Command;

/// The trimmed stdout of a command, or "unknown".
fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Name → value, in the report's order (by name).
pub fn machine() -> BTreeMap<String, String> {
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
