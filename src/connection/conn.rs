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
    use redis::aio::{ConnectionLike, MultiplexedConnection};
    use redis::cluster_async::{ClusterConnection, Connect};

    use std::sync::Arc;

    use crate::connection::direct::Direct;
    use crate::connection::node::DirectNode;
    use crate::connection::slots::Slots;
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
        /// Node connections of our own (`direct`): plain TCP, no credentials provider; and
        /// the store's own slot routing on sockets of ours (`slots`).
        Direct(ClusterConnection<Node<DirectNode>>, Arc<Slots>),
        /// redis-rs's multiplexed node connections (TLS, rotating credentials).
        Own(ClusterConnection<Node>),
        #[cfg(feature = "deadpool-redis")]
        Pool(ClusterConnection),
    }

    /// `$body` with `$c` bound to the cluster connection, whichever kind it is.
    macro_rules! each {
        ($cluster:expr, $c:ident => $body:expr) => {
            match $cluster {
                Cluster::Direct($c, _) => $body,
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
                None => {
                    if let Self::Direct(c, slots) = self {
                        if let Some(sent) = slots.send(c, pipe, offset, count).await {
                            return sent;
                        }
                    }
                    each!(self, c => c.req_packed_commands(pipe, offset, count).await)
                }
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
                Self::Direct(..) | Self::Own(_) => true,
                #[cfg(feature = "deadpool-redis")]
                Self::Pool(_) => cmds.filter(|c| keyed(c)).count() <= 1,
            }
        }

        pub(crate) fn get_db(&self) -> i64 {
            each!(self, c => c.get_db())
        }

        /// Our own socket to the master of `key`'s slot, when the store routes by itself
        /// and knows it (see `slots`).
        pub(crate) fn routed(&self, key: &[u8]) -> Option<Direct> {
            match self {
                Self::Direct(c, slots) => slots.socket_for(c, key),
                _ => None,
            }
        }

        /// Whether a request on a [`routed`](Self::routed) socket that failed with `e` did
        /// not run (a redirection, or nothing sent), so that it may go again through the
        /// client.
        pub(crate) fn not_run(&self, e: &RedisError) -> bool {
            match self {
                Self::Direct(c, slots) => slots.not_run(c, e),
                _ => false,
            }
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

    impl Connect for Node<DirectNode> {
        fn connect_with_config<'a, T>(info: T, _: AsyncConnectionConfig) -> RedisFuture<'a, Self>
        where
            T: IntoConnectionInfo + Send + 'a,
        {
            Box::pin(async move {
                Ok(Self(
                    DirectNode::connect(info.into_connection_info()?).await?,
                ))
            })
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

    pub(in crate::connection) fn is_redirect(e: &ServerError) -> bool {
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
