//! Just enough RESP to know when a reply is complete: the raw floor reads until both replies
//! of its pipeline are in, with no client library.

/// The end (exclusive) of the reply that starts at `at`, or `None` while it is incomplete.
/// Knows the RESP2 types and RESP3's aggregate and simple ones; an unknown type byte is
/// reported as an error, not as "incomplete", so a bad reply cannot hang the reader.
pub fn reply_end(buf: &[u8], at: usize) -> Result<Option<usize>, String> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(line) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let header = &buf[at + 1..at + line];
    let after = at + line + 2;
    let number = || -> Result<i64, String> {
        std::str::from_utf8(header)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad length in {:?}", String::from_utf8_lossy(header)))
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(Some(after)),
        b'$' | b'!' | b'=' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some(after)); // RESP2 null bulk string
            }
            let end = after + n as usize + 2;
            Ok((buf.len() >= end).then_some(end))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = number()?;
            let items = if matches!(kind, b'%' | b'|') {
                2 * n
            } else {
                n
            };
            let mut pos = after;
            for _ in 0..items.max(0) {
                match reply_end(buf, pos)? {
                    Some(next) => pos = next,
                    None => return Ok(None),
                }
            }
            Ok(Some(pos))
        }
        other => Err(format!("unknown RESP type byte {other:#04x}")),
    }
}

/// The end of `count` consecutive replies from the start of `buf`, once all are in.
pub fn replies_end(buf: &[u8], count: usize) -> Result<Option<usize>, String> {
    let mut pos = 0;
    for _ in 0..count {
        match reply_end(buf, pos)? {
            Some(next) => pos = next,
            None => return Ok(None),
        }
    }
    Ok(Some(pos))
}

/// A command as RESP: an array of bulk strings.
pub fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_only_when_every_byte_is_in() {
        let reply = b"*4\r\n$4\r\nuser\r\n$5\r\nalice\r\n$0\r\n\r\n$-1\r\n:1\r\n";
        assert_eq!(replies_end(reply, 2), Ok(Some(reply.len())));
        for cut in 0..reply.len() {
            assert_eq!(replies_end(&reply[..cut], 2), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn simple_types_nested_arrays_and_maps() {
        assert_eq!(reply_end(b"+OK\r\n", 0), Ok(Some(5)));
        assert_eq!(reply_end(b"-ERR x\r\n", 0), Ok(Some(8)));
        assert_eq!(reply_end(b"*-1\r\n", 0), Ok(Some(5)));
        assert_eq!(reply_end(b"*2\r\n*1\r\n:1\r\n+a\r\n", 0), Ok(Some(16)));
        assert_eq!(reply_end(b"%1\r\n+k\r\n+v\r\n", 0), Ok(Some(12)));
        assert_eq!(reply_end(b"%1\r\n+k\r\n", 0), Ok(None));
        assert!(reply_end(b"?\r\n", 0).is_err());
        assert!(reply_end(b"$x\r\n", 0).is_err());
    }

    #[test]
    fn command_is_an_array_of_bulk_strings() {
        assert_eq!(
            command(&["PEXPIRE", "k", "5"]),
            b"*3\r\n$7\r\nPEXPIRE\r\n$1\r\nk\r\n$1\r\n5\r\n"
        );
    }
}
