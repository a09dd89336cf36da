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

use redis::{Cmd, Value};

use super::{
    now_ms, stored_id, Counted, Counter, Found, IndexOp, IndexReply, IndexStatus, Indexed, Listed,
    ListedSession, Loaded, Mode, Outcome, Probed, Write, ENDED, MAX_DEADLINE_MS, META_ID,
    META_IDLE, META_USER,
};
use crate::connection::{
    hash_fields, Call, Connections, NotAHash, Ran, Repeat, Script, Stats, Wait,
};
use crate::error::Limit;
use crate::error::{SessionError, StoreError};
use crate::numbers::{millis, Digits};
use crate::token::StoreKey;
use crate::token::UserKeys;

struct Scripts {
    save: Script,
    incr: Script,
    take: Script,
    end: Script,
    rename: Script,
    user: Script,
}

pub(crate) struct RedisBackend {
    connections: Connections,
    scripts: Scripts,
    /// After each write, wait for replicas to acknowledge it.
    wait: Option<Wait>,
}

impl RedisBackend {
    pub(crate) fn new(connections: Connections, wait: Option<(usize, Duration)>) -> Self {
        Self {
            connections,
            wait: wait
                .filter(|&(replicas, _)| replicas > 0)
                .map(|(replicas, timeout)| Wait { replicas, timeout }),
            scripts: Scripts {
                save: Script::new(include_str!("lua/save.lua")),
                incr: Script::new(include_str!("lua/incr.lua")),
                take: Script::new(include_str!("lua/take.lua")),
                end: Script::new(include_str!("lua/end.lua")),
                rename: Script::new(include_str!("lua/rename.lua")),
                user: Script::new(include_str!("lua/user.lua")),
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
        let all = [&s.save, &s.incr, &s.take, &s.end, &s.rename, &s.user];
        let all = &all;
        self.connections
            .run(
                Repeat::Safe,
                |conn| async move { conn.load_scripts(all).await },
            )
            .await
    }

    /// The session at `key`, its expiry refreshed in the same round trip.
    pub(crate) async fn load(&self, key: &StoreKey, ttl: Duration) -> Result<Found, SessionError> {
        let ms = Digits::of(ttl_ms(ttl));
        let (key, ms) = (key.as_str().as_bytes(), ms.as_bytes());
        let fields = self
            .connections
            .run(
                Repeat::Safe,
                |conn| async move { conn.load_hash(key, ms).await },
            )
            .await?;
        Loaded::of_hash(fields.map_err(not_a_hash)?)
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
        let call = Call::new(&self.scripts.save, &[key.as_str()], |cmd| {
            save_args(cmd, write)
        });
        let (reply, _) = self.call(call, Repeat::Never).await?;
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
        let id = stored_id(id);
        let id = id.as_bytes();
        let ms = Digits::of(ttl_ms(write.ttl));
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
        let (hset, pexpire) = (&hset, &pexpire);
        self.connections
            .run(Repeat::Never, |conn| async move {
                conn.create_hash(hset, pexpire).await
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
                Mode::Create { id, .. } => cmd.arg(stored_id(id)),
                Mode::Update => cmd.arg(""),
            };
            if let Some(base) = c.base {
                cmd.arg(base);
            }
        };
        let call = Call::new(&self.scripts.incr, &[key.as_str()], args).then(load);
        let (reply, hash) = self.call(call, Repeat::Never).await?;
        match reply {
            Value::Array(items) => {
                let (status, value) = status_and_value(&items)?;
                if status == -5 {
                    return Err(SessionError::NotAnInteger {
                        key: c.field.into(),
                    });
                }
                let loaded = match hash.map(parse_hash).transpose()? {
                    Some(Found::Live(loaded)) if status == 1 => Some(loaded),
                    _ => None,
                };
                Ok(outcome(status, (value, loaded), value))
            }
            other => Err(unexpected(&other)),
        }
    }

    pub(crate) async fn take(
        &self,
        key: &StoreKey,
        field: &str,
        ttl: Duration,
    ) -> Result<Outcome<Option<String>>, SessionError> {
        let call = Call::new(&self.scripts.take, &[key.as_str()], |cmd| {
            cmd.arg(ttl_ms(ttl)).arg(field);
        });
        let (reply, _) = self.call(call, Repeat::Never).await?;
        match reply {
            Value::Int(status) => Ok(outcome(status, None, 0)),
            Value::Array(items) => {
                let mut items = items.into_iter();
                let status = items.next().as_ref().map(int).transpose()?.unwrap_or(0);
                let value = items.next().map(text).transpose()?;
                Ok(outcome(status, value, 0))
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
        let call = Call::new(&self.scripts.rename, &[old.as_str(), new.as_str()], |cmd| {
            cmd.arg(ttl_ms(marker_ttl)).arg(ttl_ms(ttl));
        });
        let (calls, wait) = (&[call], self.wait);
        let ran = self
            .connections
            .run(Repeat::Never, |conn| async move {
                // Two keys of two slots: never on a cluster.
                if !conn.one_server() {
                    return Ok(None);
                }
                conn.scripts(calls, wait).await.map(Some)
            })
            .await?;
        let Some(ran) = ran else {
            return Ok(None);
        };
        let reply = self.checked(ran)?.next().map_or(Value::Nil, |(r, _)| r);
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
        self.end_call(key, marker_ttl, read, true).await
    }

    /// `end.lua`; with `always` false, a key that holds nothing is left alone.
    async fn end_call(
        &self,
        key: &StoreKey,
        marker_ttl: Duration,
        read: bool,
        always: bool,
    ) -> Result<Found, SessionError> {
        // Ending again is harmless, but a second reading would find only the marker.
        let repeat = if read { Repeat::Never } else { Repeat::Safe };
        let flag = |on: bool| if on { "1" } else { "0" };
        let call = Call::new(&self.scripts.end, &[key.as_str()], |cmd| {
            cmd.arg(ttl_ms(marker_ttl))
                .arg(flag(read))
                .arg(flag(always));
        });
        let (reply, _) = self.call(call, repeat).await?;
        parse_hash(reply)
    }

    /// `PEXPIRE`s, one key each; a key that is gone stays gone. One pipeline on a single
    /// server; on a cluster, one command per key, all at once (a pipeline never spans slots).
    pub(crate) async fn touch(&self, keys: &[(StoreKey, i64)]) -> Result<(), SessionError> {
        let now = now_ms();
        // Past its deadline, a key expires by itself: its TTL never went beyond it.
        let cmds: Vec<Cmd> = keys
            .iter()
            .filter(|(_, deadline)| *deadline > now)
            .map(|(key, deadline)| {
                let mut cmd = redis::cmd("PEXPIRE");
                cmd.arg(key.as_str()).arg(deadline - now);
                cmd
            })
            .collect();
        if cmds.is_empty() {
            return Ok(());
        }
        let cmds = &cmds;
        self.connections
            .run(Repeat::Safe, |conn| async move { conn.each(cmds).await })
            .await
    }

    /// `PEXPIREAT … GT` on both keys of each index (one command per key, as `touch`).
    pub(crate) async fn keep_indexes(&self, users: &[(UserKeys, i64)]) -> Result<(), SessionError> {
        let cmds: Vec<Cmd> = users
            .iter()
            .flat_map(|(keys, until)| {
                [&keys.index, &keys.ids].map(|key| {
                    let mut cmd = redis::cmd("PEXPIREAT");
                    cmd.arg(key.as_str()).arg(*until).arg("GT");
                    cmd
                })
            })
            .collect();
        if cmds.is_empty() {
            return Ok(());
        }
        let cmds = &cmds;
        self.connections
            .run(Repeat::Safe, |conn| async move { conn.each(cmds).await })
            .await
    }

    pub(crate) async fn index(
        &self,
        keys: &UserKeys,
        op: IndexOp<'_>,
    ) -> Result<IndexReply, SessionError> {
        // Every action gives the same answer when repeated (an add or a move finds its own
        // entry; marks and removals are idempotent).
        let user_keys = [keys.index.as_str(), keys.ids.as_str()];
        let call = Call::new(&self.scripts.user, &user_keys, |cmd| index_args(cmd, &op));
        let (reply, _) = self.call(call, Repeat::Safe).await?;
        index_reply(reply)
    }

    pub(crate) async fn list(
        &self,
        keys: &UserKeys,
        _now_ms: i64,
        fields: &[&str],
    ) -> Result<Vec<Listed>, SessionError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(keys.ids.as_str());
        let cmd = &cmd;
        let map: HashMap<String, String> = self
            .connections
            .run(Repeat::Safe, |mut conn| async move {
                cmd.query_async(&mut conn).await
            })
            .await?;
        // Entries being ended ('!' key) are listed no more; the cut is no entry.
        let entries: Vec<(uuid::Uuid, StoreKey)> = map
            .into_iter()
            .filter(|(_, key)| !key.starts_with('!'))
            .filter_map(|(id, key)| {
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
        keys: &[(StoreKey, bool)],
        marker_ttl: Duration,
    ) -> Result<Vec<bool>, SessionError> {
        // Every one is attempted, whatever becomes of the others.
        let ends = keys
            .iter()
            .map(|(key, always)| self.end_call(key, marker_ttl, false, *always));
        let results = futures_util::future::join_all(ends).await;
        results
            .into_iter()
            .map(|found| Ok(matches!(found?, Found::Live(_))))
            .collect()
    }

    pub(crate) async fn probe(
        &self,
        keys: &[StoreKey],
        now_ms: i64,
    ) -> Result<Vec<Probed>, SessionError> {
        // One small pipeline per key (fine on a cluster), all at once.
        let probes = keys.iter().map(|key| {
            let mut pipe = redis::pipe();
            pipe.cmd("HGET")
                .arg(key.as_str())
                .arg("")
                .cmd("PTTL")
                .arg(key.as_str());
            async move {
                let pipe = &pipe;
                let (created, ttl): (Option<String>, i64) = self
                    .connections
                    .run(Repeat::Safe, |mut conn| async move {
                        pipe.query_async(&mut conn).await
                    })
                    .await?;
                Ok::<_, SessionError>(match created.as_deref() {
                    Some(ENDED) => Probed::Ended,
                    Some(_) if ttl > 0 => Probed::Live(now_ms.saturating_add(ttl)),
                    _ => Probed::Gone,
                })
            }
        });
        futures_util::future::try_join_all(probes).await
    }

    /// Runs one call (see [`Conn::scripts`](crate::connection::Conn::scripts)): the
    /// script's reply and its `then`'s, once enough replicas acknowledged.
    async fn call(
        &self,
        call: Call,
        repeat: Repeat,
    ) -> Result<(Value, Option<Value>), SessionError> {
        let (calls, wait) = (&[call], self.wait);
        let ran = self
            .connections
            .run(
                repeat,
                |conn| async move { conn.scripts(calls, wait).await },
            )
            .await?;
        Ok(self.checked(ran)?.next().unwrap_or((Value::Nil, None)))
    }

    /// The calls' replies, once every node acknowledged enough replicas.
    fn checked(
        &self,
        ran: Ran,
    ) -> Result<impl Iterator<Item = (Value, Option<Value>)>, SessionError> {
        if let Some(wait) = self.wait {
            // No reply from a `WAIT` counts as none acknowledged.
            let acked = ran.acked.iter().map(int).collect::<Result<Vec<_>, _>>()?;
            let least = acked.into_iter().min().unwrap_or(0);
            let acked = usize::try_from(least).unwrap_or(0);
            if acked < wait.replicas {
                return Err(SessionError::Unavailable(StoreError::NotReplicated {
                    wanted: wait.replicas,
                    acked,
                }));
            }
        }
        Ok(ran.replies.into_iter())
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
        let mut calls = vec![Call::new(&self.scripts.save, &[key.as_str()], |cmd| {
            save_args(cmd, write)
        })];
        for (keys, op) in index {
            let user_keys = [keys.index.as_str(), keys.ids.as_str()];
            calls.push(Call::new(&self.scripts.user, &user_keys, |cmd| {
                index_args(cmd, op)
            }));
        }
        // Never repeated as a whole; a script Redis lost is sent again alone.
        let (calls, wait) = (&calls, self.wait);
        let ran = self
            .connections
            .run(Repeat::Never, |conn| async move {
                conn.scripts(calls, wait).await
            })
            .await?;
        let mut replies = self.checked(ran)?.map(|(reply, _)| reply);
        let saved = save_outcome(replies.next().unwrap_or(Value::Nil))?;
        let indexed = replies.map(index_reply).collect::<Result<_, _>>()?;
        Ok((saved, indexed))
    }
}

/// The arguments of `save.lua` for `write`.
fn save_args(cmd: &mut Cmd, write: &Write<'_>) {
    push_mode(cmd, write.ttl, write.mode);
    let (keys, bytes) = write.check.map_or((0, 0), |l| (l.keys, l.session_bytes));
    // A new session stores its public id with its first write.
    let id = match write.mode {
        Mode::Create { id, .. } => Some(stored_id(id)),
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
    let clamp = |ms: &i64| *ms.min(&MAX_DEADLINE_MS);
    match op {
        IndexOp::Add {
            id,
            key,
            old,
            score_ms,
            now_ms,
            started_ms,
            until_ms,
            stale,
            limit,
        } => {
            let (max, policy) = limit.map_or((0, ""), |(max, policy)| (max, policy.as_arg()));
            cmd.arg("add")
                .arg(id.to_string())
                .arg(key.as_str())
                .arg(old.map_or("", StoreKey::as_str))
                .arg(clamp(score_ms))
                .arg(now_ms)
                .arg(started_ms)
                .arg(clamp(until_ms))
                .arg(stale)
                .arg(max)
                .arg(policy);
        }
        IndexOp::Move {
            id,
            old,
            key,
            score_ms,
            now_ms,
            until_ms,
        } => {
            cmd.arg("move")
                .arg(id.to_string())
                .arg(old.as_str())
                .arg(key.as_str())
                .arg(clamp(score_ms))
                .arg(now_ms)
                .arg(clamp(until_ms));
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
        IndexOp::Take {
            keep,
            now_ms,
            until_ms,
        } => {
            cmd.arg("take")
                .arg(keep.map(|k| k.to_string()).unwrap_or_default())
                .arg(now_ms)
                .arg(clamp(until_ms));
        }
        IndexOp::Stale { now_ms, n } => {
            cmd.arg("stale").arg(now_ms).arg(n);
        }
        IndexOp::Settle {
            now_ms,
            until_ms,
            entries,
        } => {
            cmd.arg("settle").arg(now_ms).arg(clamp(until_ms));
            for e in entries {
                cmd.arg(e.id.to_string())
                    .arg(e.key.as_str())
                    .arg(clamp(&e.score_ms));
            }
        }
    }
}

/// What `user.lua` answered: `{status, m, id, key, score, ...}`, the first `m` entries to
/// end, the rest stale.
fn index_reply(reply: Value) -> Result<IndexReply, SessionError> {
    let Value::Array(items) = reply else {
        return Err(unexpected(&reply));
    };
    let mut items = items.into_iter();
    let (Some(status), Some(m)) = (items.next(), items.next()) else {
        return Err(SessionError::Corrupt("a short reply from user.lua".into()));
    };
    let status = match int(&status)? {
        0 => IndexStatus::Refused,
        1 => IndexStatus::Done,
        2 => IndexStatus::OverLimit,
        _ => return Err(unexpected(&status)),
    };
    let m = usize::try_from(int(&m)?).unwrap_or(0);
    let mut entries = Vec::new();
    while let (Some(id), Some(key), Some(score)) = (items.next(), items.next(), items.next()) {
        let id = uuid::Uuid::parse_str(&text(id)?)
            .map_err(|_| SessionError::Corrupt("a user's index holds a bad id".into()))?;
        let score_ms = text(score)?
            .parse::<f64>()
            .map_err(|_| SessionError::Corrupt("a user's index holds a bad score".into()))?;
        entries.push(Indexed {
            id,
            key: StoreKey::from_raw(text(key)?),
            // Scores are integers below 2^52 (clamped when written).
            score_ms: score_ms as i64,
        });
    }
    let stale = entries.split_off(m.min(entries.len()));
    Ok(IndexReply {
        status,
        to_end: entries,
        stale,
    })
}

/// A TTL for `PEXPIRE` (which takes no 0) in milliseconds.
fn ttl_ms(d: Duration) -> u64 {
    millis(d).max(1)
}

fn push_mode(cmd: &mut Cmd, ttl: Duration, mode: Mode) {
    cmd.arg(ttl_ms(ttl));
    match mode {
        Mode::Update => cmd.arg("u").arg(""),
        Mode::Create { created_ms, .. } => cmd.arg("n").arg(created_ms),
    };
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
            limit: Limit::KeyCount,
            got,
        },
        -4 => Outcome::TooLarge {
            limit: Limit::SessionSize,
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
        // A number a script returns as text, to keep all 64 bits (see incr.lua).
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| unexpected(v)),
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

/// The session in a hash as a script returns it (a flat array; nil for none), or as RESP3
/// sends it (a map).
fn parse_hash(reply: Value) -> Result<Found, SessionError> {
    Loaded::of_hash(hash_fields(reply).map_err(not_a_hash)?)
}

fn not_a_hash(e: NotAHash) -> SessionError {
    match e {
        NotAHash::NotText => not_utf8(),
        NotAHash::Reply(v) => unexpected(&v),
    }
}
