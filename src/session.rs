//! [`Session`]: the handle a handler reads and writes.
//!
//! Reads come from the copy loaded at the start of the request (one round trip that also
//! slides the expiry). `insert`, `remove` and `clear` only record the change; the layer writes
//! what changed, and only that, after the handler returns. `incr`, `regenerate` and `destroy`
//! go to the store at once, because their result matters to the handler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::HeaderMap;
use serde::{de::DeserializeOwned, Serialize};

use crate::builder::StoreInner;
use crate::cookie::Verified;
use crate::error::SessionError;
use crate::store::{now_ms, Counter, Mode, Outcome, Write};
use crate::token::{StoreKey, Token};

/// A fresh token collides with a live one with probability 2^-256; we still never overwrite,
/// and give up after this many draws.
const MAX_TOKEN_DRAWS: usize = 3;

/// The session of one request: a cheap, cloneable handle.
///
/// With the `axum` feature, take it as an extractor; it arrives loaded. With plain tower,
/// take it from the request extensions and call [`load`](Self::load) first.
///
/// ```
/// use tower_redis_session::{Session, SessionError};
///
/// async fn handler(session: Session) -> Result<String, SessionError> {
///     let visits = session.incr("visits", 1).await?; // atomic, at once
///     let user: Option<String> = session.get("user")?;
///     session.insert("theme", &"dark")?; // written after the handler
///     Ok(format!("{user:?} {visits}"))
/// }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<StoreInner>,
    state: Mutex<State>,
}

/// What we know of the session in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    /// The request carried a valid cookie but nobody has asked the store yet.
    Unknown,
    /// There is no live session: none was sent, or it is gone.
    Absent,
    /// The session under `token` is live in the store.
    Live,
}

struct State {
    /// The current token: the verified one from the cookie, or one made during this request.
    token: Option<Token>,
    /// The token's store key, computed when first needed (a SHA-256).
    key: Option<StoreKey>,
    /// Creation time of the session under `token` (signed into the cookie).
    created_ms: Option<i64>,
    stored: Stored,
    /// The request carried a valid cookie (so a dead one should be removed).
    had_cookie: bool,
    /// The cookie was signed by an older key.
    stale_key: bool,
    /// The token was made during this request.
    new_token: bool,
    /// Remaining lifetime as of the last store operation.
    ttl: Option<Duration>,
    /// Current view: stored values with this request's changes applied (JSON text).
    data: HashMap<String, String>,
    /// Pending changes: `Some` to set, `None` to delete.
    changes: HashMap<String, Option<String>>,
    /// Pending: drop every stored field first.
    cleared: bool,
}

impl State {
    fn key(&mut self, prefix: &str) -> Option<StoreKey> {
        if self.key.is_none() {
            self.key = self.token.as_ref().map(|t| t.store_key(prefix));
        }
        self.key.clone()
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state();
        f.debug_struct("Session")
            .field("stored", &s.stored)
            .field("keys", &s.data.keys().collect::<Vec<_>>())
            .field("changed", &s.changes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(store: Arc<StoreInner>, verified: Option<Verified>) -> Self {
        let (token, created_ms, stored, stale_key) = match verified {
            Some(v) => (
                Some(v.token),
                Some(v.created_ms),
                Stored::Unknown,
                v.stale_key,
            ),
            None => (None, None, Stored::Absent, false),
        };
        let state = State {
            had_cookie: token.is_some(),
            token,
            key: None,
            created_ms,
            stored,
            stale_key,
            new_token: false,
            ttl: None,
            data: HashMap::new(),
            changes: HashMap::new(),
            cleared: false,
        };
        Self {
            inner: Arc::new(Inner {
                store,
                state: Mutex::new(state),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change to the state is made after its checks; a poisoned lock is still whole.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn loaded(&self) -> Result<MutexGuard<'_, State>, SessionError> {
        let state = self.state();
        if state.stored == Stored::Unknown {
            return Err(SessionError::NotLoaded);
        }
        Ok(state)
    }

    /// Reads the session from the store and slides its expiry, in one round trip. Does
    /// nothing if it is already loaded or if the request carried no valid session cookie,
    /// and needs no round trip for a session past its absolute timeout.
    pub async fn load(&self) -> Result<(), SessionError> {
        let store = &self.inner.store;
        let (key, created_ms) = {
            let mut state = self.state();
            if state.stored != Stored::Unknown {
                return Ok(());
            }
            match (state.key(&store.prefix), state.created_ms) {
                (Some(key), Some(created)) => (key, created),
                _ => return Ok(()),
            }
        };
        let loaded = match store.lifetimes.ttl(created_ms, now_ms()) {
            Some(ttl) => store.backend.load(&key, ttl).await?.map(|l| (l, ttl)),
            // Past the absolute timeout: the store let it expire at that moment.
            None => None,
        };
        let mut state = self.state();
        if state.stored != Stored::Unknown {
            return Ok(());
        }
        match loaded {
            Some((loaded, ttl)) => {
                state.stored = Stored::Live;
                state.ttl = Some(ttl);
                state.data = loaded.fields;
            }
            None => state.stored = Stored::Absent,
        }
        Ok(())
    }

    /// The value under `key`, decoded from JSON; `None` if there is none.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let state = self.loaded()?;
        state
            .data
            .get(key)
            .map(|json| serde_json::from_str(json))
            .transpose()
            .map_err(|source| SessionError::Decode {
                key: key.into(),
                source,
            })
    }

    /// Sets `key` to `value` (as JSON). Written after the handler returns, together with
    /// the other changes of this request; other keys of the session are left untouched.
    /// Setting the value the key already holds writes nothing.
    pub fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), SessionError> {
        check_key(key)?;
        let json = serde_json::to_string(value).map_err(|source| SessionError::Encode {
            key: key.into(),
            source,
        })?;
        let limits = self.inner.store.limits;
        too_large("value size", json.len(), limits.value_bytes)?;
        let mut state = self.loaded()?;
        // Setting what is already there changes nothing: no write.
        if state.data.get(key) == Some(&json) {
            return Ok(());
        }
        let old = state.data.get(key).map(|v| key.len() + v.len());
        if old.is_none() {
            too_large("key count", state.data.len() + 1, limits.keys)?;
        }
        let total: usize = state.data.iter().map(|(k, v)| k.len() + v.len()).sum();
        let total = total - old.unwrap_or(0) + key.len() + json.len();
        too_large("session size", total, limits.session_bytes)?;
        state.data.insert(key.to_owned(), json.clone());
        state.changes.insert(key.to_owned(), Some(json));
        Ok(())
    }

    /// Removes `key`. Written after the handler returns.
    pub fn remove(&self, key: &str) -> Result<(), SessionError> {
        check_key(key)?;
        let mut state = self.loaded()?;
        state.data.remove(key);
        state.changes.insert(key.to_owned(), None);
        Ok(())
    }

    /// Removes every key but keeps the session (and its id). Written after the handler.
    pub fn clear(&self) -> Result<(), SessionError> {
        let mut state = self.loaded()?;
        state.data.clear();
        state.changes.clear();
        state.cleared = true;
        Ok(())
    }

    /// The keys the session holds now.
    pub fn keys(&self) -> Result<Vec<String>, SessionError> {
        Ok(self.loaded()?.data.keys().cloned().collect())
    }

    /// Whether the session holds no keys.
    pub fn is_empty(&self) -> Result<bool, SessionError> {
        Ok(self.loaded()?.data.is_empty())
    }

    /// Adds `delta` to the integer under `key` (missing counts as 0) and returns the new
    /// value: one atomic `HINCRBY`, so concurrent requests never lose a count. Starts a
    /// session if there is none. Fails with [`SessionError::Ended`] if the session was
    /// destroyed meanwhile: it is never re-created.
    pub async fn incr(&self, key: &str, delta: i64) -> Result<i64, SessionError> {
        check_key(key)?;
        self.load().await?;
        let not_an_integer = || SessionError::NotAnInteger { key: key.into() };
        // A value this request set for the key goes to the store first, in the same script.
        let base = {
            let state = self.loaded()?;
            if !state.data.contains_key(key) {
                too_large(
                    "key count",
                    state.data.len() + 1,
                    self.inner.store.limits.keys,
                )?;
            }
            match state.changes.get(key) {
                Some(Some(json)) => Some(json.parse::<i64>().map_err(|_| not_an_integer())?),
                Some(None) => Some(0),
                None if state.cleared => Some(0),
                None => None,
            }
        };
        if let Some(base) = base {
            base.checked_add(delta).ok_or_else(not_an_integer)?;
        }
        let value = self
            .write_with(None, |store, store_key, mode, ttl| async move {
                let counter = Counter {
                    mode,
                    ttl,
                    field: key,
                    delta,
                    base,
                };
                store.backend.incr(&store_key, &counter).await
            })
            .await?;
        let mut state = self.state();
        state.data.insert(key.to_owned(), value.to_string());
        if state.cleared {
            // The pending clear runs after this; keep the counter through it.
            state
                .changes
                .insert(key.to_owned(), Some(value.to_string()));
        } else {
            state.changes.remove(key);
        }
        Ok(value)
    }

    /// Gives the session a new id, keeping its data (call it after login, against session
    /// fixation). The old id is dead from the moment this returns: the session is read and
    /// deleted in one step, then stored under the new id with this request's changes, so a
    /// write made with the old id either landed before and is kept, or fails.
    pub async fn regenerate(&self) -> Result<(), SessionError> {
        self.load().await?;
        let store = Arc::clone(&self.inner.store);
        let old_key = {
            let mut state = self.state();
            match (state.stored, state.key(&store.prefix)) {
                (Stored::Live, Some(key)) => key,
                // No stored session: a new id is drawn when something is written.
                _ => return Ok(()),
            }
        };
        let Some(taken) = store.backend.take(&old_key).await? else {
            self.forget();
            return Err(SessionError::Ended);
        };
        let fields = {
            let mut state = self.state();
            let mut fields = if state.cleared {
                HashMap::new()
            } else {
                taken.fields
            };
            for (k, v) in state.changes.drain() {
                match v {
                    Some(v) => fields.insert(k, v),
                    None => fields.remove(&k),
                };
            }
            state.cleared = false;
            state.stored = Stored::Absent;
            state.token = None;
            state.key = None;
            state.data = fields.clone();
            fields
        };
        // The session keeps its age: regenerating never extends the absolute timeout.
        let result = self
            .write_with(Some(taken.created_ms), |store, key, mode, ttl| {
                let fields = &fields;
                async move {
                    let write = Write {
                        mode,
                        ttl,
                        clear: false,
                        set: fields
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect(),
                        delete: Vec::new(),
                    };
                    store.backend.save(&key, &write).await
                }
            })
            .await;
        if result.is_err() {
            // The old session is gone and the new one was not stored: start afresh.
            self.forget();
        }
        result
    }

    /// Ends the session (logout): deletes it from the store now, and the response expires
    /// the cookie. Writes made afterwards in this request start a new session.
    pub async fn destroy(&self) -> Result<(), SessionError> {
        let key = self.state().key(&self.inner.store.prefix);
        if let Some(key) = key {
            self.inner.store.backend.destroy(&key).await?;
        }
        self.forget();
        Ok(())
    }

    /// Drops every trace of the current session from this handle.
    fn forget(&self) {
        let mut state = self.state();
        state.token = None;
        state.key = None;
        state.created_ms = None;
        state.stored = Stored::Absent;
        state.new_token = false;
        state.data.clear();
        state.changes.clear();
        state.cleared = false;
    }

    /// Runs a guarded write: on the live session, or, if there is none, on a new one under a
    /// fresh token, created now or at `created_ms`. A live session that vanished or reached
    /// its absolute timeout meanwhile is never re-created. `op` gets the store key, the mode
    /// and the expiry to set.
    async fn write_with<T, F, Fut>(&self, created_ms: Option<i64>, op: F) -> Result<T, SessionError>
    where
        F: Fn(Arc<StoreInner>, StoreKey, Mode, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<Outcome<T>, SessionError>>,
    {
        let store = Arc::clone(&self.inner.store);
        for _ in 0..MAX_TOKEN_DRAWS {
            let now = now_ms();
            let (key, mode, created_ms, fresh) = {
                let mut state = self.state();
                let key = state.key(&store.prefix);
                match (state.stored, key, state.created_ms) {
                    (Stored::Live, Some(key), Some(created)) => (key, Mode::Update, created, None),
                    _ => {
                        let token =
                            Token::generate().map_err(|e| SessionError::Entropy(e.to_string()))?;
                        let key = token.store_key(&store.prefix);
                        let created = created_ms.unwrap_or(now);
                        (
                            key,
                            Mode::Create {
                                created_ms: created,
                            },
                            created,
                            Some(token),
                        )
                    }
                }
            };
            let outcome = match store.lifetimes.ttl(created_ms, now) {
                Some(ttl) => op(Arc::clone(&store), key.clone(), mode, ttl)
                    .await?
                    .map(|value| (value, ttl)),
                None => Outcome::Gone,
            };
            match outcome {
                Outcome::Done((value, ttl)) => {
                    let mut state = self.state();
                    if let Some(token) = fresh {
                        state.token = Some(token);
                        state.key = Some(key);
                        state.created_ms = Some(created_ms);
                        state.new_token = true;
                    }
                    state.stored = Stored::Live;
                    state.ttl = Some(ttl);
                    return Ok(value);
                }
                Outcome::Gone => {
                    self.forget();
                    return Err(SessionError::Ended);
                }
                Outcome::Taken => continue,
            }
        }
        Err(SessionError::Corrupt(
            "every freshly drawn session key was taken".into(),
        ))
    }

    /// Whether the request left changes that must be written before the response goes out.
    pub(crate) fn has_changes(&self) -> bool {
        let state = self.state();
        state.cleared || !state.changes.is_empty()
    }

    /// Writes this request's changes: only what changed, in one round trip.
    pub(crate) async fn commit(self) -> Result<(), SessionError> {
        let (changes, clear) = {
            let mut state = self.state();
            if state.stored == Stored::Unknown {
                return Err(SessionError::NotLoaded);
            }
            let clear = std::mem::take(&mut state.cleared);
            (std::mem::take(&mut state.changes), clear)
        };
        if changes.is_empty() && !clear {
            return Ok(());
        }
        self.write_with(None, |store, key, mode, ttl| {
            let changes = &changes;
            async move {
                let write = Write {
                    mode,
                    ttl,
                    clear: clear && matches!(mode, Mode::Update),
                    set: changes
                        .iter()
                        .filter_map(|(k, v)| Some((k.as_str(), v.as_deref()?)))
                        .collect(),
                    delete: if clear {
                        Vec::new()
                    } else {
                        changes
                            .iter()
                            .filter(|(_, v)| v.is_none())
                            .map(|(k, _)| k.as_str())
                            .collect()
                    },
                };
                store.backend.save(&key, &write).await
            }
        })
        .await
    }

    /// Adds the `Set-Cookie` this response needs, if any, and queues the expiry refresh of
    /// a session the request carried but never read.
    pub(crate) fn finish(&self, headers: &mut HeaderMap) {
        let store = &self.inner.store;
        let codec = &store.codec;
        let state = self.state();
        let reissue = state.new_token || state.stale_key || codec.attributes.persistent;
        let header = match (state.stored, &state.token, state.created_ms) {
            (Stored::Unknown, Some(token), Some(created)) => {
                let now = now_ms();
                let deadline = store.lifetimes.deadline_ms(created, now);
                if deadline > now {
                    store.toucher.touch(token.clone(), deadline);
                }
                let max_age = Duration::from_millis(u64::try_from(deadline - now).unwrap_or(0));
                reissue
                    .then(|| codec.set_cookie(token, created, max_age))
                    .flatten()
            }
            (Stored::Live, Some(token), Some(created)) => reissue
                .then(|| codec.set_cookie(token, created, state.ttl.unwrap_or_default()))
                .flatten(),
            _ if state.had_cookie => codec.removal(),
            _ => None,
        };
        if let Some(header) = header {
            headers.append(http::header::SET_COOKIE, header);
        }
    }
}

fn too_large(limit: &'static str, got: usize, max: usize) -> Result<(), SessionError> {
    if got > max {
        Err(SessionError::TooLarge { limit, max, got })
    } else {
        Ok(())
    }
}

fn check_key(key: &str) -> Result<(), SessionError> {
    if key.is_empty() {
        Err(SessionError::EmptyKey)
    } else {
        Ok(())
    }
}
