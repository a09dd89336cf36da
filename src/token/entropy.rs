//! Random bytes from the operating system's CSPRNG, read a kilobyte at a time.
//!
//! Every new session needs 42 random bytes (its token and its public id). A `getrandom`
//! system call per session would be the dearest part of making its token, so each thread
//! reads enough for about 24 sessions at once and hands them out in order. The bytes are the
//! OS's own, unchanged (no userspace generator stretches them); each is used once and zeroed
//! as it is handed out, so the buffer never holds a token that was issued.
//!
//! A forked child would inherit its parent's unused bytes; tokio's runtimes do not survive a
//! fork, so no session is made in a forked copy of a thread that made one.

use std::cell::RefCell;

/// Bytes read from the OS at once.
const POOL: usize = 1024;

struct Pool {
    bytes: [u8; POOL],
    /// Where the bytes not handed out yet start.
    next: usize,
}

thread_local! {
    static POOL_OF_THREAD: RefCell<Pool> = const {
        RefCell::new(Pool { bytes: [0; POOL], next: POOL })
    };
}

/// Fills `out` with fresh random bytes from the OS.
pub(crate) fn fill(out: &mut [u8]) -> Result<(), getrandom::Error> {
    if out.len() > POOL {
        return getrandom::fill(out);
    }
    POOL_OF_THREAD.with_borrow_mut(|pool| {
        if POOL - pool.next < out.len() {
            getrandom::fill(&mut pool.bytes)?;
            pool.next = 0;
        }
        let taken = &mut pool.bytes[pool.next..pool.next + out.len()];
        out.copy_from_slice(taken);
        taken.fill(0);
        pool.next += out.len();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_never_repeat_and_cross_refills() {
        let mut seen = std::collections::HashSet::new();
        // Three refills' worth of draws of a session's size.
        for _ in 0..3 * POOL / 42 {
            let mut bytes = [0u8; 42];
            fill(&mut bytes).unwrap();
            assert!(seen.insert(bytes), "a draw repeated");
        }
        let mut big = [0u8; POOL + 1];
        fill(&mut big).unwrap();
        assert_ne!(big, [0u8; POOL + 1]);
    }

    #[test]
    fn handed_out_bytes_are_zeroed_in_the_pool() {
        let mut bytes = [0u8; 42];
        fill(&mut bytes).unwrap();
        POOL_OF_THREAD.with_borrow(|pool| {
            assert!(pool.next >= 42);
            assert!(pool.bytes[..pool.next].iter().all(|&b| b == 0));
        });
    }
}
