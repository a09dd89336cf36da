//! Sliding expiry for requests that carry a session cookie but never read the session.
//!
//! Such a request must not wait for Redis, yet its session must not expire while the user is
//! active. The layer hands the store key and the new expiry (computed from the creation time
//! signed into the cookie) to a background task through a bounded queue; the task batches
//! what is waiting, drops duplicates, and sends one pipeline of `PEXPIRE`s. When the queue is full the touch is skipped: the session still has the rest of
//! its idle timeout, and the next request touches it again. Load on Redis is therefore at most
//! one pipeline per batch, however many requests arrive.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use crate::builder::StoreInner;
use crate::token::StoreKey;

/// Most keys refreshed in one pipeline.
const BATCH: usize = 256;

/// The sending side, owned by the store.
pub(crate) struct Toucher {
    tx: mpsc::Sender<(StoreKey, i64)>,
}

impl Toucher {
    /// Starts the background task. It ends when the store is dropped.
    pub(crate) fn spawn(capacity: usize) -> (Self, TouchWorker) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx }, TouchWorker { rx })
    }

    /// Queues a refresh: `key` should expire at `deadline_ms`. Never waits.
    pub(crate) fn touch(&self, key: StoreKey, deadline_ms: i64) {
        if self.tx.try_send((key, deadline_ms)).is_err() {
            tracing::debug!("session touch queue full; skipping one refresh");
        }
    }
}

/// The receiving side, run on the Tokio runtime that built the store.
pub(crate) struct TouchWorker {
    rx: mpsc::Receiver<(StoreKey, i64)>,
}

impl TouchWorker {
    pub(crate) fn start(self, store: Weak<StoreInner>) {
        tokio::spawn(self.run(store));
    }

    async fn run(mut self, store: Weak<StoreInner>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut latest = HashMap::with_capacity(BATCH);
        while self.rx.recv_many(&mut batch, BATCH).await > 0 {
            // One refresh per key: the latest deadline wins.
            latest.clear();
            for (key, deadline) in batch.drain(..) {
                let slot = latest.entry(key).or_insert(deadline);
                *slot = (*slot).max(deadline);
            }
            batch.extend(latest.drain());
            let Some(store) = store.upgrade() else { break };
            if let Err(e) = store.backend.touch(&batch).await {
                tracing::warn!(error = %e, keys = batch.len(), "session expiry refresh failed");
            }
            drop::<Arc<StoreInner>>(store);
            batch.clear();
        }
    }
}
