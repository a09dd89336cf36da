//! The queue between responses and the refresh task: one lane per thread (so that two
//! threads never contend on a response), and in each lane a small table of the cookies seen
//! since the task last looked, so that a cookie that comes back (a page and its assets, a
//! polling client) costs a comparison instead of a copy. A cookie whose session was refreshed
//! a moment ago does not even take the lock (see [`Recent`]).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::recent::Recent;
use super::Touch;
use crate::cookie::Detached;
use crate::observe::count;

/// Lanes of the queue. A thread always queues in the same lane.
const LANES: usize = 8;
/// Slots in a lane's table of cookies (a power of two).
const SLOTS: usize = 256;

/// A cookie seen since the task last looked, and when the latest request carried it.
struct Seen {
    cookie: Detached,
    at: i64,
}

#[derive(Default)]
struct LaneState {
    /// Cookies by their first bytes; allocated with the lane's first cookie.
    table: Vec<Option<Seen>>,
    /// Everything else, in arrival order (at most the queue's capacity).
    queued: Vec<Touch>,
    /// Refreshes waiting in this lane.
    pending: usize,
    /// Refreshes merged into one already in the table (counted as skipped).
    merged: usize,
}

/// One lane, alone on its cache lines: two threads queueing in two lanes share nothing.
#[repr(align(128))]
#[derive(Default)]
struct Lane {
    state: Mutex<LaneState>,
    /// Refreshes not needed (their cookie is in [`Recent`]), counted as skipped.
    covered: AtomicUsize,
}

/// The lane of the current thread.
fn own_lane() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static LANE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % LANES;
    }
    LANE.with(|lane| *lane)
}

pub(super) struct Queue {
    lanes: [Lane; LANES],
    /// Cookies refreshed a moment ago; written by the task.
    pub(super) recent: Recent,
    /// Most refreshes one lane holds besides its table.
    capacity: usize,
    /// Mixed into table positions, so that nobody can aim cookies at one slot.
    seed: u64,
    /// The task is waiting for a refresh to arrive (and must be woken for it).
    idle: AtomicBool,
    /// The store is gone: the task ends.
    closed: AtomicBool,
    wake: Notify,
}

impl Queue {
    pub(super) fn new(capacity: usize) -> Self {
        let random = std::hash::RandomState::new();
        Self {
            lanes: Default::default(),
            recent: Recent::new(random.hash_one(SLOTS)),
            capacity,
            seed: random.hash_one(LANES),
            idle: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn lane(&self, index: usize) -> MutexGuard<'_, LaneState> {
        // Every change to a lane leaves it whole: a poisoned lock is still usable.
        self.lanes[index % LANES]
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a refresh. Never waits.
    pub(super) fn push(&self, touch: Touch) {
        let mut lane = self.lane(own_lane());
        self.queue(&mut lane, touch);
    }

    /// Queues the refresh of the session a request's single cookie `value` names, made at
    /// `at`. A value refreshed a moment ago costs a look at [`Recent`]; one the lane's table
    /// holds already, a comparison. Never waits.
    pub(super) fn push_value(&self, value: &[u8], at: i64) {
        let head = Detached::head_of(value);
        let own = own_lane();
        if head.is_some_and(|head| self.recent.covers(head, at)) {
            // Ordered against the task's look in `arrival`, as the lane's lock orders `pending`.
            self.lanes[own % LANES]
                .covered
                .fetch_add(1, Ordering::SeqCst);
            return self.wake_idle();
        }
        let (Some(head), Some(cookie)) = (head, Detached::inline(value)) else {
            return self.push(Touch::Carried(Detached::copy_of(value), at));
        };
        let slot = self.slot(head);
        let mut lane = self.lane(own);
        if lane.table.is_empty() {
            lane.table.resize_with(SLOTS, || None);
        }
        let evicted = match lane.table.get_mut(slot) {
            Some(Some(seen)) if seen.cookie.as_bytes() == value => {
                // Queued already, and the task has not looked yet.
                seen.at = seen.at.max(at);
                lane.merged += 1;
                return;
            }
            Some(entry) => entry.replace(Seen {
                cookie: cookie(),
                at,
            }),
            None => Some(Seen {
                cookie: cookie(),
                at,
            }),
        };
        match evicted {
            Some(seen) => self.queue(&mut lane, Touch::Carried(seen.cookie, seen.at)),
            None => self.announce(&mut lane),
        }
    }

    /// Adds `touch` to the lane's list, unless it is full.
    fn queue(&self, lane: &mut LaneState, touch: Touch) {
        if lane.queued.len() < self.capacity {
            lane.queued.push(touch);
        } else {
            tracing::debug!("session refresh queue full; skipping one refresh");
            count("session_refreshes_total", &[("outcome", "dropped")], 1);
        }
        self.announce(lane);
    }

    /// Notes a refresh waiting in `lane`, and wakes the task if it is waiting.
    fn announce(&self, lane: &mut LaneState) {
        lane.pending += 1;
        self.wake_idle();
    }

    /// Wakes the task if it is waiting.
    fn wake_idle(&self) {
        // Read first: while the task is gathering, a response touches no shared cache line.
        if self.idle.load(Ordering::SeqCst) && self.idle.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    fn slot(&self, head: u64) -> usize {
        super::slot_of(head, self.seed, SLOTS)
    }

    /// Moves every queued refresh into `out` (the lanes keep their allocations); how many
    /// more were merged into those or not needed.
    pub(super) fn drain_into(&self, out: &mut Vec<Touch>) -> usize {
        let mut merged = 0;
        for index in 0..LANES {
            merged += self.lanes[index].covered.swap(0, Ordering::Relaxed);
            let mut lane = self.lane(index);
            if lane.pending == 0 {
                continue;
            }
            lane.pending = 0;
            merged += std::mem::take(&mut lane.merged);
            out.append(&mut lane.queued);
            let seen = lane.table.iter_mut().filter_map(Option::take);
            out.extend(seen.map(|seen| Touch::Carried(seen.cookie, seen.at)));
        }
        merged
    }

    /// Waits until a refresh is queued; `false` once the store is gone.
    pub(super) async fn arrival(&self) -> bool {
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return false;
            }
            // Announce the wait before looking: a refresh queued after the look sees it and
            // wakes the task (a wake-up with nothing to do only costs a round of this loop).
            self.idle.store(true, Ordering::SeqCst);
            let waiting = |index: usize| {
                self.lanes[index].covered.load(Ordering::SeqCst) > 0 || self.lane(index).pending > 0
            };
            if (0..LANES).any(waiting) {
                self.idle.store(false, Ordering::SeqCst);
                return true;
            }
            self.wake.notified().await;
        }
    }

    /// The store is gone: ends the task.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::{Queue, Touch};

    #[test]
    fn a_cookie_refreshed_a_moment_ago_skips_the_queue() {
        let queue = Queue::new(16);
        let value = b"first-bytes-of-a-cookie";
        let head = crate::cookie::Detached::head_of(value).expect("long enough");
        queue.recent.publish(head, 2_000);
        queue.push_value(value, 1_000);
        let mut out = Vec::new();
        assert_eq!(queue.drain_into(&mut out), 1, "counted as skipped");
        assert!(out.is_empty());
        queue.push_value(value, 2_000);
        assert_eq!(queue.drain_into(&mut out), 0);
        assert!(matches!(out.as_slice(), [Touch::Carried(c, 2_000)] if c.as_bytes() == value));
    }
}
