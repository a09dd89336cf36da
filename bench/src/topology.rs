//! The deployments the benchmarks run on (`--topology plain|tls|cluster`), started from the
//! tests' own topologies (`test_support::topology`), and how each library under test connects
//! to each:
//!
//! - `plain`: one redis-server over TCP (the default, and the suite's main figures);
//! - `tls`: one redis-server with a TLS port (a private CA made by openssl, no client
//!   certificate); ours with a `rediss://` URL and `tls_ca_file`, tower-sessions through fred
//!   with rustls (ring) and a `ClientConfig` trusting that CA, redis-rs with its rustls TLS
//!   and the CA as root;
//! - `cluster`: a Redis Cluster of three masters (no replicas, slots split evenly); ours with
//!   `redis_cluster` and the three seeds, tower-sessions through fred in clustered mode,
//!   redis-rs through its async cluster connection. Each routes every command to the master
//!   of its key's slot itself.

use test_support::redis_server::RedisServer;
use test_support::topology::{Certs, Cluster, TlsServer};
use tower_redis_session::{SessionStore, SessionStoreBuilder};
use tower_sessions::SessionManagerLayer;
use tower_sessions_redis_store::fred::prelude::Config;
use tower_sessions_redis_store::{fred::prelude::Pool, RedisStore};

use crate::apps::{ours_store_on, tower_sessions_layer_on, RedisRs};

/// Which deployment a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    Plain,
    Tls,
    Cluster,
}

impl Topology {
    /// `--topology plain|tls|cluster` among the arguments (default `plain`).
    pub fn from_args() -> Self {
        match crate::arg_value::<String>("--topology").as_deref() {
            None | Some("plain") => Topology::Plain,
            Some("tls") => Topology::Tls,
            Some("cluster") => Topology::Cluster,
            Some(other) => panic!("--topology: plain, tls or cluster, not {other:?}"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Topology::Plain => "plain",
            Topology::Tls => "tls",
            Topology::Cluster => "cluster",
        }
    }

    /// What it is, for the runners' output files.
    pub fn describe(self) -> &'static str {
        match self {
            Topology::Plain => "one redis-server over plain TCP",
            Topology::Tls => {
                "one redis-server over TLS (private CA, no client certificate): ours with \
                 rediss:// and tls_ca_file, tower-sessions through fred with rustls (ring), \
                 redis-rs with rustls"
            }
            Topology::Cluster => {
                "a Redis Cluster of 3 masters, no replicas: ours with redis_cluster, \
                 tower-sessions through fred in clustered mode, redis-rs through its async \
                 cluster connection"
            }
        }
    }
}

/// A running deployment; its daemons are stopped (by their PIDs) when it is dropped.
pub enum Deployment {
    Plain(RedisServer),
    Tls(TlsServer),
    Cluster(Cluster),
}

impl Deployment {
    /// Starts `topology` on loopback (a cluster takes a few seconds).
    pub fn start(topology: Topology) -> Self {
        match topology {
            Topology::Plain => Deployment::Plain(RedisServer::start()),
            Topology::Tls => Deployment::Tls(TlsServer::start(false)),
            Topology::Cluster => Deployment::Cluster(Cluster::start(0)),
        }
    }

    pub fn topology(&self) -> Topology {
        match self {
            Deployment::Plain(_) => Topology::Plain,
            Deployment::Tls(_) => Topology::Tls,
            Deployment::Cluster(_) => Topology::Cluster,
        }
    }

    /// The plain server, whose port the bare-socket floors use (on `plain` only).
    pub fn plain(&self) -> Option<&RedisServer> {
        match self {
            Deployment::Plain(server) => Some(server),
            _ => None,
        }
    }

    /// Process ids of the data nodes, for their CPU time and to pin them.
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Deployment::Plain(server) => server.pid().into_iter().collect(),
            Deployment::Tls(server) => server.daemon.pid().into_iter().collect(),
            Deployment::Cluster(cluster) => {
                cluster.masters.iter().filter_map(|m| m.pid()).collect()
            }
        }
    }

    /// Every key (on every master of a cluster), read over plain TCP (a TLS server has a
    /// plain loopback port for such inspection).
    pub fn keys(&self) -> Vec<String> {
        match self {
            Deployment::Plain(server) => server.keys(),
            Deployment::Tls(server) => server.daemon.cmd(&["KEYS", "*"]),
            Deployment::Cluster(cluster) => cluster.keys("*"),
        }
    }

    /// Fields of the hash at `key` (asked of the master that holds it, on a cluster).
    pub fn hlen(&self, key: &str) -> usize {
        match self {
            Deployment::Plain(server) => server.cmd(&["HLEN", key]),
            Deployment::Tls(server) => server.daemon.cmd(&["HLEN", key]),
            // The other masters answer MOVED.
            Deployment::Cluster(cluster) => cluster
                .masters
                .iter()
                .find_map(|m| m.try_cmd(&["HLEN", key]).ok())
                .expect("HLEN on the key's master"),
        }
    }

    /// Our store on this deployment, configured as [`crate::apps::ours_store`].
    pub async fn ours_store(&self) -> SessionStore {
        ours_store_on(self.ours_builder()).await
    }

    fn ours_builder(&self) -> SessionStoreBuilder {
        let b = SessionStore::builder();
        match self {
            Deployment::Plain(server) => b.redis_url(server.url()),
            Deployment::Tls(server) => b
                .redis_url(server.url())
                .tls_ca_file(Certs::get().path("ca.crt")),
            Deployment::Cluster(cluster) => b.redis_cluster(cluster.urls()),
        }
    }

    /// tower-sessions' layer on this deployment, through fred.
    pub async fn tower_sessions_layer(
        &self,
        always_save: bool,
    ) -> SessionManagerLayer<RedisStore<Pool>> {
        tower_sessions_layer_on(self.fred_config(), always_save).await
    }

    fn fred_config(&self) -> Config {
        match self {
            Deployment::Plain(server) => Config::from_url(&server.url()).expect("fred config"),
            Deployment::Tls(server) => {
                // The scheme `rediss` would make fred load the system's roots; the private CA
                // is set here instead.
                let mut config =
                    Config::from_url(&format!("redis://127.0.0.1:{}", server.tls_port))
                        .expect("fred config");
                let connector = tower_sessions_redis_store::fred::types::config::TlsConnector::from(
                    rustls_client_config(),
                );
                config.tls = Some(connector.into());
                config
            }
            Deployment::Cluster(cluster) => {
                let ports: Vec<u16> = cluster.masters.iter().map(|m| m.port).collect();
                let others: Vec<String> = ports[1..]
                    .iter()
                    .map(|p| format!("node=127.0.0.1:{p}"))
                    .collect();
                let url = format!(
                    "redis-cluster://127.0.0.1:{}?{}",
                    ports[0],
                    others.join("&")
                );
                Config::from_url(&url).expect("fred cluster config")
            }
        }
    }

    /// redis-rs's connection to this deployment, as an application opens it once.
    pub async fn redis_rs(&self) -> RedisRs {
        match self {
            Deployment::Plain(server) => crate::apps::redis_rs_connection(&server.url()).await,
            Deployment::Tls(server) => {
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(Certs::get().pem("ca.crt")),
                };
                let client = redis::Client::build_with_tls(server.url(), certs)
                    .expect("redis-rs TLS client");
                RedisRs::Single(
                    client
                        .get_multiplexed_async_connection()
                        .await
                        .expect("redis-rs TLS connect"),
                )
            }
            Deployment::Cluster(cluster) => RedisRs::Cluster(
                redis::cluster::ClusterClient::new(cluster.urls())
                    .expect("redis-rs cluster client")
                    .get_async_connection()
                    .await
                    .expect("redis-rs cluster connect"),
            ),
        }
    }
}

/// A rustls client configuration (ring) that trusts the private CA of [`Certs`].
fn rustls_client_config() -> rustls::ClientConfig {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(Certs::get().path("ca.crt")).expect("ca.crt") {
        roots.add(cert.expect("CA certificate")).expect("root");
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth()
}

/// Installs ring as rustls' process-wide provider (redis-rs builds its TLS configuration
/// with the default one); harmless when one is already installed.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
