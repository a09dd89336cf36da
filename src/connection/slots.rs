//! The store's own slot routing, for a cluster whose nodes it reaches over its own connection.
//! A pipeline whose keys share one slot goes straight to the master that serves it, from the
//! request's own task, on a socket of ours: no router task, channel or boxed future per node
//! in between (redis-rs's cluster client costs about as much as the rest of a session read).
//!
//! The client stays for everything this does not know: before the first map, while the map is
//! stale (a `MOVED` came back), for a slot without a node, a node whose socket would not
//! open, and for every redirection (`redirect` follows them through the client).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Arg, Cmd, ConnectionAddr, ConnectionInfo, Pipeline, RedisError, RedisResult, Value};
use tokio::time::Instant;

use super::conn::redirect::Node;
use super::direct::Direct;
use super::node::{node_deadline, DirectNode, NodeSocket};

/// Slots in a Redis Cluster.
const SLOTS: usize = 16384;

/// A slot that no node of the map serves.
const NONE: u16 = u16::MAX;

/// The least time between two refreshes of the map (a node that stays down would otherwise
/// have every request start one).
const REFRESH_GAP: Duration = Duration::from_millis(100);

type Client = ClusterConnection<Node<DirectNode>>;

/// Which master serves each slot, as `CLUSTER SLOTS` last said, with a socket to each.
pub(crate) struct Slots {
    /// Login and database for the node sockets; their addresses come from the map.
    seed: ConnectionInfo,
    map: RwLock<Arc<Map>>,
    /// The map needs asking again (none yet, a `MOVED`, a socket that closed or failed):
    /// until it is, nothing is routed.
    stale: AtomicBool,
    refreshing: AtomicBool,
    last_refresh: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Map {
    nodes: Vec<Arc<NodeSocket>>,
    /// Index into `nodes` by slot ([`NONE`]: not known); empty before the first map.
    by_slot: Vec<u16>,
}

impl Slots {
    pub(crate) fn new(seed: ConnectionInfo) -> Arc<Self> {
        Arc::new(Self {
            seed,
            map: RwLock::new(Arc::default()),
            stale: AtomicBool::new(true),
            refreshing: AtomicBool::new(false),
            last_refresh: Mutex::new(None),
        })
    }

    /// Sends `pipe` to its slot's master if the map knows it; `None` if it was not sent,
    /// for the client to send.
    pub(crate) async fn send(
        self: &Arc<Self>,
        client: &Client,
        pipe: &Pipeline,
        offset: usize,
        count: usize,
    ) -> Option<RedisResult<Vec<Value>>> {
        let socket = self.socket(client, pipeline_slot(pipe)?)?;
        let sent = super::node::send(socket, pipe, offset, count).await;
        match &sent {
            // Not sent: the client sends it. A redirection is followed by `redirect`.
            Err(e) if self.not_run(client, e) && e.is_connection_refusal() => return None,
            Ok(values) if values.iter().any(is_moved) => self.mark_stale(),
            _ => {}
        }
        Some(sent)
    }

    /// Our socket to the master of the slot of `key`, due by the node command timeout, if
    /// the map knows it.
    pub(crate) fn socket_for(self: &Arc<Self>, client: &Client, key: &[u8]) -> Option<Direct> {
        self.socket(client, slot_of(key))
    }

    fn socket(self: &Arc<Self>, client: &Client, slot: u16) -> Option<Direct> {
        if self.stale.load(Ordering::Relaxed) {
            self.refresh(client);
            return None;
        }
        let Some(node) = self.node(slot) else {
            // No node for it (none yet, or one whose socket would not open): the map is
            // asked again, the other slots stay routed.
            self.refresh(client);
            return None;
        };
        // A socket that closed is reopened by the refresh, not here: a node that does not
        // answer must not hold up the requests for its slots beyond what the client does.
        match node.open_now() {
            Some(socket) => Some(socket.until(node_deadline())),
            None => {
                self.failed(client);
                None
            }
        }
    }

    /// Whether a request on one of our sockets that failed with `e` did not run, so that the
    /// client may send it: a redirection (a `MOVED` marks the map stale), or nothing sent
    /// (the map is asked again).
    pub(crate) fn not_run(self: &Arc<Self>, client: &Client, e: &RedisError) -> bool {
        match e.code() {
            Some("MOVED") => {
                self.mark_stale();
                true
            }
            Some("ASK") => true,
            _ if e.is_connection_refusal() => {
                self.failed(client);
                true
            }
            _ => {
                if e.is_io_error() {
                    self.mark_stale();
                }
                false
            }
        }
    }

    fn node(&self, slot: u16) -> Option<Arc<NodeSocket>> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        let at = *map.by_slot.get(usize::from(slot))?;
        map.nodes.get(usize::from(at)).cloned()
    }

    /// A socket failed before sending: the map is asked again.
    fn failed(self: &Arc<Self>, client: &Client) {
        self.mark_stale();
        self.refresh(client);
    }

    fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// Asks a node for the map in the background, unless a refresh is under way or one
    /// started less than [`REFRESH_GAP`] ago.
    fn refresh(self: &Arc<Self>, client: &Client) {
        {
            let mut last = self
                .last_refresh
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < REFRESH_GAP)
                || self.refreshing.swap(true, Ordering::AcqRel)
            {
                return;
            }
            *last = Some(Instant::now());
        }
        // Cleared first: a `MOVED` seen while the map is asked for marks it stale again.
        self.stale.store(false, Ordering::Relaxed);
        let (refreshing, mut client) = (Refreshing(Arc::clone(self)), client.clone());
        tokio::spawn(async move {
            let mut ask = redis::cmd("CLUSTER");
            ask.arg("SLOTS");
            let random = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
            let reply = tokio::time::timeout_at(node_deadline(), client.route_command(ask, random));
            // A map without a node for some slots is taken: those go to the client, and
            // ask for the map again (see `socket`).
            let installed = match reply.await {
                Ok(Ok(reply)) => refreshing.0.install(reply).await,
                _ => false,
            };
            if !installed {
                refreshing.0.mark_stale();
            }
        });
    }

    /// Takes the map a `CLUSTER SLOTS` reply gives, keeping the sockets of nodes it already
    /// had (reopened if they closed) and opening the others; not a reply that is not one.
    async fn install(&self, reply: Value) -> bool {
        let Some(ranges) = parse(reply) else {
            return false;
        };
        let old = Arc::clone(&self.map.read().unwrap_or_else(PoisonError::into_inner));
        let mut map = Map {
            nodes: Vec::new(),
            by_slot: vec![NONE; SLOTS],
        };
        let mut addrs: Vec<(String, u16)> = Vec::new();
        for (start, end, host, port) in ranges {
            let at = match addrs.iter().position(|(h, p)| (h, *p) == (&host, port)) {
                Some(at) => at,
                None => {
                    let addr = ConnectionAddr::Tcp(host.clone(), port);
                    let kept = old.nodes.iter().find(|n| n.info.addr() == &addr).cloned();
                    let node = match kept {
                        // Reopened if it closed.
                        Some(node) => node.socket().await.map(|_| node),
                        None => NodeSocket::connect(self.seed.clone().set_addr(addr))
                            .await
                            .map(Arc::new),
                    };
                    let node = match node {
                        Ok(node) => node,
                        Err(e) => {
                            tracing::debug!(%host, port, "no socket to a cluster node: {e}");
                            continue;
                        }
                    };
                    map.nodes.push(node);
                    addrs.push((host, port));
                    addrs.len() - 1
                }
            };
            let Ok(at) = u16::try_from(at) else { continue };
            for slot in &mut map.by_slot[usize::from(start)..=usize::from(end)] {
                *slot = at;
            }
        }
        *self.map.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(map);
        true
    }
}

/// A refresh under way; over when this drops, even if its task never finished (a runtime
/// that shut down), so that the map can be asked for again.
struct Refreshing(Arc<Slots>);

impl Drop for Refreshing {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::Release);
    }
}

fn is_moved(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "MOVED")
}

/// Each range of a `CLUSTER SLOTS` reply, with its master's address; `None` if the reply is
/// not one (then the map stays as it was).
fn parse(reply: Value) -> Option<Vec<(u16, u16, String, u16)>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(range) = range else {
            return None;
        };
        let (start, end) = (int(range.first()?)?, int(range.get(1)?)?);
        let Value::Array(master) = range.get(2)? else {
            return None;
        };
        let host = match master.first()? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        // An unknown endpoint ("" or "?"): those slots stay with the client.
        if start > end || usize::from(end) >= SLOTS || host.is_empty() || host == "?" {
            continue;
        }
        out.push((start, end, host, int(master.get(1)?)?));
    }
    Some(out)
}

/// The one slot of the keys in `pipe`; `None` when it has none, keys of several slots, or a
/// `WAIT`: that blocks its connection until replicas answer, and the routed socket to a
/// master is the store's only one (the client's node connections are one per pooled
/// connection).
fn pipeline_slot(pipe: &Pipeline) -> Option<u16> {
    let is_wait = |c: &Cmd| matches!(c.args_iter().next(), Some(Arg::Simple(n)) if n.eq_ignore_ascii_case(b"WAIT"));
    if pipe.cmd_iter().any(is_wait) {
        return None;
    }
    let mut slots = pipe.cmd_iter().filter_map(key_slot);
    let first = slots.next()?;
    slots.all(|s| s == first).then_some(first)
}

/// The slot of the first key `cmd` names, for the commands the store sends (a key first, or
/// a script's keys); none for one without a key.
fn key_slot(cmd: &Cmd) -> Option<u16> {
    let mut args = cmd.args_iter().map(|a| match a {
        Arg::Simple(b) => Some(b),
        _ => None,
    });
    let name = args.next()??;
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    let key = if is("EVALSHA") || is("EVAL") {
        let _script = args.next()?;
        if args.next()?? == b"0" {
            return None;
        }
        args.next()??
    } else if [
        "WAIT", "ASKING", "MULTI", "EXEC", "PING", "ECHO", "SCRIPT", "CLUSTER",
    ]
    .into_iter()
    .any(is)
    {
        return None;
    } else {
        args.next()??
    };
    Some(slot_of(key))
}

/// The slot of `key`, as Redis computes it: CRC16 (XMODEM) of its hash tag (the text between
/// the first `{` and the next `}`, if not empty) or of the whole key, modulo 16384.
fn slot_of(key: &[u8]) -> u16 {
    let tag = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tag.unwrap_or(key)) % SLOTS as u16
}

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0, |crc, &b| {
        (crc << 8) ^ CRC16[usize::from(((crc >> 8) as u8) ^ b)]
    })
}

/// CRC16-CCITT (XMODEM: polynomial 0x1021, no reflection, start 0), one entry per byte.
const CRC16: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn slots_are_the_ones_redis_gives() {
        // The CRC's check value, and `CLUSTER KEYSLOT foo`; then redis-rs's own slots, for
        // hash tags, empty ones (the whole key counts) and keys with two.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(
            slot_of(b"{user1000}.following"),
            slot_of(b"{user1000}.followers")
        );
        for key in [
            &b"a{}b"[..],
            b"{}{x}",
            b"{x",
            b"x}",
            b"",
            b"s:{abc}:{def}",
            b"{user1000}.a",
        ] {
            assert_eq!(Some(Slot::for_key(key)), Slot::new(slot_of(key)), "{key:?}");
        }
    }

    #[test]
    fn a_pipeline_has_a_slot_only_when_its_keys_share_one() {
        let mut same = redis::pipe();
        same.cmd("HGETALL")
            .arg("s:{a}")
            .cmd("PEXPIRE")
            .arg("s:{a}")
            .arg(5);
        assert_eq!(pipeline_slot(&same), Some(slot_of(b"a")));
        same.cmd("WAIT").arg(1).arg(10);
        assert_eq!(pipeline_slot(&same), None, "WAIT stays with the client");
        let mut script = redis::pipe();
        script
            .cmd("EVALSHA")
            .arg("0123")
            .arg(2)
            .arg("u:{a}:i")
            .arg("{a}x");
        assert_eq!(pipeline_slot(&script), Some(slot_of(b"a")));
        let mut two = redis::pipe();
        two.cmd("GET").arg("a").cmd("GET").arg("b");
        assert_eq!(pipeline_slot(&two), None);
        let mut none = redis::pipe();
        none.cmd("EVALSHA").arg("0123").arg(0).cmd("PING");
        assert_eq!(pipeline_slot(&none), None);
    }
}

#[cfg(test)]
mod on_a_cluster {
    use redis::IntoConnectionInfo;
    use test_support::topology::Cluster;

    use super::*;

    /// `send` once the new map is in (within 5 s): until its refresh is done, the old map
    /// still routes, and a moved slot's pipeline meets `MOVED` again.
    async fn routed(slots: &Arc<Slots>, client: &Client, pipe: &Pipeline) -> Vec<Value> {
        for _ in 0..500 {
            if let Some(sent) = slots.send(client, pipe, 0, pipe.len()).await {
                let values = sent.expect("routed pipeline");
                if !values.iter().any(is_moved) {
                    return values;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no map of the slots within 5 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelines_go_to_their_master_and_a_moved_slot_is_learnt() {
        let cluster = tokio::task::spawn_blocking(|| Cluster::start(0))
            .await
            .expect("cluster");
        super::super::node::node_timeouts(Duration::from_secs(2), Duration::from_secs(2));
        let client = redis::cluster::ClusterClientBuilder::new(cluster.urls())
            .retries(0)
            .build()
            .expect("client");
        let client: Client = client.get_async_generic_connection().await.expect("conn");
        let seed = cluster.urls()[0].as_str().into_connection_info();
        let slots = Slots::new(seed.expect("seed"));
        let (key, slot) = ("s:{route}", slot_of(b"route"));
        let mut set = redis::pipe();
        set.cmd("SET").arg(key).arg("1").cmd("GET").arg(key);
        let done = [Value::Okay, Value::BulkString(b"1".to_vec())];

        // No map yet: nothing is sent (the client would send it), and the map is asked for.
        assert!(slots.send(&client, &set, 0, 2).await.is_none());
        assert_eq!(routed(&slots, &client, &set).await, done);

        // The slot moves to another master (empty first: Redis moves no slot with keys).
        let mut del = redis::pipe();
        del.cmd("DEL").arg(key);
        routed(&slots, &client, &del).await;
        let owner = cluster.owner(slot).port;
        let target = cluster.masters.iter().find(|m| m.port != owner);
        let target = target.expect("another master");
        let id: String = target.cmd(&["CLUSTER", "MYID"]);
        for m in std::iter::once(target).chain(&cluster.masters) {
            let _: () = m.cmd(&["CLUSTER", "SETSLOT", &slot.to_string(), "NODE", &id]);
        }
        // Our socket to the old owner gets the redirections, which mark the map stale: the
        // next pipeline is the client's, and the one after goes to the new owner.
        let moved = slots.send(&client, &set, 0, 2).await.expect("sent");
        assert!(moved.expect("replies").iter().all(is_moved));
        assert!(slots.send(&client, &set, 0, 2).await.is_none());
        assert_eq!(routed(&slots, &client, &set).await, done);
        assert_eq!(cluster.owner(slot).port, target.port);
        let on_target: Option<String> = target.cmd(&["GET", key]);
        assert_eq!(on_target.as_deref(), Some("1"));

        // The master closes our socket (as its `timeout` would): requests go to the client,
        // without waiting for a new socket, until the refresh has opened one.
        let _: u64 = target.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(slots.send(&client, &set, 0, 2).await.is_none());
        assert_eq!(routed(&slots, &client, &set).await, done);

        // The master answers nothing and keeps the socket open (a host that vanished; here
        // its clients are paused, its cluster bus is not): the request fails at the node
        // command timeout (2 s) and closes the socket, so that nothing more is routed there
        // until the map is asked again, and the socket reopened.
        let _: () = target.cmd(&["CLIENT", "PAUSE", "3000", "ALL"]);
        let late = slots.send(&client, &set, 0, 2).await.expect("sent");
        assert!(late.is_err_and(|e| e.is_timeout()), "a late request");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let node = slots.node(slot).expect("the master's socket");
        assert!(node.open_now().is_none(), "the late socket is closed");
        assert!(slots.send(&client, &set, 0, 2).await.is_none());
        assert_eq!(routed(&slots, &client, &set).await, done);
    }
}
