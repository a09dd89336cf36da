//! A throwaway redis-server on a free loopback port: loopback only, no persistence, killed on
//! drop. Shared by the tests and the benchmark workspace member.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The server the tests start: `redis-server`, or the binary `TEST_REDIS_SERVER` names (a
/// `valkey-server`, say; `scripts/test.sh` runs some suites again that way). TLS tests always
/// use `redis-server`.
pub fn server_binary() -> String {
    std::env::var("TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// A redis-server of our own: loopback only, no persistence, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    extra: Vec<String>,
    /// One lasting connection for statistics, so that reading them adds exactly one command
    /// and one socket read.
    stats: Mutex<Option<redis::Connection>>,
}

/// Counters read from `INFO`.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Calls per command, from `commandstats` (our own `INFO` excluded). Commands that scripts
    /// run inside Redis count here too.
    pub calls: HashMap<String, u64>,
    /// Socket reads Redis served (`total_reads_processed`): one per round trip of a client,
    /// however many commands it pipelined.
    pub reads: u64,
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
            stats: Mutex::new(None),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let dir = std::env::temp_dir();
        let child = Command::new(server_binary())
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

    /// Command and read counters now.
    pub fn snapshot(&self) -> Snapshot {
        let mut slot = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let conn = slot.get_or_insert_with(|| self.conn());
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .arg("commandstats")
            .query(conn)
            .expect("INFO");
        let mut snap = Snapshot::default();
        for line in info.lines() {
            if let Some(reads) = line.strip_prefix("total_reads_processed:") {
                snap.reads = reads.trim().parse().expect("reads");
            }
            let Some((name, stats)) = line
                .strip_prefix("cmdstat_")
                .and_then(|rest| rest.split_once(':'))
            else {
                continue;
            };
            let calls = stats.split(',').find_map(|s| s.strip_prefix("calls="));
            if let (Some(calls), false) = (calls, name == "info") {
                snap.calls
                    .insert(name.to_string(), calls.parse().expect("calls"));
            }
        }
        snap
    }

    /// Calls per command since start (see [`Snapshot::calls`]).
    pub fn commandstats(&self) -> HashMap<String, u64> {
        self.snapshot().calls
    }

    /// Keys in the keyspace.
    pub fn keys(&self) -> Vec<String> {
        self.cmd(&["KEYS", "*"])
    }

    /// Keys of live sessions: every key but the markers that ended sessions leave behind and
    /// the users' indexes of sessions (`<prefix>u:{..}`).
    pub fn sessions(&self) -> Vec<String> {
        self.keys()
            .into_iter()
            .filter(|k| !k.contains("u:{"))
            .filter(|k| {
                let created: Option<String> = self.cmd(&["HGET", k, ""]);
                created.as_deref() != Some("ended")
            })
            .collect()
    }

    /// Keys that hold the marker of an ended session.
    pub fn markers(&self) -> Vec<String> {
        let sessions = self.sessions();
        self.keys()
            .into_iter()
            .filter(|k| !sessions.contains(k))
            .collect()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.spawn();
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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

/// Round trips between two snapshots: socket reads, less the read of the later `INFO`.
pub fn round_trips(before: &Snapshot, after: &Snapshot) -> u64 {
    after.reads - before.reads - 1
}

/// Every command Redis ran between two snapshots, including those inside scripts, but the
/// `ECHO` that closes each request on our own connection (its tag: see `direct.rs`), which is
/// framing, not session work; [`tags`] counts those.
pub fn all_commands(before: &Snapshot, after: &Snapshot) -> u64 {
    let sum = |s: &Snapshot| s.calls.values().sum::<u64>() - s.calls.get("echo").unwrap_or(&0);
    sum(after) - sum(before)
}

/// Requests that our own connection sent between two snapshots: one tag (`ECHO`) each.
pub fn tags(before: &Snapshot, after: &Snapshot) -> u64 {
    calls(before, after, "echo")
}

/// Calls of one command between two snapshots.
pub fn calls(before: &Snapshot, after: &Snapshot, command: &str) -> u64 {
    after.calls.get(command).unwrap_or(&0) - before.calls.get(command).unwrap_or(&0)
}
