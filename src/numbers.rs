//! Small number helpers that several layers share: decimal digits without allocating, and
//! durations in milliseconds.

use std::time::Duration;

/// A number in decimal, on the stack (`write!` and `to_string` cost more than the rest of a
/// command).
pub(crate) struct Digits {
    digits: [u8; 20],
    at: usize,
}

impl Digits {
    pub(crate) fn of(mut n: u64) -> Self {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Self { digits, at }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.digits[self.at..]
    }

    /// The digits as text (ASCII, so never empty).
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("0")
    }
}

/// `d` in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_and_millis() {
        for n in [0, 7, 10, 99, 1234567890, u64::MAX] {
            assert_eq!(Digits::of(n).as_str(), n.to_string());
        }
        assert_eq!(millis(Duration::from_micros(1999)), 1);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
