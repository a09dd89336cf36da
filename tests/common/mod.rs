//! Test harness: a throwaway redis-server on a free loopback port, a test app, and a client
//! with a one-cookie jar that drives the real tower stack.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::{
    body::Body,
    extract::Path,
    http::{header, Request, StatusCode},
    routing::get,
    Router,
};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_redis_session::{Session, SessionError, SessionStore, SessionStoreBuilder};

pub const KEY: [u8; 32] = [7; 32];

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

pub fn builder() -> SessionStoreBuilder {
    SessionStore::builder().signing_keys([KEY])
}

/// The app the tests drive: one route per session operation.
pub fn app(store: &SessionStore) -> Router {
    Router::new()
        .route("/get/{k}", get(read))
        .route("/set/{k}/{v}", get(write))
        .route("/set-int/{k}/{v}", get(write_int))
        .route("/slow-set/{ms}/{k}/{v}", get(slow_write))
        .route("/remove/{k}", get(remove))
        .route("/clear", get(clear))
        .route("/incr/{k}/{n}", get(incr))
        .route("/regenerate", get(regenerate))
        .route("/destroy", get(destroy))
        .route("/untouched", get(|| async { "no session here" }))
        .route("/keys", get(keys))
        .layer(store.layer())
}

async fn read(session: Session, Path(k): Path<String>) -> Result<String, SessionError> {
    Ok(session
        .get::<String>(&k)?
        .unwrap_or_else(|| "none".to_string()))
}

async fn write(
    session: Session,
    Path((k, v)): Path<(String, String)>,
) -> Result<&'static str, SessionError> {
    session.insert(&k, &v)?;
    Ok("ok")
}

async fn write_int(
    session: Session,
    Path((k, v)): Path<(String, i64)>,
) -> Result<&'static str, SessionError> {
    session.insert(&k, &v)?;
    Ok("ok")
}

async fn slow_write(
    session: Session,
    Path((ms, k, v)): Path<(u64, String, String)>,
) -> Result<&'static str, SessionError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    session.insert(&k, &v)?;
    Ok("ok")
}

async fn remove(session: Session, Path(k): Path<String>) -> Result<&'static str, SessionError> {
    session.remove(&k)?;
    Ok("ok")
}

async fn clear(session: Session) -> Result<&'static str, SessionError> {
    session.clear()?;
    Ok("ok")
}

async fn incr(session: Session, Path((k, n)): Path<(String, i64)>) -> Result<String, SessionError> {
    Ok(session.incr(&k, n).await?.to_string())
}

async fn regenerate(session: Session) -> Result<&'static str, SessionError> {
    session.regenerate().await?;
    Ok("ok")
}

async fn destroy(session: Session) -> Result<&'static str, SessionError> {
    session.destroy().await?;
    Ok("ok")
}

async fn keys(session: Session) -> Result<String, SessionError> {
    let mut keys = session.keys()?;
    keys.sort();
    Ok(keys.join(","))
}

/// A response, reduced to what the tests look at.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub set_cookie: Vec<String>,
    pub body: String,
}

impl Reply {
    /// The `name=value` part of the first Set-Cookie.
    pub fn cookie_pair(&self) -> Option<String> {
        self.set_cookie
            .first()
            .and_then(|c| c.split(';').next())
            .map(str::to_string)
    }
}

/// Sends one request through the app's tower stack.
pub async fn send(app: &Router, path: &str, cookie: Option<&str>) -> Reply {
    let mut req = Request::get(path);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = res.status();
    let set_cookie = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii cookie").to_string())
        .collect();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        set_cookie,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A browser with one cookie.
#[derive(Clone)]
pub struct Browser {
    pub app: Router,
    pub cookie: Option<String>,
}

impl Browser {
    pub fn new(app: Router) -> Self {
        Self { app, cookie: None }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        let reply = send(&self.app, path, self.cookie.as_deref()).await;
        for c in &reply.set_cookie {
            if c.contains("Max-Age=0") {
                self.cookie = None;
            } else {
                self.cookie = c.split(';').next().map(str::to_string);
            }
        }
        reply
    }

    /// Sends without updating the jar.
    pub async fn peek(&self, path: &str) -> Reply {
        send(&self.app, path, self.cookie.as_deref()).await
    }
}
