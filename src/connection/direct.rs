//! A connection to one server over plain TCP or a unix socket, multiplexed, without a driver
//! task: a request writes its commands itself (never waiting while it holds the write lock,
//! so a cancelled request cannot leave half a command on the socket), then whichever waiting
//! request holds the read lock reads the socket and hands every reply to its request, in
//! order. A lone request thus reads its own reply: no hop to another task or thread, which is
//! most of what a general-purpose client costs over a bare socket (see BENCHMARKS.md). Replies
//! are parsed (see `resp`) by the request they belong to: the reader only finds where each
//! ends and hands over the bytes, since values built on one thread and freed on another make
//! the allocator's locks contend.
//!
//! Each request is due by the deadline `Connections::run` gives it. A watchdog task per
//! socket fails whatever is still waiting past its deadline, a few times per command
//! timeout, rather than a timer per command (registering and clearing one in the runtime's
//! timer wheel was a tenth of what the connection cost a request over a bare socket). The
//! same watchdog looks at an idle socket, so that one the server closed meanwhile is
//! replaced before a request finds it. It wakes at the earliest deadline it knows of, and a
//! request due sooner than its next look wakes it: a late request is failed within the timer's
//! resolution (a millisecond) of its deadline.
//!
//! The socket is trusted for nothing. RESP has no request ids: replies match requests by
//! their order alone, so one reply repeated, lost or injected (a proxy that repeats an answer)
//! would shift every later reply onto the next request, for as long as the connection lives.
//! So each request's commands end with `ECHO <n>`, `n` counting the connection's requests;
//! its reply must close the request's replies, and any shift is found at the next request's
//! tag, before any of the replies read with it is handed over. The connection is retired then
//! (its requests get an error, never another request's data), as it is for bytes that arrive
//! while no request is out, a partial reply left over, a reply that cannot answer its command,
//! nesting or lengths that Redis never sends (see `resp`). A connection counts as open only
//! after the server answered a handshake (`PING`, after `AUTH` and `SELECT` if configured), so
//! an endpoint that accepts and hangs up, or greets with an error (`maxclients`), is a failed
//! attempt and the backoff holds. When the connection closes, for whatever reason, every
//! request waiting on it is answered at once, whichever role it had; one whose commands never
//! reached the socket is told so (safe to send again).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::io::{AsyncReadExt, Interest};
use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::resp::{
    broken, encode_tag, is_tag, not_sent, out_of_step, pack, parse, skip, timed_out, Replies,
    MAX_LEN,
};
#[cfg(feature = "tls")]
use super::tls::TlsSocket;

/// The two halves of a socket.
enum Socket {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    #[cfg(feature = "tls")]
    Tls(Arc<TlsSocket>),
}

enum ReadHalf {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedReadHalf),
    #[cfg(feature = "tls")]
    Tls(Arc<TlsSocket>),
}

enum WriteHalf {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedWriteHalf),
    #[cfg(feature = "tls")]
    Tls(Arc<TlsSocket>),
}

/// The settings of `rediss://` connections (none without the `tls` feature).
#[cfg(feature = "tls")]
pub(crate) type TlsConfig = Arc<rustls::ClientConfig>;
#[cfg(not(feature = "tls"))]
pub(crate) type TlsConfig = std::convert::Infallible;

impl WriteHalf {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(w) => w.try_write(buf),
            #[cfg(unix)]
            Self::Unix(w) => w.try_write(buf),
            #[cfg(feature = "tls")]
            Self::Tls(t) => t.try_write(buf),
        }
    }

    /// Whether bytes that `try_write` took still wait for the socket (TLS records), after
    /// sending what it takes now.
    fn pending_out(&self) -> io::Result<bool> {
        match self {
            #[cfg(feature = "tls")]
            Self::Tls(t) => t.pending_out(),
            _ => Ok(false),
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Self::Tcp(w) => w.writable().await,
            #[cfg(unix)]
            Self::Unix(w) => w.writable().await,
            #[cfg(feature = "tls")]
            Self::Tls(t) => t.writable().await,
        }
    }

    /// Whether the runtime last saw the socket readable (data or its end). Free: it reads
    /// the readiness the runtime keeps, with no system call. Stale only in the safe way: it
    /// may say readable when a read would find nothing.
    fn seen_readable(&self) -> bool {
        let probe = || Ok(());
        match self {
            Self::Tcp(w) => w.as_ref().try_io(Interest::READABLE, probe).is_ok(),
            #[cfg(unix)]
            Self::Unix(w) => w.as_ref().try_io(Interest::READABLE, probe).is_ok(),
            #[cfg(feature = "tls")]
            Self::Tls(t) => t.seen_readable(),
        }
    }
}

impl ReadHalf {
    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Self::Tcp(r) => r.read_buf(buf).await,
            #[cfg(unix)]
            Self::Unix(r) => r.read_buf(buf).await,
            #[cfg(feature = "tls")]
            Self::Tls(t) => t.read_buf(buf).await,
        }
    }

    /// Reads what the socket holds now, without waiting.
    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Self::Tcp(r) => r.try_read_buf(buf),
            #[cfg(unix)]
            Self::Unix(r) => r.try_read_buf(buf),
            #[cfg(feature = "tls")]
            Self::Tls(t) => t.try_read_buf(buf),
        }
    }
}

/// A request waiting for its replies.
struct Pending {
    /// Replies to its commands, and the one to its tag.
    expected: usize,
    /// The number its `ECHO` carries: its reply closes the request's replies.
    tag: u64,
    /// Where, in `replies`, the last reply in starts (the tag's, once all are in).
    last_at: usize,
    /// Replies received, and their bytes.
    got: usize,
    replies: Replies,
    /// Taken when the request is answered: by its replies, by the watchdog at `deadline`
    /// (the replies then still come, and are dropped), or by the socket failing.
    done: Option<oneshot::Sender<RedisResult<Replies>>>,
    deadline: Option<Instant>,
}

impl Pending {
    fn answer(&mut self, result: RedisResult<Replies>) {
        if let Some(done) = self.done.take() {
            // A request that gave up (cancelled) no longer listens: nothing to do.
            let _ = done.send(result);
        }
    }
}

struct Writer {
    /// Commands not on the socket yet: gathered for one turn of the runtime while a batch is
    /// out, or arrived while another request (or the flush task) was writing, which then
    /// writes them too.
    backlog: Vec<u8>,
    /// Someone is writing to the socket (outside the lock): only they write.
    writing: bool,
    /// Requests in the order of their commands.
    pending: VecDeque<Pending>,
    /// How many of `pending`, from the front, have their commands sent (or being flushed);
    /// the rest wait in `backlog`.
    sent: usize,
    /// A request is letting the runtime run a turn before it sends the backlog.
    gathering: bool,
    /// When the watchdog looks next; a request due before then wakes it.
    watch_at: Instant,
    /// The next request's tag.
    next_tag: u64,
}

/// The gathering request's duty to send the backlog, done when dropped.
struct Gather<'a>(&'a Direct);

impl Drop for Gather<'_> {
    fn drop(&mut self) {
        let direct = self.0;
        let mut w = direct.inner.writer();
        w.gathering = false;
        // Outside a runtime (dropped as it shuts down) nothing is waiting any more, and a
        // socket that is full could not be flushed by a task.
        if w.writing || w.backlog.is_empty() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        // A failed write has closed the socket and failed its requests.
        let _ = direct.send_backlog(w);
    }
}

struct Reader {
    half: ReadHalf,
    buf: Vec<u8>,
    /// Scratch lists of `dispatch`, kept for their capacity: where each reply in `buf`
    /// ends, and the requests whose replies are all in.
    ends: Vec<usize>,
    done: Vec<Pending>,
}

struct Inner {
    half: WriteHalf,
    writer: Mutex<Writer>,
    reader: tokio::sync::Mutex<Reader>,
    closed: Arc<AtomicBool>,
    wake: Arc<Notify>,
    /// The waker of the request reading the socket, which the watchdog and `close` wake when
    /// they answer requests (the reader's own among them, maybe): waiting for data, it listens
    /// to no other.
    reading: Mutex<Option<Waker>>,
    /// Close the socket when a request on it is late (node sockets, which nothing else
    /// retires: see `node`).
    close_when_late: AtomicBool,
    /// Wakes the watchdog before its time.
    watch_now: Arc<Notify>,
    db: i64,
}

async fn tcp(host: &str, port: u16) -> io::Result<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A cheap, cloneable handle to one socket.
#[derive(Clone)]
pub(crate) struct Direct {
    inner: Arc<Inner>,
    /// When the replies of requests made through this handle are due (none: never failed
    /// for being late; the caller bounds them).
    deadline: Option<Instant>,
}

/// Replies buffered before the reader parses; grows for larger ones.
const READ_CHUNK: usize = 16 * 1024;

/// Bytes the reader may hold without a complete reply among them: a server that keeps
/// sending one endless reply is cut off here, not when memory runs out.
const MAX_BUFFERED: usize = 2 * MAX_LEN;

impl Direct {
    /// Opens a socket to `addr`, logs in (`AUTH`, `SELECT`) and checks that a Redis server
    /// answers (`PING`). `closed` is raised, and `wake` notified, when the socket fails.
    /// Requests past their deadline are failed at it; an idle socket is looked at every `tick`.
    pub(crate) async fn connect(
        addr: &redis::ConnectionAddr,
        settings: &redis::RedisConnectionInfo,
        tls: Option<&TlsConfig>,
        closed: Arc<AtomicBool>,
        wake: Arc<Notify>,
        tick: Duration,
    ) -> RedisResult<Self> {
        let socket = match (addr, tls) {
            (redis::ConnectionAddr::Tcp(host, port), _) => Socket::Tcp(tcp(host, *port).await?),
            #[cfg(unix)]
            (redis::ConnectionAddr::Unix(path), _) => {
                Socket::Unix(tokio::net::UnixStream::connect(path).await?)
            }
            #[cfg(feature = "tls")]
            (
                redis::ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: false,
                    ..
                },
                Some(config),
            ) => {
                let stream = tcp(host, *port).await?;
                let tls = TlsSocket::connect(stream, host, Arc::clone(config)).await?;
                Socket::Tls(Arc::new(tls))
            }
            _ => return Err(broken("not an address that our own connection serves")),
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
            #[cfg(feature = "tls")]
            Socket::Tls(s) => (ReadHalf::Tls(Arc::clone(&s)), WriteHalf::Tls(s)),
        };
        let conn = Self {
            inner: Arc::new(Inner {
                half: write,
                writer: Mutex::new(Writer {
                    backlog: Vec::new(),
                    writing: false,
                    pending: VecDeque::new(),
                    sent: 0,
                    gathering: false,
                    watch_at: Instant::now() + tick,
                    next_tag: 0,
                }),
                reader: tokio::sync::Mutex::new(Reader {
                    half: read,
                    buf: Vec::with_capacity(READ_CHUNK),
                    ends: Vec::new(),
                    done: Vec::new(),
                }),
                closed,
                wake,
                reading: Mutex::new(None),
                close_when_late: AtomicBool::new(false),
                watch_now: Arc::new(Notify::new()),
                db: settings.db(),
            }),
            deadline: None,
        };
        tokio::spawn(watch(Arc::downgrade(&conn.inner), tick));
        conn.handshake(settings).await?;
        Ok(conn)
    }

    /// `AUTH` and `SELECT` if configured, then `PING`, in one round trip; every reply must be
    /// the one Redis gives. Anything else (an error the server sent unasked at accept, such as
    /// `maxclients`'s, or a socket that closes) fails the attempt.
    async fn handshake(&self, settings: &redis::RedisConnectionInfo) -> RedisResult<()> {
        let mut auth: Vec<&[u8]> = vec![b"AUTH"];
        auth.extend(settings.username().map(str::as_bytes));
        auth.extend(settings.password().map(str::as_bytes));
        let db = settings.db().to_string();
        let select: [&[u8]; 2] = [b"SELECT", db.as_bytes()];
        let mut commands: Vec<&[&[u8]]> = Vec::with_capacity(3);
        if settings.password().is_some() {
            commands.push(&auth);
        }
        if settings.db() != 0 {
            commands.push(&select);
        }
        commands.push(&[b"PING"]);
        let replies = self.replies(&pack(&commands), commands.len()).await?;
        let replies = replies.list(commands.len())?;
        let Some((ping, logins)) = replies.split_last() else {
            return Err(broken("no reply to PING"));
        };
        for login in logins {
            login.check_is(b'+')?;
        }
        match ping.value()? {
            Value::SimpleString(pong) if pong == "PONG" => Ok(()),
            _ => Err(out_of_step("the server did not answer PING as Redis does")),
        }
    }

    /// From now on, a request still unanswered at its deadline closes the socket (failing
    /// the others on it) instead of failing alone.
    pub(crate) fn close_when_late(&self) {
        self.inner.close_when_late.store(true, Ordering::Relaxed);
    }

    /// This socket, for requests due by `deadline`.
    pub(crate) fn until(&self, deadline: Instant) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            deadline: Some(deadline),
        }
    }

    /// Sends `bytes` (`expected` commands, already in RESP) and waits for their replies.
    async fn request(&self, bytes: &[u8], expected: usize) -> RedisResult<Vec<Value>> {
        let replies = self.replies(bytes, expected).await?.bytes;
        let mut values = Vec::with_capacity(expected);
        let mut at = 0;
        while values.len() < expected {
            let (value, end) = parse(&replies, at)?.ok_or_else(|| broken("a reply cut short"))?;
            values.push(value);
            at = end;
        }
        Ok(values)
    }

    /// Sends `bytes` (`expected` commands, already in RESP) and waits for their replies, to
    /// be read in place.
    pub(crate) async fn replies(&self, bytes: &[u8], expected: usize) -> RedisResult<Replies> {
        let (done, mut answer) = oneshot::channel();
        let mut gathers = false;
        {
            let mut w = self.inner.writer();
            if self.inner.closed.load(Ordering::Relaxed) {
                return Err(not_sent("the connection to Redis is closed"));
            }
            // Nothing is out: whatever the socket holds came unasked, and would be taken for
            // this request's replies.
            if w.pending.is_empty() && self.inner.stray() {
                drop(w);
                self.inner.close();
                return Err(not_sent("Redis sent bytes that no request asked for"));
            }
            if let Some(due) = self.deadline.filter(|&due| due < w.watch_at) {
                w.watch_at = due;
                self.inner.watch_now.notify_one();
            }
            let tag = w.next_tag;
            w.next_tag = tag.wrapping_add(1);
            w.pending.push_back(Pending {
                expected: expected + 1,
                tag,
                last_at: 0,
                got: 0,
                replies: Replies::default(),
                done: Some(done),
                deadline: self.deadline,
            });
            w.backlog.extend_from_slice(bytes);
            encode_tag(&mut w.backlog, tag);
            // A lone request goes at once. While a batch is out, the first request to come
            // gathers: every other task that is ready runs first (one turn of the runtime),
            // then it sends what they queued meanwhile in one write. Concurrent requests thus
            // share system calls, here and in Redis, and none waits for another's round trip.
            // While someone writes, they take these along.
            if w.writing {
                w.sent = w.pending.len();
            } else if w.sent == 0 {
                self.send_backlog(w)?;
            } else if !w.gathering {
                w.gathering = true;
                gathers = true;
            }
        }
        if gathers {
            // Sends when dropped: after the turn, or at once if this request is cancelled.
            let gather = Gather(self);
            tokio::task::yield_now().await;
            drop(gather);
        }
        tokio::select! {
            biased;
            result = &mut answer => {
                result.unwrap_or_else(|_| Err(broken("the connection to Redis dropped")))
            }
            mut reader = self.inner.reader.lock() => self.read_for(&mut reader, answer).await,
        }
    }

    /// Reads for every request until `answer` has this one's replies, or its deadline passed.
    async fn read_for(
        &self,
        reader: &mut Reader,
        mut answer: oneshot::Receiver<RedisResult<Replies>>,
    ) -> RedisResult<Replies> {
        loop {
            if let Err(e) = self.dispatch(reader) {
                self.inner.close();
                return Err(e);
            }
            if let Ok(result) = answer.try_recv() {
                return result;
            }
            if reader.buf.len() > MAX_BUFFERED {
                self.inner.close();
                return Err(out_of_step("a reply larger than any of Redis"));
            }
            if reader.buf.capacity() - reader.buf.len() < READ_CHUNK / 4 {
                // Doubling: a large reply is parsed again only a few times.
                reader.buf.reserve(reader.buf.len().max(READ_CHUNK));
            }
            // The waker this request left with the channel must not wake it when `dispatch`
            // hands its replies over: it reads them itself (a poll of the whole request for
            // nothing and, on a current-thread runtime, one more turn of the I/O driver).
            if let Poll::Ready(result) =
                Pin::new(&mut answer).poll(&mut Context::from_waker(Waker::noop()))
            {
                return result.unwrap_or_else(|_| Err(broken("the connection to Redis dropped")));
            }
            let mut read = pin!(reader.half.read_buf(&mut reader.buf));
            let read = std::future::poll_fn(|cx| {
                if let Poll::Ready(read) = read.as_mut().poll(cx) {
                    return Poll::Ready(Ok(read));
                }
                // While it waits for data, the watchdog may answer it (its deadline passed):
                // it is woken then, having left its waker before looking.
                self.inner.reading_by(cx.waker());
                match answer.try_recv() {
                    Err(TryRecvError::Empty) => Poll::Pending,
                    answered => Poll::Ready(Err(answered)),
                }
            })
            .await;
            match read {
                Err(answered) => {
                    return answered
                        .unwrap_or_else(|_| Err(broken("the connection to Redis dropped")))
                }
                Ok(Ok(0)) => {
                    self.inner.close();
                    return Err(broken("Redis closed the connection"));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    self.inner.close();
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

    /// Sends the backlog now (nobody is writing); a failed write closes the socket.
    fn send_backlog(&self, mut w: MutexGuard<'_, Writer>) -> io::Result<()> {
        let out = self.take_backlog(&mut w);
        drop(w);
        self.write_out(out).inspect_err(|_| self.inner.close())
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
            if sent < out.len() || self.inner.half.pending_out()? {
                out.drain(..sent);
                tokio::spawn(self.clone().flush(out));
                return Ok(());
            }
            let mut w = self.inner.writer();
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

    /// Hands every complete reply in the buffer to its request. Replies that no request can
    /// have caused are an error before any is handed over: the stream is out of step, and
    /// each of them may be another request's.
    fn dispatch(&self, reader: &mut Reader) -> RedisResult<()> {
        let Reader {
            buf, ends, done, ..
        } = reader;
        ends.clear();
        let mut at = 0;
        while let Some(end) = skip(buf, at)? {
            ends.push(end);
            at = end;
        }
        if ends.is_empty() {
            return Ok(());
        }
        // One short hold of the lock for the whole read; the requests are woken, and gathered
        // commands written, after it.
        let mut out = None;
        {
            let mut w = self.inner.writer();
            let mut start = 0;
            let mut ends = ends.iter().copied();
            while let Some(mut end) = ends.next() {
                // `sent` counts the requests, from the front, whose commands went out.
                let none_out = w.sent == 0;
                let front = match w.pending.front_mut() {
                    Some(front) if !none_out => front,
                    _ => {
                        done.clear();
                        return Err(out_of_step("a reply that no request asked for"));
                    }
                };
                // The request's replies that are in, copied in one go (one allocation of the
                // right size when they came in one read, as they mostly do).
                let had = front.replies.bytes.len();
                let mut from = start;
                loop {
                    front.got += 1;
                    front.last_at = had + from - start;
                    front.replies.ended(had + end - start);
                    if front.got == front.expected {
                        break;
                    }
                    let Some(next) = ends.next() else { break };
                    (from, end) = (end, next);
                }
                front.replies.bytes.extend_from_slice(&buf[start..end]);
                start = end;
                if front.got < front.expected {
                    break;
                }
                // The tag proves these replies are this request's: a reply repeated, lost or
                // left over anywhere before them would have shifted another one here.
                if !is_tag(&front.replies.bytes[front.last_at..], front.tag) {
                    done.clear();
                    return Err(out_of_step("replies out of step with their requests"));
                }
                let last_at = front.last_at;
                front.replies.bytes.truncate(last_at);
                done.extend(w.pending.pop_front());
                w.sent -= 1;
                if w.sent == 0 && !w.pending.is_empty() && !w.writing {
                    // Nothing is out: commands still gathering go now.
                    out = Some(self.take_backlog(&mut w));
                }
            }
            if w.pending.is_empty() && at < buf.len() {
                done.clear();
                return Err(out_of_step("part of a reply that no request asked for"));
            }
        }
        buf.drain(..at);
        for mut p in done.drain(..) {
            let replies = std::mem::take(&mut p.replies);
            p.answer(Ok(replies));
        }
        match out {
            Some(out) => self.write_out(out).map_err(Into::into),
            None => Ok(()),
        }
    }

    /// Sends what the socket did not take at once, as it takes it, then whatever gathered
    /// meanwhile.
    async fn flush(self, out: Vec<u8>) {
        if self.inner.half.writable().await.is_err() {
            return self.inner.close();
        }
        // Written at least in part now; the rest, if any, by another flush task.
        if self.write_out(out).is_err() {
            self.inner.close();
        }
    }
}

impl Inner {
    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The socket failed, or cannot be trusted: every waiting request fails at once (the one
    /// reading the socket is woken too), and new ones fail without being sent.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        {
            let mut w = self.writer();
            let sent = std::mem::take(&mut w.sent);
            for (i, mut p) in w.pending.drain(..).enumerate() {
                p.answer(Err(if i < sent {
                    broken("the connection to Redis dropped")
                } else {
                    not_sent("the connection to Redis closed before this request was sent")
                }));
            }
            w.backlog.clear();
        }
        self.wake_reader();
        self.watch_now.notify_one();
    }

    fn wake_reader(&self) {
        let reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(reader) = reading.as_ref() {
            reader.wake_by_ref();
        }
    }

    /// Whether an idle socket holds bytes (or its end) that no request asked for. Costs
    /// nothing unless the runtime saw the socket readable.
    fn stray(&self) -> bool {
        if !self.half.seen_readable() {
            return false;
        }
        // Held: a request is just done reading; it left nothing behind (see `dispatch`).
        self.reader
            .try_lock()
            .is_ok_and(|mut reader| Self::stray_in(&mut reader))
    }

    fn stray_in(reader: &mut Reader) -> bool {
        let Reader { half, buf, .. } = reader;
        !buf.is_empty()
            || match half.try_read_buf(buf) {
                Ok(_) => true,
                Err(e) => e.kind() != io::ErrorKind::WouldBlock,
            }
    }

    /// Whether an idle socket is still open, and silent: one that Redis (its `timeout`), a
    /// proxy or a restart closed is found here, not by the next request on it, which may be
    /// one that is never sent twice; one that sends unasked is out of step. Requests pack
    /// onto the first connections, so the others can sit idle for long. A socket in use is
    /// left to its readers.
    fn check_idle(&self) {
        if !self.half.seen_readable() {
            return;
        }
        let Ok(mut reader) = self.reader.try_lock() else {
            return;
        };
        let stray = {
            // Held, so that no request is sent while the socket is read.
            let w = self.writer();
            w.pending.is_empty() && Self::stray_in(&mut reader)
        };
        drop(reader);
        if stray {
            self.close();
        }
    }

    /// The task with `waker` reads the socket now.
    fn reading_by(&self, waker: &Waker) {
        let mut reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        if !reading.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *reading = Some(waker.clone());
        }
    }
}

/// Fails the requests still waiting past their deadline, at the earliest deadline it knows of
/// (a request due sooner wakes it), and looks at the idle socket at least every `tick`; until
/// the socket closes (which fails them all) or is dropped.
async fn watch(inner: Weak<Inner>, tick: Duration) {
    let Some(now_please) = inner.upgrade().map(|i| Arc::clone(&i.watch_now)) else {
        return;
    };
    let mut next = Instant::now() + tick;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = now_please.notified() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let mut late = false;
        {
            let mut w = inner.writer();
            next = now + tick;
            for p in w.pending.iter_mut().filter(|p| p.done.is_some()) {
                match p.deadline {
                    Some(due) if due <= now => {
                        p.answer(Err(timed_out()));
                        late = true;
                    }
                    Some(due) => next = next.min(due),
                    None => {}
                }
            }
            // Under the lock that requests take to queue: one due sooner than this sees it.
            w.watch_at = next;
        }
        if late && inner.close_when_late.load(Ordering::Relaxed) {
            inner.close();
            return;
        }
        if late {
            inner.wake_reader();
        }
        inner.check_idle();
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
