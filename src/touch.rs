//! Sliding expiry for requests that carry a session cookie but never read the session.
//!
//! Such a request must not wait for Redis, yet its session must not expire while the user is
//! active. The layer hands its cookie headers, unverified, to a background task through a
//! bounded queue, and goes on. The task gathers what arrives for a moment, checks each
//! distinct cookie once (MAC, then the new expiry from the creation time signed into it:
//! nothing is sent for a cookie that does not verify), keeps one refresh per session, drops refreshes
//! that would move an expiry by less than a tenth of the remaining lifetime (at most a
//! second) since the last one it sent, and sends the rest as one pipeline of `PEXPIRE`s.
//! When the queue is full a refresh is skipped, never waited for: the session still has the
//! rest of its idle timeout, and the next request refreshes it. Redis therefore sees at most
//! one pipeline per gathering window, whatever the request rate.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::cookie::{Carried, CookieCodec};
use crate::observe::{count, observe};
use crate::store::{now_ms, Backend, Lifetimes};
use crate::token::{StoreKey, Token};

/// One refresh asked for.
enum Touch {
    /// The session of this (verified) token should expire at this moment (ms).
    Token(Token, i64),
    /// The cookie a request carried at this moment (ms), not verified yet.
    Carried(Carried, i64),
}

/// Most refreshes sent in one pipeline.
const BATCH: usize = 4096;
/// How long the task gathers refreshes before sending them.
const GATHER: Duration = Duration::from_millis(20);
/// Expiries moved by less than this are not sent again.
const MAX_STEP_MS: i64 = 1000;
/// Sessions remembered as recently refreshed; the memory is cleared when it grows past this.
const RECENT: usize = 100_000;

/// The sending side, owned by the store.
pub(crate) struct Toucher {
    tx: mpsc::Sender<Touch>,
}

impl Toucher {
    /// Makes the queue; the task starts with [`TouchWorker::start`].
    pub(crate) fn new(capacity: usize) -> (Self, TouchWorker) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx }, TouchWorker { rx })
    }

    /// Queues a refresh: the session of `token` should expire at `deadline_ms`. Never waits.
    pub(crate) fn touch(&self, token: Token, deadline_ms: i64) {
        self.send(Touch::Token(token, deadline_ms));
    }

    /// Queues the refresh of the session a request's cookie names, if it verifies; the
    /// request was made at `at_ms`. Never waits.
    pub(crate) fn touch_carried(&self, carried: Carried, at_ms: i64) {
        self.send(Touch::Carried(carried, at_ms));
    }

    fn send(&self, touch: Touch) {
        if self.tx.try_send(touch).is_err() {
            tracing::debug!("session refresh queue full; skipping one refresh");
            count("session_refreshes_total", &[("outcome", "dropped")], 1);
        }
    }
}

/// The receiving side, run on the Tokio runtime that built the store.
pub(crate) struct TouchWorker {
    rx: mpsc::Receiver<Touch>,
}

/// What the worker needs to check a cookie and compute its session's expiry.
pub(crate) struct Checker {
    pub(crate) codec: CookieCodec,
    pub(crate) lifetimes: Lifetimes,
}

impl TouchWorker {
    /// Runs until the store (the last strong reference to `backend`) is dropped.
    pub(crate) fn start(self, backend: Weak<Backend>, prefix: String, checker: Checker) {
        tokio::spawn(self.run(backend, prefix, checker));
    }

    async fn run(mut self, backend: Weak<Backend>, prefix: String, checker: Checker) {
        let mut queued = Vec::with_capacity(BATCH);
        let mut latest: HashMap<Token, i64> = HashMap::new();
        let mut carried: HashMap<Carried, i64> = HashMap::new();
        let mut sent: HashMap<StoreKey, i64> = HashMap::new();
        while self.rx.recv_many(&mut queued, BATCH).await > 0 {
            tokio::time::sleep(GATHER).await;
            while queued.len() < BATCH {
                match self.rx.try_recv() {
                    Ok(item) => queued.push(item),
                    Err(_) => break,
                }
            }
            let queued_count = queued.len();
            let mut keep = |token: Token, deadline: i64| {
                let slot = latest.entry(token).or_insert(deadline);
                *slot = (*slot).max(deadline);
            };
            for touch in queued.drain(..) {
                match touch {
                    Touch::Token(token, deadline) => keep(token, deadline),
                    Touch::Carried(cookie, at) => {
                        let slot = carried.entry(cookie).or_insert(at);
                        *slot = (*slot).max(at);
                    }
                }
            }
            let lifetimes = &checker.lifetimes;
            for (cookie, at) in carried.drain() {
                if let Some(v) = checker.codec.verify_carried(&cookie, at) {
                    let idle = lifetimes.idle(v.meta.idle_ms);
                    keep(v.token, lifetimes.deadline_ms(idle, v.meta.created_ms, at));
                }
            }
            let Some(backend) = backend.upgrade() else {
                break;
            };
            let now = now_ms();
            if sent.len() > RECENT {
                sent.clear();
            }
            let asked = queued_count;
            let batch: Vec<(StoreKey, i64)> = latest
                .drain()
                .map(|(token, deadline)| (token.store_key(&prefix), deadline))
                .filter(|(key, deadline)| {
                    let step = ((deadline - now) / 10).min(MAX_STEP_MS);
                    sent.get(key).is_none_or(|last| deadline - last >= step)
                })
                .collect();
            let skipped = asked.saturating_sub(batch.len());
            count(
                "session_refreshes_total",
                &[("outcome", "skipped")],
                skipped as u64,
            );
            if batch.is_empty() {
                continue;
            }
            match observe("refresh", None, backend.touch(&batch)).await {
                Ok(()) => {
                    count(
                        "session_refreshes_total",
                        &[("outcome", "sent")],
                        batch.len() as u64,
                    );
                    sent.extend(batch);
                }
                Err(e) => {
                    count(
                        "session_refreshes_total",
                        &[("outcome", "dropped")],
                        batch.len() as u64,
                    );
                    tracing::warn!(error = %e, sessions = batch.len(), "session expiry refresh failed")
                }
            }
            drop::<Arc<Backend>>(backend);
        }
    }
}
