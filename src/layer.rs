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
use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::backend::now_ms;
use crate::error::SessionError;
use crate::session::Session;
use crate::store::SessionStore;
use crate::transport::{Came, HeaderToken, Transport};

/// Adds server-side sessions to a service. Made by [`SessionStore::layer`].
///
/// The wrapped service's response body must implement `Default`: when the session cannot
/// be saved, the layer answers with an empty body and the status of the
/// [`SessionError`] (503 if the store is unavailable, 409 if the session ended meanwhile).
#[derive(Clone, Debug)]
pub struct SessionLayer {
    store: SessionStore,
    tokens: Tokens,
}

/// Where a layer looks for the token.
#[derive(Clone, Debug)]
struct Tokens {
    header: Option<HeaderToken>,
    cookie: bool,
}

impl SessionLayer {
    pub(crate) fn new(store: SessionStore) -> Self {
        Self {
            store,
            tokens: Tokens {
                header: None,
                cookie: true,
            },
        }
    }

    /// Takes the token from the request header `name` instead of the cookie, for clients
    /// that keep no cookies (mobile apps, API clients), and gives new tokens back in the
    /// same header of the response: when a session is created, gets a new secret
    /// (`regenerate`, `login`, a lifetime change) or a newer signing key. An ended session
    /// answers with the header empty. Same signing, store, round trips and semantics as
    /// the cookie; add [`with_cookie`](Self::with_cookie) to accept both on these routes.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use http::HeaderName;
    /// use tower_redis_session::{Session, SessionStore};
    ///
    /// # async fn api(store: SessionStore) {
    /// let api: Router = Router::new()
    ///     .route("/api/me", get(|s: Session| async move { format!("{:?}", s.id()) }))
    ///     .layer(store.layer().token_header(HeaderName::from_static("x-auth-token")));
    /// # let _ = api;
    /// # }
    /// ```
    pub fn token_header(mut self, name: HeaderName) -> Self {
        self.tokens = Tokens {
            header: Some(HeaderToken::named(name)),
            cookie: false,
        };
        self
    }

    /// Takes the token from `Authorization: Bearer <token>` instead of the cookie, and
    /// gives new tokens back in the response header `respond` (`x-auth-token`, say), as
    /// [`token_header`](Self::token_header) does.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::{routing::post, Router};
    /// use http::HeaderName;
    /// use tower_redis_session::{Session, SessionError, SessionStore};
    ///
    /// async fn login(session: Session) -> Result<(), SessionError> {
    ///     session.login("alice").await // the token comes back in `x-auth-token`
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// let respond = HeaderName::from_static("x-auth-token");
    /// let api: Router = Router::new()
    ///     .route("/api/login", post(login))
    ///     .layer(store.layer().bearer_token(respond));
    /// # use tower::ServiceExt;
    /// # let request = http::Request::post("/api/login").body(axum::body::Body::empty())?;
    /// # let response = api.oneshot(request).await?;
    /// # assert!(response.headers().contains_key("x-auth-token"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn bearer_token(mut self, respond: HeaderName) -> Self {
        self.tokens = Tokens {
            header: Some(HeaderToken::bearer(respond)),
            cookie: false,
        };
        self
    }

    /// Accepts the cookie too, beside the header of [`token_header`](Self::token_header)
    /// or [`bearer_token`](Self::bearer_token) (the header wins when a request carries
    /// both). A response answers the way the request's token came; a request that carried
    /// none gets a new token both ways.
    ///
    /// # Examples
    ///
    /// ```
    /// use http::HeaderName;
    /// use tower_redis_session::SessionStore;
    ///
    /// # async fn layer(store: SessionStore) {
    /// // Browsers send the cookie, the mobile app the header: one route serves both.
    /// let layer = store
    ///     .layer()
    ///     .token_header(HeaderName::from_static("x-auth-token"))
    ///     .with_cookie();
    /// # let _ = layer;
    /// # }
    /// ```
    pub fn with_cookie(mut self) -> Self {
        self.tokens.cookie = true;
        self
    }
}

impl SessionStore {
    /// The tower layer that gives each request a [`Session`]. Cheap: every layer made from a
    /// store shares it.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use tower_redis_session::{Session, SessionStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_redis_session::ConfigError> {
    /// let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// let app: Router = Router::new()
    ///     .route("/", get(|session: Session| async move { format!("{:?}", session.id()) }))
    ///     .layer(store.layer());
    /// # let _ = app;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Without axum, wrap any `tower::Service<http::Request<B>>`; the [`Session`] is in the
    /// request extensions:
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use tower::{service_fn, ServiceBuilder};
    /// use tower_redis_session::{Session, SessionStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use tower::ServiceExt;
    /// let store = SessionStore::builder().memory().signing_keys([[7u8; 32]]).build().await?;
    /// let service = ServiceBuilder::new().layer(store.layer()).service(service_fn(
    ///     |request: http::Request<String>| async move {
    ///         let session = request.extensions().get::<Session>().cloned().expect("the layer");
    ///         let visits = session.incr("visits", 1).await.unwrap_or(0);
    ///         Ok::<_, Infallible>(http::Response::new(format!("visit {visits}")))
    ///     },
    /// ));
    /// # let response = service.oneshot(http::Request::new(String::new())).await?;
    /// # assert_eq!(response.body(), "visit 1");
    /// # Ok(())
    /// # }
    /// ```
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
            tokens: self.tokens.clone(),
        }
    }
}

/// The service made by [`SessionLayer`].
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    store: SessionStore,
    tokens: Tokens,
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
        let (carried, transport) = match &self.tokens.header {
            None => (store.codec.carried(req.headers()), Transport::Cookie),
            Some(header) => {
                let by_header = header
                    .value(req.headers())
                    .and_then(|value| store.codec.carried_token(value));
                let respond = header.respond.clone();
                match (by_header, self.tokens.cookie) {
                    (by_header, false) => (by_header, Transport::Header(respond)),
                    (Some(carried), true) => (
                        Some(carried),
                        Transport::Both {
                            header: respond,
                            came: Some(Came::Header),
                        },
                    ),
                    (None, true) => {
                        let carried = store.codec.carried(req.headers());
                        let came = carried.as_ref().map(|_| Came::Cookie);
                        (
                            carried,
                            Transport::Both {
                                header: respond,
                                came,
                            },
                        )
                    }
                }
            }
        };
        let session = Session::new(std::sync::Arc::clone(store), carried, now, transport);
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
