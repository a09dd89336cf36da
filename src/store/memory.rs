//! The in-process backend: the Redis backend's semantics in a `HashMap`, for local
//! development and for users' unit tests. Sessions live as long as the store; nothing is
//! shared between processes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{now_ms, Counter, Loaded, Mode, Outcome, Write};
use crate::error::SessionError;
use crate::token::StoreKey;

/// Expired entries are swept once every this many writes, so memory stays bounded.
const SWEEP_EVERY: u64 = 1024;

struct Entry {
    created_ms: i64,
    expires_ms: i64,
    fields: HashMap<String, String>,
}

#[derive(Default)]
struct Map {
    entries: HashMap<StoreKey, Entry>,
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
        if self.writes % SWEEP_EVERY == 0 {
            self.entries.retain(|_, e| e.expires_ms > now);
        }
        let exists = self.live(key, now).is_some();
        match (mode, exists) {
            (Mode::Update, false) => Outcome::Gone,
            (Mode::Create { .. }, true) => Outcome::Taken,
            (Mode::Update, true) => match self.entries.get_mut(key) {
                Some(entry) => Outcome::Done(entry),
                None => Outcome::Gone,
            },
            (Mode::Create { created_ms }, false) => {
                Outcome::Done(self.entries.entry(key.clone()).or_insert(Entry {
                    created_ms,
                    expires_ms: now,
                    fields: HashMap::new(),
                }))
            }
        }
    }
}

fn expiry(now: i64, ttl: Duration) -> i64 {
    now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
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

    pub(crate) async fn load(
        &self,
        key: &StoreKey,
        ttl: Duration,
    ) -> Result<Option<Loaded>, SessionError> {
        let now = now_ms();
        Ok(self.lock().live(key, now).map(|entry| {
            entry.expires_ms = expiry(now, ttl);
            Loaded {
                created_ms: entry.created_ms,
                fields: entry.fields.clone(),
            }
        }))
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
                if write.clear {
                    entry.fields.clear();
                }
                for (field, value) in &write.set {
                    entry
                        .fields
                        .insert((*field).to_owned(), (*value).to_owned());
                }
                for field in &write.delete {
                    entry.fields.remove(*field);
                }
                entry.expires_ms = expiry(now, write.ttl);
                Outcome::Done(())
            }
            Outcome::Gone => Outcome::Gone,
            Outcome::Taken => Outcome::Taken,
        })
    }

    pub(crate) async fn incr(
        &self,
        key: &StoreKey,
        c: &Counter<'_>,
    ) -> Result<Outcome<i64>, SessionError> {
        let not_an_integer = || SessionError::NotAnInteger {
            key: c.field.into(),
        };
        let now = now_ms();
        let mut map = self.lock();
        // Check before writing anything, as HINCRBY does.
        let old = match (c.base, map.live(key, now)) {
            (Some(base), _) => base,
            (None, Some(entry)) => match entry.fields.get(c.field) {
                Some(v) => v.parse().map_err(|_| not_an_integer())?,
                None => 0,
            },
            (None, None) => 0,
        };
        let new = old.checked_add(c.delta).ok_or_else(not_an_integer)?;
        Ok(match map.target(key, c.mode, now) {
            Outcome::Done(entry) => {
                entry.fields.insert(c.field.to_owned(), new.to_string());
                entry.expires_ms = expiry(now, c.ttl);
                Outcome::Done(new)
            }
            Outcome::Gone => Outcome::Gone,
            Outcome::Taken => Outcome::Taken,
        })
    }

    pub(crate) async fn take(&self, key: &StoreKey) -> Result<Option<Loaded>, SessionError> {
        let mut map = self.lock();
        map.live(key, now_ms());
        Ok(map.entries.remove(key).map(|e| Loaded {
            created_ms: e.created_ms,
            fields: e.fields,
        }))
    }

    pub(crate) async fn destroy(&self, key: &StoreKey) -> Result<(), SessionError> {
        self.lock().entries.remove(key);
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
