//! Lifetimes and limits: how long a session lives, how much it may hold, how many a user may
//! have; and the application's lifecycle hook.

use std::time::Duration;

use super::SessionStoreBuilder;
use crate::events::{Events, SessionEvent};
use crate::store::users::SessionLimit;

/// Lifetimes, limits and lifecycle events.
impl SessionStoreBuilder {
    /// A session expires after this long without a request (default 30 minutes); at most 100
    /// years, and no longer than the [`absolute_timeout`](Self::absolute_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().idle_timeout(Duration::from_secs(15 * 60));
    /// # let _ = builder;
    /// ```
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// A session ends this long after it was created, however active (default 12 hours).
    /// Regenerating the id keeps the creation time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_session::SessionStore;
    ///
    /// // "Remember me" for 30 days, if used at least once a week.
    /// let builder = SessionStore::builder()
    ///     .idle_timeout(Duration::from_secs(7 * 24 * 3600))
    ///     .absolute_timeout(Duration::from_secs(30 * 24 * 3600));
    /// # let _ = builder;
    /// ```
    pub fn absolute_timeout(mut self, absolute: Duration) -> Self {
        self.absolute = absolute;
        self
    }

    /// Largest JSON of one value, in bytes (default 64 KiB). A larger `insert` fails with
    /// [`SessionError::TooLarge`](crate::SessionError::TooLarge) and changes nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().max_value_bytes(4 * 1024);
    /// # let _ = builder;
    /// ```
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.limits.value_bytes = bytes;
        self
    }

    /// Largest session, all keys and values together, in bytes (default 1 MiB). A change
    /// over it fails with [`SessionError::TooLarge`](crate::SessionError::TooLarge).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().max_session_bytes(64 * 1024);
    /// # let _ = builder;
    /// ```
    pub fn max_session_bytes(mut self, bytes: usize) -> Self {
        self.limits.session_bytes = bytes;
        self
    }

    /// Most keys in one session (default 1000). A change over it fails with
    /// [`SessionError::TooLarge`](crate::SessionError::TooLarge).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().max_keys(50);
    /// # let _ = builder;
    /// ```
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.limits.keys = keys;
        self
    }

    /// At most `max` sessions per user (by [`Session::login`](crate::Session::login)); by
    /// default there is no limit. A login over it either ends the user's oldest sessions or
    /// is refused, as `policy` says. The count is kept by the user's index in one step, so
    /// logins racing each other, on any number of app servers and on a cluster, never take
    /// the user past it. `max` of 0 is refused by [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{SessionLimit, SessionStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_redis_session::ConfigError> {
    /// let store = SessionStore::builder()
    ///     .memory()
    ///     .signing_keys([[7u8; 32]])
    ///     .max_sessions_per_user(5, SessionLimit::EndOldest)
    ///     .build()
    ///     .await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_sessions_per_user(mut self, max: usize, policy: SessionLimit) -> Self {
        self.session_limit = Some((max, policy));
        self
    }

    /// Capacity of the queue of expiry refreshes for requests that do not read their
    /// session (default 4096), per lane: each thread queues in its own lane (of 8), and a
    /// lane also merges the cookies it has seen since the last refresh in a table of 256.
    /// When a lane is full, refreshes are skipped, never waited for.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().touch_queue(16 * 1024);
    /// # let _ = builder;
    /// ```
    pub fn touch_queue(mut self, capacity: usize) -> Self {
        self.touch_queue = capacity;
        self
    }

    /// Calls `hook` after each lifecycle event of a session: created, logged in, given a new
    /// secret, logged out, ended by the store (see [`SessionEventKind`](crate::SessionEventKind)).
    /// It runs once the store confirmed the change, on the task that made it, before the
    /// request (or the [`SessionStore`](crate::SessionStore) call) goes on: keep it quick and hand slow work to a
    /// channel or a task. A hook that panics never fails a request (the panic is logged at
    /// `warn`); an operation that fails reports nothing. A second call replaces the hook.
    ///
    /// Logged-in sessions that expire are reported late, when their user's index is next
    /// checked ([`Expired`](crate::SessionEventKind::Expired)); others are not reported.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{SessionEventKind, SessionStore};
    ///
    /// let builder = SessionStore::builder().on_event(|event| {
    ///     if event.kind == SessionEventKind::LoggedIn {
    ///         tracing::info!(session = %event.id, user = ?event.user_id, "login");
    ///     }
    /// });
    /// # let _ = builder;
    /// ```
    pub fn on_event(mut self, hook: impl Fn(&SessionEvent) + Send + Sync + 'static) -> Self {
        self.events = Events::new(hook);
        self
    }
}
