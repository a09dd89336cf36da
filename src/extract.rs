//! The axum extractor for [`Session`] and the response for [`SessionError`].
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_redis_session::{Session, SessionError, SessionStore};
//!
//! async fn visits(session: Session) -> Result<String, SessionError> {
//!     Ok(session.incr("visits", 1).await?.to_string())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SessionStore::builder().memory().signing_keys([[9u8; 32]]).build().await?;
//! let app: Router = Router::new().route("/", get(visits)).layer(store.layer());
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

use crate::error::SessionError;
use crate::session::Session;

/// Takes the request's session, without a round trip: it is loaded when the handler first
/// reads it.
///
/// # Examples
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_redis_session::{Session, SessionError, SessionStore};
///
/// async fn handler(session: Session) -> Result<String, SessionError> {
///     Ok(format!("{:?}", session.get::<String>("user").await?))
/// }
///
/// # async fn app(store: SessionStore) {
/// let app: Router = Router::new().route("/", get(handler)).layer(store.layer());
/// # let _ = app;
/// # }
/// ```
///
/// # Errors
///
/// Rejects with [`SessionError::MissingLayer`] (500) when the request did not pass through
/// a [`SessionLayer`](crate::SessionLayer): add [`SessionStore::layer`](crate::SessionStore::layer)
/// to the route (layers added with `Router::layer` cover the routes added before them).
impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(SessionError::MissingLayer)?;
        Ok(session)
    }
}

/// The status of [`SessionError::status`] with [`SessionError::public_message`] as a
/// plain-text body. The full error, which may hold Redis replies, goes to `tracing` only:
/// at error level for 5xx, with its source chain, and at debug level otherwise.
///
/// # Examples
///
/// ```
/// use axum::response::IntoResponse;
/// use http::StatusCode;
/// use tower_redis_session::SessionError;
///
/// let response = SessionError::Ended.into_response();
/// assert_eq!(response.status(), StatusCode::CONFLICT);
/// ```
impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        crate::observe::answered(&self);
        let status = self.status();
        if status.is_server_error() {
            let mut chain = String::new();
            let mut source = std::error::Error::source(&self);
            while let Some(e) = source {
                chain.push_str(": ");
                chain.push_str(&e.to_string());
                source = e.source();
            }
            tracing::error!(
                status = status.as_u16(),
                error = %self,
                sources = %chain,
                "session error"
            );
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "session error");
        }
        (status, self.public_message()).into_response()
    }
}
