//! Opening one connection to a deployment: a standalone server (TCP, TLS or unix socket), the
//! primary that Sentinel names now, a Redis Cluster, or a pool the application hands in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "deadpool-redis")]
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    ProtocolVersion, PushKind, RedisError, RedisResult,
};
use tokio::sync::Notify;

#[cfg(feature = "cluster")]
use super::conn::redirect::Cluster;
use super::credentials::Refresh;
use super::direct::{Direct, TlsConfig};
use super::Conn;
use crate::error::ConfigError;

/// Where sessions live.
pub(crate) enum Deployment {
    /// `redis://`, `rediss://` or `redis+unix://` (also `unix://`).
    Url(String),
    /// Seed nodes of a Redis Cluster.
    #[cfg(feature = "cluster")]
    Cluster(Vec<String>),
    /// The primary that these sentinels name for `service`.
    Sentinel {
        service: String,
        sentinels: Vec<String>,
    },
    /// The application's own pool: connections are taken from it once and kept.
    #[cfg(feature = "deadpool-redis")]
    Pool(deadpool_redis::Pool),
    #[cfg(all(feature = "deadpool-redis", feature = "cluster"))]
    ClusterPool(deadpool_redis::cluster::Pool),
}

/// Certificates for `rediss://` connections; empty: the system's roots, no client certificate.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tls {
    /// PEM of the CA that signed the servers' certificates.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// PEM of a client certificate and its key (mutual TLS).
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
}

/// What every connection of a store is opened with.
pub(crate) struct Options {
    pub(crate) tls: Tls,
    /// ACL user and password, overriding any in the URLs.
    pub(crate) auth: Option<(Option<String>, String)>,
    pub(crate) credentials: Option<Refresh>,
    pub(crate) connect_timeout: Duration,
    /// The cluster client's response timeout; our own connection fails a late request
    /// within a quarter of it.
    pub(crate) command_timeout: Duration,
}

/// Opens connections to one deployment.
pub(crate) struct Connector {
    kind: Kind,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    tls: Tls,
    /// Settings of our own TLS connections, when the deployment uses TLS.
    own_tls: Option<TlsConfig>,
    /// When cluster nodes are reached through our own connection (see `Cluster::Direct`):
    /// the store's own slot routing, shared by all its connections.
    #[cfg(feature = "cluster")]
    own_cluster_nodes: Option<Arc<super::slots::Slots>>,
    credentials: Option<Refresh>,
    connect_timeout: Duration,
    command_timeout: Duration,
}

enum Kind {
    Single(ConnectionInfo),
    Sentinel {
        service: String,
        sentinels: Vec<ConnectionInfo>,
        /// Settings (user, password, database) for the primary; TLS if the sentinels use it.
        primary: ConnectionInfo,
    },
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster::ClusterClient),
    #[cfg(feature = "deadpool-redis")]
    Pool(deadpool_redis::Pool),
    #[cfg(all(feature = "deadpool-redis", feature = "cluster"))]
    ClusterPool(deadpool_redis::cluster::Pool),
}

/// Requests that may queue for one connection before senders wait.
const PIPELINE_BUFFER: usize = 1024;

fn parse(url: &str, what: &str) -> Result<ConnectionInfo, ConfigError> {
    url.into_connection_info()
        .map_err(|e| ConfigError::Deployment(format!("{what} {:?}: {e}", redact(url))))
}

/// A URL fit for an error message: no password.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn with_auth(info: ConnectionInfo, user: Option<&str>, password: &str) -> ConnectionInfo {
    let mut settings = info.redis_settings().clone().set_password(password);
    if let Some(user) = user {
        settings = settings.set_username(user);
    }
    info.set_redis_settings(settings)
}

fn resp3(info: ConnectionInfo) -> ConnectionInfo {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    info.set_redis_settings(settings)
}

fn is_tls(info: &ConnectionInfo) -> bool {
    matches!(info.addr(), ConnectionAddr::TcpTls { .. })
}

impl Connector {
    /// Checks the deployment's addresses; opens nothing.
    pub(crate) fn new(deployment: Deployment, options: Options) -> Result<Self, ConfigError> {
        let auth = |info: ConnectionInfo| match &options.auth {
            Some((user, password)) => with_auth(info, user.as_deref(), password),
            None => info,
        };
        #[cfg(feature = "cluster")]
        let mut own_cluster_nodes = None;
        let kind = match deployment {
            Deployment::Url(url) => Kind::Single(resp3(auth(parse(&url, "Redis URL")?))),
            Deployment::Sentinel { service, sentinels } => {
                if service.is_empty() {
                    return Err(ConfigError::Deployment(
                        "the Sentinel service (master) name is empty".into(),
                    ));
                }
                if sentinels.is_empty() {
                    return Err(ConfigError::Deployment(
                        "no sentinel address: give at least one redis://host:port".into(),
                    ));
                }
                let sentinels = sentinels
                    .iter()
                    .map(|s| parse(s, "sentinel URL"))
                    .collect::<Result<Vec<_>, _>>()?;
                // The primary's address comes from Sentinel; its settings from here.
                let scheme = if sentinels.iter().any(is_tls) {
                    "rediss"
                } else {
                    "redis"
                };
                let primary = parse(&format!("{scheme}://127.0.0.1:6379"), "primary")?;
                Kind::Sentinel {
                    service,
                    sentinels,
                    primary: resp3(auth(primary)),
                }
            }
            #[cfg(feature = "cluster")]
            Deployment::Cluster(nodes) => {
                // Our own node connections speak plain TCP and log in with a fixed password;
                // TLS and rotating credentials stay with redis-rs's.
                let plain = nodes
                    .iter()
                    .all(|n| parse(n, "cluster node URL").is_ok_and(|n| !is_tls(&n)));
                if plain && options.credentials.is_none() {
                    let (connect, command) = (options.connect_timeout, options.command_timeout);
                    super::node::node_timeouts(connect, command);
                    if let Some(seed) = nodes.first() {
                        let seed = auth(parse(seed, "cluster node URL")?);
                        own_cluster_nodes = Some(super::slots::Slots::new(seed));
                    }
                }
                Kind::Cluster(cluster_client(&nodes, &options)?)
            }
            #[cfg(feature = "deadpool-redis")]
            Deployment::Pool(pool) => Kind::Pool(pool),
            #[cfg(all(feature = "deadpool-redis", feature = "cluster"))]
            Deployment::ClusterPool(pool) => Kind::ClusterPool(pool),
        };
        // Our own connection serves `rediss://` single servers and Sentinel's primaries.
        #[cfg(feature = "tls")]
        let own_tls = match &kind {
            Kind::Single(info) | Kind::Sentinel { primary: info, .. } if is_tls(info) => Some(
                super::tls::client_config(&options.tls)
                    .map_err(|e| ConfigError::Deployment(format!("TLS: {e}")))?,
            ),
            _ => None,
        };
        #[cfg(not(feature = "tls"))]
        let own_tls = None;
        Ok(Self {
            kind,
            own_tls,
            #[cfg(feature = "cluster")]
            own_cluster_nodes,
            tls: options.tls,
            credentials: options.credentials,
            connect_timeout: options.connect_timeout,
            command_timeout: options.command_timeout,
        })
    }

    /// The credentials that live single-server connections re-authenticate with (the cluster
    /// client re-authenticates its own).
    pub(crate) fn reauthentication(&self) -> Option<&Refresh> {
        match self.kind {
            Kind::Single(_) | Kind::Sentinel { .. } => self.credentials.as_ref(),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The ACL user connections log in as when the credentials provider names none.
    pub(crate) fn username(&self) -> Option<&str> {
        match &self.kind {
            Kind::Single(info) | Kind::Sentinel { primary: info, .. } => {
                info.redis_settings().username()
            }
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Opens one connection. `closed` is raised, and `wake` notified, when its socket drops.
    pub(crate) async fn connect(
        &self,
        closed: Arc<AtomicBool>,
        wake: Arc<Notify>,
    ) -> RedisResult<Conn> {
        let (push_closed, push_wake) = (Arc::clone(&closed), Arc::clone(&wake));
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            // No response timeout here: the store bounds every command, without a second timer.
            .set_response_timeout(None)
            .set_pipeline_buffer_size(PIPELINE_BUFFER)
            .set_push_sender(move |push: redis::PushInfo| {
                if push.kind == PushKind::Disconnection {
                    push_closed.store(true, Ordering::Relaxed);
                    push_wake.notify_one();
                }
                Ok::<(), ()>(())
            });
        match &self.kind {
            Kind::Single(info) if self.direct_serves(info) => {
                let info = self.fresh_credentials(info.clone()).await?;
                self.direct(&info, closed, wake).await
            }
            Kind::Single(info) => {
                let info = self.fresh_credentials(info.clone()).await?;
                let conn = self.client(info)?;
                Ok(Conn::Single(
                    conn.get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            Kind::Sentinel {
                service,
                sentinels,
                primary,
            } => {
                self.primary(service, sentinels, primary, &config, closed, wake)
                    .await
            }
            #[cfg(feature = "cluster")]
            Kind::Cluster(client) => {
                // Node connections of our own, which hand back every reply of a pipeline that
                // met a redirection (see `conn`). redis-rs hides this constructor from its
                // docs: check it on upgrades.
                if let Some(slots) = &self.own_cluster_nodes {
                    let conn = client.get_async_generic_connection().await?;
                    return Ok(Conn::Cluster(Cluster::Direct(conn, Arc::clone(slots))));
                }
                let conn = client.get_async_generic_connection().await?;
                Ok(Conn::Cluster(Cluster::Own(conn)))
            }
            #[cfg(feature = "deadpool-redis")]
            Kind::Pool(pool) => {
                let object = pool.get().await.map_err(pool_error)?;
                // A clone of the multiplexed handle is ours to keep; the object goes back.
                let conn: MultiplexedConnection = (*object).clone();
                Ok(Conn::Single(conn))
            }
            #[cfg(all(feature = "deadpool-redis", feature = "cluster"))]
            Kind::ClusterPool(pool) => {
                let object = pool.get().await.map_err(pool_error)?;
                Ok(Conn::Cluster(Cluster::Pool((*object).clone())))
            }
        }
    }

    async fn fresh_credentials(&self, info: ConnectionInfo) -> RedisResult<ConnectionInfo> {
        Ok(match &self.credentials {
            Some(refresh) => {
                let c = refresh.current().await?;
                with_auth(info, c.username.as_deref(), &c.password)
            }
            None => info,
        })
    }

    /// Our own connection ([`Direct`]), within the connect timeout.
    async fn direct(
        &self,
        info: &ConnectionInfo,
        closed: Arc<AtomicBool>,
        wake: Arc<Notify>,
    ) -> RedisResult<Conn> {
        let tick = self.command_timeout / 4;
        let settings = info.redis_settings();
        let tls = self.own_tls.as_ref();
        let connect = Direct::connect(info.addr(), settings, tls, closed, wake, tick);
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(conn) => Ok(Conn::Direct(conn?)),
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no connection to Redis within the connect timeout",
            ))),
        }
    }

    fn client(&self, info: ConnectionInfo) -> RedisResult<Client> {
        #[cfg(feature = "tls")]
        if is_tls(&info) && (self.tls.ca_pem.is_some() || self.tls.client.is_some()) {
            return Client::build_with_tls(info, certificates(&self.tls));
        }
        Client::open(info)
    }

    /// Asks the sentinels, in turn, for the primary of `service`, connects to it, and checks
    /// that it is a primary now (a sentinel may still name one that was just demoted).
    async fn primary(
        &self,
        service: &str,
        sentinels: &[ConnectionInfo],
        template: &ConnectionInfo,
        config: &AsyncConnectionConfig,
        closed: Arc<AtomicBool>,
        wake: Arc<Notify>,
    ) -> RedisResult<Conn> {
        let mut failure = None;
        for sentinel in sentinels {
            let answer = async {
                let mut conn = self
                    .client(sentinel.clone())?
                    .get_multiplexed_async_connection_with_config(
                        &AsyncConnectionConfig::new()
                            .set_connection_timeout(Some(self.connect_timeout))
                            .set_response_timeout(Some(self.connect_timeout)),
                    )
                    .await?;
                let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(service)
                    .query_async(&mut conn)
                    .await?;
                addr.ok_or_else(|| {
                    RedisError::from((
                        redis::ErrorKind::MasterNameNotFoundBySentinel,
                        "the sentinel does not know this service",
                        service.to_owned(),
                    ))
                })
            };
            let (host, port) = match answer.await {
                Ok(addr) => addr,
                Err(e) => {
                    failure = Some(e);
                    continue;
                }
            };
            let addr = if is_tls(template) {
                ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host, port)
            };
            let info = addr
                .into_connection_info()?
                .set_redis_settings(template.redis_settings().clone());
            let checked = async {
                let info = self.fresh_credentials(info).await?;
                let mut conn = if self.direct_serves(&info) {
                    self.direct(&info, Arc::clone(&closed), Arc::clone(&wake))
                        .await?
                } else {
                    Conn::Single(
                        self.client(info)?
                            .get_multiplexed_async_connection_with_config(config)
                            .await?,
                    )
                };
                Ok::<_, RedisError>((is_primary(&mut conn).await?, conn))
            };
            match checked.await {
                Ok((true, conn)) => return Ok(conn),
                Ok((false, _)) => {
                    failure = Some(RedisError::from((
                        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                        "the node Sentinel named is not a primary (yet)",
                    )))
                }
                // Unreachable (a stale sentinel still names the old primary): ask the next.
                Err(e) => failure = Some(e),
            }
        }
        Err(failure.unwrap_or_else(|| {
            RedisError::from((redis::ErrorKind::EmptySentinelList, "no sentinel answered"))
        }))
    }
}

impl Connector {
    /// Whether our own connection serves this address: plain TCP, a unix socket, or TLS
    /// that verifies the server (`#insecure` URLs go through redis-rs).
    fn direct_serves(&self, info: &ConnectionInfo) -> bool {
        match info.addr() {
            ConnectionAddr::Tcp(..) => true,
            #[cfg(unix)]
            ConnectionAddr::Unix(_) => true,
            ConnectionAddr::TcpTls { insecure, .. } => !insecure && self.own_tls.is_some(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

async fn is_primary(conn: &mut Conn) -> RedisResult<bool> {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(conn).await?;
    Ok(
        matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
            || matches!(role.first(), Some(redis::Value::SimpleString(r)) if r == "master"),
    )
}

#[cfg(feature = "tls")]
fn certificates(tls: &Tls) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: tls
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
        root_cert: tls.ca_pem.clone(),
    }
}

#[cfg(feature = "deadpool-redis")]
fn pool_error(e: impl std::fmt::Display) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        format!("the application's pool gave no connection: {e}"),
    ))
}

#[cfg(feature = "cluster")]
fn cluster_client(
    nodes: &[String],
    options: &Options,
) -> Result<redis::cluster::ClusterClient, ConfigError> {
    if nodes.is_empty() {
        return Err(ConfigError::Deployment(
            "no cluster node: give at least one redis://host:port".into(),
        ));
    }
    let infos = nodes
        .iter()
        .map(|n| parse(n, "cluster node URL"))
        .collect::<Result<Vec<_>, _>>()?;
    // No retries: the client would re-send a counter after a dropped socket. Redirections
    // are followed by `Conn` instead, and the store bounds every command itself.
    let mut builder = redis::cluster::ClusterClientBuilder::new(infos)
        .retries(0)
        .connection_timeout(options.connect_timeout)
        .response_timeout(options.command_timeout)
        .use_protocol(ProtocolVersion::RESP3);
    if let Some((user, password)) = &options.auth {
        builder = builder.password(password);
        if let Some(user) = user {
            builder = builder.username(user);
        }
    }
    #[cfg(feature = "tls")]
    if options.tls.ca_pem.is_some() || options.tls.client.is_some() {
        builder = builder.certs(certificates(&options.tls));
    }
    if let Some(refresh) = &options.credentials {
        builder = builder.set_credentials_provider(refresh.clone());
    }
    builder
        .build()
        .map_err(|e| ConfigError::Deployment(format!("Redis Cluster: {e}")))
}
