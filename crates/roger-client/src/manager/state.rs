//! What the manager's tasks share. State that changes together sits behind one lock:
//! the session (socket, welcome, resume token, last error), the media (both
//! transports), the channels (by id and by downlink SSRC), the talk spurt, the sink,
//! the recovery figures and the outbox. No task holds two of these locks at once.

use super::{ClientConfig, RecoveryStats};
use crate::audio::AudioSink;
use crate::event::{ClientEvent, FloorEvent, Status};
use crate::outbox::{Kind, Outbox};
use crate::recovery::Event;
use crate::signaling::Signaling;
use crate::transport::{Transport, TransportSettings};
use roger_protocol::*;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

pub(super) type Reply = oneshot::Sender<Result<Response, ErrorBody>>;

/// What the driver task reads.
pub(super) enum Input {
    Event(Event),
    Close(oneshot::Sender<()>),
}

/// The talk spurt in progress.
pub(super) struct Talk {
    pub(super) channel: ChannelId,
    pub(super) stop: Option<oneshot::Sender<()>>,
    pub(super) done: Option<oneshot::Receiver<()>>,
}

/// The signaling session.
#[derive(Default)]
pub(super) struct Session {
    /// The socket of the current session and its generation, set once `hello`/`resume`
    /// succeeded on it.
    pub(super) signaling: Option<(u64, Signaling)>,
    /// The socket's local address (the network watcher asks whether it was lost).
    pub(super) local_addr: Option<SocketAddr>,
    pub(super) welcome: Option<Welcome>,
    pub(super) resume_token: Option<String>,
    /// The last error reported (the message of a failed first connection).
    pub(super) last_error: Option<ErrorBody>,
}

/// The send side: its transport, the one producer track and its RTP numbering.
pub(super) struct SendSide {
    pub(super) gen: u64,
    pub(super) transport: Arc<Transport>,
    pub(super) track: Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP>,
    pub(super) ssrc: u32,
    pub(super) clock: Arc<Mutex<super::rtp::RtpClock>>,
}

/// The receive side's transport.
pub(super) struct RecvSide {
    pub(super) gen: u64,
    pub(super) transport: Arc<Transport>,
}

/// Both transports.
#[derive(Default)]
pub(super) struct Media {
    pub(super) send: Option<SendSide>,
    pub(super) recv: Option<RecvSide>,
}

/// The joined channels, and which downlink SSRC carries which.
#[derive(Default)]
pub(super) struct Channels {
    pub(super) by_id: BTreeMap<ChannelId, ChannelState>,
    pub(super) by_ssrc: HashMap<u32, ChannelId>,
    /// When each channel's audio was last received (Unix ms, this machine's clock):
    /// what was said after it and before the media came back is replayed.
    pub(super) heard_at: HashMap<ChannelId, u64>,
    /// When each channel was joined (Unix ms): nothing before it is "missed".
    pub(super) joined_at: HashMap<ChannelId, u64>,
    /// When each channel's audio last came back after a silence (Unix ms): live audio
    /// took over there, so a replay stops at it.
    pub(super) resumed_at: HashMap<ChannelId, u64>,
}

/// A silence this long before a packet makes it a new start (see `resumed_at`).
const RESUME_SILENCE_MS: u64 = 500;

#[derive(Default)]
pub(super) struct Counters {
    pub(super) sent: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) concealed: AtomicU64,
    pub(super) recovered: AtomicU64,
    /// Packet loss the encoder's FEC should protect against, in percent (from the
    /// quality monitor; 5 until it has measured).
    pub(super) loss_percent: AtomicU32,
    /// When live audio was last received on any channel (Unix ms): a replay waits while
    /// live audio plays.
    pub(super) live_at_ms: AtomicU64,
}

pub(super) struct Shared {
    pub(super) config: ClientConfig,
    pub(super) inputs: mpsc::UnboundedSender<Input>,
    events: mpsc::UnboundedSender<ClientEvent>,
    pub(super) status: watch::Sender<Status>,
    pub(super) session: Mutex<Session>,
    pub(super) media: Mutex<Media>,
    pub(super) channels: Mutex<Channels>,
    pub(super) talk: Mutex<Option<Talk>>,
    pub(super) counters: Counters,
    pub(super) sink: Mutex<Box<dyn AudioSink>>,
    pub(super) stats: Mutex<RecoveryStats>,
    outbox: Mutex<Outbox<(Request, Reply)>>,
    pub(super) closing: AtomicBool,
    /// Outages, the server's clock, and what has been replayed.
    pub(super) replay: Mutex<super::replay::ReplayState>,
    /// The server addresses known (given, and learned from a cluster), and the one in use.
    pub(super) servers: Mutex<Servers>,
}

/// The addresses of a server or of a cluster's nodes: the one in use, and where to go
/// when it cannot be reached. Any node resumes any session, so a failed attempt moves on
/// to the next address (on the usual backoff) and a draining node's list is used at once.
#[derive(Debug, Default)]
pub(crate) struct Servers {
    urls: Vec<String>,
    current: usize,
}

impl Servers {
    /// `urls` in order of preference (duplicates dropped).
    pub(crate) fn new(urls: impl IntoIterator<Item = String>) -> Servers {
        let mut s = Servers::default();
        s.learn(urls);
        s
    }

    /// The address to connect to.
    pub(crate) fn current(&self) -> String {
        self.urls.get(self.current).cloned().unwrap_or_default()
    }

    /// How many addresses are known.
    pub(crate) fn len(&self) -> usize {
        self.urls.len()
    }

    /// Every known address.
    #[cfg(test)]
    pub(crate) fn all(&self) -> &[String] {
        &self.urls
    }

    /// Moves to the next address (the same one when there is only one).
    pub(crate) fn advance(&mut self) {
        if !self.urls.is_empty() {
            self.current = (self.current + 1) % self.urls.len();
        }
    }

    /// Adds addresses not known yet (a cluster's live nodes), keeping the one in use.
    /// Learned ones go in random order, so a lost node's clients spread over the others
    /// instead of all moving to the same one. Given `wss://`, a learned `ws://` address
    /// is refused: a node must not talk a client out of encryption.
    pub(crate) fn learn(&mut self, urls: impl IntoIterator<Item = String>) {
        let secure = self.urls.first().is_some_and(|u| u.starts_with("wss://"));
        let mut new: Vec<String> = urls
            .into_iter()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty() && !self.urls.contains(u))
            .filter(|u| !(secure && u.starts_with("ws://")))
            .collect();
        new.dedup();
        if !self.urls.is_empty() {
            use rand::seq::SliceRandom;
            new.shuffle(&mut rand::rng());
        }
        for u in new {
            if !self.urls.contains(&u) {
                self.urls.push(u);
            }
        }
    }

    /// Moves to an address other than the one in use, preferring those in `to` (a
    /// draining node's suggestions). False if there is no other.
    pub(crate) fn move_off(&mut self, to: &[String]) -> bool {
        self.learn(to.iter().cloned());
        let here = self.current();
        let pick = to
            .iter()
            .find(|u| **u != here)
            .and_then(|u| self.urls.iter().position(|x| x == u.trim()));
        match pick {
            Some(i) => {
                self.current = i;
                true
            }
            None if self.urls.len() > 1 => {
                self.advance();
                true
            }
            None => false,
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks except a bug that already failed a task.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The answer to a push-to-talk request that waited longer than `max_age` for the socket.
fn stale_ptt(max_age: Duration) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::SignalingTimeout,
        format!(
            "dropped: a push-to-talk request older than {} ms is not replayed",
            max_age.as_millis()
        ),
    )
}

impl Shared {
    pub(super) fn new(
        config: ClientConfig,
        inputs: mpsc::UnboundedSender<Input>,
        events: mpsc::UnboundedSender<ClientEvent>,
        sink: Box<dyn AudioSink>,
    ) -> Shared {
        let (status, _) = watch::channel(Status::Offline);
        let config_urls = (config.server_url.clone(), config.servers.clone());
        Shared {
            outbox: Mutex::new(Outbox::new(
                config.recovery.outbox_capacity,
                config.recovery.ptt_max_age,
            )),
            config,
            inputs,
            events,
            status,
            session: Mutex::default(),
            media: Mutex::default(),
            channels: Mutex::default(),
            talk: Mutex::new(None),
            counters: Counters {
                loss_percent: AtomicU32::new(5),
                ..Counters::default()
            },
            sink: Mutex::new(sink),
            stats: Mutex::new(RecoveryStats {
                reconnect_success_rate: 1.0,
                ..Default::default()
            }),
            closing: AtomicBool::new(false),
            replay: Mutex::default(),
            servers: Mutex::new(Servers::new(
                std::iter::once(config_urls.0).chain(config_urls.1),
            )),
        }
    }

    /// Adds a cluster's node addresses and tells the recovery machine whether it has
    /// somewhere else to go.
    pub(super) fn learn_servers(&self, urls: &[String]) {
        let n = {
            let mut s = lock(&self.servers);
            s.learn(urls.iter().cloned());
            s.len()
        };
        self.input(Event::Alternates(n > 1));
    }

    pub(super) fn emit(&self, ev: ClientEvent) {
        let _ = self.events.send(ev);
    }

    pub(super) fn input(&self, ev: Event) {
        let _ = self.inputs.send(Input::Event(ev));
    }

    pub(super) fn floor(&self, channel: &ChannelId, floor: FloorEvent) {
        self.emit(ClientEvent::Floor {
            channel: channel.clone(),
            floor,
        });
    }

    pub(super) fn signaling(&self) -> Option<Signaling> {
        lock(&self.session)
            .signaling
            .as_ref()
            .map(|(_, s)| s.clone())
    }

    /// The generation of the current session's socket.
    pub(super) fn signaling_gen(&self) -> Option<u64> {
        lock(&self.session).signaling.as_ref().map(|(g, _)| *g)
    }

    /// Forgets the socket of generation `gen` if it is the current one.
    pub(super) fn drop_signaling(&self, gen: u64) -> Option<Signaling> {
        let mut s = lock(&self.session);
        if s.signaling.as_ref().is_some_and(|(g, _)| *g == gen) {
            s.signaling.take().map(|(_, sig)| sig)
        } else {
            None
        }
    }

    pub(super) fn set_last_error(&self, error: ErrorBody) {
        lock(&self.session).last_error = Some(error);
    }

    pub(super) fn last_error(&self) -> Option<ErrorBody> {
        lock(&self.session).last_error.clone()
    }

    pub(super) fn stop_talking(&self) -> Option<ChannelId> {
        let mut t = lock(&self.talk).take()?;
        if let Some(stop) = t.stop.take() {
            let _ = stop.send(());
        }
        Some(t.channel)
    }

    /// Sends a request on the current socket, or queues it until the socket is back.
    pub(super) async fn request(&self, request: Request) -> Result<Response, ErrorBody> {
        if let Some(sig) = self.signaling() {
            return sig.request(request).await;
        }
        let kind = match request {
            Request::FloorRequest { .. } | Request::FloorRelease { .. } => Kind::Ptt,
            _ => Kind::Other,
        };
        let (tx, rx) = oneshot::channel();
        let queued = lock(&self.outbox).push(Instant::now(), kind, (request, tx));
        if queued.is_err() {
            return Err(ErrorBody::new(
                ErrorCode::SignalingClosed,
                format!(
                    "not connected, and {} requests are already waiting",
                    self.config.recovery.outbox_capacity
                ),
            ));
        }
        // A PTT request is worth something for `ptt_max_age` only (then it is dropped,
        // not replayed); anything else may wait out the recovery window.
        let recovery = &self.config.recovery;
        let wait = match kind {
            Kind::Ptt => recovery.ptt_max_age + Duration::from_millis(50),
            Kind::Other => recovery.recovery_window + self.config.request_timeout,
        };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(result)) => result,
            _ => {
                // Answer (and remove) every PTT request that has gone stale, ours too.
                for (_, reply) in lock(&self.outbox).expire(Instant::now()) {
                    let _ = reply.send(Err(stale_ptt(self.config.recovery.ptt_max_age)));
                }
                Err(ErrorBody::new(
                    ErrorCode::SignalingTimeout,
                    "the server was unreachable for too long",
                ))
            }
        }
    }

    /// Sends what waited for the socket (stale PTT requests are answered, not sent).
    pub(super) fn flush_outbox(&self, sig: &Signaling) {
        let (send, stale) = lock(&self.outbox).drain(Instant::now());
        for (_, reply) in stale {
            let _ = reply.send(Err(stale_ptt(self.config.recovery.ptt_max_age)));
        }
        for (request, reply) in send {
            let sig = sig.clone();
            tokio::spawn(async move {
                let _ = reply.send(sig.request(request).await);
            });
        }
    }

    /// The channel a received packet of `ssrc` belongs to, noting that it was heard now.
    pub(super) fn heard(&self, ssrc: u32) -> Option<ChannelId> {
        let now = unix_ms();
        let mut c = lock(&self.channels);
        let channel = c.by_ssrc.get(&ssrc).cloned()?;
        let before = c.heard_at.insert(channel.clone(), now);
        if before.is_none_or(|b| now.saturating_sub(b) >= RESUME_SILENCE_MS) {
            c.resumed_at.insert(channel.clone(), now);
        }
        drop(c);
        self.counters
            .live_at_ms
            .store(now, std::sync::atomic::Ordering::Relaxed);
        Some(channel)
    }

    pub(super) fn record_channel(&self, state: &ChannelState) {
        let mut c = lock(&self.channels);
        c.joined_at.entry(state.id.clone()).or_insert_with(unix_ms);
        c.by_ssrc.retain(|_, ch| ch != &state.id);
        c.by_ssrc.insert(state.downlink_ssrc, state.id.clone());
        c.by_id.insert(state.id.clone(), state.clone());
    }

    /// Undoes [`record_channel`](Self::record_channel): the channel and its ssrc.
    pub(super) fn forget_channel(&self, id: &ChannelId) -> Option<ChannelState> {
        let mut c = lock(&self.channels);
        c.by_ssrc.retain(|_, ch| ch != id);
        c.joined_at.remove(id);
        c.heard_at.remove(id);
        c.resumed_at.remove(id);
        c.by_id.remove(id)
    }

    /// The ids of the joined channels.
    pub(super) fn channel_ids(&self) -> Vec<ChannelId> {
        lock(&self.channels).by_id.keys().cloned().collect()
    }

    /// Applies `f` to a joined channel's state (notifications keep it current).
    pub(super) fn update_channel(&self, id: &ChannelId, f: impl FnOnce(&mut ChannelState)) {
        if let Some(s) = lock(&self.channels).by_id.get_mut(id) {
            f(s);
        }
    }

    pub(super) fn recv_slots(&self) -> u32 {
        lock(&self.channels)
            .by_id
            .values()
            .map(|c| c.recv_slots)
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// The current transport of `dir`, if it is of generation `gen` (any, for `None`).
    pub(super) fn transport(&self, dir: Direction, gen: Option<u64>) -> Option<Arc<Transport>> {
        let media = lock(&self.media);
        let (g, t) = match dir {
            Direction::Send => media.send.as_ref().map(|s| (s.gen, &s.transport))?,
            Direction::Recv => media.recv.as_ref().map(|r| (r.gen, &r.transport))?,
        };
        gen.is_none_or(|gen| gen == g).then(|| t.clone())
    }

    pub(super) fn transport_settings(&self, relay_only: bool) -> TransportSettings {
        let ice_servers = lock(&self.session)
            .welcome
            .as_ref()
            .map(|w| w.ice_servers.clone())
            .unwrap_or_default();
        let recovery = &self.config.recovery;
        TransportSettings {
            bind: self.config.bind_addresses(),
            ice_servers,
            ice_disconnected: recovery.ice_disconnected_timeout,
            ice_failed: recovery.ice_failed_timeout,
            ice_keepalive: recovery.ice_keepalive_interval,
            relay_only,
        }
    }
}

#[cfg(test)]
mod servers_tests {
    use super::Servers;

    fn urls(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_failed_node_moves_to_the_next_and_round_again() {
        let mut s = Servers::new(urls(&["ws://a/ws", "ws://b/ws", "ws://a/ws"]));
        assert_eq!(s.all().len(), 2);
        assert_eq!(s.current(), "ws://a/ws");
        s.advance();
        assert_eq!(s.current(), "ws://b/ws");
        s.advance();
        assert_eq!(s.current(), "ws://a/ws");
    }

    #[test]
    fn a_secure_service_does_not_learn_plain_addresses() {
        let mut s = Servers::new(urls(&["wss://a/ws"]));
        s.learn(urls(&["ws://b/ws", "wss://c/ws"]));
        assert_eq!(s.all(), ["wss://a/ws", "wss://c/ws"]);
    }

    #[test]
    fn learned_nodes_come_in_varied_orders() {
        let orders: std::collections::HashSet<Vec<String>> = (0..50)
            .map(|_| {
                let mut s = Servers::new(urls(&["ws://a/ws"]));
                s.learn(urls(&["ws://b/ws", "ws://c/ws", "ws://d/ws"]));
                s.all().to_vec()
            })
            .collect();
        assert!(orders.len() > 1, "every client would move to the same node");
    }

    #[test]
    fn learned_nodes_are_added_and_a_drain_moves_to_one_of_its_suggestions() {
        let mut s = Servers::new(urls(&["ws://a/ws"]));
        assert!(!s.move_off(&[]), "nowhere else to go");
        s.learn(urls(&["ws://a/ws", "ws://b/ws", "ws://c/ws"]));
        assert_eq!(s.current(), "ws://a/ws");
        assert!(s.move_off(&urls(&["ws://c/ws"])));
        assert_eq!(s.current(), "ws://c/ws");
        assert!(s.move_off(&urls(&["ws://c/ws"])), "not the node we are on");
        assert_ne!(s.current(), "ws://c/ws");
    }
}
