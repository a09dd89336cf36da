//! [`SessionStore`]: the state every request shares (backend, cookie rules, lifetimes).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::cookie::CookieCodec;
use crate::store::{Backend, Found, Lifetimes, Limits};
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
    /// Benchmark support, not API: the floor. One load-script round trip on the raw store key
    /// `key` through this store's pool, with none of the session logic around it. Returns
    /// the number of fields read.
    #[doc(hidden)]
    pub async fn __floor_load(&self, key: &str) -> Result<usize, crate::SessionError> {
        let key = crate::token::StoreKey::from_raw(key.to_owned());
        let ttl = Duration::from_millis(self.inner.lifetimes.idle_ms);
        let loaded = self.inner.backend.load(&key, ttl).await?;
        Ok(match loaded {
            Found::Live(l) => l.fields.len(),
            _ => 0,
        })
    }

    /// What the connection layer has done so far (zeros for the in-process backend).
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

    /// Whether this store keeps sessions in Redis (rather than in process memory).
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
