//! What a request's handle knows of its session: the token and metadata its cookie gave, what
//! the store said, the values loaded and the changes staged.

use std::collections::HashMap;
use std::time::Duration;

use crate::cookie::{Carried, Verified};
use crate::fields::Fields;
use crate::token::{StoreKey, Token, UserHandle};

/// Whether a write may create a session when there is none.
pub(super) enum Create {
    No,
    Yes,
    /// Under this token only (a new secret); `true` if its key was announced to a user's
    /// index first.
    With(Token, bool),
}

/// What we know of the session in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stored {
    /// The request carried a valid cookie but nobody has asked the store yet.
    Unknown,
    /// There is no session: none was sent, it expired, or this request destroyed it.
    Absent,
    /// The session under `token` is live in the store.
    Live,
    /// The cookie's session was ended (logout or a new id, here or in another request):
    /// it reads as empty, refuses writes, and the response leaves the cookie alone.
    Ended,
}

pub(super) struct State {
    /// The request's cookie headers, until their first use verifies them: a request that
    /// never uses its session pays for no MAC check on its way.
    pub(super) carried: Option<Carried>,
    /// The current token: the verified one from the cookie, or one made during this request.
    pub(super) token: Option<Token>,
    /// The token's store key, computed when first needed (a SHA-256).
    pub(super) key: Option<StoreKey>,
    /// Creation time of the session under `token` (signed into the cookie).
    pub(super) created_ms: Option<i64>,
    /// The public id: from the cookie, or drawn when the session is first stored.
    pub(super) id: Option<uuid::Uuid>,
    /// The user the session is bound to, as the cookie names it; and the user's id, once
    /// loaded (or bound in this request).
    pub(super) user: Option<UserHandle>,
    pub(super) user_id: Option<String>,
    pub(super) stored: Stored,
    /// The session's own idle timeout, if shorter than the store's.
    pub(super) idle_ms: Option<u64>,
    /// A persistent cookie rather than a browser-session one.
    pub(super) persistent: bool,
    /// When the persistent cookie the request carried expires in the browser.
    pub(super) cookie_expires_ms: Option<i64>,
    /// The cookie was signed by an older key.
    pub(super) stale_key: bool,
    /// The token was made during this request.
    pub(super) new_token: bool,
    /// `destroy` ended the session: the response removes the cookie.
    pub(super) destroyed: bool,
    /// The persistence or idle timeout changed: the expiry is written, the cookie re-issued.
    pub(super) lifetime_changed: bool,
    /// Something was changed by this request (staged or written).
    pub(super) modified: bool,
    /// Remaining lifetime as of the last store operation.
    pub(super) ttl: Option<Duration>,
    /// Stored values with this request's changes applied (JSON text); `None` until loaded.
    pub(super) data: Option<Fields>,
    /// Pending changes: `Some` to set, `None` to delete.
    pub(super) changes: HashMap<String, Option<String>>,
    /// Pending: drop every stored field first.
    pub(super) cleared: bool,
}

impl State {
    /// Takes in what the request's cookie said, once verified (`None`: no valid cookie).
    pub(super) fn adopt(&mut self, verified: Option<Verified>) {
        let Some(v) = verified else {
            self.stored = Stored::Absent;
            self.data = Some(Fields::default());
            return;
        };
        self.token = Some(v.token);
        self.created_ms = Some(v.meta.created_ms);
        self.id = Some(v.meta.id);
        self.user = v.meta.user;
        self.idle_ms = v.meta.idle_ms;
        self.persistent = v.meta.expires_ms.is_some();
        self.cookie_expires_ms = v.meta.expires_ms;
        self.stale_key = v.stale_key;
    }

    pub(super) fn key(&mut self, prefix: &str) -> Option<StoreKey> {
        if self.key.is_none() {
            self.key = self.token.as_ref().map(|t| t.store_key(prefix));
        }
        self.key.clone()
    }

    /// The stored fields as this request sees them: its pending changes applied.
    pub(super) fn view(&self, mut stored: Fields) -> Fields {
        if self.cleared {
            stored.clear();
        }
        for (k, v) in &self.changes {
            match v {
                Some(v) => stored.insert(k.clone(), v.clone()),
                None => drop(stored.remove(k)),
            }
        }
        stored
    }

    /// The session turned out not to exist: start over without one, keeping the values this
    /// request staged (they create a new session when written; removals have nothing left
    /// to remove).
    pub(super) fn start_over(&mut self) {
        let changes = std::mem::take(&mut self.changes);
        self.forget(Stored::Absent);
        self.changes = changes.into_iter().filter(|(_, v)| v.is_some()).collect();
        self.data = Some(self.view(Fields::default()));
    }

    /// Drops every trace of the current session from this handle.
    pub(super) fn forget(&mut self, stored: Stored) {
        self.token = None;
        self.key = None;
        self.created_ms = None;
        self.id = None;
        self.user = None;
        self.user_id = None;
        self.stored = stored;
        self.new_token = false;
        self.data = Some(Fields::default());
        self.changes.clear();
        self.cleared = false;
    }
}
