//! After the handler: the guarded write of what it changed (never re-creating a session that
//! ended meanwhile), and what the response tells the client about its token.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use super::{Create, Session, Stored, MAX_TOKEN_DRAWS};
use crate::backend::{now_ms, Mode, Outcome, Write, META_IDLE};
use crate::cookie::{CarriedValue, CookieCodec, Meta};
use crate::error::{Limit, SessionError};
use crate::events::{SessionEvent, SessionEventKind as Kind};
use crate::observe::{count, observed};
use crate::store::StoreInner;
use crate::token::{StoreKey, Token};

impl Session {
    /// Runs a guarded write: on the live (or not yet loaded) session, or, if there is none
    /// and `create` allows it, on a new one, created now or at `created_ms`. A session that
    /// ended or reached its absolute timeout meanwhile is never re-created. `op` gets the
    /// store key, the mode and the expiry to set. `Ok(None)`: there was no session and
    /// nothing was created.
    pub(super) async fn write_with<T, F, Fut>(
        &self,
        created_ms: Option<i64>,
        create: Create,
        op: F,
    ) -> Result<Option<T>, SessionError>
    where
        F: Fn(Arc<StoreInner>, StoreKey, Mode, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<Outcome<T>, SessionError>>,
    {
        let store = Arc::clone(&self.inner.store);
        for _ in 0..=MAX_TOKEN_DRAWS {
            let now = now_ms();
            let (key, mode, created_ms, fresh, ttl, was) = {
                let mut state = self.state();
                let key = state.key(&store.prefix);
                let (key, mode, created, fresh) = match (state.stored, key, state.created_ms) {
                    (Stored::Ended, _, _) => return Err(SessionError::Ended),
                    (Stored::Live | Stored::Unknown, Some(key), Some(created)) => {
                        (key, Mode::Update, created, None)
                    }
                    _ => {
                        let (token, fresh_id, announced) = match &create {
                            Create::No => return Ok(None),
                            Create::Yes => {
                                let (token, id) = Token::generate_with_id(now)
                                    .map_err(|e| SessionError::Entropy(e.to_string()))?;
                                (token, Some(id), false)
                            }
                            Create::With(token, announced) => (token.clone(), None, *announced),
                        };
                        let key = token.store_key(&store.prefix);
                        let created = created_ms.unwrap_or(now);
                        let id = *state
                            .id
                            .get_or_insert_with(|| fresh_id.unwrap_or_else(uuid::Uuid::now_v7));
                        let mode = Mode::Create {
                            created_ms: created,
                            id,
                            announced,
                        };
                        (key, mode, created, Some(token))
                    }
                };
                let ttl = self.ttl_now(&state, created, now);
                (key, mode, created, fresh, ttl, state.stored)
            };
            let outcome = match ttl {
                Some(ttl) => op(Arc::clone(&store), key.clone(), mode, ttl)
                    .await?
                    .map(|value| (value, ttl)),
                None => Outcome::Gone,
            };
            let mut state = self.state();
            match outcome {
                Outcome::Done((value, ttl)) => {
                    // A login reports the sessions it starts itself.
                    let created = fresh.is_some() && matches!(create, Create::Yes);
                    if let Some(token) = fresh {
                        count("session_created_total", &[], 1);
                        state.token = Some(token);
                        state.key = Some(key);
                        state.created_ms = Some(created_ms);
                        state.new_token = true;
                    }
                    state.stored = Stored::Live;
                    state.ttl = Some(ttl);
                    let id = state.id.filter(|_| created);
                    drop(state);
                    if let Some(id) = id {
                        store
                            .events
                            .emit(|| SessionEvent::new(Kind::Created, id, None));
                    }
                    return Ok(Some(value));
                }
                // Never seen live by this request: it was absent all along; start anew.
                Outcome::Gone if was == Stored::Unknown => state.start_over(),
                Outcome::Gone | Outcome::Ended => {
                    state.forget(Stored::Ended);
                    return Err(SessionError::Ended);
                }
                // The one key a login announced to its user's index is taken: by the marker
                // of "end all sessions", which this login must not outlive.
                Outcome::Taken if matches!(create, Create::With(..)) => {
                    state.forget(Stored::Ended);
                    return Err(SessionError::Ended);
                }
                Outcome::TooLarge { limit, got } => {
                    let max = match limit {
                        Limit::KeyCount => store.limits.keys,
                        _ => store.limits.session_bytes,
                    };
                    return Err(SessionError::TooLarge { limit, max, got });
                }
                Outcome::Taken => {}
            }
        }
        Err(SessionError::Corrupt(
            "every freshly drawn session key was taken".into(),
        ))
    }

    /// Whether the request left changes that must be written before the response goes out.
    pub(crate) fn has_changes(&self) -> bool {
        // Every change verifies the cookie first: one still unverified was never used.
        let state = self.unverified();
        state.cleared
            || !state.changes.is_empty()
            || (state.lifetime_changed && matches!(state.stored, Stored::Unknown | Stored::Live))
    }

    /// Drops the staged changes (the handler answered with a 5xx): what already went to the
    /// store (`incr`, `regenerate`, `destroy`) stays.
    pub(crate) fn discard(&self) {
        let mut state = self.unverified();
        state.changes.clear();
        state.cleared = false;
        state.lifetime_changed = false;
    }

    /// Writes this request's changes: only what changed, in one round trip.
    pub(crate) async fn commit(self) -> Result<(), SessionError> {
        let _op = self.op().await;
        let rotate = {
            let state = self.state();
            state.lifetime_changed
                && !state.new_token
                && state.token.is_some()
                && matches!(state.stored, Stored::Unknown | Stored::Live)
        };
        if rotate {
            // A new idle timeout or persistence lives in the new cookie only: every copy of
            // the old one (a stale tab, a background refresh) must die with its token, or it
            // would keep the session on its old lifetime.
            self.renew(None).await?;
        }
        let (changes, clear, unloaded) = {
            let mut state = self.state();
            let clear = std::mem::take(&mut state.cleared);
            let mut changes = std::mem::take(&mut state.changes);
            if state.lifetime_changed {
                // Kept with the session, so that listings can tell when it was last seen.
                let idle = state.idle_ms.map(|ms| ms.to_string());
                changes.insert(META_IDLE.to_owned(), idle);
            }
            (changes, clear, state.data.is_none())
        };

        let limits = self.inner.store.limits;
        // A lifetime change alone stores nothing for a session that does not exist.
        let has_sets = changes
            .iter()
            .any(|(k, v)| v.is_some() && !crate::backend::is_meta(k));
        let create = if has_sets { Create::Yes } else { Create::No };
        let this = &self;
        self.write_with(None, create, |store, key, mode, ttl| {
            let changes = &changes;
            let update = matches!(mode, Mode::Update);
            async move {
                let write = Write {
                    mode,
                    ttl,
                    clear: clear && update,
                    set: changes
                        .iter()
                        .filter_map(|(k, v)| Some((k.as_str(), v.as_deref()?)))
                        .collect(),
                    delete: if clear || !update {
                        Vec::new()
                    } else {
                        changes
                            .iter()
                            .filter(|(_, v)| v.is_none())
                            .map(|(k, _)| k.as_str())
                            .collect()
                    },
                    check: (unloaded && update && has_sets).then_some(limits),
                };
                let bytes: usize = write.set.iter().map(|(k, v)| k.len() + v.len()).sum();
                let id = this.state().id;
                let saved = observed!("save", id, store.backend.save(&key, &write));
                if matches!(saved, Ok(Outcome::Done(()))) {
                    count("session_saved_total", &[], 1);
                    count("session_bytes_written_total", &[], bytes as u64);
                }
                saved
            }
        })
        .await
        .map(drop)
    }

    /// Adds the `Set-Cookie` this response needs, if any, and queues the expiry refresh of a
    /// session the request carried but never used. Returns whether the response is the
    /// session's own, and no shared cache may keep it: it carries the cookie, or the handler
    /// used a live session (a page with the user's name, say).
    pub(crate) fn finish(&self, headers: &mut HeaderMap) -> bool {
        let store = &self.inner.store;
        let codec = &store.codec;
        let lifetimes = &store.lifetimes;
        let transport = &self.inner.transport;
        let mut state = self.unverified();
        if let Some(carried) = state.carried.take() {
            // Never used: the refresh task verifies the cookie and slides its expiry.
            let mut resent = false;
            if let Some(value) = store.codec.carried_value(&carried) {
                if let (CarriedValue::One(one), true) = (&value, transport.cookie()) {
                    if let Some(header) = self.persistent_again(one) {
                        headers.append(http::header::SET_COOKIE, header);
                        resent = true;
                    }
                }
                store.toucher.touch_carried(value, self.inner.started_ms);
            }
            return resent;
        }
        let now = now_ms();
        let idle = lifetimes.idle(state.idle_ms);
        let out = match (state.stored, &state.token, state.created_ms) {
            // Never used: slide the expiry in the background. No cookie: without asking the
            // store we cannot know the session still lives (it may have a successor).
            (Stored::Unknown, Some(token), Some(created)) => {
                let deadline = lifetimes.deadline_ms(idle, created, now);
                if deadline > now {
                    store.toucher.touch(token.clone(), deadline);
                }
                Out::Nothing
            }
            (Stored::Live, Some(token), Some(created)) => {
                let ttl = state.ttl.unwrap_or_default();
                let (expires, drifted) = cookie_expiry(now, ttl, idle, state.cookie_expires_ms);
                // (A header has no expiry for the client to keep in step.)
                let drifted = state.persistent && drifted && transport.cookie();
                let reissue =
                    state.new_token || state.stale_key || state.lifetime_changed || drifted;
                // Most responses re-send nothing: no copy of the user handle for them.
                if reissue {
                    let meta = Meta {
                        created_ms: created,
                        idle_ms: state.idle_ms,
                        expires_ms: state.persistent.then_some(expires),
                        id: state.id.unwrap_or_default(),
                        user: state.user.clone(),
                    };
                    Out::Issue(token.clone(), meta, state.persistent.then_some(ttl))
                } else {
                    Out::Nothing
                }
            }
            _ if state.destroyed => Out::Remove,
            _ => Out::Nothing,
        };
        let private = !matches!(out, Out::Nothing) || matches!(state.stored, Stored::Live);
        if transport.cookie() {
            let cookie = match &out {
                Out::Issue(token, meta, max_age) => codec.set_cookie(token, meta, *max_age),
                Out::Remove => codec.removal(),
                Out::Nothing => None,
            };
            if let Some(cookie) = cookie {
                headers.append(http::header::SET_COOKIE, cookie);
            }
        }
        if let Some(name) = transport.header() {
            let value = match &out {
                Out::Issue(token, meta, _) => {
                    http::HeaderValue::from_str(&codec.sign(token, meta)).ok()
                }
                Out::Remove => Some(http::HeaderValue::from_static("")),
                Out::Nothing => None,
            };
            if let Some(value) = value {
                headers.insert(name.clone(), value);
            }
        }
        private
    }
}

/// What a response tells the client about its token.
enum Out {
    Nothing,
    /// A new value: the token, what is signed with it, the cookie's `Max-Age`.
    Issue(Token, Meta, Option<Duration>),
    /// The token is dead: the cookie expires, the header comes back empty.
    Remove,
}

impl Session {
    /// A persistent cookie that a route which never used the session carried, sent again
    /// with the expiry the refresh gives the session, once it has drifted as on a read (by
    /// more than a tenth of the idle timeout): otherwise the browser drops it while the store
    /// keeps the session. The MAC is checked only then.
    pub(super) fn persistent_again(&self, value: &[u8]) -> Option<http::HeaderValue> {
        let store = &self.inner.store;
        let lifetimes = &store.lifetimes;
        let now = now_ms();
        let drifted = |created: i64, idle_ms: Option<u64>, sent: i64| {
            let idle = lifetimes.idle(idle_ms);
            let ttl = lifetimes.ttl(idle, created, now)?;
            let (expires, drifted) = cookie_expiry(now, ttl, idle, Some(sent));
            drifted.then_some((ttl, expires))
        };
        let (created, idle_ms, sent) = CookieCodec::persistent_unverified(value)?;
        drifted(created, idle_ms, sent)?;
        let verified = store.codec.verify_one(value, now)?;
        let meta = verified.meta;
        let (ttl, expires) = drifted(meta.created_ms, meta.idle_ms, meta.expires_ms?)?;
        let meta = Meta {
            expires_ms: Some(expires),
            ..meta
        };
        store.codec.set_cookie(&verified.token, &meta, Some(ttl))
    }
}

/// When a persistent cookie sent at `now` with `ttl` left expires; and whether one sent to
/// expire at `sent` (none: never sent) has drifted from that by more than a tenth of the idle
/// timeout, so that it is sent again: not on every response.
fn cookie_expiry(now: i64, ttl: Duration, idle: u64, sent: Option<i64>) -> (i64, bool) {
    let expires = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(0) * 1000);
    let step = i64::try_from(idle / 10).unwrap_or(0);
    let drifted = sent.is_none_or(|sent| expires.saturating_sub(sent) > step);
    (expires, drifted)
}
