//! Session tokens and the store keys derived from them.
//!
//! The token is what the client holds. The store only ever sees `prefix + SHA-256(token)`
//! (its first 128 bits, base64url), so a Redis dump, `MONITOR` or a replica never shows a
//! usable cookie. 128 bits keep preimages out of reach and collisions at 2^64 sessions, in a
//! key 21 bytes shorter than the whole digest: Redis memory is per byte of key.
//!
//! Random bytes come straight from the operating system's CSPRNG, one `getrandom` call per
//! new session (its token and public id in one draw). Two alternatives were measured
//! (42-byte draws, release build, 1,000,000 each, on this project's 2-core machine under
//! load): `getrandom` per draw 0.7–0.9 µs; a per-thread kilobyte of OS bytes handed out in
//! order (what this crate used to keep) 0.2 µs; `rand`'s `ThreadRng` 0.02–0.04 µs. The
//! 0.5–0.7 µs saved is about 1 % of creating a session over loopback, within the benchmark's
//! run-to-run noise, and not worth code of our own; `ThreadRng` is a userspace generator
//! seeded by the OS (not the OS's own bytes, which this crate promises) and a new
//! dependency.

use sha2::{Digest, Sha256};

use crate::base64url;

/// Bytes of entropy in a token: 256 bits from the OS CSPRNG.
pub(crate) const TOKEN_BYTES: usize = 32;
/// Length of a token once base64url-encoded without padding.
pub(crate) const TOKEN_CHARS: usize = 43;
/// Random bytes of a UUID v7 (its 74 random bits, rounded up).
const ID_RANDOM_BYTES: usize = 10;
/// Bytes of the token's SHA-256 digest that make the store key.
const KEY_DIGEST_BYTES: usize = 16;

/// A session token as it travels in the cookie (base64url, 43 characters), held inline:
/// every request with a cookie makes one.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Token([u8; TOKEN_CHARS]);

impl Token {
    /// A fresh token from the operating system's CSPRNG.
    pub(crate) fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self::encoding(&bytes))
    }

    /// The token that encodes these [`TOKEN_BYTES`] random bytes.
    fn encoding(bytes: &[u8]) -> Self {
        let mut text = [0u8; TOKEN_CHARS];
        base64url::encode_to(bytes, &mut text);
        Self(text)
    }

    /// A fresh token and a fresh public id (a UUID v7 stamped `now_ms`), their random bits
    /// from one draw of the OS's random bytes, not `Uuid::now_v7`'s own. Ids made within one
    /// millisecond are not ordered among themselves, which nothing relies on.
    pub(crate) fn generate_with_id(now_ms: i64) -> Result<(Self, uuid::Uuid), getrandom::Error> {
        let mut bytes = [0u8; TOKEN_BYTES + ID_RANDOM_BYTES];
        getrandom::fill(&mut bytes)?;
        let (token, random) = bytes.split_at(TOKEN_BYTES);
        let mut id_random = [0u8; ID_RANDOM_BYTES];
        id_random.copy_from_slice(random);
        let millis = u64::try_from(now_ms).unwrap_or(0);
        let id = uuid::Builder::from_unix_timestamp_millis(millis, &id_random).into_uuid();
        Ok((Self::encoding(token), id))
    }

    /// Accepts the text of a cookie's token part once its MAC has been verified; `None` if
    /// it does not have a token's length.
    pub(crate) fn from_verified(text: &[u8]) -> Option<Self> {
        text.try_into().ok().map(Self)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Made of base64url characters only (by us, or checked before the MAC).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The key of this session's hash in the store.
    pub(crate) fn store_key(&self, prefix: &str) -> StoreKey {
        let digest = Sha256::digest(self.0);
        let mut key = String::with_capacity(prefix.len() + base64url::chars(KEY_DIGEST_BYTES));
        key.push_str(prefix);
        base64url::push(&mut key, &digest[..KEY_DIGEST_BYTES]);
        StoreKey(key)
    }
}

// Never print a token, not even in debug output.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// A user as cookies and store keys name them: 128 bits of SHA-256 of the user id, so neither
/// shows the id itself (an e-mail address, say).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct UserHandle(String);

impl UserHandle {
    /// Length of a handle (base64url of 16 bytes).
    pub(crate) const CHARS: usize = 22;

    pub(crate) fn of(user_id: &str) -> Self {
        let digest = Sha256::digest([b"user:", user_id.as_bytes()].concat());
        let mut handle = String::with_capacity(Self::CHARS);
        base64url::push(&mut handle, &digest[..KEY_DIGEST_BYTES]);
        Self(handle)
    }

    /// Accepts the text of a cookie's user part once its MAC has been verified.
    pub(crate) fn from_verified(text: &str) -> Self {
        Self(text.to_owned())
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The store keys of this user: the index of its sessions by deadline, and the map from
    /// public id to session key. The hash tag puts both in one Redis Cluster slot.
    pub(crate) fn keys(&self, prefix: &str) -> UserKeys {
        UserKeys {
            index: StoreKey(format!("{prefix}u:{{{}}}:i", self.0)),
            ids: StoreKey(format!("{prefix}u:{{{}}}:k", self.0)),
        }
    }
}

/// See [`UserHandle::keys`].
#[derive(Clone, Debug)]
pub(crate) struct UserKeys {
    pub(crate) index: StoreKey,
    pub(crate) ids: StoreKey,
}

/// The store key of a session: the configured prefix and the token's SHA-256 digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct StoreKey(String);

impl StoreKey {
    /// A key as it stands in the store (benchmark support).
    pub(crate) fn from_raw(key: String) -> Self {
        Self(key)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_distinct_and_url_safe() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), TOKEN_CHARS);
        assert!(a
            .as_str()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn token_and_id_from_one_read() {
        let now = 1_700_000_000_123;
        let (a, id_a) = Token::generate_with_id(now).unwrap();
        let (b, id_b) = Token::generate_with_id(now).unwrap();
        assert_eq!(a.as_str().len(), TOKEN_CHARS);
        assert_ne!(a, b);
        assert_ne!(id_a, id_b);
        assert_eq!(id_a.get_version_num(), 7);
        let (secs, nanos) = id_a.get_timestamp().unwrap().to_unix();
        assert_eq!(
            secs * 1000 + u64::from(nanos) / 1_000_000,
            1_700_000_000_123
        );
    }

    #[test]
    fn store_key_hides_the_token() {
        let t = Token::generate().unwrap();
        let k = t.store_key("s:");
        assert!(k.as_str().starts_with("s:"));
        assert!(!k.as_str().contains(t.as_str()));
        assert_eq!(k, t.store_key("s:"));
        assert_eq!(format!("{t:?}"), "Token(..)");
    }
}
