//! The session cookie: signing, verification and the `Set-Cookie` header.
//!
//! A cookie value is `TOKEN.CREATED.IDLE.EXPIRES.ID.USER.TAG`: the 43-character base64url
//! token, the session's creation time in milliseconds, the session's own idle timeout in
//! milliseconds (empty: the store's), the moment a persistent cookie was issued to expire
//! (empty: a browser-session cookie), the public session id (a UUID, 22 base64url
//! characters), for a session bound to a user the user's handle (a digest of the user id,
//! empty otherwise), and a base64url HMAC-SHA256 tag over `name=` and all of that, so a cookie
//! can neither move to another cookie name nor change any of it. Carrying these lets the
//! layer compute the session's expiry (idle timeout cut short by the absolute timeout)
//! without asking the store first, tell when a persistent cookie's `Max-Age` has drifted from
//! the store's expiry, and keep the user's index of sessions in step without a read first.
//! The first key of the ring signs; every key verifies, in constant time. Anything that does
//! not verify is "no session" and costs no store command.

use cookie::Cookie;
use hmac::{digest::KeyInit, Hmac, Mac};
use http::{header::COOKIE, HeaderMap, HeaderValue};
use sha2::Sha256;
use std::fmt::Write as _;
use std::time::Duration;

use crate::base64url::{decode, is_text, push};
use crate::error::ConfigError;
use crate::numbers::Digits;
use crate::token::{Token, UserHandle, TOKEN_CHARS};

type HmacSha256 = Hmac<Sha256>;

/// Length of the base64url tag (32 bytes).
const TAG_CHARS: usize = 43;
/// Length of the base64url public id (16 bytes).
const ID_CHARS: usize = 22;
/// Most digits of a number in the cookie (milliseconds since 1970 need 13 until 2286).
const MAX_DIGITS: usize = 15;
/// At most this many cookies carrying our name are checked per request; more are ignored, so
/// a hostile header costs a bounded number of MACs.
const MAX_CANDIDATES: usize = 4;

/// The `;`-separated pairs of a `Cookie` header, found with `memchr` (a byte-by-byte scan
/// of the header for `;` cost more than all the rest of finding our cookie in it).
fn pairs(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(header);
    std::iter::from_fn(move || {
        let text = rest?;
        let end = memchr::memchr(b';', text);
        rest = end.and_then(|end| text.get(end + 1..));
        text.get(..end.unwrap_or(text.len()))
    })
}

/// A cookie value without the double quotes that RFC 6265 allows around it.
fn unquoted(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

/// `text` split after its first `len` bytes and the '.' that must follow them.
fn fixed(text: &[u8], len: usize) -> Option<(&[u8], &[u8])> {
    match text.get(len) {
        Some(b'.') => Some((text.get(..len)?, text.get(len + 1..)?)),
        _ => None,
    }
}

/// The number (at most [`MAX_DIGITS`] digits, so that it fits; none: `None`) before the next
/// '.' of `text`, and what follows that '.'.
fn number(text: &[u8]) -> Option<(Option<u64>, &[u8])> {
    let end = text.iter().take(MAX_DIGITS + 1).position(|&b| b == b'.')?;
    let (digits, rest) = (text.get(..end)?, text.get(end + 1..)?);
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d & 0x0f));
    Some(((!digits.is_empty()).then_some(n), rest))
}

/// Appends `n` in decimal (without `fmt`, which costs more than the rest of a signature's
/// text). A negative number, which no clock gives, is written as such and never verifies.
fn push_number(out: &mut String, n: i64) {
    match u64::try_from(n) {
        Ok(n) => out.push_str(Digits::of(n).as_str()),
        Err(_) => {
            let _ = write!(out, "{n}");
        }
    }
}

/// A creation time further ahead of this machine's clock than this is refused: it would
/// stretch the absolute timeout (clock jumps, skew between app servers).
pub(crate) const MAX_CLOCK_SKEW_MS: i64 = 60_000;

/// Cookie attributes and the signing key ring.
#[derive(Clone)]
pub(crate) struct CookieCodec {
    name: String,
    /// One MAC per key, already keyed and fed `name=`, cloned for each use.
    macs: Vec<HmacSha256>,
    pub(crate) attributes: CookieAttributes,
    /// `attributes` as `Set-Cookie` writes them after the value (`; HttpOnly; ...`),
    /// rendered once by the `cookie` crate; `None` if its rendering did not start with
    /// `name=` (then each cookie is rendered by the crate: never one without attributes).
    attributes_text: Option<String>,
}

/// The cookie's `SameSite` attribute, for
/// [`SessionStoreBuilder::cookie_same_site`](crate::SessionStoreBuilder::cookie_same_site).
///
/// ```
/// use tower_redis_session::{SameSite, SessionStore};
///
/// let builder = SessionStore::builder().cookie_same_site(SameSite::Strict);
/// # let _ = builder;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SameSite {
    /// Sent only with requests from the site itself.
    Strict,
    /// Also sent with top-level navigations from other sites (the default).
    Lax,
    /// Sent with every request, cross-site ones included; needs `Secure`.
    None,
}

impl SameSite {
    fn rendered(self) -> cookie::SameSite {
        match self {
            Self::Strict => cookie::SameSite::Strict,
            Self::Lax => cookie::SameSite::Lax,
            Self::None => cookie::SameSite::None,
        }
    }
}

/// The attributes sent with the cookie.
#[derive(Clone, Debug)]
pub(crate) struct CookieAttributes {
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    /// New sessions get a persistent cookie (with `Max-Age`) instead of a browser-session one.
    pub(crate) persistent: bool,
}

impl CookieAttributes {
    /// The name of a cookie with these attributes when the application names none:
    /// `__Host-session` where that prefix's rules hold (a sibling subdomain cannot set it),
    /// else `session` (plain-http development, a path or a domain of one's own).
    pub(crate) fn default_name(&self) -> &'static str {
        let host = self.secure && self.path == "/" && self.domain.is_none();
        if host {
            "__Host-session"
        } else {
            "session"
        }
    }

    /// Checks a cookie name with these attributes: what browsers would refuse (every
    /// `Set-Cookie` dropped silently, each writing request a new session) is a `ConfigError`.
    pub(crate) fn check(&self, name: &str) -> Result<(), ConfigError> {
        // RFC 6265 cookie-name: an RFC 7230 token.
        let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(token_char) {
            return Err(ConfigError::CookieName(name.to_owned()));
        }
        let a = self;
        // A bad path or domain would make every Set-Cookie an invalid header value, dropped
        // silently, and each writing request would start a new session.
        if !valid_path(&a.path) {
            return Err(ConfigError::CookiePath(a.path.clone()));
        }
        if let Some(domain) = a.domain.as_ref().filter(|d| !valid_domain(d)) {
            return Err(ConfigError::CookieDomain(domain.clone()));
        }
        // Browsers reject SameSite=None without Secure.
        if a.same_site == SameSite::None && !a.secure {
            return Err(ConfigError::SameSiteNoneInsecure);
        }
        // Browsers match the prefixes whatever their case (RFC 6265bis), and drop every
        // Set-Cookie that breaks their rules.
        let prefixed = |prefix: &str| {
            name.get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        };
        let rule = if prefixed("__Host-") {
            if !a.secure {
                Some("be Secure")
            } else if a.path != "/" {
                Some("have Path=/")
            } else if a.domain.is_some() {
                Some("have no Domain")
            } else {
                None
            }
        } else if prefixed("__Secure-") && !a.secure {
            Some("be Secure")
        } else {
            None
        };
        match rule {
            Some(rule) => Err(ConfigError::CookiePrefix {
                name: name.to_owned(),
                rule,
            }),
            None => Ok(()),
        }
    }
}

/// RFC 6265 path-value (no CTLs, no ';'), stricter: visible ASCII only, so no whitespace.
fn valid_path(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| matches!(b, 0x21..=0x7E) && b != b';')
}

/// A host name: an optional leading '.', then non-empty labels of ASCII letters, digits and
/// '-', at most 253 characters.
fn valid_domain(domain: &str) -> bool {
    let host = domain.strip_prefix('.').unwrap_or(domain);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What the cookie says of its session besides the token; all of it is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    /// When the session was created, in milliseconds since the Unix epoch.
    pub(crate) created_ms: i64,
    /// The session's own idle timeout, shorter than the store's; `None`: the store's.
    pub(crate) idle_ms: Option<u64>,
    /// For a persistent cookie, when the browser drops it as last issued (ms since the
    /// epoch); `None` for a browser-session cookie.
    pub(crate) expires_ms: Option<i64>,
    /// The public session id.
    pub(crate) id: uuid::Uuid,
    /// The user the session is bound to, if any.
    pub(crate) user: Option<UserHandle>,
}

/// The `Cookie` headers of a request that mention our cookie's name, not verified yet: a
/// request that never uses its session never pays for the MAC check on its way (the refresh
/// task checks it, once per distinct cookie it gathers).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Carried {
    /// Nearly always: no allocation (a header value shares the request's bytes).
    One(HeaderValue),
    Many(Vec<HeaderValue>),
}

impl Carried {
    fn values(&self) -> &[HeaderValue] {
        match self {
            Self::One(value) => std::slice::from_ref(value),
            Self::Many(values) => values,
        }
    }
}

/// What a request carried under our cookie's name.
pub(crate) enum CarriedValue<'a> {
    One(&'a [u8]),
    Several(Detached),
}

/// Longest copy of a cookie kept without an allocation: a value this crate signed is shorter.
const INLINE: usize = 190;

/// The values a request carried under our cookie's name (unverified, at most
/// [`MAX_CANDIDATES`], `;`-separated), copied out of the request: a refresh queued for later
/// must not hold on to the server's read buffer, nor free it from another thread.
#[derive(Clone, Debug)]
pub(crate) enum Detached {
    /// Nearly always: no allocation.
    Inline(u8, [u8; INLINE]),
    Heap(Box<[u8]>),
}

impl Detached {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline(len, bytes) => &bytes[..usize::from(*len)],
            Self::Heap(bytes) => bytes,
        }
    }

    /// The first eight bytes of a value: in a cookie we signed, token characters, which
    /// are random.
    pub(crate) fn head_of(value: &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(*value.first_chunk::<8>()?))
    }

    /// A maker of an unallocated copy of `value`, if it is short enough.
    pub(crate) fn inline(value: &[u8]) -> Option<impl FnOnce() -> Self + '_> {
        let len = u8::try_from(value.len())
            .ok()
            .filter(|_| value.len() <= INLINE)?;
        Some(move || {
            let mut bytes = [0u8; INLINE];
            bytes[..value.len()].copy_from_slice(value);
            Self::Inline(len, bytes)
        })
    }

    /// A copy of `value`.
    pub(crate) fn copy_of(value: &[u8]) -> Self {
        match Self::inline(value) {
            Some(copy) => copy(),
            None => Self::Heap(value.into()),
        }
    }

    /// Whether it holds one value only (the request carried one cookie of our name).
    pub(crate) fn is_single(&self) -> bool {
        !self.as_bytes().contains(&b';')
    }
}

impl PartialEq for Detached {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Detached {}

impl std::hash::Hash for Detached {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

/// A verified cookie.
#[derive(Clone, Debug)]
pub(crate) struct Verified {
    pub(crate) token: Token,
    pub(crate) meta: Meta,
    /// Signed by an older key: re-issue it signed by the current one.
    pub(crate) stale_key: bool,
}

impl Verified {
    /// Whether a request made at `now_ms` may carry it: its creation time is not in the
    /// future (by more than [`MAX_CLOCK_SKEW_MS`]).
    pub(crate) fn is_current(&self, now_ms: i64) -> bool {
        self.meta.created_ms <= now_ms.saturating_add(MAX_CLOCK_SKEW_MS)
    }
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
        let mut codec = Self {
            name,
            macs,
            attributes,
            attributes_text: None,
        };
        let prefix = format!("{}=", codec.name);
        let rendered = codec.base(String::new()).to_string();
        codec.attributes_text = rendered.strip_prefix(&prefix).map(str::to_owned);
        codec
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The first cookie with our name that we signed and whose creation time is not in the
    /// future (by more than [`MAX_CLOCK_SKEW_MS`]), if any.
    #[cfg(test)]
    pub(crate) fn verify(&self, headers: &HeaderMap, now_ms: i64) -> Option<Verified> {
        let all = Carried::Many(headers.get_all(COOKIE).iter().cloned().collect());
        self.verify_carried(&all, now_ms)
    }

    /// The `Cookie` headers of a request that may hold our cookie (they mention its name);
    /// `None` when none does. Checked later, if at all: see [`verify_carried`](Self::verify_carried).
    pub(crate) fn carried(&self, headers: &HeaderMap) -> Option<Carried> {
        let name = self.name.as_bytes();
        let ours = |h: &&HeaderValue| h.as_bytes().windows(name.len()).any(|w| w == name);
        let mut found = headers.get_all(COOKIE).iter().filter(ours);
        let first = found.next()?.clone();
        Some(match found.next() {
            None => Carried::One(first),
            Some(second) => {
                let mut all = vec![first, second.clone()];
                all.extend(found.cloned());
                Carried::Many(all)
            }
        })
    }

    /// A token a request carried in a header (see `transport.rs`), as if it had come in
    /// our cookie: it is then verified and used exactly as the cookie is.
    pub(crate) fn carried_token(&self, value: &[u8]) -> Option<Carried> {
        let mut pair = Vec::with_capacity(self.name.len() + 1 + value.len());
        pair.extend_from_slice(self.name.as_bytes());
        pair.push(b'=');
        pair.extend_from_slice(value);
        HeaderValue::from_bytes(&pair).ok().map(Carried::One)
    }

    /// The values of the cookies named like ours among the headers a request carried.
    fn candidates<'a>(&'a self, carried: &'a Carried) -> impl Iterator<Item = &'a [u8]> {
        carried
            .values()
            .iter()
            .flat_map(|h| pairs(h.as_bytes()))
            .filter_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|&b| b == b'=')?;
                (pair[..eq].trim_ascii() == self.name.as_bytes())
                    .then(|| unquoted(pair[eq + 1..].trim_ascii()))
            })
            .take(MAX_CANDIDATES)
    }

    /// The first candidate that we signed and whose creation time is not in the future.
    fn first_valid<'a>(
        &self,
        candidates: impl Iterator<Item = &'a [u8]>,
        now_ms: i64,
    ) -> Option<Verified> {
        candidates
            .filter_map(|value| self.verify_value(value))
            .find(|v| v.is_current(now_ms))
    }

    /// As [`verify_detached`](Self::verify_detached) for a single value, without the check
    /// of its creation time (which depends on the moment: see [`Verified::is_current`]).
    pub(crate) fn verify_single(&self, detached: &Detached) -> Option<Verified> {
        self.verify_value(detached.as_bytes())
    }

    /// As [`verify`](Self::verify), on the headers a request carried.
    pub(crate) fn verify_carried(&self, carried: &Carried, now_ms: i64) -> Option<Verified> {
        self.first_valid(self.candidates(carried), now_ms)
    }

    /// The value of our cookie in `carried` if there is one only (nearly always), else all
    /// of them, owned (see [`detach`](Self::detach)); `None` if there is none.
    pub(crate) fn carried_value<'a>(&'a self, carried: &'a Carried) -> Option<CarriedValue<'a>> {
        let mut candidates = self.candidates(carried);
        let first = candidates.next()?;
        if candidates.next().is_none() {
            return Some(CarriedValue::One(first));
        }
        self.detach(carried).map(CarriedValue::Several)
    }

    /// Our cookie's values out of `carried`, owned; `None` if it holds no cookie of our name.
    pub(crate) fn detach(&self, carried: &Carried) -> Option<Detached> {
        let mut inline = [0u8; INLINE];
        let mut len = 0;
        let mut heap: Option<Vec<u8>> = None;
        let mut found = false;
        for value in self.candidates(carried) {
            let sep: &[u8] = if found { b";" } else { b"" };
            found = true;
            match &mut heap {
                Some(all) => {
                    all.extend_from_slice(sep);
                    all.extend_from_slice(value);
                }
                None if len + sep.len() + value.len() <= INLINE => {
                    for part in [sep, value] {
                        inline[len..len + part.len()].copy_from_slice(part);
                        len += part.len();
                    }
                }
                None => heap = Some([&inline[..len], sep, value].concat()),
            }
        }
        if !found {
            return None;
        }
        Some(match (heap, u8::try_from(len)) {
            (None, Ok(short)) => Detached::Inline(short, inline),
            (Some(all), _) => Detached::Heap(all.into_boxed_slice()),
            (None, Err(_)) => Detached::Heap(inline[..len].into()),
        })
    }

    /// As [`verify`](Self::verify), on what [`detach`](Self::detach) copied.
    pub(crate) fn verify_detached(&self, detached: &Detached, now_ms: i64) -> Option<Verified> {
        self.first_valid(detached.as_bytes().split(|&b| b == b';'), now_ms)
    }

    /// The creation time, own idle timeout and signed expiry of a persistent cookie's value,
    /// read without verifying it (the numbers after the token: no MAC); `None` for a value
    /// not of our shape, or a browser-session cookie. Only a guide to whether verifying the
    /// value is worth it.
    pub(crate) fn persistent_unverified(value: &[u8]) -> Option<(i64, Option<u64>, i64)> {
        let (_, rest) = fixed(value, TOKEN_CHARS)?;
        let (created, rest) = number(rest)?;
        let (idle_ms, rest) = number(rest)?;
        let (expires, _) = number(rest)?;
        let expires = i64::try_from(expires?).ok()?;
        Some((i64::try_from(created?).ok()?, idle_ms, expires))
    }

    /// As [`verify`](Self::verify), for one value.
    pub(crate) fn verify_one(&self, value: &[u8], now_ms: i64) -> Option<Verified> {
        self.verify_value(value).filter(|v| v.is_current(now_ms))
    }

    fn verify_value(&self, value: &[u8]) -> Option<Verified> {
        // The base64url parts have fixed lengths: only the numbers are scanned for their ends.
        let (token, rest) = fixed(value, TOKEN_CHARS)?;
        let (created, rest) = number(rest)?;
        let (idle_ms, rest) = number(rest)?;
        let (expires, rest) = number(rest)?;
        let (id, rest) = fixed(rest, ID_CHARS)?;
        let (user, tag) = rest.split_at_checked(rest.len().checked_sub(TAG_CHARS)?)?;
        let user = user.strip_suffix(b".")?;
        let user_ok = user.is_empty() || (user.len() == UserHandle::CHARS && is_text(user));
        if !(user_ok && is_text(token)) {
            return None;
        }
        let (id, tag): ([u8; 16], [u8; 32]) = (decode(id)?, decode(tag)?);
        let signed = value.get(..value.len().checked_sub(TAG_CHARS + 1)?)?;
        let index = self.macs.iter().position(|mac| {
            let mut mac = mac.clone();
            mac.update(signed);
            mac.verify_slice(&tag).is_ok()
        })?;
        let user = if user.is_empty() {
            None
        } else {
            Some(UserHandle::from_verified(std::str::from_utf8(user).ok()?))
        };
        let meta = Meta {
            created_ms: i64::try_from(created?).ok()?,
            idle_ms,
            expires_ms: expires.and_then(|e| i64::try_from(e).ok()),
            id: uuid::Uuid::from_bytes(id),
            user,
        };
        Some(Verified {
            token: Token::from_verified(token)?,
            meta,
            stale_key: index > 0,
        })
    }

    /// `TOKEN.CREATED.IDLE.EXPIRES.ID.USER.TAG`, signed with the current key.
    pub(crate) fn sign(&self, token: &Token, meta: &Meta) -> String {
        let mut value = String::with_capacity(TOKEN_CHARS + 160);
        self.sign_into(&mut value, token, meta);
        value
    }

    /// Appends the signed value to `out`.
    fn sign_into(&self, out: &mut String, token: &Token, meta: &Meta) {
        let start = out.len();
        let value = out;
        value.push_str(token.as_str());
        value.push('.');
        push_number(value, meta.created_ms);
        value.push('.');
        if let Some(idle) = meta.idle_ms {
            value.push_str(Digits::of(idle).as_str());
        }
        value.push('.');
        if let Some(expires) = meta.expires_ms {
            push_number(value, expires);
        }
        value.push('.');
        push(value, meta.id.as_bytes());
        value.push('.');
        if let Some(user) = &meta.user {
            value.push_str(user.as_str());
        }
        if let Some(mac) = self.macs.first() {
            let mut mac = mac.clone();
            mac.update(value.get(start..).unwrap_or_default().as_bytes());
            value.push('.');
            push(value, &mac.finalize().into_bytes());
        }
    }

    /// `Set-Cookie` for a live session: persistent with this `Max-Age` when `max_age` is
    /// given (and `meta.expires_ms` should then say when it ends), a browser-session cookie
    /// otherwise.
    pub(crate) fn set_cookie(
        &self,
        token: &Token,
        meta: &Meta,
        max_age: Option<Duration>,
    ) -> Option<HeaderValue> {
        let Some(attributes) = &self.attributes_text else {
            let mut cookie = self.base(self.sign(token, meta));
            if let Some(max_age) = max_age {
                cookie.set_max_age(cookie::time::Duration::seconds(
                    i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
                ));
            }
            return HeaderValue::try_from(cookie.to_string()).ok();
        };
        // Written in one go, as the `cookie` crate renders it (see `attributes_text`).
        let mut header =
            String::with_capacity(self.name.len() + TOKEN_CHARS + 200 + attributes.len());
        header.push_str(&self.name);
        header.push('=');
        self.sign_into(&mut header, token, meta);
        header.push_str(attributes);
        if let Some(max_age) = max_age {
            let _ = write!(
                header,
                "; Max-Age={}",
                max_age.as_secs().min(i64::MAX as u64)
            );
        }
        HeaderValue::try_from(header).ok()
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
        cookie.set_same_site(a.same_site.rendered());
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

    fn meta(created_ms: i64) -> Meta {
        Meta {
            created_ms,
            idle_ms: None,
            expires_ms: None,
            id: uuid::Uuid::now_v7(),
            user: None,
        }
    }

    const K1: &[u8] = &[1; 32];
    const K2: &[u8] = &[2; 32];
    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn round_trip_and_tamper() {
        let c = codec("id", &[K1]);
        let t = Token::generate().unwrap();
        let m = Meta {
            created_ms: 1_700_000_000_123,
            idle_ms: Some(60_000),
            expires_ms: Some(1_700_000_060_123),
            id: uuid::Uuid::now_v7(),
            user: Some(UserHandle::of("alice")),
        };
        let v = c.sign(&t, &m);
        let got = c
            .verify(&headers(&format!("a=b; id={v}; c=d")), NOW)
            .unwrap();
        assert_eq!(got.token, t);
        assert_eq!(got.meta, m.clone());
        assert!(!got.stale_key);
        // One changed character of the token, a number or the tag: rejected.
        for i in 0..v.len() {
            let mut bad = v.clone().into_bytes();
            bad[i] = match bad[i] {
                b'0'..=b'8' => bad[i] + 1,
                b'A' => b'B',
                _ => b'A',
            };
            let bad = String::from_utf8(bad).unwrap();
            assert!(
                c.verify(&headers(&format!("id={bad}")), NOW).is_none(),
                "{i}"
            );
        }
        // Defaults leave the optional parts empty, and still verify.
        let m = meta(5);
        let v = c.sign(&t, &m);
        assert!(v.contains(".5..."), "{v}");
        assert_eq!(c.verify(&headers(&format!("id={v}")), NOW).unwrap().meta, m);
    }

    #[test]
    fn a_creation_time_in_the_future_is_refused() {
        let c = codec("id", &[K1]);
        let t = Token::generate().unwrap();
        let ahead = |ms| format!("id={}", c.sign(&t, &meta(NOW + ms)));
        assert!(c.verify(&headers(&ahead(MAX_CLOCK_SKEW_MS)), NOW).is_some());
        assert!(c
            .verify(&headers(&ahead(MAX_CLOCK_SKEW_MS + 1)), NOW)
            .is_none());
        assert!(c.verify(&headers(&ahead(3_600_000)), NOW).is_none());
    }

    #[test]
    fn the_tag_binds_the_cookie_name() {
        let t = Token::generate().unwrap();
        let v = codec("other", &[K1]).sign(&t, &meta(1));
        assert!(codec("id", &[K1])
            .verify(&headers(&format!("id={v}")), NOW)
            .is_none());
    }

    #[test]
    fn older_keys_verify_and_ask_for_reissue() {
        let t = Token::generate().unwrap();
        let v = codec("id", &[K1]).sign(&t, &meta(1));
        let rotated = codec("id", &[K2, K1]);
        let got = rotated.verify(&headers(&format!("id={v}")), NOW).unwrap();
        assert!(got.stale_key);
        assert!(codec("id", &[K2])
            .verify(&headers(&format!("id={v}")), NOW)
            .is_none());
    }

    #[test]
    fn later_valid_cookie_with_same_name_is_found() {
        let c = codec("id", &[K1]);
        let t = Token::generate().unwrap();
        let v = c.sign(&t, &meta(1));
        let got = c
            .verify(&headers(&format!("id=junk; id={v}")), NOW)
            .unwrap();
        assert_eq!(got.token, t);
    }

    #[test]
    fn a_quoted_value_is_read() {
        // RFC 6265's cookie-value may be wrapped in double quotes.
        let c = codec("id", &[K1]);
        let t = Token::generate().unwrap();
        let v = c.sign(&t, &meta(1));
        let got = c.verify(&headers(&format!("id=\"{v}\"")), NOW).unwrap();
        assert_eq!(got.token, t);
        // One quote alone is no quoting, and not our value.
        assert!(c.verify(&headers(&format!("id=\"{v}")), NOW).is_none());
    }

    #[test]
    fn set_cookie_has_safe_defaults() {
        let c = codec("__Host-id", &[K1]);
        let t = Token::generate().unwrap();
        let h = c.set_cookie(&t, &meta(1), None).unwrap();
        let s = h.to_str().unwrap();
        assert!(s.starts_with("__Host-id="));
        for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
            assert!(s.contains(attr), "{s} lacks {attr}");
        }
        assert!(
            !s.contains("Max-Age"),
            "browser-session cookie by default: {s}"
        );
        let h = c
            .set_cookie(&t, &meta(1), Some(Duration::from_millis(90_900)))
            .unwrap();
        let max_age: Vec<&str> = h
            .to_str()
            .unwrap()
            .split("; ")
            .filter(|a| a.starts_with("Max-Age="))
            .collect();
        assert_eq!(max_age, ["Max-Age=90"]);
        let r = c.removal().unwrap();
        assert!(r.to_str().unwrap().split("; ").any(|a| a == "Max-Age=0"));
    }

    #[test]
    fn set_cookie_renders_as_the_cookie_crate() {
        let t = Token::generate().unwrap();
        for (secure, same_site, domain) in [
            (true, SameSite::Lax, None),
            (false, SameSite::None, Some("example.com")),
            (true, SameSite::Strict, Some("a.example")),
        ] {
            let attributes = CookieAttributes {
                path: "/app".into(),
                domain: domain.map(str::to_owned),
                secure,
                http_only: !secure,
                same_site,
                persistent: false,
            };
            let keys = [K1.to_vec()];
            let c = CookieCodec::new("sid".into(), &keys, attributes);
            assert!(c.attributes_text.is_some());
            let mut rendered_each_time = c.clone();
            rendered_each_time.attributes_text = None;
            let m = meta(1);
            for (c, max_age) in [&c, &rendered_each_time]
                .into_iter()
                .flat_map(|c| [(c, None), (c, Some(Duration::from_secs(1_209_600)))])
            {
                let mut expected = c.base(c.sign(&t, &m));
                if let Some(m) = max_age {
                    expected.set_max_age(cookie::time::Duration::seconds(m.as_secs() as i64));
                }
                let got = c.set_cookie(&t, &m, max_age).unwrap();
                assert_eq!(got.to_str().unwrap(), expected.to_string());
            }
        }
    }
}
