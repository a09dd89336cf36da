//! Lifecycle events: a hook the application registers with
//! [`SessionStoreBuilder::on_event`](crate::SessionStoreBuilder::on_event), called once a
//! session was created, logged in, given a new secret, logged out or ended.
//!
//! The hook runs after the store confirmed the change, on the task of the request (or of the
//! [`SessionStore`](crate::SessionStore) call) that made it, before that returns. A hook that
//! panics never fails the request: the panic is caught and logged (unless the application is
//! built with `panic = "abort"`). Without a hook, an event costs one `Option` check.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// What happened to a session, in a [`SessionEvent`].
///
/// More kinds may come: match with a `_` arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionEventKind {
    /// A new session was first stored: by the first write of a request without one, an
    /// [`incr`](crate::Session::incr), or a [`login`](crate::Session::login) that starts a
    /// session (reported as `Created`, then `LoggedIn`).
    Created,
    /// [`Session::login`](crate::Session::login) bound the session to the event's user (and
    /// gave it a new secret). A login as another user than the session's own ends the old
    /// session (`Destroyed`, with the old id and user) and starts a new one (`Created`, then
    /// `LoggedIn`, with the new id).
    LoggedIn,
    /// [`Session::regenerate`](crate::Session::regenerate) gave the session a new secret; its
    /// public id stays.
    Regenerated,
    /// A request holding the session ended it: [`Session::logout`](crate::Session::logout) or
    /// [`destroy`](crate::Session::destroy) (only if the session was still live), or a login as
    /// another user.
    Destroyed,
    /// The store ended it on the application's word:
    /// [`SessionStore::end_session`](crate::SessionStore::end_session) or
    /// [`end_user_sessions`](crate::SessionStore::end_user_sessions) (one event per live
    /// session), or a login past
    /// [`max_sessions_per_user`](crate::SessionStoreBuilder::max_sessions_per_user).
    Ended,
    /// A logged-in session expired (idle or absolute timeout, or evicted). Reported late: when
    /// its user's index is next checked (by a login, a listing or "end all"), which finds
    /// the session gone; no keyspace notifications needed, so it works on every deployment.
    /// Sessions never logged in are not reported (their keys name no user or public id).
    Expired,
}

/// One lifecycle event of a session, handed to the hook registered with
/// [`SessionStoreBuilder::on_event`](crate::SessionStoreBuilder::on_event).
///
/// It never holds the session's secret: only its public id (as [`Session::id`] gives it),
/// which is safe to log.
///
/// [`Session::id`]: crate::Session::id
///
/// ```
/// use std::sync::mpsc;
/// use tower_redis_session::{SessionEvent, SessionEventKind, SessionStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_redis_session::ConfigError> {
/// let (audit, log) = mpsc::channel::<String>();
/// let store = SessionStore::builder()
///     .memory()
///     .signing_keys([[7u8; 32]])
///     // Runs on the request's task: hand the event on rather than wait for anything.
///     .on_event(move |event: &SessionEvent| {
///         let user = event.user_id.as_deref().unwrap_or("-");
///         let line = match event.kind {
///             SessionEventKind::LoggedIn => format!("login {user} {}", event.id),
///             SessionEventKind::Destroyed => format!("logout {user} {}", event.id),
///             _ => return,
///         };
///         let _ = audit.send(line);
///     })
///     .build()
///     .await?;
/// # let _ = (store, log);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionEvent {
    /// What happened.
    pub kind: SessionEventKind,
    /// The session's public id (for a login that started a new session, the new one's).
    pub id: uuid::Uuid,
    /// The user the session is bound to ([`Session::login`](crate::Session::login)), where
    /// known: `None` for a session nobody logged in to.
    pub user_id: Option<String>,
}

impl SessionEvent {
    pub(crate) fn new(kind: SessionEventKind, id: uuid::Uuid, user_id: Option<String>) -> Self {
        Self { kind, id, user_id }
    }
}

/// The hook of [`SessionStoreBuilder::on_event`](crate::SessionStoreBuilder::on_event).
type Hook = dyn Fn(&SessionEvent) + Send + Sync;

/// The application's hook, if it registered one.
#[derive(Clone, Default)]
pub(crate) struct Events {
    hook: Option<Arc<Hook>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.hook.is_some() {
            "on_event"
        } else {
            "none"
        })
    }
}

impl Events {
    pub(crate) fn new(hook: impl Fn(&SessionEvent) + Send + Sync + 'static) -> Self {
        Self {
            hook: Some(Arc::new(hook)),
        }
    }

    /// Calls the hook, if there is one, with the event `make` builds (only then).
    #[inline]
    pub(crate) fn emit(&self, make: impl FnOnce() -> SessionEvent) {
        if let Some(hook) = &self.hook {
            call(&**hook, &make());
        }
    }
}

/// Runs the hook; a panic in it is the hook's own, never the request's.
#[cold]
#[inline(never)]
fn call(hook: &Hook, event: &SessionEvent) {
    if catch_unwind(AssertUnwindSafe(|| hook(event))).is_err() {
        // The payload is the application's text: not logged here (the panic hook printed it).
        tracing::warn!(
            kind = ?event.kind,
            session = %event.id,
            "the session event hook panicked; the request goes on"
        );
    }
}
