//! Errors: what went wrong, and what to do about it.

use http::StatusCode;

/// An error from a session operation, as a handler sees it.
///
/// Every variant maps to an HTTP status through [`SessionError::status`]; with the `axum`
/// feature the error is also an `IntoResponse`, so handlers can use `?` on it.
///
/// ```
/// use tower_redis_session::SessionError;
/// use http::StatusCode;
///
/// let err = SessionError::NotAnInteger { key: "visits".into() };
/// assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session store could not be reached in time: Redis is down, paused or overloaded.
    /// Retry later; the service recovers by itself when the store answers again.
    #[error("session store unavailable: {0}")]
    Unavailable(#[source] StoreError),

    /// The store answered with something that is not a session of ours, such as a key of
    /// another type at the session's address. The session cannot be used.
    #[error("session store returned unexpected data: {0}")]
    Corrupt(String),

    /// A stored value did not decode into the requested type.
    #[error("session value `{key}` does not decode into the requested type: {source}")]
    Decode {
        /// The session key.
        key: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },

    /// A value could not be serialized to JSON.
    #[error("session value `{key}` cannot be serialized: {source}")]
    Encode {
        /// The session key.
        key: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },

    /// `incr` on a key that holds something other than an integer, or an increment that would
    /// overflow an `i64`.
    #[error("session value `{key}` is not an integer, or the increment overflows")]
    NotAnInteger {
        /// The session key.
        key: String,
    },

    /// The change would take the session over a configured limit (see
    /// [`SessionStoreBuilder::max_value_bytes`](crate::SessionStoreBuilder::max_value_bytes)
    /// and its siblings). Nothing was changed.
    #[error("session {limit} limit exceeded ({got} > {max}); nothing was changed")]
    TooLarge {
        /// Which limit.
        limit: Limit,
        /// The configured limit.
        max: usize,
        /// What the change would have made it.
        got: usize,
    },

    /// Session keys must be non-empty; the empty field name is reserved for metadata.
    #[error("session keys must not be empty")]
    EmptyKey,

    /// The session was destroyed or expired while this request ran (a concurrent logout, say).
    /// The change was not saved, and the session was not re-created.
    #[error("the session ended while this request ran; the change was not saved")]
    Ended,

    /// [`Session::login`](crate::Session::login) was refused: the user has as many sessions
    /// as [`max_sessions_per_user`](crate::SessionStoreBuilder::max_sessions_per_user)
    /// allows, with [`SessionLimit::RefuseNew`](crate::SessionLimit::RefuseNew). Nothing was
    /// stored; the request's session is as before the login, unless it was ended by it.
    #[error("the user has {max} sessions already, the most allowed; log out of one first")]
    TooManySessions {
        /// The configured limit.
        max: usize,
    },

    /// [`Session::set_idle_timeout`](crate::Session::set_idle_timeout) was given a timeout
    /// outside its bounds: more than the store's idle timeout, or less than a second.
    #[error("a session idle timeout of {requested:?} is outside 1 s ..= {max:?} (the store's idle timeout)")]
    IdleTimeout {
        /// What was asked for.
        requested: std::time::Duration,
        /// The store's idle timeout.
        max: std::time::Duration,
    },

    /// The operating system's random generator failed; no token could be made.
    #[error("the OS random generator failed: {0}")]
    Entropy(String),

    /// The request did not pass through a [`SessionLayer`](crate::SessionLayer).
    #[error("no session on this request: is the SessionLayer installed on this route?")]
    MissingLayer,
}

impl SessionError {
    /// The HTTP status that best describes this error to a client: 503 for
    /// [`Unavailable`](Self::Unavailable), 409 for [`Ended`](Self::Ended) and
    /// [`TooManySessions`](Self::TooManySessions), 500 for the rest.
    ///
    /// # Examples
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_redis_session::{SessionError, StoreError};
    ///
    /// let down = SessionError::Unavailable(StoreError::Connect("refused".into()));
    /// assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    /// assert_eq!(SessionError::Ended.status(), StatusCode::CONFLICT);
    /// assert_eq!(SessionError::EmptyKey.status(), StatusCode::INTERNAL_SERVER_ERROR);
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Ended => StatusCode::CONFLICT,
            Self::TooManySessions { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether a failed write may have been applied anyway: see
    /// [`StoreError::may_have_applied`]. `false` for every error that the session's own rules
    /// raise before anything is sent (sizes, types, an ended session). An unexpected answer
    /// ([`Corrupt`](Self::Corrupt)) counts as maybe applied.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{SessionError, StoreError};
    ///
    /// let unsent = SessionError::Unavailable(StoreError::Connect("no connection".into()));
    /// assert!(!unsent.may_have_applied()); // retrying this incr cannot double-count
    /// assert!(!SessionError::Ended.may_have_applied());
    /// ```
    pub fn may_have_applied(&self) -> bool {
        match self {
            Self::Unavailable(e) => e.may_have_applied(),
            Self::Corrupt(_) => true,
            _ => false,
        }
    }

    /// What a client may be told: a short fixed text for [`status`](Self::status). The
    /// `Display` text is for logs only, as it can hold Redis replies (node addresses, ACL
    /// user names) and serde messages.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{SessionError, StoreError};
    ///
    /// let err = SessionError::Unavailable(StoreError::Connect("NOPERM user alice".into()));
    /// assert_eq!(err.public_message(), "session store unavailable");
    /// assert!(err.to_string().contains("alice")); // for the logs, not the client
    /// ```
    pub fn public_message(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "session store unavailable",
            Self::Ended => "the session ended while this request ran; nothing was saved",
            Self::TooManySessions { .. } => "too many sessions; log out of another one first",
            _ => "session error",
        }
    }
}

/// The limit a change would have broken, in [`SessionError::TooLarge`].
///
/// ```
/// use tower_redis_session::{Limit, SessionError};
///
/// let err = SessionError::TooLarge { limit: Limit::KeyCount, max: 1000, got: 1001 };
/// assert!(matches!(err, SessionError::TooLarge { limit: Limit::KeyCount, .. }));
/// assert_eq!(Limit::KeyCount.to_string(), "key count");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// Bytes of one value's JSON
    /// ([`max_value_bytes`](crate::SessionStoreBuilder::max_value_bytes)).
    ValueSize,
    /// Bytes of all keys and values together
    /// ([`max_session_bytes`](crate::SessionStoreBuilder::max_session_bytes)).
    SessionSize,
    /// Number of keys ([`max_keys`](crate::SessionStoreBuilder::max_keys)).
    KeyCount,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ValueSize => "value size",
            Self::SessionSize => "session size",
            Self::KeyCount => "key count",
        })
    }
}

/// Why the session store did not answer, and whether the command may have run anyway.
///
/// ```
/// use std::time::Duration;
/// use tower_redis_session::StoreError;
///
/// // Never sent: safe to retry.
/// assert!(!StoreError::Connect("Redis is unreachable".into()).may_have_applied());
/// // Sent, with no answer in time: a retried write could apply twice.
/// assert!(StoreError::Timeout(Duration::from_millis(500)).may_have_applied());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The command was sent, and no answer came within the configured command timeout: it
    /// may have run.
    #[error("no answer within {0:?}; the command may have run")]
    Timeout(std::time::Duration),
    /// The command was not sent: no connection could be had in time (Redis refused, is
    /// reconnecting with backoff, or the connection closed before the command went out).
    /// Sending it again is safe.
    #[error("not sent: {0}")]
    Connect(String),
    /// The connection dropped, or sent something that cannot be Redis's answer, after the
    /// command was sent: it may have run.
    #[error("the connection failed after the command was sent; it may have run: {0}")]
    Dropped(String),
    /// Redis answered with an error, or the client failed in a way it reports as one.
    #[error("redis: {0}")]
    Server(ServerError),
    /// The write was applied on the primary, but fewer replicas than asked for by
    /// [`wait_for_replicas`](crate::SessionStoreBuilder::wait_for_replicas) acknowledged it
    /// in time: a failover now could lose it.
    #[error("written, but only {acked} of {wanted} replicas acknowledged it in time")]
    NotReplicated {
        /// Replicas asked for.
        wanted: usize,
        /// Replicas that acknowledged.
        acked: usize,
    },
}

impl StoreError {
    /// Whether the command may have been applied in Redis although it failed: retrying a
    /// write then (an `incr`, say) could apply it twice. `false` when it certainly was not:
    /// it was never sent, or Redis refused it with an error reply (the crate's scripts check
    /// before they write).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_session::StoreError;
    ///
    /// assert!(!StoreError::Connect("connection refused".into()).may_have_applied());
    /// assert!(StoreError::Timeout(Duration::from_secs(1)).may_have_applied());
    /// assert!(StoreError::NotReplicated { wanted: 1, acked: 0 }.may_have_applied());
    /// ```
    pub fn may_have_applied(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Dropped(_) | Self::NotReplicated { .. } => true,
            Self::Connect(_) => false,
            // An answer with no error code is not Redis refusing the command.
            Self::Server(e) => e.code.is_none(),
        }
    }
}

/// What Redis (or the client talking to it) said, in [`StoreError::Server`]: the error code
/// Redis gave (`OOM`, `READONLY`, `NOPERM`...), if any, and the message, for logs.
///
/// ```
/// use tower_redis_session::{SessionError, StoreError};
///
/// fn out_of_memory(err: &SessionError) -> bool {
///     matches!(err, SessionError::Unavailable(StoreError::Server(e)) if e.code() == Some("OOM"))
/// }
/// # let _ = out_of_memory;
/// ```
#[derive(Clone, Debug)]
pub struct ServerError {
    code: Option<String>,
    message: String,
}

impl ServerError {
    /// The error code Redis answered with (its reply's first word: `OOM`, `READONLY`,
    /// `NOPERM`...), if it answered with one.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{SessionError, StoreError};
    ///
    /// /// Redis is out of memory: an operator's problem, not the user's.
    /// fn out_of_memory(err: &SessionError) -> bool {
    ///     matches!(err, SessionError::Unavailable(StoreError::Server(e)) if e.code() == Some("OOM"))
    /// }
    ///
    /// assert!(!out_of_memory(&SessionError::Ended));
    /// ```
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        let code = e.code().map(str::to_owned).or_else(|| {
            let errors = e.clone().into_server_errors()?;
            errors.first().map(|(_, err)| err.code().to_owned())
        });
        Self::Server(ServerError {
            code,
            message: e.to_string(),
        })
    }
}

/// A configuration that [`SessionStoreBuilder::build`](crate::SessionStoreBuilder::build)
/// refused.
///
/// ```
/// use tower_redis_session::{ConfigError, SessionStore};
///
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// # rt.block_on(async {
/// let err = SessionStore::builder().memory().signing_keys([b"short".to_vec()]).build().await;
/// assert!(matches!(err, Err(ConfigError::KeyTooShort { index: 0, len: 5 })));
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No signing key was given.
    #[error("no signing key: pass at least one key of 32 bytes or more to signing_keys()")]
    NoSigningKey,
    /// A signing key is shorter than 32 bytes.
    #[error("signing key {index} is {len} bytes; keys must be at least 32 random bytes")]
    KeyTooShort {
        /// Position in the key ring (0 signs).
        index: usize,
        /// Its length.
        len: usize,
    },
    /// Neither `redis_url` nor `memory` was chosen.
    #[error("no backend: call redis_url(..), redis_url_from_env(..) or memory()")]
    NoBackend,
    /// An environment variable that was asked for is not set.
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// A timeout or size was zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// A timeout or lifetime is longer than the crate accepts (a day for timeouts, 100 years
    /// for session lifetimes).
    #[error("{setting} must be at most {max:?}")]
    TooLong {
        /// The setting.
        setting: &'static str,
        /// The longest it may be.
        max: std::time::Duration,
    },
    /// The idle timeout is longer than the absolute timeout.
    #[error("the idle timeout ({idle:?}) is longer than the absolute timeout ({absolute:?})")]
    IdleExceedsAbsolute {
        /// Idle timeout.
        idle: std::time::Duration,
        /// Absolute timeout.
        absolute: std::time::Duration,
    },
    /// The cookie name is empty or has characters a cookie name cannot have.
    #[error("invalid cookie name {0:?}")]
    CookieName(String),
    /// The cookie attributes break the rules of the cookie name's prefix.
    #[error("a cookie named {name:?} must {rule}")]
    CookiePrefix {
        /// The cookie name.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The cookie path is empty, does not start with '/', or has a character that cannot be
    /// in a `Set-Cookie` header (every cookie would be dropped).
    #[error(
        "cookie path {0:?} must start with '/' and contain no ';', whitespace, control or \
         non-ASCII characters"
    )]
    CookiePath(String),
    /// The cookie domain is not a host name.
    #[error(
        "cookie domain {0:?} must be a host name such as \"example.com\": ASCII letters, digits \
         and '-' in non-empty labels separated by '.', at most 253 characters, with no scheme, \
         port or whitespace"
    )]
    CookieDomain(String),
    /// `SameSite=None` without `Secure`, which browsers reject.
    #[error(
        "SameSite=None requires Secure: call secure(true), or use SameSite::Lax or \
         SameSite::Strict"
    )]
    SameSiteNoneInsecure,
    /// The Redis deployment is not usable as configured: a URL that does not parse, an empty
    /// list of nodes or sentinels, TLS asked for without the `tls` feature, a CA file that
    /// cannot be read.
    #[error("Redis deployment: {0}")]
    Deployment(String),
}
