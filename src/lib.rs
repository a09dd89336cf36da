//! Server-side sessions in Redis for tower, axum and hyper, behind one layer.
//!
//! - Each session is one Redis **hash**, one field per key: concurrent requests that change
//!   different keys never overwrite each other, and a request writes only what it changed.
//! - Sessions load **lazily**: taking the [`Session`] costs nothing, the first read is one
//!   round trip (one pipeline that also slides the expiry), a request that only writes is one
//!   guarded write. A request that carries the cookie but never uses the session does not
//!   wait for Redis at all: its expiry is refreshed in the background.
//! - Writes are **guarded**: a session that was destroyed (logout) or expired while a request
//!   ran is never re-created by that request, and a request still carrying the cookie of a
//!   session that got a new id (login in another tab) can neither read it, write it, nor
//!   overwrite the new cookie. A handler that answers 5xx has its staged changes dropped.
//! - The cookie holds a 256-bit token from the OS and an HMAC-SHA256 tag; Redis only sees the
//!   token's SHA-256 digest. Signing keys rotate: the first key signs, all verify.
//! - Idle and absolute timeouts are enforced by the store; handlers never deal with expiry.
//! - When Redis is down or hangs, requests that need the session get a fast
//!   `503 Service Unavailable`, and the service recovers by itself: failed connections are
//!   replaced (asking Sentinel or the cluster for the current primary), one attempt at a
//!   time with backoff, and a cancelled request never costs a connection.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_redis_session::{Session, SessionError, SessionStore};
//!
//! async fn handler(session: Session) -> Result<String, SessionError> {
//!     let visits = session.incr("visits", 1).await?; // atomic HINCRBY
//!     let user: Option<String> = session.get("user").await?;
//!     session.insert("theme", &"dark")?; // written after the handler
//!     Ok(format!("{user:?} {visits}"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let (current_key, previous_key) = ([1u8; 32], [2u8; 32]);
//! let store = SessionStore::builder()
//!     .memory() // .redis_url("redis://127.0.0.1:6379") in production
//!     .signing_keys([current_key, previous_key])
//!     .idle_timeout(Duration::from_secs(30 * 60))
//!     .absolute_timeout(Duration::from_secs(12 * 3600))
//!     .build()
//!     .await?;
//! let app: Router = Router::new().route("/", get(handler)).layer(store.layer());
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! The [guide](#guide) below shows the common tasks: typed data, flash messages, login and
//! "log out everywhere", remember me, tests, and use beside an authentication crate.
//!
//! # Without axum
//!
//! The layer works on any `tower::Service<http::Request<B>>`. The [`Session`] is in the
//! request extensions, and loads on first use as with axum (see [`SessionStore::layer`]).
//!
//! # Features
//!
//! - `axum` (default): the [`Session`] extractor, and `IntoResponse` for [`SessionError`].
//! - `cluster`: Redis Cluster ([`SessionStoreBuilder::redis_cluster`]).
//! - `tls`: `rediss://` URLs, with rustls; a private CA and client certificates.
//! - `deadpool-redis`: hand in the `deadpool_redis::Pool` the application already has.
//! - `aws-iam`: ElastiCache IAM authentication tokens (`ElastiCacheIam`).
//! - `metrics`: counters and histograms through the `metrics` facade (see `docs/OBSERVABILITY.md`).
//!
//! Standalone servers (TCP, TLS, unix socket), Sentinel, Cluster, ACL users and expiring
//! credentials: see `docs/DEPLOYMENTS.md`.
//!
#![doc = include_str!("guide.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

mod backend;
mod base64url;
mod builder;
mod connection;
mod cookie;
mod error;
mod events;
#[cfg(feature = "axum")]
mod extract;
mod fields;
mod layer;
mod numbers;
mod observe;
mod session;
mod store;
mod token;
mod touch;
mod transport;

pub use crate::builder::{SessionStoreBuilder, MIN_KEY_BYTES};
#[cfg(feature = "aws-iam")]
pub use crate::connection::ElastiCacheIam;
pub use crate::connection::{Credentials, CredentialsFuture, CredentialsProvider};
pub use crate::cookie::SameSite;
pub use crate::error::{ConfigError, Limit, ServerError, SessionError, StoreError};
pub use crate::events::{SessionEvent, SessionEventKind};
pub use crate::layer::{ResponseFuture, SessionLayer, SessionService};
pub use crate::session::Session;
pub use crate::store::users::SessionLimit;
pub use crate::store::{SessionInfo, SessionStore, StoreStats};

/// For this project's fuzz targets only (feature `fuzzing`), not a stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz {
    /// The RESP2 reader of our own connections. It is private to `connection`: the method
    /// that reaches it is implemented next to it (`connection/resp.rs`).
    pub struct Resp {
        _private: (),
    }

    /// Reads `data` as a connection reads its replies, one after the other from the start,
    /// and panics on any disagreement: between the reader's two passes (`skip`, which finds
    /// where a reply ends, and `parse`, which builds it); with redis-rs's parser, on any reply
    /// we accept; and with the readers that find a reply's items in place.
    pub fn resp_reader(data: &[u8]) {
        Resp::check(data);
    }
}

/// The README's example is compiled as a doc test, so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The examples in `docs/` are compiled as doc tests too (every file, so that a Rust block
/// added to any of them is checked like the README's).
#[cfg(doctest)]
#[doc = include_str!("../docs/ARCHITECTURE.md")]
struct ArchitectureDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/SEMANTICS.md")]
struct SemanticsDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/DEPLOYMENTS.md")]
struct DeploymentsDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/OBSERVABILITY.md")]
struct ObservabilityDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/BENCHMARKS-METHOD.md")]
struct BenchmarksMethodDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/RELIABILITY-METHOD.md")]
struct ReliabilityMethodDoctests;
