//! A new secret for a session (`regenerate`, `login`), and its end (`logout`, `destroy`): the
//! old key is ended in one step, and a user's index learns the new key only if it still holds
//! the old one, so that "end all" can strike at any point and still end the session.

use std::sync::Arc;
use std::time::Duration;

use super::{too_large, Create, Session, Stored};
use crate::backend::{now_ms, Found, IndexOp, IndexStatus, Outcome, Write, META_USER};
use crate::error::{Limit, SessionError};
use crate::events::{SessionEvent, SessionEventKind as Kind};
use crate::fields::Fields;
use crate::observe::{count, observed};
use crate::token::{StoreKey, Token, UserHandle};

impl Session {
    /// Gives the session a new secret, keeping its data, its public id and its creation time
    /// (call it after any change of privilege; [`login`](Self::login) does it for you). The
    /// old secret is dead from the moment this returns: the session moves to the new secret
    /// and the old key keeps a marker for as long as the old cookie could be valid, in one
    /// step (on a cluster: read and ended in one step, then stored under the new secret with
    /// this request's changes). A write made with the old
    /// cookie either landed before and is kept, or is refused; a request still carrying the
    /// old cookie never overwrites or removes the new one. Without a session, it does nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     session.insert("role", &"editor")?;
    ///     session.incr("visits", 1).await?;
    ///     session.regenerate().await?; // the response carries the new cookie
    ///     assert_eq!(session.get::<i64>("visits").await?, Some(1)); // data kept
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`SessionError::Ended`] if the session ended while this request ran (a logout or "log
    ///   out everywhere" elsewhere).
    /// - [`SessionError::Unavailable`] if the store cannot be reached in time;
    ///   [`SessionError::Corrupt`] if it answers with something other than a session.
    /// - [`SessionError::TooLarge`] if the session is copied to its new key (on a cluster) and
    ///   is over the store's limits.
    /// - [`SessionError::Entropy`] if the OS random generator fails.
    pub async fn regenerate(&self) -> Result<(), SessionError> {
        let _op = self.op().await;
        self.renew(None).await
    }

    /// Binds the session to `user_id` (login): a new secret as with
    /// [`regenerate`](Self::regenerate), and the session joins the user's sessions, which the
    /// store can list and end ([`SessionStore::user_sessions`](crate::SessionStore::user_sessions),
    /// [`end_user_sessions`](crate::SessionStore::end_user_sessions)). Starts a session if there
    /// is none. Logging in as another user than the session's current one starts from empty
    /// data: the previous user's is never carried over.
    ///
    /// Call it once your own code (or an authentication crate) has verified who the user is;
    /// `user_id` is any stable, non-empty string that names the user (a database id, say).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// # fn password_is_right(_user: &str, _password: &str) -> bool { true }
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     # let (user, password) = ("alice", "hunter2");
    ///     if password_is_right(user, password) {
    ///         session.login(user).await?;
    ///         session.insert("display_name", &"Alice")?;
    ///     }
    ///     assert_eq!(session.user_id().await?.as_deref(), Some("alice"));
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`SessionError::EmptyKey`] if `user_id` is empty.
    /// - [`SessionError::Ended`] if the user's sessions were all ended
    ///   ([`end_user_sessions`](crate::SessionStore::end_user_sessions)) while this login was
    ///   under way.
    /// - [`SessionError::TooManySessions`] if the user has as many sessions as
    ///   [`max_sessions_per_user`](crate::SessionStoreBuilder::max_sessions_per_user) allows,
    ///   with [`SessionLimit::RefuseNew`](crate::SessionLimit::RefuseNew).
    /// - [`SessionError::Unavailable`] if the store cannot be reached in time;
    ///   [`SessionError::Corrupt`] if it answers with something other than a session.
    /// - [`SessionError::TooLarge`] if the session's data is over the store's limits.
    /// - [`SessionError::Entropy`] if the OS random generator fails.
    pub async fn login(&self, user_id: &str) -> Result<(), SessionError> {
        if user_id.is_empty() {
            return Err(SessionError::EmptyKey);
        }
        let _op = self.op().await;
        self.renew(Some(user_id)).await
    }

    /// Ends the session and takes it out of its user's sessions (logout). Same as
    /// [`destroy`](Self::destroy).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     session.login("alice").await?;
    ///     session.logout().await?; // the response expires the cookie
    ///     assert_eq!(session.user_id().await?, None);
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`destroy`](Self::destroy).
    pub async fn logout(&self) -> Result<(), SessionError> {
        self.destroy().await
    }

    /// A new secret for the session; with `bind`, bound to that user. Two round trips: the
    /// old session is read and ended; then, at once, the new session is created and the
    /// user's index learns its key (only if it still holds the old one, and for a login only
    /// if the user's sessions were not ended since this request started). "End all" can
    /// strike at any point and still end this session.
    pub(super) async fn renew(&self, bind: Option<&str>) -> Result<(), SessionError> {
        let store = Arc::clone(&self.inner.store);
        let now = now_ms();
        let (old, was, cookie_user, id, own_idle) = {
            let mut state = self.state();
            if state.stored == Stored::Ended {
                if bind.is_none() {
                    return Err(SessionError::Ended);
                }
                // A login is never refused for the cookie it arrived with: it starts afresh.
                state.forget(Stored::Absent);
            }
            let ttl = self.session_ttl(&state, now);
            let old = state.key(&store.prefix).zip(ttl);
            if old.is_none() && bind.is_none() {
                // No session: a new secret is drawn when something is written.
                return Ok(());
            }
            (
                old,
                state.stored,
                state.user.clone(),
                state.id,
                state.idle_ms,
            )
        };
        if let (None, Some((key, ttl))) = (bind, &old) {
            if let Some(done) = self.move_to_new_key(key, *ttl, was).await {
                return done;
            }
        }
        let found = match &old {
            Some((key, ttl)) => {
                let ended = observed!("end", id, store.backend.end(key, *ttl, true))?;
                // The old id is dead from here on: unless a new session is stored (then the
                // Live arm of `finish` wins), the response drops the old cookie.
                self.state().destroyed = true;
                Some(ended)
            }
            None => None,
        };
        let taken = match found {
            Some(Found::Live(taken)) => Some(taken),
            // A session ended elsewhere, or gone while this request ran: a login starts
            // afresh; anything else is refused.
            Some(Found::Ended) | Some(Found::Absent) if bind.is_none() && was == Stored::Live => {
                self.state().forget(Stored::Ended);
                return Err(SessionError::Ended);
            }
            Some(Found::Ended) if bind.is_none() => {
                self.state().forget(Stored::Ended);
                return Err(SessionError::Ended);
            }
            _ => None,
        };
        if taken.is_none() && bind.is_none() {
            // Regenerating an expired session: writes start a new one, and the response drops
            // the old cookie (its id is now marked dead) unless they do.
            let mut state = self.state();
            state.start_over();
            state.destroyed = true;
            state.modified = true;
            return Ok(());
        }
        // Whom the old session belonged to: its stored user, or the cookie's.
        let old_user_id = taken.as_ref().and_then(|t| t.user.clone());
        let old_user = old_user_id
            .as_deref()
            .map(UserHandle::of)
            .or(cookie_user)
            .filter(|_| taken.is_some());
        let handle = bind.map(UserHandle::of);
        // Logging in as someone else replaces the previous user's data, and the session
        // starts over (a new public id); so does a login from a dead cookie.
        let switching = handle.is_some() && old_user.is_some() && handle != old_user;
        let fresh = taken.is_none() || switching;
        if switching {
            let mut state = self.state();
            state.changes.clear();
            state.cleared = true;
        }
        let (token, generated_id) =
            Token::generate_with_id(now).map_err(|e| SessionError::Entropy(e.to_string()))?;
        let new_id = if fresh {
            generated_id
        } else {
            id.unwrap_or(generated_id)
        };
        let created_ms = taken
            .as_ref()
            .filter(|_| !fresh)
            .map_or(now, |t| t.created_ms);
        let new_key = token.store_key(&store.prefix);
        let old_key = old.as_ref().map(|(key, _)| key);
        let lifetimes = store.lifetimes;
        let score_ms = lifetimes.deadline_ms(lifetimes.idle(own_idle), created_ms, now);
        let until_ms = store.index_until(now);
        if let (Some(h), Some((_, crate::SessionLimit::RefuseNew))) = (&handle, store.session_limit)
        {
            // Expired sessions must not count against the limit.
            let user = bind.unwrap_or_default();
            store.prune(user, &h.keys(&store.prefix)).await?;
        }
        // The index change that announces the new key: first in the list, its reply decides.
        let mut index = match (&handle, &old_user) {
            (Some(h), _) => vec![(
                h.keys(&store.prefix),
                IndexOp::Add {
                    id: new_id,
                    key: &new_key,
                    old: old_key.filter(|_| !fresh),
                    score_ms,
                    now_ms: now,
                    started_ms: self.inner.started_ms,
                    until_ms,
                    stale: crate::store::users::LOGIN_STEP,
                    limit: store.session_limit,
                },
            )],
            (None, Some(h)) => old_key
                .map(|old| {
                    let op = IndexOp::Move {
                        id: new_id,
                        old,
                        key: &new_key,
                        score_ms,
                        now_ms: now,
                        until_ms,
                    };
                    vec![(h.keys(&store.prefix), op)]
                })
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        let announced = !index.is_empty();
        if let (true, Some(user), Some(id), Some(key)) = (switching, &old_user, id, old_key) {
            // The previous user's list drops this session (it is ended).
            let op = IndexOp::Remove(vec![(id, key.clone())]);
            index.push((user.keys(&store.prefix), op));
        }
        let (fields, user_id, old_user_id) = {
            let mut state = self.state();
            let fields = state.view(if switching {
                Fields::default()
            } else {
                taken.map(|t| t.fields).unwrap_or_default()
            });
            // The old session's user goes on only if no other is bound (then the event of
            // the old session's end names it).
            let (user_id, old_user_id) = match bind {
                Some(bind) => (Some(bind.to_owned()), old_user_id),
                None => (old_user_id, None),
            };
            let user = handle.clone().or(old_user);
            state.forget(Stored::Absent);
            state.id = Some(new_id);
            state.user = user;
            state.user_id = user_id.clone();
            state.data = Some(fields.clone());
            state.destroyed = old.is_some();
            state.modified = true;
            (fields, user_id, old_user_id)
        };
        let limits = store.limits;
        too_large(Limit::KeyCount, fields.len(), limits.keys)?;
        let bytes = fields.bytes();
        too_large(Limit::SessionSize, bytes, limits.session_bytes)?;
        // The new session and its index entry in one round trip, in no particular order: "end
        // all" that strikes before the index change gets it refused (the new session is then
        // ended below, before its cookie ever leaves), one that strikes after ends it.
        // The session keeps its age: a new secret never extends the absolute timeout.
        let result = self
            .write_with(
                Some(created_ms),
                Create::With(token, announced),
                |store, key, mode, ttl| {
                    let (fields, user_id, index) = (&fields, &user_id, &index);
                    async move {
                        let mut set: Vec<(&str, &str)> = fields.iter().collect();
                        if let Some(user) = user_id {
                            set.push((META_USER, user.as_str()));
                        }
                        let write = Write {
                            mode,
                            ttl,
                            clear: false,
                            set,
                            delete: Vec::new(),
                            check: None,
                        };
                        let saved = store.backend.save_indexed(&key, &write, index);
                        let (saved, replies) = observed!("save", Some(new_id), saved)?;
                        Ok(saved.map(|()| replies))
                    }
                },
            )
            .await;
        let result = match result {
            Ok(Some(mut replies)) if announced && !replies.first().is_some_and(|r| r.done()) => {
                // The user's sessions were ended meanwhile (or since this request started),
                // or the old cookie was stale: this one goes with them. Or the user has as
                // many sessions as allowed.
                let ttl = Duration::from_millis(store.lifetimes.idle_ms);
                if let Err(e) =
                    observed!("end", Some(new_id), store.backend.end(&new_key, ttl, false))
                {
                    tracing::debug!(error = %e, "could not end a session its user's index refused");
                }
                match (replies.swap_remove(0).status, store.session_limit) {
                    (IndexStatus::OverLimit, Some((max, _))) => {
                        Err(SessionError::TooManySessions { max })
                    }
                    _ => Err(SessionError::Ended),
                }
            }
            Ok(Some(mut replies)) => {
                if let (Some(h), Some(user), Some(reply)) = (&handle, bind, replies.first_mut()) {
                    let keys = h.keys(&store.prefix);
                    // The oldest sessions over the limit (marked: no longer counted, listed
                    // or movable; a later login or "end all" ends them if this fails).
                    let to_end = std::mem::take(&mut reply.to_end);
                    if let Err(e) = store.end_entries(user, &keys, to_end).await {
                        tracing::warn!(error = %e, "could not end sessions over the user's limit");
                    }
                    let stale = std::mem::take(&mut reply.stale);
                    if let Err(e) = store.settle(user, &keys, stale).await {
                        tracing::debug!(error = %e, "could not check stale index entries");
                    }
                }
                Ok(Some(()))
            }
            other => other.map(|saved| saved.map(drop)),
        };
        if matches!(result, Ok(Some(()))) {
            let login = if bind.is_some() { "true" } else { "false" };
            count("session_regenerated_total", &[("login", login)], 1);
            let events = &store.events;
            if let (true, Some(old_id)) = (switching, id) {
                events.emit(|| SessionEvent::new(Kind::Destroyed, old_id, old_user_id));
            }
            if fresh {
                events.emit(|| SessionEvent::new(Kind::Created, new_id, user_id.clone()));
            }
            let kind = if bind.is_some() {
                Kind::LoggedIn
            } else {
                Kind::Regenerated
            };
            events.emit(|| SessionEvent::new(kind, new_id, user_id));
        } else {
            // The old session is gone and the new one was not stored.
            let ended = matches!(result, Err(SessionError::Ended));
            let mut state = self.state();
            state.forget(if ended { Stored::Ended } else { Stored::Absent });
            state.destroyed = old.is_some();
        }
        result.map(drop)
    }

    /// `regenerate` where the store can move the hash (not a cluster): one step that reads
    /// nothing, whatever the session's size, then the index entry of a logged-in session
    /// moves with it. The handle keeps what it loaded and staged (written after the handler,
    /// to the new key). `None`: the store cannot; take the general way.
    pub(super) async fn move_to_new_key(
        &self,
        old: &StoreKey,
        ttl: Duration,
        was: Stored,
    ) -> Option<Result<(), SessionError>> {
        let store = Arc::clone(&self.inner.store);
        let token = match Token::generate() {
            Ok(token) => token,
            Err(e) => return Some(Err(SessionError::Entropy(e.to_string()))),
        };
        let new_key = token.store_key(&store.prefix);
        let id = self.state().id;
        let moved = store.backend.rename(old, &new_key, ttl, ttl);
        let moved = match observed!("end", id, moved) {
            Ok(moved) => moved?,
            Err(e) => return Some(Err(e)),
        };
        let (created_ms, user_id) = match moved {
            Outcome::Done(done) => done,
            // Expired: writes start a new session; the old cookie is dropped unless they do.
            Outcome::Gone if was != Stored::Live => {
                let mut state = self.state();
                state.start_over();
                state.destroyed = true;
                state.modified = true;
                return Some(Ok(()));
            }
            Outcome::Taken => {
                return Some(Err(SessionError::Corrupt(
                    "a freshly drawn session key was taken".into(),
                )))
            }
            _ => {
                self.state().forget(Stored::Ended);
                return Some(Err(SessionError::Ended));
            }
        };
        {
            let mut state = self.state();
            state.destroyed = true;
            state.modified = true;
        }
        if let (Some(user), Some(id)) = (user_id.as_deref(), id) {
            let keys = UserHandle::of(user).keys(&store.prefix);
            let now = now_ms();
            let op = IndexOp::Move {
                id,
                old,
                key: &new_key,
                score_ms: now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
                now_ms: now,
                until_ms: store.index_until(now),
            };
            let indexed = observed!("index", Some(id), store.backend.index(&keys, op));
            if !matches!(indexed, Ok(ref reply) if reply.done()) {
                // "End all" struck meanwhile (the session goes with the user's others), or the
                // index could not learn the new key (a session it cannot list must not live):
                // the new key never reached a browser.
                if let Err(e) = store.backend.end(&new_key, ttl, false).await {
                    tracing::debug!(error = %e, "could not end a session its user's index refused");
                }
                self.state().forget(Stored::Ended);
                return Some(indexed.and(Err(SessionError::Ended)));
            }
        }
        let mut state = self.state();
        state.token = Some(token);
        state.key = Some(new_key);
        state.created_ms = Some(created_ms);
        state.user = user_id.as_deref().map(UserHandle::of);
        state.user_id.clone_from(&user_id);
        state.stored = Stored::Live;
        state.new_token = true;
        state.ttl = Some(ttl);
        drop(state);
        count("session_regenerated_total", &[("login", "false")], 1);
        if let Some(id) = id {
            store
                .events
                .emit(|| SessionEvent::new(Kind::Regenerated, id, user_id));
        }
        Some(Ok(()))
    }

    /// Takes session `id` (at `key`) out of `user`'s index, if it still holds that key.
    pub(super) async fn leave_index(
        &self,
        user: Option<&UserHandle>,
        id: Option<uuid::Uuid>,
        key: Option<&StoreKey>,
    ) -> Result<(), SessionError> {
        let (Some(user), Some(id), Some(key)) = (user, id, key) else {
            return Ok(());
        };
        let store = &self.inner.store;
        let keys = user.keys(&store.prefix);
        let op = IndexOp::Remove(vec![(id, key.clone())]);
        observed!("index", Some(id), store.backend.index(&keys, op)).map(drop)
    }

    /// Ends the session (logout): it is ended in the store now, then taken out of its
    /// user's sessions, and the response expires the cookie. Writes made afterwards in this
    /// request start a new session. Without a session, it asks nothing of the store.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{Session, SessionError};
    ///
    /// async fn handler(session: Session) -> Result<(), SessionError> {
    ///     session.incr("visits", 1).await?;
    ///     session.destroy().await?;
    ///     assert!(session.is_empty().await?);
    ///     assert_eq!(session.id(), None);
    ///     Ok(())
    /// }
    /// # use tower_redis_session::SessionStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// # let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// # let app = axum::Router::new().route("/", axum::routing::get(handler)).layer(store.layer());
    /// # let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
    /// # assert!(response.status().is_success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::Unavailable`] if the store cannot be reached in time (the session may
    /// then live on: retry, or tell the user); [`SessionError::Corrupt`] if it answers with
    /// something other than a session.
    pub async fn destroy(&self) -> Result<(), SessionError> {
        let _op = self.op().await;
        let store = &self.inner.store;
        let (key, ttl, user, id) = {
            let mut state = self.state();
            let ttl = self.session_ttl(&state, now_ms());
            (state.key(&store.prefix), ttl, state.user.clone(), state.id)
        };
        let found = match (&key, ttl) {
            (Some(key), Some(ttl)) => observed!("end", id, store.backend.end(key, ttl, false))?,
            _ => Found::Absent,
        };
        // Only a session this request ended leaves the index: an old cookie's successor stays.
        let ended = match found {
            Found::Live(ended) => {
                if let Err(e) = self.leave_index(user.as_ref(), id, key.as_ref()).await {
                    tracing::debug!(error = %e, "could not take the session out of its user's index");
                }
                Some(ended)
            }
            _ => None,
        };
        let user_id = {
            let mut state = self.state();
            let user_id = state.user_id.take();
            state.forget(Stored::Absent);
            // Logging out drops the cookie, whatever the store said (an automatic retry finds
            // its own marker): the user asked to be logged out in this browser.
            state.destroyed = true;
            state.modified = true;
            user_id
        };
        count("session_destroyed_total", &[], 1);
        if let Some(ended) = ended {
            if let Some(id) = id.or(ended.id) {
                let user_id = ended.user.or(user_id);
                store
                    .events
                    .emit(|| SessionEvent::new(Kind::Destroyed, id, user_id));
            }
        }
        Ok(())
    }
}
