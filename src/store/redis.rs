//! The Redis backend: one hash per session; every command and script touches one key.
//!
//! A read is a pipeline of `HGETALL` and `PEXPIRE`: one round trip, no script. Writes are Lua
//! scripts, because they must check that the session still exists and write in one step.
//!
//! Connections come from a [`deadpool`] pool of multiplexed RESP3 connections, shared by
//! concurrent requests (see [`RedisBackend::run`]). We do not use deadpool-redis's manager: it
//! sends `PING` on every checkout, which would double the round trips of a read. Instead each
//! connection carries a flag, raised by redis-rs (through the RESP3 push channel) when the
//! socket drops, or by us when a request on it got no answer; the pool replaces a flagged
//! connection at its next checkout, without I/O.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use deadpool::managed::{self, Metrics, Pool, RecycleError, RecycleResult};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, ProtocolVersion, PushKind, RedisError,
    Value,
};

use super::{now_ms, Counter, Found, Loaded, Mode, Outcome, Write, ENDED, KEY_COUNT, SESSION_SIZE};
use crate::error::{ConfigError, SessionError, StoreError};
use crate::token::StoreKey;

/// Timeouts and pool size for the Redis backend.
#[derive(Clone, Debug)]
pub(crate) struct RedisOptions {
    pub(crate) url: String,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) wait_timeout: Duration,
    pub(crate) command_timeout: Duration,
}

/// A Lua script with its SHA1, sent by `EVALSHA` (falling back to `EVAL` after a flush).
struct Lua {
    sha: String,
    source: &'static str,
}

macro_rules! lua {
    ($file:literal) => {{
        let source = include_str!($file);
        Lua {
            sha: redis::Script::new(source).get_hash().to_owned(),
            source,
        }
    }};
}

struct Scripts {
    save: Lua,
    incr: Lua,
    end: Lua,
}

pub(crate) struct RedisBackend {
    pool: Pool<Manager>,
    /// The connection requests share, cloned from the pool (see [`RedisBackend::run`]).
    current: RwLock<Option<Conn>>,
    command_timeout: Duration,
    scripts: Scripts,
}

impl RedisBackend {
    pub(crate) fn new(options: &RedisOptions) -> Result<Self, ConfigError> {
        let info = options
            .url
            .as_str()
            .into_connection_info()
            .map_err(ConfigError::BadUrl)?;
        // RESP3 is what lets redis-rs tell us about a dropped connection (see module docs).
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(redis_settings);
        let client = Client::open(info).map_err(ConfigError::BadUrl)?;
        let manager = Manager {
            client,
            connect_timeout: options.connect_timeout,
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.wait_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| ConfigError::Pool(e.to_string()))?;
        Ok(Self {
            pool,
            current: RwLock::new(None),
            command_timeout: options.command_timeout,
            scripts: Scripts {
                save: lua!("lua/save.lua"),
                incr: lua!("lua/incr.lua"),
                end: lua!("lua/end.lua"),
            },
        })
    }

    /// Loads every script, so that the first requests need no `EVAL` fallback.
    pub(crate) async fn warm_up(&self) -> Result<(), SessionError> {
        let s = &self.scripts;
        let mut pipe = redis::pipe();
        for script in [&s.save, &s.incr, &s.end] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(script.source).ignore();
        }
        self.run(|mut conn| async move { pipe.exec_async(&mut conn).await })
            .await
    }

    /// `HGETALL` and `PEXPIRE` in one pipeline. `PEXPIRE` of a key that is gone does nothing,
    /// so a concurrent logout is never undone.
    pub(crate) async fn load(&self, key: &StoreKey, ttl: Duration) -> Result<Found, SessionError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL")
            .arg(key.as_str())
            .cmd("PEXPIRE")
            .arg(key.as_str())
            .arg(millis(ttl))
            .ignore();
        let (hash,): (Value,) = self
            .run(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await?;
        parse_hash(hash)
    }

    pub(crate) async fn save(
        &self,
        key: &StoreKey,
        write: &Write<'_>,
    ) -> Result<Outcome<()>, SessionError> {
        let reply = self
            .eval(&self.scripts.save, key, |cmd| {
                push_mode(cmd, write.ttl, write.mode);
                let (keys, bytes) = write.check.map_or((0, 0), |l| (l.keys, l.session_bytes));
                cmd.arg(if write.clear { "1" } else { "0" })
                    .arg(keys)
                    .arg(bytes)
                    .arg(write.set.len());
                for (field, value) in &write.set {
                    cmd.arg(*field).arg(*value);
                }
                for field in &write.delete {
                    cmd.arg(*field);
                }
            })
            .await?;
        match reply {
            Value::Int(status) => Ok(outcome(status, (), 0)),
            Value::Array(items) => status_and_value(&items).map(|(s, got)| outcome(s, (), got)),
            other => Err(unexpected(&other)),
        }
    }

    pub(crate) async fn incr(
        &self,
        key: &StoreKey,
        c: &Counter<'_>,
    ) -> Result<Outcome<i64>, SessionError> {
        let reply = self
            .eval(&self.scripts.incr, key, |cmd| {
                push_mode(cmd, c.ttl, c.mode);
                cmd.arg(c.field).arg(c.delta).arg(c.max_keys.unwrap_or(0));
                if let Some(base) = c.base {
                    cmd.arg(base);
                }
            })
            .await
            .map_err(|e| match e {
                SessionError::Corrupt(msg)
                    if msg.contains("integer") || msg.contains("overflow") =>
                {
                    SessionError::NotAnInteger {
                        key: c.field.into(),
                    }
                }
                e => e,
            })?;
        match reply {
            Value::Array(items) => {
                let (status, value) = status_and_value(&items)?;
                Ok(outcome(status, value, value))
            }
            other => Err(unexpected(&other)),
        }
    }

    pub(crate) async fn end(
        &self,
        key: &StoreKey,
        marker_ttl: Duration,
        read: bool,
    ) -> Result<Found, SessionError> {
        let reply = self
            .eval(&self.scripts.end, key, |cmd| {
                cmd.arg(millis(marker_ttl))
                    .arg(if read { "1" } else { "0" });
            })
            .await?;
        parse_hash(reply)
    }

    /// One pipeline of `PEXPIRE`s, one key each; a key that is gone stays gone.
    pub(crate) async fn touch(&self, keys: &[(StoreKey, i64)]) -> Result<(), SessionError> {
        let now = now_ms();
        let mut pipe = redis::pipe();
        for (key, deadline) in keys {
            // Past its deadline, the key expires by itself: its TTL never went beyond it.
            if *deadline > now {
                pipe.cmd("PEXPIRE")
                    .arg(key.as_str())
                    .arg(deadline - now)
                    .ignore();
            }
        }
        if pipe.is_empty() {
            return Ok(());
        }
        self.run(|mut conn| async move { pipe.exec_async(&mut conn).await })
            .await
    }

    /// Runs a script by its SHA1, sending the source only if Redis lost it (restart, flush).
    async fn eval(
        &self,
        script: &Lua,
        key: &StoreKey,
        args: impl Fn(&mut Cmd),
    ) -> Result<Value, SessionError> {
        let build = |verb: &str, body: &str| {
            let mut cmd = redis::cmd(verb);
            cmd.arg(body).arg(1).arg(key.as_str());
            args(&mut cmd);
            cmd
        };
        let evalsha = build("EVALSHA", &script.sha);
        self.run(|mut conn| async move {
            match evalsha.query_async::<Value>(&mut conn).await {
                Err(e) if is_noscript(&e) => {
                    build("EVAL", script.source)
                        .query_async::<Value>(&mut conn)
                        .await
                }
                other => other,
            }
        })
        .await
    }

    /// Runs `work` on a connection, all within the command timeout.
    ///
    /// Connections are multiplexed: requests share one connection's handle, so their commands
    /// are pipelined on one socket (fewer syscalls on both sides, as fred's auto-pipelining),
    /// and the hot path takes no pool checkout and no timer beyond the command timeout. A
    /// connection that did not answer (transport error, or the timeout cut it short) is
    /// flagged; the next request then takes a fresh one from the pool, which creates it
    /// within the connect timeout.
    async fn run<T, Fut>(
        &self,
        work: impl FnOnce(MultiplexedConnection) -> Fut,
    ) -> Result<T, SessionError>
    where
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let attempt = async {
            let Conn { conn, closed } = self.connection().await?;
            let mut watch = Unanswered(Some(closed));
            let result = work(conn).await;
            let transport_failed = matches!(&result, Err(e)
                if e.is_unrecoverable_error() || e.is_io_error() || e.is_timeout());
            if !transport_failed {
                watch.0 = None;
            }
            result.map_err(classify)
        };
        tokio::time::timeout(self.command_timeout, attempt)
            .await
            .unwrap_or(Err(SessionError::Unavailable(StoreError::Timeout(
                self.command_timeout,
            ))))
    }
}

impl RedisBackend {
    /// The shared connection, or a fresh one from the pool if it is flagged.
    async fn connection(&self) -> Result<Conn, SessionError> {
        let shared = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|c| !c.closed.load(Ordering::Relaxed))
            .cloned();
        if let Some(conn) = shared {
            return Ok(conn);
        }
        let object = self
            .pool
            .get()
            .await
            .map_err(|e| SessionError::Unavailable(StoreError::Connect(e.to_string())))?;
        let conn = Conn::clone(&object);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }
}

/// Flags a connection as dead when dropped still holding its flag: the request on it got no
/// answer, by error or because the timeout dropped it.
struct Unanswered(Option<Arc<AtomicBool>>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(closed) = self.0.take() {
            closed.store(true, Ordering::Relaxed);
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn push_mode(cmd: &mut Cmd, ttl: Duration, mode: Mode) {
    cmd.arg(millis(ttl));
    match mode {
        Mode::Update => cmd.arg("u").arg(""),
        Mode::Create { created_ms } => cmd.arg("n").arg(created_ms),
    };
}

fn is_noscript(e: &RedisError) -> bool {
    e.code() == Some("NOSCRIPT")
}

/// Transport trouble and a server that cannot serve now mean "unavailable" (503); anything
/// else means the data at the key is not a session of ours.
fn classify(e: RedisError) -> SessionError {
    // A pipeline reports its first failed command's error.
    let code = e.code().map(str::to_owned).or_else(|| {
        let errors = e.clone().into_server_errors()?;
        errors.first().map(|(_, err)| err.code().to_owned())
    });
    let transient = matches!(
        code.as_deref(),
        None | Some(
            "OOM" | "LOADING" | "READONLY" | "MASTERDOWN" | "CLUSTERDOWN" | "TRYAGAIN" | "BUSY"
        )
    );
    if transient {
        SessionError::Unavailable(StoreError::Redis(e))
    } else {
        SessionError::Corrupt(e.to_string())
    }
}

/// A script's status (see save.lua) and the number that may follow it.
fn status_and_value(items: &[Value]) -> Result<(i64, i64), SessionError> {
    let status = items.first().map(int).transpose()?.unwrap_or(0);
    let value = items.get(1).map(int).transpose()?.unwrap_or(0);
    Ok((status, value))
}

fn outcome<T>(status: i64, value: T, got: i64) -> Outcome<T> {
    let got = usize::try_from(got).unwrap_or(0);
    match status {
        1 => Outcome::Done(value),
        -1 => Outcome::Taken,
        -2 => Outcome::Ended,
        -3 => Outcome::TooLarge {
            limit: KEY_COUNT,
            got,
        },
        -4 => Outcome::TooLarge {
            limit: SESSION_SIZE,
            got,
        },
        _ => Outcome::Gone,
    }
}

fn unexpected(v: &Value) -> SessionError {
    SessionError::Corrupt(format!("unexpected reply {v:?}"))
}

fn int(v: &Value) -> Result<i64, SessionError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(unexpected(other)),
    }
}

fn text(v: Value) -> Result<String, SessionError> {
    match v {
        Value::BulkString(b) => String::from_utf8(b)
            .map_err(|_| SessionError::Corrupt("a session field is not UTF-8".into())),
        other => Err(unexpected(&other)),
    }
}

/// A hash as RESP3 sends it (a map), or as a script returns it (a flat array). The field `''`
/// is the creation time, or the [`ENDED`] marker; a hash without it is not a session of ours.
fn parse_hash(reply: Value) -> Result<Found, SessionError> {
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Nil => return Ok(Found::Absent),
        Value::Map(pairs) => pairs,
        Value::Array(flat) => {
            let mut flat = flat.into_iter();
            std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect()
        }
        other => return Err(unexpected(&other)),
    };
    if pairs.is_empty() {
        return Ok(Found::Absent);
    }
    let mut fields = HashMap::with_capacity(pairs.len());
    let mut created_ms = None;
    for (field, value) in pairs {
        let (field, value) = (text(field)?, text(value)?);
        if field.is_empty() {
            if value == ENDED {
                return Ok(Found::Ended);
            }
            created_ms = value.parse().ok();
        } else {
            fields.insert(field, value);
        }
    }
    let created_ms = created_ms
        .ok_or_else(|| SessionError::Corrupt("a session hash without its creation time".into()))?;
    Ok(Found::Live(Loaded { created_ms, fields }))
}

/// A pooled connection and the flag raised when it is dead.
#[derive(Clone)]
pub(crate) struct Conn {
    conn: MultiplexedConnection,
    closed: Arc<AtomicBool>,
}

pub(crate) struct Manager {
    client: Client,
    connect_timeout: Duration,
}

/// Requests that may queue for one connection before senders wait.
const PIPELINE_BUFFER: usize = 1024;

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = RedisError;

    async fn create(&self) -> Result<Conn, RedisError> {
        let closed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&closed);
        // No response timeout here: `run` bounds every command, without a second timer.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None)
            .set_pipeline_buffer_size(PIPELINE_BUFFER)
            .set_push_sender(move |push: redis::PushInfo| {
                if push.kind == PushKind::Disconnection {
                    flag.store(true, Ordering::Relaxed);
                }
                Ok::<(), ()>(())
            });
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(Conn { conn, closed })
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<RedisError> {
        if conn.closed.load(Ordering::Relaxed) {
            Err(RecycleError::message("connection closed"))
        } else {
            Ok(())
        }
    }
}
