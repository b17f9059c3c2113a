//! What nodes keep in Redis and tell each other on the bus, and the Lua scripts that make
//! the floor lease atomic.
//!
//! Keys (all under `roger:`):
//! - `node:{id}`: a [`NodeInfo`], expiring 2 s after the node's last heartbeat; the
//!   set `nodes` lists the ids ever seen (pruned of expired ones).
//! - `resume:{token}`: a [`SessionRecord`]; `GETDEL` by whichever node a client resumes
//!   on, so a token is spent exactly once cluster-wide. Expires one session grace after
//!   its node last refreshed it (a dead node's sessions end like a lost socket's).
//! - `members:{channel}`: hash session id -> [`MemberRecord`].
//! - `floor:{channel}`: a [`FloorRecord`], the lease. Set only by the scripts below;
//!   expires one floor grace after the holder's node last refreshed it.
//!
//! The bus is the pub/sub channel `roger:bus` carrying [`BusMessage`]s. It is a fast path
//! only: every node also reconciles from the keys above every heartbeat (500 ms), so a
//! message lost (Redis restarting, a node subscribing late) costs at most that long.

use crate::auth::Claims;
use roger_protocol::{ChannelId, Member, SessionId};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The pub/sub channel.
pub const BUS: &str = "roger:bus";
/// The set of node ids.
pub const NODES: &str = "roger:nodes";

/// `roger:node:{id}`.
pub fn node_key(id: &str) -> String {
    format!("roger:node:{id}")
}
/// `roger:resume:{token}`.
pub fn resume_key(token: &str) -> String {
    format!("roger:resume:{token}")
}
/// `roger:members:{channel}`.
pub fn members_key(channel: &ChannelId) -> String {
    format!("roger:members:{channel}")
}
/// `roger:floor:{channel}`.
pub fn floor_key(channel: &ChannelId) -> String {
    format!("roger:floor:{channel}")
}

/// A live node, as its heartbeat says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique id.
    pub id: String,
    /// Where clients reach it.
    pub public_url: String,
    /// Where other nodes send it media.
    pub relay: SocketAddr,
    /// Its sessions (load).
    pub sessions: usize,
}

/// A session as the directory keeps it: enough for another node to take it over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session.
    pub session: SessionId,
    /// Who.
    pub member: Member,
    /// The token's claims (checked again on the node that takes it over).
    pub claims: Claims,
    /// Channels joined.
    pub channels: Vec<ChannelId>,
    /// The node that holds it.
    pub node: String,
    /// When it was created, Unix ms.
    #[serde(default)]
    pub created_ms: u64,
}

/// A channel member on some node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Who.
    pub member: Member,
    /// Where their session is.
    pub node: String,
    /// Which run of that node wrote it (a node restarted under the same id is another
    /// run: it must not take the last run's entries for its own).
    #[serde(default)]
    pub epoch: u32,
}

/// The floor lease of a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloorRecord {
    /// The holder's session.
    pub session: SessionId,
    /// Who.
    pub member: Member,
    /// The node the holder talks through (where its media comes from).
    pub node: String,
    /// When the max talk time ends, Unix ms.
    pub deadline_ms: u64,
    /// Which run of `node` holds it (see [`MemberRecord::epoch`]).
    #[serde(default)]
    pub epoch: u32,
}

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusMessage {
    /// The sending node (a node ignores its own messages).
    pub from: String,
    /// What happened.
    pub event: BusEvent,
}

/// What a node tells the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusEvent {
    /// A session on the sender joined a channel.
    Joined {
        /// The channel.
        channel: ChannelId,
        /// The session.
        session: SessionId,
        /// Who.
        member: Member,
    },
    /// A session on the sender left a channel (or ended).
    Left {
        /// The channel.
        channel: ChannelId,
        /// The session.
        session: SessionId,
        /// Who.
        member: Member,
    },
    /// The floor was granted (or taken over by a node the holder moved to).
    FloorTaken {
        /// The channel.
        channel: ChannelId,
        /// The lease.
        floor: FloorRecord,
    },
    /// The floor of `session` ended.
    FloorIdle {
        /// The channel.
        channel: ChannelId,
        /// The holder that ended.
        session: SessionId,
    },
    /// A session was resumed on the sender: its old node drops its copy.
    Moved {
        /// The session.
        session: SessionId,
    },
    /// A user signed in on the sender: an older session of theirs elsewhere ends
    /// (`SESSION_REPLACED`), as it would on one server.
    Signed {
        /// Who.
        user: roger_protocol::UserId,
        /// The new session.
        session: SessionId,
        /// When it was created, Unix ms.
        created_ms: u64,
    },
}

/// Grants the lease if it is free or already this session's (a holder that moved to
/// another node takes its lease along). Returns `{granted, current value}`.
/// KEYS[1] floor key; ARGV[1] new value, ARGV[2] lease ms, ARGV[3] session id.
pub const ACQUIRE: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then
  local ok, d = pcall(cjson.decode, v)
  if not (ok and d.session == ARGV[3]) then
    return {0, v}
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, ARGV[1]}
"#;

/// Ends the lease if this session holds it through this run of this node (a session that
/// moved on has its lease with its new node, which an old copy must not end).
/// KEYS[1] floor key; ARGV[1] session id, ARGV[2] node, ARGV[3] epoch.
pub const RELEASE: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then
  local ok, d = pcall(cjson.decode, v)
  if ok and d.session == ARGV[1] and d.node == ARGV[2] and tostring(d.epoch) == ARGV[3] then
    redis.call('DEL', KEYS[1])
    return 1
  end
end
return 0
"#;

/// Extends this session's lease held through this run of this node, or sets it again if
/// it is gone (a Redis that restarted empty). Returns 0 when someone else holds it (or
/// the session's lease moved to another node). KEYS[1] floor key; ARGV[1] value,
/// ARGV[2] lease ms, ARGV[3] session id, ARGV[4] node, ARGV[5] epoch.
pub const REFRESH: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then
  local ok, d = pcall(cjson.decode, v)
  if ok and d.session == ARGV[3] and d.node == ARGV[4] and tostring(d.epoch) == ARGV[5] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
  end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// Removes a hash field only if it still holds what was read (a stale member entry, not
/// one its new node has written since). KEYS[1] hash; ARGV[1] field, ARGV[2] value read.
pub const HDEL_IF: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"#;
