//! SFU media: the server side of each client's two transports, and forwarding.
//!
//! - [`Transport`]: one answering PeerConnection (webrtc 0.21). The client always offers;
//!   the server answers with every candidate included (no trickle), so one signaling
//!   round trip sets a transport up.
//! - [`SessionMedia`]: a session's send transport (its microphone producer), receive
//!   transport, and downlink *slots*: one [`Downlink`] track per audio m-line of the
//!   receive transport. Joining a channel assigns it a free slot, or adds one (the client
//!   then renegotiates to receive it).
//! - [`ChannelRouter`]: per channel, the current speaker and the listeners' downlinks.
//!   Only the speaker's packets pass; each downlink rewrites them
//!   ([`crate::rewrite::StreamRewriter`]) into one continuous stream and queues them to
//!   its own writer task, so one slow listener never delays the others.
//!
//! webrtc callbacks only send a tagged event on a channel and return: blocking in a
//! handler stalls that connection's driver.

use crate::rewrite::{SourcePacket, StreamRewriter};
use crate::sync::lock as lock_std;
use roger_protocol::{ChannelId, Direction, ErrorBody, ErrorCode, SessionId};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceConnectionState, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder,
};

pub use roger_protocol::codec::OPUS_PAYLOAD_TYPE;
/// How long an answer may wait for ICE gathering.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// The Opus codec as Roger negotiates it: 48 kHz, in-band FEC on.
pub fn opus_codec() -> RTCRtpCodec {
    use roger_protocol::codec;
    RTCRtpCodec {
        mime_type: codec::OPUS_MIME_TYPE.to_owned(),
        clock_rate: codec::OPUS_CLOCK_RATE,
        channels: codec::OPUS_SDP_CHANNELS,
        sdp_fmtp_line: codec::OPUS_FMTP.to_owned(),
        rtcp_feedback: vec![],
    }
}

/// Media settings shared by every transport of this server.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// UDP bind addresses (`0.0.0.0:0`, `127.0.0.1:0`, ...).
    pub bind: Vec<String>,
    /// Addresses announced instead of the bound ones.
    pub announced_ips: Vec<String>,
    /// A producer's packets per second; more are dropped (and counted).
    pub max_packets_per_second: u32,
    /// A producer's bytes per second; more are dropped (and counted).
    pub max_bytes_per_second: u32,
}

/// What a transport reports to its session.
pub enum TransportEvent {
    /// The PeerConnection's state changed.
    State(Direction, RTCPeerConnectionState),
    /// The ICE connection state changed.
    Ice(Direction, RTCIceConnectionState),
    /// The client's producer track arrived (send transport only).
    Track(Arc<dyn TrackRemote>),
}

struct Handler {
    direction: Direction,
    events: mpsc::UnboundedSender<TransportEvent>,
    gathered: watch::Sender<u64>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_modify(|n| *n += 1);
        }
    }
    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        let _ = self.events.send(TransportEvent::Ice(self.direction, state));
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self
            .events
            .send(TransportEvent::State(self.direction, state));
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(TransportEvent::Track(track));
    }
}

/// One answering PeerConnection.
pub struct Transport {
    direction: Direction,
    pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<u64>,
    remote_ufrag: Option<String>,
    remote_fingerprint: Option<String>,
    last_negotiation: Option<u64>,
}

impl Transport {
    /// Builds a PeerConnection for one direction.
    pub async fn new(
        direction: Direction,
        settings: &MediaSettings,
        events: mpsc::UnboundedSender<TransportEvent>,
    ) -> Result<Transport, ErrorBody> {
        let internal = |e: webrtc::error::Error| {
            ErrorBody::new(ErrorCode::InternalError, format!("transport setup: {e}"))
        };
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: opus_codec(),
                    payload_type: OPUS_PAYLOAD_TYPE,
                },
                RtpCodecKind::Audio,
            )
            .map_err(internal)?;
        // RTCP sender/receiver reports only: clients measure RTT and loss from them. The
        // default set (NACK, TWCC, simulcast headers) is video machinery that walked every
        // forwarded audio packet through extra interceptors (seen in the 1000-listener
        // profile) for nothing: Opus carries its own FEC.
        let registry =
            rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports(
                Registry::new(),
            );
        let loopback = settings
            .bind
            .iter()
            .any(|a| a.starts_with("127.") || a.starts_with("[::1]"));
        let mut se = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_include_loopback_candidate(loopback)
            .with_discard_local_candidates_during_ice_restart(true)
            // Notice a dead path in ~2 s (the defaults take 5 s / 25 s); clients drive
            // recovery, the server only needs to stop sending into the void.
            .with_ice_timeouts(
                Some(Duration::from_secs(2)),
                Some(Duration::from_secs(5)),
                Some(Duration::from_millis(500)),
            );
        if !settings.announced_ips.is_empty() {
            se = se.with_nat_1to1_ips(
                settings.announced_ips.clone(),
                webrtc::peer_connection::RTCIceCandidateType::Host,
            );
        }
        let (gathered_tx, gathered) = watch::channel(0u64);
        let handler = Arc::new(Handler {
            direction,
            events,
            gathered: gathered_tx,
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(se.build())
            .with_interceptor_registry(registry)
            .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(settings.bind.clone())
            .build()
            .await
            .map_err(internal)?;
        metrics::gauge!("roger_peer_connections").increment(1.0);
        Ok(Transport {
            direction,
            pc: Arc::new(pc),
            gathered,
            remote_ufrag: None,
            remote_fingerprint: None,
            last_negotiation: None,
        })
    }

    /// The PeerConnection.
    pub fn pc(&self) -> &Arc<dyn PeerConnection> {
        &self.pc
    }

    /// Applies an offer and returns the answer SDP, all candidates included.
    /// An offer with a negotiation id not above the last one is refused as stale.
    pub async fn answer(&mut self, negotiation_id: u64, sdp: String) -> Result<String, ErrorBody> {
        let sdp_err = |what: &str, e: webrtc::error::Error| {
            ErrorBody::new(ErrorCode::SdpNegotiationError, format!("{what}: {e}"))
        };
        if self
            .last_negotiation
            .is_some_and(|last| negotiation_id <= last)
        {
            metrics::counter!("roger_offers_refused_total", "reason" => "stale").increment(1);
            return Err(ErrorBody::new(
                ErrorCode::SdpNegotiationError,
                format!(
                    "stale negotiation id {negotiation_id} on the {} transport",
                    self.direction
                ),
            ));
        }
        let ufrag = ice_ufrag(&sdp).map(str::to_owned);
        // Gathering runs on the first answer and on every ICE restart (new remote ufrag);
        // a plain renegotiation reuses the candidates already gathered.
        let gathers = self.remote_ufrag.is_none() || ufrag != self.remote_ufrag;
        let before = *self.gathered.borrow();
        let offer = RTCSessionDescription::offer(sdp).map_err(|e| sdp_err("bad offer", e))?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| sdp_err("cannot apply offer", e))?;
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(|e| sdp_err("cannot create answer", e))?;
        self.pc
            .set_local_description(answer)
            .await
            .map_err(|e| sdp_err("cannot apply answer", e))?;
        if gathers {
            let mut rx = self.gathered.clone();
            let done = tokio::time::timeout(GATHER_TIMEOUT, rx.wait_for(|n| *n > before)).await;
            if !matches!(done, Ok(Ok(_))) {
                return Err(ErrorBody::new(
                    ErrorCode::IceGatheringTimeout,
                    format!("server ICE gathering took over {GATHER_TIMEOUT:?}"),
                ));
            }
        }
        self.remote_ufrag = ufrag;
        self.last_negotiation = Some(negotiation_id);
        let local = self.pc.local_description().await.ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::SdpNegotiationError,
                "no local description after answer",
            )
        })?;
        Ok(local.sdp)
    }

    /// Closes the PeerConnection.
    pub async fn close(&self) {
        let _ = self.pc.close().await;
        metrics::gauge!("roger_peer_connections").decrement(1.0);
    }
}

/// `a=ice-ufrag:` of the first media section (or session level) of an SDP.
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
}

/// `a=fingerprint:` of an SDP (identifies the peer's DTLS certificate, so a new
/// PeerConnection).
pub fn dtls_fingerprint(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=fingerprint:"))
}

/// Number of audio m-lines in an SDP.
pub fn audio_mlines(sdp: &str) -> usize {
    sdp.lines().filter(|l| l.starts_with("m=audio")).count()
}

/// Where a downlink's packets go: the slot's current track (tests use a queue).
pub trait DownlinkOut: Send + Sync {
    /// Hands `packet` to the transport without waiting; false if it cannot take it now.
    fn try_write(&self, packet: rtp::Packet) -> bool;
}

/// A slot's local track, replaced (same SSRC) whenever the transport is recreated.
struct SlotTrack(Mutex<Arc<TrackLocalStaticRTP>>);

impl DownlinkOut for SlotTrack {
    fn try_write(&self, packet: rtp::Packet) -> bool {
        use futures_util::FutureExt;
        let track = lock_std(&self.0).clone();
        // `write_rtp` takes an uncontended lock and puts the packet on the PeerConnection
        // driver's queue: ready at once unless that queue is full (a stuck transport).
        // Polling it once here, instead of a task per listener, saves a task wake-up per
        // listener per packet (the 1000-listener profile was dominated by them), and a
        // full queue drops this listener's packet without holding up the others.
        match track.write_rtp(packet).now_or_never() {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::trace!(error = %e, "downlink write failed (not bound yet?)");
                false
            }
            None => false,
        }
    }
}

/// The sending half of one listener's downlink for one slot.
pub struct Downlink {
    /// The SSRC every packet on this downlink carries.
    pub ssrc: u32,
    payload_type: AtomicU8,
    rewriter: Mutex<StreamRewriter>,
    out: Arc<dyn DownlinkOut>,
}

impl Downlink {
    /// Rewrites a speaker's packet into this downlink's stream and sends it. `now` is
    /// when the original arrived.
    fn push(&self, now: Instant, spurt: u64, packet: &rtp::Packet) {
        let out = {
            // Lock held for a few arithmetic operations; nothing awaits under it.
            let mut rw = lock_std(&self.rewriter);
            rw.rewrite(
                now,
                SourcePacket {
                    ssrc: packet.header.ssrc,
                    spurt,
                    seq: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                },
            )
        };
        let Some(out) = out else {
            metrics::counter!("roger_rtp_dropped_total", "reason" => "stale_spurt").increment(1);
            return;
        };
        let mut p = packet.clone();
        p.header.ssrc = self.ssrc;
        p.header.sequence_number = out.seq;
        p.header.timestamp = out.timestamp;
        // The rewriter decides: the first packet of each spurt, whatever the talker set
        // (a stack that marks every packet would make each look like a new spurt).
        p.header.marker = out.marker;
        p.header.payload_type = self.payload_type.load(Ordering::Relaxed);
        // The ingress leg's extension ids mean nothing on the egress leg.
        p.header.extension = false;
        p.header.extensions.clear();
        p.header.extension_profile = 0;
        if self.out.try_write(p) {
            metrics::counter!("roger_rtp_forwarded_total").increment(1);
            // Added delay: from the talker's packet arriving to this copy being on its
            // transport's queue (the fan-out position).
            metrics::histogram!("roger_forward_delay_seconds").record(now.elapsed().as_secs_f64());
        } else {
            metrics::counter!("roger_rtp_dropped_total", "reason" => "downlink_full").increment(1);
        }
    }
}

/// One audio m-line of a session's receive transport.
pub struct Slot {
    index: usize,
    /// The local track answering that m-line on the current PeerConnection (a new one
    /// is made, with the same SSRC, whenever the transport is recreated).
    track: Arc<SlotTrack>,
    /// Its downlink state (SSRC, rewriter, track): kept across transport recreation so
    /// the listener's stream continues.
    pub downlink: Arc<Downlink>,
    /// The channel it carries now, if any.
    pub channel: Option<ChannelId>,
    /// Whether the current track has been added to the PeerConnection yet.
    pub in_pc: bool,
}

fn downlink_track(index: usize, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("roger-downlink-{index}"),
        format!("roger-downlink-{index}-{ssrc:08x}"),
        format!("downlink {index}"),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: opus_codec(),
            ..Default::default()
        }],
    )))
}

impl Slot {
    fn new(index: usize) -> Slot {
        let ssrc: u32 = rand::random();
        let track = Arc::new(SlotTrack(Mutex::new(downlink_track(index, ssrc))));
        Slot {
            index,
            track: track.clone(),
            downlink: Arc::new(Downlink {
                ssrc,
                payload_type: AtomicU8::new(OPUS_PAYLOAD_TYPE),
                rewriter: Mutex::new(StreamRewriter::new(rand::random(), rand::random())),
                out: track,
            }),
            channel: None,
            in_pc: false,
        }
    }

    /// The current track.
    fn current_track(&self) -> Arc<TrackLocalStaticRTP> {
        lock_std(&self.track.0).clone()
    }

    /// A fresh track for a new PeerConnection.
    fn renew_track(&mut self) {
        *lock_std(&self.track.0) = downlink_track(self.index, self.downlink.ssrc);
        self.in_pc = false;
    }
}

/// Per-channel forwarding table.
#[derive(Default)]
pub struct ChannelRouter {
    inner: Mutex<RouterState>,
}

#[derive(Default)]
struct RouterState {
    speaker: Option<SessionId>,
    spurt: u64,
    listeners: HashMap<SessionId, Arc<Downlink>>,
}

impl ChannelRouter {
    /// Sets (or clears) who may send. Each new grant starts a new talk spurt.
    pub fn set_speaker(&self, speaker: Option<SessionId>) {
        let mut s = lock_std(&self.inner);
        if speaker.is_some() {
            s.spurt += 1;
        }
        s.speaker = speaker;
    }

    /// Adds or replaces a listener's downlink.
    pub fn add_listener(&self, session: SessionId, downlink: Arc<Downlink>) {
        let mut s = lock_std(&self.inner);
        s.listeners.insert(session, downlink);
    }

    /// Removes a listener.
    pub fn remove_listener(&self, session: &SessionId) {
        let mut s = lock_std(&self.inner);
        s.listeners.remove(session);
    }

    /// Forwards a packet from `from` to every other listener, if `from` holds the floor.
    /// Returns false when the packet was not from the speaker.
    pub fn forward(&self, now: Instant, from: &SessionId, packet: &rtp::Packet) -> bool {
        let s = lock_std(&self.inner);
        if s.speaker.as_ref() != Some(from) {
            return false;
        }
        for (listener, downlink) in &s.listeners {
            if listener != from {
                downlink.push(now, s.spurt, packet);
            }
        }
        true
    }
}

/// An offer waiting for its transport: its negotiation id, and how to tell it that a
/// newer one superseded it.
type WaitingOffer = (u64, oneshot::Sender<()>);

/// A session's transports and downlink slots.
pub struct SessionMedia {
    session: SessionId,
    settings: MediaSettings,
    events: mpsc::UnboundedSender<TransportEvent>,
    send: tokio::sync::Mutex<Option<Transport>>,
    recv: tokio::sync::Mutex<Option<Transport>>,
    slots: Mutex<Vec<Slot>>,
    /// Where this session's microphone packets go: the router of the channel whose floor
    /// it holds. `None` drops them (a client cannot inject media without the floor).
    route: Mutex<Option<Arc<ChannelRouter>>>,
    received: AtomicU64,
    states: Mutex<[Option<RTCPeerConnectionState>; 2]>,
    /// Receive slots this session may have: the channels its token allows.
    max_slots: usize,
    /// Per transport (send, recv): the offer waiting for the one in flight, if any, by
    /// negotiation id. A newer offer supersedes it, so at most one runs and one waits.
    waiting: [Mutex<Option<WaitingOffer>>; 2],
    /// The producer track in force: a newer track (the client recreated its send
    /// transport) ends the older one's forwarding, so one track per session is forwarded.
    producer_gen: AtomicU64,
}

impl SessionMedia {
    /// Media for a new session. Transport events (state changes, tracks) arrive on the
    /// returned receiver; the owner passes tracks to [`SessionMedia::run_producer`].
    pub fn new(
        session: SessionId,
        settings: MediaSettings,
        max_slots: usize,
    ) -> (Arc<SessionMedia>, mpsc::UnboundedReceiver<TransportEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        (
            Arc::new(SessionMedia {
                session,
                settings,
                events,
                send: tokio::sync::Mutex::new(None),
                recv: tokio::sync::Mutex::new(None),
                slots: Mutex::new(Vec::new()),
                route: Mutex::new(None),
                received: AtomicU64::new(0),
                states: Mutex::new([None, None]),
                max_slots: max_slots.max(1),
                waiting: [Mutex::new(None), Mutex::new(None)],
                producer_gen: AtomicU64::new(0),
            }),
            rx,
        )
    }

    /// Answers an offer on one transport (created on the first offer). One negotiation
    /// runs per transport at a time; of the offers that arrive meanwhile only the newest
    /// waits, the others are answered "superseded" at once.
    pub async fn negotiate(
        &self,
        direction: Direction,
        negotiation_id: u64,
        sdp: String,
    ) -> Result<String, ErrorBody> {
        let mlines = audio_mlines(&sdp);
        let most = match direction {
            Direction::Send => 1,
            Direction::Recv => self.max_slots,
        };
        if mlines > most {
            metrics::counter!("roger_offers_refused_total", "reason" => "too_many_mlines")
                .increment(1);
            return Err(ErrorBody::new(
                ErrorCode::SdpNegotiationError,
                format!(
                    "the offer has {mlines} audio m-lines; a {direction} transport of this session takes at most {most}"
                ),
            ));
        }
        let (lock, waiting) = match direction {
            Direction::Send => (&self.send, &self.waiting[0]),
            Direction::Recv => (&self.recv, &self.waiting[1]),
        };
        let superseded = || {
            metrics::counter!("roger_offers_superseded_total").increment(1);
            ErrorBody::new(
                ErrorCode::SdpNegotiationError,
                format!("offer {negotiation_id} was superseded by a newer offer on the {direction} transport"),
            )
        };
        let (cancel_tx, cancel_rx) = oneshot::channel();
        {
            // The newest offer (by negotiation id) is the one that waits.
            let mut w = lock_std(waiting);
            if w.as_ref().is_some_and(|(id, _)| *id > negotiation_id) {
                return Err(superseded());
            }
            if let Some((_, older)) = w.replace((negotiation_id, cancel_tx)) {
                let _ = older.send(());
            }
        }
        let mut guard = tokio::select! {
            g = lock.lock() => g,
            _ = cancel_rx => return Err(superseded()),
        };
        {
            let mut w = lock_std(waiting);
            if w.as_ref().is_some_and(|(id, _)| *id == negotiation_id) {
                w.take();
            }
        }
        // An offer from a new client PeerConnection (new DTLS certificate) replaces the
        // old server side: the client recreated its transport.
        let fingerprint = dtls_fingerprint(&sdp).map(str::to_owned);
        if let Some(old) = guard.as_ref() {
            if fingerprint.is_some() && old.remote_fingerprint != fingerprint {
                tracing::info!(session = %self.session, %direction, "client recreated its transport: replacing ours");
                metrics::counter!("roger_transports_recreated_total").increment(1);
                if let Some(old) = guard.take() {
                    old.close().await;
                }
                if direction == Direction::Recv {
                    for slot in lock_std(&self.slots).iter_mut() {
                        slot.renew_track();
                    }
                }
            }
        }
        if guard.is_none() {
            let mut t = Transport::new(direction, &self.settings, self.events.clone()).await?;
            t.remote_fingerprint = fingerprint;
            *guard = Some(t);
        }
        let transport = guard.as_mut().expect("created above");
        if direction == Direction::Recv {
            self.attach_slots(transport.pc(), mlines).await?;
        }
        let answer = transport.answer(negotiation_id, sdp).await?;
        if direction == Direction::Recv {
            self.learn_payload_types(transport.pc()).await;
        }
        Ok(answer)
    }

    /// Makes sure every offered audio m-line has a slot and every slot's track is on the
    /// PeerConnection before the offer is applied, so each new m-line is answered by one.
    async fn attach_slots(
        &self,
        pc: &Arc<dyn PeerConnection>,
        mlines: usize,
    ) -> Result<(), ErrorBody> {
        let to_add: Vec<Arc<TrackLocalStaticRTP>> = {
            let mut slots = lock_std(&self.slots);
            while slots.len() < mlines {
                let index = slots.len();
                slots.push(Slot::new(index));
            }
            slots
                .iter_mut()
                .filter(|s| !s.in_pc)
                .map(|s| {
                    s.in_pc = true;
                    s.current_track()
                })
                .collect()
        };
        for track in to_add {
            pc.add_track(track as Arc<dyn TrackLocal>)
                .await
                .map_err(|e| {
                    ErrorBody::new(
                        ErrorCode::SdpNegotiationError,
                        format!("add downlink track: {e}"),
                    )
                })?;
        }
        Ok(())
    }

    /// Reads the payload type each downlink negotiated (a third-party client may not use
    /// 111); packets with the wrong type would be dropped silently by the sender.
    async fn learn_payload_types(&self, pc: &Arc<dyn PeerConnection>) {
        for sender in pc.get_senders().await {
            let Ok(params) = sender.get_parameters().await else {
                continue;
            };
            let Some(codec) = params.rtp_parameters.codecs.first() else {
                continue;
            };
            let ssrcs: Vec<u32> = params
                .encodings
                .iter()
                .filter_map(|e| e.rtp_coding_parameters.ssrc)
                .collect();
            let slots = lock_std(&self.slots);
            for slot in slots.iter().filter(|s| ssrcs.contains(&s.downlink.ssrc)) {
                slot.downlink
                    .payload_type
                    .store(codec.payload_type, Ordering::Relaxed);
            }
        }
    }

    /// Assigns `channel` a downlink slot (reusing a free one). Returns the slot's SSRC and
    /// the number of slots the client's receive transport must offer.
    pub fn assign_slot(&self, channel: &ChannelId) -> (Arc<Downlink>, u32) {
        let mut slots = lock_std(&self.slots);
        let index = match slots
            .iter()
            .position(|s| s.channel.as_ref() == Some(channel))
        {
            Some(i) => i,
            None => match slots.iter().position(|s| s.channel.is_none()) {
                Some(i) => i,
                None => {
                    let i = slots.len();
                    slots.push(Slot::new(i));
                    i
                }
            },
        };
        slots[index].channel = Some(channel.clone());
        (slots[index].downlink.clone(), slots.len() as u32)
    }

    /// Frees the slot of `channel`.
    pub fn release_slot(&self, channel: &ChannelId) {
        let mut slots = lock_std(&self.slots);
        for s in slots
            .iter_mut()
            .filter(|s| s.channel.as_ref() == Some(channel))
        {
            s.channel = None;
        }
    }

    /// The number of slots.
    pub fn slot_count(&self) -> u32 {
        lock_std(&self.slots).len() as u32
    }

    /// Routes this session's microphone to `router` (floor granted) or nowhere.
    pub fn set_route(&self, router: Option<Arc<ChannelRouter>>) {
        *lock_std(&self.route) = router;
    }

    /// Which transports exist.
    pub async fn transports(&self) -> Vec<Direction> {
        let mut v = Vec::new();
        if self.send.lock().await.is_some() {
            v.push(Direction::Send);
        }
        if self.recv.lock().await.is_some() {
            v.push(Direction::Recv);
        }
        v
    }

    /// Records a transport's state (for the health check).
    pub fn set_state(&self, direction: Direction, state: RTCPeerConnectionState) {
        let i = match direction {
            Direction::Send => 0,
            Direction::Recv => 1,
        };
        lock_std(&self.states)[i] = Some(state);
    }

    /// Whether any transport is in `failed`.
    pub fn any_failed(&self) -> bool {
        lock_std(&self.states).contains(&Some(RTCPeerConnectionState::Failed))
    }

    /// Packets received from this session's producer.
    pub fn packets_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Reads the client's producer track and forwards what the floor and the producer
    /// limits allow. A newer track of the same session ends this one.
    pub async fn run_producer(self: Arc<Self>, track: Arc<dyn TrackRemote>) {
        let gen = self.producer_gen.fetch_add(1, Ordering::AcqRel) + 1;
        if gen > 1 {
            metrics::counter!("roger_producer_tracks_replaced_total").increment(1);
        }
        let mut limit = crate::limits::ProducerLimit::new(
            Instant::now(),
            self.settings.max_packets_per_second,
            self.settings.max_bytes_per_second,
        );
        while let Some(event) = track.poll().await {
            if self.producer_gen.load(Ordering::Acquire) != gen {
                tracing::debug!(session = %self.session, "a newer producer track took over");
                break;
            }
            if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                self.received.fetch_add(1, Ordering::Relaxed);
                if let Err(over) = limit.check(Instant::now(), packet.payload.len()) {
                    let reason = match over {
                        crate::limits::OverLimit::Packets => "packet_rate",
                        crate::limits::OverLimit::Bytes => "byte_rate",
                    };
                    metrics::counter!("roger_rtp_dropped_total", "reason" => reason).increment(1);
                    continue;
                }
                let router = lock_std(&self.route).clone();
                let forwarded = router
                    .map(|r| r.forward(Instant::now(), &self.session, &packet))
                    .unwrap_or(false);
                if !forwarded {
                    metrics::counter!("roger_rtp_dropped_total", "reason" => "no_floor")
                        .increment(1);
                }
            }
        }
    }

    /// Closes both transports.
    pub async fn close(&self) {
        self.set_route(None);
        if let Some(t) = self.send.lock().await.take() {
            t.close().await;
        }
        if let Some(t) = self.recv.lock().await.take() {
            t.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_helpers_read_ufrag_and_count_audio_lines() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:abcd\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert_eq!(ice_ufrag(sdp), Some("abcd"));
        assert_eq!(audio_mlines(sdp), 2);
        assert_eq!(ice_ufrag("v=0\r\n"), None);
    }

    fn packet(ssrc: u32, seq: u16, ts: u32) -> rtp::Packet {
        let mut p = rtp::Packet::default();
        p.header.ssrc = ssrc;
        p.header.sequence_number = seq;
        p.header.timestamp = ts;
        p.header.payload_type = 96;
        p.header.extension = true;
        p.payload = bytes::Bytes::from_static(b"opus");
        p
    }

    struct Queue(mpsc::Sender<rtp::Packet>);
    impl DownlinkOut for Queue {
        fn try_write(&self, packet: rtp::Packet) -> bool {
            self.0.try_send(packet).is_ok()
        }
    }

    fn downlink(ssrc: u32) -> (Arc<Downlink>, mpsc::Receiver<rtp::Packet>) {
        let (queue, rx) = mpsc::channel(8);
        (
            Arc::new(Downlink {
                ssrc,
                payload_type: AtomicU8::new(111),
                rewriter: Mutex::new(StreamRewriter::new(1000, 0)),
                out: Arc::new(Queue(queue)),
            }),
            rx,
        )
    }

    #[test]
    fn only_the_speakers_packets_reach_the_other_listeners_rewritten() {
        let router = ChannelRouter::default();
        let (alice, bob) = (SessionId::from("alice"), SessionId::from("bob"));
        let (dl_a, mut rx_a) = downlink(0xAAAA);
        let (dl_b, mut rx_b) = downlink(0xBBBB);
        router.add_listener(alice.clone(), dl_a);
        router.add_listener(bob.clone(), dl_b);
        let now = Instant::now();
        // Nobody holds the floor: nothing passes.
        assert!(!router.forward(now, &alice, &packet(1, 5, 0)));
        router.set_speaker(Some(alice.clone()));
        // Bob does not hold the floor: his packets are dropped.
        assert!(!router.forward(now, &bob, &packet(2, 5, 0)));
        assert!(router.forward(now, &alice, &packet(1, 5, 0)));
        let p = rx_b.try_recv().unwrap();
        assert_eq!(p.header.ssrc, 0xBBBB);
        assert_eq!(p.header.sequence_number, 1000);
        assert_eq!(p.header.payload_type, 111);
        assert!(p.header.marker);
        assert!(!p.header.extension);
        assert_eq!(&p.payload[..], b"opus");
        // The speaker does not hear itself.
        assert!(rx_a.try_recv().is_err());
    }

    #[test]
    fn a_talker_that_marks_every_packet_is_marked_on_the_first_of_each_spurt_only() {
        let router = ChannelRouter::default();
        let alice = SessionId::from("alice");
        let (dl, mut rx) = downlink(7);
        router.add_listener("bob".into(), dl);
        let mut marks = Vec::new();
        for spurt in 0..2u16 {
            router.set_speaker(Some(alice.clone()));
            for k in 0..3u16 {
                let seq = spurt * 10 + k;
                let mut p = packet(1, seq, u32::from(seq) * 960);
                p.header.marker = true;
                assert!(router.forward(Instant::now(), &alice, &p));
                marks.push(rx.try_recv().unwrap().header.marker);
            }
            router.set_speaker(None);
        }
        assert_eq!(marks, [true, false, false, true, false, false]);
    }

    #[test]
    fn a_full_downlink_drops_instead_of_blocking_the_others() {
        let router = ChannelRouter::default();
        let alice = SessionId::from("alice");
        let (dl, mut rx) = downlink(1);
        router.add_listener("bob".into(), dl);
        router.set_speaker(Some(alice.clone()));
        for seq in 0..20 {
            router.forward(
                Instant::now(),
                &alice,
                &packet(1, seq, u32::from(seq) * 960),
            );
        }
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 8);
    }
}
