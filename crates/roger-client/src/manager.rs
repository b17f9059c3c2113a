//! [`ConnectionManager`]: the async shell around the recovery machine, and the facade
//! a UI or bot uses.
//!
//! One driver task owns the [`Recovery`] machine. It is a `select!` over one input
//! channel and one sleep until `poll_timeout()`. Everything else (signaling sockets,
//! transports, the network watcher, the quality sampler) only sends tagged events into
//! that channel: webrtc callbacks never block and never decide anything. Each action the
//! machine asks for is performed in its own task whose outcome comes back as an event
//! carrying the generation it was for, so a late outcome of an old socket or transport
//! is ignored by the machine.

use crate::audio::{level, AudioSink, AudioSource, Decoder, Encoder, FRAME_SAMPLES};
use crate::event::{AudioDirection, ClientEvent, FloorEvent, Status};
use crate::outbox::{Kind, Outbox};
use crate::recovery::{Action, Event, Recovery, RecoveryConfig, Telemetry, TransportState};
use crate::signaling::{Signaling, SignalingEvent, DEFAULT_REQUEST_TIMEOUT};
use crate::transport::{Transport, TransportEvent, TransportSettings};
use roger_protocol::*;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::RTCPeerConnectionState;

/// Between the last packet and the floor release: the release travels on the signaling
/// socket and could overtake the last packets on the media path, and the server drops
/// packets from a talker who no longer holds the floor (the last 20 ms of every
/// transmission were lost to that race).
const RELEASE_TAIL: Duration = Duration::from_millis(40);

/// How to reach and talk to a server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port/ws` or `wss://...`.
    pub server_url: String,
    /// A JWT from the server operator (`roger-server token ...`).
    pub token: String,
    /// Shown in server logs.
    pub client_name: String,
    /// UDP bind addresses; `None` picks loopback for a loopback server, else every
    /// interface.
    pub media_bind: Option<Vec<String>>,
    /// How long a request may wait for its response.
    pub request_timeout: Duration,
    /// ICE disconnected timeout (no traffic for this long -> `disconnected`).
    pub ice_disconnected: Duration,
    /// ICE failed timeout (counted from `disconnected`).
    pub ice_failed: Duration,
    /// ICE keepalive interval (consent checks even when nobody talks).
    pub ice_keepalive: Duration,
    /// Opus bitrate, bits per second.
    pub opus_bitrate: i32,
    /// The recovery policy.
    pub recovery: RecoveryConfig,
    /// Watch network interfaces and restart ICE on a change.
    pub watch_network: bool,
    /// How often to sample RTT and loss.
    pub quality_interval: Duration,
    /// Extra CA certificates (PEM) to trust for `wss://`, besides the system's roots:
    /// for a self-hosted server with its own CA. Certificates are always verified.
    pub extra_ca_pem: Option<String>,
    /// Embed the send time in every packet ([`crate::audio::stamp`]), so listeners can
    /// measure latency (load generator, benchmarks). Off by default.
    pub stamp_packets: bool,
}

impl ClientConfig {
    /// A configuration with Roger's defaults.
    pub fn new(server_url: impl Into<String>, token: impl Into<String>) -> Self {
        ClientConfig {
            server_url: server_url.into(),
            token: token.into(),
            client_name: format!("roger-client/{}", env!("CARGO_PKG_VERSION")),
            media_bind: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            // ~2 s to notice a silent path even when nobody talks: consent checks every
            // 500 ms, `disconnected` after 2 s without traffic, `failed` 5 s later.
            ice_disconnected: Duration::from_secs(2),
            ice_failed: Duration::from_secs(5),
            ice_keepalive: Duration::from_millis(500),
            opus_bitrate: 24_000,
            recovery: RecoveryConfig::default(),
            watch_network: true,
            quality_interval: Duration::from_secs(2),
            extra_ca_pem: None,
            stamp_packets: false,
        }
    }

    fn bind_addresses(&self) -> Vec<String> {
        if let Some(b) = &self.media_bind {
            return b.clone();
        }
        let host = url::Url::parse(&self.server_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            vec!["127.0.0.1:0".to_owned()]
        } else {
            vec!["0.0.0.0:0".to_owned()]
        }
    }
}

/// The result of a floor request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FloorOutcome {
    /// Talking; the server ends it after this long at the latest.
    Granted {
        /// Max talk time left.
        expires_in: Duration,
    },
    /// Someone else holds the floor.
    Denied {
        /// Who.
        holder: Member,
    },
}

/// Audio counters for tools and the diagnostics view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct AudioStats {
    /// Opus frames sent.
    pub frames_sent: u64,
    /// Opus frames received (and decoded, when the sink decodes).
    pub frames_received: u64,
    /// Frames concealed (lost or late).
    pub frames_concealed: u64,
    /// Frames recovered from FEC.
    pub frames_recovered: u64,
}

/// Recovery figures (the same ones exported as metrics), for the diagnostics view.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct RecoveryStats {
    /// `reconnect_attempts_total`.
    pub reconnect_attempts_total: u64,
    /// Recovery cycles that succeeded.
    pub reconnect_successes: u64,
    /// Recovery cycles that gave up.
    pub reconnect_failures: u64,
    /// `reconnect_success_rate` (successes / finished cycles; 1.0 before any).
    pub reconnect_success_rate: f64,
    /// `time_to_recover_ms` of the most recent cycles (newest last, at most 50).
    pub time_to_recover_ms: Vec<u64>,
    /// ICE restarts performed.
    pub ice_restarts: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    concealed: AtomicU64,
    recovered: AtomicU64,
    /// Packet loss the encoder's FEC should protect against, in percent (from the
    /// quality monitor; 5 until it has measured).
    loss_percent: std::sync::atomic::AtomicU32,
}

struct Talk {
    channel: ChannelId,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

struct SendSide {
    gen: u64,
    transport: Arc<Transport>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    clock: Arc<Mutex<RtpClock>>,
}

/// Sequence number and timestamp of one send SSRC. They continue across talk spurts:
/// a receiver's SRTP replay window rejects a sequence number that jumps backwards, so
/// restarting at a random value per transmission would silently drop about half of a
/// client's later transmissions.
struct RtpClock {
    seq: u16,
    ts: u32,
    last: Option<Instant>,
}

impl RtpClock {
    fn new() -> RtpClock {
        RtpClock {
            seq: rand::random(),
            ts: rand::random(),
            last: None,
        }
    }

    /// The next packet's `(seq, ts)` at `now`. After a pause the timestamp advances by
    /// the real time elapsed, so the receiver's jitter buffer sees the pause.
    fn next(&mut self, now: Instant) -> (u16, u32) {
        let step = match self.last {
            // Within a spurt frames are paced 20 ms apart: keep the exact step.
            Some(last) if now.saturating_duration_since(last) < Duration::from_millis(60) => {
                FRAME_SAMPLES as u32
            }
            Some(last) => {
                let elapsed = now.saturating_duration_since(last);
                ((elapsed.as_micros() * 48 / 1000) as u32).max(FRAME_SAMPLES as u32)
            }
            None => 0,
        };
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(step);
        self.last = Some(now);
        (self.seq, self.ts)
    }
}

type Reply = oneshot::Sender<Result<Response, ErrorBody>>;

/// Requests that may wait while the signaling socket is down.
const OUTBOX_CAPACITY: usize = 100;
/// A queued push-to-talk request older than this is dropped, not replayed.
const PTT_MAX_AGE: Duration = Duration::from_secs(2);

enum Input {
    Event(Event),
    Close(oneshot::Sender<()>),
}

struct Shared {
    config: ClientConfig,
    inputs: mpsc::UnboundedSender<Input>,
    events: mpsc::UnboundedSender<ClientEvent>,
    status: watch::Sender<Status>,
    /// The socket of the current session, set once `hello`/`resume` succeeded on it.
    signaling: Mutex<Option<(u64, Signaling)>>,
    signaling_local: Mutex<Option<SocketAddr>>,
    welcome: Mutex<Option<Welcome>>,
    resume_token: Mutex<Option<String>>,
    send: Mutex<Option<SendSide>>,
    recv: Mutex<Option<(u64, Arc<Transport>)>>,
    channels: Mutex<BTreeMap<ChannelId, ChannelState>>,
    ssrc_channels: Mutex<HashMap<u32, ChannelId>>,
    talk: Mutex<Option<Talk>>,
    counters: Counters,
    sink: Mutex<Box<dyn AudioSink>>,
    stats: Mutex<RecoveryStats>,
    outbox: Mutex<Outbox<(Request, Reply)>>,
    last_error: Mutex<Option<ErrorBody>>,
    closing: AtomicBool,
}

/// The connection to a Roger server that heals itself. Cheap to clone.
#[derive(Clone)]
pub struct ConnectionManager {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionManager").finish_non_exhaustive()
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

fn unexpected(wanted: &str, got: Response) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::MalformedMessage,
        format!("expected {wanted}, got {got:?}"),
    )
}

impl Shared {
    fn emit(&self, ev: ClientEvent) {
        let _ = self.events.send(ev);
    }

    fn input(&self, ev: Event) {
        let _ = self.inputs.send(Input::Event(ev));
    }

    fn floor(&self, channel: &ChannelId, floor: FloorEvent) {
        self.emit(ClientEvent::Floor {
            channel: channel.clone(),
            floor,
        });
    }

    fn signaling(&self) -> Option<Signaling> {
        lock(&self.signaling).as_ref().map(|(_, s)| s.clone())
    }

    fn stop_talking(&self) -> Option<ChannelId> {
        let mut t = lock(&self.talk).take()?;
        if let Some(stop) = t.stop.take() {
            let _ = stop.send(());
        }
        Some(t.channel)
    }

    /// Sends a request on the current socket, or queues it until the socket is back.
    async fn request(&self, request: Request) -> Result<Response, ErrorBody> {
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
                "not connected, and 100 requests are already waiting",
            ));
        }
        // A PTT request is worth something for 2 s only (then it is dropped, not
        // replayed); anything else may wait out the recovery window.
        let wait = match kind {
            Kind::Ptt => PTT_MAX_AGE + Duration::from_millis(50),
            Kind::Other => self.config.recovery.recovery_window + self.config.request_timeout,
        };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(result)) => result,
            _ => {
                // Answer (and remove) every PTT request that has gone stale, ours too.
                for (_, reply) in lock(&self.outbox).expire(Instant::now()) {
                    let _ = reply.send(Err(ErrorBody::new(
                        ErrorCode::SignalingTimeout,
                        "dropped: a push-to-talk request older than 2 s is not replayed",
                    )));
                }
                Err(ErrorBody::new(
                    ErrorCode::SignalingTimeout,
                    "the server was unreachable for too long",
                ))
            }
        }
    }

    /// Sends what waited for the socket (stale PTT requests are answered, not sent).
    fn flush_outbox(&self, sig: &Signaling) {
        let (send, stale) = lock(&self.outbox).drain(Instant::now());
        for (_, reply) in stale {
            let _ = reply.send(Err(ErrorBody::new(
                ErrorCode::SignalingTimeout,
                "dropped: a push-to-talk request older than 2 s is not replayed",
            )));
        }
        for (request, reply) in send {
            let sig = sig.clone();
            tokio::spawn(async move {
                let _ = reply.send(sig.request(request).await);
            });
        }
    }

    fn record_channel(&self, state: &ChannelState) {
        let mut map = lock(&self.ssrc_channels);
        map.retain(|_, ch| ch != &state.id);
        map.insert(state.downlink_ssrc, state.id.clone());
        lock(&self.channels).insert(state.id.clone(), state.clone());
    }

    /// Undoes [`record_channel`](Self::record_channel): the channel and its ssrc.
    fn forget_channel(&self, id: &ChannelId) -> Option<ChannelState> {
        lock(&self.ssrc_channels).retain(|_, ch| ch != id);
        lock(&self.channels).remove(id)
    }

    fn recv_slots(&self) -> u32 {
        lock(&self.channels)
            .values()
            .map(|c| c.recv_slots)
            .max()
            .unwrap_or(1)
            .max(1)
    }

    fn transport_settings(&self, relay_only: bool) -> TransportSettings {
        let ice_servers = lock(&self.welcome)
            .as_ref()
            .map(|w| w.ice_servers.clone())
            .unwrap_or_default();
        TransportSettings {
            bind: self.config.bind_addresses(),
            ice_servers,
            ice_disconnected: self.config.ice_disconnected,
            ice_failed: self.config.ice_failed,
            ice_keepalive: self.config.ice_keepalive,
            relay_only,
        }
    }
}

impl ConnectionManager {
    /// Connects and waits until signaling and media are up (or the first connection
    /// fails for good). Received audio goes to `sink`. After this returns, the manager
    /// keeps the connection healthy on its own.
    pub async fn connect(
        config: ClientConfig,
        sink: Box<dyn AudioSink>,
    ) -> Result<(ConnectionManager, mpsc::UnboundedReceiver<ClientEvent>), ErrorBody> {
        let (manager, events) = Self::start(config, sink);
        manager.wait_connected().await?;
        Ok((manager, events))
    }

    /// Waits until the connection is up (`Connected` or `Degraded`), or fails with the
    /// error that made it give up.
    pub async fn wait_connected(&self) -> Result<(), ErrorBody> {
        let mut status = self.status();
        loop {
            let s = status.borrow_and_update().clone();
            match s {
                Status::Connected | Status::Degraded { .. } => return Ok(()),
                Status::Failed { code } => {
                    let message = self
                        .last_error()
                        .unwrap_or_else(|| code.user_message().to_owned());
                    return Err(ErrorBody::new(code, message));
                }
                _ => {}
            }
            if status.changed().await.is_err() {
                return Err(ErrorBody::new(
                    ErrorCode::InternalError,
                    "the connection task ended",
                ));
            }
        }
    }

    /// Starts connecting in the background and returns at once; follow
    /// [`ConnectionManager::status`] and the events.
    pub fn start(
        config: ClientConfig,
        sink: Box<dyn AudioSink>,
    ) -> (ConnectionManager, mpsc::UnboundedReceiver<ClientEvent>) {
        let (events, events_rx) = mpsc::unbounded_channel();
        let (inputs, inputs_rx) = mpsc::unbounded_channel();
        let (status, _) = watch::channel(Status::Offline);
        let recovery = config.recovery.clone();
        let shared = Arc::new(Shared {
            outbox: Mutex::new(Outbox::new(OUTBOX_CAPACITY, PTT_MAX_AGE)),
            config,
            inputs,
            events,
            status,
            signaling: Mutex::new(None),
            signaling_local: Mutex::new(None),
            welcome: Mutex::new(None),
            resume_token: Mutex::new(None),
            send: Mutex::new(None),
            recv: Mutex::new(None),
            channels: Mutex::new(BTreeMap::new()),
            ssrc_channels: Mutex::new(HashMap::new()),
            talk: Mutex::new(None),
            counters: Counters {
                loss_percent: std::sync::atomic::AtomicU32::new(5),
                ..Counters::default()
            },
            sink: Mutex::new(sink),
            stats: Mutex::new(RecoveryStats {
                reconnect_success_rate: 1.0,
                ..Default::default()
            }),
            last_error: Mutex::new(None),
            closing: AtomicBool::new(false),
        });
        let machine = Recovery::new(
            recovery,
            Box::new(rand::rngs::StdRng::from_os_rng()),
            (Instant::now(), unix_ms()),
        );
        // The recovery's log lines name their client: one process may run many
        // (`roger-bot load`).
        let span = tracing::info_span!("client", name = %shared.config.client_name);
        tokio::spawn(drive(Arc::downgrade(&shared), machine, inputs_rx).instrument(span));
        if shared.config.watch_network {
            tokio::spawn(crate::netwatch::watch(
                Arc::downgrade(&shared) as Weak<dyn NetSink>
            ));
        }
        tokio::spawn(sample_quality(Arc::downgrade(&shared)));
        shared.input(Event::Start);
        (ConnectionManager { shared }, events_rx)
    }

    /// The message of the last error reported (for a failed first connection).
    fn last_error(&self) -> Option<String> {
        lock(&self.shared.last_error)
            .as_ref()
            .map(|e| e.message.clone())
    }

    /// The current status; `changed()` on the receiver waits for the next one.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.shared.status.subscribe()
    }

    /// Who the server says we are and what we may join (after the first connection).
    pub fn welcome(&self) -> Option<Welcome> {
        lock(&self.shared.welcome).clone()
    }

    /// Audio counters.
    pub fn stats(&self) -> AudioStats {
        let c = &self.shared.counters;
        AudioStats {
            frames_sent: c.sent.load(Ordering::Relaxed),
            frames_received: c.received.load(Ordering::Relaxed),
            frames_concealed: c.concealed.load(Ordering::Relaxed),
            frames_recovered: c.recovered.load(Ordering::Relaxed),
        }
    }

    /// Recovery figures.
    pub fn recovery_stats(&self) -> RecoveryStats {
        lock(&self.shared.stats).clone()
    }

    /// The current signaling socket (tests use it to send raw frames or kill it).
    pub fn signaling(&self) -> Option<Signaling> {
        self.shared.signaling()
    }

    /// Joins a channel; audio for it starts arriving at the sink at once. Joined
    /// channels are rejoined by themselves after a reconnect.
    pub async fn join(&self, channel: &ChannelId) -> Result<ChannelState, ErrorBody> {
        let state = match self
            .shared
            .request(Request::Join {
                channel: channel.clone(),
            })
            .await?
        {
            Response::Joined { channel } => channel,
            other => return Err(unexpected("joined", other)),
        };
        self.shared.record_channel(&state);
        let recv = lock(&self.shared.recv).as_ref().map(|(_, t)| t.clone());
        if let (Some(recv), Some(sig)) = (recv, self.shared.signaling()) {
            if recv.ensure_recv_slots(state.recv_slots).await? {
                recv.negotiate(&sig, false).await?;
            }
        }
        self.shared.emit(ClientEvent::Joined {
            channel: state.clone(),
        });
        Ok(state)
    }

    /// Leaves a channel.
    pub async fn leave(&self, channel: &ChannelId) -> Result<(), ErrorBody> {
        if self.talking_in().as_ref() == Some(channel) {
            self.ptt_up().await?;
        }
        match self
            .shared
            .request(Request::Leave {
                channel: channel.clone(),
            })
            .await
        {
            Ok(Response::Left { .. }) => {}
            // Already out (a leave carried out while its answer was lost): what was asked.
            Err(e) if e.code == ErrorCode::NotInChannel => {}
            Ok(other) => return Err(unexpected("left", other)),
            Err(e) => return Err(e),
        }
        self.shared.forget_channel(channel);
        self.shared.emit(ClientEvent::Left {
            channel: channel.clone(),
        });
        Ok(())
    }

    /// The channel this client is talking in, if any.
    pub fn talking_in(&self) -> Option<ChannelId> {
        lock(&self.shared.talk).as_ref().map(|t| t.channel.clone())
    }

    /// Presses PTT: requests the floor in `channel` and, if granted, sends what `source`
    /// produces until [`ConnectionManager::ptt_up`], a revocation, or the source's end
    /// (which releases the floor). While PTT is held, a reconnect re-acquires the floor.
    pub async fn ptt_down(
        &self,
        channel: &ChannelId,
        source: Box<dyn AudioSource>,
    ) -> Result<FloorOutcome, ErrorBody> {
        if self.talking_in().is_some() {
            self.ptt_up().await?;
        }
        self.shared.input(Event::PttDown(channel.clone()));
        let response = self
            .shared
            .request(Request::FloorRequest {
                channel: channel.clone(),
            })
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                self.shared.input(Event::PttUp);
                return Err(e);
            }
        };
        match response {
            Response::FloorGranted { expires_in_ms, .. } => {
                self.shared
                    .floor(channel, FloorEvent::Granted { expires_in_ms });
                self.start_talker(channel.clone(), source).await?;
                Ok(FloorOutcome::Granted {
                    expires_in: Duration::from_millis(expires_in_ms),
                })
            }
            Response::FloorDenied { holder, .. } => {
                self.shared.input(Event::PttUp);
                self.shared.floor(
                    channel,
                    FloorEvent::Denied {
                        holder: holder.clone(),
                    },
                );
                Ok(FloorOutcome::Denied { holder })
            }
            other => {
                self.shared.input(Event::PttUp);
                Err(unexpected("floor_granted or floor_denied", other))
            }
        }
    }

    /// Releases PTT: stops sending and releases the floor.
    pub async fn ptt_up(&self) -> Result<(), ErrorBody> {
        self.shared.input(Event::PttUp);
        let Some(channel) = self.shared.stop_talking() else {
            return Ok(());
        };
        tokio::time::sleep(RELEASE_TAIL).await;
        release(&self.shared, &channel).await
    }

    /// Talks `source` to its end in one transmission: PTT down, wait, PTT up.
    pub async fn talk(
        &self,
        channel: &ChannelId,
        source: Box<dyn AudioSource>,
    ) -> Result<FloorOutcome, ErrorBody> {
        let outcome = self.ptt_down(channel, source).await?;
        if matches!(outcome, FloorOutcome::Granted { .. }) {
            let done = lock(&self.shared.talk).as_mut().and_then(|t| t.done.take());
            if let Some(done) = done {
                let _ = done.await;
            }
        }
        Ok(outcome)
    }

    async fn start_talker(
        &self,
        channel: ChannelId,
        mut source: Box<dyn AudioSource>,
    ) -> Result<(), ErrorBody> {
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let transport = lock(&self.shared.send)
            .as_ref()
            .map(|s| s.transport.clone());
        let payload_type = match transport {
            Some(t) => t.send_payload_type().await,
            None => crate::transport::OPUS_PAYLOAD_TYPE,
        };
        let mut loss_percent = self.shared.counters.loss_percent.load(Ordering::Relaxed);
        let mut encoder = Encoder::new(self.shared.config.opus_bitrate, loss_percent as i32)?;
        *lock(&self.shared.talk) = Some(Talk {
            channel: channel.clone(),
            stop: Some(stop_tx),
            done: Some(done_rx),
        });
        let shared = self.shared.clone();
        let stamp = shared.config.stamp_packets;
        tokio::spawn(async move {
            let mut first = true;
            let mut n: u64 = 0;
            let ended_by_source = loop {
                let frame = tokio::select! {
                    _ = &mut stop_rx => break false,
                    f = source.next_frame() => f,
                };
                let Some(frame) = frame else { break true };
                let measured = shared.counters.loss_percent.load(Ordering::Relaxed);
                if measured != loss_percent {
                    loss_percent = measured;
                    if let Err(e) = encoder.set_loss_percent(measured as i32) {
                        tracing::debug!(error = %e, "cannot set the encoder's loss percentage");
                    }
                }
                let payload = match encoder.encode(&frame) {
                    Ok(p) if stamp => {
                        crate::audio::stamp::embed(&p, crate::audio::stamp::now_us()).unwrap_or(p)
                    }
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "encode failed; frame skipped");
                        continue;
                    }
                };
                // The send transport may have been recreated: always write to the
                // current one.
                let target = lock(&shared.send)
                    .as_ref()
                    .map(|s| (s.track.clone(), s.ssrc, s.clock.clone()));
                if let Some((track, ssrc, clock)) = target {
                    let (seq, ts) = lock(&clock).next(Instant::now());
                    let mut packet = rtc::rtp::Packet::default();
                    packet.header.version = 2;
                    packet.header.payload_type = payload_type;
                    packet.header.sequence_number = seq;
                    packet.header.timestamp = ts;
                    packet.header.marker = first;
                    packet.header.ssrc = ssrc;
                    packet.payload = bytes::Bytes::from(payload);
                    first = false;
                    if track.write_rtp(packet).await.is_ok() {
                        shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
                // About 25 level readings a second for the UI's meter.
                if n.is_multiple_of(2) {
                    let (rms, peak) = level(&frame);
                    shared.emit(ClientEvent::AudioLevel {
                        direction: AudioDirection::Tx,
                        channel: channel.clone(),
                        rms,
                        peak,
                    });
                }
            };
            if ended_by_source {
                let still_ours = {
                    let mut t = lock(&shared.talk);
                    if t.as_ref().is_some_and(|t| t.channel == channel) {
                        t.take();
                        true
                    } else {
                        false
                    }
                };
                if still_ours {
                    shared.input(Event::PttUp);
                    tokio::time::sleep(RELEASE_TAIL).await;
                    if let Err(e) = release(&shared, &channel).await {
                        tracing::warn!(error = %e, "floor release after the source ended failed");
                    }
                }
            }
            let _ = done_tx.send(());
        });
        Ok(())
    }

    /// Reports a microphone or speaker problem (`MEDIA_DEVICE_ERROR`): it reaches the
    /// event stream as an `Error`, like every other error. The connection is not
    /// affected; the device layer rebuilds the stream when the device is back.
    pub fn report_device_error(&self, error: ErrorBody) {
        self.shared.input(Event::DeviceError(error));
    }

    /// Starts over after `Failed` (the Rejoin button): a fresh session, every channel
    /// joined before rejoined.
    pub fn rejoin(&self) {
        self.shared.closing.store(false, Ordering::SeqCst);
        self.shared.input(Event::Rejoin);
    }

    /// Ends the session: stops talking, says `bye`, closes everything. Nothing
    /// reconnects afterwards.
    pub async fn close(&self) {
        if self.shared.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(channel) = self.shared.stop_talking() {
            let _ = release(&self.shared, &channel).await;
        }
        if let Some(sig) = self.shared.signaling() {
            let _ = sig
                .request_with_timeout(Request::Bye, Duration::from_secs(1))
                .await;
        }
        let (tx, rx) = oneshot::channel();
        if self.shared.inputs.send(Input::Close(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
        }
    }
}

async fn release(shared: &Shared, channel: &ChannelId) -> Result<(), ErrorBody> {
    match shared
        .request(Request::FloorRelease {
            channel: channel.clone(),
        })
        .await
    {
        Ok(_) => {
            shared.floor(channel, FloorEvent::Released);
            Ok(())
        }
        // Already revoked by the server: nothing left to release.
        Err(e) if e.code == ErrorCode::FloorNotHeld => Ok(()),
        Err(e) => Err(e),
    }
}

// ------------------------------------------------------------------ the driver

async fn drive(
    shared: Weak<Shared>,
    mut machine: Recovery,
    mut inputs: mpsc::UnboundedReceiver<Input>,
) {
    let mut cycle_span: Option<tracing::Span> = None;
    loop {
        let deadline = machine.poll_timeout();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let mut closed: Option<oneshot::Sender<()>> = None;
        tokio::select! {
            input = inputs.recv() => match input {
                Some(Input::Event(ev)) => machine.handle_event(Instant::now(), ev),
                Some(Input::Close(done)) => {
                    machine.handle_event(Instant::now(), Event::Close);
                    closed = Some(done);
                }
                None => return,
            },
            _ = sleep => machine.handle_timeout(Instant::now()),
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        while let Some(action) = machine.poll_action() {
            let span = cycle_span.clone().unwrap_or_else(tracing::Span::none);
            let _enter = span.enter();
            perform(&shared, &machine, action, &mut cycle_span);
        }
        if let Some(done) = closed {
            let _ = done.send(());
        }
    }
}

fn perform(
    shared: &Arc<Shared>,
    machine: &Recovery,
    action: Action,
    cycle_span: &mut Option<tracing::Span>,
) {
    match action {
        Action::Status(status) => {
            shared.status.send_replace(status.clone());
            shared.emit(ClientEvent::Status { status });
        }
        Action::Report(error) => {
            *lock(&shared.last_error) = Some(error.clone());
            shared.emit(ClientEvent::Error { error });
        }
        Action::ConnectSignaling { gen, resume } => {
            let next = [
                machine.transport_gen(Direction::Send) + 1,
                machine.transport_gen(Direction::Recv) + 1,
            ];
            tokio::spawn(connect_signaling(shared.clone(), gen, resume, next).in_current_span());
        }
        Action::RestartIce { dir, gen } => {
            let span = tracing::info_span!("ice.restart", transport = %dir);
            tokio::spawn(restart_ice(shared.clone(), dir, gen).instrument(span));
        }
        Action::RecreateTransport {
            dir,
            gen,
            relay_only,
        } => {
            tokio::spawn(
                recreate_transport(shared.clone(), dir, gen, relay_only).in_current_span(),
            );
        }
        Action::RequestFloor { channel } => {
            tokio::spawn(reacquire_floor(shared.clone(), channel).in_current_span());
        }
        Action::CloseAll => {
            shared.stop_talking();
            if let Some((_, sig)) = lock(&shared.signaling).take() {
                sig.close();
            }
            let send = lock(&shared.send).take();
            let recv = lock(&shared.recv).take();
            tokio::spawn(async move {
                if let Some(s) = send {
                    s.transport.close().await;
                }
                if let Some((_, r)) = recv {
                    r.close().await;
                }
            });
            if !shared.closing.load(Ordering::SeqCst) {
                // Give-up: the old session is gone; Rejoin starts a fresh one.
                *lock(&shared.resume_token) = None;
            }
        }
        Action::Telemetry(t) => telemetry(shared, t, cycle_span),
    }
}

fn telemetry(shared: &Shared, t: Telemetry, cycle_span: &mut Option<tracing::Span>) {
    match t {
        Telemetry::CycleStarted { id, why } => {
            *cycle_span = Some(tracing::info_span!("recovery.cycle", cycle = id, why));
        }
        Telemetry::Attempt { attempt, what } => {
            tracing::info!(name: "reconnect.attempt", attempt, what, "reconnect.attempt");
            metrics::counter!("reconnect_attempts_total").increment(1);
            lock(&shared.stats).reconnect_attempts_total += 1;
        }
        Telemetry::Success { time_to_recover } => {
            let ms = time_to_recover.as_millis() as u64;
            tracing::info!(name: "reconnect.success", time_to_recover_ms = ms, "reconnect.success");
            metrics::histogram!("time_to_recover_ms").record(ms as f64);
            let rate = {
                let mut s = lock(&shared.stats);
                s.reconnect_successes += 1;
                s.time_to_recover_ms.push(ms);
                if s.time_to_recover_ms.len() > 50 {
                    s.time_to_recover_ms.remove(0);
                }
                s.reconnect_success_rate = s.reconnect_successes as f64
                    / (s.reconnect_successes + s.reconnect_failures) as f64;
                s.reconnect_success_rate
            };
            metrics::gauge!("reconnect_success_rate").set(rate);
            *cycle_span = None;
            shared.emit(ClientEvent::Recovered {
                time_to_recover_ms: ms,
            });
        }
        Telemetry::Failure { code } => {
            tracing::warn!(name: "reconnect.failure", %code, "reconnect.failure");
            let rate = {
                let mut s = lock(&shared.stats);
                s.reconnect_failures += 1;
                s.reconnect_success_rate = s.reconnect_successes as f64
                    / (s.reconnect_successes + s.reconnect_failures) as f64;
                s.reconnect_success_rate
            };
            metrics::gauge!("reconnect_success_rate").set(rate);
            *cycle_span = None;
        }
        Telemetry::IceRestart { dir } => {
            tracing::info!(name: "ice.restart", transport = %dir, "ice.restart");
            metrics::counter!("ice_restarts_total").increment(1);
            lock(&shared.stats).ice_restarts += 1;
        }
    }
}

// ------------------------------------------------------------------ actions

/// Opens a socket and resumes (or starts) the session. A fresh session rebuilds both
/// transports (generations `next`) and rejoins every channel.
async fn connect_signaling(shared: Arc<Shared>, gen: u64, resume: bool, next: [u64; 2]) {
    if let Some((_, old)) = lock(&shared.signaling).take() {
        old.close();
    }
    let result = async {
        let tls = crate::signaling::tls_config(shared.config.extra_ca_pem.as_deref())?;
        let (sig, events) = Signaling::connect_with(
            &shared.config.server_url,
            shared.config.request_timeout,
            Some(tls),
        )
        .await?;
        *lock(&shared.signaling_local) = sig.local_addr();
        tokio::spawn(pump_signaling(Arc::downgrade(&shared), gen, events).in_current_span());
        let token = lock(&shared.resume_token).clone();
        if let (true, Some(resume_token)) = (resume, token) {
            match sig
                .request(Request::Resume {
                    protocol_version: PROTOCOL_VERSION,
                    resume_token,
                })
                .await
            {
                Ok(Response::Resumed(r)) => {
                    *lock(&shared.resume_token) = Some(r.resume_token.clone());
                    for ch in &r.channels {
                        shared.record_channel(ch);
                    }
                    // A channel the session is no longer in (a `leave` the server carried
                    // out while its answer was lost with the socket): gone here too, or
                    // the app would show it joined and a fresh session would rejoin it.
                    // Before the socket is published: a join flushed from the outbox
                    // may record (and announce) the same channel again right after.
                    let gone: Vec<ChannelId> = lock(&shared.channels)
                        .keys()
                        .filter(|id| !r.channels.iter().any(|c| &c.id == *id))
                        .cloned()
                        .collect();
                    for id in gone {
                        if shared.forget_channel(&id).is_some() {
                            tracing::info!(channel = %id, "not in the resumed session: left");
                            shared.emit(ClientEvent::Left { channel: id });
                        }
                    }
                    if let Some(w) = lock(&shared.welcome).as_mut() {
                        w.ice_servers = r.ice_servers.clone();
                    }
                    *lock(&shared.signaling) = Some((gen, sig.clone()));
                    spawn_ping(&shared, gen, sig.clone(), r.ping_interval_ms);
                    shared.input(Event::SessionUp {
                        gen,
                        resumed: true,
                        server_transports: r.transports,
                    });
                    shared.flush_outbox(&sig);
                    // The channels as they are now: what changed while the socket was
                    // down (a talker who stopped, members who left) was not notified.
                    for channel in r.channels {
                        shared.emit(ClientEvent::Joined { channel });
                    }
                    Ok(())
                }
                Ok(other) => {
                    sig.close();
                    Err(unexpected("resumed", other))
                }
                Err(e) => {
                    sig.close();
                    Err(e)
                }
            }
        } else {
            let welcome = match sig
                .request(Request::Hello {
                    protocol_version: PROTOCOL_VERSION,
                    token: shared.config.token.clone(),
                    client: shared.config.client_name.clone(),
                })
                .await
            {
                Ok(Response::Welcome(w)) => w,
                Ok(other) => {
                    sig.close();
                    return Err(unexpected("welcome", other));
                }
                Err(e) => {
                    sig.close();
                    return Err(e);
                }
            };
            *lock(&shared.resume_token) = Some(welcome.resume_token.clone());
            shared.emit(ClientEvent::Welcome {
                user: welcome.user.clone(),
                channels: welcome.channels.clone(),
            });
            let ping_ms = welcome.ping_interval_ms;
            *lock(&shared.welcome) = Some(welcome);
            *lock(&shared.signaling) = Some((gen, sig.clone()));
            spawn_ping(&shared, gen, sig.clone(), ping_ms);
            // The machine moves to the new transport generations on this event, so it
            // goes first: their state events come after it on the same channel.
            shared.input(Event::SessionUp {
                gen,
                resumed: false,
                server_transports: vec![],
            });
            fresh_media(&shared, &sig, next).await;
            shared.flush_outbox(&sig);
            Ok(())
        }
    }
    .await;
    if let Err(error) = result {
        tracing::info!(gen, %error, "signaling attempt failed");
        *lock(&shared.last_error) = Some(error.clone());
        if lock(&shared.signaling)
            .as_ref()
            .is_some_and(|(g, _)| *g == gen)
        {
            lock(&shared.signaling).take();
        }
        shared.input(Event::SignalingDown { gen, error });
    }
}

/// Builds both transports for a fresh session and rejoins every channel.
async fn fresh_media(shared: &Arc<Shared>, sig: &Signaling, next: [u64; 2]) {
    let channels: Vec<ChannelId> = lock(&shared.channels).keys().cloned().collect();
    lock(&shared.ssrc_channels).clear();
    let mut rejoined = Vec::new();
    for ch in channels {
        match sig
            .request(Request::Join {
                channel: ch.clone(),
            })
            .await
        {
            Ok(Response::Joined { channel }) => {
                shared.record_channel(&channel);
                rejoined.push(channel);
            }
            Ok(other) => tracing::warn!(?other, "unexpected answer to a rejoin"),
            Err(e) => {
                tracing::warn!(channel = %ch, error = %e, "could not rejoin a channel");
                shared.forget_channel(&ch);
                shared.emit(ClientEvent::Error { error: e });
                shared.emit(ClientEvent::Left { channel: ch });
            }
        }
    }
    for (dir, gen) in [(Direction::Send, next[0]), (Direction::Recv, next[1])] {
        let shared = shared.clone();
        tokio::spawn(
            async move {
                if let Err(error) = build_transport(&shared, dir, gen, false).await {
                    shared.input(Event::TransportActionFailed { dir, gen, error });
                }
            }
            .in_current_span(),
        );
    }
    for channel in rejoined {
        shared.emit(ClientEvent::Joined { channel });
    }
}

/// Closes the current transport of `dir`, builds generation `gen`, and negotiates it.
async fn build_transport(
    shared: &Arc<Shared>,
    dir: Direction,
    gen: u64,
    relay_only: bool,
) -> Result<(), ErrorBody> {
    let sig = shared.signaling().ok_or_else(|| {
        ErrorBody::new(ErrorCode::SignalingClosed, "no signaling to negotiate over")
    })?;
    let (tx, rx) = mpsc::unbounded_channel();
    let settings = shared.transport_settings(relay_only);
    let transport = Transport::new(dir, &settings, tx).await?;
    tokio::spawn(pump_transport(Arc::downgrade(shared), dir, gen, rx).in_current_span());
    let old = match dir {
        Direction::Send => {
            let (track, ssrc) = transport.add_send_track().await?;
            lock(&shared.send)
                .replace(SendSide {
                    gen,
                    transport: transport.clone(),
                    track,
                    ssrc,
                    clock: Arc::new(Mutex::new(RtpClock::new())),
                })
                .map(|s| s.transport)
        }
        Direction::Recv => {
            transport.ensure_recv_slots(shared.recv_slots()).await?;
            lock(&shared.recv)
                .replace((gen, transport.clone()))
                .map(|(_, t)| t)
        }
    };
    if let Some(old) = old {
        old.close().await;
    }
    transport.negotiate(&sig, false).await
}

async fn recreate_transport(shared: Arc<Shared>, dir: Direction, gen: u64, relay_only: bool) {
    tracing::info!(transport = %dir, gen, relay_only, "recreating transport");
    if let Err(error) = build_transport(&shared, dir, gen, relay_only).await {
        shared.input(Event::TransportActionFailed { dir, gen, error });
    }
}

/// How long the socket may take to answer the ping that precedes an ICE restart.
const RESTART_PROBE: Duration = Duration::from_millis(600);

async fn restart_ice(shared: Arc<Shared>, dir: Direction, gen: u64) {
    let transport = match dir {
        Direction::Send => lock(&shared.send)
            .as_ref()
            .filter(|s| s.gen == gen)
            .map(|s| s.transport.clone()),
        Direction::Recv => lock(&shared.recv)
            .as_ref()
            .filter(|(g, _)| *g == gen)
            .map(|(_, t)| t.clone()),
    };
    let (Some(transport), Some(sig)) = (transport, shared.signaling()) else {
        return;
    };
    // Setting a restart offer drops the current path until the answer arrives, so an
    // offer into a dead socket would stop ICE from healing by itself when the network
    // returns. Make sure the socket answers first; if it does not, it is dead.
    if let Err(e) = sig.request_with_timeout(Request::Ping, RESTART_PROBE).await {
        tracing::info!(transport = %dir, error = %e, "signaling did not answer before an ICE restart");
        if e.code == ErrorCode::SignalingTimeout {
            sig.abort(ErrorBody::new(
                ErrorCode::SignalingTimeout,
                "the server stopped answering",
            ));
        }
        shared.input(Event::TransportActionFailed { dir, gen, error: e });
        return;
    }
    if let Err(error) = transport.negotiate(&sig, true).await {
        shared.input(Event::TransportActionFailed { dir, gen, error });
    }
}

async fn reacquire_floor(shared: Arc<Shared>, channel: ChannelId) {
    match shared
        .request(Request::FloorRequest {
            channel: channel.clone(),
        })
        .await
    {
        Ok(Response::FloorGranted { expires_in_ms, .. }) => {
            tracing::info!(%channel, "floor re-acquired after reconnect");
            shared.floor(&channel, FloorEvent::Granted { expires_in_ms });
        }
        Ok(Response::FloorDenied { holder, .. }) => {
            shared.stop_talking();
            shared.input(Event::PttUp);
            shared.floor(&channel, FloorEvent::Denied { holder });
        }
        Ok(other) => tracing::warn!(?other, "unexpected answer to a floor re-request"),
        Err(e) => tracing::warn!(error = %e, "floor re-request failed"),
    }
}

// ------------------------------------------------------------------ event pumps

fn spawn_ping(shared: &Arc<Shared>, gen: u64, sig: Signaling, interval_ms: u64) {
    let weak = Arc::downgrade(shared);
    let interval = Duration::from_millis(interval_ms.max(100));
    tokio::spawn(
        async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                if weak.upgrade().is_none() || !sig.is_open() {
                    break;
                }
                // Unanswered within 2 intervals: the path is dead even if TCP has not
                // noticed. Closing the socket reports it (SignalingDown) through the pump.
                if let Err(e) = sig.request_with_timeout(Request::Ping, interval * 2).await {
                    if e.code == ErrorCode::SignalingTimeout {
                        tracing::warn!(
                            gen,
                            "no pong within {:?}: the signaling path is dead",
                            interval * 2
                        );
                        sig.abort(ErrorBody::new(
                            ErrorCode::SignalingTimeout,
                            "the server stopped answering pings",
                        ));
                    }
                    break;
                }
            }
        }
        .in_current_span(),
    );
}

async fn pump_signaling(
    shared: Weak<Shared>,
    gen: u64,
    mut events: mpsc::UnboundedReceiver<SignalingEvent>,
) {
    while let Some(ev) = events.recv().await {
        let Some(shared) = shared.upgrade() else {
            break;
        };
        match ev {
            SignalingEvent::Notification(n) => handle_notification(&shared, n),
            SignalingEvent::Closed(reason) => {
                let current = lock(&shared.signaling).as_ref().map(|(g, _)| *g) == Some(gen);
                if current {
                    lock(&shared.signaling).take();
                }
                if shared.closing.load(Ordering::SeqCst) {
                    break;
                }
                let error = reason.unwrap_or_else(|| {
                    ErrorBody::new(
                        ErrorCode::SignalingClosed,
                        "the server closed the connection",
                    )
                });
                *lock(&shared.last_error) = Some(error.clone());
                shared.input(Event::SignalingDown { gen, error });
                break;
            }
        }
    }
}

fn handle_notification(shared: &Arc<Shared>, n: Notification) {
    match n {
        Notification::MemberJoined { channel, member } => {
            if let Some(s) = lock(&shared.channels).get_mut(&channel) {
                s.members.push(member.clone());
            }
            shared.emit(ClientEvent::MemberJoined { channel, member });
        }
        Notification::MemberLeft { channel, member } => {
            if let Some(s) = lock(&shared.channels).get_mut(&channel) {
                s.members.retain(|m| m.user != member.user);
            }
            shared.emit(ClientEvent::MemberLeft { channel, member });
        }
        Notification::FloorTaken {
            channel,
            by,
            expires_in_ms,
        } => {
            if let Some(s) = lock(&shared.channels).get_mut(&channel) {
                s.floor = FloorState::Taken {
                    holder: by.clone(),
                    expires_in_ms,
                };
            }
            shared.floor(&channel, FloorEvent::Taken { by });
        }
        Notification::FloorIdle { channel } => {
            if let Some(s) = lock(&shared.channels).get_mut(&channel) {
                s.floor = FloorState::Idle;
            }
            shared.floor(&channel, FloorEvent::Idle);
        }
        Notification::FloorRevoked { channel, reason } => {
            let ours = lock(&shared.talk)
                .as_ref()
                .is_some_and(|t| t.channel == channel);
            if ours {
                shared.stop_talking();
                shared.input(Event::PttUp);
            }
            shared.floor(&channel, FloorEvent::Revoked { reason });
        }
        Notification::ServerDraining { reconnect_after_ms } => {
            tracing::info!(reconnect_after_ms, "server is draining");
            shared.input(Event::ServerDraining {
                reconnect_after: Duration::from_millis(reconnect_after_ms),
            });
        }
        Notification::Error(error) => {
            if error.code == ErrorCode::SessionReplaced {
                // Terminal: reported through the machine so it stops reconnecting.
                let gen = lock(&shared.signaling).as_ref().map(|(g, _)| *g);
                if let Some(gen) = gen {
                    shared.input(Event::SignalingDown {
                        gen,
                        error: error.clone(),
                    });
                }
            }
            shared.emit(ClientEvent::Error { error });
        }
    }
}

async fn pump_transport(
    shared: Weak<Shared>,
    dir: Direction,
    gen: u64,
    mut rx: mpsc::UnboundedReceiver<TransportEvent>,
) {
    while let Some(ev) = rx.recv().await {
        let Some(s) = shared.upgrade() else {
            break;
        };
        match ev {
            TransportEvent::Track(track) => {
                tokio::spawn(receive_track(Arc::downgrade(&s), track).in_current_span());
            }
            TransportEvent::State(_, state) => {
                tracing::debug!(transport = %dir, gen, %state, "peer connection state");
                let state = match state {
                    RTCPeerConnectionState::Connected => TransportState::Connected,
                    RTCPeerConnectionState::Disconnected => TransportState::Disconnected,
                    RTCPeerConnectionState::Failed => TransportState::Failed,
                    RTCPeerConnectionState::Closed => TransportState::Closed,
                    _ => continue,
                };
                s.input(Event::Transport { dir, gen, state });
            }
            TransportEvent::Ice(_, state) => {
                tracing::debug!(transport = %dir, gen, %state, "ice connection state");
            }
            TransportEvent::Signaling(_, state) => {
                tracing::debug!(transport = %dir, gen, %state, "sdp signaling state");
            }
        }
    }
}

struct ChannelDecoder {
    decoder: Decoder,
    last_seq: Option<u16>,
}

/// Longest gap concealed frame by frame; a longer one is a pause (a new talk spurt).
const MAX_CONCEAL: u16 = 5;

async fn receive_track(shared: Weak<Shared>, track: Arc<dyn TrackRemote>) {
    let mut decoders: HashMap<ChannelId, ChannelDecoder> = HashMap::new();
    let mut last_level = Instant::now();
    while let Some(ev) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(p) = ev else {
            continue;
        };
        let Some(shared) = shared.upgrade() else {
            break;
        };
        let channel = lock(&shared.ssrc_channels).get(&p.header.ssrc).cloned();
        let Some(channel) = channel else { continue };
        {
            let mut sink = lock(&shared.sink);
            sink.packet(
                &channel,
                p.header.sequence_number,
                p.header.timestamp,
                &p.payload,
            );
            if !sink.decodes() {
                shared.counters.received.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        let d = match decoders.entry(channel.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => match Decoder::new() {
                Ok(decoder) => v.insert(ChannelDecoder {
                    decoder,
                    last_seq: None,
                }),
                Err(e) => {
                    tracing::error!(error = %e, "cannot create decoder");
                    continue;
                }
            },
        };
        let seq = p.header.sequence_number;
        let gap = d.last_seq.map(|l| seq.wrapping_sub(l)).unwrap_or(1);
        if gap == 0 || gap >= 0x8000 {
            continue; // duplicate or late: playout is already past it
        }
        let mut frames: Vec<(u32, Vec<i16>)> = Vec::with_capacity(2);
        if (2..=MAX_CONCEAL).contains(&gap) {
            for k in (1..gap).rev() {
                let ts = p
                    .header
                    .timestamp
                    .wrapping_sub(u32::from(k) * FRAME_SAMPLES as u32);
                let recovered = if k == 1 {
                    d.decoder.decode_fec(&p.payload).ok()
                } else {
                    None
                };
                let (frame, counter) = match recovered {
                    Some(f) => (f, &shared.counters.recovered),
                    None => match d.decoder.conceal() {
                        Ok(f) => (f, &shared.counters.concealed),
                        Err(_) => continue,
                    },
                };
                counter.fetch_add(1, Ordering::Relaxed);
                frames.push((ts, frame));
            }
        }
        d.last_seq = Some(seq);
        match d.decoder.decode(&p.payload) {
            Ok(f) => frames.push((p.header.timestamp, f)),
            Err(e) => {
                tracing::debug!(error = %e, "undecodable packet");
                continue;
            }
        }
        shared.counters.received.fetch_add(1, Ordering::Relaxed);
        {
            let mut sink = lock(&shared.sink);
            for (ts, f) in &frames {
                sink.play(&channel, *ts, f);
            }
        }
        if last_level.elapsed() >= Duration::from_millis(100) {
            last_level = Instant::now();
            if let Some((_, f)) = frames.last() {
                let (rms, peak) = level(f);
                shared.emit(ClientEvent::AudioLevel {
                    direction: AudioDirection::Rx,
                    channel: channel.clone(),
                    rms,
                    peak,
                });
            }
        }
    }
}

// ------------------------------------------------------------------ environment

/// What the network watcher needs from the manager.
pub(crate) trait NetSink: Send + Sync {
    /// Reports a debounced network event.
    fn network_event(&self, ev: Event);
    /// The signaling socket's local address.
    fn signaling_local_addr(&self) -> Option<SocketAddr>;
}

impl NetSink for Shared {
    fn network_event(&self, ev: Event) {
        self.input(ev);
    }
    fn signaling_local_addr(&self) -> Option<SocketAddr> {
        *lock(&self.signaling_local)
    }
}

async fn sample_quality(shared: Weak<Shared>) {
    let interval = match shared.upgrade() {
        Some(s) => s.config.quality_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    let mut last: Option<(u64, i64)> = None;
    loop {
        tick.tick().await;
        let Some(s) = shared.upgrade() else { break };
        let transports: Vec<Arc<Transport>> = [
            lock(&s.send).as_ref().map(|x| x.transport.clone()),
            lock(&s.recv).as_ref().map(|(_, t)| t.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        drop(s);
        let mut rtt: Option<Duration> = None;
        let (mut received, mut lost) = (0u64, 0i64);
        for t in transports {
            let q = t.quality().await;
            rtt = match (rtt, q.rtt) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            received += q.packets_received;
            lost += q.packets_lost;
        }
        // Loss over the period, when enough packets flowed to tell (25 is half a
        // second of audio); otherwise unknown, e.g. while nobody talks.
        // Counters that went backwards were reset (an ICE restart can do that): the
        // period says nothing about loss.
        let loss = last.and_then(|(r0, l0)| {
            if received < r0 || lost < l0 {
                return None;
            }
            let (dr, dl) = ((received - r0) as f64, (lost - l0) as f64);
            (dr + dl >= 25.0).then(|| dl / (dr + dl))
        });
        last = Some((received, lost));
        tracing::debug!(?rtt, ?loss, received, lost, "quality sample");
        let Some(s) = shared.upgrade() else { break };
        if let Some(l) = loss {
            // Opus spends FEC bits on this much loss: what was measured, 1-30 %.
            let percent = ((l * 100.0).ceil() as u32).clamp(1, 30);
            s.counters.loss_percent.store(percent, Ordering::Relaxed);
        }
        s.input(Event::Quality { rtt, loss });
    }
}

use rand::SeedableRng;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_sequence_continues_across_talk_spurts_and_time_advances_with_the_pause() {
        let t0 = Instant::now();
        let mut c = RtpClock::new();
        let (s0, ts0) = c.next(t0);
        let (s1, ts1) = c.next(t0 + Duration::from_millis(20));
        assert_eq!(s1, s0.wrapping_add(1));
        assert_eq!(ts1, ts0.wrapping_add(960));
        // A new transmission 2 s later: the next sequence number, the timestamp 2 s on.
        let (s2, ts2) = c.next(t0 + Duration::from_millis(2020));
        assert_eq!(s2, s1.wrapping_add(1));
        assert_eq!(ts2, ts1.wrapping_add(96_000));
    }
}
