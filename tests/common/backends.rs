//! The backends a test's store runs on, started for it, and the macros that run one test on
//! each of them: `on_every_backend!` (in-process, standalone, Cluster) and `backend_tests!`
//! (one backend, for the suites that run on more).

use std::ops::Deref;
use std::sync::OnceLock;

use tower_redis_session::SessionStoreBuilder;

use super::topology::{Certs, Cluster, Sentinels, TlsServer, SERVICE};
use super::RedisServer;

/// What a test's store runs on. Its `Debug` form, lowercased, names the test's records.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// The in-process store.
    Memory,
    /// A standalone redis-server.
    Redis,
    /// A 3-master Redis Cluster (needs the `cluster` feature).
    Cluster,
    /// A Sentinel-managed primary with two replicas.
    Sentinel,
    /// redis-server over TLS, with a client certificate (needs the `tls` feature).
    Tls,
    /// A standalone redis-server, the token in a request header instead of the cookie (see
    /// [`super::header_app`]).
    Header,
}

/// A cluster or a sentinel set-up: the test's own, or the one the whole test binary shares.
pub enum Held<T: 'static> {
    Own(T),
    Shared(&'static T),
}

impl<T> Deref for Held<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self {
            Held::Own(t) => t,
            Held::Shared(t) => t,
        }
    }
}

/// What a test's store runs on, up for as long as this lives; the test looks into Redis
/// through it.
pub enum Backing {
    Memory,
    /// Also [`Backend::Header`]'s.
    Redis(RedisServer),
    Cluster(Held<Cluster>),
    Sentinel(Held<Sentinels>),
    Tls(TlsServer),
}

impl Backing {
    /// The standalone server, on [`Backend::Redis`] and [`Backend::Header`].
    pub fn redis(&self) -> Option<&RedisServer> {
        match self {
            Backing::Redis(server) => Some(server),
            _ => None,
        }
    }
}

impl Backend {
    /// Starts what the backend runs on, and points `b` at it. A cluster or a sentinel set-up
    /// is the test's own.
    pub async fn start(self, b: SessionStoreBuilder) -> (SessionStoreBuilder, Backing) {
        self.start_with(b, false).await
    }

    /// [`Backend::start`], but one cluster and one sentinel set-up (each takes seconds to
    /// start) serve the whole test binary: each test then works under a key prefix of its own.
    pub async fn start_shared(self, b: SessionStoreBuilder) -> (SessionStoreBuilder, Backing) {
        self.start_with(b, true).await
    }

    async fn start_with(
        self,
        b: SessionStoreBuilder,
        shared: bool,
    ) -> (SessionStoreBuilder, Backing) {
        match self {
            Backend::Memory => (b.memory(), Backing::Memory),
            Backend::Redis | Backend::Header => {
                let server = RedisServer::start();
                (b.redis_url(server.url()), Backing::Redis(server))
            }
            Backend::Cluster => {
                let cluster = held(shared, shared_cluster, || Cluster::start(0)).await;
                (cluster_builder(b, &cluster), Backing::Cluster(cluster))
            }
            Backend::Sentinel => {
                let sentinels = held(shared, shared_sentinels, Sentinels::start).await;
                let b = b.redis_sentinel(SERVICE, sentinels.urls());
                (b, Backing::Sentinel(sentinels))
            }
            Backend::Tls => {
                let server = tokio::task::spawn_blocking(|| TlsServer::start(true))
                    .await
                    .expect("tls server");
                (tls_builder(b, &server, Certs::get()), Backing::Tls(server))
            }
        }
    }
}

/// The shared set-up, or one of the test's own (started off the runtime's threads: it waits
/// for its servers).
async fn held<T: Send + Sync + 'static>(
    shared: bool,
    share: fn() -> &'static T,
    start: fn() -> T,
) -> Held<T> {
    let what = std::any::type_name::<T>();
    if shared {
        Held::Shared(tokio::task::spawn_blocking(share).await.expect(what))
    } else {
        Held::Own(tokio::task::spawn_blocking(start).await.expect(what))
    }
}

fn shared_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(0))
}

fn shared_sentinels() -> &'static Sentinels {
    static SENTINELS: OnceLock<Sentinels> = OnceLock::new();
    SENTINELS.get_or_init(Sentinels::start)
}

#[cfg(feature = "cluster")]
fn cluster_builder(b: SessionStoreBuilder, cluster: &Cluster) -> SessionStoreBuilder {
    b.redis_cluster(cluster.urls())
}

#[cfg(not(feature = "cluster"))]
fn cluster_builder(_: SessionStoreBuilder, _: &Cluster) -> SessionStoreBuilder {
    unreachable!("cluster tests need the `cluster` feature")
}

#[cfg(feature = "tls")]
fn tls_builder(b: SessionStoreBuilder, server: &TlsServer, certs: &Certs) -> SessionStoreBuilder {
    b.redis_url(server.url())
        .tls_ca_file(certs.path("ca.crt"))
        .tls_client_cert(certs.pem("client.crt"), certs.pem("client.key"))
}

#[cfg(not(feature = "tls"))]
fn tls_builder(_: SessionStoreBuilder, _: &TlsServer, _: &Certs) -> SessionStoreBuilder {
    unreachable!("TLS tests need the `tls` feature")
}

/// `backend_tests!(redis: Redis; a, b)`: a module `redis` with a test a name, `redis::a`
/// running `a(Backend::Redis)` of the file that calls it, and so on. Attributes before the
/// module's name go on the module (`#[cfg(feature = "tls")] tls: Tls; ...`).
#[allow(unused_macros)]
macro_rules! backend_tests {
    ($(#[$attr:meta])* $module:ident: $backend:ident; $($name:ident),* $(,)?) => {
        $(#[$attr])*
        mod $module {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::common::backends::Backend::$backend).await
            })*
        }
    };
}

/// Runs each named test (an `async fn(Backend)` of the calling file) on the in-process store,
/// a standalone server and (feature `cluster`) a Cluster: `memory::name`, `redis::name` and
/// `cluster::name`.
#[allow(unused_macros)]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        $crate::common::backends::backend_tests!(memory: Memory; $($name),*);
        $crate::common::backends::backend_tests!(redis: Redis; $($name),*);
        $crate::common::backends::backend_tests!(
            #[cfg(feature = "cluster")] cluster: Cluster; $($name),*
        );
    };
}

#[allow(unused_imports)]
pub(crate) use {backend_tests, on_every_backend};
