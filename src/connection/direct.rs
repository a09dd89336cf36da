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
//! replaced before a request finds it.

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
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::resp::{broken, parse, skip, timed_out, Replies};

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

    /// Reads what the socket holds now, without waiting.
    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Self::Tcp(r) => r.try_read_buf(buf),
            #[cfg(unix)]
            Self::Unix(r) => r.try_read_buf(buf),
        }
    }
}

/// A request waiting for its replies.
struct Pending {
    expected: usize,
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
    /// The waker of the request reading the socket, which the watchdog wakes when it fails
    /// requests (the reader's own among them, maybe): waiting for data, it listens to no other.
    reading: Mutex<Option<Waker>>,
    db: i64,
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

impl Direct {
    /// Opens a socket to `addr` and logs in (`AUTH`, `SELECT`). `closed` is raised, and `wake`
    /// notified, when the socket fails. Requests past their deadline are failed within
    /// `tick` of it.
    pub(crate) async fn connect(
        addr: &redis::ConnectionAddr,
        settings: &redis::RedisConnectionInfo,
        closed: Arc<AtomicBool>,
        wake: Arc<Notify>,
        tick: Duration,
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
                    gathering: false,
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
                db: settings.db(),
            }),
            deadline: None,
        };
        tokio::spawn(watch(Arc::downgrade(&conn.inner), tick));
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
                return Err(broken("the connection to Redis is closed"));
            }
            w.pending.push_back(Pending {
                expected,
                got: 0,
                replies: Replies::default(),
                done: Some(done),
                deadline: self.deadline,
            });
            w.backlog.extend_from_slice(bytes);
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
            if sent < out.len() {
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

    /// Hands every complete reply in the buffer to its request.
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
                let Some(front) = w.pending.front_mut() else {
                    return Err(broken("a reply that no request asked for"));
                };
                // The request's replies that are in, copied in one go (one allocation of the
                // right size when they came in one read, as they mostly do).
                let had = front.replies.bytes.len();
                front.got += 1;
                front.replies.ended(had + end - start);
                while front.got < front.expected {
                    let Some(next) = ends.next() else { break };
                    front.got += 1;
                    end = next;
                    front.replies.ended(had + end - start);
                }
                front.replies.bytes.extend_from_slice(&buf[start..end]);
                start = end;
                if front.got < front.expected {
                    break;
                }
                done.extend(w.pending.pop_front());
                w.sent = w.sent.saturating_sub(1);
                if w.sent == 0 && !w.pending.is_empty() && !w.writing {
                    // Nothing is out: commands still gathering go now.
                    out = Some(self.take_backlog(&mut w));
                }
            }
        }
        buf.drain(..at);
        if let Some(out) = out {
            self.write_out(out)?;
        }
        for mut p in done.drain(..) {
            let replies = std::mem::take(&mut p.replies);
            p.answer(Ok(replies));
        }
        Ok(())
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

    /// The socket failed: every waiting request fails, new ones fail at once.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        for mut p in self.writer().pending.drain(..) {
            p.answer(Err(broken("the connection to Redis dropped")));
        }
    }

    /// Whether an idle socket is still open: one that Redis (its `timeout`), a proxy or a
    /// restart closed is found here, not by the next request on it, which may be one that
    /// is never sent twice. Requests pack onto the first connections, so the others can sit
    /// idle for long. A socket in use is left to its readers.
    fn check_idle(&self) {
        if !self.writer().pending.is_empty() {
            return;
        }
        let Ok(mut reader) = self.reader.try_lock() else {
            return;
        };
        let Reader { half, buf, .. } = &mut *reader;
        // Bytes that arrive now (a request sent since the look above) stay for its reader.
        match half.try_read_buf(buf) {
            Ok(0) => self.close(),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.close(),
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

/// Every `tick`, fails the requests still waiting past their deadline, until the socket
/// closes (which fails them all) or is dropped.
async fn watch(inner: Weak<Inner>, tick: Duration) {
    loop {
        tokio::time::sleep(tick).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let mut late = false;
        for p in inner.writer().pending.iter_mut() {
            if p.done.is_some() && p.deadline.is_some_and(|due| due <= now) {
                p.answer(Err(timed_out()));
                late = true;
            }
        }
        if late {
            let reading = inner.reading.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(reader) = reading.as_ref() {
                reader.wake_by_ref();
            }
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
