//! Where Redis is and how to reach it: the deployment (a URL, a cluster, Sentinel, the
//! environment, a pool of the application's, or the in-process store), authentication and
//! TLS, replicas, key prefix and the connection layer's sizes and timeouts.

use std::sync::Arc;
use std::time::Duration;

use super::{BackendChoice, CaSource, Provider, SessionStoreBuilder};
use crate::backend::redis::RedisBackend;
use crate::backend::Backend;
use crate::connection::{Connections, Connector, CredentialsProvider, Deployment, Tls};
use crate::error::ConfigError;

/// Where Redis is and how to reach it.
impl SessionStoreBuilder {
    /// Keep sessions in a standalone Redis at this URL: `redis://[user:pass@]host:port[/db]`,
    /// `rediss://…` for TLS (feature `tls`), or `redis+unix:///path/to/redis.sock`. The URL is
    /// checked by [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().redis_url("redis://:secret@127.0.0.1:6379/0");
    /// # let _ = builder;
    /// ```
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.backend = BackendChoice::Redis(Deployment::Url(url.into()));
        self
    }

    /// Keep sessions in a Redis Cluster; `nodes` are seed URLs (`redis://host:port`, or
    /// `rediss://` with the `tls` feature), from which the client learns the whole cluster.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder()
    ///     .redis_cluster(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"]);
    /// # let _ = builder;
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder()
    ///     .redis_sentinel("mymaster", ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"])
    ///     .redis_auth(Some("app"), "secret");
    /// # let _ = builder;
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// // REDIS_URL=redis://127.0.0.1:6379 in development, REDIS_CLUSTER_NODES=... in production.
    /// let builder = SessionStore::builder().redis_from_env();
    /// # let _ = builder;
    /// ```
    pub fn redis_from_env(mut self) -> Self {
        self.backend = BackendChoice::FromEnv;
        self
    }

    /// Keep sessions in Redis at the URL in this environment variable, read by `build`
    /// (which fails with [`ConfigError::MissingEnv`] if it is not set).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().redis_url_from_var("SESSION_REDIS_URL");
    /// # let _ = builder;
    /// ```
    pub fn redis_url_from_var(mut self, var: impl Into<String>) -> Self {
        self.backend = BackendChoice::RedisEnv(var.into());
        self
    }

    /// Keep sessions in Redis through a pool the application already has. The store takes
    /// a few connections from it once and keeps them (multiplexed, so they are shared, not
    /// held): no checkout and no `PING` per request. Timeouts and TLS are the pool's own.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:6379")
    ///     .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
    /// let builder = SessionStore::builder().redis_pool(pool.clone());
    /// # let _ = builder;
    /// # Ok(())
    /// # }
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let urls = vec!["redis://10.0.0.1:6379".to_string()];
    /// let pool = deadpool_redis::cluster::Config::from_urls(urls)
    ///     .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
    /// let builder = SessionStore::builder().redis_cluster_pool(pool);
    /// # let _ = builder;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(all(feature = "deadpool-redis", feature = "cluster"))]
    pub fn redis_cluster_pool(mut self, pool: deadpool_redis::cluster::Pool) -> Self {
        self.backend = BackendChoice::Redis(Deployment::ClusterPool(pool));
        self
    }

    /// Keep sessions in this process's memory: for development and tests. Same semantics as
    /// Redis, but sessions are lost on restart and not shared between processes.
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
    pub fn memory(mut self) -> Self {
        self.backend = BackendChoice::Memory;
        self
    }

    /// ACL user (`None`: the `default` user) and password for every Redis connection,
    /// overriding any in the URLs (sentinels keep their own).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// # let password = String::from("from your secrets");
    /// let builder = SessionStore::builder()
    ///     .redis_url("redis://127.0.0.1:6379")
    ///     .redis_auth(Some("sessions"), password);
    /// # let _ = builder;
    /// ```
    pub fn redis_auth(mut self, user: Option<&str>, password: impl Into<String>) -> Self {
        self.auth = Some((user.map(str::to_owned), password.into()));
        self
    }

    /// Credentials that expire or rotate: asked for by every new connection, and by the
    /// live ones ahead of expiry (see [`CredentialsProvider`]). Overrides `redis_auth`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Credentials, CredentialsFuture, CredentialsProvider, SessionStore};
    ///
    /// struct FromVault;
    ///
    /// impl CredentialsProvider for FromVault {
    ///     fn credentials(&self) -> CredentialsFuture<'_> {
    ///         Box::pin(async {
    ///             # let password = String::from("from the vault");
    ///             Ok(Credentials { username: Some("app".into()), password, expires_at: None })
    ///         })
    ///     }
    /// }
    ///
    /// let builder = SessionStore::builder()
    ///     .redis_url("redis://127.0.0.1:6379")
    ///     .credentials_provider(FromVault);
    /// # let _ = builder;
    /// ```
    pub fn credentials_provider(mut self, provider: impl CredentialsProvider) -> Self {
        self.credentials = Some(Provider(Arc::new(provider)));
        self
    }

    /// How long before their credentials expire live connections re-authenticate
    /// (default 10 minutes). Credentials that live less than this are refreshed halfway
    /// through their lifetime instead (with a warning, once).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().credentials_refresh_ahead(Duration::from_secs(300));
    /// # let _ = builder;
    /// ```
    pub fn credentials_refresh_ahead(mut self, ahead: Duration) -> Self {
        self.credentials_ahead = ahead;
        self
    }

    /// PEM of the CA that signed the Redis servers' certificates, for `rediss://` (feature
    /// `tls`); without it, the system's roots are trusted. Without the `tls` feature,
    /// [`build`](Self::build) refuses it ([`ConfigError::Deployment`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// # let ca_pem = b"-----BEGIN CERTIFICATE-----\n...".to_vec();
    /// let builder = SessionStore::builder()
    ///     .redis_url("rediss://redis.internal:6380")
    ///     .tls_ca_pem(ca_pem);
    /// # let _ = builder;
    /// ```
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca = Some(CaSource::Pem(pem.into()));
        self
    }

    /// As [`tls_ca_pem`](Self::tls_ca_pem), read from this file by `build` (which fails with
    /// [`ConfigError::Deployment`] if it cannot be read).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder()
    ///     .redis_url("rediss://redis.internal:6380")
    ///     .tls_ca_file("/etc/ssl/private-ca.pem");
    /// # let _ = builder;
    /// ```
    pub fn tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls_ca = Some(CaSource::File(path.into()));
        self
    }

    /// A client certificate and its key, both PEM, for servers that ask for one (mutual TLS;
    /// feature `tls`).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// # let (cert_pem, key_pem) = (b"-----BEGIN CERTIFICATE-----".to_vec(), b"-----BEGIN PRIVATE KEY-----".to_vec());
    /// let builder = SessionStore::builder()
    ///     .redis_url("rediss://redis.internal:6380")
    ///     .tls_client_cert(cert_pem, key_pem);
    /// # let _ = builder;
    /// ```
    pub fn tls_client_cert(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls_client = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// After every write (save, `incr`, `regenerate`, `destroy`), wait until `replicas`
    /// replicas acknowledged it, at most `timeout` (Redis `WAIT`, in the same round trip as
    /// the write). Replication is asynchronous: without this, a write that Redis acknowledged
    /// can be lost if the primary fails before passing it on. When fewer replicas answer in
    /// time, the request gets 503 ([`StoreError::NotReplicated`](crate::StoreError::NotReplicated)):
    /// the write stands on the primary, but a failover could lose it. Off by default. The
    /// timeout must be above zero and below the [`command_timeout`](Self::command_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder()
    ///     .redis_url("redis://127.0.0.1:6379")
    ///     .wait_for_replicas(1, Duration::from_millis(100));
    /// # let _ = builder;
    /// ```
    pub fn wait_for_replicas(mut self, replicas: usize, timeout: Duration) -> Self {
        self.wait_replicas = replicas;
        self.wait_timeout = timeout;
        self
    }

    /// Prefix of the store keys (default `session:`): give each application sharing a Redis
    /// its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().key_prefix("shop:session:");
    /// # let _ = builder;
    /// ```
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Redis connections (default 4). Each is multiplexed: concurrent requests pipeline on
    /// it. A request goes to the first connection with fewer than 32 commands in flight,
    /// else to the least busy, so that concurrent requests share system calls; the others
    /// take the overflow and stand by when one fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().pool_size(8);
    /// # let _ = builder;
    /// ```
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// How long opening a Redis connection may take (default 1 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().connect_timeout(Duration::from_millis(500));
    /// # let _ = builder;
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one store operation may take in all, including waiting for a connection
    /// (default 1 s). Past it the request gets 503 Service Unavailable: on the crate's own
    /// connection (plain TCP or unix socket) within a quarter of the timeout more, since it
    /// checks its requests' deadlines four times per timeout rather than keep a timer for each.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().command_timeout(Duration::from_millis(250));
    /// # let _ = builder;
    /// ```
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    pub(super) fn redis(&mut self, deployment: Deployment) -> Result<Backend, ConfigError> {
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
    pub(super) fn deployment_from_env(&mut self) -> Result<Deployment, ConfigError> {
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

    /// Renamed [`redis_url_from_var`](Self::redis_url_from_var).
    #[deprecated(since = "0.1.0", note = "renamed `redis_url_from_var`")]
    pub fn redis_url_from_env(self, var: impl Into<String>) -> Self {
        self.redis_url_from_var(var)
    }
}
