//! Credentials that expire: a provider the application implements (or the AWS IAM one), asked
//! for a fresh secret by every new connection and, ahead of expiry, by the live ones.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A user name and secret for Redis `AUTH`, and when the secret stops working.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The ACL user; `None` for the `default` user.
    pub username: Option<String>,
    /// The password or token.
    pub password: String,
    /// When the secret expires; `None` if it does not. Live connections re-authenticate
    /// ahead of it (see [`SessionStoreBuilder::credentials_refresh_ahead`]).
    ///
    /// [`SessionStoreBuilder::credentials_refresh_ahead`]: crate::SessionStoreBuilder::credentials_refresh_ahead
    pub expires_at: Option<SystemTime>,
}

// Never print a secret, not even in debug output.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What [`CredentialsProvider::credentials`] returns.
pub type CredentialsFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Credentials, Box<dyn Error + Send + Sync>>> + Send + 'a>>;

/// Gives the current Redis credentials: for secrets that rotate or expire (ElastiCache IAM
/// tokens, passwords from a vault). New connections authenticate with what it returns at that
/// moment; live connections send `AUTH` with a fresh answer ahead of `expires_at`, and a
/// connection whose re-authentication fails is retired and replaced.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use tower_redis_session::{Credentials, CredentialsFuture, CredentialsProvider};
///
/// /// The password that an operator rotates at run time.
/// struct Rotating(Arc<Mutex<String>>);
///
/// impl CredentialsProvider for Rotating {
///     fn credentials(&self) -> CredentialsFuture<'_> {
///         let password = self.0.lock().map(|p| p.clone()).unwrap_or_default();
///         Box::pin(async move {
///             Ok(Credentials { username: Some("app".into()), password, expires_at: None })
///         })
///     }
/// }
/// ```
pub trait CredentialsProvider: Send + Sync + 'static {
    /// The credentials to use now. Asked for by each new connection, and by each live one
    /// ahead of [`Credentials::expires_at`]; not cached by the store, so cache in the
    /// provider if fetching is slow.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tower_redis_session::{Credentials, CredentialsFuture, CredentialsProvider};
    ///
    /// /// A token that a service issues for an hour.
    /// struct HourlyToken;
    ///
    /// impl CredentialsProvider for HourlyToken {
    ///     fn credentials(&self) -> CredentialsFuture<'_> {
    ///         Box::pin(async {
    ///             # let token = String::from("issued token");
    ///             Ok(Credentials {
    ///                 username: Some("app".into()),
    ///                 password: token,
    ///                 expires_at: Some(SystemTime::now() + Duration::from_secs(3600)),
    ///             })
    ///         })
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let c = HourlyToken.credentials().await.unwrap();
    /// # assert_eq!(c.username.as_deref(), Some("app"));
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Whatever the provider cannot get. A new connection then fails (requests get 503,
    /// [`SessionError::Unavailable`](crate::SessionError::Unavailable), until a later attempt
    /// succeeds); a live connection whose re-authentication fails is retired and replaced.
    fn credentials(&self) -> CredentialsFuture<'_>;
}

/// A provider and how long before expiry live connections re-authenticate.
#[derive(Clone)]
pub(crate) struct Refresh {
    pub(crate) provider: Arc<dyn CredentialsProvider>,
    pub(crate) ahead: Duration,
    /// Whether the warning about credentials that live less than `ahead` was given.
    pub(crate) warned: Arc<AtomicBool>,
}

/// Re-authentications are never closer together than this, whatever the expiry says.
const MIN_INTERVAL: Duration = Duration::from_millis(200);

impl Refresh {
    /// Current credentials, or an error that says where they came from.
    pub(crate) async fn current(&self) -> redis::RedisResult<Credentials> {
        self.provider.credentials().await.map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::AuthenticationFailed,
                "the credentials provider failed",
                e.to_string(),
            ))
        })
    }

    /// How long until credentials that expire at `expires_at` (fetched just now) should be
    /// replaced: `ahead` of the expiry; for credentials that live less than that, halfway
    /// through their lifetime (waiting for `ahead` would mean asking again at once, and
    /// every connection re-authenticating, for as long as they are issued), with a warning
    /// the first time.
    pub(crate) fn wait(&self, expires_at: Option<SystemTime>) -> Option<Duration> {
        let expires_at = expires_at?;
        let left = expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let wait = match left.checked_sub(self.ahead) {
            Some(wait) if !wait.is_zero() => wait,
            _ => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        lifetime = ?left,
                        refresh_ahead = ?self.ahead,
                        "Redis credentials expire sooner than credentials_refresh_ahead; \
                         refreshing them halfway through their lifetime instead"
                    );
                }
                left / 2
            }
        };
        Some(wait.max(MIN_INTERVAL))
    }
}

#[cfg(feature = "cluster")]
mod streaming {
    //! The cluster client authenticates its node connections itself: it gets a stream of
    //! credentials, one item now and one ahead of each expiry.
    use super::Refresh;
    use futures_util::stream::{self, Stream};
    use redis::auth::{BasicAuth, StreamingCredentialsProvider};
    use redis::RedisResult;
    use std::pin::Pin;

    impl StreamingCredentialsProvider for Refresh {
        fn subscribe(
            &self,
        ) -> Pin<Box<dyn Stream<Item = RedisResult<BasicAuth>> + Send + 'static>> {
            let refresh = self.clone();
            Box::pin(stream::unfold(
                (refresh, Some(std::time::Duration::ZERO)),
                |(refresh, wait)| async move {
                    // None: the last credentials never expire, nothing more to send.
                    let wait = wait?;
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    let item = refresh.current().await;
                    // After a failure, ask again soon.
                    let next = match &item {
                        Ok(c) => refresh.wait(c.expires_at),
                        Err(_) => Some(super::MIN_INTERVAL * 5),
                    };
                    let item = item.map(|c| {
                        BasicAuth::new(c.username.unwrap_or_else(|| "default".into()), c.password)
                    });
                    Some((item, (refresh, next)))
                },
            ))
        }
    }
}
