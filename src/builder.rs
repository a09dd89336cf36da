//! The validated builder of a [`SessionStore`].

use std::sync::Arc;
use std::time::Duration;

use cookie::SameSite;

use crate::cookie::{CookieAttributes, CookieCodec};
use crate::error::ConfigError;
use crate::state::{SessionStore, StoreInner};
use crate::store::memory::MemoryBackend;
use crate::store::redis::{RedisBackend, RedisOptions};
use crate::store::{Backend, Lifetimes, Limits};
use crate::touch::Toucher;

/// Signing keys must be at least this long (the HMAC-SHA256 block of entropy we ask for).
pub const MIN_KEY_BYTES: usize = 32;

impl SessionStore {
    /// Starts a builder with OWASP defaults: a `session` cookie that is HttpOnly, Secure,
    /// SameSite=Lax, Path=/ and lives as long as the browser session; 30 minutes idle and
    /// 12 hours absolute timeout.
    pub fn builder() -> SessionStoreBuilder {
        SessionStoreBuilder::default()
    }
}

#[derive(Clone, Debug)]
enum BackendChoice {
    None,
    Redis(String),
    RedisEnv(String),
    Memory,
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
///     .same_site(SameSite::Strict)
///     .persistent(true)
///     .build()
///     .await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SessionStoreBuilder {
    backend: BackendChoice,
    keys: Vec<Vec<u8>>,
    idle: Duration,
    absolute: Duration,
    cookie_name: String,
    attributes: CookieAttributes,
    prefix: String,
    pool_size: usize,
    connect_timeout: Duration,
    command_timeout: Duration,
    touch_queue: usize,
    limits: Limits,
}

impl Default for SessionStoreBuilder {
    fn default() -> Self {
        Self {
            backend: BackendChoice::None,
            keys: Vec::new(),
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 3600),
            cookie_name: "session".into(),
            attributes: CookieAttributes {
                path: "/".into(),
                domain: None,
                secure: true,
                http_only: true,
                same_site: SameSite::Lax,
                persistent: false,
            },
            prefix: "session:".into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            touch_queue: 4096,
            limits: Limits {
                value_bytes: 64 * 1024,
                session_bytes: 1024 * 1024,
                keys: 1000,
            },
        }
    }
}

impl SessionStoreBuilder {
    /// Keep sessions in Redis at this URL (`redis://[user:pass@]host:port[/db]`).
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.backend = BackendChoice::Redis(url.into());
        self
    }

    /// Keep sessions in Redis at the URL in this environment variable, read by `build`.
    pub fn redis_url_from_env(mut self, var: impl Into<String>) -> Self {
        self.backend = BackendChoice::RedisEnv(var.into());
        self
    }

    /// Keep sessions in this process's memory: for development and tests. Same semantics as
    /// Redis, but sessions are lost on restart and not shared between processes.
    pub fn memory(mut self) -> Self {
        self.backend = BackendChoice::Memory;
        self
    }

    /// The HMAC-SHA256 key ring, each key at least 32 bytes. The first key signs; all keys
    /// verify, and a cookie verified by an older key is re-issued signed by the first.
    pub fn signing_keys<K: AsRef<[u8]>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.keys = keys.into_iter().map(|k| k.as_ref().to_vec()).collect();
        self
    }

    /// A session expires after this long without a request (default 30 minutes).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// A session ends this long after it was created, however active (default 12 hours).
    /// Regenerating the id keeps the creation time.
    pub fn absolute_timeout(mut self, absolute: Duration) -> Self {
        self.absolute = absolute;
        self
    }

    /// Cookie name (default `session`). A `__Host-` name requires Secure, Path=/ and no
    /// Domain; a `__Secure-` name requires Secure.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// Cookie `Path` (default `/`).
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.attributes.path = path.into();
        self
    }

    /// Cookie `Domain` (default none: host-only).
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.attributes.domain = Some(domain.into());
        self
    }

    /// The `Secure` attribute (default on). Turn it off only for plain-http local use.
    pub fn secure(mut self, secure: bool) -> Self {
        self.attributes.secure = secure;
        self
    }

    /// The `HttpOnly` attribute (default on).
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.attributes.http_only = http_only;
        self
    }

    /// The `SameSite` attribute (default `Lax`).
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.attributes.same_site = same_site;
        self
    }

    /// Send a persistent cookie whose `Max-Age` follows the server-side expiry (default off:
    /// the cookie ends with the browser session).
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.attributes.persistent = persistent;
        self
    }

    /// Prefix of the store keys (default `session:`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Most Redis connections (default 16). Each is multiplexed, so a few go a long way.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// How long opening a Redis connection may take (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one store operation may take in all, including waiting for a connection
    /// (default 1 s). Past it the request gets 503 Service Unavailable.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Capacity of the queue of expiry refreshes for requests that do not read their
    /// session (default 4096). When it is full, refreshes are skipped, never waited for.
    pub fn touch_queue(mut self, capacity: usize) -> Self {
        self.touch_queue = capacity;
        self
    }

    /// Largest JSON of one value, in bytes (default 64 KiB). A larger `insert` fails with
    /// [`SessionError::TooLarge`](crate::SessionError::TooLarge) and changes nothing.
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.limits.value_bytes = bytes;
        self
    }

    /// Largest session, all keys and values together, in bytes (default 1 MiB).
    pub fn max_session_bytes(mut self, bytes: usize) -> Self {
        self.limits.session_bytes = bytes;
        self
    }

    /// Most keys in one session (default 1000).
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.limits.keys = keys;
        self
    }

    /// Checks the configuration and builds the store. Must run inside a Tokio runtime. With
    /// Redis, the scripts are loaded if Redis answers; if it does not, the store is built
    /// anyway and requests get 503 until it does.
    pub async fn build(self) -> Result<SessionStore, ConfigError> {
        self.validate()?;
        let lifetimes = Lifetimes {
            idle_ms: millis(self.idle),
            absolute_ms: millis(self.absolute),
        };
        let backend = match &self.backend {
            BackendChoice::None => return Err(ConfigError::NoBackend),
            BackendChoice::Memory => Backend::Memory(MemoryBackend::default()),
            BackendChoice::Redis(url) => self.redis(url.clone())?,
            BackendChoice::RedisEnv(var) => {
                let url = std::env::var(var).map_err(|_| ConfigError::MissingEnv(var.clone()))?;
                self.redis(url)?
            }
        };
        if let Backend::Redis(redis) = &backend {
            if let Err(e) = redis.warm_up().await {
                tracing::warn!(error = %e, "Redis not reachable yet; requests needing a session get 503 until it is");
            }
        }
        let backend = Arc::new(backend);
        let (toucher, worker) = Toucher::new(self.touch_queue);
        worker.start(Arc::downgrade(&backend), self.prefix.clone());
        let codec = CookieCodec::new(self.cookie_name, &self.keys, self.attributes);
        let inner = Arc::new(StoreInner {
            backend,
            codec,
            prefix: self.prefix,
            lifetimes,
            toucher,
            limits: self.limits,
        });
        Ok(SessionStore { inner })
    }

    fn redis(&self, url: String) -> Result<Backend, ConfigError> {
        let options = RedisOptions {
            url,
            pool_size: self.pool_size,
            connect_timeout: self.connect_timeout,
            wait_timeout: self.command_timeout,
            command_timeout: self.command_timeout,
        };
        Ok(Backend::Redis(RedisBackend::new(&options)?))
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
        for (name, d) in [
            ("idle_timeout", self.idle),
            ("absolute_timeout", self.absolute),
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
        ] {
            if d.as_millis() == 0 {
                return Err(ConfigError::Zero(name));
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
        ] {
            if n == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.idle > self.absolute {
            return Err(ConfigError::IdleExceedsAbsolute {
                idle: self.idle,
                absolute: self.absolute,
            });
        }
        self.validate_cookie()
    }

    fn validate_cookie(&self) -> Result<(), ConfigError> {
        let name = &self.cookie_name;
        // RFC 6265 cookie-name: an RFC 7230 token.
        let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(token_char) {
            return Err(ConfigError::CookieName(name.clone()));
        }
        let a = &self.attributes;
        // A bad path or domain would make every Set-Cookie an invalid header value, dropped
        // silently, and each writing request would start a new session.
        if !valid_path(&a.path) {
            return Err(ConfigError::CookiePath(a.path.clone()));
        }
        if let Some(domain) = a.domain.as_ref().filter(|d| !valid_domain(d)) {
            return Err(ConfigError::CookieDomain(domain.clone()));
        }
        // Browsers reject SameSite=None without Secure.
        if a.same_site == SameSite::None && !a.secure {
            return Err(ConfigError::SameSiteNoneInsecure);
        }
        let rule = if name.starts_with("__Host-") {
            if !a.secure {
                Some("be Secure")
            } else if a.path != "/" {
                Some("have Path=/")
            } else if a.domain.is_some() {
                Some("have no Domain")
            } else {
                None
            }
        } else if name.starts_with("__Secure-") && !a.secure {
            Some("be Secure")
        } else {
            None
        };
        match rule {
            Some(rule) => Err(ConfigError::CookiePrefix {
                name: name.clone(),
                rule,
            }),
            None => Ok(()),
        }
    }
}

/// RFC 6265 path-value (no CTLs, no ';'), stricter: visible ASCII only, so no whitespace.
fn valid_path(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| matches!(b, 0x21..=0x7E) && b != b';')
}

/// A host name: an optional leading '.', then non-empty labels of ASCII letters, digits and
/// '-', at most 253 characters.
fn valid_domain(domain: &str) -> bool {
    let host = domain.strip_prefix('.').unwrap_or(domain);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
