//! The validated builder of a [`SessionStore`].

mod cookie;
mod lifetimes;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, Lifetimes, Limits};
use crate::connection::{CredentialsProvider, Deployment};
use crate::cookie::{CookieAttributes, CookieCodec, SameSite};
use crate::error::ConfigError;
use crate::events::Events;
use crate::numbers::millis;
use crate::store::users::SessionLimit;
use crate::store::{SessionStore, StoreInner};
use crate::touch::{Checker, Toucher};

/// Signing keys must be at least this long (the HMAC-SHA256 block of entropy we ask for).
pub const MIN_KEY_BYTES: usize = 32;

impl SessionStore {
    /// Starts a builder with OWASP defaults: a `__Host-session` cookie (see
    /// [`cookie_name`](SessionStoreBuilder::cookie_name)) that is HttpOnly, Secure,
    /// SameSite=Lax, Path=/ and lives as long as the browser session; 30 minutes idle and
    /// 12 hours absolute timeout. Choose a backend and signing keys, then
    /// [`build`](SessionStoreBuilder::build).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use tower_redis_session::SessionStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_redis_session::ConfigError> {
    /// let store = SessionStore::builder()
    ///     .redis_url("redis://127.0.0.1:6379")
    ///     .signing_keys([[7u8; 32]]) // 32 random bytes or more, from your secrets
    ///     .build()
    ///     .await?; // built even if Redis does not answer yet
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> SessionStoreBuilder {
        SessionStoreBuilder::default()
    }
}

enum BackendChoice {
    None,
    Redis(Deployment),
    RedisEnv(String),
    /// `REDIS_URL`, `REDIS_CLUSTER_NODES` or `REDIS_SENTINELS` (+ `REDIS_SENTINEL_SERVICE`).
    FromEnv,
    Memory,
}

impl std::fmt::Debug for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Redis(_) => "redis",
            Self::RedisEnv(_) | Self::FromEnv => "redis (from the environment)",
            Self::Memory => "memory",
        })
    }
}

/// The application's credentials provider (not printed).
#[derive(Clone)]
struct Provider(Arc<dyn CredentialsProvider>);

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialsProvider")
    }
}

/// Where the CA certificate comes from.
#[derive(Clone, Debug)]
enum CaSource {
    Pem(Vec<u8>),
    File(std::path::PathBuf),
}

/// Builds a [`SessionStore`]; [`build`](Self::build) checks every setting.
///
/// ```
/// use tower_redis_session::{SameSite, SessionStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_redis_session::ConfigError> {
/// let store = SessionStore::builder()
///     .memory()
///     .signing_keys([vec![1u8; 32], vec![2u8; 32]]) // first signs, all verify
///     .cookie_name("__Host-session")
///     .cookie_same_site(SameSite::Strict)
///     .cookie_persistent(true)
///     .build()
///     .await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SessionStoreBuilder {
    backend: BackendChoice,
    auth: Option<(Option<String>, String)>,
    tls_ca: Option<CaSource>,
    tls_client: Option<(Vec<u8>, Vec<u8>)>,
    credentials: Option<Provider>,
    credentials_ahead: Duration,
    wait_replicas: usize,
    wait_timeout: Duration,
    keys: Vec<Vec<u8>>,
    idle: Duration,
    absolute: Duration,
    /// `None`: `__Host-session` where its rules hold, else `session` (see `cookie_name`).
    cookie_name: Option<String>,
    attributes: CookieAttributes,
    prefix: String,
    pool_size: usize,
    connect_timeout: Duration,
    command_timeout: Duration,
    touch_queue: usize,
    limits: Limits,
    session_limit: Option<(usize, SessionLimit)>,
    events: Events,
}

impl Default for SessionStoreBuilder {
    fn default() -> Self {
        Self {
            backend: BackendChoice::None,
            auth: None,
            tls_ca: None,
            tls_client: None,
            credentials: None,
            credentials_ahead: Duration::from_secs(600),
            wait_replicas: 0,
            wait_timeout: Duration::ZERO,
            keys: Vec::new(),
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 3600),
            cookie_name: None,
            attributes: CookieAttributes {
                path: "/".into(),
                domain: None,
                secure: true,
                http_only: true,
                same_site: SameSite::Lax,
                persistent: false,
            },
            prefix: "session:".into(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            touch_queue: 4096,
            limits: Limits {
                value_bytes: 64 * 1024,
                session_bytes: 1024 * 1024,
                keys: 1000,
            },
            session_limit: None,
            events: Events::default(),
        }
    }
}

impl SessionStoreBuilder {
    /// Checks the configuration and builds the store. Must run inside a Tokio runtime. With
    /// Redis, the scripts are loaded if Redis answers; if it does not, the store is built
    /// anyway and requests get 503 until it does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_session::{ConfigError, SessionStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), ConfigError> {
    /// let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let _ = store;
    ///
    /// let err = SessionStore::builder()
    ///     .memory()
    ///     .signing_keys([[7u8; 32]])
    ///     .idle_timeout(Duration::from_secs(3600))
    ///     .absolute_timeout(Duration::from_secs(60))
    ///     .build()
    ///     .await
    ///     .unwrap_err();
    /// assert!(matches!(err, ConfigError::IdleExceedsAbsolute { .. }));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for the first setting that cannot work (Redis not answering is no error):
    ///
    /// - [`NoSigningKey`](ConfigError::NoSigningKey), [`KeyTooShort`](ConfigError::KeyTooShort):
    ///   no signing key, or one shorter than [`MIN_KEY_BYTES`].
    /// - [`NoBackend`](ConfigError::NoBackend): neither Redis nor [`memory`](Self::memory) chosen.
    /// - [`MissingEnv`](ConfigError::MissingEnv): a variable that
    ///   [`redis_url_from_var`](Self::redis_url_from_var) or
    ///   [`redis_from_env`](Self::redis_from_env) needs is not set.
    /// - [`Zero`](ConfigError::Zero), [`TooLong`](ConfigError::TooLong),
    ///   [`IdleExceedsAbsolute`](ConfigError::IdleExceedsAbsolute): a timeout, size or limit of
    ///   zero, a timeout over a day or a lifetime over 100 years, an idle timeout longer than the
    ///   absolute one.
    /// - [`CookieName`](ConfigError::CookieName), [`CookiePrefix`](ConfigError::CookiePrefix),
    ///   [`CookiePath`](ConfigError::CookiePath), [`CookieDomain`](ConfigError::CookieDomain),
    ///   [`SameSiteNoneInsecure`](ConfigError::SameSiteNoneInsecure): a cookie browsers would
    ///   refuse.
    /// - [`Deployment`](ConfigError::Deployment): a Redis URL that does not parse, no nodes or
    ///   sentinels, TLS settings without the `tls` feature, a CA file that cannot be read, or a
    ///   [`wait_for_replicas`](Self::wait_for_replicas) timeout not below the command timeout.
    pub async fn build(mut self) -> Result<SessionStore, ConfigError> {
        self.validate()?;
        let lifetimes = Lifetimes {
            idle_ms: millis(self.idle),
            absolute_ms: millis(self.absolute),
        };
        let backend = match std::mem::replace(&mut self.backend, BackendChoice::None) {
            BackendChoice::None => return Err(ConfigError::NoBackend),
            BackendChoice::Memory => Backend::Memory(MemoryBackend::default()),
            BackendChoice::Redis(deployment) => self.redis(deployment)?,
            BackendChoice::RedisEnv(var) => {
                let url = std::env::var(&var).map_err(|_| ConfigError::MissingEnv(var))?;
                self.redis(Deployment::Url(url))?
            }
            BackendChoice::FromEnv => {
                let deployment = self.deployment_from_env()?;
                self.redis(deployment)?
            }
        };
        if let Backend::Redis(redis) = &backend {
            let within = self
                .connect_timeout
                .saturating_mul(u32::try_from(self.pool_size).unwrap_or(u32::MAX));
            if let Err(e) = redis.warm_up(within).await {
                tracing::warn!(error = %e, "Redis not reachable yet; requests needing a session get 503 until it is");
            }
        }
        let backend = Arc::new(backend);
        let (toucher, worker) = Toucher::new(self.touch_queue);
        let codec = CookieCodec::new(self.name(), &self.keys, self.attributes);
        let checker = Checker {
            codec: codec.clone(),
            lifetimes,
        };
        worker.start(Arc::downgrade(&backend), self.prefix.clone(), checker);
        let inner = Arc::new(StoreInner {
            backend,
            codec,
            prefix: self.prefix,
            lifetimes,
            toucher,
            limits: self.limits,
            session_limit: self.session_limit,
            events: self.events,
        });
        Ok(SessionStore { inner })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.keys.is_empty() {
            return Err(ConfigError::NoSigningKey);
        }
        if let Some((index, k)) = self
            .keys
            .iter()
            .enumerate()
            .find(|(_, k)| k.len() < MIN_KEY_BYTES)
        {
            return Err(ConfigError::KeyTooShort {
                index,
                len: k.len(),
            });
        }
        for (name, d, max) in [
            ("idle_timeout", self.idle, MAX_LIFETIME),
            ("absolute_timeout", self.absolute, MAX_LIFETIME),
            ("connect_timeout", self.connect_timeout, MAX_TIMEOUT),
            ("command_timeout", self.command_timeout, MAX_TIMEOUT),
        ] {
            if d.as_millis() == 0 {
                return Err(ConfigError::Zero(name));
            }
            if d > max {
                return Err(ConfigError::TooLong { setting: name, max });
            }
        }
        if self.pool_size == 0 {
            return Err(ConfigError::Zero("pool_size"));
        }
        for (name, n) in [
            ("touch_queue", self.touch_queue),
            ("max_value_bytes", self.limits.value_bytes),
            ("max_session_bytes", self.limits.session_bytes),
            ("max_keys", self.limits.keys),
            (
                "max_sessions_per_user",
                self.session_limit.map_or(1, |(max, _)| max),
            ),
        ] {
            if n == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.wait_replicas > 0
            && (self.wait_timeout.is_zero() || self.wait_timeout >= self.command_timeout)
        {
            return Err(ConfigError::Deployment(format!(
                "wait_for_replicas: the timeout ({:?}) must be above zero and below the command timeout ({:?})",
                self.wait_timeout, self.command_timeout
            )));
        }
        if self.idle > self.absolute {
            return Err(ConfigError::IdleExceedsAbsolute {
                idle: self.idle,
                absolute: self.absolute,
            });
        }
        self.validate_cookie()
    }
}

/// The longest connect, command or replica-wait timeout: a day. Beyond it a deadline is no
/// deadline, and `Instant` arithmetic would overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The longest idle or absolute session lifetime: 100 years, far beyond what browsers keep a
/// cookie (400 days), and well within the milliseconds that Redis and the deadlines count.
const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
