//! The Redis backend: one hash per session, every operation one Lua script on one key.
//!
//! Connections come from a [`deadpool`] pool of multiplexed RESP3 connections. We do not use
//! deadpool-redis's manager: it sends `PING` on every checkout, which would double the round
//! trips of a read. Instead each connection carries a flag that redis-rs raises (through the
//! RESP3 push channel) when the socket drops, so a dead connection is recycled without I/O.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, Pool, RecycleError, RecycleResult};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, ProtocolVersion, PushKind, RedisError,
    Value,
};

use super::{ms, Lifetimes, Loaded, Mode, Outcome, Write};
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
        let source = concat!(include_str!("lua/prelude.lua"), include_str!($file));
        Lua {
            sha: redis::Script::new(source).get_hash().to_owned(),
            source,
        }
    }};
}

struct Scripts {
    load: Lua,
    save: Lua,
    incr: Lua,
    take: Lua,
    touch: Lua,
}

pub(crate) struct RedisBackend {
    pool: Pool<Manager>,
    command_timeout: Duration,
    lifetimes: Lifetimes,
    scripts: Scripts,
}

impl RedisBackend {
    pub(crate) fn new(options: &RedisOptions, lifetimes: Lifetimes) -> Result<Self, ConfigError> {
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
            response_timeout: options.command_timeout,
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
            command_timeout: options.command_timeout,
            lifetimes,
            scripts: Scripts {
                load: lua!("lua/load.lua"),
                save: lua!("lua/save.lua"),
                incr: lua!("lua/incr.lua"),
                take: lua!("lua/take.lua"),
                touch: lua!("lua/touch.lua"),
            },
        })
    }

    /// Loads every script, so that the first requests need no `EVAL` fallback.
    pub(crate) async fn warm_up(&self) -> Result<(), SessionError> {
        let s = &self.scripts;
        let scripts = [&s.load, &s.save, &s.incr, &s.take, &s.touch];
        let mut pipe = redis::pipe();
        for script in scripts {
            pipe.cmd("SCRIPT").arg("LOAD").arg(script.source).ignore();
        }
        self.run(|mut conn| async move { pipe.exec_async(&mut conn).await })
            .await
    }

    pub(crate) async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, SessionError> {
        let reply = self.eval(&self.scripts.load, key, |_| {}).await?;
        parse_loaded(reply)
    }

    pub(crate) async fn save(
        &self,
        key: &StoreKey,
        write: &Write<'_>,
    ) -> Result<Outcome<()>, SessionError> {
        let reply = self
            .eval(&self.scripts.save, key, |cmd| {
                push_mode(cmd, write.mode);
                cmd.arg(if write.clear { "1" } else { "0" })
                    .arg(write.set.len());
                for (field, value) in &write.set {
                    cmd.arg(*field).arg(*value);
                }
                for field in &write.delete {
                    cmd.arg(*field);
                }
            })
            .await?;
        Ok(outcome(int(&reply)?, ()))
    }

    pub(crate) async fn incr(
        &self,
        key: &StoreKey,
        mode: Mode,
        field: &str,
        delta: i64,
        base: Option<i64>,
    ) -> Result<Outcome<i64>, SessionError> {
        let reply = self
            .eval(&self.scripts.incr, key, |cmd| {
                push_mode(cmd, mode);
                cmd.arg(field).arg(delta);
                if let Some(base) = base {
                    cmd.arg(base);
                }
            })
            .await
            .map_err(|e| match e {
                SessionError::Corrupt(msg)
                    if msg.contains("integer") || msg.contains("overflow") =>
                {
                    SessionError::NotAnInteger { key: field.into() }
                }
                e => e,
            })?;
        match reply {
            Value::Array(items) => {
                let ttl = items.first().map(int).transpose()?.unwrap_or(0);
                let value = items.get(1).map(int).transpose()?.unwrap_or(0);
                Ok(outcome(ttl, value))
            }
            other => Err(unexpected(&other)),
        }
    }

    pub(crate) async fn take(&self, key: &StoreKey) -> Result<Option<Loaded>, SessionError> {
        let reply = self.eval(&self.scripts.take, key, |_| {}).await?;
        parse_loaded(reply)
    }

    pub(crate) async fn destroy(&self, key: &StoreKey) -> Result<(), SessionError> {
        let mut cmd = redis::cmd("UNLINK");
        cmd.arg(key.as_str());
        self.run(|mut conn| async move { cmd.query_async::<Value>(&mut conn).await })
            .await
            .map(drop)
    }

    /// One pipeline of `EVALSHA touch` calls, one key each.
    pub(crate) async fn touch(&self, keys: &[StoreKey]) -> Result<(), SessionError> {
        let pipeline = |verb: &str, body: &str| {
            let mut pipe = redis::pipe();
            for key in keys {
                pipe.add_command(self.script_cmd(verb, body, key)).ignore();
            }
            pipe
        };
        let touch = &self.scripts.touch;
        self.run(|mut conn| async move {
            match pipeline("EVALSHA", &touch.sha).exec_async(&mut conn).await {
                Err(e) if is_noscript(&e) => {
                    pipeline("EVAL", touch.source).exec_async(&mut conn).await
                }
                other => other,
            }
        })
        .await
    }

    fn script_cmd(&self, verb: &str, body: &str, key: &StoreKey) -> Cmd {
        let mut cmd = redis::cmd(verb);
        cmd.arg(body)
            .arg(1)
            .arg(key.as_str())
            .arg(self.lifetimes.idle_ms)
            .arg(self.lifetimes.absolute_ms);
        cmd
    }

    /// Runs a script by its SHA1, sending the source only if Redis lost it (restart, flush).
    async fn eval(
        &self,
        script: &Lua,
        key: &StoreKey,
        args: impl Fn(&mut Cmd),
    ) -> Result<Value, SessionError> {
        let build = |verb: &str, body: &str| {
            let mut cmd = self.script_cmd(verb, body, key);
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

    /// Checks out a connection and runs `work` on it, all within the command timeout. A
    /// connection that did not answer (transport error, or the timeout cut it short) is
    /// dropped rather than returned to the pool: it may be dead without knowing it.
    async fn run<T, Fut>(
        &self,
        work: impl FnOnce(MultiplexedConnection) -> Fut,
    ) -> Result<T, SessionError>
    where
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let attempt = async {
            let mut checkout =
                Checkout {
                    object: Some(self.pool.get().await.map_err(|e| {
                        SessionError::Unavailable(StoreError::Connect(e.to_string()))
                    })?),
                    answered: false,
                };
            // A multiplexed connection is a cheap handle; the pooled object stays checked out.
            let conn = checkout.object.as_ref().map(|o| o.conn.clone());
            let Some(conn) = conn else {
                return Err(SessionError::Unavailable(StoreError::Connect(
                    "no connection".into(),
                )));
            };
            let result = work(conn).await;
            checkout.answered = match &result {
                Ok(_) => true,
                Err(e) => !(e.is_unrecoverable_error() || e.is_io_error() || e.is_timeout()),
            };
            result.map_err(classify)
        };
        tokio::time::timeout(self.command_timeout, attempt)
            .await
            .unwrap_or(Err(SessionError::Unavailable(StoreError::Timeout(
                self.command_timeout,
            ))))
    }
}

/// A checked-out connection that goes back to the pool only if Redis answered on it.
struct Checkout {
    object: Option<Object<Manager>>,
    answered: bool,
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let (false, Some(object)) = (self.answered, self.object.take()) {
            drop(Object::take(object));
        }
    }
}

fn push_mode(cmd: &mut Cmd, mode: Mode) {
    match mode {
        Mode::Update => cmd.arg("u").arg(""),
        Mode::Create { created_ms: None } => cmd.arg("n").arg(""),
        Mode::Create {
            created_ms: Some(created),
        } => cmd.arg("n").arg(created),
    };
}

fn is_noscript(e: &RedisError) -> bool {
    e.code() == Some("NOSCRIPT")
}

/// Transport trouble and a server that cannot serve now mean "unavailable" (503); anything
/// else means the data at the key is not a session of ours.
fn classify(e: RedisError) -> SessionError {
    let transient = matches!(
        e.code(),
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

fn outcome<T>(ttl: i64, value: T) -> Outcome<T> {
    match ttl {
        -1 => Outcome::Taken,
        t if t <= 0 => Outcome::Gone,
        t => Outcome::Done { ttl: ms(t), value },
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

/// `{ttl, {field, value, ...}}` or nil.
fn parse_loaded(reply: Value) -> Result<Option<Loaded>, SessionError> {
    let items = match reply {
        Value::Nil => return Ok(None),
        Value::Array(items) => items,
        other => return Err(unexpected(&other)),
    };
    let mut items = items.into_iter();
    let (Some(ttl), Some(Value::Array(flat))) = (items.next(), items.next()) else {
        return Err(SessionError::Corrupt("malformed session reply".into()));
    };
    let mut loaded = Loaded {
        ttl: ms(int(&ttl)?),
        created_ms: 0,
        fields: HashMap::with_capacity(flat.len() / 2),
    };
    let mut flat = flat.into_iter();
    while let (Some(field), Some(value)) = (flat.next(), flat.next()) {
        let (field, value) = (text(field)?, text(value)?);
        if field.is_empty() {
            loaded.created_ms = value
                .parse()
                .map_err(|_| SessionError::Corrupt("bad creation time".into()))?;
        } else {
            loaded.fields.insert(field, value);
        }
    }
    Ok(Some(loaded))
}

/// A pooled connection and the flag redis-rs raises when its socket drops.
pub(crate) struct Conn {
    conn: MultiplexedConnection,
    closed: Arc<AtomicBool>,
}

pub(crate) struct Manager {
    client: Client,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = RedisError;

    async fn create(&self) -> Result<Conn, RedisError> {
        let closed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&closed);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
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
