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

/// How [`check_reader`] stopped reading its input.
#[cfg(any(test, feature = "fuzzing"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Every byte was read, as whole replies.
    End,
    /// The rest is the start of a reply that is not all in yet.
    More,
    /// The rest is refused.
    Refused,
}

/// Reads `data` as the connection does, reply after reply from the start, and panics on any
/// disagreement: `skip` and `parse` give the same verdict (refused, not all in yet, or a
/// reply and where it ends); redis-rs's parser reads each reply we accept, those exact bytes,
/// to the same value; a reply cut short is "not all in yet" to both, never an error or a
/// reply; `check`, `check_items` and `spans` (the hot path) agree with the value; and what we
/// wait on, redis-rs does not take for a whole reply. Returns where the replies end and why
/// the reading stopped. For the property tests and the fuzz target (`fuzz/`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_reader(data: &[u8]) -> (Vec<usize>, Stop) {
    let mut ends = Vec::new();
    let mut at = 0;
    let stop = loop {
        match (skip(data, at), parse(data, at)) {
            (Ok(None), Ok(None)) if at == data.len() => break Stop::End,
            (Ok(None), Ok(None)) => {
                // redis-rs reads no whole reply there either (it is lenient: what we refuse,
                // it may well read; what we wait on, it must not).
                if let Ok(theirs) = redis::parse_redis_value(&data[at..]) {
                    panic!("at {at}: we wait for more, redis-rs read {theirs:?}");
                }
                break Stop::More;
            }
            (Err(_), Err(_)) => break Stop::Refused,
            (Ok(Some(end)), Ok(Some((value, parsed)))) => {
                assert_eq!(end, parsed, "at {at}: skip and parse end apart");
                assert!(at < end && end <= data.len(), "at {at}: ends at {end}");
                match redis::parse_redis_value(&data[at..end]) {
                    Ok(theirs) => assert_eq!(value, theirs, "at {at}: redis-rs reads otherwise"),
                    Err(e) => panic!("at {at}: we read {value:?}, redis-rs refuses: {e}"),
                }
                check_cuts(data, at, end);
                check_hot_path(data, at, &value);
                ends.push(end);
                at = end;
            }
            (skipped, parsed) => {
                panic!("at {at}: skip says {skipped:?}, parse says {parsed:?}")
            }
        }
    };
    // `Replies` finds the same replies.
    let replies = Replies {
        bytes: data.to_vec(),
        ..Replies::default()
    };
    let found = replies.list(ends.len()).expect("the same replies");
    let starts = std::iter::once(0).chain(ends.iter().copied());
    assert!(found.iter().zip(starts).all(|(r, start)| r.at == start));
    (ends, stop)
}

#[cfg(feature = "fuzzing")]
impl crate::__fuzz::Resp {
    /// [`check_reader`], for `__fuzz::resp_reader`.
    pub(crate) fn check(data: &[u8]) {
        check_reader(data);
    }
}

/// The reply at `at` cut short anywhere (the first and last bytes each, and about 64 cuts
/// between) is "not all in yet" to both `skip` and `parse`.
#[cfg(any(test, feature = "fuzzing"))]
fn check_cuts(data: &[u8], at: usize, end: usize) {
    let step = ((end - at) / 64).max(1);
    let cuts = (at..end).step_by(step).chain((at..end).rev().take(8));
    for cut in cuts.chain((at..end).take(8)) {
        let short = &data[..cut];
        let (skipped, parsed) = (skip(short, at), parse(short, at));
        assert!(
            matches!((&skipped, &parsed), (Ok(None), Ok(None))),
            "reply at {at}..{end} cut at {cut}: skip says {skipped:?}, parse says {parsed:?}"
        );
    }
}

/// `check`, `check_is`, `check_items` and `spans`, which read a reply without building it,
/// agree with its `value`.
#[cfg(any(test, feature = "fuzzing"))]
fn check_hot_path(data: &[u8], at: usize, value: &Value) {
    let reply = Reply { buf: data, at };
    let code = |v: &Value| match v {
        Value::ServerError(e) => Some(e.code().to_owned()),
        _ => None,
    };
    let error = code(value);
    let code_of = |r: RedisResult<()>| r.err().map(|e| e.code().map(str::to_owned));
    assert_eq!(code_of(reply.check()), error.clone().map(Some));
    assert_eq!(code_of(reply.check_is(data[at])), error.clone().map(Some));
    let first = match value {
        Value::Array(items) => items.iter().find_map(code),
        _ => error.clone(),
    };
    assert_eq!(code_of(reply.check_items()), first.map(Some));
    match (value, reply.spans()) {
        (Value::Array(items), Ok(mut spans)) => {
            assert_eq!(spans.len(), items.len());
            for item in items {
                match (item, spans.next()) {
                    (Value::BulkString(bytes), Some(Ok(span))) => assert_eq!(&data[span], bytes),
                    (Value::BulkString(_), other) => panic!("a bulk string, spans say {other:?}"),
                    (_, Some(Err(_))) => break,
                    (item, other) => panic!("{item:?}, spans say {other:?}"),
                }
            }
            assert!(spans.next().is_none());
        }
        (Value::Nil, Ok(mut spans)) if data[at] == b'*' => assert!(spans.next().is_none()),
        (Value::ServerError(e), Err(err)) => assert_eq!(err.code(), Some(e.code())),
        (Value::Array(_), Err(err)) => panic!("an array, spans say {err}"),
        (_, Err(_)) => {}
        (value, Ok(spans)) => panic!("{value:?}, spans say {spans:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How lengths were read before `counted` (but down to `i64::MIN`, as Redis sends
    /// integers): the reference it is checked against.
    fn number_of(line: &[u8]) -> RedisResult<i64> {
        let malformed = || broken("a malformed reply from Redis");
        let (negative, digits) = match line.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, line),
        };
        if digits.is_empty() || digits.len() > 19 {
            return Err(malformed());
        }
        let mut n: i64 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return Err(malformed());
            }
            let d = i64::from(d - b'0');
            n = n
                .checked_mul(10)
                .and_then(|n| {
                    if negative {
                        n.checked_sub(d)
                    } else {
                        n.checked_add(d)
                    }
                })
                .ok_or_else(malformed)?;
        }
        Ok(n)
    }

    #[test]
    fn digits() {
        for n in [0, 7, 10, 1_800_000, u64::MAX] {
            assert_eq!(Digits::of(n).as_bytes(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn encodes_as_redis_rs_does() {
        let mut ours = Vec::new();
        encode(&mut ours, &[b"HGETALL", b"k"]);
        encode(&mut ours, &[b"PEXPIRE", b"k", b"1000"]);
        let long = vec![b'x'; 1234];
        encode(&mut ours, &[b"GET", &long, b""]);
        let commands: [&[&[u8]]; 3] = [
            &[b"HGETALL", b"k"],
            &[b"PEXPIRE", b"k", b"1000"],
            &[b"GET", &long, b""],
        ];
        assert!(ours.len() <= commands.iter().map(|c| encoded_len(c)).sum::<usize>());
        // `pack` writes the same bytes, into a buffer that never had to grow.
        let packed = pack(&commands);
        assert_eq!(packed, ours);
        assert_eq!(
            packed.capacity(),
            commands.iter().map(|c| encoded_len(c)).sum::<usize>()
        );
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL")
            .arg("k")
            .cmd("PEXPIRE")
            .arg("k")
            .arg(1000)
            .cmd("GET")
            .arg(&long)
            .arg("");
        assert_eq!(ours, pipe.get_packed_pipeline());
    }

    #[test]
    fn every_length_encodes_as_redis_rs_does() {
        for len in (0..=120).chain([999, 1000, 65_536]) {
            let arg = vec![b'x'; len];
            let mut ours = Vec::new();
            encode(&mut ours, &[b"SET", &arg]);
            assert_eq!(ours, redis::cmd("SET").arg(&arg).get_packed_command());
        }
    }

    #[test]
    fn checks_find_errors_only() {
        let replies =
            Replies::of(b"+QUEUED\r\n*2\r\n:1\r\n:0\r\n*2\r\n:1\r\n-OOM no\r\n-EXECABORT x\r\n");
        let [queued, exec, failed, aborted] = replies.split().unwrap();
        assert!(queued.check().is_ok());
        assert!(exec.check_items().is_ok());
        // The array itself is no error; one of its items is.
        assert!(failed.check().is_ok());
        assert_eq!(failed.check_items().unwrap_err().code(), Some("OOM"));
        assert_eq!(aborted.check().unwrap_err().code(), Some("EXECABORT"));
        assert_eq!(aborted.check_items().unwrap_err().code(), Some("EXECABORT"));
    }

    #[test]
    fn parses_what_redis_sends() {
        let all = b"*2\r\n$1\r\na\r\n$-1\r\n:5\r\n+OK\r\n*-1\r\n-NOSCRIPT No matching script\r\n";
        let (v, at) = parse(all, 0).unwrap().unwrap();
        assert_eq!(
            v,
            Value::Array(vec![Value::BulkString(b"a".to_vec()), Value::Nil])
        );
        let (v, at) = parse(all, at).unwrap().unwrap();
        assert_eq!(v, Value::Int(5));
        let (v, at) = parse(all, at).unwrap().unwrap();
        assert_eq!(v, Value::Okay);
        let (v, at) = parse(all, at).unwrap().unwrap();
        assert_eq!(v, Value::Nil);
        let (v, at) = parse(all, at).unwrap().unwrap();
        assert_eq!(v.extract_error().unwrap_err().code(), Some("NOSCRIPT"));
        assert_eq!(at, all.len());
        // Any cut short of the end is "not yet", never a wrong value.
        for cut in 0..all.len() {
            let mut at = 0;
            while let Ok(Some((_, end))) = parse(&all[..cut], at) {
                at = end;
            }
            assert!(at <= cut);
        }
        assert!(parse(b"?x\r\n", 0).is_err());
        // `skip` finds the same ends as `parse`, building nothing.
        let mut at = 0;
        while let Some((_, end)) = parse(all, at).unwrap() {
            assert_eq!(skip(all, at).unwrap(), Some(end));
            at = end;
        }
        for cut in 0..all.len() {
            let (mut p, mut k) = (0, 0);
            while let Ok(Some((_, end))) = parse(&all[..cut], p) {
                p = end;
            }
            while let Ok(Some(end)) = skip(&all[..cut], k) {
                k = end;
            }
            assert_eq!(p, k, "cut at {cut}");
        }
        assert!(skip(b"?x\r\n", 0).is_err());
        assert_eq!(counted(b":-1\r\n", 0).unwrap(), Some((-1, 5)));
        assert_eq!(
            counted(b":9223372036854775807\r\n", 0).unwrap(),
            Some((i64::MAX, 22))
        );
        assert_eq!(
            counted(b":-9223372036854775808\r\n", 0).unwrap(),
            Some((i64::MIN, 23))
        );
        for bad in [
            &b":\r\n"[..],
            b":-\r\n",
            b":1x\r\n",
            b":99999999999999999999\r\n",
            b":-9223372036854775809\r\n",
        ] {
            assert!(counted(bad, 0).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn counts_as_the_reference_does() {
        // Every line of up to 6 bytes over digits, a sign, line ends and another byte, and
        // the limits of an `i64`: the same number and end, or an error, as before; a line
        // that is not all in is never a number.
        let alphabet = b"07-\r\nx";
        let mut lines: Vec<Vec<u8>> = vec![b"$".to_vec()];
        for _ in 0..6 {
            let longer: Vec<Vec<u8>> = lines
                .iter()
                .filter(|l| l.len() == lines.last().map_or(0, Vec::len))
                .flat_map(|l| alphabet.iter().map(move |&b| [&l[..], &[b]].concat()))
                .collect();
            lines.extend(longer);
        }
        for edge in [
            "9223372036854775807",
            "-9223372036854775807",
            "-9223372036854775808",
        ] {
            lines.push(format!("${edge}\r\n").into_bytes());
        }
        lines.push(format!("${}\r\n", "1".repeat(20)).into_bytes());
        for l in &lines {
            let before = line(l, 0).map(|(_, text, next)| number_of(text).map(|n| (n, next)));
            match (before, counted(l, 0)) {
                (Some(Ok(old)), new) => assert_eq!(new.ok().flatten(), Some(old), "{l:?}"),
                (Some(Err(_)), new) => assert!(new.is_err(), "{l:?}"),
                (None, new) => assert!(!matches!(new, Ok(Some(_))), "{l:?}"),
            }
        }
        assert!(lines.len() > 50_000);
    }

    #[test]
    fn reads_a_hash_in_place() {
        let bytes = b"*4\r\n$1\r\na\r\n$0\r\n\r\n$2\r\nbc\r\n$1\r\nd\r\n:1\r\n";
        let mut known = Replies::of(bytes);
        known.ended(skip(bytes, 0).unwrap().unwrap());
        known.ended(bytes.len());
        for replies in [Replies::of(bytes), known] {
            let [hash, expired] = replies.split().unwrap();
            assert_eq!(expired.value().unwrap(), Value::Int(1));
            let spans = hash.spans().unwrap();
            assert_eq!(spans.len(), 4);
            let items: Vec<_> = spans.map(Result::unwrap).collect();
            let text = replies.into_text().unwrap();
            let items: Vec<&str> = items.into_iter().map(|r| &text[r]).collect();
            assert_eq!(items, ["a", "", "bc", "d"]);
        }
        // Fewer replies than asked for: an error, never a wrong split.
        assert!(Replies::of(b"*0\r\n").split::<2>().is_err());
        // Nil and empty arrays have no items; an error reply is the error; other replies and
        // items are errors too, and stop the items.
        let one = Replies::of;
        for empty in [&b"*-1\r\n"[..], b"*0\r\n"] {
            let empty = one(empty);
            let [r] = empty.split().unwrap();
            assert_eq!(r.spans().unwrap().count(), 0);
        }
        let error = one(b"-WRONGTYPE Operation\r\n");
        let [r] = error.split().unwrap();
        assert_eq!(r.spans().unwrap_err().code(), Some("WRONGTYPE"));
        let int = one(b":3\r\n");
        let [r] = int.split().unwrap();
        assert!(r.spans().is_err());
        let mixed = one(b"*3\r\n$1\r\na\r\n:5\r\n$1\r\nb\r\n");
        let [r] = mixed.split().unwrap();
        let items: Vec<_> = r.spans().unwrap().collect();
        assert_eq!(items.len(), 2);
        assert!(items[1].is_err());
    }
    /// Our reader against redis-rs's parser, on replies as Redis sends them and on those
    /// replies broken in every way we could think of.
    mod against_redis_rs {
        use super::*;
        use proptest::prelude::*;
        use proptest::sample::select;

        /// A RESP2 reply, as Redis may send it.
        #[derive(Clone, Debug)]
        enum Resp {
            Nil,
            NilArray,
            Int(i64),
            Bulk(Vec<u8>),
            Simple(String),
            Error(String),
            Array(Vec<Resp>),
        }

        impl Resp {
            fn encode(&self, out: &mut Vec<u8>) {
                match self {
                    Self::Nil => out.extend_from_slice(b"$-1\r\n"),
                    Self::NilArray => out.extend_from_slice(b"*-1\r\n"),
                    Self::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
                    Self::Bulk(bytes) => {
                        out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
                        out.extend_from_slice(bytes);
                        out.extend_from_slice(b"\r\n");
                    }
                    Self::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
                    Self::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
                    Self::Array(items) => {
                        out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                        for item in items {
                            item.encode(out);
                        }
                    }
                }
            }

            fn bytes(&self) -> Vec<u8> {
                let mut out = Vec::new();
                self.encode(&mut out);
                out
            }

            /// Whether `value` is this reply.
            fn is(&self, value: &Value) -> bool {
                match (self, value) {
                    (Self::Nil | Self::NilArray, Value::Nil) => true,
                    (Self::Int(n), Value::Int(v)) => n == v,
                    (Self::Bulk(b), Value::BulkString(v)) => b == v,
                    (Self::Simple(s), Value::Okay) => s == "OK",
                    (Self::Simple(s), Value::SimpleString(v)) => s != "OK" && s == v,
                    (Self::Error(s), Value::ServerError(e)) => {
                        let (code, detail) = match s.split_once(' ') {
                            Some((code, detail)) => (code, Some(detail)),
                            None => (&s[..], None),
                        };
                        e.code() == code && e.details() == detail
                    }
                    (Self::Array(items), Value::Array(values)) => {
                        items.len() == values.len()
                            && items.iter().zip(values).all(|(i, v)| i.is(v))
                    }
                    _ => false,
                }
            }
        }

        /// Bytes, with line ends and digits more often than chance.
        fn byte() -> impl Strategy<Value = u8> {
            prop_oneof![any::<u8>(), select(b"\r\n\r\n-+:$*0123456789 ".to_vec())]
        }

        fn leaf() -> impl Strategy<Value = Resp> {
            let int = prop_oneof![
                any::<i64>(),
                select(vec![0, -1, 1, i64::MIN, i64::MIN + 1, i64::MAX, 10, -10]),
            ];
            prop_oneof![
                Just(Resp::Nil),
                Just(Resp::NilArray),
                int.prop_map(Resp::Int),
                prop::collection::vec(byte(), 0..40).prop_map(Resp::Bulk),
                "[^\r\n]{0,20}".prop_map(Resp::Simple),
                Just(Resp::Simple("OK".into())),
                "[A-Z]{0,10}( [^\r\n]{0,20})?".prop_map(Resp::Error),
                Just(Resp::Error("ERR unknown command".into())),
                Just(Resp::Error("MOVED 3999 127.0.0.1:6381".into())),
            ]
        }

        /// Replies nested up to 5 levels (the top level counted), up to 6 items an array.
        fn reply() -> impl Strategy<Value = Resp> {
            leaf().prop_recursive(4, 48, 6, |inner| {
                prop::collection::vec(inner, 0..6).prop_map(Resp::Array)
            })
        }

        fn replies() -> impl Strategy<Value = Vec<Resp>> {
            prop::collection::vec(reply(), 1..4)
        }

        /// One way to break a reply.
        #[derive(Clone, Debug)]
        enum Mutation {
            Set(usize, u8),
            Insert(usize, u8),
            Delete(usize),
            Truncate(usize),
            /// Another type byte at the start of a line.
            Type(usize, u8),
            /// Another number on a line (a length or an integer).
            Number(usize, &'static str),
            /// A run of the same bytes (headers of nested arrays, say).
            Repeat(usize, &'static [u8], usize),
        }

        fn mutation() -> impl Strategy<Value = Mutation> {
            let at = any::<usize>();
            let numbers = vec![
                "-1",
                "-2",
                "-0",
                "0",
                "1",
                "2",
                "01",
                "100",
                "",
                "-",
                "x",
                "1x",
                " 1",
                "+1",
                "1 ",
                "0x10",
                "536870912",
                "536870913",
                "4294967296",
                "9223372036854775807",
                "9223372036854775808",
                "-9223372036854775808",
                "-9223372036854775809",
                "18446744073709551615",
                "99999999999999999999",
                "0000000000000000000001",
            ];
            let runs: Vec<&'static [u8]> = vec![b"*1\r\n", b"*2\r\n", b"*1\r\n:1\r\n", b"\r\n"];
            prop_oneof![
                (at, byte()).prop_map(|(i, b)| Mutation::Set(i, b)),
                (at, byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
                at.prop_map(Mutation::Delete),
                at.prop_map(Mutation::Truncate),
                (at, select(b"+-:$*%~>_,#!=(|?x\r\n".to_vec()))
                    .prop_map(|(i, b)| Mutation::Type(i, b)),
                (at, select(numbers)).prop_map(|(i, n)| Mutation::Number(i, n)),
                (at, select(runs), 1usize..120).prop_map(|(i, r, n)| Mutation::Repeat(i, r, n)),
            ]
        }

        fn mutate(buf: &mut Vec<u8>, m: &Mutation) {
            let len = buf.len();
            let starts: Vec<usize> = (0..len)
                .filter(|&i| i == 0 || buf[i - 1] == b'\n')
                .collect();
            let start = |i: usize| starts.get(i % starts.len().max(1)).copied();
            match *m {
                Mutation::Set(i, b) if len > 0 => buf[i % len] = b,
                Mutation::Insert(i, b) => buf.insert(i % (len + 1), b),
                Mutation::Delete(i) if len > 0 => drop(buf.remove(i % len)),
                Mutation::Truncate(i) => buf.truncate(i % (len + 1)),
                Mutation::Type(i, b) => {
                    if let Some(s) = start(i) {
                        buf[s] = b;
                    }
                }
                Mutation::Number(i, n) => {
                    if let Some(s) = start(i) {
                        let end = buf[s..]
                            .iter()
                            .position(|&b| b == b'\r')
                            .map_or(len, |e| s + e);
                        buf.splice((s + 1).min(end)..end, n.bytes());
                    }
                }
                Mutation::Repeat(i, run, n) => {
                    let at = start(i).unwrap_or(0);
                    buf.splice(at..at, run.iter().copied().cycle().take(run.len() * n));
                }
                _ => {}
            }
        }

        /// `arrays` arrays of one item around `leaf`.
        fn nested(arrays: usize, leaf: &[u8]) -> Vec<u8> {
            let mut out = b"*1\r\n".repeat(arrays);
            out.extend_from_slice(leaf);
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn reads_what_redis_sends(replies in replies()) {
                let encoded: Vec<Vec<u8>> = replies.iter().map(Resp::bytes).collect();
                for (reply, bytes) in replies.iter().zip(&encoded) {
                    prop_assert_eq!(skip(bytes, 0).unwrap(), Some(bytes.len()));
                    let (ours, end) = parse(bytes, 0).unwrap().unwrap();
                    prop_assert_eq!(end, bytes.len());
                    let theirs = redis::parse_redis_value(bytes).unwrap();
                    prop_assert_eq!(&ours, &theirs);
                    prop_assert!(reply.is(&ours), "{:?} read as {:?}", reply, ours);
                    // Every cut short of the end is "not all in yet", to both.
                    for cut in 0..bytes.len() {
                        prop_assert!(matches!(skip(&bytes[..cut], 0), Ok(None)), "cut at {}", cut);
                        prop_assert!(matches!(parse(&bytes[..cut], 0), Ok(None)), "cut at {}", cut);
                    }
                }
                // One after the other, split where each ends.
                let all = encoded.concat();
                let ends: Vec<usize> = encoded
                    .iter()
                    .scan(0, |end, bytes| {
                        *end += bytes.len();
                        Some(*end)
                    })
                    .collect();
                prop_assert_eq!(check_reader(&all), (ends.clone(), Stop::End));
                // And as they come in, in pieces: the reply cut short, where it starts among
                // the others, is "not all in yet".
                for cut in 0..all.len() {
                    let start = ends.iter().copied().take_while(|&end| end <= cut).last();
                    let start = start.unwrap_or(0);
                    prop_assert!(matches!(skip(&all[..cut], start), Ok(None)), "cut at {}", cut);
                    prop_assert!(matches!(parse(&all[..cut], start), Ok(None)), "cut at {}", cut);
                }
            }

        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            #[test]
            fn refuses_or_agrees_on_broken_replies(
                replies in replies(),
                mutations in prop::collection::vec(mutation(), 1..4),
            ) {
                let mut bytes = replies.iter().flat_map(Resp::bytes).collect::<Vec<u8>>();
                for m in &mutations {
                    mutate(&mut bytes, m);
                }
                // Panics on any disagreement.
                check_reader(&bytes);
            }

            #[test]
            fn refuses_or_agrees_on_arbitrary_bytes(
                bytes in prop::collection::vec(byte(), 0..64),
            ) {
                check_reader(&bytes);
            }

            #[test]
            fn refuses_or_agrees_deep_in(
                arrays in 90usize..110,
                leaf in select(vec![&b":1\r\n"[..], b"*0\r\n", b"*-1\r\n", b"$1\r\nx\r\n", b"", b"+OK"]),
                mutations in prop::collection::vec(mutation(), 0..2),
            ) {
                let mut bytes = nested(arrays, leaf);
                for m in &mutations {
                    mutate(&mut bytes, m);
                }
                check_reader(&bytes);
            }
        }

        #[test]
        fn reads_and_refuses_as_found_against_redis_rs() {
            // The lowest integer, which `HINCRBY` answers when it gets there: refused before,
            // as if the stream were broken.
            let min = b":-9223372036854775808\r\n";
            assert_eq!(skip(min, 0).unwrap(), Some(min.len()));
            assert_eq!(
                parse(min, 0).unwrap(),
                Some((Value::Int(i64::MIN), min.len()))
            );
            assert_eq!(check_reader(min), (vec![min.len()], Stop::End));
            let below = b":-9223372036854775809\r\n";
            assert!(skip(below, 0).is_err() && parse(below, 0).is_err());
            // A line that is not UTF-8: redis-rs refuses it; `parse` read a status line with
            // U+FFFD in it, and `skip` took either for a reply.
            for bad in [
                &b"+\xff\r\n"[..],
                b"-ERR \xc3\r\n",
                b"*2\r\n:1\r\n+\xfe\r\n",
            ] {
                assert!(redis::parse_redis_value(bad).is_err(), "{bad:?}");
                assert!(skip(bad, 0).is_err(), "{bad:?}");
                assert!(parse(bad, 0).is_err(), "{bad:?}");
            }
            // Bytes that `skip` refused and `parse` waited on for more (a line end, or the CRLF
            // after a payload): now both refuse them.
            for early in [
                &b"\x00"[..],
                b"?",
                b"+a\rb",
                b":1x",
                b"$1\rx",
                b"$3\r\nabcX",
            ] {
                assert!(skip(early, 0).is_err(), "{early:?}");
                assert!(parse(early, 0).is_err(), "{early:?}");
            }
            // And the other way round: `parse` refused nesting too deep before the reply at
            // level 101 had begun, `skip` waited for it. Both wait now, as redis-rs does.
            let waiting = nested(100, b"");
            assert!(matches!(skip(&waiting, 0), Ok(None)));
            assert!(matches!(parse(&waiting, 0), Ok(None)));
        }

        #[test]
        fn nests_as_deep_as_redis_rs_does() {
            // 100 levels, the top one counted: 99 arrays around an integer, an empty array or
            // a nil one.
            for deepest in [
                nested(99, b":1\r\n"),
                nested(99, b"*0\r\n"),
                nested(99, b"*-1\r\n"),
            ] {
                assert_eq!(skip(&deepest, 0).unwrap(), Some(deepest.len()));
                let (ours, end) = parse(&deepest, 0).unwrap().unwrap();
                assert_eq!(end, deepest.len());
                assert_eq!(ours, redis::parse_redis_value(&deepest).unwrap());
                assert_eq!(check_reader(&deepest), (vec![deepest.len()], Stop::End));
            }
            // 101: refused by both, once the reply at level 101 has begun (and not before).
            for deeper in [
                nested(100, b":1\r\n"),
                nested(100, b"*0\r\n"),
                nested(100, b"$"),
            ] {
                assert!(skip(&deeper, 0).is_err());
                assert!(parse(&deeper, 0).is_err());
                assert!(redis::parse_redis_value(&deeper).is_err());
                assert_eq!(check_reader(&deeper), (vec![], Stop::Refused));
            }
            let waiting = nested(100, b"");
            assert_eq!(check_reader(&waiting), (vec![], Stop::More));
            // Far deeper than any stack would take, read without recursion into it.
            let hostile = nested(1_000_000, b":1\r\n");
            assert_eq!(check_reader(&hostile), (vec![], Stop::Refused));
        }
    }
}
