//! A user's sessions: the index that logins keep (`user.lua`), checked in bounded steps so
//! that it holds only sessions that can still be alive, and "end one" / "end all".
//!
//! An index entry's score is the session's expiry as last written or checked. Reads never
//! touch the index (that would cost every request of a logged-in user a write on another
//! node), so an entry past its score is only *stale*: its session may have expired, or been
//! used since. Stale entries are checked against their sessions, a bounded number at a time
//! (by each login, and by listing and "end all" until none is left): gone ones are dropped,
//! live ones get their real expiry. No entry is ever dropped on its score alone, whatever
//! the timeouts were when it was written.

use std::time::Duration;

use crate::backend::{now_ms, IndexOp, Indexed, Probed};
use crate::error::SessionError;
use crate::events::{SessionEvent, SessionEventKind};
use crate::observe::observed;
use crate::store::StoreInner;
use crate::token::UserKeys;

/// What a login does when its user already has as many sessions as
/// [`SessionStoreBuilder::max_sessions_per_user`](crate::SessionStoreBuilder::max_sessions_per_user)
/// allows. Sessions being ended do not count, nor does the one logging in.
///
/// ```
/// use tower_redis_session::{SessionLimit, SessionStore};
///
/// let builder = SessionStore::builder().max_sessions_per_user(3, SessionLimit::EndOldest);
/// # let _ = builder;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionLimit {
    /// The login goes ahead and the user's oldest sessions (by creation) are ended.
    EndOldest,
    /// The login fails with [`SessionError::TooManySessions`] (the user has to log out
    /// elsewhere first).
    RefuseNew,
}

impl SessionLimit {
    /// The policy's name in `user.lua`.
    pub(crate) fn as_arg(self) -> &'static str {
        match self {
            Self::EndOldest => "oldest",
            Self::RefuseNew => "refuse",
        }
    }
}

/// Stale entries checked per step by listing and "end all".
const STEP: usize = 256;

/// Stale entries a login checks (its index step returns them).
pub(crate) const LOGIN_STEP: usize = 16;

/// Steps one listing or "end all" takes at most (a million stale entries).
const MAX_STEPS: usize = 1_000_000 / STEP;

impl StoreInner {
    /// When a user's index may expire if nothing changes it: no session indexed so far can
    /// live past its absolute timeout from now.
    pub(crate) fn index_until(&self, now: i64) -> i64 {
        let absolute = i64::try_from(self.lifetimes.absolute_ms).unwrap_or(i64::MAX);
        now.saturating_add(absolute)
    }

    /// Checks stale entries against their sessions: drops those whose session is gone or
    /// ended, moves the others' scores to their expiry, and reports each one gone as
    /// [`Expired`](SessionEventKind::Expired) once its entry is dropped.
    pub(crate) async fn settle(
        &self,
        user_id: &str,
        keys: &UserKeys,
        stale: Vec<Indexed>,
    ) -> Result<(), SessionError> {
        if stale.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let session_keys: Vec<_> = stale.iter().map(|e| e.key.clone()).collect();
        let probed = observed!("probe", None, self.backend.probe(&session_keys, now))?;
        // Ended sessions' entries go too, but only expired ones are reported: an ended one
        // was reported when it was ended.
        let gone: Vec<_> = stale
            .iter()
            .zip(&probed)
            .filter(|(_, p)| **p == Probed::Gone)
            .map(|(e, _)| e.id)
            .collect();
        let entries: Vec<Indexed> = stale
            .into_iter()
            .zip(probed)
            .map(|(e, probed)| Indexed {
                score_ms: match probed {
                    Probed::Live(expires) => expires,
                    Probed::Ended | Probed::Gone => 0,
                },
                ..e
            })
            .collect();
        let op = IndexOp::Settle {
            now_ms: now,
            until_ms: self.index_until(now),
            entries,
        };
        observed!("index", None, self.backend.index(keys, op))?;
        // (An entry dropped by another caller at once may be reported twice.)
        for id in gone {
            let event = || SessionEvent::new(SessionEventKind::Expired, id, Some(user_id.into()));
            self.events.emit(event);
        }
        Ok(())
    }

    /// Checks the user's stale entries in steps until none is left.
    pub(crate) async fn prune(&self, user_id: &str, keys: &UserKeys) -> Result<(), SessionError> {
        for _ in 0..MAX_STEPS {
            let op = IndexOp::Stale {
                now_ms: now_ms(),
                n: STEP,
            };
            let stale = observed!("index", None, self.backend.index(keys, op))?.stale;
            let full = stale.len() == STEP;
            self.settle(user_id, keys, stale).await?;
            if !full {
                break;
            }
        }
        Ok(())
    }

    /// Ends the sessions of entries marked to end (each becomes an ended marker for as long
    /// as a cookie could be valid), then drops the entries. Every session is attempted; an
    /// entry whose session could not be ended stays marked, so that a repeat ends it. A key
    /// that holds nothing gets no marker, unless the entry is within its score (a login may
    /// be creating its session right now). Returns how many live sessions were ended, and
    /// reports each to the application's hook.
    pub(crate) async fn end_entries(
        &self,
        user_id: &str,
        keys: &UserKeys,
        entries: Vec<Indexed>,
    ) -> Result<usize, SessionError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let marker_ttl = Duration::from_millis(self.lifetimes.idle_ms);
        let session_keys: Vec<_> = entries
            .iter()
            .map(|e| (e.key.clone(), e.score_ms >= now))
            .collect();
        let ended = observed!(
            "end_many",
            None,
            self.backend.end_many(&session_keys, marker_ttl),
        )?;
        // The sessions are ended from here on, whatever becomes of their entries.
        let mut n = 0;
        for (e, live) in entries.iter().zip(ended) {
            if live {
                n += 1;
                let event =
                    || SessionEvent::new(SessionEventKind::Ended, e.id, Some(user_id.into()));
                self.events.emit(event);
            }
        }
        let remove = entries.into_iter().map(|e| (e.id, e.key)).collect();
        observed!(
            "index",
            None,
            self.backend.index(keys, IndexOp::Remove(remove))
        )?;
        Ok(n)
    }
}
