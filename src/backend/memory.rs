//! The in-process backend: the Redis backend's semantics in a `HashMap`, for local
//! development and for users' unit tests. Sessions live as long as the store; nothing is
//! shared between processes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{
    is_meta, now_ms, Counted, Counter, Found, IndexOp, IndexReply, IndexStatus, Indexed, Limits,
    Listed, ListedSession, Loaded, Mode, Outcome, Probed, Write, MAX_DEADLINE_MS, META_ID,
    META_IDLE, META_USER,
};
use crate::error::Limit;
use crate::error::SessionError;
use crate::fields::Fields;
use crate::token::StoreKey;
use crate::token::UserKeys;

/// Expired entries are swept once every this many writes, so memory stays bounded.
const SWEEP_EVERY: u64 = 1024;

struct Entry {
    created_ms: i64,
    expires_ms: i64,
    /// The marker of an ended session (see `end.lua`).
    ended: bool,
    fields: HashMap<String, String>,
}

#[derive(Default)]
struct Map {
    entries: HashMap<StoreKey, Entry>,
    /// Users' indexes of sessions (user.lua), by index key.
    users: HashMap<StoreKey, UserIndex>,
    writes: u64,
}

impl Map {
    /// The entry at `key` if it has not expired; an expired one is removed.
    fn live(&mut self, key: &StoreKey, now: i64) -> Option<&mut Entry> {
        if self.entries.get(key)?.expires_ms <= now {
            self.entries.remove(key);
            return None;
        }
        self.entries.get_mut(key)
    }

    /// The entry a guarded write goes to: a live one for `Update`, a new one for `Create`.
    fn target(&mut self, key: &StoreKey, mode: Mode, now: i64) -> Outcome<&mut Entry> {
        self.writes += 1;
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            self.entries.retain(|_, e| e.expires_ms > now);
        }
        let ended = match self.live(key, now) {
            None => None,
            Some(entry) => Some(entry.ended),
        };
        match (mode, ended) {
            (Mode::Update, None) => Outcome::Gone,
            (Mode::Update, Some(true)) => Outcome::Ended,
            (Mode::Create { .. }, Some(_)) => Outcome::Taken,
            (Mode::Update, Some(false)) => match self.entries.get_mut(key) {
                Some(entry) => Outcome::Done(entry),
                None => Outcome::Gone,
            },
            (Mode::Create { created_ms, id, .. }, None) => {
                Outcome::Done(self.entries.entry(key.clone()).or_insert(Entry {
                    created_ms,
                    expires_ms: now,
                    ended: false,
                    fields: HashMap::from([(META_ID.to_owned(), super::stored_id(id))]),
                }))
            }
        }
    }
}

/// One user's index (user.lua): public id → (session key, '!' first when being ended;
/// score), the cut, and when it all expires.
#[derive(Default)]
struct UserIndex {
    entries: HashMap<uuid::Uuid, (String, i64)>,
    cut: Option<i64>,
    expires_ms: i64,
}

impl UserIndex {
    /// Marks an entry as being ended; the entry.
    fn mark(&mut self, id: uuid::Uuid) -> Option<Indexed> {
        let (key, score) = self.entries.get_mut(&id)?;
        if !key.starts_with('!') {
            key.insert(0, '!');
        }
        Some(indexed(id, &key[1..], *score))
    }

    /// Whether `id`'s entry holds `key` (marked or not).
    fn holds(&self, id: uuid::Uuid, key: &StoreKey) -> bool {
        self.entries
            .get(&id)
            .is_some_and(|(k, _)| k.strip_prefix('!').unwrap_or(k) == key.as_str())
    }

    /// Up to `n` stale entries, lowest scores first (as `ZRANGEBYSCORE`), leased (see
    /// user.lua).
    fn stale(&mut self, now_ms: i64, n: usize) -> Vec<Indexed> {
        let mut stale: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, (_, score))| *score < now_ms)
            .map(|(id, (key, score))| indexed(*id, key.strip_prefix('!').unwrap_or(key), *score))
            .collect();
        stale.sort_by_key(|e| (e.score_ms, e.id.to_string()));
        stale.truncate(n);
        for e in &stale {
            if let Some(entry) = self.entries.get_mut(&e.id) {
                entry.1 = now_ms.saturating_add(STALE_LEASE_MS);
            }
        }
        stale
    }

    /// Moves the expiry on to `until_ms`, and 10 minutes past the cut (user.lua's `expire`).
    fn expire(&mut self, until_ms: i64) {
        let cut = self.cut.map_or(0, |c| c.saturating_add(600_000));
        self.expires_ms = self.expires_ms.max(until_ms).max(cut);
    }
}

/// How long a stale entry handed out for checking is not handed out again (user.lua).
const STALE_LEASE_MS: i64 = 5000;

fn indexed(id: uuid::Uuid, key: &str, score_ms: i64) -> Indexed {
    Indexed {
        id,
        key: StoreKey::from_raw(key.to_owned()),
        score_ms,
    }
}

fn expiry(now: i64, ttl: Duration) -> i64 {
    now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// The key count and size the session would have after `write`, as save.lua counts them.
fn over_limit(fields: &HashMap<String, String>, write: &Write<'_>, limits: Limits) -> Outcome<()> {
    let mut size: HashMap<&str, usize> = HashMap::new();
    if !write.clear {
        size.extend(
            fields
                .iter()
                .filter(|(k, _)| !is_meta(k))
                .map(|(k, v)| (k.as_str(), k.len() + v.len())),
        );
    }
    for (k, v) in write.set.iter().filter(|(k, _)| !is_meta(k)) {
        size.insert(k, k.len() + v.len());
    }
    for k in &write.delete {
        size.remove(k);
    }
    let bytes: usize = size.values().sum();
    if size.len() > limits.keys {
        Outcome::TooLarge {
            limit: Limit::KeyCount,
            got: size.len(),
        }
    } else if bytes > limits.session_bytes {
        Outcome::TooLarge {
            limit: Limit::SessionSize,
            got: bytes,
        }
    } else {
        Outcome::Done(())
    }
}

#[derive(Default)]
pub(crate) struct MemoryBackend {
    map: Mutex<Map>,
}

impl MemoryBackend {
    fn lock(&self) -> MutexGuard<'_, Map> {
        // Every change below is applied after its checks, so the map is whole even if a
        // panic elsewhere poisoned the lock.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) async fn load(&self, key: &StoreKey, ttl: Duration) -> Result<Found, SessionError> {
        let now = now_ms();
        Ok(match self.lock().live(key, now) {
            None => Found::Absent,
            Some(entry) => {
                entry.expires_ms = expiry(now, ttl);
                if entry.ended {
                    Found::Ended
                } else {
                    Found::Live(Loaded::from_fields(
                        entry.created_ms,
                        Fields::of_hash(entry.fields.clone()),
                    ))
                }
            }
        })
    }

    pub(crate) async fn save(
        &self,
        key: &StoreKey,
        write: &Write<'_>,
    ) -> Result<Outcome<()>, SessionError> {
        let now = now_ms();
        let mut map = self.lock();
        Ok(match map.target(key, write.mode, now) {
            Outcome::Done(entry) => {
                if let Some(limits) = write.check {
                    if let over @ Outcome::TooLarge { .. } =
                        over_limit(&entry.fields, write, limits)
                    {
                        return Ok(over);
                    }
                }
                entry.expires_ms = expiry(now, write.ttl);
                if write.clear {
                    entry.fields.retain(|k, _| is_meta(k));
                }
                for (field, value) in &write.set {
                    entry
                        .fields
                        .insert((*field).to_owned(), (*value).to_owned());
                }
                for field in &write.delete {
                    entry.fields.remove(*field);
                }
                Outcome::Done(())
            }
            other => other.map(|_| ()),
        })
    }

    pub(crate) async fn incr(
        &self,
        key: &StoreKey,
        c: &Counter<'_>,
    ) -> Result<Outcome<Counted>, SessionError> {
        let not_an_integer = || SessionError::NotAnInteger {
            key: c.field.into(),
        };
        let now = now_ms();
        let mut map = self.lock();
        let entry = match map.target(key, c.mode, now) {
            Outcome::Done(entry) => entry,
            other => return Ok(other.map(|_| (0, None))),
        };
        // Check before writing anything, as HINCRBY does.
        let old = match (c.base, entry.fields.get(c.field)) {
            (Some(base), _) => base,
            (None, Some(v)) => v.parse().map_err(|_| not_an_integer())?,
            (None, None) => 0,
        };
        let new = old.checked_add(c.delta).ok_or_else(not_an_integer)?;
        if let Some(max) = c.max_keys {
            let keys = entry.fields.keys().filter(|k| !is_meta(k)).count() + 1;
            if !entry.fields.contains_key(c.field) && keys > max {
                return Ok(Outcome::TooLarge {
                    limit: Limit::KeyCount,
                    got: keys,
                });
            }
        }
        entry.expires_ms = expiry(now, c.ttl);
        entry.fields.insert(c.field.to_owned(), new.to_string());
        let loaded = c
            .load
            .then(|| Loaded::from_fields(entry.created_ms, Fields::of_hash(entry.fields.clone())));
        Ok(Outcome::Done((new, loaded)))
    }

    pub(crate) async fn take(
        &self,
        key: &StoreKey,
        field: &str,
        ttl: Duration,
    ) -> Result<Outcome<Option<String>>, SessionError> {
        let now = now_ms();
        let mut map = self.lock();
        Ok(map.target(key, Mode::Update, now).map(|entry| {
            entry.expires_ms = expiry(now, ttl);
            entry.fields.remove(field)
        }))
    }

    pub(crate) async fn rename(
        &self,
        old: &StoreKey,
        new: &StoreKey,
        marker_ttl: Duration,
        ttl: Duration,
    ) -> Result<Option<Outcome<(i64, Option<String>)>>, SessionError> {
        let now = now_ms();
        let mut map = self.lock();
        let state = map.live(old, now).map(|e| e.ended);
        if state == Some(false) && map.live(new, now).is_some() {
            return Ok(Some(Outcome::Taken));
        }
        let marker = Entry {
            created_ms: 0,
            expires_ms: expiry(now, marker_ttl),
            ended: true,
            fields: HashMap::new(),
        };
        let moved = map.entries.insert(old.clone(), marker);
        Ok(Some(match (state, moved) {
            (Some(false), Some(mut entry)) => {
                entry.expires_ms = expiry(now, ttl);
                let done = (entry.created_ms, entry.fields.get(META_USER).cloned());
                map.entries.insert(new.clone(), entry);
                Outcome::Done(done)
            }
            (Some(true), _) => Outcome::Ended,
            _ => Outcome::Gone,
        }))
    }

    pub(crate) async fn end(
        &self,
        key: &StoreKey,
        marker_ttl: Duration,
        read: bool,
    ) -> Result<Found, SessionError> {
        let now = now_ms();
        let mut map = self.lock();
        map.live(key, now);
        let marker = Entry {
            created_ms: 0,
            expires_ms: expiry(now, marker_ttl),
            ended: true,
            fields: HashMap::new(),
        };
        Ok(match map.entries.insert(key.clone(), marker) {
            None => Found::Absent,
            Some(e) if e.ended => Found::Ended,
            Some(e) => Found::Live(Loaded::from_fields(
                e.created_ms,
                Fields::of_hash(if read {
                    e.fields
                } else {
                    // As `end.lua`: the user only.
                    e.fields
                        .into_iter()
                        .filter(|(k, _)| k == META_USER)
                        .collect()
                }),
            )),
        })
    }

    pub(crate) async fn save_indexed(
        &self,
        key: &StoreKey,
        write: &Write<'_>,
        index: &[(UserKeys, IndexOp<'_>)],
    ) -> Result<(Outcome<()>, Vec<IndexReply>), SessionError> {
        let mut replies = Vec::with_capacity(index.len());
        for (keys, op) in index {
            replies.push(self.index(keys, op.clone()).await?);
        }
        Ok((self.save(key, write).await?, replies))
    }

    pub(crate) async fn index(
        &self,
        keys: &UserKeys,
        op: IndexOp<'_>,
    ) -> Result<IndexReply, SessionError> {
        let now = now_ms();
        let mut map = self.lock();
        let users = &mut map.users;
        // The index and its cut expire together (user.lua's PEXPIREAT).
        if users.get(&keys.index).is_some_and(|u| u.expires_ms <= now) {
            users.remove(&keys.index);
        }
        let user = users.entry(keys.index.clone()).or_default();
        let mut reply = IndexReply {
            status: IndexStatus::Done,
            ..IndexReply::default()
        };
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
                // Indexed under another key than the one this login ends: a stale cookie, or
                // a session being ended.
                let current = user.entries.get(&id).map(|(k, _)| k.as_str());
                let stale_cookie = current.is_some_and(|current| {
                    current != key.as_str() && old.is_none_or(|o| current != o.as_str())
                });
                if user.cut.is_some_and(|cut| started_ms < cut) || stale_cookie {
                    reply.status = IndexStatus::Refused;
                    return Ok(reply);
                }
                if let Some((max, policy)) = limit {
                    let others = user.entries.iter().filter(|(other, _)| **other != id);
                    let (marked, mut others): (Vec<_>, Vec<_>) =
                        others.partition(|(_, (k, _))| k.starts_with('!'));
                    reply.to_end.extend(
                        marked
                            .into_iter()
                            .map(|(id, (k, score))| indexed(*id, &k[1..], *score)),
                    );
                    let over = (others.len() + 1).saturating_sub(max);
                    if over > 0 && policy == crate::SessionLimit::RefuseNew {
                        reply.status = IndexStatus::OverLimit;
                        reply.to_end.clear();
                        return Ok(reply);
                    }
                    others.sort_by_key(|(id, _)| id.to_string());
                    let oldest: Vec<_> = others.iter().take(over).map(|(id, _)| **id).collect();
                    reply
                        .to_end
                        .extend(oldest.into_iter().filter_map(|id| user.mark(id)));
                }
                let score = score_ms.min(MAX_DEADLINE_MS);
                user.entries.insert(id, (key.as_str().to_owned(), score));
                reply.stale = user.stale(now_ms, stale);
                user.expire(until_ms);
            }
            IndexOp::Move {
                id,
                old,
                key,
                score_ms,
                until_ms,
                ..
            } => {
                match user.entries.get_mut(&id) {
                    Some(entry) if entry.0 == key.as_str() || entry.0 == old.as_str() => {
                        *entry = (key.as_str().to_owned(), score_ms.min(MAX_DEADLINE_MS));
                    }
                    _ => reply.status = IndexStatus::Refused,
                }
                if reply.done() {
                    user.expire(until_ms);
                }
            }
            IndexOp::Remove(entries) => {
                for (id, key) in entries {
                    if user.holds(id, &key) {
                        user.entries.remove(&id);
                    }
                }
            }
            IndexOp::Mark(ids) => {
                reply.to_end = ids.into_iter().filter_map(|id| user.mark(id)).collect();
            }
            IndexOp::Take {
                keep,
                now_ms,
                until_ms,
            } => {
                user.cut = Some(user.cut.unwrap_or(now_ms).max(now_ms));
                let ids: Vec<uuid::Uuid> = user
                    .entries
                    .keys()
                    .filter(|id| Some(**id) != keep)
                    .copied()
                    .collect();
                reply.to_end = ids.into_iter().filter_map(|id| user.mark(id)).collect();
                user.expire(until_ms);
            }
            IndexOp::Stale { now_ms, n } => reply.stale = user.stale(now_ms, n),
            IndexOp::Settle {
                until_ms, entries, ..
            } => {
                for e in entries {
                    if !user.holds(e.id, &e.key) {
                        continue;
                    }
                    if e.score_ms == 0 {
                        user.entries.remove(&e.id);
                    } else if let Some(entry) = user.entries.get_mut(&e.id) {
                        entry.1 = e.score_ms.min(MAX_DEADLINE_MS);
                    }
                }
                user.expire(until_ms);
            }
        }
        Ok(reply)
    }

    pub(crate) async fn list(
        &self,
        keys: &UserKeys,
        now_ms: i64,
        fields: &[&str],
    ) -> Result<Vec<Listed>, SessionError> {
        let mut map = self.lock();
        let entries: Vec<(uuid::Uuid, StoreKey)> = map
            .users
            .get(&keys.index)
            .filter(|u| u.expires_ms > now_ms)
            .map(|u| {
                u.entries
                    .iter()
                    .filter(|(_, (key, _))| !key.starts_with('!'))
                    .map(|(id, (key, _))| (*id, StoreKey::from_raw(key.clone())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(entries
            .into_iter()
            .map(|(id, key)| {
                // An ended session's marker is no session to list.
                let session = map
                    .live(&key, now_ms)
                    .filter(|e| !e.ended)
                    .map(|e| ListedSession {
                        created_ms: e.created_ms,
                        user: e.fields.get(META_USER).cloned(),
                        idle_ms: e.fields.get(META_IDLE).and_then(|i| i.parse().ok()),
                        ttl_ms: e.expires_ms - now_ms,
                        values: fields.iter().map(|f| e.fields.get(*f).cloned()).collect(),
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
        let now = now_ms();
        let mut ended = Vec::with_capacity(keys.len());
        for (key, always) in keys {
            if !always && self.lock().live(key, now).is_none() {
                ended.push(false);
                continue;
            }
            let found = self.end(key, marker_ttl, false).await?;
            ended.push(matches!(found, Found::Live(_)));
        }
        Ok(ended)
    }

    pub(crate) async fn probe(
        &self,
        keys: &[StoreKey],
        now_ms: i64,
    ) -> Result<Vec<Probed>, SessionError> {
        let mut map = self.lock();
        Ok(keys
            .iter()
            .map(|key| match map.live(key, now_ms) {
                Some(e) if e.ended => Probed::Ended,
                Some(e) => Probed::Live(e.expires_ms),
                None => Probed::Gone,
            })
            .collect())
    }

    pub(crate) async fn keep_indexes(&self, users: &[(UserKeys, i64)]) -> Result<(), SessionError> {
        let now = now_ms();
        let mut map = self.lock();
        for (keys, until) in users {
            if let Some(user) = map.users.get_mut(&keys.index) {
                if user.expires_ms > now {
                    user.expires_ms = user.expires_ms.max(*until);
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn touch(&self, keys: &[(StoreKey, i64)]) -> Result<(), SessionError> {
        let now = now_ms();
        let mut map = self.lock();
        for (key, deadline) in keys {
            if let Some(entry) = map.live(key, now) {
                entry.expires_ms = *deadline;
            }
        }
        Ok(())
    }
}
