//! The validated builder of a [`SessionStore`].

use std::sync::Arc;
use std::time::Duration;

use crate::backend::memory::MemoryBackend;
use crate::backend::redis::RedisBackend;
use crate::backend::{Backend, Lifetimes, Limits};
use crate::connection::{Connections, Connector, CredentialsProvider, Deployment, Tls};
use crate::cookie::{CookieAttributes, CookieCodec, SameSite};
use crate::error::ConfigError;
use crate::events::{Events, SessionEvent};
use crate::numbers::millis;
use crate::store::users::SessionLimit;
use crate::store::{SessionStore, StoreInner};
use crate::touch::{Checker, Toucher};

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
///     .same_site(SameSite::Strict)
///     .persistent(true)
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
    /// Keep sessions in a standalone Redis at this URL: `redis://[user:pass@]host:port[/db]`,
    /// `rediss://…` for TLS (feature `tls`), or `redis+unix:///path/to/redis.sock`.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.backend = BackendChoice::Redis(Deployment::Url(url.into()));
        self
    }

    /// Keep sessions in a Redis Cluster; `nodes` are seed URLs (`redis://host:port`, or
    /// `rediss://` with the `tls` feature), from which the client learns the whole cluster.
    #[cfg(feature = "cluster")]
    pub fn redis_cluster<N: Into<String>>(mut self, nodes: impl IntoIterator<Item = N>) -> Self {
        let nodes = nodes.into_iter().map(Into::into).collect();
        self.backend = BackendChoice::Redis(Deployment::Cluster(nodes));
        self
    }

    /// Keep sessions in the primary that Redis Sentinel names for `service` (the name in
    /// `sentinel monitor`). `sentinels` are URLs of the sentinels, with their own credentials
    /// if they need any (`redis://user:pass@host:26379`); if they use `rediss://`, so does the
    /// primary. The primary's credentials come from [`redis_auth`](Self::redis_auth) or a
    /// [`credentials_provider`](Self::credentials_provider). After a failover, the next
    /// connection asks the sentinels again.
    pub fn redis_sentinel<S: Into<String>>(
        mut self,
        service: impl Into<String>,
        sentinels: impl IntoIterator<Item = S>,
    ) -> Self {
        self.backend = BackendChoice::Redis(Deployment::Sentinel {
            service: service.into(),
            sentinels: sentinels.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Take the deployment from the environment, checked by `build`: `REDIS_CLUSTER_NODES`
    /// (comma-separated URLs, feature `cluster`), else `REDIS_SENTINELS` (comma-separated
    /// URLs) with `REDIS_SENTINEL_SERVICE`, else `REDIS_URL`; and `REDIS_CA_FILE`, a PEM file
    /// of a private CA for `rediss://`.
    pub fn redis_from_env(mut self) -> Self {
        self.backend = BackendChoice::FromEnv;
        self
    }

    /// Keep sessions in Redis through a pool the application already has. The store takes
    /// a few connections from it once and keeps them (multiplexed, so they are shared, not
    /// held): no checkout and no `PING` per request. Timeouts and TLS are the pool's own.
    #[cfg(feature = "deadpool-redis")]
    pub fn redis_pool(mut self, pool: deadpool_redis::Pool) -> Self {
        self.backend = BackendChoice::Redis(Deployment::Pool(pool));
        self
    }

    /// As [`redis_pool`](Self::redis_pool), with the application's cluster pool. Build its
    /// client with `retries(0)`: a cluster client that retries re-sends a counter after a
    /// dropped socket (this store follows `MOVED` and `ASK` itself). Its connections report
    /// only a pipeline's first redirection, so a pipeline of several commands that meets a
    /// slot migration fails rather than risk running twice (with
    /// [`redis_cluster`](Self::redis_cluster), only the redirected commands are sent again).
    #[cfg(all(feature = "deadpool-redis", feature = "cluster"))]
    pub fn redis_cluster_pool(mut self, pool: deadpool_redis::cluster::Pool) -> Self {
        self.backend = BackendChoice::Redis(Deployment::ClusterPool(pool));
        self
    }

    /// ACL user (`None`: the `default` user) and password for every Redis connection,
    /// overriding any in the URLs (sentinels keep their own).
    pub fn redis_auth(mut self, user: Option<&str>, password: impl Into<String>) -> Self {
        self.auth = Some((user.map(str::to_owned), password.into()));
        self
    }

    /// Credentials that expire or rotate: asked for by every new connection, and by the
    /// live ones ahead of expiry (see [`CredentialsProvider`]). Overrides `redis_auth`.
    pub fn credentials_provider(mut self, provider: impl CredentialsProvider) -> Self {
        self.credentials = Some(Provider(Arc::new(provider)));
        self
    }

    /// How long before their credentials expire live connections re-authenticate
    /// (default 10 minutes). Credentials that live less than this are refreshed halfway
    /// through their lifetime instead (with a warning, once).
    pub fn credentials_refresh_ahead(mut self, ahead: Duration) -> Self {
        self.credentials_ahead = ahead;
        self
    }

    /// After every write (save, `incr`, `regenerate`, `destroy`), wait until `replicas`
    /// replicas acknowledged it, at most `timeout` (Redis `WAIT`, in the same round trip as
    /// the write). Replication is asynchronous: without this, a write that Redis acknowledged
    /// can be lost if the primary fails before passing it on. When fewer replicas answer in
    /// time, the request gets 503 ([`StoreError::NotReplicated`](crate::StoreError::NotReplicated)):
    /// the write stands on the primary, but a failover could lose it. Off by default.
    pub fn wait_for_replicas(mut self, replicas: usize, timeout: Duration) -> Self {
        self.wait_replicas = replicas;
        self.wait_timeout = timeout;
        self
    }

    /// PEM of the CA that signed the Redis servers' certificates, for `rediss://` (feature
    /// `tls`); without it, the system's roots are trusted.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca = Some(CaSource::Pem(pem.into()));
        self
    }

    /// As [`tls_ca_pem`](Self::tls_ca_pem), read from this file by `build`.
    pub fn tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls_ca = Some(CaSource::File(path.into()));
        self
    }

    /// A client certificate and its key, both PEM, for servers that ask for one (mutual TLS).
    pub fn tls_client_cert(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls_client = Some((cert_pem.into(), key_pem.into()));
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

    /// Cookie name. By default `__Host-session` where that prefix's rules hold (Secure,
    /// Path=/, no Domain: the default attributes), so that a sibling subdomain cannot set a
    /// cookie of that name and pin a user to its session ("cookie tossing"); `session`
    /// otherwise (plain-http development, a path or a domain of your own). A `__Host-` name
    /// requires Secure, Path=/ and no Domain; a `__Secure-` name requires Secure, whatever
    /// the case of the prefix.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = Some(name.into());
        self
    }

    /// The cookie name as configured, or the default for the attributes.
    fn name(&self) -> String {
        let default = || self.attributes.default_name().to_owned();
        self.cookie_name.clone().unwrap_or_else(default)
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

    /// Redis connections (default 4). Each is multiplexed: concurrent requests pipeline on
    /// it. A request goes to the first connection with fewer than 32 commands in flight,
    /// else to the least busy, so that concurrent requests share system calls; the others
    /// take the overflow and stand by when one fails.
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
    /// (default 1 s). Past it the request gets 503 Service Unavailable: on the crate's own
    /// connection (plain TCP or unix socket) within a quarter of the timeout more, since it
    /// checks its requests' deadlines four times per timeout rather than keep a timer for each.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Capacity of the queue of expiry refreshes for requests that do not read their
    /// session (default 4096), per lane: each thread queues in its own lane (of 8), and a
    /// lane also merges the cookies it has seen since the last refresh in a table of 256.
    /// When a lane is full, refreshes are skipped, never waited for.
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

    /// At most `max` sessions per user (by [`Session::login`](crate::Session::login)); by
    /// default there is no limit. A login over it either ends the user's oldest sessions or
    /// is refused, as `policy` says. The count is kept by the user's index in one step, so
    /// logins racing each other, on any number of app servers and on a cluster, never take
    /// the user past it. `max` of 0 is refused by [`build`](Self::build).
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

    /// Calls `hook` after each lifecycle event of a session: created, logged in, given a new
    /// secret, logged out, ended by the store (see [`SessionEventKind`](crate::SessionEventKind)).
    /// It runs once the store confirmed the change, on the task that made it, before the
    /// request (or the [`SessionStore`] call) goes on: keep it quick and hand slow work to a
    /// channel or a task. A hook that panics never fails a request (the panic is logged at
    /// `warn`); an operation that fails reports nothing. A second call replaces the hook.
    ///
    /// Logged-in sessions that expire are reported late, when their user's index is next
    /// checked ([`Expired`](crate::SessionEventKind::Expired)); others are not reported.
    pub fn on_event(mut self, hook: impl Fn(&SessionEvent) + Send + Sync + 'static) -> Self {
        self.events = Events::new(hook);
        self
    }

    /// Checks the configuration and builds the store. Must run inside a Tokio runtime. With
    /// Redis, the scripts are loaded if Redis answers; if it does not, the store is built
    /// anyway and requests get 503 until it does.
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

    fn redis(&mut self, deployment: Deployment) -> Result<Backend, ConfigError> {
        let tls = Tls {
            ca_pem: match self.tls_ca.take() {
                Some(CaSource::Pem(pem)) => Some(pem),
                Some(CaSource::File(path)) => Some(std::fs::read(&path).map_err(|e| {
                    ConfigError::Deployment(format!("CA file {}: {e}", path.display()))
                })?),
                None => None,
            },
            client: self.tls_client.take(),
        };
        if cfg!(not(feature = "tls")) && (tls.ca_pem.is_some() || tls.client.is_some()) {
            return Err(ConfigError::Deployment(
                "TLS certificates were given, but the `tls` feature is off".into(),
            ));
        }
        #[cfg(feature = "tls")]
        {
            // rustls needs one process-wide crypto provider; the application may have its own.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let options = crate::connection::Options {
            tls,
            auth: self.auth.take(),
            credentials: self.credentials.take().map(|p| crate::connection::Refresh {
                provider: p.0,
                ahead: self.credentials_ahead,
                warned: Arc::default(),
            }),
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
        };
        let connector = Connector::new(deployment, options)?;
        let connections = Connections::new(
            connector,
            self.pool_size,
            self.connect_timeout,
            self.command_timeout,
        );
        let wait = (self.wait_replicas > 0).then_some((self.wait_replicas, self.wait_timeout));
        Ok(Backend::Redis(RedisBackend::new(connections, wait)))
    }

    /// The deployment the environment describes (see [`redis_from_env`](Self::redis_from_env)).
    fn deployment_from_env(&mut self) -> Result<Deployment, ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        if let Some(path) = var("REDIS_CA_FILE") {
            self.tls_ca = Some(CaSource::File(path.into()));
        }
        if let Some(nodes) = var("REDIS_CLUSTER_NODES") {
            #[cfg(feature = "cluster")]
            return Ok(Deployment::Cluster(list(nodes)));
            #[cfg(not(feature = "cluster"))]
            return Err(ConfigError::Deployment(format!(
                "REDIS_CLUSTER_NODES is set ({} nodes), but the `cluster` feature is off",
                list(nodes).len()
            )));
        }
        if let Some(sentinels) = var("REDIS_SENTINELS") {
            let service = var("REDIS_SENTINEL_SERVICE")
                .ok_or_else(|| ConfigError::MissingEnv("REDIS_SENTINEL_SERVICE".into()))?;
            return Ok(Deployment::Sentinel {
                service,
                sentinels: list(sentinels),
            });
        }
        var("REDIS_URL")
            .map(|url| Deployment::Url(url.trim().to_owned()))
            .ok_or_else(|| ConfigError::MissingEnv("REDIS_URL".into()))
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

    fn validate_cookie(&self) -> Result<(), ConfigError> {
        self.attributes.check(&self.name())
    }
}

/// The longest connect, command or replica-wait timeout: a day. Beyond it a deadline is no
/// deadline, and `Instant` arithmetic would overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The longest idle or absolute session lifetime: 100 years, far beyond what browsers keep a
/// cookie (400 days), and well within the milliseconds that Redis and the deadlines count.
const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
