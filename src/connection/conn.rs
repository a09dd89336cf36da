//! One connection as the store uses it: our own connection to a single server over TCP or a
//! unix socket, redis-rs's multiplexed one (TLS, an application's pool), or a cluster
//! connection that routes each command by its key.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A cheap, cloneable handle; clones share the socket(s).
#[derive(Clone)]
pub(crate) enum Conn {
    Direct(super::direct::Direct),
    Single(MultiplexedConnection),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
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
mod redirect {
    //! The cluster client is built without retries (it would re-send a counter after a dropped
    //! socket), so redirections are followed here: a `MOVED` or `ASK` reply means the command
    //! did not run, and sending it again is always safe.
    use redis::aio::ConnectionLike;
    use redis::cluster_routing::SingleNodeRoutingInfo;
    use redis::{Cmd, Pipeline, RedisError, RedisResult, Value};

    /// Redirections followed for one command (a slot can move while we follow it).
    const MAX_REDIRECTS: usize = 3;

    type Cluster = redis::cluster_async::ClusterConnection;

    fn target(e: &RedisError) -> Option<(bool, String, u16)> {
        let (addr, _slot) = e.redirect_node()?;
        let (host, port) = addr.rsplit_once(':')?;
        Some((e.code() == Some("ASK"), host.to_owned(), port.parse().ok()?))
    }

    /// The error a reply carries: the command's own, or a pipeline's first failed command's.
    fn redirect_of(result: &RedisResult<Vec<Value>>) -> Option<(bool, String, u16)> {
        match result {
            Err(e) => target(e),
            Ok(values) => values.iter().find_map(|v| match v {
                Value::ServerError(se) => target(&RedisError::from(se.clone())),
                _ => None,
            }),
        }
    }

    pub(super) async fn pipeline(
        conn: &mut Cluster,
        pipe: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let mut result = conn.req_packed_commands(pipe, offset, count).await;
        for _ in 0..MAX_REDIRECTS {
            let Some((ask, host, port)) = redirect_of(&result) else {
                return result;
            };
            let node = SingleNodeRoutingInfo::ByAddress { host, port };
            result = if ask {
                // ASK: at the importing node, each command right after an ASKING of its own
                // (ASKING admits one command); their replies are dropped.
                let mut asking = redis::pipe();
                for cmd in pipe.cmd_iter() {
                    asking.cmd("ASKING").add_command(cmd.clone());
                }
                let all = 2 * pipe.len();
                conn.route_pipeline(asking, 0, all, node)
                    .await
                    .map(|values| {
                        values
                            .into_iter()
                            .skip(1)
                            .step_by(2)
                            .skip(offset)
                            .take(count)
                            .collect()
                    })
            } else {
                // MOVED: the slot map is refreshed in the background; go there directly now.
                conn.route_pipeline(pipe.clone(), offset, count, node).await
            };
        }
        result
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
