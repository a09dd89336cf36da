//! Our own connection to one cluster node: for redis-rs's cluster client (`DirectNode`), and
//! for the store's own slot routing (`slots`). Both reopen a socket that closed, so that a
//! node's `timeout` closing an idle socket never fails a request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, ServerError, Value};
use tokio::sync::Notify;

use super::direct::Direct;
use super::resp::not_sent;

/// The longest connect and command timeouts (ms) of the stores whose cluster nodes use our
/// own connection: the cluster client opens node connections through a static constructor,
/// which cannot see the store's settings (one store per process, the usual case, gets its
/// own).
static NODE_CONNECT_MS: AtomicU64 = AtomicU64::new(0);
static NODE_COMMAND_MS: AtomicU64 = AtomicU64::new(0);

/// Node connections of our own open within `connect`, and fail a request at `command` (at
/// least).
pub(crate) fn node_timeouts(connect: Duration, command: Duration) {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    NODE_CONNECT_MS.fetch_max(ms(connect), Ordering::Relaxed);
    NODE_COMMAND_MS.fetch_max(ms(command), Ordering::Relaxed);
}

fn node_timeout(of: &AtomicU64) -> Duration {
    Duration::from_millis(of.load(Ordering::Relaxed).max(1))
}

/// When a request to a node that starts now is due.
pub(super) fn node_deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + node_timeout(&NODE_COMMAND_MS)
}

/// How often an idle node connection of our own is looked at (see `direct`).
const NODE_TICK: Duration = Duration::from_millis(250);

/// After a failed reopening, how long requests fail at once instead of each waiting for a
/// connect attempt of its own (a node whose host stopped answering takes the whole connect
/// timeout to fail).
const REOPEN_GAP: Duration = Duration::from_secs(1);

/// One node's socket, reopened by the next request after it closed (Redis's `timeout`, a
/// proxy, a restart).
pub(super) struct NodeSocket {
    pub(super) info: redis::ConnectionInfo,
    /// The socket, and whether it closed.
    live: Mutex<(Direct, Arc<AtomicBool>)>,
    /// One reopening at a time, and when the last one failed.
    reopening: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl NodeSocket {
    /// A socket to the node `info` names, within the node connect timeout.
    pub(super) async fn connect(info: redis::ConnectionInfo) -> RedisResult<Self> {
        let live = Mutex::new(Self::open(&info).await?);
        Ok(Self {
            info,
            live,
            reopening: tokio::sync::Mutex::new(None),
        })
    }

    async fn open(info: &redis::ConnectionInfo) -> RedisResult<(Direct, Arc<AtomicBool>)> {
        let (closed, wake) = (Arc::new(AtomicBool::new(false)), Arc::new(Notify::new()));
        let settings = info.redis_settings();
        let flag = Arc::clone(&closed);
        let connect = Direct::connect(info.addr(), settings, None, flag, wake, NODE_TICK);
        match tokio::time::timeout(node_timeout(&NODE_CONNECT_MS), connect).await {
            Ok(conn) => {
                // Nothing retires a node socket (the store's routed ones are shared by its
                // connections): a node that answers nothing within the command timeout, as
                // a host that vanished without closing its sockets, has it closed, and the
                // next request or the map's refresh opens another.
                let conn = conn?;
                conn.close_when_late();
                Ok((conn, closed))
            }
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no connection to the cluster node within the connect timeout",
            ))),
        }
    }

    /// The socket, if it is open.
    pub(super) fn open_now(&self) -> Option<Direct> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        (!live.1.load(Ordering::Relaxed)).then(|| live.0.clone())
    }

    /// The socket, reopened first if it closed; not sent (at once) within [`REOPEN_GAP`] of
    /// a failed reopening.
    pub(super) async fn socket(&self) -> RedisResult<Direct> {
        if let Some(conn) = self.open_now() {
            return Ok(conn);
        }
        let mut failed_at = self.reopening.lock().await;
        if let Some(conn) = self.open_now() {
            return Ok(conn);
        }
        if failed_at.is_some_and(|at| at.elapsed() < REOPEN_GAP) {
            return Err(not_sent(
                "the cluster node's socket closed and could not be reopened",
            ));
        }
        match Self::open(&self.info).await {
            Ok((conn, closed)) => {
                *failed_at = None;
                *self.live.lock().unwrap_or_else(PoisonError::into_inner) = (conn.clone(), closed);
                Ok(conn)
            }
            Err(e) => {
                *failed_at = Some(tokio::time::Instant::now());
                Err(e)
            }
        }
    }
}

/// A node connection of our own for redis-rs's cluster client. The client polls its requests
/// from its own task, and may await something else meanwhile (a slot refresh); a request of
/// ours that is sending for others (gathering) or reading the socket for them must not wait on
/// that, or they all wait for each other. So each request runs in a task of its own, due by
/// the command timeout. A socket that closed is reopened by the next request, so that the
/// cluster client never sees it fail (it would rebuild the whole cluster connection, as the
/// store retires it).
#[derive(Clone)]
pub(crate) struct DirectNode(Arc<NodeSocket>);

impl DirectNode {
    pub(super) async fn connect(info: redis::ConnectionInfo) -> RedisResult<Self> {
        Ok(Self(Arc::new(NodeSocket::connect(info).await?)))
    }

    /// Runs `request` on this node in a task of its own; once more on a new socket if the
    /// first never sent it (the socket had closed).
    async fn spawned<T: Send + 'static>(
        &self,
        request: impl Fn(Direct) -> RedisFuture<'static, T> + Send + Sync + 'static,
    ) -> RedisResult<T> {
        let node = Arc::clone(&self.0);
        let task = async move {
            let due = node_deadline();
            match request(node.socket().await?.until(due)).await {
                Err(e) if e.is_connection_refusal() => {
                    request(node.socket().await?.until(due)).await
                }
                done => done,
            }
        };
        match tokio::spawn(task).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::from(std::io::Error::other(
                "a request to a cluster node panicked or was cancelled",
            ))),
        }
    }
}

/// Sends `pipe` on `conn` and answers as redis-rs's connection does: for a transaction, the
/// first error among the queued replies (a redirection: the transaction did not run) is the
/// answer, not `EXECABORT`, and else `EXEC`'s own error (a redirection for the whole
/// transaction, whose slot moved after it was queued); the cluster client and `redirect` act
/// on it.
pub(super) async fn send(
    mut conn: Direct,
    pipe: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    if !pipe.is_transaction() {
        return conn.req_packed_commands(pipe, offset, count).await;
    }
    let all = conn.req_packed_commands(pipe, 0, pipe.len() + 2).await?;
    let error = |v: &Value| match v {
        Value::ServerError(e) => Some(e.clone()),
        _ => None,
    };
    let queued: Vec<ServerError> = all
        .iter()
        .skip(1)
        .take(pipe.len())
        .filter_map(error)
        .collect();
    let first = queued
        .iter()
        .find(|e| !super::conn::redirect::is_redirect(e))
        .or(queued.first())
        .cloned()
        .or_else(|| all.last().and_then(error));
    match first {
        Some(e) => Err(e.into()),
        None => Ok(all.into_iter().skip(offset).take(count).collect()),
    }
}

impl ConnectionLike for DirectNode {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        // Shared, not copied, by the request and its one resend.
        let cmd = Arc::new(cmd.clone());
        Box::pin(self.spawned(move |mut conn| {
            let cmd = Arc::clone(&cmd);
            Box::pin(async move { conn.req_packed_command(&cmd).await })
        }))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let pipe = Arc::new(pipe.clone());
        Box::pin(self.spawned(move |conn| {
            let pipe = Arc::clone(&pipe);
            Box::pin(async move { send(conn, &pipe, offset, count).await })
        }))
    }

    fn get_db(&self) -> i64 {
        self.0.info.redis_settings().db()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use redis::IntoConnectionInfo;
    use test_support::redis_server::RedisServer;

    use super::*;

    /// A node whose host stops answering (here: a listener that accepts and says nothing)
    /// costs one connect timeout, not one per request.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_reopening_fails_the_next_requests_at_once() {
        node_timeouts(Duration::from_millis(300), Duration::from_secs(2));
        let server = RedisServer::start();
        let node = NodeSocket::connect(server.url().as_str().into_connection_info().unwrap())
            .await
            .expect("socket");
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let keep = tokio::spawn(async move {
            let mut accepted = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                accepted.push(socket);
            }
        });
        let node = NodeSocket {
            info: node
                .info
                .clone()
                .set_addr(redis::ConnectionAddr::Tcp("127.0.0.1".into(), port)),
            ..node
        };
        // Its socket is found closed (as the idle check would find it).
        node.live.lock().unwrap().1.store(true, Ordering::Relaxed);
        let started = Instant::now();
        assert!(node.socket().await.is_err());
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        let again = Instant::now();
        let err = node.socket().await.err().expect("not reopened");
        assert!(err.is_connection_refusal(), "{err}");
        assert!(
            again.elapsed() < Duration::from_millis(100),
            "{:?}",
            again.elapsed()
        );
        keep.abort();
    }
}
