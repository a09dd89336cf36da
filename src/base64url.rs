//! Unpadded base64url (RFC 4648 §5), the one encoding of cookies and store keys: tokens,
//! digests, public ids and tags, all of fixed lengths. By hand, four characters at a time:
//! a general-purpose decoder cost more per request than the rest of the cookie's parsing,
//! and fixed lengths need none of its generality.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The 6-bit value of each base64url character; 0xff for any other byte.
static SEXTETS: [u8; 256] = {
    let mut sextets = [0xffu8; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        sextets[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    sextets
};

/// Characters that encode `n` bytes.
pub(crate) const fn chars(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// Whether `text` is base64url characters only: one table look-up per byte and no branch
/// (every request with a cookie checks its token and user part).
pub(crate) fn is_text(text: &[u8]) -> bool {
    text.iter().fold(0, |bad, &b| bad | SEXTETS[usize::from(b)]) < 64
}

/// Encodes `bytes` into the first [`chars`]`(bytes.len())` bytes of `out` (what does not fit
/// is left out).
pub(crate) fn encode_to(bytes: &[u8], out: &mut [u8]) {
    let char_of = |n: u32, shift: usize| ALPHABET[(n >> shift) as usize & 63];
    let mut groups = bytes.chunks_exact(3);
    for (group, quad) in (&mut groups).zip(out.chunks_exact_mut(4)) {
        let n = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
        quad.copy_from_slice(&[char_of(n, 18), char_of(n, 12), char_of(n, 6), char_of(n, 0)]);
    }
    // One or two bytes left make two or three characters.
    let rest = groups.remainder();
    if rest.is_empty() {
        return;
    }
    let n = rest.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)) << (8 * (3 - rest.len()));
    let tail = out.iter_mut().skip(4 * (bytes.len() / 3));
    for (i, slot) in tail.take(rest.len() + 1).enumerate() {
        *slot = char_of(n, 18 - 6 * i);
    }
}

/// Appends `bytes` encoded to `out`.
pub(crate) fn push(out: &mut String, bytes: &[u8]) {
    // 48 bytes (a multiple of 3, so the pieces join) make 64 characters.
    let mut text = [0u8; 64];
    for piece in bytes.chunks(48) {
        let len = chars(piece.len());
        encode_to(piece, &mut text);
        out.push_str(std::str::from_utf8(&text[..len]).unwrap_or_default());
    }
}

/// Decodes `text` into exactly `N` bytes; `None` unless it has the length of `N` bytes,
/// only base64url characters, and the canonical form (the last character's unused bits
/// zero, so that one value has one text).
pub(crate) fn decode<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != chars(N) {
        return None;
    }
    let mut out = [0u8; N];
    let mut invalid = 0u8;
    let mut groups = text.chunks_exact(4);
    let mut bytes = out.chunks_exact_mut(3);
    for (group, three) in (&mut groups).zip(&mut bytes) {
        let [a, b, c, d] = [0, 1, 2, 3].map(|i| SEXTETS[usize::from(group[i])]);
        invalid |= a | b | c | d;
        let n = u32::from(a) << 18 | u32::from(b) << 12 | u32::from(c) << 6 | u32::from(d);
        three.copy_from_slice(&n.to_be_bytes()[1..]);
    }
    // Two or three characters for the last one or two bytes; the bits left over must be 0.
    let (rest, last) = (groups.remainder(), bytes.into_remainder());
    let mut sextet = |c: &u8| {
        let v = SEXTETS[usize::from(*c)];
        invalid |= v;
        u32::from(v & 0x3f)
    };
    let n = rest.iter().fold(0, |n, c| (n << 6) | sextet(c));
    let spare = (6 * rest.len()).checked_sub(8 * last.len())?;
    if spare >= 6 || n & ((1 << spare) - 1) != 0 {
        return None;
    }
    let n = n >> spare;
    for (i, byte) in last.iter_mut().rev().enumerate() {
        *byte = (n >> (8 * i)) as u8;
    }
    ((invalid & 0xc0) == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

    /// A fixed xorshift sequence: the same cases on every run.
    fn bytes(seed: &mut u64, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *seed as u8
            })
            .collect()
    }

    #[test]
    fn encodes_as_the_base64_crate() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for n in 0..100 {
            let data = bytes(&mut seed, n);
            let mut text = String::new();
            push(&mut text, &data);
            assert_eq!(text, URL_SAFE_NO_PAD.encode(&data));
            assert_eq!(text.len(), chars(n));
        }
    }

    #[test]
    fn decodes_as_the_base64_crate() {
        let mut seed = 0x2545_f491_4f6c_dd1d;
        for _ in 0..3000 {
            let data = bytes(&mut seed, 32);
            let mut text = URL_SAFE_NO_PAD.encode(&data).into_bytes();
            let short = URL_SAFE_NO_PAD.encode(&data[..16]).into_bytes();
            assert_eq!(decode::<32>(&text).map(Vec::from), Some(data.clone()));
            assert_eq!(
                decode::<16>(&short).map(Vec::from),
                Some(data[..16].to_vec())
            );
            // One byte changed to anything: decoded exactly when the crate decodes it (the
            // last character's spare bits included).
            let change = bytes(&mut seed, 2);
            let at = usize::from(change[0]) % text.len();
            text[at] = change[1];
            let theirs = URL_SAFE_NO_PAD.decode(&text).ok();
            assert_eq!(decode::<32>(&text).map(Vec::from), theirs, "{text:?}");
        }
        assert_eq!(decode::<32>(b"short"), None);
        assert_eq!(decode::<16>(&[b'A'; 23]), None);
        // Spare bits set in the last character: another text for the same bytes, refused.
        assert_eq!(decode::<1>(b"AA").map(Vec::from), Some(vec![0]));
        assert_eq!(decode::<1>(b"AB"), None);
    }

    #[test]
    fn text_is_the_alphabet() {
        for b in 0..=255u8 {
            let ours = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            assert_eq!(is_text(&[b'A', b, b'z']), ours, "{b}");
        }
        assert!(is_text(b""));
        assert!(is_text(ALPHABET));
        assert!(!is_text(b"abc=def"));
    }
}
