//! Cluster mode: several nodes sharing their state in Redis (the only shared state; no
//! consensus, gossip or election of our own). See `docs/cluster.md`.
//!
//! Each node keeps serving from its own hub; this module keeps Redis in step with it and
//! brings the other nodes' changes in:
//! - one worker task runs every Redis command in order (a release is in Redis before the
//!   next grant on the same node is asked for), so nothing else talks to Redis;
//! - every [`HEARTBEAT`] the worker registers the node, learns which nodes are alive,
//!   extends this node's session records and floor leases, and reads the members and
//!   floors of every channel for the hub to reconcile with;
//! - a subscriber applies other nodes' bus messages as they come (the fast path);
//! - the relay socket carries media between nodes ([`relay`]).
//!
//! Files: the cluster, its worker and the bus (this file); the heartbeat (`beat.rs`);
//! keys, records and scripts (`wire.rs`); node-to-node media (`relay.rs`).
//!
//! When Redis is unreachable the worker says so once, `/healthz` reports degraded, and
//! commands fail fast; when it answers again the node writes back everything it holds
//! (Redis may have restarted empty).

mod beat;
pub mod relay;
pub mod wire;

use crate::hub::Hub;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use roger_protocol::{ChannelId, SessionId};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use wire::*;

/// How often a node beats: registers itself, extends its leases and reconciles.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A node whose heartbeat is older than this is dead.
pub const NODE_TTL: Duration = Duration::from_millis(2_000);
/// How long a Redis command may take before Redis counts as unreachable.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Redis is unreachable (logged once by the worker).
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis: {0}")]
pub struct Unavailable(pub String);

/// A claimed session: its record, and the floors (by channel) whose lease it holds.
pub type Claimed = Option<(SessionRecord, Vec<(ChannelId, FloorRecord)>)>;

/// What the hub asks of Redis, in order.
pub enum Op {
    /// A session's resume token now names this record.
    PutSession(String, SessionRecord),
    /// A resume token is spent or its session ended.
    DelSession(String),
    /// Takes a resume token (`GETDEL`): the record, and the floors its session holds.
    Claim(String, oneshot::Sender<Result<Claimed, Unavailable>>),
    /// A local member joined (`HSET` + bus).
    Joined(ChannelId, SessionId, roger_protocol::Member),
    /// A local member left (`HDEL` + bus).
    Left(ChannelId, SessionId, roger_protocol::Member),
    /// Asks for the floor lease; `Ok(Err(holder))` when someone else has it.
    Acquire(
        ChannelId,
        FloorRecord,
        oneshot::Sender<Result<Result<(), FloorRecord>, Unavailable>>,
    ),
    /// A local holder's floor ended: the lease goes and the others hear of it.
    Release(ChannelId, SessionId),
    /// A session was taken over here.
    Moved(SessionId),
    /// A user signed in here (their older sessions elsewhere end).
    Signed(roger_protocol::UserId, SessionId, u64),
    /// A floor grant to announce.
    FloorTaken(ChannelId, FloorRecord),
    /// The node is draining: off the registry now, no more heartbeats.
    Deregister,
    /// Answers once everything queued before it is done.
    Flush(oneshot::Sender<()>),
}

/// What the hub holds, for heartbeats and for writing back after a Redis outage.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Resume tokens and their sessions.
    pub sessions: Vec<(String, SessionRecord)>,
    /// Local channel members.
    pub members: Vec<(ChannelId, SessionId, roger_protocol::Member)>,
    /// Floors held by local sessions.
    pub floors: Vec<(ChannelId, FloorRecord)>,
}

/// What the cluster looks like from Redis, for the hub to reconcile with.
#[derive(Debug, Default)]
pub struct View {
    /// Live nodes (this one included) and their relay addresses.
    pub live: HashMap<String, SocketAddr>,
    /// Members on other nodes, per channel (members of a dead node are kept for one
    /// session grace: they may resume elsewhere).
    pub members: HashMap<ChannelId, HashMap<SessionId, MemberRecord>>,
    /// Floor leases held through other nodes.
    pub floors: HashMap<ChannelId, FloorRecord>,
}

/// Settings of one node.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `redis://...`.
    pub redis: String,
    /// This node's id.
    pub node_id: String,
    /// Where clients reach it.
    pub public_url: String,
    /// Relay socket address.
    pub relay_bind: SocketAddr,
    /// Relay secret.
    pub secret: Vec<u8>,
    /// Session grace (session records expire this long after their node's last beat).
    pub session_grace: Duration,
    /// Floor grace (leases expire this long after their node's last beat).
    pub floor_grace: Duration,
}

/// This node's membership of the cluster.
pub struct Cluster {
    settings: Settings,
    relay: Arc<relay::Relay>,
    relay_addr: SocketAddr,
    ops: mpsc::UnboundedSender<Op>,
    /// This run of the node (random at start): records it wrote carry it.
    epoch: u32,
    up: AtomicBool,
    leaving: AtomicBool,
    live: Mutex<Vec<NodeInfo>>,
    hub: OnceLock<Weak<Hub>>,
}

impl Cluster {
    /// Binds the relay socket and starts the worker, heartbeat and bus tasks for `hub`.
    /// Redis need not be up: the node serves, degraded, until it is.
    pub async fn start(settings: Settings, hub: &Arc<Hub>) -> anyhow::Result<Arc<Cluster>> {
        let client = redis::Client::open(settings.redis.as_str())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let relay = Arc::new(
            relay::Relay::bind(
                settings.relay_bind,
                &settings.node_id,
                settings.secret.clone(),
            )
            .await?,
        );
        let relay_addr = relay.local_addr()?;
        let (ops, rx) = mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            settings,
            relay: relay.clone(),
            relay_addr,
            ops,
            epoch: rand::random::<u32>() | 1,
            up: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
            hub: OnceLock::new(),
        });
        let _ = cluster.hub.set(Arc::downgrade(hub));
        hub.set_cluster(cluster.clone());
        tracing::info!(node = %cluster.settings.node_id, relay = %relay_addr, "cluster node starting");
        let weak = Arc::downgrade(&cluster);
        tokio::spawn(Worker::new(weak.clone(), conn).run(rx));
        tokio::spawn(run_bus(weak.clone(), client));
        let w = Arc::downgrade(hub);
        tokio::spawn(relay.run(move |p| {
            if let Some(h) = w.upgrade() {
                h.relay_in(p);
            }
        }));
        Ok(cluster)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// This run of the node (see [`MemberRecord::epoch`]).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The relay socket.
    pub fn relay(&self) -> &Arc<relay::Relay> {
        &self.relay
    }

    /// Whether Redis answered the last heartbeat.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Queues an operation (never waits).
    pub fn send(&self, op: Op) {
        let _ = self.ops.send(op);
    }

    /// Leaves the registry (a drain): clients are sent to the other nodes, which stop
    /// listing this one at once.
    pub fn leave(&self) {
        self.leaving.store(true, Ordering::Relaxed);
        self.send(Op::Deregister);
    }

    /// Waits (at most `within`) until every queued operation is done.
    pub async fn flush(&self, within: Duration) {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Flush(tx));
        let _ = tokio::time::timeout(within, rx).await;
    }

    /// Public URLs of the live nodes, this one first.
    pub fn live_urls(&self) -> Vec<String> {
        let mut out = vec![self.settings.public_url.clone()];
        for n in crate::sync::lock(&self.live).iter() {
            if n.id != self.settings.node_id && !out.contains(&n.public_url) {
                out.push(n.public_url.clone());
            }
        }
        out
    }

    /// Takes a resume token cluster-wide (exactly one node gets its record).
    pub async fn claim(&self, token: &str) -> Result<Claimed, Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Claim(token.to_owned(), tx));
        rx.await
            .unwrap_or_else(|_| Err(Unavailable("worker stopped".into())))
    }

    /// Asks for the floor lease of `channel`.
    pub async fn acquire(
        &self,
        channel: &ChannelId,
        floor: FloorRecord,
    ) -> Result<Result<(), FloorRecord>, Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Acquire(channel.clone(), floor, tx));
        rx.await
            .unwrap_or_else(|_| Err(Unavailable("worker stopped".into())))
    }

    fn hub(&self) -> Option<Arc<Hub>> {
        self.hub.get().and_then(Weak::upgrade)
    }

    fn node_info(&self, sessions: usize) -> NodeInfo {
        NodeInfo {
            id: self.settings.node_id.clone(),
            public_url: self.settings.public_url.clone(),
            relay: self.relay_addr,
            sessions,
        }
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }
}

/// Runs Redis commands in order; beats.
struct Worker {
    cluster: Weak<Cluster>,
    conn: ConnectionManager,
    acquire: redis::Script,
    release: redis::Script,
    refresh: redis::Script,
    hdel_if: redis::Script,
    /// When each node (or an earlier run of this one, `id#epoch`) was first seen missing
    /// (for the members it leaves behind).
    missing_since: HashMap<String, Instant>,
    /// Local sessions whose directory record was gone at the last heartbeats: taken by
    /// another node (a `Moved` that was lost). Dropped here at the second miss.
    unclaimed: HashMap<SessionId, u32>,
    /// Leases of this run that the hub did not have at the last heartbeat (released at
    /// the second, so a grant in flight is not mistaken for a lost release).
    orphan_leases: HashMap<ChannelId, u32>,
    last_error: Option<String>,
}

impl Worker {
    fn new(cluster: Weak<Cluster>, conn: ConnectionManager) -> Worker {
        Worker {
            cluster,
            conn,
            acquire: redis::Script::new(ACQUIRE),
            release: redis::Script::new(RELEASE),
            refresh: redis::Script::new(REFRESH),
            hdel_if: redis::Script::new(HDEL_IF),
            missing_since: HashMap::new(),
            unclaimed: HashMap::new(),
            orphan_leases: HashMap::new(),
            last_error: None,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Op>) {
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                op = rx.recv() => match op {
                    Some(op) => self.op(op).await,
                    None => return,
                },
                _ = beat.tick() => {
                    if self.cluster.upgrade().is_none() {
                        return;
                    }
                    self.beat().await;
                }
            }
        }
    }

    fn up(&self) -> bool {
        self.cluster.upgrade().is_some_and(|c| c.is_up())
    }

    /// Notes a failed command: the first failure of an outage is logged with its reason.
    fn failed(&mut self, what: &str, e: &redis::RedisError) -> Unavailable {
        let reason = e.to_string();
        if let Some(c) = self.cluster.upgrade() {
            if c.up.swap(false, Ordering::Relaxed) || self.last_error.is_none() {
                tracing::error!(what, error = %reason, "redis unreachable: the cluster is degraded (local sessions go on)");
                metrics::gauge!("roger_redis_up").set(0.0);
            }
        }
        metrics::counter!("roger_redis_errors_total").increment(1);
        self.last_error = Some(reason.clone());
        Unavailable(reason)
    }

    async fn publish(&mut self, event: BusEvent) -> redis::RedisResult<()> {
        let Some(c) = self.cluster.upgrade() else {
            return Ok(());
        };
        let msg = BusMessage {
            from: c.settings.node_id.clone(),
            event,
        };
        let text = serde_json::to_string(&msg).expect("bus messages serialize");
        redis::cmd("PUBLISH")
            .arg(BUS)
            .arg(text)
            .query_async::<()>(&mut self.conn)
            .await
    }

    async fn op(&mut self, op: Op) {
        let Some(c) = self.cluster.upgrade() else {
            return;
        };
        let down = Unavailable("redis is unreachable".into());
        // While Redis is down, writes are skipped: the first good heartbeat writes back
        // everything the hub holds. Requests that need an answer fail at once.
        let result = match op {
            Op::Flush(reply) => {
                let _ = reply.send(());
                Ok(())
            }
            Op::Claim(_, reply) if !self.up() => {
                let _ = reply.send(Err(down));
                Ok(())
            }
            Op::Acquire(_, _, reply) if !self.up() => {
                let _ = reply.send(Err(down));
                Ok(())
            }
            _ if !self.up() => Ok(()),
            Op::PutSession(token, record) => {
                let text = serde_json::to_string(&record).expect("records serialize");
                redis::cmd("SET")
                    .arg(resume_key(&token))
                    .arg(text)
                    .arg("PX")
                    .arg(Cluster::ms(c.settings.session_grace))
                    .query_async::<()>(&mut self.conn)
                    .await
            }
            Op::DelSession(token) => {
                redis::cmd("DEL")
                    .arg(resume_key(&token))
                    .query_async::<()>(&mut self.conn)
                    .await
            }
            Op::Claim(token, reply) => {
                let r = self.claim(&token).await;
                let r2 = r.as_ref().map(|_| ()).map_err(Clone::clone);
                let _ = reply.send(r.map_err(|e| Unavailable(e.to_string())));
                r2
            }
            Op::Joined(channel, session, member) => {
                let rec = MemberRecord {
                    member: member.clone(),
                    node: c.settings.node_id.clone(),
                    epoch: c.epoch,
                };
                let set = redis::cmd("HSET")
                    .arg(members_key(&channel))
                    .arg(session.as_str())
                    .arg(serde_json::to_string(&rec).expect("records serialize"))
                    .query_async::<()>(&mut self.conn)
                    .await;
                match set {
                    Ok(()) => {
                        self.publish(BusEvent::Joined {
                            channel,
                            session,
                            member,
                        })
                        .await
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Left(channel, session, member) => {
                let del = redis::cmd("HDEL")
                    .arg(members_key(&channel))
                    .arg(session.as_str())
                    .query_async::<()>(&mut self.conn)
                    .await;
                match del {
                    Ok(()) => {
                        self.publish(BusEvent::Left {
                            channel,
                            session,
                            member,
                        })
                        .await
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Acquire(channel, floor, reply) => {
                let started = Instant::now();
                let r = self.acquire_lease(&channel, &floor).await;
                metrics::histogram!("roger_redis_floor_seconds")
                    .record(started.elapsed().as_secs_f64());
                let r2 = r.as_ref().map(|_| ()).map_err(Clone::clone);
                let _ = reply.send(r.map_err(|e| Unavailable(e.to_string())));
                r2
            }
            Op::Release(channel, session) => {
                let del = self
                    .release
                    .key(floor_key(&channel))
                    .arg(session.as_str())
                    .arg(&c.settings.node_id)
                    .arg(c.epoch.to_string())
                    .invoke_async::<i64>(&mut self.conn)
                    .await;
                match del {
                    Ok(_) => self.publish(BusEvent::FloorIdle { channel, session }).await,
                    Err(e) => Err(e),
                }
            }
            Op::Moved(session) => self.publish(BusEvent::Moved { session }).await,
            Op::Signed(user, session, created_ms) => {
                self.publish(BusEvent::Signed {
                    user,
                    session,
                    created_ms,
                })
                .await
            }
            Op::Deregister => {
                // Off the live list at once; still in the set, so the other nodes time
                // its members from now (they are resuming elsewhere) like a dead node's.
                redis::cmd("DEL")
                    .arg(node_key(&c.settings.node_id))
                    .query_async::<()>(&mut self.conn)
                    .await
            }
            Op::FloorTaken(channel, floor) => {
                self.publish(BusEvent::FloorTaken { channel, floor }).await
            }
        };
        if let Err(e) = result {
            self.failed("command", &e);
        }
    }

    async fn acquire_lease(
        &mut self,
        channel: &ChannelId,
        floor: &FloorRecord,
    ) -> redis::RedisResult<Result<(), FloorRecord>> {
        let Some(c) = self.cluster.upgrade() else {
            return Ok(Ok(()));
        };
        let text = serde_json::to_string(floor).expect("records serialize");
        let (granted, current): (i64, String) = self
            .acquire
            .key(floor_key(channel))
            .arg(&text)
            .arg(Cluster::ms(c.settings.floor_grace))
            .arg(floor.session.as_str())
            .invoke_async(&mut self.conn)
            .await?;
        if granted == 1 {
            return Ok(Ok(()));
        }
        match serde_json::from_str::<FloorRecord>(&current) {
            Ok(holder) => Ok(Err(holder)),
            Err(e) => {
                // Not ours to fix by guessing: deny, and say what is in the way.
                tracing::error!(channel = %channel, error = %e, "unreadable floor lease in redis");
                Ok(Err(FloorRecord {
                    session: SessionId(String::new()),
                    member: roger_protocol::Member {
                        user: "unknown".into(),
                        name: "unknown".into(),
                    },
                    node: String::new(),
                    deadline_ms: 0,
                    epoch: 0,
                }))
            }
        }
    }

    async fn claim(&mut self, token: &str) -> redis::RedisResult<Claimed> {
        let text: Option<String> = redis::cmd("GETDEL")
            .arg(resume_key(token))
            .query_async(&mut self.conn)
            .await?;
        let Some(record) = text.and_then(|t| serde_json::from_str::<SessionRecord>(&t).ok()) else {
            return Ok(None);
        };
        let mut floors = Vec::new();
        for ch in &record.channels {
            let f: Option<String> = redis::cmd("GET")
                .arg(floor_key(ch))
                .query_async(&mut self.conn)
                .await?;
            if let Some(f) = f.and_then(|t| serde_json::from_str::<FloorRecord>(&t).ok()) {
                if f.session == record.session {
                    floors.push((ch.clone(), f));
                }
            }
        }
        Ok(Some((record, floors)))
    }
}

/// Applies other nodes' bus messages until the cluster is dropped, resubscribing after
/// a Redis outage.
async fn run_bus(cluster: Weak<Cluster>, client: redis::Client) {
    loop {
        let Some(me) = cluster.upgrade().map(|c| c.settings.node_id.clone()) else {
            return;
        };
        let subscribed = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(BUS).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        let ps = match tokio::time::timeout(REDIS_TIMEOUT * 2, subscribed).await {
            Ok(Ok(ps)) => ps,
            _ => {
                tokio::time::sleep(HEARTBEAT).await;
                continue;
            }
        };
        tracing::debug!("subscribed to the cluster bus");
        let mut messages = ps.into_on_message();
        while let Some(msg) = messages.next().await {
            let Ok(text) = msg.get_payload::<String>() else {
                continue;
            };
            let Ok(m) = serde_json::from_str::<BusMessage>(&text) else {
                metrics::counter!("roger_bus_malformed_total").increment(1);
                continue;
            };
            if m.from == me {
                continue;
            }
            let Some(hub) = cluster.upgrade().and_then(|c| c.hub()) else {
                return;
            };
            hub.apply_bus(&m.from, m.event);
        }
        tracing::debug!("cluster bus subscription ended; resubscribing");
        tokio::time::sleep(HEARTBEAT).await;
    }
}
