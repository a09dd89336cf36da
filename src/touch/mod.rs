//! Sliding expiry for requests that carry a session cookie but never read the session.
//!
//! Such a request must not wait for Redis, yet its session must not expire while the user is
//! active. The layer hands its cookie headers, unverified, to a background task through a
//! bounded queue, and goes on. The task gathers what arrives for a moment, checks each
//! distinct cookie once (MAC, then the new expiry from the creation time signed into it:
//! nothing is sent for a cookie that does not verify), keeps one refresh per session, drops refreshes
//! that would move an expiry by less than a tenth of the remaining lifetime (at most a
//! second) since the last one it sent, and sends the rest as one pipeline of `PEXPIRE`s.
//! The cookies it refreshed are published to the requests, which then queue nothing for them
//! until such a step has passed.
//! When the queue is full a refresh is skipped, never waited for: the session still has the
//! rest of its idle timeout, and the next request refreshes it. Redis therefore sees at most
//! one pipeline per gathering window, whatever the request rate.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use queue::Queue;

use crate::backend::{now_ms, Backend, Lifetimes};
use crate::cookie::{CarriedValue, CookieCodec, Detached, Verified};
use crate::observe::{count, observed};
use crate::token::{StoreKey, Token, UserHandle};

mod queue;
mod recent;

/// One refresh asked for.
enum Touch {
    /// The session of this (verified) token should expire at this moment (ms).
    Token(Token, i64),
    /// The cookie a request carried at this moment (ms), not verified yet.
    Carried(Detached, i64),
    /// A session of this user was used: their index must outlive it.
    Index(UserHandle),
}

/// How long the task gathers refreshes before sending them.
const GATHER: Duration = Duration::from_millis(20);
/// Expiries moved by less than this are not sent again.
const MAX_STEP_MS: i64 = 1000;
/// Sessions remembered as recently refreshed; the memory is cleared when it grows past this.
const RECENT: usize = 100_000;
/// Cookies remembered as checked (valid or not); the memory is cleared past this.
const CHECKED: usize = 10_000;

/// The sending side, owned by the store.
pub(crate) struct Toucher {
    queue: Arc<Queue>,
}

impl Toucher {
    /// Makes the queue (each lane holding at most `capacity` refreshes); the task starts
    /// with [`TouchWorker::start`].
    pub(crate) fn new(capacity: usize) -> (Self, TouchWorker) {
        let queue = Arc::new(Queue::new(capacity));
        let worker = TouchWorker {
            queue: Arc::clone(&queue),
        };
        (Self { queue }, worker)
    }

    /// Queues a refresh: the session of `token` should expire at `deadline_ms`. Never waits.
    pub(crate) fn touch(&self, token: Token, deadline_ms: i64) {
        self.send(Touch::Token(token, deadline_ms));
    }

    /// Queues the keep-alive of a user's index (a session of theirs was read). Never waits.
    pub(crate) fn touch_index(&self, user: UserHandle) {
        self.send(Touch::Index(user));
    }

    /// Queues the refresh of the session a request's cookie names, if it verifies; the
    /// request was made at `at_ms`. Never waits.
    pub(crate) fn touch_carried(&self, carried: CarriedValue<'_>, at_ms: i64) {
        match carried {
            CarriedValue::One(value) => self.queue.push_value(value, at_ms),
            CarriedValue::Several(values) => self.send(Touch::Carried(values, at_ms)),
        }
    }

    fn send(&self, touch: Touch) {
        self.queue.push(touch);
    }
}

impl Drop for Toucher {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// The receiving side, run on the Tokio runtime that built the store.
pub(crate) struct TouchWorker {
    queue: Arc<Queue>,
}

/// A cookie that verified, and its session's store key.
struct Known {
    verified: Verified,
    key: StoreKey,
}

/// What the worker needs to check a cookie and compute its session's expiry.
pub(crate) struct Checker {
    pub(crate) codec: CookieCodec,
    pub(crate) lifetimes: Lifetimes,
}

/// The slot of a cookie that starts with `head` in a table of `slots` (a power of two), mixed
/// with `seed` so that nobody can aim cookies at one slot.
fn slot_of(head: u64, seed: u64, slots: usize) -> usize {
    let mixed = (head ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> (64 - slots.trailing_zeros())) as usize
}

/// Keeps the later of `at` and what `map` holds for `key`.
fn latest_of<K: std::hash::Hash + Eq>(map: &mut HashMap<K, i64>, key: K, at: i64) {
    let slot = map.entry(key).or_insert(at);
    *slot = (*slot).max(at);
}

impl TouchWorker {
    /// Runs until the store (the last strong reference to `backend`) is dropped.
    pub(crate) fn start(self, backend: Weak<Backend>, prefix: String, checker: Checker) {
        tokio::spawn(self.run(backend, prefix, checker));
    }

    async fn run(self, backend: Weak<Backend>, prefix: String, checker: Checker) {
        let mut queued = Vec::new();
        let mut latest: HashMap<StoreKey, i64> = HashMap::new();
        // A window's refreshes, one per token and one per cookie before any is hashed.
        let mut tokens: HashMap<Token, i64> = HashMap::new();
        let mut carried: HashMap<Detached, i64> = HashMap::new();
        let mut sent: HashMap<StoreKey, i64> = HashMap::new();
        // A cookie is checked once, not once per gathering window: the same bytes verify the
        // same way under the same keys, and name the same store key.
        let mut checked: HashMap<Detached, Option<Known>> = HashMap::new();
        // The cookies of this window's refreshes (first bytes), and until when they need none.
        let mut refreshed: Vec<(u64, i64)> = Vec::new();
        // Users whose index must outlive a session in use, and the expiry last sent for each.
        let mut users: Vec<UserHandle> = Vec::new();
        let mut kept: HashMap<UserHandle, i64> = HashMap::new();
        while self.queue.arrival().await {
            tokio::time::sleep(GATHER).await;
            let merged = self.queue.drain_into(&mut queued);
            let asked = queued.len() + merged;
            let now = now_ms();
            if sent.len() > RECENT {
                sent.clear();
            }
            let step = |deadline: i64| ((deadline - now) / 10).min(MAX_STEP_MS);
            // Keeps the latest deadline per session, unless the last one sent is close enough;
            // whether it will be sent.
            let mut keep = |key: &StoreKey, deadline: i64| {
                if let Some(slot) = latest.get_mut(key) {
                    *slot = (*slot).max(deadline);
                    return true;
                }
                let sending = sent
                    .get(key)
                    .is_none_or(|last| deadline - last >= step(deadline));
                if sending {
                    latest.insert(key.clone(), deadline);
                }
                sending
            };
            let mut index_asks = 0;
            for touch in queued.drain(..) {
                match touch {
                    Touch::Token(token, deadline) => latest_of(&mut tokens, token, deadline),
                    Touch::Carried(cookie, at) => latest_of(&mut carried, cookie, at),
                    Touch::Index(user) => {
                        index_asks += 1;
                        users.push(user);
                    }
                }
            }
            for (token, deadline) in tokens.drain() {
                keep(&token.store_key(&prefix), deadline);
            }
            let lifetimes = &checker.lifetimes;
            if checked.len() > CHECKED {
                checked.clear();
            }
            let deadline = |v: &Verified, at: i64| {
                lifetimes.deadline_ms(lifetimes.idle(v.meta.idle_ms), v.meta.created_ms, at)
            };
            for (cookie, at) in carried.drain() {
                if cookie.is_single() {
                    let check = |cookie: &Detached| {
                        let verified = checker.codec.verify_single(cookie)?;
                        let key = verified.token.store_key(&prefix);
                        Some(Known { verified, key })
                    };
                    let head = Detached::head_of(cookie.as_bytes());
                    let known = checked.entry(cookie).or_insert_with_key(check);
                    if let Some(k) = known.as_ref().filter(|k| k.verified.is_current(at)) {
                        users.extend(k.verified.meta.user.clone());
                        let deadline = deadline(&k.verified, at);
                        // Until then, this cookie's requests ask for less than a step.
                        if let (true, Some(head)) = (keep(&k.key, deadline), head) {
                            refreshed.push((head, at.saturating_add(step(deadline))));
                        }
                    }
                } else if let Some(v) = checker.codec.verify_detached(&cookie, at) {
                    keep(&v.token.store_key(&prefix), deadline(&v, at));
                    users.extend(v.meta.user);
                }
            }
            let Some(backend) = backend.upgrade() else {
                break;
            };
            keep_indexes(&backend, &prefix, lifetimes, &mut users, &mut kept, now).await;
            let batch: Vec<(StoreKey, i64)> = latest.drain().collect();
            let skipped = asked.saturating_sub(index_asks + batch.len());
            count(
                "session_refreshes_total",
                &[("outcome", "skipped")],
                skipped as u64,
            );
            if batch.is_empty() {
                continue;
            }
            match observed!("refresh", None, backend.touch(&batch)) {
                Ok(()) => {
                    count(
                        "session_refreshes_total",
                        &[("outcome", "sent")],
                        batch.len() as u64,
                    );
                    sent.extend(batch);
                    for (head, until) in refreshed.drain(..) {
                        self.queue.recent.publish(head, until);
                    }
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
            refreshed.clear();
            drop::<Arc<Backend>>(backend);
        }
    }
}

/// Moves on the expiry of the indexes of `users` (drained) to an absolute timeout from now, at
/// most four times per absolute timeout for each: the index expires an absolute timeout after
/// its last change, which a session created before `absolute_timeout` was raised outlives.
async fn keep_indexes(
    backend: &Backend,
    prefix: &str,
    lifetimes: &Lifetimes,
    users: &mut Vec<UserHandle>,
    kept: &mut HashMap<UserHandle, i64>,
    now: i64,
) {
    if users.is_empty() {
        return;
    }
    if kept.len() > RECENT {
        kept.clear();
    }
    let absolute = i64::try_from(lifetimes.absolute_ms).unwrap_or(i64::MAX);
    let until = now.saturating_add(absolute);
    let step = (absolute / 4).max(MAX_STEP_MS);
    let mut batch = Vec::new();
    for user in users.drain(..) {
        if kept.get(&user).is_none_or(|last| until - last >= step) {
            kept.insert(user.clone(), until);
            batch.push((user.keys(prefix), until));
        }
    }
    if batch.is_empty() {
        return;
    }
    if let Err(e) = observed!("refresh", None, backend.keep_indexes(&batch)) {
        tracing::warn!(error = %e, users = batch.len(), "user index expiry refresh failed");
        for (keys, _) in &batch {
            // Sent again with the next session used.
            kept.retain(|user, _| user.keys(prefix).index != keys.index);
        }
    }
}
