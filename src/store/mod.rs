//! [`SessionStore`]: the state every request shares (backend, cookie rules, lifetimes), and
//! a user's sessions (`users.rs`).

pub(crate) mod users;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::{now_ms, Backend, IndexOp, Lifetimes, Limits};
use crate::cookie::CookieCodec;
use crate::error::SessionError;
use crate::events::Events;
use crate::observe::observed;
use crate::token::UserHandle;
use crate::touch::Toucher;

/// A configured session store: the backend, the cookie rules and the signing keys.
///
/// Cheap to clone; every clone shares one connection pool. Make one at start-up with
/// [`SessionStore::builder`] and add [`SessionStore::layer`] to your service.
///
/// ```
/// use std::time::Duration;
/// use tower_redis_session::SessionStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_redis_session::ConfigError> {
/// let store = SessionStore::builder()
///     .memory() // or .redis_url("redis://127.0.0.1:6379")
///     .signing_keys([[7u8; 32]])
///     .idle_timeout(Duration::from_secs(30 * 60))
///     .absolute_timeout(Duration::from_secs(12 * 3600))
///     .build()
///     .await?;
/// let layer = store.layer();
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SessionStore {
    pub(crate) inner: Arc<StoreInner>,
}

pub(crate) struct StoreInner {
    pub(crate) backend: Arc<Backend>,
    pub(crate) codec: CookieCodec,
    pub(crate) prefix: String,
    pub(crate) lifetimes: Lifetimes,
    pub(crate) toucher: Toucher,
    pub(crate) limits: Limits,
    /// Most sessions per user, and what a login over it does.
    pub(crate) session_limit: Option<(usize, crate::SessionLimit)>,
    /// The application's lifecycle hook, if any.
    pub(crate) events: Events,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match *self.inner.backend {
            Backend::Redis(_) => "redis",
            Backend::Memory(_) => "memory",
        };
        f.debug_struct("SessionStore")
            .field("backend", &backend)
            .field("cookie", &self.inner.codec.name())
            .field("lifetimes", &self.inner.lifetimes)
            .finish_non_exhaustive()
    }
}

impl SessionStore {
    /// What the connection layer has done so far (zeros for the in-process backend).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{SessionStore, StoreStats};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_redis_session::ConfigError> {
    /// let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// let stats = store.stats();
    /// assert_eq!(stats, StoreStats::default()); // the in-process store opens no connection
    /// println!("{} connections opened, {} retired", stats.connection_attempts, stats.connections_retired);
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats(&self) -> StoreStats {
        match &*self.inner.backend {
            Backend::Redis(redis) => {
                let s = redis.stats();
                StoreStats {
                    connection_attempts: s.attempts.load(Ordering::Relaxed),
                    connections_retired: s.retired.load(Ordering::Relaxed),
                }
            }
            Backend::Memory(_) => StoreStats::default(),
        }
    }

    /// The live sessions of `user_id` (those bound by [`Session::login`](crate::Session::login)),
    /// most recently seen first, with the values of `fields` of each (the device a session
    /// was opened on, say, if the application stored it under such a key). One round trip
    /// for the user's index, then one per session, all at once. Entries of sessions that
    /// expired or ended are skipped, and values that are not JSON are left out of
    /// [`SessionInfo::fields`].
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::{routing::post, Router};
    /// use tower::ServiceExt;
    /// use tower_redis_session::{Session, SessionError, SessionStore};
    ///
    /// async fn login(session: Session) -> Result<(), SessionError> {
    ///     session.login("alice").await?;
    ///     session.insert("device", &"Firefox on Linux")
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// let app = Router::new().route("/login", post(login)).layer(store.layer());
    /// let request = http::Request::post("/login").body(axum::body::Body::empty())?;
    /// app.oneshot(request).await?; // alice logs in
    ///
    /// let sessions = store.user_sessions("alice", &["device"]).await?;
    /// assert_eq!(sessions.len(), 1);
    /// assert_eq!(sessions[0].fields["device"], "Firefox on Linux");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::Unavailable`] if the store cannot be reached in time;
    /// [`SessionError::Corrupt`] if the user's index or a session holds something unexpected.
    pub async fn user_sessions(
        &self,
        user_id: &str,
        fields: &[&str],
    ) -> Result<Vec<SessionInfo>, SessionError> {
        let keys = UserHandle::of(user_id).keys(&self.inner.prefix);
        self.inner.prune(user_id, &keys).await?;
        let now = now_ms();
        let listed = observed!("list", None, self.inner.backend.list(&keys, now, fields))?;
        let mut sessions = Vec::new();
        let at = |ms: i64| UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        for entry in listed {
            // Gone, ended, or another user's: not listed. The entry is left alone: an absent
            // key may be a new secret under way (its session is created a moment after its
            // entry moves); once past its score, a later check drops it.
            let Some(s) = entry.session.filter(|s| s.user.as_deref() == Some(user_id)) else {
                continue;
            };
            let expires_ms = now.saturating_add(s.ttl_ms);
            let idle = self.inner.lifetimes.idle(s.idle_ms);
            // Every access sets the expiry to the idle timeout (cut short by the absolute
            // one): the last access was an idle timeout before the expiry, or at creation.
            let seen_ms = expires_ms
                .saturating_sub(i64::try_from(idle).unwrap_or(i64::MAX))
                .max(s.created_ms);
            let fields = fields
                .iter()
                .zip(s.values)
                .filter_map(|(name, value)| {
                    let value = serde_json::from_str(&value?).ok()?;
                    Some(((*name).to_owned(), value))
                })
                .collect();
            sessions.push(SessionInfo {
                id: entry.id,
                created: at(s.created_ms),
                last_seen: at(seen_ms),
                expires: at(expires_ms),
                fields,
            });
        }
        sessions.sort_by_key(|s| std::cmp::Reverse(s.last_seen));
        Ok(sessions)
    }

    /// Ends one session of `user_id`, by its public id ([`SessionInfo::id`],
    /// [`Session::id`](crate::Session::id)): "log out this device". Returns whether there was
    /// such a live session; a session of another user is left alone. Safe to repeat after a
    /// failure.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::{routing::post, Router};
    /// use tower::ServiceExt;
    /// use tower_redis_session::{Session, SessionError, SessionStore};
    ///
    /// async fn login(session: Session) -> Result<(), SessionError> {
    ///     session.login("alice").await
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// let app = Router::new().route("/login", post(login)).layer(store.layer());
    /// let request = http::Request::post("/login").body(axum::body::Body::empty())?;
    /// app.oneshot(request).await?; // alice logs in
    ///
    /// let laptop = store.user_sessions("alice", &[]).await?[0].id;
    /// assert!(store.end_session("alice", laptop).await?);
    /// assert!(!store.end_session("alice", laptop).await?); // already ended
    /// assert!(store.user_sessions("alice", &[]).await?.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::Unavailable`] if the store cannot be reached in time (repeat the call:
    /// what was not ended yet is ended then); [`SessionError::Corrupt`] if the user's index holds
    /// something unexpected.
    pub async fn end_session(&self, user_id: &str, id: uuid::Uuid) -> Result<bool, SessionError> {
        let keys = UserHandle::of(user_id).keys(&self.inner.prefix);
        let marked = self.index(&keys, IndexOp::Mark(vec![id])).await?;
        self.inner
            .end_entries(user_id, &keys, marked.to_end)
            .await
            .map(|n| n > 0)
    }

    /// Ends every session of `user_id` but `except` (the current one, for "log out
    /// everywhere else"; `None` for all), after a password change, say. Returns how many
    /// live sessions it ended. Safe to repeat after a failure: what was not ended yet is
    /// ended then. Entries of sessions that expired are checked and dropped first, in
    /// bounded steps, so that a user's abandoned logins cost no marker and no time-out.
    ///
    /// The boundary: the moment this call starts (T, by this server's clock). When it
    /// returns, no request that starts afterwards is served any session of the user that
    /// existed at T: each is ended (its key becomes an ended marker that refuses reads and
    /// writes). A login whose request started before T and was still under way either fails
    /// with [`SessionError::Ended`] (409) or, if it got further, has its session ended before
    /// this call returns. A login whose request starts after T is a new login. Between app
    /// servers, "before" is by their clocks: keep them in sync.
    ///
    /// # Examples
    ///
    /// "Log out everywhere else", from a handler: the store is the router's state.
    ///
    /// ```
    /// use axum::{extract::State, routing::post, Router};
    /// use tower_redis_session::{Session, SessionError, SessionStore};
    ///
    /// async fn log_out_elsewhere(
    ///     State(store): State<SessionStore>,
    ///     session: Session,
    /// ) -> Result<String, SessionError> {
    ///     let Some(user) = session.user_id().await? else {
    ///         return Ok("not logged in".into());
    ///     };
    ///     let ended = store.end_user_sessions(&user, session.id()).await?;
    ///     Ok(format!("{ended} other sessions ended"))
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// let app: Router = Router::new()
    ///     .route("/sessions/end-others", post(log_out_elsewhere))
    ///     .layer(store.layer())
    ///     .with_state(store.clone());
    /// # let _ = app;
    /// assert_eq!(store.end_user_sessions("alice", None).await?, 0); // alice has no session
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::Unavailable`] if the store cannot be reached in time (repeat the call);
    /// [`SessionError::Corrupt`] if the user's index holds something unexpected.
    pub async fn end_user_sessions(
        &self,
        user_id: &str,
        except: Option<uuid::Uuid>,
    ) -> Result<usize, SessionError> {
        let keys = UserHandle::of(user_id).keys(&self.inner.prefix);
        self.inner.prune(user_id, &keys).await?;
        // The cut is taken after the (maybe long) check: a login that starts during it and is
        // indexed before the take is ended, and it started before the cut.
        let now = now_ms();
        let take = IndexOp::Take {
            keep: except,
            now_ms: now,
            until_ms: self.inner.index_until(now),
        };
        let marked = self.index(&keys, take).await?;
        self.inner.end_entries(user_id, &keys, marked.to_end).await
    }

    async fn index(
        &self,
        keys: &crate::token::UserKeys,
        op: IndexOp<'_>,
    ) -> Result<crate::backend::IndexReply, SessionError> {
        observed!("index", None, self.inner.backend.index(keys, op))
    }

    /// Whether this store keeps sessions in Redis (rather than in process memory).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_redis_session::ConfigError> {
    /// let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// assert!(!store.is_redis());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_redis(&self) -> bool {
        matches!(*self.inner.backend, Backend::Redis(_))
    }
}

/// Counters of the connection layer, from [`SessionStore::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Connections the store tried to open, successfully or not (at start, after failures).
    pub connection_attempts: u64,
    /// Connections retired because they failed: a dropped socket, a timeout, `READONLY`, a
    /// refused re-authentication. A cancelled request never retires one.
    pub connections_retired: u64,
}

/// One of a user's sessions, from [`SessionStore::user_sessions`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The public id (as [`Session::id`](crate::Session::id) gives it).
    pub id: uuid::Uuid,
    /// When the session was created (logins keep the session's creation time).
    pub created: SystemTime,
    /// When a request last used it (within the second; refreshes of routes that never read
    /// the session are gathered, see `docs/ARCHITECTURE.md`).
    pub last_seen: SystemTime,
    /// When it expires if no request comes.
    pub expires: SystemTime,
    /// The values of the fields asked for, where the session has them.
    pub fields: HashMap<String, serde_json::Value>,
}

#[cfg(feature = "bench-floor")]
impl SessionStore {
    /// For this project's benchmarks only (feature `bench-floor`, not a stable API): the Redis
    /// work of a session read and nothing else, the `HGETALL` + `PEXPIRE` pipeline on the
    /// store's own connections, for the hash at `key`. Returns its number of fields.
    #[doc(hidden)]
    pub async fn bench_floor_load(&self, key: &str) -> Result<usize, SessionError> {
        let key = crate::token::StoreKey::from_raw(key.to_owned());
        let ttl = std::time::Duration::from_millis(self.inner.lifetimes.idle_ms);
        match self.inner.backend.load(&key, ttl).await? {
            crate::backend::Found::Live(loaded) => Ok(loaded.fields.len()),
            _ => Ok(0),
        }
    }
}
