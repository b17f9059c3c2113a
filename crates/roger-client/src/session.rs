//! The session API: connect, join, leave, PTT down/up, events.
//!
//! A [`Session`] owns one signaling socket and the two transports. Audio comes from an
//! [`AudioSource`] while this client holds the floor and goes to an [`AudioSink`] as it
//! is received, so the bot can use files and the desktop app devices.

use crate::audio::{level, AudioSink, AudioSource, Decoder, Encoder, FRAME_SAMPLES};
use crate::event::{AudioDirection, ClientEvent, FloorEvent, Status};
use crate::signaling::{Signaling, SignalingEvent, DEFAULT_REQUEST_TIMEOUT};
use crate::transport::{Transport, TransportEvent, TransportSettings};
use roger_protocol::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::RTCPeerConnectionState;

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
    /// How long the first media connection may take.
    pub media_connect_timeout: Duration,
    /// ICE disconnected timeout (no traffic for this long -> `disconnected`).
    pub ice_disconnected: Duration,
    /// ICE failed timeout (counted from `disconnected`).
    pub ice_failed: Duration,
    /// ICE keepalive interval (consent checks even when nobody talks).
    pub ice_keepalive: Duration,
    /// Opus bitrate, bits per second.
    pub opus_bitrate: i32,
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
            media_connect_timeout: Duration::from_secs(10),
            ice_disconnected: Duration::from_secs(2),
            ice_failed: Duration::from_secs(5),
            ice_keepalive: Duration::from_millis(500),
            opus_bitrate: 24_000,
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

/// Counters for tools and the diagnostics view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AudioStats {
    /// Opus frames sent.
    pub frames_sent: u64,
    /// Opus frames received and decoded.
    pub frames_received: u64,
    /// Frames concealed (lost or late).
    pub frames_concealed: u64,
    /// Frames recovered from FEC.
    pub frames_recovered: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    concealed: AtomicU64,
    recovered: AtomicU64,
}

struct Talk {
    channel: ChannelId,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

struct Inner {
    signaling: Signaling,
    welcome: Welcome,
    send: Arc<Transport>,
    recv: Arc<Transport>,
    send_track: Arc<TrackLocalStaticRTP>,
    send_ssrc: u32,
    opus_bitrate: i32,
    events: mpsc::UnboundedSender<ClientEvent>,
    status: watch::Sender<Status>,
    ssrc_channels: Mutex<HashMap<u32, ChannelId>>,
    joined: Mutex<BTreeMap<ChannelId, ChannelState>>,
    talk: Mutex<Option<Talk>>,
    counters: Counters,
    sink: Mutex<Box<dyn AudioSink>>,
    closing: AtomicBool,
}

/// A connected session. Cheap to clone.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("session_id", &self.inner.welcome.session_id)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn emit(&self, ev: ClientEvent) {
        let _ = self.events.send(ev);
    }

    /// The one place the status changes: logs old -> new with the reason and emits an
    /// event only on a real change.
    fn set_status(&self, new: Status, reason: &str) {
        let changed = self.status.send_if_modified(|s| {
            if *s == new {
                return false;
            }
            tracing::info!(old = ?s, new = ?new, reason, "status");
            *s = new.clone();
            true
        });
        if changed {
            self.emit(ClientEvent::Status { status: new });
        }
    }

    fn floor(&self, channel: &ChannelId, floor: FloorEvent) {
        self.emit(ClientEvent::Floor {
            channel: channel.clone(),
            floor,
        });
    }

    /// Stops the talker task, if any, returning its channel.
    fn stop_talking(&self) -> Option<ChannelId> {
        let mut t = self.talk.lock().expect("talk lock").take()?;
        if let Some(stop) = t.stop.take() {
            let _ = stop.send(());
        }
        Some(t.channel)
    }
}

impl Session {
    /// Connects, signs in, and sets up both transports. Received audio goes to `sink`.
    pub async fn connect(
        config: ClientConfig,
        sink: Box<dyn AudioSink>,
    ) -> Result<(Session, mpsc::UnboundedReceiver<ClientEvent>), ErrorBody> {
        let (events, events_rx) = mpsc::unbounded_channel();
        let (status, _) = watch::channel(Status::Offline);
        let report = |status_now: Status| {
            let _ = events.send(ClientEvent::Status { status: status_now });
        };
        report(Status::Connecting);
        let fail = |e: ErrorBody| {
            let _ = events.send(ClientEvent::Error { error: e.clone() });
            let _ = events.send(ClientEvent::Status {
                status: Status::Failed { code: e.code },
            });
            e
        };
        let (signaling, sig_events) =
            Signaling::connect(&config.server_url, config.request_timeout)
                .await
                .map_err(fail)?;
        let welcome = match signaling
            .request(Request::Hello {
                protocol_version: PROTOCOL_VERSION,
                token: config.token.clone(),
                client: config.client_name.clone(),
            })
            .await
        {
            Ok(Response::Welcome(w)) => w,
            Ok(other) => {
                return Err(fail(ErrorBody::new(
                    ErrorCode::MalformedMessage,
                    format!("expected welcome, got {other:?}"),
                )))
            }
            Err(e) => {
                signaling.close();
                return Err(fail(e));
            }
        };
        let _ = events.send(ClientEvent::Welcome {
            user: welcome.user.clone(),
            channels: welcome.channels.clone(),
        });

        let settings = TransportSettings {
            bind: config.bind_addresses(),
            ice_servers: welcome.ice_servers.clone(),
            ice_disconnected: config.ice_disconnected,
            ice_failed: config.ice_failed,
            ice_keepalive: config.ice_keepalive,
        };
        let (tevents, tevents_rx) = mpsc::unbounded_channel();
        let setup = async {
            let send = Transport::new(Direction::Send, &settings, tevents.clone()).await?;
            let recv = Transport::new(Direction::Recv, &settings, tevents.clone()).await?;
            let (send_track, send_ssrc) = send.add_send_track().await?;
            // One receive slot up front, so the first join needs no renegotiation and a
            // late joiner hears the current speaker at once.
            recv.ensure_recv_slots(1).await?;
            let (a, b) = tokio::join!(
                send.negotiate(&signaling, false),
                recv.negotiate(&signaling, false)
            );
            a?;
            b?;
            Ok::<_, ErrorBody>((send, recv, send_track, send_ssrc))
        };
        let (send, recv, send_track, send_ssrc) = match setup.await {
            Ok(v) => v,
            Err(e) => {
                signaling.close();
                return Err(fail(e));
            }
        };
        status.send_replace(Status::Connecting);
        let inner = Arc::new(Inner {
            signaling,
            welcome,
            send,
            recv,
            send_track,
            send_ssrc,
            opus_bitrate: config.opus_bitrate,
            events,
            status,
            ssrc_channels: Mutex::new(HashMap::new()),
            joined: Mutex::new(BTreeMap::new()),
            talk: Mutex::new(None),
            counters: Counters::default(),
            sink: Mutex::new(sink),
            closing: AtomicBool::new(false),
        });
        let session = Session { inner };
        let media_up = session.spawn_transport_events(tevents_rx);
        session.spawn_signaling_events(sig_events);
        session.spawn_ping();
        match tokio::time::timeout(config.media_connect_timeout, media_up).await {
            Ok(Ok(())) => {}
            _ => {
                let e = ErrorBody::new(
                    ErrorCode::IceFailed,
                    format!(
                        "no media path to the server within {:?}",
                        config.media_connect_timeout
                    ),
                );
                session
                    .inner
                    .set_status(Status::Failed { code: e.code }, "media did not connect");
                session.inner.emit(ClientEvent::Error { error: e.clone() });
                session.close().await;
                return Err(e);
            }
        }
        session
            .inner
            .set_status(Status::Connected, "signaling and media up");
        Ok((session, events_rx))
    }

    /// Who the server says we are and what we may join.
    pub fn welcome(&self) -> &Welcome {
        &self.inner.welcome
    }

    /// The current status; `changed()` on the receiver waits for the next one.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.inner.status.subscribe()
    }

    /// Audio counters.
    pub fn stats(&self) -> AudioStats {
        let c = &self.inner.counters;
        AudioStats {
            frames_sent: c.sent.load(Ordering::Relaxed),
            frames_received: c.received.load(Ordering::Relaxed),
            frames_concealed: c.concealed.load(Ordering::Relaxed),
            frames_recovered: c.recovered.load(Ordering::Relaxed),
        }
    }

    /// The signaling handle (tests use it to send raw frames).
    pub fn signaling(&self) -> &Signaling {
        &self.inner.signaling
    }

    /// Joins a channel; audio for it starts arriving at the sink at once.
    pub async fn join(&self, channel: &ChannelId) -> Result<ChannelState, ErrorBody> {
        let state = match self
            .inner
            .signaling
            .request(Request::Join {
                channel: channel.clone(),
            })
            .await?
        {
            Response::Joined { channel } => channel,
            other => return Err(unexpected("joined", other)),
        };
        self.inner
            .ssrc_channels
            .lock()
            .expect("ssrc lock")
            .insert(state.downlink_ssrc, channel.clone());
        self.inner
            .joined
            .lock()
            .expect("joined lock")
            .insert(channel.clone(), state.clone());
        if self.inner.recv.ensure_recv_slots(state.recv_slots).await? {
            self.inner
                .recv
                .negotiate(&self.inner.signaling, false)
                .await?;
        }
        self.inner.emit(ClientEvent::Joined {
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
            .inner
            .signaling
            .request(Request::Leave {
                channel: channel.clone(),
            })
            .await?
        {
            Response::Left { .. } => {}
            other => return Err(unexpected("left", other)),
        }
        if let Some(state) = self
            .inner
            .joined
            .lock()
            .expect("joined lock")
            .remove(channel)
        {
            self.inner
                .ssrc_channels
                .lock()
                .expect("ssrc lock")
                .remove(&state.downlink_ssrc);
        }
        self.inner.emit(ClientEvent::Left {
            channel: channel.clone(),
        });
        Ok(())
    }

    /// The channel this client is talking in, if any.
    pub fn talking_in(&self) -> Option<ChannelId> {
        self.inner
            .talk
            .lock()
            .expect("talk lock")
            .as_ref()
            .map(|t| t.channel.clone())
    }

    /// Presses PTT: requests the floor in `channel` and, if granted, sends what `source`
    /// produces until [`Session::ptt_up`], a revocation, or the source's end (which
    /// releases the floor).
    pub async fn ptt_down(
        &self,
        channel: &ChannelId,
        source: Box<dyn AudioSource>,
    ) -> Result<FloorOutcome, ErrorBody> {
        if self.talking_in().is_some() {
            self.ptt_up().await?;
        }
        let response = self
            .inner
            .signaling
            .request(Request::FloorRequest {
                channel: channel.clone(),
            })
            .await?;
        match response {
            Response::FloorGranted { expires_in_ms, .. } => {
                self.inner
                    .floor(channel, FloorEvent::Granted { expires_in_ms });
                self.start_talker(channel.clone(), source).await?;
                Ok(FloorOutcome::Granted {
                    expires_in: Duration::from_millis(expires_in_ms),
                })
            }
            Response::FloorDenied { holder, .. } => {
                self.inner.floor(
                    channel,
                    FloorEvent::Denied {
                        holder: holder.clone(),
                    },
                );
                Ok(FloorOutcome::Denied { holder })
            }
            other => Err(unexpected("floor_granted or floor_denied", other)),
        }
    }

    /// Releases PTT: stops sending and releases the floor.
    pub async fn ptt_up(&self) -> Result<(), ErrorBody> {
        let Some(channel) = self.inner.stop_talking() else {
            return Ok(());
        };
        release(&self.inner, &channel).await
    }

    /// Talks `source` to its end in one transmission: PTT down, wait, PTT up.
    pub async fn talk(
        &self,
        channel: &ChannelId,
        source: Box<dyn AudioSource>,
    ) -> Result<FloorOutcome, ErrorBody> {
        let outcome = self.ptt_down(channel, source).await?;
        if matches!(outcome, FloorOutcome::Granted { .. }) {
            let done = self
                .inner
                .talk
                .lock()
                .expect("talk lock")
                .as_mut()
                .and_then(|t| t.done.take());
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
        let payload_type = self.inner.send.send_payload_type().await;
        let mut encoder = Encoder::new(self.inner.opus_bitrate, 5)?;
        *self.inner.talk.lock().expect("talk lock") = Some(Talk {
            channel: channel.clone(),
            stop: Some(stop_tx),
            done: Some(done_rx),
        });
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut seq: u16 = rand::random();
            let mut ts: u32 = rand::random();
            let mut first = true;
            let mut n: u64 = 0;
            let ended_by_source = loop {
                let frame = tokio::select! {
                    _ = &mut stop_rx => break false,
                    f = source.next_frame() => f,
                };
                let Some(frame) = frame else { break true };
                let payload = match encoder.encode(&frame) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "encode failed; frame skipped");
                        continue;
                    }
                };
                let mut packet = rtc::rtp::Packet::default();
                packet.header.version = 2;
                packet.header.payload_type = payload_type;
                packet.header.sequence_number = seq;
                packet.header.timestamp = ts;
                packet.header.ssrc = inner.send_ssrc;
                packet.header.marker = first;
                packet.payload = bytes::Bytes::from(payload);
                first = false;
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(FRAME_SAMPLES as u32);
                if inner.send_track.write_rtp(packet).await.is_ok() {
                    inner.counters.sent.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
                if n.is_multiple_of(5) {
                    let (rms, peak) = level(&frame);
                    inner.emit(ClientEvent::AudioLevel {
                        direction: AudioDirection::Tx,
                        channel: channel.clone(),
                        rms,
                        peak,
                    });
                }
            };
            if ended_by_source {
                // The source ran out: release as if PTT went up, unless someone else
                // already stopped this talker.
                let still_ours = {
                    let mut t = inner.talk.lock().expect("talk lock");
                    if t.as_ref().is_some_and(|t| t.channel == channel) {
                        t.take();
                        true
                    } else {
                        false
                    }
                };
                if still_ours {
                    if let Err(e) = release(&inner, &channel).await {
                        tracing::warn!(error = %e, "floor release after the source ended failed");
                    }
                }
            }
            let _ = done_tx.send(());
        });
        Ok(())
    }

    /// Ends the session: stops talking, says `bye`, closes transports and the socket.
    pub async fn close(&self) {
        if self.inner.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(channel) = self.inner.stop_talking() {
            let _ = release(&self.inner, &channel).await;
        }
        let _ = self
            .inner
            .signaling
            .request_with_timeout(Request::Bye, Duration::from_secs(1))
            .await;
        self.inner.signaling.close();
        self.inner.send.close().await;
        self.inner.recv.close().await;
        self.inner.set_status(Status::Offline, "closed by the user");
    }

    /// Handles transport events; the returned receiver fires when the send and receive
    /// transports have both connected once.
    fn spawn_transport_events(
        &self,
        mut rx: mpsc::UnboundedReceiver<TransportEvent>,
    ) -> oneshot::Receiver<()> {
        let (up_tx, up_rx) = oneshot::channel();
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut up_tx = Some(up_tx);
            let (mut send_up, mut recv_up) = (false, false);
            while let Some(ev) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { break };
                match ev {
                    TransportEvent::Track(track) => {
                        tokio::spawn(receive_track(Arc::downgrade(&inner), track));
                    }
                    TransportEvent::State(dir, state) => {
                        tracing::debug!(transport = %dir, %state, "transport state");
                        if state == RTCPeerConnectionState::Connected {
                            match dir {
                                Direction::Send => send_up = true,
                                Direction::Recv => recv_up = true,
                            }
                            if send_up && recv_up {
                                if let Some(tx) = up_tx.take() {
                                    let _ = tx.send(());
                                }
                            }
                        }
                        if matches!(state, RTCPeerConnectionState::Failed)
                            && !inner.closing.load(Ordering::SeqCst)
                        {
                            let e = ErrorBody::new(
                                ErrorCode::IceFailed,
                                format!("the {dir} transport failed"),
                            );
                            inner.emit(ClientEvent::Error { error: e.clone() });
                            inner.set_status(Status::Failed { code: e.code }, "transport failed");
                        }
                    }
                    TransportEvent::Ice(dir, state) => {
                        tracing::debug!(transport = %dir, %state, "ice state");
                    }
                }
            }
        });
        up_rx
    }

    fn spawn_signaling_events(&self, mut rx: mpsc::UnboundedReceiver<SignalingEvent>) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { break };
                match ev {
                    SignalingEvent::Notification(n) => handle_notification(&inner, n),
                    SignalingEvent::Closed(reason) => {
                        if inner.closing.load(Ordering::SeqCst) {
                            break;
                        }
                        let e = reason.unwrap_or_else(|| {
                            ErrorBody::new(
                                ErrorCode::SignalingClosed,
                                "the server closed the connection",
                            )
                        });
                        inner.stop_talking();
                        inner.emit(ClientEvent::Error { error: e.clone() });
                        let code = if e.code == ErrorCode::SignalingClosed
                            && matches!(*inner.status.borrow(), Status::Failed { .. })
                        {
                            // Keep the more specific reason (e.g. SESSION_REPLACED).
                            break;
                        } else {
                            e.code
                        };
                        inner.set_status(Status::Failed { code }, "signaling closed");
                        break;
                    }
                }
            }
        });
    }

    fn spawn_ping(&self) {
        let weak = Arc::downgrade(&self.inner);
        let interval = Duration::from_millis(self.inner.welcome.ping_interval_ms.max(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                if inner.closing.load(Ordering::SeqCst) || !inner.signaling.is_open() {
                    break;
                }
                let sig = inner.signaling.clone();
                drop(inner);
                if let Err(e) = sig.request_with_timeout(Request::Ping, interval * 2).await {
                    if e.code == ErrorCode::SignalingTimeout {
                        tracing::warn!(
                            "server did not answer ping within {:?}: closing the socket",
                            interval * 2
                        );
                        sig.close();
                    }
                    break;
                }
            }
        });
    }
}

async fn release(inner: &Inner, channel: &ChannelId) -> Result<(), ErrorBody> {
    let result = inner
        .signaling
        .request(Request::FloorRelease {
            channel: channel.clone(),
        })
        .await;
    match result {
        Ok(_) => {
            inner.floor(channel, FloorEvent::Released);
            Ok(())
        }
        // Already revoked by the server: nothing left to release.
        Err(e) if e.code == ErrorCode::FloorNotHeld => Ok(()),
        Err(e) => Err(e),
    }
}

fn handle_notification(inner: &Arc<Inner>, n: Notification) {
    match n {
        Notification::MemberJoined { channel, member } => {
            if let Some(s) = inner.joined.lock().expect("joined lock").get_mut(&channel) {
                s.members.push(member.clone());
            }
            inner.emit(ClientEvent::MemberJoined { channel, member });
        }
        Notification::MemberLeft { channel, member } => {
            if let Some(s) = inner.joined.lock().expect("joined lock").get_mut(&channel) {
                s.members.retain(|m| m.user != member.user);
            }
            inner.emit(ClientEvent::MemberLeft { channel, member });
        }
        Notification::FloorTaken {
            channel,
            by,
            expires_in_ms,
        } => {
            if let Some(s) = inner.joined.lock().expect("joined lock").get_mut(&channel) {
                s.floor = FloorState::Taken {
                    holder: by.clone(),
                    expires_in_ms,
                };
            }
            inner.floor(&channel, FloorEvent::Taken { by });
        }
        Notification::FloorIdle { channel } => {
            if let Some(s) = inner.joined.lock().expect("joined lock").get_mut(&channel) {
                s.floor = FloorState::Idle;
            }
            inner.floor(&channel, FloorEvent::Idle);
        }
        Notification::FloorRevoked { channel, reason } => {
            let mut talk = inner.talk.lock().expect("talk lock");
            if talk.as_ref().is_some_and(|t| t.channel == channel) {
                if let Some(mut t) = talk.take() {
                    if let Some(stop) = t.stop.take() {
                        let _ = stop.send(());
                    }
                }
            }
            drop(talk);
            inner.floor(&channel, FloorEvent::Revoked { reason });
        }
        Notification::ServerDraining { reconnect_after_ms } => {
            tracing::info!(reconnect_after_ms, "server is draining");
            inner.emit(ClientEvent::Error {
                error: ErrorBody::new(ErrorCode::ServerDraining, "the server is restarting"),
            });
        }
        Notification::Error(error) => {
            if error.code == ErrorCode::SessionReplaced {
                inner.set_status(Status::Failed { code: error.code }, "session replaced");
            }
            inner.emit(ClientEvent::Error { error });
        }
    }
}

fn unexpected(wanted: &str, got: Response) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::MalformedMessage,
        format!("expected {wanted}, got {got:?}"),
    )
}

struct ChannelDecoder {
    decoder: Decoder,
    last_seq: Option<u16>,
    frames: u64,
}

/// Longest gap concealed frame by frame; a longer one is a pause (a new talk spurt).
const MAX_CONCEAL: u16 = 5;

async fn receive_track(inner: std::sync::Weak<Inner>, track: Arc<dyn TrackRemote>) {
    let mut decoders: HashMap<ChannelId, ChannelDecoder> = HashMap::new();
    let mut last_level = Instant::now();
    while let Some(ev) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(p) = ev else {
            continue;
        };
        let Some(inner) = inner.upgrade() else { break };
        let channel = inner
            .ssrc_channels
            .lock()
            .expect("ssrc lock")
            .get(&p.header.ssrc)
            .cloned();
        let Some(channel) = channel else { continue };
        let d = match decoders.entry(channel.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => match Decoder::new() {
                Ok(decoder) => v.insert(ChannelDecoder {
                    decoder,
                    last_seq: None,
                    frames: 0,
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
            continue; // duplicate or late: playout order is already past it
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
                    Some(f) => (f, &inner.counters.recovered),
                    None => match d.decoder.conceal() {
                        Ok(f) => (f, &inner.counters.concealed),
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
        inner.counters.received.fetch_add(1, Ordering::Relaxed);
        d.frames += 1;
        {
            let mut sink = inner.sink.lock().expect("sink lock");
            for (ts, f) in &frames {
                sink.play(&channel, *ts, f);
            }
        }
        if last_level.elapsed() >= Duration::from_millis(100) {
            last_level = Instant::now();
            if let Some((_, f)) = frames.last() {
                let (rms, peak) = level(f);
                inner.emit(ClientEvent::AudioLevel {
                    direction: AudioDirection::Rx,
                    channel: channel.clone(),
                    rms,
                    peak,
                });
            }
        }
    }
}
