//! What the store asks of a connection, whichever client and deployment serve it: a session
//! read, a new session's transaction, scripts (with the fallback for a server that lost one
//! and the replica wait), a command per key, loading the scripts. Each operation is spelled
//! once here and sent the way each client takes it (our own connection takes ready-encoded
//! bytes and reads its replies in place); the store never learns which one runs.

use std::time::Duration;

use redis::{Cmd, RedisError, RedisResult, Value};

use super::direct::Direct;
use super::resp::pack;
use super::Conn;
use crate::fields::Fields;

/// A Lua script, sent by its SHA1 (`EVALSHA`), and whole (`EVAL`) to a server that lost it
/// (a restart, a flush, a node that joined the cluster).
pub(crate) struct Script {
    sha: String,
    source: &'static str,
}

impl Script {
    pub(crate) fn new(source: &'static str) -> Self {
        Self {
            sha: redis::Script::new(source).get_hash().to_owned(),
            source,
        }
    }
}

/// One run of a script on its keys; and a command on the same keys to run right after it, in
/// the same round trip, whose reply comes back beside the script's.
pub(crate) struct Call {
    evalsha: Cmd,
    eval: Cmd,
    then: Option<Cmd>,
}

impl Call {
    pub(crate) fn new(script: &Script, keys: &[&str], args: impl Fn(&mut Cmd)) -> Self {
        let build = |verb: &str, body: &str| {
            let mut cmd = redis::cmd(verb);
            cmd.arg(body).arg(keys.len()).arg(keys);
            args(&mut cmd);
            cmd
        };
        Self {
            evalsha: build("EVALSHA", &script.sha),
            eval: build("EVAL", script.source),
            then: None,
        }
    }

    /// `cmd` right after the script.
    pub(crate) fn then(self, cmd: Option<Cmd>) -> Self {
        Self { then: cmd, ..self }
    }
}

/// `WAIT`: after the writes, until this many replicas acknowledged them, at most this long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wait {
    pub(crate) replicas: usize,
    pub(crate) timeout: Duration,
}

impl Wait {
    fn cmd(self) -> Cmd {
        let mut cmd = redis::cmd("WAIT");
        let ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        cmd.arg(self.replicas).arg(ms.max(1));
        cmd
    }
}

/// What [`Conn::scripts`] got back: each call's reply and its `then`'s, in the calls' order;
/// and `WAIT`'s replies (one per node the calls went to), when asked.
pub(crate) struct Ran {
    pub(crate) replies: Vec<(Value, Option<Value>)>,
    pub(crate) acked: Vec<Value>,
}

/// A reply that should have been a hash and is something else, or one whose fields are not
/// text.
#[derive(Debug)]
pub(crate) enum NotAHash {
    Reply(Value),
    NotText,
}

/// The fields of a hash as a reply holds it: a map (RESP3), a flat array (RESP2, a script),
/// or nil (a script's "nothing").
pub(crate) fn hash_fields(reply: Value) -> Result<Fields, NotAHash> {
    let text = |v: Value| match v {
        Value::BulkString(b) => String::from_utf8(b).map_err(|_| NotAHash::NotText),
        other => Err(NotAHash::Reply(other)),
    };
    let pair = |(f, v)| Ok((text(f)?, text(v)?));
    let pairs: Vec<(String, String)> = match reply {
        Value::Nil => Vec::new(),
        Value::Map(pairs) => pairs.into_iter().map(pair).collect::<Result<_, _>>()?,
        Value::Array(flat) => {
            let mut flat = flat.into_iter();
            std::iter::from_fn(|| Some((flat.next()?, flat.next()?)))
                .map(pair)
                .collect::<Result<_, _>>()?
        }
        other => return Err(NotAHash::Reply(other)),
    };
    Ok(Fields::of_hash(pairs))
}

/// `commands` (each its arguments, the name first) as redis-rs's pipeline.
fn pipeline(commands: &[&[&[u8]]]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for command in commands {
        let mut cmd = Cmd::new();
        for arg in *command {
            cmd.arg(*arg);
        }
        pipe.add_command(cmd);
    }
    pipe
}

/// `HGETALL` and `PEXPIRE` on our own socket, the fields kept in the reply's bytes.
async fn load_in_place(
    direct: &Direct,
    commands: &[&[&[u8]]; 2],
) -> RedisResult<Result<Fields, NotAHash>> {
    let replies = direct.replies(&pack(commands), 2).await?;
    let [hash, expired] = replies.split()?;
    expired.check_is(b':')?;
    let mut spans = hash.spans()?;
    let mut fields = Fields::with_capacity(spans.len() / 2);
    while let (Some(field), Some(value)) = (spans.next(), spans.next()) {
        fields.push_span(field?, value?);
    }
    Ok(match replies.into_text() {
        Ok(text) => Ok(fields.in_text(text)),
        Err(_) => Err(NotAHash::NotText),
    })
}

/// `create_hash`'s transaction on our own socket.
async fn create_in_place(direct: &Direct, hset: &[&[u8]], pexpire: &[&[u8]]) -> RedisResult<()> {
    let packed = pack(&[&[b"MULTI"], hset, pexpire, &[b"EXEC"]]);
    let replies = direct.replies(&packed, 4).await?;
    let [multi, queued, queued_too, exec] = replies.split()?;
    for reply in [multi, queued, queued_too] {
        reply.check_is(b'+')?;
    }
    exec.check_items()
}

impl Conn {
    /// Our own socket for commands on `key`: this connection's, or on a cluster the socket
    /// to the key's master (kept in `routed`) when the store routes by itself and knows it.
    #[cfg_attr(not(feature = "cluster"), allow(unused_variables))]
    fn own_socket<'a>(&'a self, key: &[u8], routed: &'a mut Option<Direct>) -> Option<&'a Direct> {
        match self {
            Self::Direct(direct) => Some(direct),
            #[cfg(feature = "cluster")]
            Self::Cluster(cluster) => {
                *routed = cluster.routed(key);
                routed.as_ref()
            }
            _ => None,
        }
    }

    /// Whether what failed with `e` on [`own_socket`](Self::own_socket)'s socket did not run
    /// and goes again through the cluster client (a redirection; nothing sent).
    #[cfg_attr(not(feature = "cluster"), allow(unused_variables))]
    fn goes_again(&self, e: &RedisError) -> bool {
        match self {
            #[cfg(feature = "cluster")]
            Self::Cluster(cluster) => cluster.not_run(e),
            _ => false,
        }
    }

    /// The hash at `key` (no fields: no hash), with `PEXPIRE key ttl_ms` in the same round
    /// trip. `PEXPIRE` of a key that is gone does nothing, so a concurrent logout is never
    /// undone. Our own connection keeps the fields in the reply's bytes.
    pub(crate) async fn load_hash(
        &self,
        key: &[u8],
        ttl_ms: &[u8],
    ) -> RedisResult<Result<Fields, NotAHash>> {
        let commands: [&[&[u8]]; 2] = [&[b"HGETALL", key], &[b"PEXPIRE", key, ttl_ms]];
        let mut routed = None;
        if let Some(direct) = self.own_socket(key, &mut routed) {
            // Both commands read or refresh: sent again whole after a redirection.
            match load_in_place(direct, &commands).await {
                Err(e) if self.goes_again(&e) => {}
                loaded => return loaded,
            }
        }
        let (hash, _expired): (Value, Value) =
            pipeline(&commands).query_async(&mut self.clone()).await?;
        Ok(hash_fields(hash))
    }

    /// `MULTI`, `hset`, `pexpire`, `EXEC`: a new hash and its expiry, whole or not at all
    /// (under OOM Redis refuses the transaction whole). No script: Redis runs a script's
    /// every call slower than the bare command.
    pub(crate) async fn create_hash(&self, hset: &[&[u8]], pexpire: &[&[u8]]) -> RedisResult<()> {
        let (key, mut routed) = (hset.get(1).copied().unwrap_or_default(), None);
        if let Some(direct) = self.own_socket(key, &mut routed) {
            // A redirection aborts the transaction whole: it goes again through the client.
            match create_in_place(direct, hset, pexpire).await {
                Err(e) if self.goes_again(&e) => {}
                created => return created,
            }
        }
        let mut pipe = pipeline(&[hset, pexpire]);
        pipe.atomic();
        pipe.exec_async(&mut self.clone()).await
    }

    /// Runs `calls`, then `WAIT` if asked, in one round trip: in order on one server (one
    /// pipeline); on a cluster all at once, each call with its own `WAIT` on its node (a
    /// pipeline never spans slots, and there is no order between nodes). A call whose script
    /// the server lost goes again with `EVAL`, its `then` with it, and the `WAIT` after them.
    /// A call's error reply is the error.
    pub(crate) async fn scripts(&self, calls: &[Call], wait: Option<Wait>) -> RedisResult<Ran> {
        #[cfg(feature = "cluster")]
        if let Self::Cluster(_) = self {
            let runs = calls
                .iter()
                .map(|call| async move { self.in_order(std::slice::from_ref(call), wait).await });
            let mut all = Ran {
                replies: Vec::with_capacity(calls.len()),
                acked: Vec::new(),
            };
            for ran in futures_util::future::try_join_all(runs).await? {
                all.replies.extend(ran.replies);
                all.acked.extend(ran.acked);
            }
            return Ok(all);
        }
        self.in_order(calls, wait).await
    }

    async fn in_order(&self, calls: &[Call], wait: Option<Wait>) -> RedisResult<Ran> {
        let all: Vec<usize> = (0..calls.len()).collect();
        let (mut replies, mut acked) = self.send(calls, &all, true, wait).await?;
        let lost: Vec<usize> = replies
            .iter()
            .enumerate()
            .filter(
                |(_, (reply, _))| matches!(reply, Value::ServerError(e) if e.code() == "NOSCRIPT"),
            )
            .map(|(i, _)| i)
            .collect();
        if !lost.is_empty() {
            let (again, acked_again) = self.send(calls, &lost, false, wait).await?;
            for (&i, reply) in lost.iter().zip(again) {
                replies[i] = reply;
            }
            // A `WAIT` covers the writes before it: the last one sent is the one that counts.
            acked = acked_again;
        }
        let replies = replies
            .into_iter()
            .map(|(reply, then)| {
                let then = then.map(Value::extract_error).transpose()?;
                Ok((reply.extract_error()?, then))
            })
            .collect::<RedisResult<_>>()?;
        let acked = acked.map(Value::extract_error).transpose()?;
        Ok(Ran {
            replies,
            acked: acked.into_iter().collect(),
        })
    }

    /// The calls `which` of `calls`, by SHA1 or whole, each with its `then`, and `WAIT` if
    /// asked, in one pipeline: their replies, and `WAIT`'s.
    async fn send(
        &self,
        calls: &[Call],
        which: &[usize],
        by_sha: bool,
        wait: Option<Wait>,
    ) -> RedisResult<(Vec<(Value, Option<Value>)>, Option<Value>)> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &i in which {
            let call = &calls[i];
            pipe.add_command(if by_sha { &call.evalsha } else { &call.eval }.clone());
            if let Some(then) = &call.then {
                pipe.add_command(then.clone());
            }
        }
        if let Some(wait) = wait {
            pipe.add_command(wait.cmd());
        }
        let mut values = pipe
            .query_async::<Vec<Value>>(&mut self.clone())
            .await?
            .into_iter();
        let replies = which
            .iter()
            .map(|&i| {
                let reply = values.next().unwrap_or(Value::Nil);
                (reply, calls[i].then.as_ref().and_then(|_| values.next()))
            })
            .collect();
        Ok((replies, wait.and_then(|_| values.next())))
    }

    /// Each of `cmds` (one key each): one pipeline on one server; on a cluster, each to its
    /// key's node, all at once.
    pub(crate) async fn each(&self, cmds: &[Cmd]) -> RedisResult<()> {
        #[cfg(feature = "cluster")]
        if let Self::Cluster(_) = self {
            let sends = cmds.iter().map(|cmd| {
                let mut conn = self.clone();
                async move { cmd.query_async::<Value>(&mut conn).await }
            });
            return futures_util::future::try_join_all(sends).await.map(drop);
        }
        let mut pipe = redis::pipe();
        for cmd in cmds {
            pipe.add_command(cmd.clone()).ignore();
        }
        pipe.exec_async(&mut self.clone()).await
    }

    /// `SCRIPT LOAD` of each script: on every primary of a cluster (one that joins later, or
    /// a promoted replica, learns a script from its first `NOSCRIPT`).
    pub(crate) async fn load_scripts(&self, scripts: &[&Script]) -> RedisResult<()> {
        let loads = scripts.iter().map(|script| {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(script.source);
            cmd
        });
        #[cfg(feature = "cluster")]
        if let Self::Cluster(cluster) = self {
            use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
            let mut cluster = cluster.clone();
            for cmd in loads {
                let all = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                cluster.route_command(cmd, all).await?;
            }
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for cmd in loads {
            pipe.add_command(cmd).ignore();
        }
        pipe.exec_async(&mut self.clone()).await
    }

    /// Whether every key is on this one connection's server (not a cluster), so that a
    /// script may take keys of different slots.
    pub(crate) fn one_server(&self) -> bool {
        match self {
            #[cfg(feature = "cluster")]
            Self::Cluster(_) => false,
            _ => true,
        }
    }
}
