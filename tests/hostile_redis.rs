//! Our own Redis connection against what broken servers, proxies and attackers send. A proxy
//! on loopback stands between the store and a real redis-server and, scripted per test,
//! corrupts the traffic: replies nested 20,000 deep, huge and negative lengths, types RESP2
//! does not have, push frames, replies while the connection is idle, duplicated and surplus
//! replies, an error or a hang-up at accept, a half-closed socket, replies trickled a byte at
//! a time, a connection closed mid-reply, a server that stops answering.
//!
//! Meanwhile clients read sessions of their own, each holding a distinct user. What must hold
//! whatever the proxy does: no panic or abort, every request answered within the command
//! timeout (plus scheduling slack), never another client's session, and connection attempts
//! bounded by the backoff.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::record::record;
use common::{app, builder, join_by, Browser, RedisServer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tower_redis_session::SessionStore;

const TIMEOUT: Duration = Duration::from_millis(300);
/// What a request may take beyond the command timeout: scheduling on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(200);
const CLIENTS: usize = 8;

/// What the proxy does to the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Every `EVERY`th reply becomes an array nested 20,000 deep.
    Deep,
    /// Every `EVERY`th reply becomes a bulk string of length `i64::MAX`.
    HugeLength,
    /// Every `EVERY`th reply becomes a bulk string of length -5.
    NegativeLength,
    /// Every `EVERY`th reply becomes a RESP3 map, a type RESP2 does not have.
    UnknownType,
    /// A RESP3 push frame goes before every `EVERY`th reply.
    Push,
    /// After every `EVERY`th reply, the next that leaves the connection idle comes again,
    /// 2 ms later.
    IdleRepeat,
    /// After every `EVERY`th reply, the next that leaves the connection idle is followed by
    /// an extra `:1`.
    Surplus,
    /// Every `EVERY`th reply is sent twice at once, whatever is in flight.
    Duplicate,
    /// After every `EVERY`th reply, the next whole answer to a session read (the hash and the
    /// expiry's `:1`) is sent twice at once, whatever is in flight.
    DuplicateRead,
    /// `-ERR max number of clients reached` at accept, then the socket closes.
    ErrorAtAccept,
    /// Accepts, then closes at once.
    AcceptClose,
    /// Passes the handshake, then shuts its writing side on the `EVERY`th reply.
    HalfClose,
    /// Every reply a byte at a time.
    Trickle,
    /// Half of every `EVERY`th reply, then the socket closes.
    CloseMidReply,
    /// After the handshake, reads commands and never answers.
    Silent,
}

const EVERY: u64 = 40;

/// Replies to a connection's handshake.
const HANDSHAKE: u64 = 2;

/// Where a RESP2 reply in `buf` ends, if it is all in (the server is a real Redis: trusted).
fn reply_end(buf: &[u8], at: usize) -> Option<usize> {
    let kind = *buf.get(at)?;
    let cr = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
    let next = cr + 2;
    let n = || -> i64 {
        std::str::from_utf8(&buf[at + 1..cr])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    match kind {
        b'$' if n() < 0 => Some(next),
        b'$' => {
            let end = next + n() as usize + 2;
            (buf.len() >= end).then_some(end)
        }
        b'*' => (0..n().max(0)).try_fold(next, |at, _| reply_end(buf, at)),
        _ => Some(next),
    }
}

/// How many commands (RESP arrays) in `buf` are all in, and where the last ends.
fn commands(buf: &[u8]) -> (u64, usize) {
    let (mut n, mut at) = (0, 0);
    while let Some(end) = reply_end(buf, at) {
        n += 1;
        at = end;
    }
    (n, at)
}

/// A proxy in front of `upstream` that applies `fault`; counts connections and faults.
struct Proxy {
    port: u16,
    accepted: Arc<AtomicU64>,
    faults: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: u16, fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let proxy = Self {
            port,
            accepted: Arc::default(),
            faults: Arc::default(),
            stop: Arc::default(),
        };
        let (accepted, faults, stop) = (
            Arc::clone(&proxy.accepted),
            Arc::clone(&proxy.faults),
            Arc::clone(&proxy.stop),
        );
        let replies = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(Ok((client, _))) =
                    tokio::time::timeout(Duration::from_millis(50), listener.accept()).await
                else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::Relaxed);
                let (faults, replies) = (Arc::clone(&faults), Arc::clone(&replies));
                tokio::spawn(serve(client, upstream, fault, faults, replies));
            }
        });
        proxy
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One proxied connection: commands go up as they come; replies come down one by one, through
/// `fault`.
async fn serve(
    mut client: TcpStream,
    upstream: u16,
    fault: Fault,
    faults: Arc<AtomicU64>,
    replies: Arc<AtomicU64>,
) {
    match fault {
        Fault::ErrorAtAccept => {
            faults.fetch_add(1, Ordering::Relaxed);
            let _ = client
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
            return;
        }
        Fault::AcceptClose => {
            faults.fetch_add(1, Ordering::Relaxed);
            return;
        }
        _ => {}
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Commands sent up and replies sent down, to know when the connection is idle.
    let sent = Arc::new(AtomicU64::new(0));
    let up_sent = Arc::clone(&sent);
    let silent = Arc::new(AtomicBool::new(false));
    let up_silent = Arc::clone(&silent);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let (count, at) = commands(&buf);
            up_sent.fetch_add(count, Ordering::Relaxed);
            let batch: Vec<u8> = buf.drain(..at).collect();
            if up_silent.load(Ordering::Relaxed) {
                continue;
            }
            if server_write.write_all(&batch).await.is_err() {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut answered = 0u64;
    let mut armed = false;
    let mut previous: Vec<u8> = Vec::new();
    loop {
        let n = match server_read.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = reply_end(&buf, 0) {
            let reply: Vec<u8> = buf.drain(..end).collect();
            answered += 1;
            let nth = replies.fetch_add(1, Ordering::Relaxed) + 1;
            // The first replies of a connection are its handshake's (`PING` and its tag):
            // always passed on.
            let hit = answered > HANDSHAKE && nth.is_multiple_of(EVERY);
            let idle = answered == sent.load(Ordering::Relaxed);
            let mut out = reply.clone();
            let mut then_close = false;
            match fault {
                Fault::Deep if hit => out = [b"*1\r\n".repeat(20_000), b":1\r\n".to_vec()].concat(),
                Fault::HugeLength if hit => out = b"$9223372036854775807\r\nx".to_vec(),
                Fault::NegativeLength if hit => out = b"$-5\r\n".to_vec(),
                Fault::UnknownType if hit => out = b"%1\r\n+a\r\n+b\r\n".to_vec(),
                Fault::Push if hit => {
                    out = [
                        &b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n"[..],
                        &reply,
                    ]
                    .concat()
                }
                Fault::HalfClose if hit => {
                    faults.fetch_add(1, Ordering::Relaxed);
                    let _ = client_write.shutdown().await;
                    return;
                }
                Fault::CloseMidReply if hit => {
                    out.truncate(reply.len() / 2);
                    then_close = true;
                }
                Fault::Silent if answered == HANDSHAKE => silent.store(true, Ordering::Relaxed),
                _ => {}
            }
            let changed = out != reply;
            if changed {
                faults.fetch_add(1, Ordering::Relaxed);
            }
            let written = if fault == Fault::Trickle {
                let mut ok = true;
                for (i, byte) in out.iter().enumerate() {
                    ok = ok && client_write.write_all(&[*byte]).await.is_ok();
                    if i % 16 == 15 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                }
                ok
            } else {
                client_write.write_all(&out).await.is_ok()
            };
            if !written || then_close {
                return;
            }
            if fault == Fault::Duplicate && hit {
                faults.fetch_add(1, Ordering::Relaxed);
                if client_write.write_all(&reply).await.is_err() {
                    return;
                }
            }
            if fault == Fault::DuplicateRead
                && armed
                && reply.first() == Some(&b':')
                && previous.first() == Some(&b'*')
            {
                armed = false;
                faults.fetch_add(1, Ordering::Relaxed);
                let again = [&previous[..], &reply[..]].concat();
                if client_write.write_all(&again).await.is_err() {
                    return;
                }
            }
            previous = reply.clone();
            armed |= hit;
            if armed && idle && matches!(fault, Fault::IdleRepeat | Fault::Surplus) {
                armed = false;
                tokio::time::sleep(Duration::from_millis(2)).await;
                let extra = if fault == Fault::Surplus {
                    b":1\r\n".to_vec()
                } else {
                    reply
                };
                faults.fetch_add(1, Ordering::Relaxed);
                if client_write.write_all(&extra).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Sessions made straight on `redis`: each client's cookie, whose session holds `user-<i>`.
async fn sessions(redis: &RedisServer) -> Vec<String> {
    let store = builder()
        .redis_url(redis.url())
        .build()
        .await
        .expect("store");
    let mut cookies = Vec::new();
    for i in 0..CLIENTS {
        let mut b = Browser::new(app(&store));
        assert_eq!(
            b.get(&format!("/set/user/user-{i}")).await.status,
            StatusCode::OK
        );
        cookies.push(b.cookie.expect("cookie"));
    }
    cookies
}

async fn proxied_store(proxy: &Proxy) -> SessionStore {
    builder()
        .redis_url(proxy.url())
        .command_timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .pool_size(2)
        .build()
        .await
        .expect("store")
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Seen {
    requests: u64,
    own: u64,
    unavailable: u64,
    /// A session that was another client's, or none where there was one.
    wrong: Vec<String>,
    other_status: Vec<String>,
    slowest: Duration,
}

/// `CLIENTS` clients read their own sessions through `store` for `how_long`.
async fn read_own(store: &SessionStore, cookies: &[String], how_long: Duration) -> Seen {
    let until = Instant::now() + how_long;
    let mut tasks = JoinSet::new();
    for (i, cookie) in cookies.iter().enumerate() {
        let mut b = Browser::new(app(store));
        b.cookie = Some(cookie.clone());
        tasks.spawn(async move {
            let mut seen = Seen::default();
            // Bounded by time and by count.
            for _ in 0..20_000 {
                if Instant::now() >= until {
                    break;
                }
                let start = Instant::now();
                let r = b.get("/get/user").await;
                seen.slowest = seen.slowest.max(start.elapsed());
                // A request that fails fast never waits: without this, a client would keep its
                // worker thread (and the runtime's timers) to itself.
                tokio::task::yield_now().await;
                seen.requests += 1;
                match r.status {
                    StatusCode::OK if r.body == format!("user-{i}") => seen.own += 1,
                    StatusCode::OK => seen.wrong.push(format!("client {i} read {:?}", r.body)),
                    StatusCode::SERVICE_UNAVAILABLE => seen.unavailable += 1,
                    s => seen.other_status.push(format!("{s}: {}", r.body)),
                }
            }
            seen
        });
    }
    let mut all = Seen::default();
    let deadline = until + TIMEOUT + SLACK + Duration::from_secs(2);
    for s in join_by(tasks, deadline).await {
        all.requests += s.requests;
        all.own += s.own;
        all.unavailable += s.unavailable;
        all.wrong.extend(s.wrong);
        all.other_status.extend(s.other_status);
        all.slowest = all.slowest.max(s.slowest);
    }
    all
}

/// What one fault did: the clients' view and the store's connection counters.
struct Outcome {
    seen: Seen,
    faults: u64,
    attempts: u64,
    retired: u64,
}

impl Outcome {
    fn figures(&self) -> serde_json::Value {
        json!({
            "requests": self.seen.requests,
            "own session": self.seen.own,
            "answered 503": self.seen.unavailable,
            "another's session": self.seen.wrong.len(),
            "faults": self.faults,
            "attempts": self.attempts,
            "retired": self.retired,
            "slowest ms": self.seen.slowest.as_millis() as u64,
        })
    }
}

/// Runs the clients through a proxy with `fault`, and checks what must always hold.
async fn under(fault: Fault, how_long: Duration) -> Outcome {
    let redis = RedisServer::start();
    let cookies = sessions(&redis).await;
    let proxy = Proxy::start(redis.port, fault).await;
    let store = proxied_store(&proxy).await;
    let before = store.stats();
    let seen = read_own(&store, &cookies, how_long).await;
    let after = store.stats();
    let outcome = Outcome {
        faults: proxy.faults.load(Ordering::Relaxed),
        attempts: after.connection_attempts - before.connection_attempts,
        retired: after.connections_retired - before.connections_retired,
        seen,
    };
    let seen = &outcome.seen;
    assert!(
        seen.wrong.is_empty(),
        "{fault:?}: {} wrong, first {:?}",
        seen.wrong.len(),
        &seen.wrong[..seen.wrong.len().min(5)]
    );
    assert!(
        seen.other_status.is_empty(),
        "{fault:?}: {:?}",
        seen.other_status
    );
    assert!(
        seen.slowest <= TIMEOUT + SLACK,
        "{fault:?}: a request took {:?}",
        seen.slowest
    );
    outcome
}

/// Records each fault's figures under its name, with the timeout, as `name`.
fn record_all(name: &str, outcomes: &[(Fault, Outcome)]) {
    let mut figures = serde_json::Map::new();
    figures.insert("timeout ms".into(), json!(TIMEOUT.as_millis() as u64));
    for (fault, outcome) in outcomes {
        figures.insert(format!("{fault:?}"), outcome.figures());
    }
    record(name, serde_json::Value::Object(figures));
}

/// Faults that break the stream: each retires the connection it hit, and the requests on it
/// get 503 (or, read again on a healthy connection, their own session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_replies_retire_the_connection_never_misdeliver() {
    let mut outcomes = Vec::new();
    for fault in [
        Fault::Deep,
        Fault::HugeLength,
        Fault::NegativeLength,
        Fault::UnknownType,
        Fault::Push,
        Fault::IdleRepeat,
        Fault::Surplus,
        Fault::Duplicate,
        Fault::DuplicateRead,
        Fault::CloseMidReply,
        Fault::HalfClose,
    ] {
        let o = under(fault, Duration::from_millis(1500)).await;
        assert!(o.faults > 0, "{fault:?}: the proxy never struck");
        assert!(
            o.retired > 0,
            "{fault:?}: {} faults retired no connection",
            o.faults
        );
        // Between faults, service goes on.
        assert!(o.seen.own > o.seen.requests / 2, "{fault:?}: {:?}", o.seen);
        outcomes.push((fault, o));
    }
    record_all("hostile_redis_corrupt", &outcomes);
}

/// An endpoint that accepts and hangs up, or greets with an error, is a failed connection
/// attempt: the backoff holds (as for a refused port), and every request gets a fast 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_that_hang_up_or_refuse_at_accept_keep_the_backoff() {
    let mut outcomes = Vec::new();
    for fault in [Fault::AcceptClose, Fault::ErrorAtAccept] {
        let o = under(fault, Duration::from_secs(3)).await;
        let seen = &o.seen;
        assert_eq!(seen.own, 0, "{fault:?}");
        assert_eq!(seen.unavailable, seen.requests, "{fault:?}");
        assert!(seen.requests > 100, "{fault:?}: {seen:?}");
        // Backoff from 50 ms doubling to 1 s: about 7 attempts in 3 s, as for a refused port.
        assert!(
            o.attempts <= 12,
            "{fault:?}: {} connection attempts in 3 s",
            o.attempts
        );
        assert!(
            o.faults <= o.attempts + 2,
            "{fault:?}: {} accepts",
            o.faults
        );
        outcomes.push((fault, o));
    }
    record_all("hostile_redis_accept", &outcomes);
}

/// Replies trickled a byte at a time, and a server that stops answering: the first are slow,
/// not wrong (every request gets its own session); the second fails every request at its
/// deadline, none hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_servers() {
    let trickle = under(Fault::Trickle, Duration::from_millis(1500)).await;
    assert!(trickle.seen.requests > 50, "{:?}", trickle.seen);
    assert_eq!(
        trickle.seen.own, trickle.seen.requests,
        "{:?}",
        trickle.seen
    );
    assert_eq!(trickle.retired, 0);
    let silent = under(Fault::Silent, Duration::from_millis(1500)).await;
    assert!(silent.seen.requests > 0);
    assert_eq!(
        silent.seen.unavailable, silent.seen.requests,
        "{:?}",
        silent.seen
    );
    assert!(silent.seen.slowest >= TIMEOUT, "{:?}", silent.seen);
    record_all(
        "hostile_redis_slow",
        &[(Fault::Trickle, trickle), (Fault::Silent, silent)],
    );
}

/// A unix-socket server that answers the handshake, reads one request without answering,
/// then shuts its reading side: the next write fails, and every request on the connection,
/// the one waiting for its reply on the socket among them, is answered 503 within the
/// timeout, never left waiting (it waited past 10 s for a 500 ms timeout).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_fails_every_waiting_request() {
    use tokio::net::UnixListener;

    let dir = std::env::temp_dir().join(format!("trs-halfread-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("redis.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind");
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    let accepts = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&accepts);
    let server = tokio::spawn(async move {
        // Bounded: the backoff allows a handful of attempts in the test's few seconds.
        for _ in 0..200 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 256];
            // `PING` and its tag `ECHO 0`: answered, and the connection counts as open.
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(b"+PONG\r\n$1\r\n0\r\n").await;
            // The first request is read, never answered: its sender waits, reading.
            let _ = socket.read(&mut buf).await;
            let Ok(std) = socket.into_std() else { return };
            let _ = std.shutdown(std::net::Shutdown::Read);
            keep.lock().unwrap_or_else(|e| e.into_inner()).push(std);
        }
    });
    let timeout = Duration::from_millis(500);
    let store = builder()
        .redis_url(format!("redis+unix://{}", path.display()))
        .command_timeout(timeout)
        .pool_size(1)
        .build()
        .await
        .expect("store");
    let app = app(&store);
    let mut tasks = JoinSet::new();
    for i in 0..8 {
        let app = app.clone();
        if i == 1 {
            // The first request is out, and its sender reads the socket.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tasks.spawn(async move {
            let mut b = Browser::new(app);
            let start = Instant::now();
            let r = b.get(&format!("/set/user/u{i}")).await;
            (r.status, start.elapsed())
        });
    }
    let mut slowest = Duration::ZERO;
    while let Ok(Some(done)) = tokio::time::timeout(Duration::from_secs(5), tasks.join_next()).await
    {
        let (status, took) = done.expect("client task panicked");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        slowest = slowest.max(took);
    }
    assert!(tasks.is_empty(), "a request was still waiting after 5 s");
    assert!(slowest <= timeout + SLACK, "slowest {slowest:?}");
    assert!(accepts.load(Ordering::Relaxed) >= 1);
    server.abort();
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
}
