//! Cookies whose sessions the task refreshed a moment ago, readable without a lock: a
//! request that carries one again needs no refresh (the task would drop it as too small a
//! step), so it skips the queue, its lock and its copy.
//!
//! Only the task writes, after Redis took a refresh. A slot names a cookie by its first
//! bytes, which begin with the random token, so only a session's own cookies match it. A
//! slot read while the task rewrites it reads as empty (see [`Recent::covers`]), and a slot
//! another cookie took over names that one: either way the request is queued as it would be
//! without this table.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Slots of the table (a power of two): 64 KiB per store.
const SLOTS: usize = 4096;

/// A cookie (by its first bytes) and until when requests carrying it need no refresh.
#[derive(Default)]
struct Slot {
    head: AtomicU64,
    until: AtomicI64,
}

pub(super) struct Recent {
    slots: Box<[Slot]>,
    /// Mixed into slot positions.
    seed: u64,
}

impl Recent {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            seed,
        }
    }

    fn slot(&self, head: u64) -> &Slot {
        &self.slots[super::slot_of(head, self.seed, SLOTS) % SLOTS]
    }

    /// Whether a request made at `at` (ms) carrying the cookie that starts with `head`
    /// needs no refresh.
    pub(super) fn covers(&self, head: u64, at: i64) -> bool {
        let slot = self.slot(head);
        // The writer clears `until`, then sets `head`, then `until`: a reader that sees a
        // `head` and then that `head` again saw either that cookie's `until` or zero.
        let before = slot.head.load(Ordering::Acquire);
        let until = slot.until.load(Ordering::Acquire);
        let after = slot.head.load(Ordering::Relaxed);
        before == head && after == head && at < until
    }

    /// Notes that requests carrying the cookie that starts with `head` need no refresh
    /// before `until` (ms). Called by the task alone.
    pub(super) fn publish(&self, head: u64, until: i64) {
        let slot = self.slot(head);
        slot.until.store(0, Ordering::Relaxed);
        slot.head.store(head, Ordering::Release);
        slot.until.store(until, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn covers_a_published_cookie_until_its_time_only() {
        let recent = Recent::new(7);
        assert!(!recent.covers(42, 1_000), "nothing published yet");
        recent.publish(42, 2_000);
        assert!(recent.covers(42, 1_999));
        assert!(!recent.covers(42, 2_000), "due again");
        assert!(!recent.covers(43, 1_000), "another cookie");
        // A head that takes the slot over: the first one is queued again.
        let rival = (0..1_000_000u64)
            .find(|&h| h != 42 && std::ptr::eq(recent.slot(h), recent.slot(42)))
            .expect("a head in the same slot");
        recent.publish(rival, 3_000);
        assert!(!recent.covers(42, 1_000));
        assert!(recent.covers(rival, 1_000));
    }
}
