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

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{now_ms, Counter, Found, Mode};
use crate::cookie::Carried;
use crate::error::Limit;
use crate::error::SessionError;
use crate::fields::Fields;
use crate::observe::{count, observed};
use crate::store::StoreInner;
use crate::transport::Transport;

mod commit;
mod renew;
mod state;

use state::{Create, State, Stored};

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
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     session.load().await?; // the one round trip, here rather than at the first read
    ///     let theme: Option<String> = session.get("theme").await?; // no round trip
    ///     # let _ = theme;
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`SessionError::Unavailable`] if the store cannot be reached in time.
    /// - [`SessionError::Corrupt`] if the store holds something other than a session at its key.
    ///
    /// A session that ended meanwhile is no error: it reads as empty.
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
    ///
    /// # Examples
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// #[derive(Serialize, Deserialize, PartialEq, Debug)]
    /// struct Cart {
    ///     items: Vec<u32>,
    /// }
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     assert_eq!(session.get::<Cart>("cart").await?, None);
    ///     session.insert("cart", &Cart { items: vec![7] })?;
    ///     assert_eq!(session.get("cart").await?, Some(Cart { items: vec![7] }));
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`SessionError::Decode`] if the stored value does not decode into `T`.
    /// - [`SessionError::Unavailable`] if the session has to be loaded and the store cannot be
    ///   reached in time; [`SessionError::Corrupt`] if the store holds something other than a
    ///   session at its key.
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
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     session.insert("flash", &"Saved.")?; // usually in an earlier request
    ///     assert_eq!(session.take::<String>("flash").await?.as_deref(), Some("Saved."));
    ///     assert_eq!(session.take::<String>("flash").await?, None); // shown once
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`SessionError::EmptyKey`] if `key` is empty (or starts with NUL).
    /// - [`SessionError::Decode`] if the value does not decode into `T` (it is removed all the
    ///   same).
    /// - [`SessionError::Unavailable`] if the store cannot be reached in time;
    ///   [`SessionError::Corrupt`] if it answers with something other than a session.
    ///
    /// A session that ended meanwhile is no error: there is nothing to take, and `None` comes back.
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
    /// the session is not loaded for it. A request without a session starts one.
    ///
    /// # Examples
    ///
    /// ```
    /// use serde::Serialize;
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// #[derive(Serialize)]
    /// struct Preferences {
    ///     theme: &'static str,
    ///     page_size: u32,
    /// }
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     session.insert("prefs", &Preferences { theme: "dark", page_size: 50 })?;
    ///     session.insert("visited_help", &true)?;
    ///     assert!(session.is_modified());
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Nothing is changed when it fails:
    ///
    /// - [`SessionError::EmptyKey`] if `key` is empty (or starts with NUL, reserved for the store).
    /// - [`SessionError::Encode`] if `value` cannot be serialized to JSON (a map with non-string
    ///   keys, say).
    /// - [`SessionError::TooLarge`] if the value, the session's key count or its size would go
    ///   over the store's limits ([`max_value_bytes`](crate::SessionStoreBuilder::max_value_bytes),
    ///   [`max_keys`](crate::SessionStoreBuilder::max_keys),
    ///   [`max_session_bytes`](crate::SessionStoreBuilder::max_session_bytes)). On a session not
    ///   loaded yet, the store checks the whole session when it writes, and the layer answers
    ///   with the error then.
    /// - [`SessionError::Ended`] if the session is known to have ended while this request ran
    ///   (its writes would be refused anyway).
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
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     session.insert("cart", &[1, 2, 3])?;
    ///     session.remove("cart")?;
    ///     assert_eq!(session.get::<Vec<u32>>("cart").await?, None);
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::EmptyKey`] if `key` is empty (or starts with NUL).
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

    /// Removes every key but keeps the session (and its id, its user and its lifetime).
    /// Written after the handler.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     session.insert("a", &1)?;
    ///     session.insert("b", &2)?;
    ///     session.clear()?;
    ///     assert!(session.is_empty().await?);
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// None at present: the `Result` leaves room for checks to come.
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

    /// The keys the session holds now, in no particular order. Loads the session on first use.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     session.insert("theme", &"dark")?;
    ///     assert_eq!(session.keys().await?, ["theme"]);
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::Unavailable`] if the session has to be loaded and the store cannot be
    /// reached in time; [`SessionError::Corrupt`] if the store holds something other than a
    /// session at its key.
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
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     assert!(session.is_empty().await?); // a request without a cookie: no round trip
    ///     session.insert("theme", &"dark")?;
    ///     assert!(!session.is_empty().await?);
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::Unavailable`] if the session has to be loaded and the store cannot be
    /// reached in time; [`SessionError::Corrupt`] if the store holds something other than a
    /// session at its key.
    pub async fn is_empty(&self) -> Result<bool, SessionError> {
        self.load().await?;
        Ok(self.state().data.as_ref().is_none_or(Fields::is_empty))
    }

    /// Whether this request changed the session: a staged `insert`, `remove` or `clear`, or
    /// an `incr`, `take` that found a value, `regenerate`, `login`, `destroy` or lifetime change.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     let _: Option<String> = session.get("theme").await?;
    ///     assert!(!session.is_modified()); // reading changes nothing
    ///     session.insert("theme", &"dark")?;
    ///     assert!(session.is_modified());
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_modified(&self) -> bool {
        self.state().modified
    }

    /// Makes this session's cookie persistent ("remember me": it survives a browser restart,
    /// with a `Max-Age` in step with the session's expiry) or a browser-session cookie. Takes
    /// effect with this response, and only if the session exists (or is created) by then.
    /// A session from an earlier request gets a new secret with it (as
    /// [`regenerate`](Self::regenerate), one more round trip), so that no copy of the old
    /// cookie keeps the old lifetime. The store-wide default is
    /// [`cookie_persistent`](crate::SessionStoreBuilder::cookie_persistent).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn login(session: Session) -> Result<(), SessionError> {
    ///     # let (user_id, remember_me) = ("alice", true);
    ///     session.login(user_id).await?;
    ///     session.set_persistent(remember_me); // checkbox on the login form
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(login)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # let cookie = response.headers()[http::header::SET_COOKIE].to_str()?;
    /// # assert!(cookie.contains("Max-Age="), "{cookie}");
    /// # Ok(())
    /// # }
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn sudo(session: Session) -> Result<(), SessionError> {
    ///     session.login("admin").await?;
    ///     session.set_idle_timeout(Duration::from_secs(5 * 60))?;
    ///     // Longer than the store's idle timeout (30 minutes by default): refused.
    ///     let too_long = session.set_idle_timeout(Duration::from_secs(3600));
    ///     assert!(matches!(too_long, Err(SessionError::IdleTimeout { .. })));
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(sudo)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::IdleTimeout`] if `idle` is longer than the store's idle timeout or
    /// shorter than a second; nothing is changed then.
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
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     assert_eq!(session.expires_at(), None); // no cookie, no session
    ///     session.incr("visits", 1).await?; // stores a new session
    ///     assert!(session.expires_at().unwrap() > SystemTime::now());
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
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
    /// Starts a session if there is none. Goes to the store at once, and stays done if the
    /// handler then fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     assert_eq!(session.incr("visits", 1).await?, 1);
    ///     assert_eq!(session.incr("visits", 10).await?, 11);
    ///     assert_eq!(session.get::<i64>("visits").await?, Some(11));
    ///
    ///     session.insert("name", &"alice")?;
    ///     let not_a_number = session.incr("name", 1).await;
    ///     assert!(matches!(not_a_number, Err(SessionError::NotAnInteger { .. })));
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`SessionError::EmptyKey`] if `key` is empty (or starts with NUL).
    /// - [`SessionError::NotAnInteger`] if the value under `key` is not an integer, or adding
    ///   `delta` would overflow an `i64`.
    /// - [`SessionError::TooLarge`] if a new key would take the session over
    ///   [`max_keys`](crate::SessionStoreBuilder::max_keys).
    /// - [`SessionError::Ended`] if the session ended meanwhile (logout, "log out everywhere"):
    ///   it is never re-created.
    /// - [`SessionError::Unavailable`] if the store cannot be reached in time (see
    ///   [`SessionError::may_have_applied`] before retrying); [`SessionError::Corrupt`] if it
    ///   answers with something other than a session.
    /// - [`SessionError::Entropy`] if a new session is needed and the OS random generator fails.
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

    /// The public id of the session: a UUID v7, safe to show, log and put in a URL (it is
    /// never accepted as a cookie and never leads to the secret). The same for the whole life
    /// of the session, across [`regenerate`](Self::regenerate) and
    /// [`login`](Self::login); `None` until the session is stored. It is what
    /// [`SessionStore::end_session`](crate::SessionStore::end_session) takes.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     assert_eq!(session.id(), None); // no session yet
    ///     session.incr("visits", 1).await?;
    ///     let id = session.id().expect("stored by incr");
    ///     session.regenerate().await?;
    ///     assert_eq!(session.id(), Some(id)); // a new secret, the same public id
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    pub fn id(&self) -> Option<uuid::Uuid> {
        let state = self.state();
        matches!(state.stored, Stored::Unknown | Stored::Live)
            .then_some(state.id)
            .flatten()
    }

    /// The user the session is bound to by [`login`](Self::login); `None` if nobody logged in
    /// to it. Loads the session on first use.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     assert_eq!(session.user_id().await?, None);
    ///     session.login("alice").await?;
    ///     assert_eq!(session.user_id().await?.as_deref(), Some("alice"));
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::Unavailable`] if the session has to be loaded and the store cannot be
    /// reached in time; [`SessionError::Corrupt`] if the store holds something other than a
    /// session at its key.
    pub async fn user_id(&self) -> Result<Option<String>, SessionError> {
        self.load().await?;
        Ok(self.state().user_id.clone())
    }
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
