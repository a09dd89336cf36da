//! ElastiCache IAM authentication (feature `aws-iam`): the password is a SigV4-presigned
//! `connect` request, made from the application's AWS credentials.

use std::error::Error;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;

use super::credentials::{Credentials, CredentialsFuture, CredentialsProvider};

/// How long a token lets new connections authenticate (ElastiCache's rule).
const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// A [`CredentialsProvider`] that signs ElastiCache IAM auth tokens.
///
/// Every new connection gets a freshly signed token (valid 15 minutes to connect); live
/// connections re-authenticate with a fresh one ahead of its expiry (see
/// [`credentials_refresh_ahead`](crate::SessionStoreBuilder::credentials_refresh_ahead)),
/// well within the 12 hours after which ElastiCache drops an IAM connection that did not.
/// Temporary AWS credentials are asked for anew each time, so a token never outlives them.
/// TLS is required by ElastiCache for IAM users: use a `rediss://` URL.
///
/// Hand in the application's credential chain, for example aws-config's
/// `config.credentials_provider()`; here, fixed keys:
///
/// ```
/// use aws_credential_types::Credentials;
/// use tower_redis_session::{ElastiCacheIam, SessionStore};
///
/// # async fn build() -> Result<(), tower_redis_session::ConfigError> {
/// let keys = Credentials::new("AKIDEXAMPLE", "secret", None, None, "example");
/// let store = SessionStore::builder()
///     .redis_url("rediss://my-cache.xxxxxx.use1.cache.amazonaws.com:6379")
///     .credentials_provider(ElastiCacheIam::new("my-cache", "app-user", "us-east-1", keys))
///     .signing_keys([[7u8; 32]])
///     .build()
///     .await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ElastiCacheIam {
    cache_name: String,
    user_id: String,
    region: String,
    serverless: bool,
    credentials: SharedCredentialsProvider,
}

impl ElastiCacheIam {
    /// Tokens for user `user_id` (the IAM-enabled ElastiCache user; its name is its id) of
    /// the replication group or serverless cache `cache_name`, in `region`, signed with
    /// `credentials` (any AWS credentials provider: aws-config's chain, fixed keys...).
    ///
    /// # Examples
    ///
    /// ```
    /// use aws_credential_types::Credentials;
    /// use tower_redis_session::ElastiCacheIam;
    ///
    /// let keys = Credentials::new("AKIDEXAMPLE", "secret", None, None, "example");
    /// let iam = ElastiCacheIam::new("my-cache", "app-user", "us-east-1", keys);
    /// # let _ = iam;
    /// ```
    pub fn new(
        cache_name: impl Into<String>,
        user_id: impl Into<String>,
        region: impl Into<String>,
        credentials: impl ProvideCredentials + 'static,
    ) -> Self {
        Self {
            cache_name: cache_name.into(),
            user_id: user_id.into(),
            region: region.into(),
            serverless: false,
            credentials: SharedCredentialsProvider::new(credentials),
        }
    }

    /// The cache is an ElastiCache Serverless cache (the token then names the resource
    /// type `ServerlessCache`).
    ///
    /// # Examples
    ///
    /// ```
    /// use aws_credential_types::Credentials;
    /// use tower_redis_session::ElastiCacheIam;
    ///
    /// let keys = Credentials::new("AKIDEXAMPLE", "secret", None, None, "example");
    /// let iam = ElastiCacheIam::new("my-serverless-cache", "app-user", "eu-west-1", keys)
    ///     .serverless();
    /// # let _ = iam;
    /// ```
    pub fn serverless(mut self) -> Self {
        self.serverless = true;
        self
    }

    /// The auth token that `credentials` sign at `time`: the presigned request
    /// `<cache>/?Action=connect&User=<user>` (without `http://`), valid 15 minutes. The
    /// store calls it for you (as a [`CredentialsProvider`]); it is public for checks and
    /// tools.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use aws_credential_types::Credentials;
    /// use tower_redis_session::ElastiCacheIam;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let keys = Credentials::new("AKIDEXAMPLE", "secret", None, None, "example");
    /// let iam = ElastiCacheIam::new("my-cache", "app-user", "us-east-1", keys.clone());
    /// let token = iam.token(&keys, SystemTime::now())?;
    /// assert!(token.starts_with("my-cache/?Action=connect&User=app-user&"));
    /// assert!(token.contains("X-Amz-Signature="));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// If the request cannot be signed: a cache name that makes no valid URL, or signing
    /// parameters that SigV4 refuses.
    pub fn token(
        &self,
        credentials: &aws_credential_types::Credentials,
        time: SystemTime,
    ) -> Result<String, Box<dyn Error + Send + Sync>> {
        let mut url = format!(
            "http://{}/?Action=connect&User={}",
            self.cache_name,
            percent_encode(&self.user_id)
        );
        if self.serverless {
            url.push_str("&ResourceType=ServerlessCache");
        }
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(TOKEN_LIFETIME);
        let identity = credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("elasticache")
            .time(time)
            .settings(settings)
            .build()?
            .into();
        let signable = SignableRequest::new(
            "GET",
            url.as_str(),
            std::iter::empty(),
            SignableBody::Bytes(&[]),
        )?;
        let (instructions, _) = sign(signable, &params)?.into_parts();
        let mut request = http::Request::builder().uri(url.as_str()).body(())?;
        instructions.apply_to_request_http1x(&mut request);
        let signed = request.uri().to_string();
        Ok(signed
            .strip_prefix("http://")
            .map(str::to_owned)
            .unwrap_or(signed))
    }
}

impl CredentialsProvider for ElastiCacheIam {
    fn credentials(&self) -> CredentialsFuture<'_> {
        Box::pin(async move {
            let aws = self.credentials.provide_credentials().await?;
            let now = SystemTime::now();
            let password = self.token(&aws, now)?;
            let token_expiry = now + TOKEN_LIFETIME;
            Ok(Credentials {
                username: Some(self.user_id.clone()),
                password,
                expires_at: Some(aws.expiry().map_or(token_expiry, |e| e.min(token_expiry))),
            })
        })
    }
}

/// RFC 3986 unreserved characters stay; everything else is %XX (SigV4's encoding).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
