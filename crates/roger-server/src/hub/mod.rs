//! The hub: every session and channel of this server, behind one lock.
//!
//! All state changes (hello, resume, join, leave, floor, detach, timeouts) happen under a
//! std `Mutex` and never await while holding it: each operation is a few map updates,
//! so a blocking lock is cheaper and simpler than an async one (as mini-redis argues).
//! Notifications are queued with `try_send` to each socket's writer task, so a slow
//! client cannot stall the hub. Async work (webrtc) happens outside the lock.
//!
//! Channel state lives behind this one type so a larger deployment can move it to a
//! shared store without touching the socket or media code.
//!
//! Files: sessions (hello, resume, detach, end) (this file); timers, draining and health
//! (`lifecycle.rs`); channels and floors (`channels.rs`); cluster mode (`cluster.rs`);
//! history requests (`history.rs`); tokens (`tokens.rs`).

use crate::auth::{Authenticator, Claims};
use crate::config::Config;
use crate::floor::{Floor, RequestOutcome, Revoked};
use crate::media::{ChannelRouter, MediaSettings, SessionMedia, TransportEvent};
use roger_protocol::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Notify};

mod channels;
mod cluster;
mod history;
mod lifecycle;
mod tokens;
use channels::{leave_channel, publish_gauges};
pub use lifecycle::Health;

/// What a socket's writer task sends.
// Messages are queued by value: boxing each (for the rare small close) would cost an
// allocation per notification on the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outbound {
    /// A message.
    Message(ServerMessage),
    /// Close the socket with this code and reason, after the messages before it.
    Close(u16, String),
}

/// WebSocket close code for "policy violation" (replaced, drained, abuse).
pub const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code for "going away" (server shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// A socket attached to a session.
#[derive(Debug, Clone)]
pub struct Conn {
    /// Unique per socket, so a stale socket's close does not detach a newer one.
    pub id: u64,
    /// The socket's outbound queue.
    pub tx: mpsc::Sender<Outbound>,
    /// Closes the socket even when its queue is full (its reader waits on this).
    pub kill: Arc<Notify>,
}

impl Conn {
    /// A socket `id` whose messages go to `tx`.
    pub fn new(id: u64, tx: mpsc::Sender<Outbound>) -> Conn {
        Conn {
            id,
            tx,
            kill: Arc::new(Notify::new()),
        }
    }
    fn send(&self, msg: ServerMessage) {
        if self.tx.try_send(Outbound::Message(msg)).is_err() {
            metrics::counter!("roger_notifications_dropped_total").increment(1);
        }
    }
    /// Tells the socket why (an `error` notification) and closes it with 1008.
    fn end_with(&self, error: ErrorBody, reason: &str) {
        self.send(ServerMessage::Notification(Notification::Error(error)));
        self.close(CLOSE_POLICY, reason);
    }
    /// Queues a close frame (best effort: a full queue drops it) and closes the socket
    /// in any case: a client that stopped reading is not kept on because of it.
    fn close(&self, code: u16, reason: &str) {
        let _ = self.tx.try_send(Outbound::Close(code, reason.to_owned()));
        self.kill.notify_one();
    }
}

struct Session {
    member: Member,
    claims: Claims,
    resume_token: String,
    conn: Option<Conn>,
    detached_at: Option<Instant>,
    /// When it was created, Unix ms (a newer session of the same user on another node
    /// replaces it).
    created_ms: u64,
    /// When the token expires: the session ends then.
    expires_at: Instant,
    channels: BTreeSet<ChannelId>,
    downlinks: HashMap<ChannelId, u32>,
    media: Arc<SessionMedia>,
}

struct Channel {
    info: ChannelInfo,
    members: Vec<(SessionId, Member)>,
    floor: Floor,
    router: Arc<ChannelRouter>,
    /// Cluster: members on other nodes.
    remote: HashMap<SessionId, crate::cluster::wire::MemberRecord>,
    /// Cluster: the floor's holder when it talks through another node.
    remote_floor: Option<crate::cluster::wire::FloorRecord>,
}

struct HubState {
    sessions: HashMap<SessionId, Session>,
    by_user: HashMap<UserId, SessionId>,
    by_resume: HashMap<String, SessionId>,
    channels: BTreeMap<ChannelId, Channel>,
    draining: bool,
    /// Users whose older tokens are void.
    revoked: crate::revoke::Revocations,
    /// Sessions with a socket, kept by every change (for the gauge).
    connected: usize,
    /// Channel memberships, kept by every join and leave (for the gauge).
    members: usize,
    /// Resume tokens of sessions ended for their token: the error to answer, until when.
    tombstones: HashMap<String, (ErrorBody, Instant)>,
    /// Cluster mode: Redis and the relay (None for a single server).
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Cluster: live nodes' relay addresses.
    live: HashMap<String, std::net::SocketAddr>,
}

/// Sessions, channels and floors.
pub struct Hub {
    config: Arc<Config>,
    auth: Authenticator,
    media: MediaSettings,
    state: Mutex<HubState>,
    timers: Notify,
    history: Arc<crate::history::History>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::random();
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Hub {
    /// A hub for `config`, checking tokens with `auth`, keeping history in memory.
    pub fn new(config: Arc<Config>, auth: Authenticator) -> Arc<Hub> {
        let history = crate::history::History::start(
            Box::new(crate::history::MemoryStore::default()),
            config.retentions(),
        );
        Hub::with_history(config, auth, Arc::new(history))
    }

    /// A hub for `config`, checking tokens with `auth`, recording into `history`.
    pub fn with_history(
        config: Arc<Config>,
        auth: Authenticator,
        history: Arc<crate::history::History>,
    ) -> Arc<Hub> {
        let floor_max = Duration::from_millis(config.floor.max_talk_ms);
        let floor_grace = Duration::from_millis(config.floor.grace_ms);
        let channels = config
            .channel_infos()
            .into_iter()
            .map(|info| {
                let router = Arc::new(ChannelRouter::new(history.tap(&info.id)));
                (
                    info.id.clone(),
                    Channel {
                        info,
                        members: Vec::new(),
                        floor: Floor::new(floor_max, floor_grace),
                        router,
                        remote: HashMap::new(),
                        remote_floor: None,
                    },
                )
            })
            .collect();
        let media = MediaSettings {
            bind: config.media.bind.clone(),
            announced_ips: config.media.announced_ips.clone(),
            max_packets_per_second: config.media.max_packets_per_second,
            max_bytes_per_second: config.media.max_bytes_per_second,
            // Config::validate checks the range; an unchecked config falls back to
            // ephemeral ports, saying so.
            ports: (!config.media.port_range.is_empty())
                .then(|| crate::media::PortRange::parse(&config.media.port_range))
                .and_then(|r| {
                    r.map_err(|e| tracing::error!("{e}: ephemeral ports used"))
                        .ok()
                })
                .map(Arc::new),
        };
        Arc::new(Hub {
            config,
            auth,
            media,
            state: Mutex::new(HubState {
                sessions: HashMap::new(),
                by_user: HashMap::new(),
                by_resume: HashMap::new(),
                channels,
                draining: false,
                revoked: Default::default(),
                connected: 0,
                members: 0,
                tombstones: HashMap::new(),
                cluster: None,
                live: HashMap::new(),
            }),
            timers: Notify::new(),
            history,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        crate::sync::lock(&self.state)
    }

    /// ICE servers for `user`: TURN with fresh time-limited credentials, if configured.
    /// They never outlive the token (`token_exp`, Unix seconds).
    fn ice_servers(&self, user: &UserId, token_exp: u64) -> Vec<IceServer> {
        let turn = &self.config.turn;
        if turn.urls.is_empty() {
            return vec![];
        }
        let ttl = if turn.ttl_s == 0 { 86_400 } else { turn.ttl_s };
        let (username, credential) = crate::auth::turn_credentials(
            &turn.secret,
            user.as_str(),
            (crate::auth::unix_now() + ttl).min(token_exp),
        );
        vec![IceServer {
            urls: turn.urls.clone(),
            username,
            credential,
        }]
    }

    fn check_version(version: u32) -> Result<(), ErrorBody> {
        if version == PROTOCOL_VERSION {
            Ok(())
        } else {
            Err(ErrorBody::new(
                ErrorCode::UnsupportedProtocolVersion,
                format!("protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"),
            ))
        }
    }

    /// `hello`: authenticates and creates a session for `conn`.
    pub fn hello(
        self: &Arc<Self>,
        conn: Conn,
        protocol_version: u32,
        token: &str,
        client: &str,
    ) -> Result<(SessionId, Welcome), ErrorBody> {
        Self::check_version(protocol_version)?;
        let claims = self.auth.verify(token)?;
        let user = UserId(claims.sub.clone());
        let mut st = self.lock();
        Self::check_not_draining(&st)?;
        if let Some(e) = self.token_refusal(&st, &claims) {
            return Err(e);
        }
        if let Some(old) = st.by_user.get(&user).cloned() {
            tracing::info!(user = %user, old = %old, "same identity connected again: replacing the older session");
            self.replace_session(&mut st, &old);
        }
        self.check_room(&st)?;
        let id = SessionId(random_token());
        let member = Member {
            user: user.clone(),
            name: if claims.name.is_empty() {
                claims.sub.clone()
            } else {
                claims.name.clone()
            },
        };
        // A session receives at most one slot per channel its token allows.
        let allowed = st
            .channels
            .values()
            .filter(|c| claims.allows(&c.info.id))
            .count();
        let (media, events) = SessionMedia::new(id.clone(), self.media.clone(), allowed);
        spawn_transport_events(id.clone(), media.clone(), events);
        let resume_token = random_token();
        let channels: Vec<ChannelInfo> = st
            .channels
            .values()
            .filter(|c| claims.allows(&c.info.id))
            .map(|c| c.info.clone())
            .collect();
        st.by_user.insert(user, id.clone());
        st.by_resume.insert(resume_token.clone(), id.clone());
        let token_exp = claims.exp;
        let expires_at = tokens::expiry_instant(&claims, Instant::now());
        st.connected += 1;
        st.sessions.insert(
            id.clone(),
            Session {
                member: member.clone(),
                claims,
                resume_token: resume_token.clone(),
                conn: Some(conn),
                detached_at: None,
                created_ms: unix_ms(),
                expires_at,
                channels: BTreeSet::new(),
                downlinks: HashMap::new(),
                media,
            },
        );
        tracing::info!(session = %id, user = %member.user, client, "session created");
        metrics::counter!("roger_sessions_created_total").increment(1);
        publish_gauges(&st);
        let nodes = match &st.cluster {
            Some(c) => {
                let s = &st.sessions[&id];
                c.send(crate::cluster::Op::PutSession(
                    resume_token.clone(),
                    cluster::record(&id, s, c.node_id()),
                ));
                // A user has one session cluster-wide: an older one elsewhere ends.
                c.send(crate::cluster::Op::Signed(
                    member.user.clone(),
                    id.clone(),
                    s.created_ms,
                ));
                c.live_urls()
            }
            None => vec![],
        };
        drop(st);
        // The timers learn the new token expiry.
        self.timers.notify_one();
        let ice_servers = self.ice_servers(&member.user, token_exp);
        Ok((
            id.clone(),
            Welcome {
                session_id: id,
                resume_token,
                user: member,
                protocol_version: PROTOCOL_VERSION,
                server_version: env!("CARGO_PKG_VERSION").to_owned(),
                ice_servers,
                ping_interval_ms: self.config.session.ping_interval_ms,
                session_grace_ms: self.config.session.grace_ms,
                floor_grace_ms: self.config.floor.grace_ms,
                max_talk_ms: self.config.floor.max_talk_ms,
                channels,
                nodes,
            },
        ))
    }

    /// `resume`: attaches `conn` to the session of `resume_token`.
    pub async fn resume(
        self: &Arc<Self>,
        conn: Conn,
        protocol_version: u32,
        resume_token: &str,
    ) -> Result<(SessionId, Resumed), ErrorBody> {
        Self::check_version(protocol_version)?;
        // In a cluster the token is taken in Redis first: exactly one node gets it, and a
        // session held elsewhere is taken over. With Redis away, only local sessions
        // resume.
        if let Some(c) = self.cluster() {
            if !self.lock().draining {
                match c.claim(resume_token).await {
                    Ok(Some((rec, floors))) => {
                        let here = self.lock().sessions.contains_key(&rec.session);
                        if !here {
                            return self.adopt(conn, rec, floors, c).await;
                        }
                    }
                    Ok(None) => {
                        let st = self.lock();
                        if let Some((e, _)) = st.tombstones.get(resume_token) {
                            return Err(e.clone());
                        }
                        metrics::counter!("reconnect_attempts_total").increment(1);
                        return Err(ErrorBody::new(
                            ErrorCode::SessionExpired,
                            "no session for this resume token; join again",
                        ));
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "redis away: resuming locally only");
                    }
                }
            }
        }
        let (id, media, mut resumed) = {
            let mut st = self.lock();
            Self::check_not_draining(&st)?;
            let expired = || {
                ErrorBody::new(
                    ErrorCode::SessionExpired,
                    "no session for this resume token; join again",
                )
            };
            metrics::counter!("reconnect_attempts_total").increment(1);
            RESUME_ATTEMPTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some((e, _)) = st.tombstones.get(resume_token) {
                return Err(e.clone());
            }
            let id = st
                .by_resume
                .get(resume_token)
                .cloned()
                .ok_or_else(expired)?;
            let claims = &st.sessions.get(&id).ok_or_else(expired)?.claims;
            if let Some(e) = self.token_refusal(&st, claims) {
                self.end_for_token(&mut st, &id, e.clone(), Instant::now());
                return Err(e);
            }
            st.by_resume.remove(resume_token);
            let new_token = random_token();
            st.by_resume.insert(new_token.clone(), id.clone());
            let session = st.sessions.get_mut(&id).ok_or_else(expired)?;
            let reattached = match session.conn.replace(conn) {
                Some(old) => {
                    old.close(CLOSE_POLICY, "resumed on another socket");
                    false
                }
                None => true,
            };
            if let Some(at) = session.detached_at.take() {
                metrics::histogram!("time_to_recover_ms")
                    .record(at.elapsed().as_secs_f64() * 1000.0);
            }
            session.resume_token = new_token.clone();
            if let Some(c) = &st.cluster {
                let s = &st.sessions[&id];
                c.send(crate::cluster::Op::DelSession(resume_token.to_owned()));
                c.send(crate::cluster::Op::PutSession(
                    new_token.clone(),
                    cluster::record(&id, s, c.node_id()),
                ));
            }
            let session = st.sessions.get_mut(&id).ok_or_else(expired)?;
            let user = session.member.user.clone();
            let token_exp = session.claims.exp;
            let joined: Vec<ChannelId> = session.channels.iter().cloned().collect();
            let media = session.media.clone();
            st.connected += usize::from(reattached);
            let mut floors_held = Vec::new();
            for ch in &joined {
                if let Some(c) = st.channels.get_mut(ch) {
                    c.floor.connection_restored(&id);
                    if c.floor.holder().is_some_and(|h| h.session == id) {
                        floors_held.push(ch.clone());
                    }
                }
            }
            let channels = joined
                .iter()
                .filter_map(|ch| self.channel_state(&st, &id, ch))
                .collect();
            tracing::info!(session = %id, "session resumed");
            metrics::counter!("roger_sessions_resumed_total").increment(1);
            RESUMED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            publish_gauges(&st);
            (
                id.clone(),
                media,
                Resumed {
                    session_id: id,
                    resume_token: new_token,
                    ice_servers: self.ice_servers(&user, token_exp),
                    ping_interval_ms: self.config.session.ping_interval_ms,
                    channels,
                    transports: vec![],
                    floors_held,
                    nodes: st
                        .cluster
                        .as_ref()
                        .map(|c| c.live_urls())
                        .unwrap_or_default(),
                },
            )
        };
        resumed.transports = media.transports().await;
        self.timers.notify_one();
        Ok((id, resumed))
    }

    /// The media of a session.
    pub fn media(&self, session: &SessionId) -> Result<Arc<SessionMedia>, ErrorBody> {
        let st = self.lock();
        st.sessions
            .get(session)
            .map(|s| s.media.clone())
            .ok_or_else(session_gone)
    }

    /// The socket `conn_id` of `session` closed without `bye`: keep the session for its
    /// grace period (and a held floor for the floor grace).
    pub fn detach(&self, session: &SessionId, conn_id: u64) {
        let now = Instant::now();
        let mut st = self.lock();
        let Some(s) = st.sessions.get_mut(session) else {
            return;
        };
        if s.conn.as_ref().is_none_or(|c| c.id != conn_id) {
            return; // a newer socket took over already
        }
        s.conn = None;
        s.detached_at = Some(now);
        let channels: Vec<ChannelId> = s.channels.iter().cloned().collect();
        st.connected -= 1;
        for ch in channels {
            if let Some(c) = st.channels.get_mut(&ch) {
                c.floor.connection_lost(now, session);
            }
        }
        tracing::info!(session = %session, grace_ms = self.config.session.grace_ms, "socket lost; session kept for resume");
        publish_gauges(&st);
        drop(st);
        self.timers.notify_one();
    }

    /// `bye`: ends the session now.
    pub fn bye(&self, session: &SessionId) {
        self.end(session, "bye");
    }

    /// Ends a session now, for `why` (logged and counted).
    pub fn end(&self, session: &SessionId, why: &str) {
        let mut st = self.lock();
        self.end_session(&mut st, session, why);
        publish_gauges(&st);
    }

    /// A new session of the same user (here, or on another node of a cluster) replaces
    /// `old`: its socket is told why and closed, and it ends.
    fn replace_session(&self, st: &mut HubState, old: &SessionId) {
        if let Some(c) = st.sessions.get(old).and_then(|s| s.conn.clone()) {
            c.end_with(replaced_error(), "session replaced");
        }
        self.end_session(st, old, "replaced");
    }

    /// `SERVER_DRAINING` once a drain has begun.
    fn check_not_draining(st: &HubState) -> Result<(), ErrorBody> {
        if st.draining {
            return Err(ErrorBody::new(
                ErrorCode::ServerDraining,
                "the server is shutting down",
            ));
        }
        Ok(())
    }

    /// `SERVER_FULL` at the session limit.
    fn check_room(&self, st: &HubState) -> Result<(), ErrorBody> {
        if st.sessions.len() >= self.config.limits.max_sessions {
            return Err(ErrorBody::new(
                ErrorCode::ServerFull,
                "the server has no room for another session",
            ));
        }
        Ok(())
    }

    fn end_session(&self, st: &mut HubState, session: &SessionId, why: &str) {
        let Some(s) = st.sessions.get(session) else {
            return;
        };
        let channels: Vec<ChannelId> = s.channels.iter().cloned().collect();
        for ch in channels {
            leave_channel(st, session, &ch);
        }
        let s = st.sessions.remove(session).expect("present above");
        st.connected -= usize::from(s.conn.is_some());
        st.by_resume.remove(&s.resume_token);
        if st.by_user.get(&s.member.user) == Some(session) {
            st.by_user.remove(&s.member.user);
        }
        if let Some(c) = &st.cluster {
            c.send(crate::cluster::Op::DelSession(s.resume_token.clone()));
        }
        tracing::info!(session = %session, user = %s.member.user, why, "session ended");
        metrics::counter!("roger_sessions_ended_total", "why" => why.to_owned()).increment(1);
        let media = s.media.clone();
        tokio::spawn(async move { media.close().await });
    }
}

/// Resume attempts and successes, for `reconnect_success_rate` (process-wide, like the
/// metrics registry they feed).
static RESUME_ATTEMPTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static RESUMED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn replaced_error() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::SessionReplaced,
        "you connected from somewhere else",
    )
}

fn session_gone() -> ErrorBody {
    ErrorBody::new(ErrorCode::SessionExpired, "this session has ended")
}

/// Handles transport events of one session until its transports are gone.
fn spawn_transport_events(
    session: SessionId,
    media: Arc<SessionMedia>,
    mut events: mpsc::UnboundedReceiver<TransportEvent>,
) {
    // Hold the media weakly: this task must not keep a closed session alive.
    let media = Arc::downgrade(&media);
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                TransportEvent::Track(track) => {
                    if let Some(m) = media.upgrade() {
                        tokio::spawn(m.run_producer(track));
                    }
                }
                TransportEvent::State(dir, state) => {
                    tracing::debug!(session = %session, transport = %dir, %state, "transport state");
                    if let Some(m) = media.upgrade() {
                        m.set_state(dir, state);
                    }
                }
                TransportEvent::Ice(dir, state) => {
                    tracing::debug!(session = %session, transport = %dir, %state, "ice state");
                }
            }
        }
    });
}

/// Unix time in milliseconds (for `pong`).
pub fn server_time_ms() -> u64 {
    unix_ms()
}
