//! The in-process backend: the Redis backend's semantics in a `HashMap`, for local
//! development and for users' unit tests. Sessions live as long as the store; nothing is
//! shared between processes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{ms, now_ms, Lifetimes, Loaded, Mode, Outcome, Write};
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

pub(crate) struct MemoryBackend {
    map: Mutex<Map>,
    lifetimes: Lifetimes,
}

impl MemoryBackend {
    pub(crate) fn new(lifetimes: Lifetimes) -> Self {
        Self {
            map: Mutex::default(),
            lifetimes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
        // A panic elsewhere cannot leave an entry half-written: every change below is applied
        // after all checks, so the map is usable even if poisoned.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live entry at `key` with its expiry slid, like `live_ttl` + `PEXPIRE` in Lua.
    fn live<'m>(&self, map: &'m mut Map, key: &StoreKey, now: i64) -> Option<(&'m mut Entry, i64)> {
        let expired = match map.entries.get(key) {
            None => return None,
            Some(e) => e.expires_ms <= now || self.lifetimes.ttl_ms(e.created_ms, now) <= 0,
        };
        if expired {
            map.entries.remove(key);
            return None;
        }
        let entry = map.entries.get_mut(key)?;
        let ttl = self.lifetimes.ttl_ms(entry.created_ms, now);
        entry.expires_ms = now + ttl;
        Some((entry, ttl))
    }

    /// The entry a guarded write goes to: a live one for `Update`, a new one for `Create`.
    fn target<'m>(
        &self,
        map: &'m mut Map,
        key: &StoreKey,
        mode: Mode,
        now: i64,
    ) -> Outcome<&'m mut Entry> {
        map.writes += 1;
        if map.writes % SWEEP_EVERY == 0 {
            map.entries.retain(|_, e| e.expires_ms > now);
        }
        match mode {
            Mode::Update => match self.live(map, key, now) {
                Some((entry, ttl)) => Outcome::Done {
                    ttl: ms(ttl),
                    value: entry,
                },
                None => Outcome::Gone,
            },
            Mode::Create { created_ms } => {
                if self.live(map, key, now).is_some() {
                    return Outcome::Taken;
                }
                let created_ms = created_ms.unwrap_or(now);
                let ttl = self.lifetimes.ttl_ms(created_ms, now);
                if ttl <= 0 {
                    return Outcome::Gone;
                }
                let entry = map.entries.entry(key.clone()).or_insert(Entry {
                    created_ms,
                    expires_ms: now + ttl,
                    fields: HashMap::new(),
                });
                Outcome::Done {
                    ttl: ms(ttl),
                    value: entry,
                }
            }
        }
    }

    pub(crate) async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, SessionError> {
        let mut map = self.lock();
        Ok(self.live(&mut map, key, now_ms()).map(|(e, ttl)| Loaded {
            ttl: ms(ttl),
            created_ms: e.created_ms,
            fields: e.fields.clone(),
        }))
    }

    pub(crate) async fn save(
        &self,
        key: &StoreKey,
        write: &Write<'_>,
    ) -> Result<Outcome<()>, SessionError> {
        let mut map = self.lock();
        Ok(match self.target(&mut map, key, write.mode, now_ms()) {
            Outcome::Done { ttl, value: entry } => {
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
                Outcome::Done { ttl, value: () }
            }
            Outcome::Gone => Outcome::Gone,
            Outcome::Taken => Outcome::Taken,
        })
    }

    pub(crate) async fn incr(
        &self,
        key: &StoreKey,
        mode: Mode,
        field: &str,
        delta: i64,
        base: Option<i64>,
    ) -> Result<Outcome<i64>, SessionError> {
        let not_an_integer = || SessionError::NotAnInteger { key: field.into() };
        let mut map = self.lock();
        let now = now_ms();
        // Check before writing anything, as HINCRBY does.
        if let (Mode::Update, None, Some(entry)) = (mode, base, map.entries.get(key)) {
            if let Some(old) = entry.fields.get(field) {
                let old: i64 = old.parse().map_err(|_| not_an_integer())?;
                old.checked_add(delta).ok_or_else(not_an_integer)?;
            }
        }
        let start = base.unwrap_or(0);
        Ok(match self.target(&mut map, key, mode, now) {
            Outcome::Done { ttl, value: entry } => {
                let old = match base {
                    Some(b) => b,
                    None => entry
                        .fields
                        .get(field)
                        .map_or(Ok(start), |v| v.parse())
                        .map_err(|_| not_an_integer())?,
                };
                let new = old.checked_add(delta).ok_or_else(not_an_integer)?;
                entry.fields.insert(field.to_owned(), new.to_string());
                Outcome::Done { ttl, value: new }
            }
            Outcome::Gone => Outcome::Gone,
            Outcome::Taken => Outcome::Taken,
        })
    }

    pub(crate) async fn take(&self, key: &StoreKey) -> Result<Option<Loaded>, SessionError> {
        let mut map = self.lock();
        let ttl = match self.live(&mut map, key, now_ms()) {
            Some((_, ttl)) => ttl,
            None => return Ok(None),
        };
        Ok(map.entries.remove(key).map(|e| Loaded {
            ttl: ms(ttl),
            created_ms: e.created_ms,
            fields: e.fields,
        }))
    }

    pub(crate) async fn destroy(&self, key: &StoreKey) -> Result<(), SessionError> {
        self.lock().entries.remove(key);
        Ok(())
    }

    pub(crate) async fn touch(&self, keys: &[StoreKey]) -> Result<(), SessionError> {
        let mut map = self.lock();
        let now = now_ms();
        for key in keys {
            self.live(&mut map, key, now);
        }
        Ok(())
    }
}
