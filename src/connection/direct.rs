//! A connection to one server over plain TCP or a unix socket, multiplexed, without a driver
//! task: a request writes its commands itself (never waiting while it holds the write lock,
//! so a cancelled request cannot leave half a command on the socket), then whichever waiting
//! request holds the read lock reads the socket and hands every reply to its request, in
//! order. A lone request thus reads its own reply: no hop to another task or thread, which is
//! most of what a general-purpose client costs over a bare socket (see BENCHMARKS.md). Replies
//! are parsed by hand into [`redis::Value`], by the request they belong to (the reader only
//! finds where each ends and hands over the bytes: values built on one thread and freed on
//! another make the allocator's locks contend); only error replies go through redis-rs's
//! parser.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::{oneshot, Notify};

/// The two halves of a socket.
enum Socket {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

enum ReadHalf {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedReadHalf),
}

enum WriteHalf {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedWriteHalf),
}

impl WriteHalf {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(w) => w.try_write(buf),
            #[cfg(unix)]
            Self::Unix(w) => w.try_write(buf),
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Self::Tcp(w) => w.writable().await,
            #[cfg(unix)]
            Self::Unix(w) => w.writable().await,
        }
    }
}

impl ReadHalf {
    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Self::Tcp(r) => r.read_buf(buf).await,
            #[cfg(unix)]
            Self::Unix(r) => r.read_buf(buf).await,
        }
    }
}

/// A request waiting for its replies.
struct Pending {
    expected: usize,
    /// Replies received, and their bytes.
    got: usize,
    bytes: Vec<u8>,
    done: oneshot::Sender<RedisResult<Vec<u8>>>,
}

struct Writer {
    /// Commands not on the socket yet: held while a batch is out, or arrived while another
    /// request (or the flush task) was writing, which then writes them too.
    backlog: Vec<u8>,
    /// Someone is writing to the socket (outside the lock): only they write.
    writing: bool,
    /// Requests in the order of their commands.
    pending: VecDeque<Pending>,
    /// How many of `pending`, from the front, have their commands sent (or being flushed);
    /// the rest are held in `backlog` until those replies are in.
    sent: usize,
}

struct Reader {
    half: ReadHalf,
    buf: Vec<u8>,
}

struct Inner {
    half: WriteHalf,
    writer: Mutex<Writer>,
    reader: tokio::sync::Mutex<Reader>,
    closed: Arc<AtomicBool>,
    wake: Arc<Notify>,
    db: i64,
}

/// A cheap, cloneable handle to one socket.
#[derive(Clone)]
pub(crate) struct Direct {
    inner: Arc<Inner>,
}

/// Replies buffered before the reader parses; grows for larger ones.
const READ_CHUNK: usize = 16 * 1024;

fn broken(what: &str) -> RedisError {
    RedisError::from(io::Error::new(io::ErrorKind::BrokenPipe, what.to_owned()))
}

impl Direct {
    /// Opens a socket to `addr` and logs in (`AUTH`, `SELECT`). `closed` is raised, and `wake`
    /// notified, when the socket fails.
    pub(crate) async fn connect(
        addr: &redis::ConnectionAddr,
        settings: &redis::RedisConnectionInfo,
        closed: Arc<AtomicBool>,
        wake: Arc<Notify>,
    ) -> RedisResult<Self> {
        let socket = match addr {
            redis::ConnectionAddr::Tcp(host, port) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Socket::Tcp(stream)
            }
            #[cfg(unix)]
            redis::ConnectionAddr::Unix(path) => {
                Socket::Unix(tokio::net::UnixStream::connect(path).await?)
            }
            _ => return Err(broken("not a plain TCP or unix socket address")),
        };
        let (read, write) = match socket {
            Socket::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            #[cfg(unix)]
            Socket::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
        };
        let conn = Self {
            inner: Arc::new(Inner {
                half: write,
                writer: Mutex::new(Writer {
                    backlog: Vec::new(),
                    writing: false,
                    pending: VecDeque::new(),
                    sent: 0,
                }),
                reader: tokio::sync::Mutex::new(Reader {
                    half: read,
                    buf: Vec::with_capacity(READ_CHUNK),
                }),
                closed,
                wake,
                db: settings.db(),
            }),
        };
        let mut login = redis::pipe();
        if let Some(password) = settings.password() {
            let auth = login.cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password).ignore();
        }
        if settings.db() != 0 {
            login.cmd("SELECT").arg(settings.db()).ignore();
        }
        if !login.is_empty() {
            let mut conn = conn.clone();
            login.exec_async(&mut conn).await?;
        }
        Ok(conn)
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The socket failed: every waiting request fails, new ones fail at once.
    fn close(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.wake.notify_one();
        for p in self.writer().pending.drain(..) {
            let _ = p.done.send(Err(broken("the connection to Redis dropped")));
        }
    }

    /// Sends `bytes` (`expected` commands, already in RESP) and waits for their replies.
    pub(crate) async fn request(&self, bytes: &[u8], expected: usize) -> RedisResult<Vec<Value>> {
        let replies = self.exchange(bytes, expected).await?;
        let mut values = Vec::with_capacity(expected);
        let mut at = 0;
        while values.len() < expected {
            let (value, end) = parse(&replies, at)?.ok_or_else(|| broken("a reply cut short"))?;
            values.push(value);
            at = end;
        }
        Ok(values)
    }

    /// Sends `bytes` (`expected` commands) and waits for the bytes of their replies.
    async fn exchange(&self, bytes: &[u8], expected: usize) -> RedisResult<Vec<u8>> {
        let (done, mut answer) = oneshot::channel();
        {
            let mut w = self.writer();
            if self.inner.closed.load(Ordering::Relaxed) {
                return Err(broken("the connection to Redis is closed"));
            }
            w.pending.push_back(Pending {
                expected,
                got: 0,
                bytes: Vec::new(),
                done,
            });
            w.backlog.extend_from_slice(bytes);
            // One batch out at a time: while one is, commands gather and go together when its
            // replies are in (fewer system calls here and in Redis under load; a lone request
            // goes at once). While someone writes, they take these along.
            if w.writing {
                w.sent = w.pending.len();
            } else if w.sent == 0 {
                let out = self.take_backlog(&mut w);
                drop(w);
                if let Err(e) = self.write_out(out) {
                    self.close();
                    return Err(e.into());
                }
            }
        }
        tokio::select! {
            biased;
            result = &mut answer => {
                result.unwrap_or_else(|_| Err(broken("the connection to Redis dropped")))
            }
            mut reader = self.inner.reader.lock() => self.read_for(&mut reader, answer).await,
        }
    }

    /// Reads for every request until `answer` has this one's replies.
    async fn read_for(
        &self,
        reader: &mut Reader,
        mut answer: oneshot::Receiver<RedisResult<Vec<u8>>>,
    ) -> RedisResult<Vec<u8>> {
        loop {
            if let Ok(result) = answer.try_recv() {
                return result;
            }
            if let Err(e) = self.dispatch(reader) {
                self.close();
                return Err(e);
            }
            if let Ok(result) = answer.try_recv() {
                return result;
            }
            if reader.buf.capacity() - reader.buf.len() < READ_CHUNK / 4 {
                // Doubling: a large reply is parsed again only a few times.
                reader.buf.reserve(reader.buf.len().max(READ_CHUNK));
            }
            match reader.half.read_buf(&mut reader.buf).await {
                Ok(0) => {
                    self.close();
                    return Err(broken("Redis closed the connection"));
                }
                Ok(_) => {}
                Err(e) => {
                    self.close();
                    return Err(e.into());
                }
            }
        }
    }

    /// Takes the backlog to write it, outside the lock: every pending request is then sent.
    fn take_backlog(&self, w: &mut Writer) -> Vec<u8> {
        w.writing = true;
        w.sent = w.pending.len();
        std::mem::take(&mut w.backlog)
    }

    /// Writes `out`, then whatever gathered meanwhile, until nothing is left; if the socket
    /// is full, a flush task takes over. Only the holder of `writing` calls this.
    fn write_out(&self, mut out: Vec<u8>) -> io::Result<()> {
        loop {
            let mut sent = 0;
            while sent < out.len() {
                match self.inner.half.try_write(&out[sent..]) {
                    Ok(0) => break,
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if sent < out.len() {
                out.drain(..sent);
                tokio::spawn(self.clone().flush(out));
                return Ok(());
            }
            let mut w = self.writer();
            if w.backlog.is_empty() {
                w.writing = false;
                // Reuse the buffer for the next batch.
                out.clear();
                w.backlog = out;
                return Ok(());
            }
            out = self.take_backlog(&mut w);
        }
    }

    /// Hands every complete reply in the buffer to its request.
    fn dispatch(&self, reader: &mut Reader) -> RedisResult<()> {
        let mut ends = Vec::new();
        let mut at = 0;
        while let Some(end) = skip(&reader.buf, at)? {
            ends.push(end);
            at = end;
        }
        if ends.is_empty() {
            return Ok(());
        }
        // One short hold of the lock for the whole read; the requests are woken, and held
        // commands written, after it.
        let mut complete = Vec::new();
        let mut out = None;
        {
            let mut w = self.writer();
            let mut start = 0;
            for end in ends {
                let Some(front) = w.pending.front_mut() else {
                    return Err(broken("a reply that no request asked for"));
                };
                front.bytes.extend_from_slice(&reader.buf[start..end]);
                front.got += 1;
                start = end;
                if front.got < front.expected {
                    continue;
                }
                complete.extend(w.pending.pop_front());
                w.sent = w.sent.saturating_sub(1);
                if w.sent == 0 && !w.pending.is_empty() && !w.writing {
                    // The batch is in: the held commands go now.
                    out = Some(self.take_backlog(&mut w));
                }
            }
        }
        reader.buf.drain(..at);
        if let Some(out) = out {
            self.write_out(out)?;
        }
        for p in complete {
            // A request that gave up (cancelled) no longer listens: nothing to do.
            let _ = p.done.send(Ok(p.bytes));
        }
        Ok(())
    }

    /// Sends what the socket did not take at once, as it takes it, then whatever gathered
    /// meanwhile.
    async fn flush(self, out: Vec<u8>) {
        if self.inner.half.writable().await.is_err() {
            return self.close();
        }
        // Written at least in part now; the rest, if any, by another flush task.
        if self.write_out(out).is_err() {
            self.close();
        }
    }
}

impl ConnectionLike for Direct {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut replies = self.request(&cmd.get_packed_command(), 1).await?;
            replies
                .pop()
                .ok_or_else(|| broken("no reply"))?
                .extract_error()
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let bytes = pipeline.get_packed_pipeline();
            let expected = if pipeline.is_transaction() {
                pipeline.len() + 2
            } else {
                pipeline.len()
            };
            let replies = self.request(&bytes, expected).await?;
            Ok(replies.into_iter().skip(offset).take(count).collect())
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.db
    }
}

/// One RESP2 reply at `at`: the value and where it ends; `None` if it is not all in yet.
fn parse(buf: &[u8], at: usize) -> RedisResult<Option<(Value, usize)>> {
    let Some((kind, line, next)) = line(buf, at) else {
        return Ok(None);
    };
    let number = || number(line);
    Ok(match kind {
        b'+' if line == b"OK" => Some((Value::Okay, next)),
        b'+' => Some((
            Value::SimpleString(String::from_utf8_lossy(line).into_owned()),
            next,
        )),
        // Errors are rare: redis-rs's parser gives them their codes and kinds.
        b'-' => Some((redis::parse_redis_value(&buf[at..next])?, next)),
        b':' => Some((Value::Int(number()?), next)),
        b'$' => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Some((Value::Nil, next)));
            };
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            Some((Value::BulkString(buf[next..end].to_vec()), end + 2))
        }
        b'*' => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Some((Value::Nil, next)));
            };
            let mut items = Vec::with_capacity(len.min(1024));
            let mut at = next;
            for _ in 0..len {
                match parse(buf, at)? {
                    Some((item, end)) => {
                        items.push(item);
                        at = end;
                    }
                    None => return Ok(None),
                }
            }
            Some((Value::Array(items), at))
        }
        _ => return Err(broken("a reply of an unknown type from Redis")),
    })
}

/// Appends one command in RESP to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    use std::io::Write as _;
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Where the RESP2 reply at `at` ends; `None` if it is not all in yet. Builds nothing.
fn skip(buf: &[u8], at: usize) -> RedisResult<Option<usize>> {
    let Some((kind, line, next)) = line(buf, at) else {
        return Ok(None);
    };
    let number = || number(line);
    Ok(match kind {
        b'+' | b'-' | b':' => Some(next),
        b'$' => match usize::try_from(number()?) {
            Ok(len) => (buf.len() >= next + len + 2).then_some(next + len + 2),
            Err(_) => Some(next),
        },
        b'*' => {
            let mut at = next;
            for _ in 0..usize::try_from(number()?).unwrap_or(0) {
                match skip(buf, at)? {
                    Some(end) => at = end,
                    None => return Ok(None),
                }
            }
            Some(at)
        }
        _ => return Err(broken("a reply of an unknown type from Redis")),
    })
}

/// The type byte, the rest of the line, and where the next line starts.
fn line(buf: &[u8], at: usize) -> Option<(u8, &[u8], usize)> {
    let kind = *buf.get(at)?;
    let rest = buf.get(at + 1..)?;
    // A line holds no '\r' but its end (RESP2: bulk payloads are never scanned here).
    let end = rest.iter().position(|&b| b == b'\r')?;
    (*rest.get(end + 1)? == b'\n').then_some((kind, &rest[..end], at + 1 + end + 2))
}

/// A RESP integer (a length or an `:` reply), read digit by digit.
fn number(line: &[u8]) -> RedisResult<i64> {
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
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d - b'0')))
            .ok_or_else(malformed)?;
    }
    Ok(if negative { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_redis_rs_does() {
        let mut ours = Vec::new();
        encode(&mut ours, &[b"HGETALL", b"k"]);
        encode(&mut ours, &[b"PEXPIRE", b"k", b"1000"]);
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL")
            .arg("k")
            .cmd("PEXPIRE")
            .arg("k")
            .arg(1000);
        assert_eq!(ours, pipe.get_packed_pipeline());
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
        assert_eq!(number(b"-1").unwrap(), -1);
        assert_eq!(number(b"9223372036854775807").unwrap(), i64::MAX);
        for bad in [&b""[..], b"-", b"1x", b"99999999999999999999"] {
            assert!(number(bad).is_err(), "{bad:?}");
        }
    }
}
