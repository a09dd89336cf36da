//! A throwaway redis-server on a free loopback port: loopback only, no persistence, killed on
//! drop. Shared by the tests, the benchmarks and the benchmark workspace member.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server of our own: loopback only, no persistence, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra config arguments, e.g. `["--maxmemory", "2mb"]`.
    pub fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let mut server = Self {
            child: None,
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let dir = std::env::temp_dir();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}). Install it: `sudo apt-get install -y redis-server` \
                     (Debian/Ubuntu) or `brew install redis` (macOS)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.try_ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    fn try_ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("test connection to redis")
    }

    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.conn()).expect("redis command")
    }

    /// Calls per command since start, from `INFO commandstats` (our own INFO excluded).
    pub fn commandstats(&self) -> HashMap<String, u64> {
        let info: String = self.cmd(&["INFO", "commandstats"]);
        info.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("cmdstat_")?;
                let (name, stats) = rest.split_once(':')?;
                let calls = stats.split(',').find_map(|s| s.strip_prefix("calls="))?;
                Some((name.to_string(), calls.parse().ok()?))
            })
            .filter(|(name, _)| name != "info")
            .collect()
    }

    /// Keys in the keyspace.
    pub fn keys(&self) -> Vec<String> {
        self.cmd(&["KEYS", "*"])
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success());
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Counts of the commands a client sent (each script call is one), between two snapshots.
/// Commands that scripts run inside Redis are counted by Redis too; they are not round trips.
pub fn round_trips(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> u64 {
    ["evalsha", "eval", "unlink"]
        .iter()
        .map(|c| after.get(*c).unwrap_or(&0) - before.get(*c).unwrap_or(&0))
        .sum()
}

/// Every command Redis ran between two snapshots, including those inside scripts.
pub fn all_commands(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> u64 {
    after.values().sum::<u64>() - before.values().sum::<u64>()
}

