//! RESP2 as our own connection speaks it: commands encoded into one buffer, replies found
//! (`skip`, which builds nothing) and parsed (`parse`, into [`redis::Value`]) by hand, and
//! [`Reply::spans`], which finds the items of an array of bulk strings (a hash, as `HGETALL`
//! sends it) in place, so that a loaded session's fields stay in the reply's bytes. Only
//! error replies go through redis-rs's parser, which gives them their codes and kinds.
//!
//! Whatever the server (or a proxy, or someone on the path) sends, the reader refuses rather
//! than guesses: nesting deeper than [`MAX_DEPTH`] (a recursive reader would overflow the
//! stack), lengths above [`MAX_LEN`] or below -1, status and error lines that are not UTF-8,
//! and types that RESP2 does not have (a RESP3 push frame among them) are errors that retire
//! the connection. `skip` and `parse` take the same steps, so they refuse (or wait for more)
//! at the same point; whatever they read, redis-rs's parser reads the same (the property
//! tests below and `fuzz/fuzz_targets/resp.rs` check both).

use crate::numbers::Digits;
use std::io;
use std::ops::Range;
use std::string::FromUtf8Error;

use redis::{RedisError, RedisResult, Value};

/// A reply that cannot be read: the socket is out of step with its requests (an I/O error
/// kind, so that the connection is retired).
pub(super) fn broken(what: &str) -> RedisError {
    RedisError::from(io::Error::new(io::ErrorKind::BrokenPipe, what.to_owned()))
}

/// How deep replies may nest; the top level is 1. The same limit as redis-rs: our commands'
/// replies nest two or three levels.
pub(crate) const MAX_DEPTH: usize = 100;

/// The longest bulk string and the most items of an array a reply may have: Redis never sends
/// a string longer than its `proto-max-bulk-len` (512 MiB by default).
pub(crate) const MAX_LEN: usize = 512 * 1024 * 1024;

/// A reply that no request of ours can have caused (the stream is out of step: a proxy
/// repeated a reply, or bytes came unasked).
pub(super) fn out_of_step(what: &str) -> RedisError {
    broken(what)
}

/// The request never reached the socket (it closed first): safe to send again, on any
/// connection. A connection-refused kind: redis-rs's `is_connection_refusal` tells it.
pub(super) fn not_sent(what: &str) -> RedisError {
    RedisError::from(io::Error::new(
        io::ErrorKind::ConnectionRefused,
        what.to_owned(),
    ))
}

/// No reply within the command timeout (a timeout kind: the request is not sent again).
pub(super) fn timed_out() -> RedisError {
    RedisError::from(io::Error::new(
        io::ErrorKind::TimedOut,
        "no reply from Redis within the command timeout",
    ))
}

/// Complete replies, as one request received them, with where the first few end (the reader
/// found that already; reading a reply twice over is most of what a short one costs).
#[derive(Debug, Default)]
pub(crate) struct Replies {
    pub(super) bytes: Vec<u8>,
    ends: [usize; 4],
    known: usize,
}

impl Replies {
    /// Replies whose ends are not known yet.
    #[cfg(test)]
    fn of(bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.to_vec(),
            ..Self::default()
        }
    }

    /// The next reply ends at `end` in `bytes` (once they are all in).
    pub(super) fn ended(&mut self, end: usize) {
        if let Some(slot) = self.ends.get_mut(self.known) {
            *slot = end;
            self.known += 1;
        }
    }

    /// The first `N` replies, each not read yet.
    pub(crate) fn split<const N: usize>(&self) -> RedisResult<[Reply<'_>; N]> {
        let buf = &self.bytes;
        let mut at = 0;
        let mut replies = [Reply { buf: &[], at: 0 }; N];
        for (i, reply) in replies.iter_mut().enumerate() {
            *reply = Reply { buf, at };
            at = match self.ends[..self.known].get(i) {
                Some(&end) if end <= buf.len() => end,
                _ => skip(buf, at)?.ok_or_else(|| broken("a reply cut short"))?,
            };
        }
        Ok(replies)
    }

    /// The first `n` replies, each not read yet.
    pub(super) fn list(&self, n: usize) -> RedisResult<Vec<Reply<'_>>> {
        let mut at = 0;
        let mut replies = Vec::with_capacity(n);
        for _ in 0..n {
            replies.push(Reply {
                buf: &self.bytes,
                at,
            });
            at = skip(&self.bytes, at)?.ok_or_else(|| broken("a reply cut short"))?;
        }
        Ok(replies)
    }

    /// The replies' bytes as text, if they are UTF-8: spans of their items are spans of it.
    pub(crate) fn into_text(self) -> Result<String, FromUtf8Error> {
        String::from_utf8(self.bytes)
    }
}

/// One complete reply in a buffer, not read yet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reply<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reply<'a> {
    /// The reply as a value; an error reply is the error.
    pub(crate) fn value(self) -> RedisResult<Value> {
        parse(self.buf, self.at)?
            .ok_or_else(|| broken("a reply cut short"))?
            .0
            .extract_error()
    }

    /// Checks a reply whose content does not matter (`OK`, `QUEUED`): an error reply is the
    /// error; nothing is built for any other.
    pub(crate) fn check(self) -> RedisResult<()> {
        match line(self.buf, self.at) {
            Some((b'-', ..)) => self.value().map(drop),
            Some(_) => Ok(()),
            None => Err(broken("a reply cut short")),
        }
    }

    /// As [`check`](Self::check), and the reply must be of this type (`b'+'`, `b':'`, ...):
    /// any other cannot be the answer to the command, and the stream is out of step.
    pub(crate) fn check_is(self, kind: u8) -> RedisResult<()> {
        match line(self.buf, self.at) {
            Some((b'-', ..)) => self.value().map(drop),
            Some((k, ..)) if k == kind => Ok(()),
            Some(_) => Err(out_of_step("a reply that cannot answer its command")),
            None => Err(broken("a reply cut short")),
        }
    }

    /// As [`check`](Self::check), and for an array (`EXEC`'s) each of its items as well.
    pub(crate) fn check_items(self) -> RedisResult<()> {
        let Some((len, mut at)) = self.items()? else {
            return self.check();
        };
        for _ in 0..len {
            Reply { buf: self.buf, at }.check()?;
            at = skip(self.buf, at)?.ok_or_else(|| broken("a reply cut short"))?;
        }
        Ok(())
    }

    /// Where the items of an array of bulk strings are in the replies' bytes; a nil array has
    /// none. An error reply is the error; any other reply, or an item that is not a bulk
    /// string, cannot be the answer to the command (`HGETALL`'s): the stream is out of step.
    pub(crate) fn spans(self) -> RedisResult<Spans<'a>> {
        if let Some((left, at)) = self.items()? {
            return Ok(Spans {
                buf: self.buf,
                at,
                left,
            });
        }
        match line(self.buf, self.at) {
            Some((b'-', ..)) => Err(self.value().err().unwrap_or_else(|| not_strings("reply"))),
            Some(_) => Err(not_strings("reply")),
            None => Err(broken("a reply cut short")),
        }
    }

    /// For an array, how many items it has (a nil array none) and where the first starts;
    /// `None` for any other reply.
    fn items(self) -> RedisResult<Option<(usize, usize)>> {
        if self.buf.get(self.at) != Some(&b'*') {
            return Ok(None);
        }
        let (len, first) = length(self.buf, self.at)?.ok_or_else(|| broken("a reply cut short"))?;
        Ok(Some((len.unwrap_or(0), first)))
    }
}

fn not_strings(what: &str) -> RedisError {
    out_of_step(&format!(
        "expected an array of bulk strings, got another {what}"
    ))
}

/// Where each item of an array of bulk strings is, in order.
#[derive(Debug)]
pub(crate) struct Spans<'a> {
    buf: &'a [u8],
    at: usize,
    left: usize,
}

impl Iterator for Spans<'_> {
    type Item = RedisResult<Range<usize>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.left = self.left.checked_sub(1)?;
        let item = match self.buf.get(self.at) {
            Some(b'$') => length(self.buf, self.at).and_then(|counted| {
                let (len, next) = counted.ok_or_else(|| not_strings("item"))?;
                let end = len
                    .map(|len| next + len)
                    .filter(|&end| end + 2 <= self.buf.len())
                    .ok_or_else(|| not_strings("item"))?;
                self.at = end + 2;
                Ok(next..end)
            }),
            _ => Err(not_strings("item")),
        };
        if item.is_err() {
            self.left = 0;
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

impl Spans<'_> {
    /// How many items are left.
    pub(crate) fn len(&self) -> usize {
        self.left
    }
}

/// One RESP2 reply at `at`: the value and where it ends; `None` if it is not all in yet.
pub(super) fn parse(buf: &[u8], at: usize) -> RedisResult<Option<(Value, usize)>> {
    parse_in(buf, at, 1)
}

/// As [`skip_in`], through the same steps (the same bytes are refused, or not all in yet, at
/// the same point), building the value.
fn parse_in(buf: &[u8], at: usize, depth: usize) -> RedisResult<Option<(Value, usize)>> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    Ok(match kind {
        b'+' => text_end(buf, at)?.map(|end| match &buf[at + 1..end - 2] {
            b"OK" => (Value::Okay, end),
            // UTF-8, as `text_end` saw: nothing is replaced.
            text => (
                Value::SimpleString(String::from_utf8_lossy(text).into_owned()),
                end,
            ),
        }),
        // Errors are rare: redis-rs's parser gives them their codes and kinds.
        b'-' => match text_end(buf, at)? {
            Some(end) => Some((redis::parse_redis_value(&buf[at..end])?, end)),
            None => None,
        },
        b':' => counted(buf, at)?.map(|(n, end)| (Value::Int(n), end)),
        b'$' => bulk(buf, at)?.map(|(payload, end)| {
            let value = payload.map_or(Value::Nil, |p| Value::BulkString(buf[p].to_vec()));
            (value, end)
        }),
        b'*' => {
            let Some((len, mut at)) = length(buf, at)? else {
                return Ok(None);
            };
            let Some(len) = len else {
                return Ok(Some((Value::Nil, at)));
            };
            let mut items = Vec::with_capacity(len.min(1024));
            for _ in 0..len {
                match parse_in(buf, at, depth + 1)? {
                    Some((item, end)) => {
                        items.push(item);
                        at = end;
                    }
                    None => return Ok(None),
                }
            }
            Some((Value::Array(items), at))
        }
        _ => return Err(unknown_type()),
    })
}

fn too_deep() -> RedisError {
    broken("a reply nested deeper than any of ours")
}

fn unknown_type() -> RedisError {
    broken("a reply of a type RESP2 does not have")
}

fn malformed() -> RedisError {
    broken("a malformed reply from Redis")
}

/// `commands` in RESP, one after the other, in one buffer sized for them up front (it never
/// grows while they are written).
pub(crate) fn pack(commands: &[&[&[u8]]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(commands.iter().map(|c| encoded_len(c)).sum());
    for command in commands {
        encode(&mut out, command);
    }
    out
}

/// Appends `ECHO <tag>` to `out`: the tag that closes each request's commands (see `direct`).
pub(super) fn encode_tag(out: &mut Vec<u8>, tag: u64) {
    let digits = Digits::of(tag);
    encode(out, &[b"ECHO", digits.as_bytes()]);
}

/// Whether `reply` is exactly the answer to [`encode_tag`]'s `ECHO <tag>`:
/// `$<length>\r\n<tag>\r\n`.
pub(super) fn is_tag(reply: &[u8], tag: u64) -> bool {
    let tag = Digits::of(tag);
    let tag = tag.as_bytes();
    let len = Digits::of(tag.len() as u64);
    let len = len.as_bytes();
    let body = 1 + len.len() + 2;
    reply.len() == body + tag.len() + 2
        && reply[0] == b'$'
        && &reply[1..1 + len.len()] == len
        && &reply[body - 2..body] == b"\r\n"
        && &reply[body..body + tag.len()] == tag
        && reply.ends_with(b"\r\n")
}

/// Appends one command in RESP to `out`.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    header(out, b'*', args.len());
    for arg in args {
        header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Room enough for `args` as one command: a buffer of this capacity never grows in
/// [`encode`] (a header is a type byte, at most 11 digits for any length below 100 GB,
/// and CRLF).
fn encoded_len(args: &[&[u8]]) -> usize {
    16 + args.iter().map(|a| a.len() + 16).sum::<usize>()
}

/// A type byte, a length and CRLF. Nearly every length in a session's commands is below
/// 100: those are written as one fixed-size copy, with no call to `memcpy` or loop.
fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    let digit = |d: usize| b'0' + (d % 10) as u8;
    if n < 10 {
        out.extend_from_slice(&[kind, digit(n), b'\r', b'\n']);
    } else if n < 100 {
        out.extend_from_slice(&[kind, digit(n / 10), digit(n), b'\r', b'\n']);
    } else {
        out.push(kind);
        out.extend_from_slice(Digits::of(n as u64).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Where the RESP2 reply at `at` ends; `None` if it is not all in yet. Builds nothing.
pub(super) fn skip(buf: &[u8], at: usize) -> RedisResult<Option<usize>> {
    skip_in(buf, at, 1)
}

fn skip_in(buf: &[u8], at: usize, depth: usize) -> RedisResult<Option<usize>> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    Ok(match kind {
        b'+' | b'-' => text_end(buf, at)?,
        b':' => counted(buf, at)?.map(|(_, next)| next),
        b'$' => bulk(buf, at)?.map(|(_, end)| end),
        b'*' => {
            let Some((len, mut at)) = length(buf, at)? else {
                return Ok(None);
            };
            for _ in 0..len.unwrap_or(0) {
                match skip_in(buf, at, depth + 1)? {
                    Some(end) => at = end,
                    None => return Ok(None),
                }
            }
            Some(at)
        }
        _ => return Err(unknown_type()),
    })
}

/// Where the line of the simple string or error reply at `at` ends (after its CRLF); `None`
/// if it is not all in yet. A line holds no CR but its end, and is UTF-8 (redis-rs's parser
/// reads no other): any other is no reply of Redis.
#[inline(always)]
fn text_end(buf: &[u8], at: usize) -> RedisResult<Option<usize>> {
    let Some(cr) = memchr::memchr(b'\r', &buf[at + 1..]) else {
        return Ok(None);
    };
    match buf.get(at + 1 + cr + 1) {
        Some(b'\n') if std::str::from_utf8(&buf[at + 1..at + 1 + cr]).is_ok() => {
            Ok(Some(at + cr + 3))
        }
        Some(_) => Err(malformed()),
        None => Ok(None),
    }
}

/// Where the payload of the bulk string at `at` is (`None` for nil) and where the reply
/// ends; `None` if it is not all in yet. A payload not followed by CRLF is an error.
#[inline(always)]
fn bulk(buf: &[u8], at: usize) -> RedisResult<Option<(Option<Range<usize>>, usize)>> {
    Ok(match length(buf, at)? {
        Some((Some(len), next)) => match buf.get(next + len..next + len + 2) {
            Some(b"\r\n") => Some((Some(next..next + len), next + len + 2)),
            Some(_) => return Err(malformed()),
            None if buf.len() > next + len => match buf.get(next + len) {
                Some(b'\r') => None,
                _ => return Err(malformed()),
            },
            None => None,
        },
        Some((None, next)) => Some((None, next)),
        None => None,
    })
}

/// The length on the line at `at` (of a bulk string or an array) and where the next line
/// starts; `None` inside for -1 (nil). Other negative lengths, and lengths above [`MAX_LEN`],
/// are errors: no reply of Redis has them. `None` if the line is not all in yet.
#[inline(always)]
fn length(buf: &[u8], at: usize) -> RedisResult<Option<(Option<usize>, usize)>> {
    let Some((n, next)) = counted(buf, at)? else {
        return Ok(None);
    };
    match usize::try_from(n) {
        Ok(len) if len <= MAX_LEN => Ok(Some((Some(len), next))),
        Err(_) if n == -1 => Ok(Some((None, next))),
        _ => Err(malformed()),
    }
}

/// The type byte, the rest of the line, and where the next line starts.
fn line(buf: &[u8], at: usize) -> Option<(u8, &[u8], usize)> {
    let kind = *buf.get(at)?;
    let rest = buf.get(at + 1..)?;
    // A line holds no '\r' but its end (RESP2: bulk payloads are never scanned here).
    let end = rest.iter().position(|&b| b == b'\r')?;
    (*rest.get(end + 1)? == b'\n').then_some((kind, &rest[..end], at + 1 + end + 2))
}

/// The number on the line at `at`, after its type byte, and where the next line starts, in
/// one pass over the digits (lengths are most of what a reply's lines hold). `None` if the
/// line is not all in yet. Inlined, so that its result stays in registers: it runs twice per
/// item of every reply.
#[inline(always)]
fn counted(buf: &[u8], at: usize) -> RedisResult<Option<(i64, usize)>> {
    let negative = buf.get(at + 1) == Some(&b'-');
    let start = at + 1 + usize::from(negative);
    let mut end = start;
    // Nineteen digits fit in a `u64`; more are refused below, so wrapping never matters.
    let mut n: u64 = 0;
    while let Some(&d) = buf.get(end) {
        let digit = d.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        n = n.wrapping_mul(10).wrapping_add(u64::from(digit));
        end += 1;
    }
    match (buf.get(end), buf.get(end + 1)) {
        (None, _) | (Some(b'\r'), None) if end - start <= 19 => return Ok(None),
        (Some(b'\r'), Some(b'\n')) if (1..=19).contains(&(end - start)) => {}
        _ => return Err(malformed()),
    }
    // Down to `i64::MIN`, which Redis sends (`HINCRBY` to the lowest integer).
    let n = if negative {
        0i64.checked_sub_unsigned(n)
    } else {
        i64::try_from(n).ok()
    };
    Ok(Some((n.ok_or_else(malformed)?, end + 2)))
}

#[cfg(any(test, feature = "fuzzing"))]
mod check;
#[cfg(test)]
mod tests;
