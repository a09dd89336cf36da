//! The cookie: its signing keys, name and attributes (the rules they must follow live in
//! [`crate::cookie`]).

use super::SessionStoreBuilder;
use crate::cookie::SameSite;
use crate::error::ConfigError;

/// The cookie.
impl SessionStoreBuilder {
    /// The HMAC-SHA256 key ring, each key at least [`MIN_KEY_BYTES`](crate::MIN_KEY_BYTES)
    /// (32) bytes. The first key signs; all keys verify, and a cookie verified by an older key
    /// is re-issued signed by the first. To rotate, put the new key first and keep the old one
    /// until the cookies it signed have expired.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// # let (new_key, old_key) = (vec![1u8; 32], vec![2u8; 32]);
    /// // Keys come from your secrets (32 random bytes or more each), never from the code.
    /// let builder = SessionStore::builder().signing_keys([new_key, old_key]);
    /// # let _ = builder;
    /// ```
    pub fn signing_keys<K: AsRef<[u8]>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.keys = keys.into_iter().map(|k| k.as_ref().to_vec()).collect();
        self
    }

    /// Cookie name. By default `__Host-session` where that prefix's rules hold (Secure,
    /// Path=/, no Domain: the default attributes), so that a sibling subdomain cannot set a
    /// cookie of that name and pin a user to its session ("cookie tossing"); `session`
    /// otherwise (plain-http development, a path or a domain of your own). A `__Host-` name
    /// requires Secure, Path=/ and no Domain; a `__Secure-` name requires Secure, whatever
    /// the case of the prefix. [`build`](Self::build) checks these rules.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().cookie_name("__Host-myapp");
    /// # let _ = builder;
    /// ```
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = Some(name.into());
        self
    }

    /// The cookie name as configured, or the default for the attributes.
    pub(super) fn name(&self) -> String {
        let default = || self.attributes.default_name().to_owned();
        self.cookie_name.clone().unwrap_or_else(default)
    }

    /// Cookie `Path` (default `/`); it must start with `/`. With another path the default
    /// name is `session` rather than `__Host-session`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().cookie_path("/app");
    /// # let _ = builder;
    /// ```
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.attributes.path = path.into();
        self
    }

    /// Cookie `Domain` (default none: host-only). With a domain, subdomains get the cookie too,
    /// and the default name is `session` rather than `__Host-session`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().cookie_domain("example.com");
    /// # let _ = builder;
    /// ```
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.attributes.domain = Some(domain.into());
        self
    }

    /// The `Secure` attribute (default on). Turn it off only for plain-http local use.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// # let development = true;
    /// let builder = SessionStore::builder().cookie_secure(!development);
    /// # let _ = builder;
    /// ```
    pub fn cookie_secure(mut self, secure: bool) -> Self {
        self.attributes.secure = secure;
        self
    }

    /// The `HttpOnly` attribute (default on): scripts of the page cannot read the cookie.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().cookie_http_only(true);
    /// # let _ = builder;
    /// ```
    pub fn cookie_http_only(mut self, http_only: bool) -> Self {
        self.attributes.http_only = http_only;
        self
    }

    /// The `SameSite` attribute (default `Lax`). [`SameSite::None`] needs
    /// [`cookie_secure`](Self::cookie_secure).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::{SameSite, SessionStore};
    ///
    /// let builder = SessionStore::builder().cookie_same_site(SameSite::Strict);
    /// # let _ = builder;
    /// ```
    pub fn cookie_same_site(mut self, same_site: SameSite) -> Self {
        self.attributes.same_site = same_site;
        self
    }

    /// Send a persistent cookie whose `Max-Age` follows the server-side expiry (default off:
    /// the cookie ends with the browser session). One session can choose otherwise with
    /// [`Session::set_persistent`](crate::Session::set_persistent).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_redis_session::SessionStore;
    ///
    /// let builder = SessionStore::builder().cookie_persistent(true);
    /// # let _ = builder;
    /// ```
    pub fn cookie_persistent(mut self, persistent: bool) -> Self {
        self.attributes.persistent = persistent;
        self
    }

    pub(super) fn validate_cookie(&self) -> Result<(), ConfigError> {
        self.attributes.check(&self.name())
    }

    /// Renamed [`cookie_secure`](Self::cookie_secure).
    #[deprecated(since = "0.1.0", note = "renamed `cookie_secure`")]
    pub fn secure(self, secure: bool) -> Self {
        self.cookie_secure(secure)
    }

    /// Renamed [`cookie_http_only`](Self::cookie_http_only).
    #[deprecated(since = "0.1.0", note = "renamed `cookie_http_only`")]
    pub fn http_only(self, http_only: bool) -> Self {
        self.cookie_http_only(http_only)
    }

    /// Renamed [`cookie_same_site`](Self::cookie_same_site).
    #[deprecated(since = "0.1.0", note = "renamed `cookie_same_site`")]
    pub fn same_site(self, same_site: SameSite) -> Self {
        self.cookie_same_site(same_site)
    }

    /// Renamed [`cookie_persistent`](Self::cookie_persistent).
    #[deprecated(since = "0.1.0", note = "renamed `cookie_persistent`")]
    pub fn persistent(self, persistent: bool) -> Self {
        self.cookie_persistent(persistent)
    }
}
