//! The session cookie: signing, verification and the `Set-Cookie` header.
//!
//! A cookie value is `TOKEN.CREATED.TAG`: the 43-character base64url token, the session's
//! creation time in milliseconds, and a base64url HMAC-SHA256 tag over `name=TOKEN.CREATED`,
//! so a cookie cannot be moved to another cookie name nor have its age changed. Carrying the
//! creation time lets the layer compute the session's expiry (idle timeout cut short by the
//! absolute timeout) without asking the store first. The first key of the ring signs; every
//! key verifies, in constant time. Anything that does not verify is "no session" and costs no
//! store command.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use cookie::{Cookie, SameSite};
use hmac::{digest::KeyInit, Hmac, Mac};
use http::{header::COOKIE, HeaderMap, HeaderValue};
use sha2::Sha256;
use std::time::Duration;

use crate::token::{Token, TOKEN_CHARS};

type HmacSha256 = Hmac<Sha256>;

/// Length of the base64url tag (32 bytes).
const TAG_CHARS: usize = 43;
/// Most digits of the creation time (milliseconds since 1970 need 13 until the year 2286).
const MAX_CREATED_DIGITS: usize = 15;
/// At most this many cookies carrying our name are checked per request; more are ignored, so
/// a hostile header costs a bounded number of MACs.
const MAX_CANDIDATES: usize = 4;

/// Cookie attributes and the signing key ring.
#[derive(Clone)]
pub(crate) struct CookieCodec {
    name: String,
    /// One MAC per key, already keyed and fed `name=`, cloned for each use.
    macs: Vec<HmacSha256>,
    pub(crate) attributes: CookieAttributes,
}

/// The attributes sent with the cookie.
#[derive(Clone, Debug)]
pub(crate) struct CookieAttributes {
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    /// Persistent cookie (with `Max-Age`) instead of a browser-session cookie.
    pub(crate) persistent: bool,
}

/// A verified cookie.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) token: Token,
    /// When the session was created, in milliseconds since the Unix epoch.
    pub(crate) created_ms: i64,
    /// Signed by an older key: re-issue it signed by the current one.
    pub(crate) stale_key: bool,
}

impl CookieCodec {
    /// Keys must already be validated (non-empty ring, each at least 32 bytes).
    pub(crate) fn new(name: String, keys: &[Vec<u8>], attributes: CookieAttributes) -> Self {
        let macs = keys
            .iter()
            .filter_map(|k| {
                let mut mac = <HmacSha256 as KeyInit>::new_from_slice(k).ok()?;
                mac.update(name.as_bytes());
                mac.update(b"=");
                Some(mac)
            })
            .collect();
        Self {
            name,
            macs,
            attributes,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The first cookie with our name that we signed, if any.
    pub(crate) fn verify(&self, headers: &HeaderMap) -> Option<Verified> {
        headers
            .get_all(COOKIE)
            .iter()
            .flat_map(|h| h.as_bytes().split(|&b| b == b';'))
            .filter_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|&b| b == b'=')?;
                (pair[..eq].trim_ascii() == self.name.as_bytes())
                    .then(|| pair[eq + 1..].trim_ascii())
            })
            .take(MAX_CANDIDATES)
            .find_map(|value| self.verify_value(value))
    }

    fn verify_value(&self, value: &[u8]) -> Option<Verified> {
        let (token, rest) = (value.get(..TOKEN_CHARS)?, value.get(TOKEN_CHARS..)?);
        let rest = rest.strip_prefix(b".")?;
        let dot = rest.iter().position(|&b| b == b'.')?;
        let (created, tag) = (&rest[..dot], &rest[dot + 1..]);
        if tag.len() != TAG_CHARS
            || created.is_empty()
            || created.len() > MAX_CREATED_DIGITS
            || !created.iter().all(u8::is_ascii_digit)
            || !token
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return None;
        }
        let mut tag_bytes = [0u8; 33];
        let n = URL_SAFE_NO_PAD.decode_slice(tag, &mut tag_bytes).ok()?;
        let tag_bytes = tag_bytes.get(..n)?;
        let signed = &value[..TOKEN_CHARS + 1 + created.len()];
        let index = self.macs.iter().position(|mac| {
            let mut mac = mac.clone();
            mac.update(signed);
            mac.verify_slice(tag_bytes).is_ok()
        })?;
        // The checks above make both parts ASCII.
        let token = std::str::from_utf8(token).ok()?;
        let created_ms = std::str::from_utf8(created).ok()?.parse().ok()?;
        Some(Verified {
            token: Token::from_verified(token),
            created_ms,
            stale_key: index > 0,
        })
    }

    /// `TOKEN.CREATED.TAG`, signed with the current key.
    pub(crate) fn sign(&self, token: &Token, created_ms: i64) -> String {
        let mut value = format!("{}.{created_ms}", token.as_str());
        if let Some(mac) = self.macs.first() {
            let mut mac = mac.clone();
            mac.update(value.as_bytes());
            value.push('.');
            URL_SAFE_NO_PAD.encode_string(mac.finalize().into_bytes(), &mut value);
        }
        value
    }

    /// `Set-Cookie` for a live session. `max_age` is used for persistent cookies only.
    pub(crate) fn set_cookie(
        &self,
        token: &Token,
        created_ms: i64,
        max_age: Duration,
    ) -> Option<HeaderValue> {
        let mut cookie = self.base(self.sign(token, created_ms));
        if self.attributes.persistent {
            cookie.set_max_age(cookie::time::Duration::seconds(
                i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
            ));
        }
        HeaderValue::try_from(cookie.to_string()).ok()
    }

    /// `Set-Cookie` that makes the browser drop the cookie.
    pub(crate) fn removal(&self) -> Option<HeaderValue> {
        let mut cookie = self.base(String::new());
        cookie.set_max_age(cookie::time::Duration::ZERO);
        cookie.set_expires(cookie::time::OffsetDateTime::UNIX_EPOCH);
        HeaderValue::try_from(cookie.to_string()).ok()
    }

    fn base(&self, value: String) -> Cookie<'static> {
        let a = &self.attributes;
        let mut cookie = Cookie::new(self.name.clone(), value);
        cookie.set_path(a.path.clone());
        if let Some(domain) = &a.domain {
            cookie.set_domain(domain.clone());
        }
        cookie.set_secure(a.secure);
        cookie.set_http_only(a.http_only);
        cookie.set_same_site(a.same_site);
        cookie
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> CookieAttributes {
        CookieAttributes {
            path: "/".into(),
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            persistent: false,
        }
    }

    fn codec(name: &str, keys: &[&[u8]]) -> CookieCodec {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        CookieCodec::new(name.into(), &keys, attrs())
    }

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
        h
    }

    const K1: &[u8] = &[1; 32];
    const K2: &[u8] = &[2; 32];

    #[test]
    fn round_trip_and_tamper() {
        let c = codec("id", &[K1]);
        let t = Token::generate().unwrap();
        let v = c.sign(&t, 1_700_000_000_123);
        let got = c.verify(&headers(&format!("a=b; id={v}; c=d"))).unwrap();
        assert_eq!(got.token, t);
        assert_eq!(got.created_ms, 1_700_000_000_123);
        assert!(!got.stale_key);
        // One changed character of the token, the creation time or the tag: rejected.
        for i in [0, 50, 70] {
            let mut bad = v.clone().into_bytes();
            bad[i] = match bad[i] {
                b'0'..=b'8' => bad[i] + 1,
                b'A' => b'B',
                _ => b'A',
            };
            let bad = String::from_utf8(bad).unwrap();
            assert!(c.verify(&headers(&format!("id={bad}"))).is_none());
        }
    }

    #[test]
    fn the_tag_binds_the_cookie_name() {
        let t = Token::generate().unwrap();
        let v = codec("other", &[K1]).sign(&t, 1);
        assert!(codec("id", &[K1])
            .verify(&headers(&format!("id={v}")))
            .is_none());
    }

    #[test]
    fn older_keys_verify_and_ask_for_reissue() {
        let t = Token::generate().unwrap();
        let v = codec("id", &[K1]).sign(&t, 1);
        let rotated = codec("id", &[K2, K1]);
        let got = rotated.verify(&headers(&format!("id={v}"))).unwrap();
        assert!(got.stale_key);
        assert!(codec("id", &[K2])
            .verify(&headers(&format!("id={v}")))
            .is_none());
    }

    #[test]
    fn later_valid_cookie_with_same_name_is_found() {
        let c = codec("id", &[K1]);
        let t = Token::generate().unwrap();
        let v = c.sign(&t, 1);
        let got = c.verify(&headers(&format!("id=junk; id={v}"))).unwrap();
        assert_eq!(got.token, t);
    }

    #[test]
    fn set_cookie_has_safe_defaults() {
        let c = codec("__Host-id", &[K1]);
        let t = Token::generate().unwrap();
        let h = c.set_cookie(&t, 1, Duration::from_secs(60)).unwrap();
        let s = h.to_str().unwrap();
        assert!(s.starts_with("__Host-id="));
        for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
            assert!(s.contains(attr), "{s} lacks {attr}");
        }
        assert!(
            !s.contains("Max-Age"),
            "browser-session cookie by default: {s}"
        );
        let r = c.removal().unwrap();
        assert!(r.to_str().unwrap().contains("Max-Age=0"));
    }
}
