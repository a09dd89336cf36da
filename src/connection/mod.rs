//! The connection layer: a few multiplexed connections to the deployment, shared by every
//! request, replaced when they fail, and re-opened one attempt at a time with backoff.
//!
//! - `pool_size` connections, each multiplexed (requests pipeline on its socket). A request
//!   goes to the first live connection with fewer than [`PACK`] commands in flight, else to
//!   the least busy: requests that share a socket share its system calls (here and in
//!   Redis; see `direct` for how they gather), and the other connections take the overflow
//!   and stand by for failures.
//! - A connection is retired when its socket is found closed (our own connection looks at an
//!   idle socket a few times per command timeout), when a command on it meets a dropped
//!   socket or an I/O error, when the command timeout cuts it short, or when the server
//!   answers `READONLY`, `MASTERDOWN` or `LOADING` (a demoted or not yet ready primary: the
//!   next connection asks Sentinel, or the cluster, for the current one). A request that is
//!   cancelled (the client hung up, a timeout layer above us) retires nothing: its connection
//!   is as healthy as before.
//! - One background task re-opens retired connections, one attempt at a time, with
//!   exponential backoff (50 ms doubling to 1 s) and jitter. While no connection is live, a
//!   request waits for an attempt already under way (within the command timeout) and
//!   otherwise fails at once with 503: an outage never turns into one connection attempt per
//!   request.
//! - Only what is safe to repeat (loads, expiry refreshes, ending a session) is retried, once,
//!   on another connection. Counters and saves are never re-sent.

#[cfg(feature = "aws-iam")]
mod aws;
mod conn;
mod connector;
mod credentials;
mod direct;
#[cfg(feature = "cluster")]
mod node;
mod ops;
mod resp;
#[cfg(feature = "cluster")]
mod slots;
#[cfg(feature = "tls")]
mod tls;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use redis::{RedisError, RedisResult};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

#[cfg(feature = "aws-iam")]
pub use aws::ElastiCacheIam;
pub(crate) use conn::Conn;
pub(crate) use connector::{Connector, Deployment, Options, Tls};
pub(crate) use credentials::Refresh;
pub use credentials::{Credentials, CredentialsFuture, CredentialsProvider};
pub(crate) use ops::{hash_fields, Call, NotAHash, Ran, Script, Wait};
use resp::timed_out;

use crate::error::{SessionError, StoreError};

/// Commands in flight on a connection before requests go to the next one. While a connection
/// has room, a large reply delays fewer than this many requests behind it.
const PACK: usize = 32;

/// The first pause after a failed connection attempt; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Whether a store operation may be sent again after a transport failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Reads, expiry refreshes, ending a session: the same outcome if it ran twice.
    Safe,
    /// Counters and saves: never re-sent blindly.
    Never,
}

/// Counters of what the connection layer did, for tests and operators.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Connection attempts, successful or not.
    pub(crate) attempts: AtomicU64,
    /// Connections retired after a failure.
    pub(crate) retired: AtomicU64,
}

/// The shared connections of one store.
pub(crate) struct Connections {
    shared: Arc<Shared>,
}

struct Shared {
    slots: Box<[Slot]>,
    connector: Connector,
    command_timeout: Duration,
    connect_timeout: Duration,
    backoff: Mutex<Backoff>,
    /// Wakes the task that re-opens connections.
    wake: Arc<Notify>,
    /// Bumped whenever a connection is installed or an attempt ends.
    changed: watch::Sender<u64>,
    next_id: AtomicU64,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Slot {
    live: RwLock<Option<Live>>,
    in_flight: AtomicUsize,
}

impl Slot {
    /// The connection in this slot, if one is open.
    fn current(&self) -> Option<Live> {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn put(&self, live: Live) {
        *self.live.write().unwrap_or_else(PoisonError::into_inner) = Some(live);
    }
}

#[derive(Clone)]
struct Live {
    conn: Conn,
    id: u64,
    /// Raised by the connection itself when its socket drops (RESP3 push).
    closed: Arc<AtomicBool>,
}

#[derive(Default)]
struct Backoff {
    attempting: bool,
    /// No attempt before this moment (after a failed one).
    retry_at: Option<Instant>,
}

/// A connection lent to one command; counts it in flight while alive.
struct Lent<'a> {
    slot: &'a Slot,
    index: usize,
    live: Live,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        self.slot.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Lets the reconnect task see that the store is gone, and end.
        self.wake.notify_one();
    }
}

impl Connections {
    /// Starts with no connection; the background task opens them at once.
    pub(crate) fn new(
        connector: Connector,
        pool_size: usize,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Self {
        let shared = Arc::new(Shared {
            slots: (0..pool_size.max(1)).map(|_| Slot::default()).collect(),
            connector,
            command_timeout,
            connect_timeout,
            backoff: Mutex::new(Backoff::default()),
            wake: Arc::new(Notify::new()),
            changed: watch::Sender::new(0),
            next_id: AtomicU64::new(1),
            stats: Arc::default(),
        });
        tokio::spawn(maintain(Arc::downgrade(&shared)));
        if shared.connector.reauthentication().is_some() {
            tokio::spawn(reauthenticate(Arc::downgrade(&shared)));
        }
        shared.wake.notify_one();
        Self { shared }
    }

    /// Waits until every connection is open, or an attempt failed, or `within` passed.
    pub(crate) async fn ready(&self, within: Duration) {
        let shared = &self.shared;
        let mut changes = shared.changed.subscribe();
        let deadline = Instant::now() + within;
        loop {
            let all_open = shared.slots.iter().all(|s| s.current().is_some());
            let failed = shared
                .backoff
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retry_at
                .is_some();
            if all_open || failed {
                return;
            }
            if !matches!(
                tokio::time::timeout_at(deadline, changes.changed()).await,
                Ok(Ok(()))
            ) {
                return;
            }
        }
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Runs `work` on a connection, all within the command timeout (on our own connection,
    /// its watchdog, not a timer per command, enforces it); see the module docs for what
    /// retires a connection and what is retried. Work that never reached a socket (its
    /// connection closed first) goes again on another, whatever `repeat` says.
    pub(crate) async fn run<T, F, Fut>(&self, repeat: Repeat, work: F) -> Result<T, SessionError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let shared = &self.shared;
        let deadline = Instant::now() + shared.command_timeout;
        // A failure after which the work may have run wins over later ones: the caller
        // must not take a write for unapplied when it may have been.
        let mut failure: Option<RedisError> = None;
        for _ in 0..2 {
            let lent = match shared.lend(deadline).await {
                Ok(lent) => lent,
                Err(e) => return Err(failure.map_or(e, classify)),
            };
            let started = Instant::now();
            let result = match lent.live.conn.until(deadline) {
                Some(conn) => work(conn).await,
                None => tokio::time::timeout_at(deadline, work(lent.live.conn.clone()))
                    .await
                    .unwrap_or_else(|_| Err(timed_out())),
            };
            match result {
                Ok(value) => return Ok(value),
                Err(e) if e.is_timeout() => {
                    // Only a connection that had a fair share of the budget (not a request
                    // that waited most of it for a reconnect) is judged by the timeout.
                    if started.elapsed() >= shared.command_timeout / 2 {
                        shared.retire(&lent, "no answer within the command timeout");
                    }
                    return Err(SessionError::Unavailable(StoreError::Timeout(
                        shared.command_timeout,
                    )));
                }
                Err(e) if connection_failed(&e) => {
                    shared.retire(&lent, &e.to_string());
                    let sent = !e.is_connection_refusal();
                    if sent && repeat == Repeat::Never {
                        return Err(classify(e));
                    }
                    if sent || failure.is_none() {
                        failure = Some(e);
                    }
                }
                Err(e) => return Err(classify(e)),
            }
        }
        Err(failure.map_or(
            SessionError::Unavailable(StoreError::Connect("no connection".into())),
            classify,
        ))
    }
}

impl Shared {
    /// The live connection with the fewest commands in flight, or, when there is none, the
    /// one that an attempt under way opens (before `deadline`).
    async fn lend(&self, deadline: Instant) -> Result<Lent<'_>, SessionError> {
        // The common case, without subscribing to changes (subscribed before the next look,
        // so that none is missed).
        if let Some(lent) = self.try_lend() {
            return Ok(lent);
        }
        let mut changes = self.changed.subscribe();
        loop {
            if let Some(lent) = self.try_lend() {
                return Ok(lent);
            }
            self.wake.notify_one();
            let wait = {
                let backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
                backoff.attempting || backoff.retry_at.is_none_or(|at| at <= Instant::now())
            };
            if !wait {
                return Err(SessionError::Unavailable(StoreError::Connect(
                    "Redis is unreachable; reconnecting with backoff".into(),
                )));
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(SessionError::Unavailable(StoreError::Connect(format!(
                        "no connection to Redis within the command timeout ({:?})",
                        self.command_timeout
                    ))))
                }
            }
        }
    }

    /// The first live connection with fewer than [`PACK`] commands in flight, else the least
    /// busy one.
    fn try_lend(&self) -> Option<Lent<'_>> {
        let mut best: Option<(usize, usize, Live)> = None;
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(live) = slot.current() else { continue };
            if live.closed.load(Ordering::Relaxed) {
                self.retire_id(index, live.id, "the socket closed");
                continue;
            }
            let load = slot.in_flight.load(Ordering::Relaxed);
            if load < PACK {
                best = Some((index, load, live));
                break;
            }
            if best.as_ref().is_none_or(|(_, least, _)| load < *least) {
                best = Some((index, load, live));
            }
        }
        let (index, _, live) = best?;
        let slot = &self.slots[index];
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Lent { slot, index, live })
    }

    fn retire(&self, lent: &Lent<'_>, why: &str) {
        self.retire_id(lent.index, lent.live.id, why);
    }

    /// Empties slot `index` if it still holds connection `id` (not its replacement).
    fn retire_id(&self, index: usize, id: u64, why: &str) {
        let mut live = self.slots[index]
            .live
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if live.as_ref().is_some_and(|l| l.id == id) {
            *live = None;
            self.stats.retired.fetch_add(1, Ordering::Relaxed);
            crate::observe::count("session_connections_retired_total", &[], 1);
            tracing::warn!(connection = id, reason = why, "Redis connection retired");
            self.wake.notify_one();
        }
    }

    fn set_backoff(&self, attempting: bool, retry_at: Option<Instant>) {
        {
            let mut b = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
            b.attempting = attempting;
            b.retry_at = retry_at;
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Re-opens empty slots, one attempt at a time, until the store is dropped.
async fn maintain(shared: Weak<Shared>) {
    let mut delay = BACKOFF_MIN;
    loop {
        let Some(this) = shared.upgrade() else { return };
        // A connection whose socket closed is as good as gone: retire it now, not at the
        // next request.
        for (index, slot) in this.slots.iter().enumerate() {
            let closed = slot.current().filter(|l| l.closed.load(Ordering::Relaxed));
            if let Some(live) = closed {
                this.retire_id(index, live.id, "the socket closed");
            }
        }
        let empty = this.slots.iter().position(|s| s.current().is_none());
        let Some(index) = empty else {
            let wake = Arc::clone(&this.wake);
            drop(this);
            wake.notified().await;
            continue;
        };
        this.set_backoff(true, None);
        this.stats.attempts.fetch_add(1, Ordering::Relaxed);
        crate::observe::count("session_connection_attempts_total", &[], 1);
        let closed = Arc::new(AtomicBool::new(false));
        let opened = tokio::time::timeout(
            this.connect_timeout,
            this.connector
                .connect(Arc::clone(&closed), Arc::clone(&this.wake)),
        )
        .await;
        match opened {
            Ok(Ok(conn)) => {
                let id = this.next_id.fetch_add(1, Ordering::Relaxed);
                this.slots[index].put(Live { conn, id, closed });
                delay = BACKOFF_MIN;
                this.set_backoff(false, None);
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no connection within {:?}", this.connect_timeout),
                };
                let pause = jitter(delay);
                this.set_backoff(false, Some(Instant::now() + pause));
                tracing::warn!(%error, retry_in = ?pause, "cannot connect to Redis");
                delay = (delay * 2).min(BACKOFF_MAX);
                drop(this);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Sends `AUTH` with fresh credentials on every live connection ahead of each expiry, and
/// retires a connection that refuses them. Ends with the store, or when the credentials say
/// they never expire.
async fn reauthenticate(shared: Weak<Shared>) {
    let mut expires_at = None;
    loop {
        let Some(refresh) = shared
            .upgrade()
            .and_then(|this| this.connector.reauthentication().cloned())
        else {
            return;
        };
        let Some(pause) = refresh.wait(expires_at) else {
            if expires_at.is_some() {
                return;
            }
            // First round: learn when the current credentials expire.
            match refresh.current().await {
                Ok(c) if c.expires_at.is_some() => expires_at = c.expires_at,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "credentials provider failed");
                    tokio::time::sleep(BACKOFF_MAX).await;
                }
            }
            continue;
        };
        tokio::time::sleep(pause).await;
        let fresh = match refresh.current().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "credentials provider failed; live connections keep the old credentials");
                continue;
            }
        };
        let Some(this) = shared.upgrade() else { return };
        for (index, slot) in this.slots.iter().enumerate() {
            let Some(live) = slot.current() else { continue };
            let mut auth = redis::cmd("AUTH");
            // The same user as at connect time: the provider's, else the configured one.
            if let Some(user) = fresh.username.as_deref().or(this.connector.username()) {
                auth.arg(user);
            }
            auth.arg(&fresh.password);
            let mut conn = live.conn.clone();
            let sent =
                tokio::time::timeout(this.command_timeout, auth.query_async::<()>(&mut conn));
            if !matches!(sent.await, Ok(Ok(()))) {
                this.retire_id(index, live.id, "re-authentication failed");
            }
        }
        match fresh.expires_at {
            Some(at) => expires_at = Some(at),
            None => return,
        }
    }
}

/// Between half and all of `delay`, so that app servers do not reconnect in step.
fn jitter(delay: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let r = getrandom::fill(&mut byte).map_or(255, |()| byte[0]);
    delay / 2 + delay / 2 * u32::from(r) / 255
}

/// A failure that says the connection (or the server behind it) cannot serve us any more.
fn connection_failed(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_unrecoverable_error()
        || e.is_connection_dropped()
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
}

/// Transport trouble and a server that cannot serve now mean "unavailable" (503), saying
/// whether the command was sent; anything else means the data at the key is not a session
/// of ours.
pub(crate) fn classify(e: RedisError) -> SessionError {
    if e.is_connection_refusal() {
        return SessionError::Unavailable(StoreError::Connect(e.to_string()));
    }
    if e.is_io_error() {
        return SessionError::Unavailable(StoreError::Dropped(e.to_string()));
    }
    // A pipeline reports its first failed command's error.
    let e = StoreError::from(e);
    let StoreError::Server(server) = &e else {
        return SessionError::Unavailable(e);
    };
    let transient = matches!(
        server.code(),
        None | Some(
            "OOM"
                | "LOADING"
                | "READONLY"
                | "MASTERDOWN"
                | "CLUSTERDOWN"
                | "TRYAGAIN"
                | "BUSY"
                | "MOVED"
                | "ASK"
                | "NOAUTH"
                | "WRONGPASS"
                | "NOPERM"
        )
    );
    if transient {
        SessionError::Unavailable(e)
    } else {
        SessionError::Corrupt(e.to_string())
    }
}
