//! One connection as the store uses it: our own connection to a single server over TCP, TLS
//! or a unix socket, redis-rs's multiplexed one (`#insecure` TLS, an application's pool), or
//! a cluster connection that routes each command by its key (over node connections of our
//! own where it can).

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A cheap, cloneable handle; clones share the socket(s).
#[derive(Clone)]
pub(crate) enum Conn {
    Direct(super::direct::Direct),
    Single(MultiplexedConnection),
    #[cfg(feature = "cluster")]
    Cluster(redirect::Cluster),
}

impl Conn {
    /// This connection for a command due by `deadline`, if it fails the command itself then
    /// (ours does, see `direct`); otherwise the caller must bound the command.
    pub(crate) fn until(&self, deadline: tokio::time::Instant) -> Option<Self> {
        match self {
            Self::Direct(c) => Some(Self::Direct(c.until(deadline))),
            _ => None,
        }
    }
}

#[cfg(feature = "cluster")]
pub(super) mod redirect {
    //! The cluster client is built without retries (it would re-send a counter after a dropped
    //! socket), so redirections are followed here. A `MOVED` or `ASK` reply means that its own
    //! command did not run; the others of its pipeline may have run (Redis can serve a slot
    //! migration in between two of them), so only the redirected commands are sent again.
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    use redis::aio::{ConnectionLike, MultiplexedConnection};
    use redis::cluster_async::{ClusterConnection, Connect};
    use tokio::sync::Notify;

    use crate::connection::direct::Direct;
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    use redis::{
        AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
        RedisResult, ServerError, ServerErrorKind, Value,
    };

    /// Rounds of redirections followed for one call (a slot can move while we follow it).
    const MAX_REDIRECTS: usize = 3;

    /// A cluster connection: our own client's, or one from the application's pool, whose node
    /// connections are redis-rs's own.
    #[derive(Clone)]
    pub(crate) enum Cluster {
        /// Node connections of our own (`direct`): plain TCP, no credentials provider.
        Direct(ClusterConnection<Node<DirectNode>>),
        /// redis-rs's multiplexed node connections (TLS, rotating credentials).
        Own(ClusterConnection<Node>),
        #[cfg(feature = "deadpool-redis")]
        Pool(ClusterConnection),
    }

    /// `$body` with `$c` bound to the cluster connection, whichever kind it is.
    macro_rules! each {
        ($cluster:expr, $c:ident => $body:expr) => {
            match $cluster {
                Cluster::Direct($c) => $body,
                Cluster::Own($c) => $body,
                #[cfg(feature = "deadpool-redis")]
                Cluster::Pool($c) => $body,
            }
        };
    }

    impl Cluster {
        /// `cmd` where `routing` says (the store loads its scripts on every primary).
        pub(crate) async fn route_command(
            &mut self,
            cmd: Cmd,
            routing: RoutingInfo,
        ) -> RedisResult<Value> {
            each!(self, c => c.route_command(cmd, routing).await)
        }

        /// `pipe` to the node that serves its key, or to `node`.
        async fn send(
            &mut self,
            pipe: &Pipeline,
            offset: usize,
            count: usize,
            node: Option<&Target>,
        ) -> RedisResult<Vec<Value>> {
            match node {
                None => each!(self, c => c.req_packed_commands(pipe, offset, count).await),
                Some(node) => {
                    let (pipe, node) = (pipe.clone(), node.route());
                    each!(self, c => c.route_pipeline(pipe, offset, count, node).await)
                }
            }
        }

        /// Whether a redirection returned for a whole pipeline (the client gives only the
        /// first one among its replies) shows that none of `cmds` with a key ran. Always with
        /// our node connections: when one ran, they hand back every reply (see [`Node`]). With
        /// the pool's, only when one command has a key; otherwise the error is returned.
        #[cfg_attr(not(feature = "deadpool-redis"), allow(unused_variables))]
        fn none_ran<'a>(&self, cmds: impl Iterator<Item = &'a Cmd>) -> bool {
            match self {
                Self::Direct(_) | Self::Own(_) => true,
                #[cfg(feature = "deadpool-redis")]
                Self::Pool(_) => cmds.filter(|c| keyed(c)).count() <= 1,
            }
        }

        pub(crate) fn get_db(&self) -> i64 {
            each!(self, c => c.get_db())
        }
    }

    /// A node connection of our own cluster client. The client turns a pipeline's replies
    /// into the first redirection among them, and the other replies are lost; so when a
    /// command with a key ran, the redirections are handed back wrapped in an attribute
    /// (Redis never sends one around an error), which the client passes on untouched. When
    /// none ran, the client sees the redirection, and a `MOVED` refreshes its slot map.
    #[derive(Clone)]
    pub(crate) struct Node<C = MultiplexedConnection>(C);

    impl Connect for Node {
        fn connect_with_config<'a, T>(
            info: T,
            config: AsyncConnectionConfig,
        ) -> RedisFuture<'a, Self>
        where
            T: IntoConnectionInfo + Send + 'a,
        {
            Box::pin(async move {
                let conn = MultiplexedConnection::connect_with_config(info, config).await?;
                Ok(Self(conn))
            })
        }
    }

    /// The longest connect and command timeouts (ms) of the stores whose cluster nodes use
    /// our own connection: the cluster client opens node connections through a static
    /// constructor, which cannot see the store's settings (one store per process, the usual
    /// case, gets its own).
    static NODE_CONNECT_MS: AtomicU64 = AtomicU64::new(0);
    static NODE_COMMAND_MS: AtomicU64 = AtomicU64::new(0);

    /// Node connections of our own open within `connect`, and fail a request at `command`
    /// (at least).
    pub(crate) fn node_timeouts(connect: Duration, command: Duration) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        NODE_CONNECT_MS.fetch_max(ms(connect), Ordering::Relaxed);
        NODE_COMMAND_MS.fetch_max(ms(command), Ordering::Relaxed);
    }

    fn node_timeout(of: &AtomicU64) -> Duration {
        Duration::from_millis(of.load(Ordering::Relaxed).max(1))
    }

    /// How often an idle node connection of our own is looked at (see `direct`).
    const NODE_TICK: Duration = Duration::from_millis(250);

    /// Our own connection to one cluster node. The cluster client polls its requests from
    /// its own task, and may await something else meanwhile (a slot refresh); a request of
    /// ours that is sending for others (gathering) or reading the socket for them must not
    /// wait on that, or they all wait for each other. So each request runs in a task of its
    /// own, due by the command timeout. A socket that closed (Redis's `timeout`, a proxy, a
    /// restart: found by its idle check, or by a request) is reopened by the next request,
    /// so that the cluster client never sees it fail (it would rebuild the whole cluster
    /// connection, as the store retires it).
    #[derive(Clone)]
    pub(crate) struct DirectNode(Arc<NodeSocket>);

    struct NodeSocket {
        info: redis::ConnectionInfo,
        /// The socket, and whether it closed.
        live: Mutex<(Direct, Arc<AtomicBool>)>,
        /// One reopening at a time.
        reopening: tokio::sync::Mutex<()>,
    }

    impl NodeSocket {
        async fn open(info: &redis::ConnectionInfo) -> RedisResult<(Direct, Arc<AtomicBool>)> {
            let (closed, wake) = (Arc::new(AtomicBool::new(false)), Arc::new(Notify::new()));
            let settings = info.redis_settings();
            let flag = Arc::clone(&closed);
            let connect = Direct::connect(info.addr(), settings, None, flag, wake, NODE_TICK);
            match tokio::time::timeout(node_timeout(&NODE_CONNECT_MS), connect).await {
                Ok(conn) => Ok((conn?, closed)),
                Err(_) => Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no connection to the cluster node within the connect timeout",
                ))),
            }
        }

        fn open_now(&self) -> Option<Direct> {
            let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            (!live.1.load(Ordering::Relaxed)).then(|| live.0.clone())
        }

        /// The socket, reopened first if it closed.
        async fn socket(&self) -> RedisResult<Direct> {
            if let Some(conn) = self.open_now() {
                return Ok(conn);
            }
            let _one = self.reopening.lock().await;
            if let Some(conn) = self.open_now() {
                return Ok(conn);
            }
            let (conn, closed) = Self::open(&self.info).await?;
            *self.live.lock().unwrap_or_else(PoisonError::into_inner) = (conn.clone(), closed);
            Ok(conn)
        }
    }

    impl DirectNode {
        /// Runs `request` on this node in a task of its own; once more on a new socket if
        /// the first never sent it (the socket had closed).
        async fn spawned<T: Send + 'static>(
            &self,
            request: impl Fn(Direct) -> RedisFuture<'static, T> + Send + Sync + 'static,
        ) -> RedisResult<T> {
            let node = Arc::clone(&self.0);
            let task = async move {
                let due = tokio::time::Instant::now() + node_timeout(&NODE_COMMAND_MS);
                match request(node.socket().await?.until(due)).await {
                    Err(e) if e.is_connection_refusal() => {
                        request(node.socket().await?.until(due)).await
                    }
                    done => done,
                }
            };
            match tokio::spawn(task).await {
                Ok(result) => result,
                Err(_) => Err(RedisError::from(std::io::Error::other(
                    "a request to a cluster node panicked or was cancelled",
                ))),
            }
        }
    }

    impl Connect for Node<DirectNode> {
        fn connect_with_config<'a, T>(info: T, _: AsyncConnectionConfig) -> RedisFuture<'a, Self>
        where
            T: IntoConnectionInfo + Send + 'a,
        {
            Box::pin(async move {
                let info = info.into_connection_info()?;
                let live = Mutex::new(NodeSocket::open(&info).await?);
                Ok(Self(DirectNode(Arc::new(NodeSocket {
                    info,
                    live,
                    reopening: tokio::sync::Mutex::new(()),
                }))))
            })
        }
    }

    impl ConnectionLike for DirectNode {
        fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
            // Shared, not copied, by the request and its one resend.
            let cmd = Arc::new(cmd.clone());
            Box::pin(self.spawned(move |mut conn| {
                let cmd = Arc::clone(&cmd);
                Box::pin(async move { conn.req_packed_command(&cmd).await })
            }))
        }

        fn req_packed_commands<'a>(
            &'a mut self,
            pipe: &'a Pipeline,
            offset: usize,
            count: usize,
        ) -> RedisFuture<'a, Vec<Value>> {
            let pipe = Arc::new(pipe.clone());
            Box::pin(self.spawned(move |mut conn| {
                let pipe = Arc::clone(&pipe);
                Box::pin(async move {
                    if !pipe.is_transaction() {
                        return conn.req_packed_commands(&pipe, offset, count).await;
                    }
                    // As redis-rs's connection answers a transaction: an error among the
                    // queued replies (a redirection: the transaction did not run) is the
                    // answer, not `EXECABORT`; the cluster client and `transaction` act on it.
                    let all = conn.req_packed_commands(&pipe, 0, pipe.len() + 2).await?;
                    let queued = all.iter().skip(1).take(pipe.len());
                    let errors: Vec<&ServerError> = queued
                        .filter_map(|v| match v {
                            Value::ServerError(e) => Some(e),
                            _ => None,
                        })
                        .collect();
                    let first = errors.iter().find(|e| !is_redirect(e)).or(errors.first());
                    match first {
                        Some(e) => Err((*e).clone().into()),
                        None => Ok(all.into_iter().skip(offset).take(count).collect()),
                    }
                })
            }))
        }

        fn get_db(&self) -> i64 {
            self.0.info.redis_settings().db()
        }
    }

    impl<C: ConnectionLike + Send> ConnectionLike for Node<C> {
        fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
            self.0.req_packed_command(cmd)
        }

        fn req_packed_commands<'a>(
            &'a mut self,
            pipe: &'a Pipeline,
            offset: usize,
            count: usize,
        ) -> RedisFuture<'a, Vec<Value>> {
            Box::pin(async move {
                let mut values = self.0.req_packed_commands(pipe, offset, count).await?;
                // Replies match commands one for one only in a plain pipeline read whole.
                let whole = !pipe.is_transaction() && offset == 0 && values.len() == pipe.len();
                let ran = |(cmd, v): (&Cmd, &Value)| keyed(cmd) && redirect(v).is_none();
                if whole && pipe.cmd_iter().zip(&values).any(ran) {
                    for v in values.iter_mut().filter(|v| redirect(v).is_some()) {
                        let data = Box::new(std::mem::take(v));
                        *v = Value::Attribute {
                            data,
                            attributes: Vec::new(),
                        };
                    }
                }
                Ok(values)
            })
        }

        fn get_db(&self) -> i64 {
            self.0.get_db()
        }
    }

    /// Where a redirection sends its command.
    struct Target {
        ask: bool,
        host: String,
        port: u16,
    }

    impl Target {
        fn of(e: &RedisError) -> Option<Self> {
            let (addr, _slot) = e.redirect_node()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some(Self {
                ask: e.code() == Some("ASK"),
                host: host.to_owned(),
                port: port.parse().ok()?,
            })
        }

        fn route(&self) -> SingleNodeRoutingInfo {
            SingleNodeRoutingInfo::ByAddress {
                host: self.host.clone(),
                port: self.port,
            }
        }

        fn same_node(&self, other: &Self) -> bool {
            (&self.host, self.port) == (&other.host, other.port)
        }
    }

    fn is_redirect(e: &ServerError) -> bool {
        matches!(
            e.kind(),
            Some(ServerErrorKind::Moved | ServerErrorKind::Ask)
        )
    }

    /// The redirection a reply is.
    fn redirect(v: &Value) -> Option<&ServerError> {
        match v {
            Value::ServerError(e) if is_redirect(e) => Some(e),
            _ => None,
        }
    }

    /// Whether `cmd` may touch a key: all but the two without one that our pipelines hold.
    /// (Taking a command without a key for one with a key is the safe mistake here.)
    fn keyed(cmd: &Cmd) -> bool {
        match cmd.args_iter().next() {
            Some(redis::Arg::Simple(name)) => {
                !(name.eq_ignore_ascii_case(b"WAIT") || name.eq_ignore_ascii_case(b"ASKING"))
            }
            _ => true,
        }
    }

    /// A command's reply, or the redirection that kept it from running.
    fn reply(v: Value) -> RedisResult<Value> {
        let v = match v {
            Value::Attribute { data, .. } if redirect(&data).is_some() => *data,
            v => v,
        };
        match v {
            Value::ServerError(e) if is_redirect(&e) => Err(e.into()),
            v => Ok(v),
        }
    }

    pub(super) async fn pipeline(
        conn: &mut Cluster,
        pipe: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        if pipe.is_transaction() {
            return transaction(conn, pipe, offset, count).await;
        }
        let cmds: Vec<&Cmd> = pipe.cmd_iter().collect();
        let mut replies: Vec<RedisResult<Value>> = vec![Ok(Value::Nil); cmds.len()];
        // The commands just sent, each with whether an ASKING went before it. Every reply is
        // read, whatever the caller skips: a skipped command may have to be sent again.
        let mut batch: Vec<(usize, bool)> = (0..cmds.len()).map(|i| (i, false)).collect();
        let mut sent = conn.send(pipe, 0, cmds.len(), None).await;
        for round in 0..=MAX_REDIRECTS {
            match sent {
                Ok(values) => {
                    // An ASKING's reply comes before its command's; it is dropped.
                    let mut values = values.into_iter();
                    for &(i, ask) in &batch {
                        if ask {
                            values.next();
                        }
                        replies[i] = reply(values.next().unwrap_or_default());
                    }
                }
                // A redirection for the whole call: every command of the batch is sent again,
                // if that is safe.
                Err(e)
                    if Target::of(&e).is_some()
                        && conn.none_ran(batch.iter().map(|b| cmds[b.0])) =>
                {
                    for &(i, _) in &batch {
                        replies[i] = Err(e.clone());
                    }
                }
                Err(e) => return Err(e),
            }
            let targets: Vec<Option<Target>> = replies
                .iter()
                .map(|r| r.as_ref().err().and_then(Target::of))
                .collect();
            let first = targets
                .iter()
                .enumerate()
                .find_map(|(i, t)| Some((i, t.as_ref()?)));
            let Some((first, node)) = first else {
                break;
            };
            if round == MAX_REDIRECTS {
                break;
            }
            if round == 0
                && replies
                    .iter()
                    .zip(&cmds)
                    .any(|(r, c)| r.is_ok() && keyed(c))
            {
                tracing::debug!("slot moved mid-pipeline: only the redirected commands go again");
            }
            // The commands redirected to the first one's node (the others' turn comes next
            // round) and those without a key after it: a WAIT, which concerns the writes
            // before it on its connection, and changes nothing when repeated.
            batch = (first..cmds.len())
                .filter_map(|i| match &targets[i] {
                    Some(t) if t.same_node(node) => Some((i, t.ask)),
                    None if !keyed(cmds[i]) => Some((i, false)),
                    _ => None,
                })
                .collect();
            let mut again = redis::pipe();
            for &(i, ask) in &batch {
                // ASKING admits the one command after it.
                if ask {
                    again.cmd("ASKING");
                }
                again.add_command(cmds[i].clone());
            }
            sent = conn.send(&again, 0, again.len(), Some(node)).await;
        }
        let replies = replies.into_iter().collect::<RedisResult<Vec<Value>>>()?;
        Ok(replies.into_iter().skip(offset).take(count).collect())
    }

    /// A transaction runs whole or not at all: a queued command that meets a redirection makes
    /// EXEC fail (EXECABORT), and a redirected EXEC discards the transaction. So one that only
    /// redirections kept from running is sent again whole.
    async fn transaction(
        conn: &mut Cluster,
        pipe: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let mut result = conn.send(pipe, offset, count, None).await;
        for _ in 0..MAX_REDIRECTS {
            let Some(node) = result.as_ref().err().and_then(aborted_by_redirection) else {
                break;
            };
            result = if node.ask {
                // ASKING goes before MULTI (inside, it would only be queued), so the
                // transaction is spelt out; its queued replies are read too, for a redirection
                // among them to come back as the error again.
                let mut asking = redis::pipe();
                asking.cmd("ASKING").cmd("MULTI");
                for cmd in pipe.cmd_iter() {
                    asking.add_command(cmd.clone());
                }
                asking.cmd("EXEC");
                let replies = conn.send(&asking, 1, pipe.len() + 2, Some(&node)).await;
                replies.map(|r| r.into_iter().skip(offset).take(count).collect())
            } else {
                conn.send(pipe, offset, count, Some(&node)).await
            };
        }
        result
    }

    /// Where to send a transaction again, if only redirections kept it from running.
    fn aborted_by_redirection(e: &RedisError) -> Option<Target> {
        let errors = e.clone().into_server_errors()?;
        if !errors.iter().all(|(_, e)| is_redirect(e)) {
            return None;
        }
        Target::of(&errors.first()?.1.clone().into())
    }

    pub(super) async fn command(conn: &mut Cluster, cmd: &Cmd) -> RedisResult<Value> {
        let mut pipe = redis::pipe();
        pipe.add_command(cmd.clone());
        let mut values = pipeline(conn, &pipe, 0, 1).await?;
        values.pop().ok_or_else(|| {
            RedisError::from((redis::ErrorKind::Client, "a command without a reply"))
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Direct(c) => c.req_packed_command(cmd),
            Self::Single(c) => c.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Self::Cluster(c) => Box::pin(redirect::command(c, cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Self::Cluster(c) => Box::pin(redirect::pipeline(c, pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Direct(c) => c.get_db(),
            Self::Single(c) => c.get_db(),
            #[cfg(feature = "cluster")]
            Self::Cluster(c) => c.get_db(),
        }
    }
}
