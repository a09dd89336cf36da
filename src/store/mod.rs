//! Backends: Redis for production, an in-process map with the same semantics for development
//! and tests. Both apply the same rules: sliding idle expiry cut short by the absolute
//! timeout, guarded writes that never re-create a session that is gone, atomic counters.

pub(crate) mod memory;
pub(crate) mod redis;

use std::collections::HashMap;
use std::time::Duration;

use crate::error::SessionError;
use crate::token::StoreKey;

/// Idle and absolute timeouts, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lifetimes {
    pub(crate) idle_ms: u64,
    pub(crate) absolute_ms: u64,
}

impl Lifetimes {
    /// The idle timeout, cut short by the absolute timeout (may be zero or negative).
    pub(crate) fn ttl_ms(&self, created_ms: i64, now_ms: i64) -> i64 {
        let idle = i64::try_from(self.idle_ms).unwrap_or(i64::MAX);
        let absolute = i64::try_from(self.absolute_ms).unwrap_or(i64::MAX);
        idle.min(created_ms.saturating_add(absolute).saturating_sub(now_ms))
    }
}

/// A session as read from the store.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Remaining lifetime after this access.
    pub(crate) ttl: Duration,
    pub(crate) created_ms: i64,
    /// User fields (metadata removed), values as JSON text.
    pub(crate) fields: HashMap<String, String>,
}

/// Whether a write goes to a live session or creates a new one.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// The session must be live; if it is gone the write is refused.
    Update,
    /// The key must be free. `created_ms` keeps an older creation time (id regeneration).
    Create { created_ms: Option<i64> },
}

/// The changes one request makes to a session.
#[derive(Debug)]
pub(crate) struct Write<'a> {
    pub(crate) mode: Mode,
    /// Drop every user field before applying `set`.
    pub(crate) clear: bool,
    pub(crate) set: Vec<(&'a str, &'a str)>,
    pub(crate) delete: Vec<&'a str>,
}

/// What became of a guarded write.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome<T> {
    /// Written; the session lives for `ttl` from now.
    Done { ttl: Duration, value: T },
    /// The session was destroyed or expired meanwhile; nothing was written.
    Gone,
    /// A new session's key was already taken; nothing was written.
    Taken,
}

/// The backend a store runs on.
pub(crate) enum Backend {
    Redis(redis::RedisBackend),
    Memory(memory::MemoryBackend),
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            Backend::Redis($b) => $e,
            Backend::Memory($b) => $e,
        }
    };
}

impl Backend {
    /// Reads a session and slides its expiry.
    pub(crate) async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, SessionError> {
        dispatch!(self, b => b.load(key).await)
    }

    /// Applies a request's changes, guarded, with the expiry refresh.
    pub(crate) async fn save(
        &self,
        key: &StoreKey,
        write: &Write<'_>,
    ) -> Result<Outcome<()>, SessionError> {
        dispatch!(self, b => b.save(key, write).await)
    }

    /// Atomic counter; `base` is a value the request set for the field and that goes first.
    pub(crate) async fn incr(
        &self,
        key: &StoreKey,
        mode: Mode,
        field: &str,
        delta: i64,
        base: Option<i64>,
    ) -> Result<Outcome<i64>, SessionError> {
        dispatch!(self, b => b.incr(key, mode, field, delta, base).await)
    }

    /// Reads and deletes a session in one step (first half of id regeneration).
    pub(crate) async fn take(&self, key: &StoreKey) -> Result<Option<Loaded>, SessionError> {
        dispatch!(self, b => b.take(key).await)
    }

    /// Deletes a session.
    pub(crate) async fn destroy(&self, key: &StoreKey) -> Result<(), SessionError> {
        dispatch!(self, b => b.destroy(key).await)
    }

    /// Slides the expiry of sessions that requests carried but did not read.
    pub(crate) async fn touch(&self, keys: &[StoreKey]) -> Result<(), SessionError> {
        dispatch!(self, b => b.touch(keys).await)
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A positive millisecond count as a `Duration` (zero for anything else).
pub(crate) fn ms(ttl: i64) -> Duration {
    Duration::from_millis(u64::try_from(ttl).unwrap_or(0))
}
