//! The Redis backend: one hash per session; every command and script touches one key, so the
//! same code runs on a standalone server, behind Sentinel and on Redis Cluster (where each
//! command and each pipeline goes to the one node that owns its key).
//!
//! A read is a pipeline of `HGETALL` and `PEXPIRE`: one round trip, no script. Writes are Lua
//! scripts, because they must check that the session still exists and write in one step.
//! Connections come from the [connection layer](crate::connection), which replaces failed ones
//! and retries only what is safe to repeat.

use std::collections::HashMap;
use std::time::Duration;

use redis::{Cmd, RedisError, Value};

use super::{
    now_ms, Counted, Counter, Found, IndexOp, IndexReply, Listed, ListedSession, Loaded, Mode,
    Outcome, Write, KEY_COUNT, MAX_DEADLINE_MS, META_ID, META_IDLE, META_USER, SESSION_SIZE,
};
use crate::connection::{pack, Conn, Connections, Digits, Repeat, Stats};
use crate::error::{SessionError, StoreError};
use crate::fields::Fields;
use crate::token::StoreKey;
use crate::token::UserKeys;

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
    rename: Lua,
    user: Lua,
}

pub(crate) struct RedisBackend {
    connections: Connections,
    scripts: Scripts,
    /// After each write, wait for this many replicas to acknowledge it, at most this long.
    wait: Option<(usize, Duration)>,
}

impl RedisBackend {
    pub(crate) fn new(connections: Connections, wait: Option<(usize, Duration)>) -> Self {
        Self {
            connections,
            wait,
            scripts: Scripts {
                save: lua!("lua/save.lua"),
                incr: lua!("lua/incr.lua"),
                end: lua!("lua/end.lua"),
                rename: lua!("lua/rename.lua"),
                user: lua!("lua/user.lua"),
            },
        }
    }

    pub(crate) fn stats(&self) -> &Stats {
        self.connections.stats()
    }

    /// Opens the connections and loads every script, so that the first requests wait for
    /// neither a connection nor an `EVAL` fallback.
    pub(crate) async fn warm_up(&self, within: Duration) -> Result<(), SessionError> {
        self.connections.ready(within).await;
        let s = &self.scripts;
        let mut pipe = redis::pipe();
        for script in [&s.save, &s.incr, &s.end, &s.rename, &s.user] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(script.source).ignore();
        }
        let pipe = &pipe;
        self.connections
            .run(Repeat::Safe, |mut conn| async move {
                match conn {
                    // On a cluster, every primary (a node that joins later, or a promoted
                    // replica, learns a script from its first NOSCRIPT).
                    #[cfg(feature = "cluster")]
                    Conn::Cluster(mut cluster) => {
                        use redis::cluster_routing::{
                            MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo,
                        };
                        for cmd in pipe.cmd_iter() {
                            let all = RoutingInfo::MultiNode((
                                MultipleNodeRoutingInfo::AllMasters,
                                Some(ResponsePolicy::AllSucceeded),
                            ));
                            cluster.route_command(cmd.clone(), all).await?;
                        }
                        Ok(())
                    }
                    Conn::Direct(_) | Conn::Single(_) => pipe.exec_async(&mut conn).await,
                }
            })
            .await
    }

    /// `HGETALL` and `PEXPIRE` in one pipeline. `PEXPIRE` of a key that is gone does nothing,
    /// so a concurrent logout is never undone.
    pub(crate) async fn load(&self, key: &StoreKey, ttl: Duration) -> Result<Found, SessionError> {
        let (key, ms) = (key.as_str(), Digits::of(millis(ttl)));
        // Our own connection takes the two commands ready-encoded: one buffer, no builder.
        let packed = pack(&[
            &[b"HGETALL", key.as_bytes()],
            &[b"PEXPIRE", key.as_bytes(), ms.as_bytes()],
        ]);
        let (packed, ms) = (&packed, ms.as_bytes());
        self.connections
            .run(Repeat::Safe, |mut conn| async move {
                if let Conn::Direct(direct) = &conn {
                    let replies = direct.replies(packed, 2).await?;
                    let [hash, expired] = replies.split()?;
                    expired.check_is(b':')?;
                    // The fields stay in the reply's bytes.
                    let mut spans = hash.spans()?;
                    let mut fields = Fields::with_capacity(spans.len() / 2);
                    while let (Some(field), Some(value)) = (spans.next(), spans.next()) {
                        fields.push_span(field?, value?);
                    }
                    return Ok(match replies.into_text() {
                        Ok(text) => Loaded::of_hash(fields.in_text(text)),
                        Err(_) => Err(not_utf8()),
                    });
                }
                let mut pipe = redis::pipe();
                pipe.cmd("HGETALL")
                    .arg(key)
                    .cmd("PEXPIRE")
                    .arg(key)
                    .arg(ms)
                    .ignore();
                let (hash,): (Value,) = pipe.query_async(&mut conn).await?;
                Ok(parse_hash(hash))
            })
            .await?
    }

    pub(crate) async fn save(
        &self,
        key: &StoreKey,
        write: &Write<'_>,
    ) -> Result<Outcome<()>, SessionError> {
        let fresh = matches!(
            write.mode,
            Mode::Create {
                announced: false,
                ..
            }
        );
        if fresh && self.wait.is_none() {
            return self.create(key, write).await;
        }
        let reply = self
            .eval(&self.scripts.save, key, Repeat::Never, |cmd| {
                save_args(cmd, write)
            })
            .await?;
        save_outcome(reply)
    }

    /// A new session under a freshly drawn key (see [`Mode::Create`]): `HSET` and `PEXPIRE`
    /// in one transaction, no script (Redis runs a script's every call slower than the bare
    /// command). Under OOM the transaction is refused whole.
    async fn create(&self, key: &StoreKey, write: &Write<'_>) -> Result<Outcome<()>, SessionError> {
        let Mode::Create { created_ms, id, .. } = write.mode else {
            return Ok(Outcome::Gone);
        };
        let created = Digits::of(u64::try_from(created_ms).unwrap_or(0));
        let mut id_text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = id.hyphenated().encode_lower(&mut id_text).as_bytes();
        let ms = Digits::of(millis(write.ttl));
        let (key, ms) = (key.as_str().as_bytes(), ms.as_bytes());
        let mut hset: Vec<&[u8]> = Vec::with_capacity(6 + 2 * write.set.len());
        hset.extend([
            &b"HSET"[..],
            key,
            b"",
            created.as_bytes(),
            META_ID.as_bytes(),
            id,
        ]);
        for (field, value) in &write.set {
            hset.extend([field.as_bytes(), value.as_bytes()]);
        }
        let pexpire = [&b"PEXPIRE"[..], key, ms];
        let hset = &hset;
        self.connections
            .run(Repeat::Never, |mut conn| async move {
                if let Conn::Direct(direct) = &conn {
                    // Ready-encoded, as a load: one buffer, no builder.
                    let packed = pack(&[&[b"MULTI"], hset, &pexpire, &[b"EXEC"]]);
                    let replies = direct.replies(&packed, 4).await?;
                    let [multi, queued, queued_too, exec] = replies.split()?;
                    for reply in [multi, queued, queued_too] {
                        reply.check_is(b'+')?;
                    }
                    exec.check_items()?;
                    return Ok(());
                }
                let mut pipe = redis::pipe();
                pipe.atomic();
                let cmd = pipe.cmd("HSET");
                for arg in &hset[1..] {
                    cmd.arg(*arg);
                }
                cmd.ignore();
                pipe.cmd("PEXPIRE").arg(key).arg(ms).ignore();
                pipe.exec_async(&mut conn).await
            })
            .await?;
        Ok(Outcome::Done(()))
    }

    pub(crate) async fn incr(
        &self,
        key: &StoreKey,
        c: &Counter<'_>,
    ) -> Result<Outcome<Counted>, SessionError> {
        // A session not loaded yet comes back with the counter: a bare HGETALL right after
        // the script, in the same round trip (a script's HGETALL of a large hash is slower).
        let load = c.load.then(|| {
            let mut cmd = redis::cmd("HGETALL");
            cmd.arg(key.as_str());
            cmd
        });
        let args = |cmd: &mut Cmd| {
            push_mode(cmd, c.ttl, c.mode);
            cmd.arg(c.field).arg(c.delta).arg(c.max_keys.unwrap_or(0));
            match c.mode {
                Mode::Create { id, .. } => cmd.arg(id.to_string()),
                Mode::Update => cmd.arg(""),
            };
            if let Some(base) = c.base {
                cmd.arg(base);
            }
        };
        let (reply, hash) = self
            .eval_then(
                &self.scripts.incr,
                &[key],
                Repeat::Never,
                self.wait,
                args,
                load,
            )
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
                let loaded = match hash.map(parse_hash).transpose()? {
                    Some(Found::Live(loaded)) if status == 1 => Some(loaded),
                    _ => None,
                };
                Ok(outcome(status, (value, loaded), value))
            }
            other => Err(unexpected(&other)),
        }
    }

    pub(crate) async fn rename(
        &self,
        old: &StoreKey,
        new: &StoreKey,
        marker_ttl: Duration,
        ttl: Duration,
    ) -> Result<Option<Outcome<(i64, Option<String>)>>, SessionError> {
        let call = Call::new(&self.scripts.rename, &[old, new], |cmd| {
            cmd.arg(millis(marker_ttl)).arg(millis(ttl));
        });
        let (evalsha, eval) = (
            &with_wait(&call.evalsha, self.wait),
            &with_wait(&call.eval, self.wait),
        );
        let replies: Option<Vec<Value>> = self
            .connections
            .run(Repeat::Never, |mut conn| async move {
                // Two keys of two slots: never on a cluster.
                if !matches!(conn, Conn::Direct(_) | Conn::Single(_)) {
                    return Ok(None);
                }
                match evalsha.query_async::<Vec<Value>>(&mut conn).await {
                    Err(e) if is_noscript(&e) => eval.query_async(&mut conn).await.map(Some),
                    other => other.map(Some),
                }
            })
            .await?;
        let Some(replies) = replies else {
            return Ok(None);
        };
        let mut replies = replies.into_iter();
        let reply = replies.next().unwrap_or(Value::Nil);
        check_acked(replies.next(), self.wait)?;
        let Value::Array(items) = reply else {
            return Err(unexpected(&reply));
        };
        let mut items = items.into_iter();
        let status = items.next().as_ref().map(int).transpose()?.unwrap_or(0);
        if status != 1 {
            return Ok(Some(outcome(status, (0, None), 0)));
        }
        let created = items
            .next()
            .map(text)
            .transpose()?
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                SessionError::Corrupt("a session hash without its creation time".into())
            })?;
        let user = items
            .next()
            .map(text)
            .transpose()?
            .filter(|u| !u.is_empty());
        Ok(Some(Outcome::Done((created, user))))
    }

    pub(crate) async fn end(
        &self,
        key: &StoreKey,
        marker_ttl: Duration,
        read: bool,
    ) -> Result<Found, SessionError> {
        // Ending again is harmless, but a second reading would find only the marker.
        let repeat = if read { Repeat::Never } else { Repeat::Safe };
        let reply = self
            .eval(&self.scripts.end, key, repeat, |cmd| {
                cmd.arg(millis(marker_ttl))
                    .arg(if read { "1" } else { "0" });
            })
            .await?;
        parse_hash(reply)
    }

    /// `PEXPIRE`s, one key each; a key that is gone stays gone. One pipeline on a single
    /// server; on a cluster, one command per key, all at once (a pipeline never spans slots).
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
        let pipe = &pipe;
        self.connections
            .run(Repeat::Safe, |mut conn| async move {
                match conn {
                    #[cfg(feature = "cluster")]
                    Conn::Cluster(_) => {
                        let sends = pipe.cmd_iter().map(|cmd| {
                            let mut conn = conn.clone();
                            async move { cmd.query_async::<Value>(&mut conn).await }
                        });
                        futures_util::future::try_join_all(sends).await.map(drop)
                    }
                    Conn::Direct(_) | Conn::Single(_) => pipe.exec_async(&mut conn).await,
                }
            })
            .await
    }

    pub(crate) async fn index(
        &self,
        keys: &UserKeys,
        op: IndexOp<'_>,
    ) -> Result<IndexReply, SessionError> {
        // Every action gives the same answer when repeated (an add or a move finds its own
        // entry; marks and removals are idempotent).
        let user_keys = [&keys.index, &keys.ids];
        let reply = self
            .eval_keys(
                &self.scripts.user,
                &user_keys,
                Repeat::Safe,
                self.wait,
                |cmd| index_args(cmd, &op),
            )
            .await?;
        index_reply(reply)
    }

    pub(crate) async fn list(
        &self,
        keys: &UserKeys,
        now_ms: i64,
        fields: &[&str],
    ) -> Result<Vec<Listed>, SessionError> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGEBYSCORE")
            .arg(keys.index.as_str())
            .arg(now_ms)
            .arg("+inf")
            .cmd("HGETALL")
            .arg(keys.ids.as_str());
        let pipe = &pipe;
        let (ids, map): (Vec<String>, HashMap<String, String>) = self
            .connections
            .run(Repeat::Safe, |mut conn| async move {
                pipe.query_async(&mut conn).await
            })
            .await?;
        // Entries being ended ('!' key) are listed no more.
        let entries: Vec<(uuid::Uuid, StoreKey)> = ids
            .into_iter()
            .filter_map(|id| {
                let key = map.get(&id).filter(|k| !k.starts_with('!'))?.clone();
                Some((uuid::Uuid::parse_str(&id).ok()?, StoreKey::from_raw(key)))
            })
            .collect();
        // One small pipeline per session (one key each: fine on a cluster), all at once.
        let reads = entries.iter().map(|(_, key)| {
            let mut pipe = redis::pipe();
            pipe.cmd("HMGET")
                .arg(key.as_str())
                .arg("")
                .arg(META_USER)
                .arg(META_IDLE)
                .arg(fields)
                .cmd("PTTL")
                .arg(key.as_str());
            async move {
                let pipe = &pipe;
                self.connections
                    .run(Repeat::Safe, |mut conn| async move {
                        pipe.query_async::<(Vec<Option<String>>, i64)>(&mut conn)
                            .await
                    })
                    .await
            }
        });
        let replies = futures_util::future::try_join_all(reads).await?;
        Ok(entries
            .into_iter()
            .zip(replies)
            .map(|((id, _), (mut values, ttl_ms))| {
                let mut head = values.drain(..3.min(values.len()));
                let created = head.next().flatten();
                let user = head.next().flatten();
                let idle = head.next().flatten();
                drop(head);
                let session = created
                    .and_then(|c| c.parse::<i64>().ok())
                    .filter(|_| ttl_ms > 0)
                    .map(|created_ms| ListedSession {
                        created_ms,
                        user,
                        idle_ms: idle.and_then(|i| i.parse().ok()),
                        ttl_ms,
                        values,
                    });
                Listed { id, session }
            })
            .collect())
    }

    pub(crate) async fn end_many(
        &self,
        keys: &[StoreKey],
        marker_ttl: Duration,
    ) -> Result<(), SessionError> {
        // Every one is attempted, whatever becomes of the others.
        let ends = keys.iter().map(|key| self.end(key, marker_ttl, false));
        let results = futures_util::future::join_all(ends).await;
        results.into_iter().collect::<Result<Vec<_>, _>>().map(drop)
    }

    /// Runs a script by its SHA1, sending the source only if Redis (or, on a cluster, the
    /// node that owns the key) lost it: a restart, a flush, a new node.
    async fn eval(
        &self,
        script: &Lua,
        key: &StoreKey,
        repeat: Repeat,
        args: impl Fn(&mut Cmd),
    ) -> Result<Value, SessionError> {
        self.eval_keys(script, &[key], repeat, self.wait, args)
            .await
    }

    /// As [`eval`](Self::eval), with several keys (all in one cluster slot) and the given
    /// replica wait.
    async fn eval_keys(
        &self,
        script: &Lua,
        keys: &[&StoreKey],
        repeat: Repeat,
        wait: Option<(usize, Duration)>,
        args: impl Fn(&mut Cmd),
    ) -> Result<Value, SessionError> {
        self.eval_then(script, keys, repeat, wait, args, None)
            .await
            .map(|(reply, _)| reply)
    }

    /// As [`eval_keys`](Self::eval_keys), with `then` (a command on the same keys) right
    /// after the script in the same pipeline; returns its reply too.
    async fn eval_then(
        &self,
        script: &Lua,
        keys: &[&StoreKey],
        repeat: Repeat,
        wait: Option<(usize, Duration)>,
        args: impl Fn(&mut Cmd),
        then: Option<Cmd>,
    ) -> Result<(Value, Option<Value>), SessionError> {
        let call = Call::new(script, keys, args);
        let pipeline = |cmd: &Cmd| {
            let mut pipe = redis::pipe();
            pipe.add_command(cmd.clone());
            if let Some(then) = &then {
                pipe.add_command(then.clone());
            }
            // With `wait_for_replicas`, a WAIT rides in the same pipeline: still one round trip.
            if let Some((wanted, timeout)) = wait.filter(|(n, _)| *n > 0) {
                pipe.cmd("WAIT").arg(wanted).arg(millis(timeout));
            }
            pipe
        };
        let (evalsha, eval) = (&pipeline(&call.evalsha), &pipeline(&call.eval));
        let replies: Vec<Value> = self
            .connections
            .run(repeat, |mut conn| async move {
                match evalsha.query_async::<Vec<Value>>(&mut conn).await {
                    Err(e) if is_noscript(&e) => eval.query_async::<Vec<Value>>(&mut conn).await,
                    other => other,
                }
            })
            .await?;
        let mut replies = replies.into_iter();
        let reply = replies.next().unwrap_or(Value::Nil);
        let then_reply = then.as_ref().and_then(|_| replies.next());
        check_acked(replies.next(), wait)?;
        Ok((reply, then_reply))
    }

    /// Several scripts, each on its own keys, in one round trip: one pipeline on a single
    /// server (run in order), all at once on a cluster (no order between nodes). Never
    /// repeated as a whole; a script Redis lost is sent again alone.
    async fn eval_all(&self, calls: &[Call]) -> Result<Vec<Value>, SessionError> {
        let wait = self.wait;
        self.connections
            .run(Repeat::Never, |conn| async move {
                match conn {
                    #[cfg(feature = "cluster")]
                    Conn::Cluster(_) => {
                        let sends = calls.iter().map(|call| {
                            let mut conn = conn.clone();
                            let evalsha = with_wait(&call.evalsha, wait);
                            let eval = with_wait(&call.eval, wait);
                            async move {
                                match evalsha.query_async::<Vec<Value>>(&mut conn).await {
                                    Err(e) if is_noscript(&e) => {
                                        eval.query_async::<Vec<Value>>(&mut conn).await
                                    }
                                    other => other,
                                }
                            }
                        });
                        futures_util::future::try_join_all(sends).await
                    }
                    Conn::Direct(_) | Conn::Single(_) => {
                        let mut conn = conn;
                        let mut pipe = redis::pipe();
                        pipe.ignore_errors();
                        for call in calls {
                            pipe.add_command(call.evalsha.clone());
                        }
                        let wait = wait.filter(|(n, _)| *n > 0);
                        let wait_cmd = wait.map(|(wanted, timeout)| {
                            let mut cmd = redis::cmd("WAIT");
                            cmd.arg(wanted).arg(millis(timeout));
                            cmd
                        });
                        if let Some(cmd) = &wait_cmd {
                            pipe.add_command(cmd.clone());
                        }
                        let mut replies = pipe.query_async::<Vec<Value>>(&mut conn).await?;
                        let mut acked = wait_cmd.is_some().then(|| replies.pop()).flatten();
                        let mut all = Vec::with_capacity(calls.len());
                        for (call, reply) in calls.iter().zip(replies) {
                            let reply = match reply {
                                Value::ServerError(e) if e.code() == "NOSCRIPT" => {
                                    // Sent again after the WAIT: that one no longer counts.
                                    acked = None;
                                    call.eval.query_async::<Value>(&mut conn).await?
                                }
                                other => other.extract_error()?,
                            };
                            all.push(vec![reply]);
                        }
                        if let (None, Some(cmd)) = (&acked, &wait_cmd) {
                            acked = Some(cmd.query_async::<Value>(&mut conn).await?);
                        }
                        if let (Some(acked), Some(last)) = (acked, all.last_mut()) {
                            last.push(acked);
                        }
                        Ok(all)
                    }
                }
            })
            .await?
            .into_iter()
            .map(|replies| {
                let mut replies = replies.into_iter();
                let reply = replies.next().unwrap_or(Value::Nil);
                check_acked(replies.next(), wait).map(|()| reply)
            })
            .collect()
    }

    /// A new session's creation and the changes to user indexes that announce it, in one
    /// round trip (see [`eval_all`](Self::eval_all)): the caller relies on no order.
    pub(crate) async fn save_indexed(
        &self,
        key: &StoreKey,
        write: &Write<'_>,
        index: &[(UserKeys, IndexOp<'_>)],
    ) -> Result<(Outcome<()>, Vec<IndexReply>), SessionError> {
        if index.is_empty() {
            return Ok((self.save(key, write).await?, Vec::new()));
        }
        let mut calls = vec![Call::new(&self.scripts.save, &[key], |cmd| {
            save_args(cmd, write)
        })];
        for (keys, op) in index {
            let user_keys = [&keys.index, &keys.ids];
            calls.push(Call::new(&self.scripts.user, &user_keys, |cmd| {
                index_args(cmd, op)
            }));
        }
        let mut replies = self.eval_all(&calls).await?.into_iter();
        let saved = save_outcome(replies.next().unwrap_or(Value::Nil))?;
        let indexed = replies.map(index_reply).collect::<Result<_, _>>()?;
        Ok((saved, indexed))
    }
}

/// A script call, by SHA1 and with its source for when Redis lost it.
struct Call {
    evalsha: Cmd,
    eval: Cmd,
}

impl Call {
    fn new(script: &Lua, keys: &[&StoreKey], args: impl Fn(&mut Cmd)) -> Self {
        let build = |verb: &str, body: &str| {
            let mut cmd = redis::cmd(verb);
            cmd.arg(body).arg(keys.len());
            for key in keys {
                cmd.arg(key.as_str());
            }
            args(&mut cmd);
            cmd
        };
        Self {
            evalsha: build("EVALSHA", &script.sha),
            eval: build("EVAL", script.source),
        }
    }
}

/// `cmd`, followed by a `WAIT` when writes must reach replicas.
fn with_wait(cmd: &Cmd, wait: Option<(usize, Duration)>) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.add_command(cmd.clone());
    if let Some((wanted, timeout)) = wait.filter(|(n, _)| *n > 0) {
        pipe.cmd("WAIT").arg(wanted).arg(millis(timeout));
    }
    pipe
}

/// Fails when fewer replicas than asked acknowledged a write (`acked`: WAIT's reply).
fn check_acked(acked: Option<Value>, wait: Option<(usize, Duration)>) -> Result<(), SessionError> {
    let (Some(acked), Some((wanted, _))) = (acked, wait) else {
        return Ok(());
    };
    let acked = usize::try_from(int(&acked)?).unwrap_or(0);
    if acked < wanted {
        return Err(SessionError::Unavailable(StoreError::NotReplicated {
            wanted,
            acked,
        }));
    }
    Ok(())
}

/// The arguments of `save.lua` for `write`.
fn save_args(cmd: &mut Cmd, write: &Write<'_>) {
    push_mode(cmd, write.ttl, write.mode);
    let (keys, bytes) = write.check.map_or((0, 0), |l| (l.keys, l.session_bytes));
    // A new session stores its public id with its first write.
    let id = match write.mode {
        Mode::Create { id, .. } => Some(id.to_string()),
        Mode::Update => None,
    };
    cmd.arg(if write.clear { "1" } else { "0" })
        .arg(keys)
        .arg(bytes)
        .arg(write.set.len() + usize::from(id.is_some()));
    for (field, value) in &write.set {
        cmd.arg(*field).arg(*value);
    }
    if let Some(id) = id {
        cmd.arg(META_ID).arg(id);
    }
    for field in &write.delete {
        cmd.arg(*field);
    }
}

/// What `save.lua` answered.
fn save_outcome(reply: Value) -> Result<Outcome<()>, SessionError> {
    match reply {
        Value::Int(status) => Ok(outcome(status, (), 0)),
        Value::Array(items) => status_and_value(&items).map(|(s, got)| outcome(s, (), got)),
        other => Err(unexpected(&other)),
    }
}

/// The arguments of `user.lua` for `op`.
fn index_args(cmd: &mut Cmd, op: &IndexOp<'_>) {
    match op {
        IndexOp::Add {
            id,
            key,
            old,
            deadline_ms,
            now_ms,
            started_ms,
        } => {
            cmd.arg("add")
                .arg(id.to_string())
                .arg(key.as_str())
                .arg(old.map_or("", StoreKey::as_str))
                .arg(deadline_ms.min(&MAX_DEADLINE_MS))
                .arg(now_ms)
                .arg(started_ms);
        }
        IndexOp::Move { id, old, key } => {
            cmd.arg("move")
                .arg(id.to_string())
                .arg(old.as_str())
                .arg(key.as_str());
        }
        IndexOp::Remove(entries) => {
            cmd.arg("remove");
            for (id, key) in entries {
                cmd.arg(id.to_string()).arg(key.as_str());
            }
        }
        IndexOp::Mark(ids) => {
            cmd.arg("mark");
            for id in ids {
                cmd.arg(id.to_string());
            }
        }
        IndexOp::Take { keep, now_ms } => {
            cmd.arg("take")
                .arg(keep.map(|k| k.to_string()).unwrap_or_default())
                .arg(now_ms);
        }
    }
}

/// What `user.lua` answered: a status, or `id, key` pairs.
fn index_reply(reply: Value) -> Result<IndexReply, SessionError> {
    Ok(match reply {
        Value::Int(n) => IndexReply {
            indexed: n == 1,
            entries: Vec::new(),
        },
        Value::Array(items) => {
            let mut items = items.into_iter();
            let mut entries = Vec::new();
            while let (Some(id), Some(key)) = (items.next(), items.next()) {
                let id = uuid::Uuid::parse_str(&text(id)?)
                    .map_err(|_| SessionError::Corrupt("a user's index holds a bad id".into()))?;
                entries.push((id, StoreKey::from_raw(text(key)?)));
            }
            IndexReply {
                indexed: false,
                entries,
            }
        }
        other => return Err(unexpected(&other)),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn push_mode(cmd: &mut Cmd, ttl: Duration, mode: Mode) {
    cmd.arg(millis(ttl));
    match mode {
        Mode::Update => cmd.arg("u").arg(""),
        Mode::Create { created_ms, .. } => cmd.arg("n").arg(created_ms),
    };
}

fn is_noscript(e: &RedisError) -> bool {
    e.code() == Some("NOSCRIPT")
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
        Value::BulkString(b) => String::from_utf8(b).map_err(|_| not_utf8()),
        other => Err(unexpected(&other)),
    }
}

fn not_utf8() -> SessionError {
    SessionError::Corrupt("a session field is not UTF-8".into())
}

/// The session in a hash as RESP3 sends it (a map), or as a script returns it (a flat array).
fn parse_hash(reply: Value) -> Result<Found, SessionError> {
    let text = |(f, v)| Ok((text(f)?, text(v)?));
    let pairs: Vec<(String, String)> = match reply {
        Value::Nil => return Ok(Found::Absent),
        Value::Map(pairs) => pairs.into_iter().map(text).collect::<Result<_, _>>()?,
        Value::Array(flat) => {
            let mut flat = flat.into_iter();
            std::iter::from_fn(|| Some((flat.next()?, flat.next()?)))
                .map(text)
                .collect::<Result<_, _>>()?
        }
        other => return Err(unexpected(&other)),
    };
    Loaded::of_hash(Fields::of_hash(pairs))
}
