//! Running wrk and reading its report, for the HTTP runners (bench-load, bench-growth).

use crate::placement::Placement;

/// `1.23ms` → 1230.0 µs.
pub fn micros(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        _ => return None,
    })
}

/// One wrk run of `seconds` at `connections` against `http://{addr}{path}` with `script`
/// (from the load generator's CPU): requests/s, p50, p99 and p99.9 (µs; p99.9 from the
/// script's `done` hook, 0 without one), and errors (non-2xx answers and socket errors).
pub fn wrk(
    placement: &Placement,
    addr: std::net::SocketAddr,
    script: &str,
    connections: u32,
    seconds: u64,
    path: &str,
) -> (f64, f64, f64, f64, u64) {
    let threads = connections.min(2);
    let out = placement
        .load_command("wrk")
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "--latency", "--timeout", "5s"])
        .args(["-s", script])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rps = 0.0;
    let (mut p50, mut p99, mut p999, mut errors) = (0.0, 0.0, 0.0, 0);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => rps = n.parse().unwrap_or(0.0),
            ["50%", t] => p50 = micros(t).unwrap_or(0.0),
            ["99%", t] => p99 = micros(t).unwrap_or(0.0),
            ["trs-latency", "p99.9", us] => p999 = us.parse().unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", n] => errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    assert!(
        rps > 0.0,
        "wrk printed no result:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (rps, p50, p99, p999, errors)
}
