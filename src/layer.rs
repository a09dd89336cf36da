//! [`SessionLayer`] and the [`SessionService`] it wraps around a service.
//!
//! On the way in, the layer verifies the session cookie (no store command) and puts a lazy
//! [`Session`] into the request extensions. On the way out it writes what the handler
//! changed, in one round trip, and sets or expires the cookie. A response whose handler
//! changed nothing goes out without waiting for the store, and so does a 5xx response: its
//! staged changes are dropped, since the handler failed (as Django and tower-sessions do).
//! A response that carries the session cookie, or whose handler used a live session, gets
//! `Cache-Control: private` unless the application set its own policy, so that no shared
//! cache stores a token or a user's page.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::CACHE_CONTROL;
use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::SessionError;
use crate::session::Session;
use crate::state::SessionStore;
use crate::store::now_ms;

/// Adds server-side sessions to a service. Made by [`SessionStore::layer`].
///
/// The wrapped service's response body must implement `Default`: when the session cannot
/// be saved, the layer answers with an empty body and the status of the
/// [`SessionError`] (503 if the store is unavailable, 409 if the session ended meanwhile).
#[derive(Clone, Debug)]
pub struct SessionLayer {
    store: SessionStore,
}

impl SessionLayer {
    pub(crate) fn new(store: SessionStore) -> Self {
        Self { store }
    }
}

impl SessionStore {
    /// The tower layer that gives each request a [`Session`].
    pub fn layer(&self) -> SessionLayer {
        SessionLayer::new(self.clone())
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            store: self.store.clone(),
        }
    }
}

/// The service made by [`SessionLayer`].
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    store: SessionStore,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let store = &self.store.inner;
        let now = now_ms();
        let carried = store.codec.carried(req.headers());
        let session = Session::new(std::sync::Arc::clone(store), carried, now);
        req.extensions_mut().insert(session.clone());
        // A failed save must not invite the client to repeat a request that is not idempotent.
        let idempotent = req.method().is_idempotent();
        ResponseFuture {
            state: State::Inner {
                future: self.inner.call(req),
            },
            session: Some(session),
            idempotent,
        }
    }
}

type CommitFuture = Pin<Box<dyn Future<Output = Result<(), SessionError>> + Send>>;

pin_project! {
    /// Response future of [`SessionService`]. Boxes nothing unless the handler changed the
    /// session.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
        session: Option<Session>,
        idempotent: bool,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner { #[pin] future: F },
        Commit { commit: CommitFuture, response: Option<Response<B>> },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { future } => {
                    let response = ready!(future.poll(cx))?;
                    let Some(session) = this.session.as_ref() else {
                        return Poll::Ready(Ok(response));
                    };
                    if response.status().is_server_error() {
                        session.discard();
                    }
                    if !session.has_changes() {
                        let mut response = response;
                        finish(session, &mut response);
                        return Poll::Ready(Ok(response));
                    }
                    let commit = Box::pin(session.clone().commit());
                    this.state.set(State::Commit {
                        commit,
                        response: Some(response),
                    });
                }
                StateProj::Commit { commit, response } => {
                    let result = ready!(commit.as_mut().poll(cx));
                    let response = response.take().unwrap_or_default();
                    let mut response = match result {
                        Ok(()) => response,
                        Err(e) => error_response(&e, *this.idempotent),
                    };
                    if let Some(session) = this.session.take() {
                        finish(&session, &mut response);
                    }
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

/// Sets the session cookie if the response needs one, and keeps shared caches from storing a
/// response that is the session's own.
fn finish<B>(session: &Session, response: &mut Response<B>) {
    let headers = response.headers_mut();
    if session.finish(headers) && !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("private"));
    }
}

/// The handler's response is dropped: it would claim a change that was not saved.
fn error_response<B: Default>(error: &SessionError, idempotent: bool) -> Response<B> {
    tracing::warn!(%error, "session changes not saved");
    crate::observe::answered(error);
    let mut response = Response::new(B::default());
    *response.status_mut() = error.status();
    if idempotent && error.status() == http::StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    response
}
