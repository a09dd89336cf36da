//! [`Session`]: the handle a handler reads and writes.
//!
//! Nothing is asked of the store until the handler needs it: the first read loads the session
//! (one round trip that also slides its expiry), so a handler that returns early, or never
//! reads, costs no round trip. `insert`, `remove` and `clear` only stage the change; the layer
//! writes what changed, and only that, after the handler returns (not when it answers with a
//! 5xx). `incr`, `regenerate` and `destroy` go to the store at once, because their result
//! matters to the handler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use serde::{de::DeserializeOwned, Serialize};

use crate::cookie::{Carried, CarriedValue, CookieCodec, Meta, Verified};
use crate::error::Limit;
use crate::error::SessionError;
use crate::events::{SessionEvent, SessionEventKind as Kind};
use crate::fields::Fields;
use crate::observe::{count, observed};
use crate::state::StoreInner;
use crate::store::{
    now_ms, Counter, Found, IndexOp, IndexStatus, Mode, Outcome, Write, META_IDLE, META_USER,
};
use crate::token::{StoreKey, Token, UserHandle};
use crate::transport::{header_value, Transport};

/// A fresh token collides with a live one with probability 2^-256; we still never overwrite,
/// and give up after this many draws.
const MAX_TOKEN_DRAWS: usize = 3;

/// The session of one request: a cheap, cloneable handle.
///
/// With the `axum` feature, take it as an extractor; with plain tower, take it from the
/// request extensions. Either way it is loaded on first use.
///
/// ```
/// use tower_redis_session::{Session, SessionError};
///
/// async fn handler(session: Session) -> Result<String, SessionError> {
///     let visits = session.incr("visits", 1).await?; // atomic, at once
///     let user: Option<String> = session.get("user").await?; // loads the session once
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
    /// When the request started (ms since the epoch): "end all sessions" refuses logins of
    /// requests that started before it.
    started_ms: i64,
    /// Held across each store operation of this handle, so that two of them run one after
    /// the other (a handler that joins two `incr`s on a new session creates one session).
    op: tokio::sync::Mutex<()>,
    /// How the token came, and so how the response gives new ones back.
    transport: Transport,
}

/// Whether a write may create a session when there is none.
enum Create {
    No,
    Yes,
    /// Under this token only (a new secret); `true` if its key was announced to a user's
    /// index first.
    With(Token, bool),
}

/// What we know of the session in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    /// The request carried a valid cookie but nobody has asked the store yet.
    Unknown,
    /// There is no session: none was sent, it expired, or this request destroyed it.
    Absent,
    /// The session under `token` is live in the store.
    Live,
    /// The cookie's session was ended (logout or a new id, here or in another request):
    /// it reads as empty, refuses writes, and the response leaves the cookie alone.
    Ended,
}

struct State {
    /// The request's cookie headers, until their first use verifies them: a request that
    /// never uses its session pays for no MAC check on its way.
    carried: Option<Carried>,
    /// The current token: the verified one from the cookie, or one made during this request.
    token: Option<Token>,
    /// The token's store key, computed when first needed (a SHA-256).
    key: Option<StoreKey>,
    /// Creation time of the session under `token` (signed into the cookie).
    created_ms: Option<i64>,
    /// The public id: from the cookie, or drawn when the session is first stored.
    id: Option<uuid::Uuid>,
    /// The user the session is bound to, as the cookie names it; and the user's id, once
    /// loaded (or bound in this request).
    user: Option<UserHandle>,
    user_id: Option<String>,
    stored: Stored,
    /// The session's own idle timeout, if shorter than the store's.
    idle_ms: Option<u64>,
    /// A persistent cookie rather than a browser-session one.
    persistent: bool,
    /// When the persistent cookie the request carried expires in the browser.
    cookie_expires_ms: Option<i64>,
    /// The cookie was signed by an older key.
    stale_key: bool,
    /// The token was made during this request.
    new_token: bool,
    /// `destroy` ended the session: the response removes the cookie.
    destroyed: bool,
    /// The persistence or idle timeout changed: the expiry is written, the cookie re-issued.
    lifetime_changed: bool,
    /// Something was changed by this request (staged or written).
    modified: bool,
    /// Remaining lifetime as of the last store operation.
    ttl: Option<Duration>,
    /// Stored values with this request's changes applied (JSON text); `None` until loaded.
    data: Option<Fields>,
    /// Pending changes: `Some` to set, `None` to delete.
    changes: HashMap<String, Option<String>>,
    /// Pending: drop every stored field first.
    cleared: bool,
}

impl State {
    /// Takes in what the request's cookie said, once verified (`None`: no valid cookie).
    fn adopt(&mut self, verified: Option<Verified>) {
        let Some(v) = verified else {
            self.stored = Stored::Absent;
            self.data = Some(Fields::default());
            return;
        };
        self.token = Some(v.token);
        self.created_ms = Some(v.meta.created_ms);
        self.id = Some(v.meta.id);
        self.user = v.meta.user;
        self.idle_ms = v.meta.idle_ms;
        self.persistent = v.meta.expires_ms.is_some();
        self.cookie_expires_ms = v.meta.expires_ms;
        self.stale_key = v.stale_key;
    }

    fn key(&mut self, prefix: &str) -> Option<StoreKey> {
        if self.key.is_none() {
            self.key = self.token.as_ref().map(|t| t.store_key(prefix));
        }
        self.key.clone()
    }

    /// The stored fields as this request sees them: its pending changes applied.
    fn view(&self, mut stored: Fields) -> Fields {
        if self.cleared {
            stored.clear();
        }
        for (k, v) in &self.changes {
            match v {
                Some(v) => stored.insert(k.clone(), v.clone()),
                None => drop(stored.remove(k)),
            }
        }
        stored
    }

    /// The session turned out not to exist: start over without one, keeping the values this
    /// request staged (they create a new session when written; removals have nothing left
    /// to remove).
    fn start_over(&mut self) {
        let changes = std::mem::take(&mut self.changes);
        self.forget(Stored::Absent);
        self.changes = changes.into_iter().filter(|(_, v)| v.is_some()).collect();
        self.data = Some(self.view(Fields::default()));
    }

    /// Drops every trace of the current session from this handle.
    fn forget(&mut self, stored: Stored) {
        self.token = None;
        self.key = None;
        self.created_ms = None;
        self.id = None;
        self.user = None;
        self.user_id = None;
        self.stored = stored;
        self.new_token = false;
        self.data = Some(Fields::default());
        self.changes.clear();
        self.cleared = false;
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state();
        f.debug_struct("Session")
            .field("stored", &s.stored)
            .field("loaded", &s.data.is_some())
            .field("changed", &s.changes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The session of a request that started at `now_ms`, with the cookie headers it carried
    /// (verified on first use).
    pub(crate) fn new(
        store: Arc<StoreInner>,
        carried: Option<Carried>,
        now_ms: i64,
        transport: Transport,
    ) -> Self {
        // A cookie: not known to be stored or absent until it is verified and loaded.
        let (stored, data) = match carried {
            Some(_) => (Stored::Unknown, None),
            None => (Stored::Absent, Some(Fields::default())),
        };
        // Built in one expression, so that the state is not copied from place to place
        // before it lands in the `Arc` (every request makes one).
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    carried,
                    token: None,
                    key: None,
                    created_ms: None,
                    id: None,
                    user: None,
                    user_id: None,
                    stored,
                    idle_ms: None,
                    persistent: store.codec.attributes.persistent,
                    cookie_expires_ms: None,
                    stale_key: false,
                    new_token: false,
                    destroyed: false,
                    lifetime_changed: false,
                    modified: false,
                    ttl: None,
                    data,
                    changes: HashMap::new(),
                    cleared: false,
                }),
                store,
                op: tokio::sync::Mutex::new(()),
                started_ms: now_ms,
                transport,
            }),
        }
    }

    /// Waits for this handle's store operation under way, if any. Nearly always there is
    /// none, and taking the lock at once makes no waiter (`try_lock` never jumps the queue:
    /// a released lock goes to the first waiter).
    async fn op(&self) -> tokio::sync::MutexGuard<'_, ()> {
        match self.inner.op.try_lock() {
            Ok(op) => op,
            Err(_) => self.inner.op.lock().await,
        }
    }

    /// The state as it stands, its cookie verified.
    fn state(&self) -> MutexGuard<'_, State> {
        let mut state = self.unverified();
        if let Some(carried) = state.carried.take() {
            let verified = self
                .inner
                .store
                .codec
                .verify_carried(&carried, self.inner.started_ms);
            state.adopt(verified);
        }
        state
    }

    /// The state without verifying the cookie (`carried` is still set if nobody used it).
    fn unverified(&self) -> MutexGuard<'_, State> {
        // Every change to the state is made after its checks; a poisoned lock is still whole.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// This session's idle timeout and the TTL it gets if touched now; `None` once it is past
    /// its absolute timeout.
    fn ttl_now(&self, state: &State, created_ms: i64, now: i64) -> Option<Duration> {
        let lifetimes = &self.inner.store.lifetimes;
        lifetimes.ttl(lifetimes.idle(state.idle_ms), created_ms, now)
    }

    /// The TTL the current session (by its signed creation time) gets if touched now.
    fn session_ttl(&self, state: &State, now: i64) -> Option<Duration> {
        state
            .created_ms
            .and_then(|created| self.ttl_now(state, created, now))
    }

    /// Reads the session from the store and slides its expiry, in one round trip. Reads call
    /// it for you; call it yourself only to load ahead. Does nothing if the session is loaded
    /// already or if the request carried no valid session cookie, and needs no round trip for
    /// a session past its absolute timeout.
    pub async fn load(&self) -> Result<(), SessionError> {
        let _op = self.op().await;
        let store = &self.inner.store;
        let (key, ttl, id) = {
            let mut state = self.state();
            if state.data.is_some() {
                return Ok(());
            }
            let ttl = self.session_ttl(&state, now_ms());
            match (state.key(&store.prefix), ttl) {
                (Some(key), Some(ttl)) => (key, ttl, state.id),
                // Past the absolute timeout: the store let it expire at that moment.
                _ => {
                    if state.stored == Stored::Unknown {
                        state.stored = Stored::Absent;
                    }
                    state.data = Some(state.view(Fields::default()));
                    return Ok(());
                }
            }
        };
        let found = observed!("load", id, store.backend.load(&key, ttl))?;
        let result = match &found {
            Found::Live(_) => "hit",
            Found::Absent => "miss",
            Found::Ended => "ended",
        };
        count("session_loaded_total", &[("result", result)], 1);
        let mut state = self.state();
        if state.data.is_some() || state.key.as_ref() != Some(&key) {
            return Ok(()); // loaded meanwhile, or the id changed: that copy wins
        }
        let fields = match found {
            Found::Live(loaded) => {
                state.stored = Stored::Live;
                state.ttl = Some(ttl);
                if let (Some(user), Some(_)) = (&state.user, &loaded.user) {
                    // The user's index must outlive this session (see touch::keep_indexes).
                    store.toucher.touch_index(user.clone());
                }
                state.user_id = loaded.user;
                if state.id.is_none() {
                    state.id = loaded.id;
                }
                loaded.fields
            }
            Found::Ended => {
                // An ended session reads as empty, this request's own staged changes included.
                state.stored = Stored::Ended;
                state.changes.clear();
                state.cleared = false;
                Fields::default()
            }
            Found::Absent => {
                // Live earlier in this request and gone now: it ended meanwhile.
                state.stored = if state.stored == Stored::Live {
                    Stored::Ended
                } else {
                    Stored::Absent
                };
                Fields::default()
            }
        };
        state.data = Some(state.view(fields));
        Ok(())
    }

    /// The value under `key`, decoded from JSON; `None` if there is none. Loads the session
    /// on first use.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        self.load().await?;
        let state = self.state();
        state
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(serde_json::from_str)
            .transpose()
            .map_err(|source| SessionError::Decode {
                key: key.into(),
                source,
            })
    }

    /// Reads the value under `key` and removes it, in one step that no other request shares:
    /// of requests that take the same value at once, exactly one gets it (a flash message, a
    /// nonce, a second factor's state). One round trip, now rather than after the handler, so
    /// that, like [`incr`](Self::incr), it stays done if the handler then fails; none for a
    /// value this request set itself, or when there is no session.
    pub async fn take<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        check_key(key)?;
        let _op = self.op().await;
        let staged = {
            let state = self.state();
            match state.changes.get(key) {
                Some(staged) => Some(staged.clone()),
                // Nothing stored to take: no session, or a clear this request staged.
                None if state.cleared => Some(None),
                None if matches!(state.stored, Stored::Absent | Stored::Ended) => Some(None),
                None => None,
            }
        };
        let json = match staged {
            // This request's own value: its removal is staged in its place.
            Some(staged) => {
                if staged.is_some() {
                    self.remove(key)?;
                }
                staged
            }
            None => {
                let taken = self
                    .write_with(None, Create::No, |store, store_key, _, ttl| async move {
                        let id = self.state().id;
                        observed!("take", id, store.backend.take(&store_key, key, ttl))
                    })
                    .await;
                let json = match taken {
                    Ok(taken) => taken.flatten(),
                    // Ended meanwhile: nothing to take, as a read would find.
                    Err(SessionError::Ended) => None,
                    Err(e) => return Err(e),
                };
                let mut state = self.state();
                if let Some(data) = state.data.as_mut() {
                    data.remove(key);
                }
                state.modified |= json.is_some();
                json
            }
        };
        json.map(|json| serde_json::from_str(&json))
            .transpose()
            .map_err(|source| SessionError::Decode {
                key: key.into(),
                source,
            })
    }

    /// Sets `key` to `value` (as JSON). Written after the handler returns, together with
    /// the other changes of this request; other keys of the session are left untouched, and
    /// the session is not loaded for it. Fails with [`SessionError::Ended`] if the session is
    /// known to have ended (its writes would be refused anyway).
    pub fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), SessionError> {
        check_key(key)?;
        let json = serde_json::to_string(value).map_err(|source| SessionError::Encode {
            key: key.into(),
            source,
        })?;
        let limits = self.inner.store.limits;
        too_large(Limit::ValueSize, json.len(), limits.value_bytes)?;
        let mut state = self.state();
        if state.stored == Stored::Ended {
            return Err(SessionError::Ended);
        }
        // The same value staged twice is one write; a value equal to the stored one is still
        // written, since another request may have changed it meanwhile.
        if state.changes.get(key) == Some(&Some(json.clone())) {
            return Ok(());
        }
        // Against the loaded session the limits are exact; unloaded, this request's own
        // changes are a lower bound here, and the store checks the rest when it writes.
        let (count, bytes, old) = match &state.data {
            Some(data) => (data.len(), data.bytes(), data.get(key)),
            None => {
                let sets = state
                    .changes
                    .iter()
                    .filter_map(|(k, v)| Some((k, v.as_ref()?)));
                let (count, bytes) =
                    sets.fold((0, 0), |(n, b), (k, v)| (n + 1, b + k.len() + v.len()));
                (
                    count,
                    bytes,
                    state.changes.get(key).and_then(Option::as_deref),
                )
            }
        };
        let (count, bytes) = match old {
            Some(old) => (count, bytes.saturating_sub(key.len() + old.len())),
            None => (count + 1, bytes),
        };
        too_large(Limit::KeyCount, count, limits.keys)?;
        too_large(
            Limit::SessionSize,
            bytes + key.len() + json.len(),
            limits.session_bytes,
        )?;
        if let Some(data) = state.data.as_mut() {
            data.insert(key.to_owned(), json.clone());
        }
        state.changes.insert(key.to_owned(), Some(json));
        state.modified = true;
        Ok(())
    }

    /// Removes `key`. Written after the handler returns. Removing from a request that has no
    /// session changes nothing and stores nothing.
    pub fn remove(&self, key: &str) -> Result<(), SessionError> {
        check_key(key)?;
        let mut state = self.state();
        if let Some(data) = state.data.as_mut() {
            data.remove(key);
        }
        match state.stored {
            Stored::Absent | Stored::Ended => {
                state.changes.remove(key);
            }
            Stored::Unknown | Stored::Live => {
                state.changes.insert(key.to_owned(), None);
                state.modified = true;
            }
        }
        Ok(())
    }

    /// Removes every key but keeps the session (and its id). Written after the handler.
    pub fn clear(&self) -> Result<(), SessionError> {
        let mut state = self.state();
        state.data = Some(Fields::default());
        state.changes.clear();
        if matches!(state.stored, Stored::Unknown | Stored::Live) {
            state.cleared = true;
            state.modified = true;
        }
        Ok(())
    }

    /// The keys the session holds now. Loads the session on first use.
    pub async fn keys(&self) -> Result<Vec<String>, SessionError> {
        self.load().await?;
        Ok(self
            .state()
            .data
            .as_ref()
            .map(|data| data.iter().map(|(k, _)| k.to_owned()).collect())
            .unwrap_or_default())
    }

    /// Whether the session holds no keys. Loads the session on first use.
    pub async fn is_empty(&self) -> Result<bool, SessionError> {
        self.load().await?;
        Ok(self.state().data.as_ref().is_none_or(Fields::is_empty))
    }

    /// Whether this request changed the session: a staged `insert`, `remove` or `clear`, or
    /// an `incr`, `regenerate`, `destroy` or lifetime change.
    pub fn is_modified(&self) -> bool {
        self.state().modified
    }

    /// Makes this session's cookie persistent ("remember me": it survives a browser restart,
    /// with a `Max-Age` in step with the session's expiry) or a browser-session cookie. Takes
    /// effect with this response, and only if the session exists (or is created) by then.
    /// A session from an earlier request gets a new secret with it (as
    /// [`regenerate`](Self::regenerate), one more round trip), so that no copy of the old
    /// cookie keeps the old lifetime.
    pub fn set_persistent(&self, persistent: bool) {
        let mut state = self.state();
        if state.persistent != persistent {
            state.persistent = persistent;
            state.lifetime_changed = true;
            state.modified = true;
        }
    }

    /// Shortens this session's idle timeout (say, for an admin session); at most the store's
    /// [`idle_timeout`](crate::SessionStoreBuilder::idle_timeout), which it never exceeds,
    /// and at least a second. The new expiry is written after the handler. A session from an
    /// earlier request gets a new secret with it (as [`regenerate`](Self::regenerate), one
    /// more round trip): the timeout is signed into the cookie, and a copy of the old cookie
    /// (a stale tab, a background refresh) would otherwise slide the session on the old one.
    pub fn set_idle_timeout(&self, idle: Duration) -> Result<(), SessionError> {
        let max = Duration::from_millis(self.inner.store.lifetimes.idle_ms);
        if idle < Duration::from_secs(1).min(max) || idle > max {
            return Err(SessionError::IdleTimeout {
                requested: idle,
                max,
            });
        }
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let own = (idle < max).then_some(idle_ms);
        let mut state = self.state();
        if state.idle_ms != own {
            state.idle_ms = own;
            state.lifetime_changed = true;
            state.modified = true;
        }
        Ok(())
    }

    /// When the session expires if no other request comes: `None` when the request has no
    /// session (as far as it knows: a session not loaded yet is taken to be live).
    pub fn expires_at(&self) -> Option<SystemTime> {
        let state = self.state();
        if !matches!(state.stored, Stored::Unknown | Stored::Live) {
            return None;
        }
        let lifetimes = &self.inner.store.lifetimes;
        let idle = lifetimes.idle(state.idle_ms);
        let deadline = lifetimes.deadline_ms(idle, state.created_ms?, now_ms());
        Some(UNIX_EPOCH + Duration::from_millis(u64::try_from(deadline).ok()?))
    }

    /// Adds `delta` to the integer under `key` (missing counts as 0) and returns the new
    /// value: one atomic `HINCRBY`, so concurrent requests never lose a count. On a session
    /// not loaded yet, the same round trip loads it: reads after an `incr` cost nothing.
    /// Starts a session if there is none. Fails with [`SessionError::Ended`] if the session was
    /// ended meanwhile: it is never re-created.
    pub async fn incr(&self, key: &str, delta: i64) -> Result<i64, SessionError> {
        check_key(key)?;
        let _op = self.op().await;
        let not_an_integer = || SessionError::NotAnInteger { key: key.into() };
        let max_keys = self.inner.store.limits.keys;
        // A value this request set for the key goes to the store first, in the same script.
        let (base, unloaded) = {
            let state = self.state();
            if let Some(data) = &state.data {
                if !data.contains_key(key) {
                    too_large(Limit::KeyCount, data.len() + 1, max_keys)?;
                }
            }
            let base = match state.changes.get(key) {
                Some(Some(json)) => Some(json.parse::<i64>().map_err(|_| not_an_integer())?),
                Some(None) => Some(0),
                None if state.cleared => Some(0),
                None => None,
            };
            (base, state.data.is_none())
        };
        if let Some(base) = base {
            base.checked_add(delta).ok_or_else(not_an_integer)?;
        }
        let value = self
            .write_with(
                None,
                Create::Yes,
                |store, store_key, mode, ttl| async move {
                    let unloaded = unloaded && matches!(mode, Mode::Update);
                    let counter = Counter {
                        mode,
                        ttl,
                        field: key,
                        delta,
                        base,
                        max_keys: unloaded.then_some(max_keys),
                        // The session comes back with the counter: a read after it is free.
                        load: unloaded,
                    };
                    let id = self.state().id;
                    observed!("incr", id, store.backend.incr(&store_key, &counter))
                },
            )
            .await?
            .ok_or(SessionError::Ended)?;
        let (value, loaded) = value;
        let mut state = self.state();
        if let Some(loaded) = loaded.filter(|_| state.data.is_none()) {
            count("session_loaded_total", &[("result", "hit")], 1);
            state.user_id = loaded.user;
            if state.id.is_none() {
                state.id = loaded.id;
            }
            state.data = Some(state.view(loaded.fields));
        }
        if let Some(data) = state.data.as_mut() {
            data.insert(key.to_owned(), value.to_string());
        }
        if state.cleared {
            // The pending clear runs after this; keep the counter through it.
            state
                .changes
                .insert(key.to_owned(), Some(value.to_string()));
        } else {
            state.changes.remove(key);
        }
        state.modified = true;
        Ok(value)
    }

    /// Gives the session a new secret, keeping its data, its public id and its creation time
    /// (call it after any change of privilege; [`login`](Self::login) does it for you). The
    /// old secret is dead from the moment this returns: the session moves to the new secret
    /// and the old key keeps a marker for as long as the old cookie could be valid, in one
    /// step (on a cluster: read and ended in one step, then stored under the new secret with
    /// this request's changes). A write made with the old
    /// cookie either landed before and is kept, or is refused; a request still carrying the
    /// old cookie never overwrites or removes the new one.
    pub async fn regenerate(&self) -> Result<(), SessionError> {
        let _op = self.op().await;
        self.renew(None).await
    }

    /// Binds the session to `user_id` (login): a new secret as with
    /// [`regenerate`](Self::regenerate), and the session joins the user's sessions, which the
    /// store can list and end ([`SessionStore::user_sessions`](crate::SessionStore::user_sessions),
    /// [`end_user_sessions`](crate::SessionStore::end_user_sessions)). Logging in as another
    /// user than the session's current one starts from empty data: the previous user's is
    /// never carried over. Fails with [`SessionError::Ended`] if the user's sessions were all
    /// ended while this login was under way.
    pub async fn login(&self, user_id: &str) -> Result<(), SessionError> {
        if user_id.is_empty() {
            return Err(SessionError::EmptyKey);
        }
        let _op = self.op().await;
        self.renew(Some(user_id)).await
    }

    /// Ends the session and takes it out of its user's sessions (logout). Same as
    /// [`destroy`](Self::destroy).
    pub async fn logout(&self) -> Result<(), SessionError> {
        self.destroy().await
    }

    /// The public id of the session: a UUID v7, safe to show, log and put in a URL (it is
    /// never accepted as a cookie and never leads to the secret). The same for the whole life
    /// of the session, across [`regenerate`](Self::regenerate) and
    /// [`login`](Self::login); `None` until the session is stored.
    pub fn id(&self) -> Option<uuid::Uuid> {
        let state = self.state();
        matches!(state.stored, Stored::Unknown | Stored::Live)
            .then_some(state.id)
            .flatten()
    }

    /// The user the session is bound to by [`login`](Self::login). Loads the session on
    /// first use.
    pub async fn user_id(&self) -> Result<Option<String>, SessionError> {
        self.load().await?;
        Ok(self.state().user_id.clone())
    }

    /// A new secret for the session; with `bind`, bound to that user. Two round trips: the
    /// old session is read and ended; then, at once, the new session is created and the
    /// user's index learns its key (only if it still holds the old one, and for a login only
    /// if the user's sessions were not ended since this request started). "End all" can
    /// strike at any point and still end this session.
    async fn renew(&self, bind: Option<&str>) -> Result<(), SessionError> {
        let store = Arc::clone(&self.inner.store);
        let now = now_ms();
        let (old, was, cookie_user, id, own_idle) = {
            let mut state = self.state();
            if state.stored == Stored::Ended {
                if bind.is_none() {
                    return Err(SessionError::Ended);
                }
                // A login is never refused for the cookie it arrived with: it starts afresh.
                state.forget(Stored::Absent);
            }
            let ttl = self.session_ttl(&state, now);
            let old = state.key(&store.prefix).zip(ttl);
            if old.is_none() && bind.is_none() {
                // No session: a new secret is drawn when something is written.
                return Ok(());
            }
            (
                old,
                state.stored,
                state.user.clone(),
                state.id,
                state.idle_ms,
            )
        };
        if let (None, Some((key, ttl))) = (bind, &old) {
            if let Some(done) = self.move_to_new_key(key, *ttl, was).await {
                return done;
            }
        }
        let found = match &old {
            Some((key, ttl)) => {
                let ended = observed!("end", id, store.backend.end(key, *ttl, true))?;
                // The old id is dead from here on: unless a new session is stored (then the
                // Live arm of `finish` wins), the response drops the old cookie.
                self.state().destroyed = true;
                Some(ended)
            }
            None => None,
        };
        let taken = match found {
            Some(Found::Live(taken)) => Some(taken),
            // A session ended elsewhere, or gone while this request ran: a login starts
            // afresh; anything else is refused.
            Some(Found::Ended) | Some(Found::Absent) if bind.is_none() && was == Stored::Live => {
                self.state().forget(Stored::Ended);
                return Err(SessionError::Ended);
            }
            Some(Found::Ended) if bind.is_none() => {
                self.state().forget(Stored::Ended);
                return Err(SessionError::Ended);
            }
            _ => None,
        };
        if taken.is_none() && bind.is_none() {
            // Regenerating an expired session: writes start a new one, and the response drops
            // the old cookie (its id is now marked dead) unless they do.
            let mut state = self.state();
            state.start_over();
            state.destroyed = true;
            state.modified = true;
            return Ok(());
        }
        // Whom the old session belonged to: its stored user, or the cookie's.
        let old_user_id = taken.as_ref().and_then(|t| t.user.clone());
        let old_user = old_user_id
            .as_deref()
            .map(UserHandle::of)
            .or(cookie_user)
            .filter(|_| taken.is_some());
        let handle = bind.map(UserHandle::of);
        // Logging in as someone else replaces the previous user's data, and the session
        // starts over (a new public id); so does a login from a dead cookie.
        let switching = handle.is_some() && old_user.is_some() && handle != old_user;
        let fresh = taken.is_none() || switching;
        if switching {
            let mut state = self.state();
            state.changes.clear();
            state.cleared = true;
        }
        let (token, generated_id) =
            Token::generate_with_id(now).map_err(|e| SessionError::Entropy(e.to_string()))?;
        let new_id = if fresh {
            generated_id
        } else {
            id.unwrap_or(generated_id)
        };
        let created_ms = taken
            .as_ref()
            .filter(|_| !fresh)
            .map_or(now, |t| t.created_ms);
        let new_key = token.store_key(&store.prefix);
        let old_key = old.as_ref().map(|(key, _)| key);
        let lifetimes = store.lifetimes;
        let score_ms = lifetimes.deadline_ms(lifetimes.idle(own_idle), created_ms, now);
        let until_ms = store.index_until(now);
        if let (Some(h), Some((_, crate::SessionLimit::RefuseNew))) = (&handle, store.session_limit)
        {
            // Expired sessions must not count against the limit.
            let user = bind.unwrap_or_default();
            store.prune(user, &h.keys(&store.prefix)).await?;
        }
        // The index change that announces the new key: first in the list, its reply decides.
        let mut index = match (&handle, &old_user) {
            (Some(h), _) => vec![(
                h.keys(&store.prefix),
                IndexOp::Add {
                    id: new_id,
                    key: &new_key,
                    old: old_key.filter(|_| !fresh),
                    score_ms,
                    now_ms: now,
                    started_ms: self.inner.started_ms,
                    until_ms,
                    stale: crate::users::LOGIN_STEP,
                    limit: store.session_limit,
                },
            )],
            (None, Some(h)) => old_key
                .map(|old| {
                    let op = IndexOp::Move {
                        id: new_id,
                        old,
                        key: &new_key,
                        score_ms,
                        now_ms: now,
                        until_ms,
                    };
                    vec![(h.keys(&store.prefix), op)]
                })
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        let announced = !index.is_empty();
        if let (true, Some(user), Some(id), Some(key)) = (switching, &old_user, id, old_key) {
            // The previous user's list drops this session (it is ended).
            let op = IndexOp::Remove(vec![(id, key.clone())]);
            index.push((user.keys(&store.prefix), op));
        }
        let (fields, user_id, old_user_id) = {
            let mut state = self.state();
            let fields = state.view(if switching {
                Fields::default()
            } else {
                taken.map(|t| t.fields).unwrap_or_default()
            });
            // The old session's user goes on only if no other is bound (then the event of
            // the old session's end names it).
            let (user_id, old_user_id) = match bind {
                Some(bind) => (Some(bind.to_owned()), old_user_id),
                None => (old_user_id, None),
            };
            let user = handle.clone().or(old_user);
            state.forget(Stored::Absent);
            state.id = Some(new_id);
            state.user = user;
            state.user_id = user_id.clone();
            state.data = Some(fields.clone());
            state.destroyed = old.is_some();
            state.modified = true;
            (fields, user_id, old_user_id)
        };
        let limits = store.limits;
        too_large(Limit::KeyCount, fields.len(), limits.keys)?;
        let bytes = fields.bytes();
        too_large(Limit::SessionSize, bytes, limits.session_bytes)?;
        // The new session and its index entry in one round trip, in no particular order: "end
        // all" that strikes before the index change gets it refused (the new session is then
        // ended below, before its cookie ever leaves), one that strikes after ends it.
        // The session keeps its age: a new secret never extends the absolute timeout.
        let result = self
            .write_with(
                Some(created_ms),
                Create::With(token, announced),
                |store, key, mode, ttl| {
                    let (fields, user_id, index) = (&fields, &user_id, &index);
                    async move {
                        let mut set: Vec<(&str, &str)> = fields.iter().collect();
                        if let Some(user) = user_id {
                            set.push((META_USER, user.as_str()));
                        }
                        let write = Write {
                            mode,
                            ttl,
                            clear: false,
                            set,
                            delete: Vec::new(),
                            check: None,
                        };
                        let saved = store.backend.save_indexed(&key, &write, index);
                        let (saved, replies) = observed!("save", Some(new_id), saved)?;
                        Ok(saved.map(|()| replies))
                    }
                },
            )
            .await;
        let result = match result {
            Ok(Some(mut replies)) if announced && !replies.first().is_some_and(|r| r.done()) => {
                // The user's sessions were ended meanwhile (or since this request started),
                // or the old cookie was stale: this one goes with them. Or the user has as
                // many sessions as allowed.
                let ttl = Duration::from_millis(store.lifetimes.idle_ms);
                if let Err(e) =
                    observed!("end", Some(new_id), store.backend.end(&new_key, ttl, false))
                {
                    tracing::debug!(error = %e, "could not end a session its user's index refused");
                }
                match (replies.swap_remove(0).status, store.session_limit) {
                    (IndexStatus::OverLimit, Some((max, _))) => {
                        Err(SessionError::TooManySessions { max })
                    }
                    _ => Err(SessionError::Ended),
                }
            }
            Ok(Some(mut replies)) => {
                if let (Some(h), Some(user), Some(reply)) = (&handle, bind, replies.first_mut()) {
                    let keys = h.keys(&store.prefix);
                    // The oldest sessions over the limit (marked: no longer counted, listed
                    // or movable; a later login or "end all" ends them if this fails).
                    let to_end = std::mem::take(&mut reply.to_end);
                    if let Err(e) = store.end_entries(user, &keys, to_end).await {
                        tracing::warn!(error = %e, "could not end sessions over the user's limit");
                    }
                    let stale = std::mem::take(&mut reply.stale);
                    if let Err(e) = store.settle(user, &keys, stale).await {
                        tracing::debug!(error = %e, "could not check stale index entries");
                    }
                }
                Ok(Some(()))
            }
            other => other.map(|saved| saved.map(drop)),
        };
        if matches!(result, Ok(Some(()))) {
            let login = if bind.is_some() { "true" } else { "false" };
            count("session_regenerated_total", &[("login", login)], 1);
            let events = &store.events;
            if let (true, Some(old_id)) = (switching, id) {
                events.emit(|| SessionEvent::new(Kind::Destroyed, old_id, old_user_id));
            }
            if fresh {
                events.emit(|| SessionEvent::new(Kind::Created, new_id, user_id.clone()));
            }
            let kind = if bind.is_some() {
                Kind::LoggedIn
            } else {
                Kind::Regenerated
            };
            events.emit(|| SessionEvent::new(kind, new_id, user_id));
        } else {
            // The old session is gone and the new one was not stored.
            let ended = matches!(result, Err(SessionError::Ended));
            let mut state = self.state();
            state.forget(if ended { Stored::Ended } else { Stored::Absent });
            state.destroyed = old.is_some();
        }
        result.map(drop)
    }

    /// `regenerate` where the store can move the hash (not a cluster): one step that reads
    /// nothing, whatever the session's size, then the index entry of a logged-in session
    /// moves with it. The handle keeps what it loaded and staged (written after the handler,
    /// to the new key). `None`: the store cannot; take the general way.
    async fn move_to_new_key(
        &self,
        old: &StoreKey,
        ttl: Duration,
        was: Stored,
    ) -> Option<Result<(), SessionError>> {
        let store = Arc::clone(&self.inner.store);
        let token = match Token::generate() {
            Ok(token) => token,
            Err(e) => return Some(Err(SessionError::Entropy(e.to_string()))),
        };
        let new_key = token.store_key(&store.prefix);
        let id = self.state().id;
        let moved = store.backend.rename(old, &new_key, ttl, ttl);
        let moved = match observed!("end", id, moved) {
            Ok(moved) => moved?,
            Err(e) => return Some(Err(e)),
        };
        let (created_ms, user_id) = match moved {
            Outcome::Done(done) => done,
            // Expired: writes start a new session; the old cookie is dropped unless they do.
            Outcome::Gone if was != Stored::Live => {
                let mut state = self.state();
                state.start_over();
                state.destroyed = true;
                state.modified = true;
                return Some(Ok(()));
            }
            Outcome::Taken => {
                return Some(Err(SessionError::Corrupt(
                    "a freshly drawn session key was taken".into(),
                )))
            }
            _ => {
                self.state().forget(Stored::Ended);
                return Some(Err(SessionError::Ended));
            }
        };
        {
            let mut state = self.state();
            state.destroyed = true;
            state.modified = true;
        }
        if let (Some(user), Some(id)) = (user_id.as_deref(), id) {
            let keys = UserHandle::of(user).keys(&store.prefix);
            let now = now_ms();
            let op = IndexOp::Move {
                id,
                old,
                key: &new_key,
                score_ms: now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
                now_ms: now,
                until_ms: store.index_until(now),
            };
            let indexed = observed!("index", Some(id), store.backend.index(&keys, op));
            if !matches!(indexed, Ok(ref reply) if reply.done()) {
                // "End all" struck meanwhile (the session goes with the user's others), or the
                // index could not learn the new key (a session it cannot list must not live):
                // the new key never reached a browser.
                if let Err(e) = store.backend.end(&new_key, ttl, false).await {
                    tracing::debug!(error = %e, "could not end a session its user's index refused");
                }
                self.state().forget(Stored::Ended);
                return Some(indexed.and(Err(SessionError::Ended)));
            }
        }
        let mut state = self.state();
        state.token = Some(token);
        state.key = Some(new_key);
        state.created_ms = Some(created_ms);
        state.user = user_id.as_deref().map(UserHandle::of);
        state.user_id.clone_from(&user_id);
        state.stored = Stored::Live;
        state.new_token = true;
        state.ttl = Some(ttl);
        drop(state);
        count("session_regenerated_total", &[("login", "false")], 1);
        if let Some(id) = id {
            store
                .events
                .emit(|| SessionEvent::new(Kind::Regenerated, id, user_id));
        }
        Some(Ok(()))
    }

    /// Takes session `id` (at `key`) out of `user`'s index, if it still holds that key.
    async fn leave_index(
        &self,
        user: Option<&UserHandle>,
        id: Option<uuid::Uuid>,
        key: Option<&StoreKey>,
    ) -> Result<(), SessionError> {
        let (Some(user), Some(id), Some(key)) = (user, id, key) else {
            return Ok(());
        };
        let store = &self.inner.store;
        let keys = user.keys(&store.prefix);
        let op = IndexOp::Remove(vec![(id, key.clone())]);
        observed!("index", Some(id), store.backend.index(&keys, op)).map(drop)
    }

    /// Ends the session (logout): it is ended in the store now, then taken out of its
    /// user's sessions, and the response expires the cookie. Writes made afterwards in this
    /// request start a new session.
    pub async fn destroy(&self) -> Result<(), SessionError> {
        let _op = self.op().await;
        let store = &self.inner.store;
        let (key, ttl, user, id) = {
            let mut state = self.state();
            let ttl = self.session_ttl(&state, now_ms());
            (state.key(&store.prefix), ttl, state.user.clone(), state.id)
        };
        let found = match (&key, ttl) {
            (Some(key), Some(ttl)) => observed!("end", id, store.backend.end(key, ttl, false))?,
            _ => Found::Absent,
        };
        // Only a session this request ended leaves the index: an old cookie's successor stays.
        let ended = match found {
            Found::Live(ended) => {
                if let Err(e) = self.leave_index(user.as_ref(), id, key.as_ref()).await {
                    tracing::debug!(error = %e, "could not take the session out of its user's index");
                }
                Some(ended)
            }
            _ => None,
        };
        let user_id = {
            let mut state = self.state();
            let user_id = state.user_id.take();
            state.forget(Stored::Absent);
            // Logging out drops the cookie, whatever the store said (an automatic retry finds
            // its own marker): the user asked to be logged out in this browser.
            state.destroyed = true;
            state.modified = true;
            user_id
        };
        count("session_destroyed_total", &[], 1);
        if let Some(ended) = ended {
            if let Some(id) = id.or(ended.id) {
                let user_id = ended.user.or(user_id);
                store
                    .events
                    .emit(|| SessionEvent::new(Kind::Destroyed, id, user_id));
            }
        }
        Ok(())
    }

    /// Runs a guarded write: on the live (or not yet loaded) session, or, if there is none
    /// and `create` allows it, on a new one, created now or at `created_ms`. A session that
    /// ended or reached its absolute timeout meanwhile is never re-created. `op` gets the
    /// store key, the mode and the expiry to set. `Ok(None)`: there was no session and
    /// nothing was created.
    async fn write_with<T, F, Fut>(
        &self,
        created_ms: Option<i64>,
        create: Create,
        op: F,
    ) -> Result<Option<T>, SessionError>
    where
        F: Fn(Arc<StoreInner>, StoreKey, Mode, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<Outcome<T>, SessionError>>,
    {
        let store = Arc::clone(&self.inner.store);
        for _ in 0..=MAX_TOKEN_DRAWS {
            let now = now_ms();
            let (key, mode, created_ms, fresh, ttl, was) = {
                let mut state = self.state();
                let key = state.key(&store.prefix);
                let (key, mode, created, fresh) = match (state.stored, key, state.created_ms) {
                    (Stored::Ended, _, _) => return Err(SessionError::Ended),
                    (Stored::Live | Stored::Unknown, Some(key), Some(created)) => {
                        (key, Mode::Update, created, None)
                    }
                    _ => {
                        let (token, fresh_id, announced) = match &create {
                            Create::No => return Ok(None),
                            Create::Yes => {
                                let (token, id) = Token::generate_with_id(now)
                                    .map_err(|e| SessionError::Entropy(e.to_string()))?;
                                (token, Some(id), false)
                            }
                            Create::With(token, announced) => (token.clone(), None, *announced),
                        };
                        let key = token.store_key(&store.prefix);
                        let created = created_ms.unwrap_or(now);
                        let id = *state
                            .id
                            .get_or_insert_with(|| fresh_id.unwrap_or_else(uuid::Uuid::now_v7));
                        let mode = Mode::Create {
                            created_ms: created,
                            id,
                            announced,
                        };
                        (key, mode, created, Some(token))
                    }
                };
                let ttl = self.ttl_now(&state, created, now);
                (key, mode, created, fresh, ttl, state.stored)
            };
            let outcome = match ttl {
                Some(ttl) => op(Arc::clone(&store), key.clone(), mode, ttl)
                    .await?
                    .map(|value| (value, ttl)),
                None => Outcome::Gone,
            };
            let mut state = self.state();
            match outcome {
                Outcome::Done((value, ttl)) => {
                    // A login reports the sessions it starts itself.
                    let created = fresh.is_some() && matches!(create, Create::Yes);
                    if let Some(token) = fresh {
                        count("session_created_total", &[], 1);
                        state.token = Some(token);
                        state.key = Some(key);
                        state.created_ms = Some(created_ms);
                        state.new_token = true;
                    }
                    state.stored = Stored::Live;
                    state.ttl = Some(ttl);
                    let id = state.id.filter(|_| created);
                    drop(state);
                    if let Some(id) = id {
                        store
                            .events
                            .emit(|| SessionEvent::new(Kind::Created, id, None));
                    }
                    return Ok(Some(value));
                }
                // Never seen live by this request: it was absent all along; start anew.
                Outcome::Gone if was == Stored::Unknown => state.start_over(),
                Outcome::Gone | Outcome::Ended => {
                    state.forget(Stored::Ended);
                    return Err(SessionError::Ended);
                }
                // The one key a login announced to its user's index is taken: by the marker
                // of "end all sessions", which this login must not outlive.
                Outcome::Taken if matches!(create, Create::With(..)) => {
                    state.forget(Stored::Ended);
                    return Err(SessionError::Ended);
                }
                Outcome::TooLarge { limit, got } => {
                    let max = match limit {
                        Limit::KeyCount => store.limits.keys,
                        _ => store.limits.session_bytes,
                    };
                    return Err(SessionError::TooLarge { limit, max, got });
                }
                Outcome::Taken => {}
            }
        }
        Err(SessionError::Corrupt(
            "every freshly drawn session key was taken".into(),
        ))
    }

    /// Whether the request left changes that must be written before the response goes out.
    pub(crate) fn has_changes(&self) -> bool {
        // Every change verifies the cookie first: one still unverified was never used.
        let state = self.unverified();
        state.cleared
            || !state.changes.is_empty()
            || (state.lifetime_changed && matches!(state.stored, Stored::Unknown | Stored::Live))
    }

    /// Drops the staged changes (the handler answered with a 5xx): what already went to the
    /// store (`incr`, `regenerate`, `destroy`) stays.
    pub(crate) fn discard(&self) {
        let mut state = self.unverified();
        state.changes.clear();
        state.cleared = false;
        state.lifetime_changed = false;
    }

    /// Writes this request's changes: only what changed, in one round trip.
    pub(crate) async fn commit(self) -> Result<(), SessionError> {
        let _op = self.op().await;
        let rotate = {
            let state = self.state();
            state.lifetime_changed
                && !state.new_token
                && state.token.is_some()
                && matches!(state.stored, Stored::Unknown | Stored::Live)
        };
        if rotate {
            // A new idle timeout or persistence lives in the new cookie only: every copy of
            // the old one (a stale tab, a background refresh) must die with its token, or it
            // would keep the session on its old lifetime.
            self.renew(None).await?;
        }
        let (changes, clear, unloaded) = {
            let mut state = self.state();
            let clear = std::mem::take(&mut state.cleared);
            let mut changes = std::mem::take(&mut state.changes);
            if state.lifetime_changed {
                // Kept with the session, so that listings can tell when it was last seen.
                let idle = state.idle_ms.map(|ms| ms.to_string());
                changes.insert(META_IDLE.to_owned(), idle);
            }
            (changes, clear, state.data.is_none())
        };

        let limits = self.inner.store.limits;
        // A lifetime change alone stores nothing for a session that does not exist.
        let has_sets = changes
            .iter()
            .any(|(k, v)| v.is_some() && !crate::store::is_meta(k));
        let create = if has_sets { Create::Yes } else { Create::No };
        let this = &self;
        self.write_with(None, create, |store, key, mode, ttl| {
            let changes = &changes;
            let update = matches!(mode, Mode::Update);
            async move {
                let write = Write {
                    mode,
                    ttl,
                    clear: clear && update,
                    set: changes
                        .iter()
                        .filter_map(|(k, v)| Some((k.as_str(), v.as_deref()?)))
                        .collect(),
                    delete: if clear || !update {
                        Vec::new()
                    } else {
                        changes
                            .iter()
                            .filter(|(_, v)| v.is_none())
                            .map(|(k, _)| k.as_str())
                            .collect()
                    },
                    check: (unloaded && update && has_sets).then_some(limits),
                };
                let bytes: usize = write.set.iter().map(|(k, v)| k.len() + v.len()).sum();
                let id = this.state().id;
                let saved = observed!("save", id, store.backend.save(&key, &write));
                if matches!(saved, Ok(Outcome::Done(()))) {
                    count("session_saved_total", &[], 1);
                    count("session_bytes_written_total", &[], bytes as u64);
                }
                saved
            }
        })
        .await
        .map(drop)
    }

    /// Adds the `Set-Cookie` this response needs, if any, and queues the expiry refresh of a
    /// session the request carried but never used. Returns whether the response is the
    /// session's own, and no shared cache may keep it: it carries the cookie, or the handler
    /// used a live session (a page with the user's name, say).
    pub(crate) fn finish(&self, headers: &mut HeaderMap) -> bool {
        let store = &self.inner.store;
        let codec = &store.codec;
        let lifetimes = &store.lifetimes;
        let transport = &self.inner.transport;
        let mut state = self.unverified();
        if let Some(carried) = state.carried.take() {
            // Never used: the refresh task verifies the cookie and slides its expiry.
            let mut resent = false;
            if let Some(value) = store.codec.carried_value(&carried) {
                if let (CarriedValue::One(one), true) = (&value, transport.cookie()) {
                    if let Some(header) = self.persistent_again(one) {
                        headers.append(http::header::SET_COOKIE, header);
                        resent = true;
                    }
                }
                store.toucher.touch_carried(value, self.inner.started_ms);
            }
            return resent;
        }
        let now = now_ms();
        let idle = lifetimes.idle(state.idle_ms);
        let out = match (state.stored, &state.token, state.created_ms) {
            // Never used: slide the expiry in the background. No cookie: without asking the
            // store we cannot know the session still lives (it may have a successor).
            (Stored::Unknown, Some(token), Some(created)) => {
                let deadline = lifetimes.deadline_ms(idle, created, now);
                if deadline > now {
                    store.toucher.touch(token.clone(), deadline);
                }
                Out::Nothing
            }
            (Stored::Live, Some(token), Some(created)) => {
                let ttl = state.ttl.unwrap_or_default();
                let (expires, drifted) = cookie_expiry(now, ttl, idle, state.cookie_expires_ms);
                // (A header has no expiry for the client to keep in step.)
                let drifted = state.persistent && drifted && transport.cookie();
                let reissue =
                    state.new_token || state.stale_key || state.lifetime_changed || drifted;
                // Most responses re-send nothing: no copy of the user handle for them.
                if reissue {
                    let meta = Meta {
                        created_ms: created,
                        idle_ms: state.idle_ms,
                        expires_ms: state.persistent.then_some(expires),
                        id: state.id.unwrap_or_default(),
                        user: state.user.clone(),
                    };
                    Out::Issue(token.clone(), meta, state.persistent.then_some(ttl))
                } else {
                    Out::Nothing
                }
            }
            _ if state.destroyed => Out::Remove,
            _ => Out::Nothing,
        };
        let private = !matches!(out, Out::Nothing) || matches!(state.stored, Stored::Live);
        if transport.cookie() {
            let cookie = match &out {
                Out::Issue(token, meta, max_age) => codec.set_cookie(token, meta, *max_age),
                Out::Remove => codec.removal(),
                Out::Nothing => None,
            };
            if let Some(cookie) = cookie {
                headers.append(http::header::SET_COOKIE, cookie);
            }
        }
        if let Some(name) = transport.header() {
            let value = match &out {
                Out::Issue(token, meta, _) => header_value(&codec.sign(token, meta)),
                Out::Remove => Some(http::HeaderValue::from_static("")),
                Out::Nothing => None,
            };
            if let Some(value) = value {
                headers.insert(name.clone(), value);
            }
        }
        private
    }
}

/// What a response tells the client about its token.
enum Out {
    Nothing,
    /// A new value: the token, what is signed with it, the cookie's `Max-Age`.
    Issue(Token, Meta, Option<Duration>),
    /// The token is dead: the cookie expires, the header comes back empty.
    Remove,
}

impl Session {
    /// A persistent cookie that a route which never used the session carried, sent again
    /// with the expiry the refresh gives the session, once it has drifted as on a read (by
    /// more than a tenth of the idle timeout): otherwise the browser drops it while the store
    /// keeps the session. The MAC is checked only then.
    fn persistent_again(&self, value: &[u8]) -> Option<http::HeaderValue> {
        let store = &self.inner.store;
        let lifetimes = &store.lifetimes;
        let now = now_ms();
        let drifted = |created: i64, idle_ms: Option<u64>, sent: i64| {
            let idle = lifetimes.idle(idle_ms);
            let ttl = lifetimes.ttl(idle, created, now)?;
            let (expires, drifted) = cookie_expiry(now, ttl, idle, Some(sent));
            drifted.then_some((ttl, expires))
        };
        let (created, idle_ms, sent) = CookieCodec::persistent_unverified(value)?;
        drifted(created, idle_ms, sent)?;
        let verified = store.codec.verify_one(value, now)?;
        let meta = verified.meta;
        let (ttl, expires) = drifted(meta.created_ms, meta.idle_ms, meta.expires_ms?)?;
        let meta = Meta {
            expires_ms: Some(expires),
            ..meta
        };
        store.codec.set_cookie(&verified.token, &meta, Some(ttl))
    }
}

/// When a persistent cookie sent at `now` with `ttl` left expires; and whether one sent to
/// expire at `sent` (none: never sent) has drifted from that by more than a tenth of the idle
/// timeout, so that it is sent again: not on every response.
fn cookie_expiry(now: i64, ttl: Duration, idle: u64, sent: Option<i64>) -> (i64, bool) {
    let expires = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(0) * 1000);
    let step = i64::try_from(idle / 10).unwrap_or(0);
    let drifted = sent.is_none_or(|sent| expires.saturating_sub(sent) > step);
    (expires, drifted)
}

fn too_large(limit: Limit, got: usize, max: usize) -> Result<(), SessionError> {
    if got > max {
        Err(SessionError::TooLarge { limit, max, got })
    } else {
        Ok(())
    }
}

/// Session keys are non-empty and do not start with NUL: the store keeps its own metadata in
/// the empty field and in fields that start with NUL.
fn check_key(key: &str) -> Result<(), SessionError> {
    if key.is_empty() || key.starts_with('\0') {
        Err(SessionError::EmptyKey)
    } else {
        Ok(())
    }
}
