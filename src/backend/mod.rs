//! Backends: Redis for production, an in-process map with the same semantics for development
//! and tests. Both apply the same rules: every access sets the expiry the caller computed
//! (idle timeout cut short by the absolute timeout, see [`Lifetimes`]), writes are guarded and
//! never re-create a session that is gone, counters are atomic.

pub(crate) mod memory;
pub(crate) mod redis;

use std::time::Duration;

use crate::error::{Limit, SessionError};
use crate::fields::Fields;
use crate::token::{StoreKey, UserKeys};

/// Idle and absolute timeouts, in milliseconds. The store never keeps a session past its
/// absolute deadline, because every expiry it is given is cut short by it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lifetimes {
    pub(crate) idle_ms: u64,
    pub(crate) absolute_ms: u64,
}

impl Lifetimes {
    /// A session's idle timeout: its own (signed into its cookie) if shorter, else the store's.
    pub(crate) fn idle(&self, own: Option<u64>) -> u64 {
        own.map_or(self.idle_ms, |own| own.min(self.idle_ms))
    }

    /// The idle timeout `idle_ms`, cut short by the absolute timeout; `None` once the session
    /// is over.
    pub(crate) fn ttl(&self, idle_ms: u64, created_ms: i64, now_ms: i64) -> Option<Duration> {
        u64::try_from(
            self.deadline_ms(idle_ms, created_ms, now_ms)
                .saturating_sub(now_ms),
        )
        .ok()
        .filter(|&t| t > 0)
        .map(Duration::from_millis)
    }

    /// The moment (ms since the epoch) a session created at `created_ms`, with idle timeout
    /// `idle_ms`, expires if it is touched now.
    pub(crate) fn deadline_ms(&self, idle_ms: u64, created_ms: i64, now_ms: i64) -> i64 {
        let idle = i64::try_from(idle_ms).unwrap_or(i64::MAX);
        let absolute = i64::try_from(self.absolute_ms).unwrap_or(i64::MAX);
        now_ms
            .saturating_add(idle)
            .min(created_ms.saturating_add(absolute))
    }
}

/// The value of the metadata field `""` of a session that was ended (logout, or a new id):
/// the key stays as a marker while the old cookie could still be sent, so that a request
/// carrying it neither reads the session nor starts a new one over its successor.
pub(crate) const ENDED: &str = "ended";

/// What a key holds.
#[derive(Debug)]
pub(crate) enum Found {
    /// Nothing: the session never existed, expired or its marker did.
    Absent,
    /// The marker of an ended session.
    Ended,
    /// A live session.
    Live(Loaded),
}

/// Metadata fields of a session hash, beside `""` (the creation time): the public id, the
/// user it is bound to, its own idle timeout. Session keys may not start with NUL.
pub(crate) const META_ID: &str = "\0id";
pub(crate) const META_USER: &str = "\0user";
pub(crate) const META_IDLE: &str = "\0idle";

/// A public id as a session hash stores it (`\0id`): its 16 bytes in base64url, 22
/// characters instead of the 36 of the hyphenated form. Redis memory is per byte: this
/// brings a small session to what tower-sessions stores for the same data (`bench-memory`).
pub(crate) fn stored_id(id: uuid::Uuid) -> String {
    let mut text = String::with_capacity(22);
    crate::base64url::push(&mut text, id.as_bytes());
    text
}

/// The public id of a session hash: either form (sessions stored before kept the
/// hyphenated one).
fn parse_stored_id(text: &str) -> Option<uuid::Uuid> {
    match crate::base64url::decode::<16>(text.as_bytes()) {
        Some(bytes) => Some(uuid::Uuid::from_bytes(bytes)),
        None => uuid::Uuid::parse_str(text).ok(),
    }
}

/// Whether a hash field is the session's metadata rather than one of its keys.
pub(crate) fn is_meta(field: &str) -> bool {
    field.is_empty() || field.starts_with('\0')
}

/// A session as read from the store.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// The creation time stored with the session.
    pub(crate) created_ms: i64,
    /// User fields (metadata removed), values as JSON text.
    pub(crate) fields: Fields,
    /// The public id, and the user the session is bound to.
    pub(crate) id: Option<uuid::Uuid>,
    pub(crate) user: Option<String>,
}

impl Loaded {
    /// The session in a hash's fields: `""` holds the creation time, or the [`ENDED`] marker;
    /// a hash without it is not a session of ours.
    pub(crate) fn of_hash(fields: Fields) -> Result<Found, SessionError> {
        if fields.is_empty() {
            return Ok(Found::Absent);
        }
        let (mut created, mut ended) = (None, false);
        let loaded = Self::split(fields, |v| match v {
            ENDED => ended = true,
            v => created = v.parse().ok(),
        });
        match created {
            _ if ended => Ok(Found::Ended),
            Some(created_ms) => Ok(Found::Live(Self {
                created_ms,
                ..loaded
            })),
            None => Err(SessionError::Corrupt(
                "a session hash without its creation time".into(),
            )),
        }
    }

    /// Splits a hash's fields into the session's keys and its metadata.
    pub(crate) fn from_fields(created_ms: i64, fields: Fields) -> Self {
        Self {
            created_ms,
            ..Self::split(fields, |_| {})
        }
    }

    /// Takes the metadata out of `fields`, in one pass; `created` gets the value of `""`.
    fn split(mut fields: Fields, mut created: impl FnMut(&str)) -> Self {
        let (mut id, mut user) = (None, None);
        fields.take_out(is_meta, |k, v| match k {
            "" => created(v),
            META_ID => id = parse_stored_id(v),
            META_USER => user = Some(v.to_owned()),
            _ => {}
        });
        Self {
            created_ms: 0,
            fields,
            id,
            user,
        }
    }
}

/// A change to a user's index of sessions (see `user.lua`). A score is the session's expiry
/// as last written or checked: entries past it are stale (gone, or used since) until checked.
/// `until_ms` is when the index may expire: now plus the absolute timeout.
#[derive(Clone, Debug)]
pub(crate) enum IndexOp<'a> {
    /// Index a login under `key`. Refused when the login's request started before the
    /// user's sessions were last ended, or when `id` is indexed under another key than `old`;
    /// with `limit`, the user's other sessions are kept below it (refused, or the oldest
    /// marked to end). Returns up to `stale` stale entries.
    Add {
        id: uuid::Uuid,
        key: &'a StoreKey,
        old: Option<&'a StoreKey>,
        score_ms: i64,
        now_ms: i64,
        started_ms: i64,
        until_ms: i64,
        stale: usize,
        limit: Option<(usize, crate::SessionLimit)>,
    },
    /// The session got a new key; only if it is still indexed under `old`.
    Move {
        id: uuid::Uuid,
        old: &'a StoreKey,
        key: &'a StoreKey,
        score_ms: i64,
        now_ms: i64,
        until_ms: i64,
    },
    /// Drop these entries, each only if it still holds that key.
    Remove(Vec<(uuid::Uuid, StoreKey)>),
    /// Mark these entries as being ended; returns them.
    Mark(Vec<uuid::Uuid>),
    /// Raise the cut to `now_ms` (logins whose request started before are refused) and mark
    /// every entry but `keep` as being ended; returns them.
    Take {
        keep: Option<uuid::Uuid>,
        now_ms: i64,
        until_ms: i64,
    },
    /// Up to `n` stale entries.
    Stale { now_ms: i64, n: usize },
    /// Checked entries: a score of 0 drops the entry, another moves its score; each only if
    /// it still holds that key.
    Settle {
        now_ms: i64,
        until_ms: i64,
        entries: Vec<Indexed>,
    },
}

/// An entry of a user's index: the public id, the session key, the score.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Indexed {
    pub(crate) id: uuid::Uuid,
    pub(crate) key: StoreKey,
    pub(crate) score_ms: i64,
}

/// What became of an [`IndexOp`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum IndexStatus {
    /// Refused (`Add`, `Move`).
    #[default]
    Refused,
    Done,
    /// `Add` refused: the user has as many sessions as the limit allows.
    OverLimit,
}

/// What an [`IndexOp`] returned.
#[derive(Debug, Default)]
pub(crate) struct IndexReply {
    pub(crate) status: IndexStatus,
    /// Entries marked to end (`Add` over the limit, `Mark`, `Take`).
    pub(crate) to_end: Vec<Indexed>,
    /// Stale entries, for the caller to check (`Add`, `Stale`).
    pub(crate) stale: Vec<Indexed>,
}

impl IndexReply {
    pub(crate) fn done(&self) -> bool {
        self.status == IndexStatus::Done
    }
}

/// Deadlines in the index are clamped here, so that Redis prints them as integers.
pub(crate) const MAX_DEADLINE_MS: i64 = 1 << 52;

/// A user's indexed session, with what the listing shows of it.
#[derive(Debug)]
pub(crate) struct Listed {
    pub(crate) id: uuid::Uuid,

    /// `None` when the session is gone or ended (the entry is stale).
    pub(crate) session: Option<ListedSession>,
}

#[derive(Debug)]
pub(crate) struct ListedSession {
    pub(crate) created_ms: i64,
    pub(crate) user: Option<String>,
    pub(crate) idle_ms: Option<u64>,
    /// Milliseconds until it expires if no request comes.
    pub(crate) ttl_ms: i64,
    /// The values of the fields asked for (JSON text), in their order.
    pub(crate) values: Vec<Option<String>>,
}

/// What a key holds, as a check of a user's index sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probed {
    /// A live session that expires then (ms since the epoch) if no request comes.
    Live(i64),
    /// The marker of a session that was ended (logout, a new id, "end all").
    Ended,
    /// Nothing: the session expired (or was evicted).
    Gone,
}

/// Whether a write goes to a live session or creates a new one.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// The session must be live; if it is gone the write is refused.
    Update,
    /// The key must be free; the session is stored with this creation time and public id.
    /// `announced`: the key was given to a user's index before the session exists ("end
    /// all" may have left its marker there, which must stand); otherwise the key is a fresh
    /// 128-bit draw nobody else knows, and the write needs no check at all.
    Create {
        created_ms: i64,
        id: uuid::Uuid,
        announced: bool,
    },
}

/// The changes one request makes to a session.
#[derive(Debug)]
pub(crate) struct Write<'a> {
    pub(crate) mode: Mode,
    /// The expiry to set.
    pub(crate) ttl: Duration,
    /// Drop every user field before applying `set`.
    pub(crate) clear: bool,
    pub(crate) set: Vec<(&'a str, &'a str)>,
    pub(crate) delete: Vec<&'a str>,
    /// Limits to check against the stored session, when the request never loaded it.
    pub(crate) check: Option<Limits>,
}

/// What became of a guarded write.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome<T> {
    /// Written.
    Done(T),
    /// There is no session at the key (it expired, or never was); nothing was written.
    Gone,
    /// The session was ended (logout or a new id); nothing was written.
    Ended,
    /// A new session's key was already taken; nothing was written.
    Taken,
    /// The write would take the stored session over a limit; nothing was written.
    TooLarge { limit: Limit, got: usize },
}

/// One `incr` call.
#[derive(Debug)]
pub(crate) struct Counter<'a> {
    pub(crate) mode: Mode,
    pub(crate) ttl: Duration,
    pub(crate) field: &'a str,
    pub(crate) delta: i64,
    pub(crate) base: Option<i64>,
    /// The key-count limit to check against the stored session, when it was never loaded.
    pub(crate) max_keys: Option<usize>,
    /// Return the whole session too (the request never loaded it).
    pub(crate) load: bool,
}

/// What an `incr` returned: the new value, and the session when [`Counter::load`] asked.
pub(crate) type Counted = (i64, Option<Loaded>);

impl<T> Outcome<T> {
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Self::Done(value) => Outcome::Done(f(value)),
            Self::Gone => Outcome::Gone,
            Self::Ended => Outcome::Ended,
            Self::Taken => Outcome::Taken,
            Self::TooLarge { limit, got } => Outcome::TooLarge { limit, got },
        }
    }
}

/// Bounds on what one session may hold, checked before anything is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Bytes of one value's JSON.
    pub(crate) value_bytes: usize,
    /// Bytes of all keys and values together.
    pub(crate) session_bytes: usize,
    /// Number of keys.
    pub(crate) keys: usize,
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
    /// Reads a session and sets its expiry to `ttl` from now.
    pub(crate) async fn load(&self, key: &StoreKey, ttl: Duration) -> Result<Found, SessionError> {
        dispatch!(self, b => b.load(key, ttl).await)
    }

    /// Applies a request's changes, guarded, with the expiry refresh.
    pub(crate) async fn save(
        &self,
        key: &StoreKey,
        write: &Write<'_>,
    ) -> Result<Outcome<()>, SessionError> {
        dispatch!(self, b => b.save(key, write).await)
    }

    /// Creates a session (a `save` in create mode) and applies the index changes that
    /// announce it, in one round trip and in no particular order.
    pub(crate) async fn save_indexed(
        &self,
        key: &StoreKey,
        write: &Write<'_>,
        index: &[(UserKeys, IndexOp<'_>)],
    ) -> Result<(Outcome<()>, Vec<IndexReply>), SessionError> {
        dispatch!(self, b => b.save_indexed(key, write, index).await)
    }

    /// Atomic counter, guarded like `save`; `base` is a value the request set for the field
    /// and that goes first.
    pub(crate) async fn incr(
        &self,
        key: &StoreKey,
        counter: &Counter<'_>,
    ) -> Result<Outcome<Counted>, SessionError> {
        dispatch!(self, b => b.incr(key, counter).await)
    }

    /// Reads `field` and removes it in one step, guarded like `save`, with the expiry
    /// refresh: of requests that take the same field at once, one gets it.
    pub(crate) async fn take(
        &self,
        key: &StoreKey,
        field: &str,
        ttl: Duration,
    ) -> Result<Outcome<Option<String>>, SessionError> {
        dispatch!(self, b => b.take(key, field, ttl).await)
    }

    /// Ends a session in one step: the key becomes the [`ENDED`] marker, which lives for
    /// `marker_ttl`. With `read`, returns what the key held (first half of id regeneration).
    pub(crate) async fn end(
        &self,
        key: &StoreKey,
        marker_ttl: Duration,
        read: bool,
    ) -> Result<Found, SessionError> {
        dispatch!(self, b => b.end(key, marker_ttl, read).await)
    }

    /// A new key for a live session without reading it: the hash moves from `old` to `new` (a
    /// fresh draw) and `old` becomes the [`ENDED`] marker, in one step. `Done` holds the
    /// session's creation time and user; `None` when the deployment cannot (on a cluster the
    /// two keys live on different nodes).
    pub(crate) async fn rename(
        &self,
        old: &StoreKey,
        new: &StoreKey,
        marker_ttl: Duration,
        ttl: Duration,
    ) -> Result<Option<Outcome<(i64, Option<String>)>>, SessionError> {
        dispatch!(self, b => b.rename(old, new, marker_ttl, ttl).await)
    }

    /// Applies `op` to the user's index (keys from [`UserHandle::keys`](crate::token::UserHandle::keys)).
    pub(crate) async fn index(
        &self,
        keys: &UserKeys,
        op: IndexOp<'_>,
    ) -> Result<IndexReply, SessionError> {
        dispatch!(self, b => b.index(keys, op).await)
    }

    /// The user's indexed sessions still within their deadline, with `fields` of each.
    pub(crate) async fn list(
        &self,
        keys: &UserKeys,
        now_ms: i64,
        fields: &[&str],
    ) -> Result<Vec<Listed>, SessionError> {
        dispatch!(self, b => b.list(keys, now_ms, fields).await)
    }

    /// Ends many sessions at once (their keys become ended markers for `marker_ttl`). A key
    /// that holds nothing is left alone unless its flag says a session may yet be created
    /// there. Returns, for each key, whether it held a live session.
    pub(crate) async fn end_many(
        &self,
        keys: &[(StoreKey, bool)],
        marker_ttl: Duration,
    ) -> Result<Vec<bool>, SessionError> {
        dispatch!(self, b => b.end_many(keys, marker_ttl).await)
    }

    /// What each key holds, and when a live session there expires if no request comes.
    pub(crate) async fn probe(
        &self,
        keys: &[StoreKey],
        now_ms: i64,
    ) -> Result<Vec<Probed>, SessionError> {
        dispatch!(self, b => b.probe(keys, now_ms).await)
    }

    /// Moves the expiry of users' indexes on to `until` (ms since the epoch), never back: the
    /// index of a session in use outlives it, whatever the absolute timeout was when the
    /// index last changed.
    pub(crate) async fn keep_indexes(&self, users: &[(UserKeys, i64)]) -> Result<(), SessionError> {
        dispatch!(self, b => b.keep_indexes(users).await)
    }

    /// Slides the expiry of sessions that requests carried but did not read: each key
    /// expires at its deadline (ms since the epoch). Never creates a session.
    pub(crate) async fn touch(&self, keys: &[(StoreKey, i64)]) -> Result<(), SessionError> {
        dispatch!(self, b => b.touch(keys).await)
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> Fields {
        Fields::of_hash(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn a_stored_id_reads_back_in_either_form() {
        let id = uuid::Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        let stored = stored_id(id);
        assert_eq!(stored.len(), 22);
        assert_eq!(parse_stored_id(&stored), Some(id));
        assert_eq!(parse_stored_id(&id.to_string()), Some(id));
        assert_eq!(parse_stored_id("not an id"), None);
    }

    #[test]
    fn a_hash_splits_into_keys_and_metadata() {
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        let found = Loaded::of_hash(hash(&[
            ("a", "1"),
            ("", "1700"),
            (META_ID, id),
            (META_USER, "alice"),
            (META_IDLE, "60000"),
            ("b", "2"),
        ]));
        let Ok(Found::Live(loaded)) = found else {
            panic!("not live: {found:?}")
        };
        assert_eq!(loaded.created_ms, 1700);
        assert_eq!(loaded.id, uuid::Uuid::parse_str(id).ok());
        assert_eq!(loaded.user.as_deref(), Some("alice"));
        let mut keys: Vec<_> = loaded.fields.iter().collect();
        keys.sort();
        assert_eq!(keys, [("a", "1"), ("b", "2")]);

        assert!(matches!(Loaded::of_hash(hash(&[])), Ok(Found::Absent)));
        assert!(matches!(
            Loaded::of_hash(hash(&[("", ENDED), ("a", "1")])),
            Ok(Found::Ended)
        ));
        for bad in [&[("a", "1")][..], &[("", "soon"), ("a", "1")]] {
            assert!(matches!(
                Loaded::of_hash(hash(bad)),
                Err(SessionError::Corrupt(_))
            ));
        }
    }
}
