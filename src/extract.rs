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

/// Takes the request's session and loads it (one round trip when the request carries a
/// session cookie, none otherwise). Rejects with [`SessionError`]: 503 when the store is
/// unavailable, 500 when the layer is missing.
impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(SessionError::MissingLayer)?;
        session.load().await?;
        Ok(session)
    }
}

/// The status of [`SessionError::status`] with the error's message as a plain-text body.
impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "session error");
        }
        (status, self.to_string()).into_response()
    }
}
