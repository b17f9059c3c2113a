//! The client's two transports, mediasoup-style, over webrtc 0.21.
//!
//! The client offers on both, so glare cannot happen. Negotiations on a transport are
//! serialized and coalesced: while one is in flight, later requests wait, and all the
//! requests that queued up meanwhile are served by one new offer (a later request
//! replaces a queued one). Each offer carries a negotiation id; an answer for another id
//! is refused.

use crate::signaling::Signaling;
use roger_protocol::*;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceConnectionState, RTCIceGatheringState, RTCIceServer,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};

pub use roger_protocol::codec::OPUS_PAYLOAD_TYPE;
/// How long an offer may wait for ICE gathering.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a negotiation may wait for the server's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Opus as Roger negotiates it.
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

/// Transport settings from the client configuration.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    /// UDP bind addresses.
    pub bind: Vec<String>,
    /// ICE servers (from `welcome`).
    pub ice_servers: Vec<IceServer>,
    /// ICE disconnected / failed timeouts and keepalive interval.
    pub ice_disconnected: Duration,
    /// See above.
    pub ice_failed: Duration,
    /// See above.
    pub ice_keepalive: Duration,
    /// Gather only TURN relay candidates (the fallback when UDP paths keep failing).
    pub relay_only: bool,
}

/// One quality sample of a transport.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quality {
    /// Round-trip time of the selected candidate pair.
    pub rtt: Option<Duration>,
    /// Cumulative packets received (inbound RTP) or reported received by the remote.
    pub packets_received: u64,
    /// Cumulative packets lost, same scope.
    pub packets_lost: i64,
}

/// What a transport reports.
pub enum TransportEvent {
    /// PeerConnection state.
    State(Direction, RTCPeerConnectionState),
    /// ICE connection state.
    Ice(Direction, RTCIceConnectionState),
    /// SDP signaling state (`stable`, `have-local-offer`, ...), for diagnostics.
    Signaling(Direction, webrtc::peer_connection::RTCSignalingState),
    /// A remote track (receive transport).
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
    async fn on_signaling_state_change(&self, state: webrtc::peer_connection::RTCSignalingState) {
        let _ = self
            .events
            .send(TransportEvent::Signaling(self.direction, state));
    }
}

/// One offering PeerConnection.
pub struct Transport {
    direction: Direction,
    pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<u64>,
    negotiated_once: std::sync::atomic::AtomicBool,
    lock: tokio::sync::Mutex<()>,
    requested: AtomicU64,
    completed: AtomicU64,
    next_negotiation: AtomicU64,
}

fn internal(what: &str) -> impl Fn(webrtc::error::Error) -> ErrorBody + '_ {
    move |e| ErrorBody::new(ErrorCode::InternalError, format!("{what}: {e}"))
}

impl Transport {
    /// Builds the PeerConnection.
    pub async fn new(
        direction: Direction,
        settings: &TransportSettings,
        events: mpsc::UnboundedSender<TransportEvent>,
    ) -> Result<Arc<Transport>, ErrorBody> {
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: opus_codec(),
                    payload_type: OPUS_PAYLOAD_TYPE,
                },
                RtpCodecKind::Audio,
            )
            .map_err(internal("register opus"))?;
        // RTCP sender/receiver reports only (the quality monitor reads RTT and loss from
        // them). The default set adds NACK, TWCC and simulcast headers: video machinery
        // that only costs CPU on an Opus stream protected by in-band FEC.
        let registry =
            rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports(
                Registry::new(),
            );
        let loopback = settings
            .bind
            .iter()
            .any(|a| a.starts_with("127.") || a.starts_with("[::1]"));
        let se = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_include_loopback_candidate(loopback)
            .with_discard_local_candidates_during_ice_restart(true)
            .with_ice_timeouts(
                Some(settings.ice_disconnected),
                Some(settings.ice_failed),
                Some(settings.ice_keepalive),
            )
            .build();
        let ice_servers = settings
            .ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone(),
                credential: s.credential.clone(),
            })
            .collect();
        let mut config = RTCConfigurationBuilder::new().with_ice_servers(ice_servers);
        if settings.relay_only {
            config = config
                .with_ice_transport_policy(webrtc::peer_connection::RTCIceTransportPolicy::Relay);
        }
        let config = config.build();
        let (gathered_tx, gathered) = watch::channel(0u64);
        let handler = Arc::new(Handler {
            direction,
            events,
            gathered: gathered_tx,
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media)
            .with_setting_engine(se)
            .with_interceptor_registry(registry)
            .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(settings.bind.clone())
            .build()
            .await
            .map_err(internal("peer connection"))?;
        Ok(Arc::new(Transport {
            direction,
            pc: Arc::new(pc),
            gathered,
            negotiated_once: false.into(),
            lock: tokio::sync::Mutex::new(()),
            requested: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            next_negotiation: AtomicU64::new(1),
        }))
    }

    /// The direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The PeerConnection.
    pub fn pc(&self) -> &Arc<dyn PeerConnection> {
        &self.pc
    }

    /// Adds the producer track (send transport).
    pub async fn add_send_track(&self) -> Result<(Arc<TrackLocalStaticRTP>, u32), ErrorBody> {
        let ssrc: u32 = rand::random();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "roger-mic".to_owned(),
            format!("roger-mic-{ssrc:08x}"),
            "microphone".to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: opus_codec(),
                ..Default::default()
            }],
        )));
        self.pc
            .add_transceiver_from_track(
                track.clone() as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await
            .map_err(internal("add send track"))?;
        Ok((track, ssrc))
    }

    /// Adds `recvonly` audio m-lines until there are `slots` of them (receive transport).
    /// Returns whether any were added.
    pub async fn ensure_recv_slots(&self, slots: u32) -> Result<bool, ErrorBody> {
        let slots = crate::server_values::recv_slots(slots);
        let have = self.pc.get_transceivers().await.len() as u32;
        for _ in have..slots {
            self.pc
                .add_transceiver_from_kind(
                    RtpCodecKind::Audio,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(internal("add receive slot"))?;
        }
        Ok(slots > have)
    }

    /// The payload type the send track negotiated (111 unless the server chose another).
    pub async fn send_payload_type(&self) -> u8 {
        for sender in self.pc.get_senders().await {
            if let Ok(p) = sender.get_parameters().await {
                if let Some(c) = p.rtp_parameters.codecs.first() {
                    return c.payload_type;
                }
            }
        }
        OPUS_PAYLOAD_TYPE
    }

    /// Runs one offer/answer exchange (serialized and coalesced; see the module docs).
    pub async fn negotiate(
        &self,
        signaling: &Signaling,
        ice_restart: bool,
    ) -> Result<(), ErrorBody> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = self.lock.lock().await;
        if !ice_restart && self.completed.load(Ordering::SeqCst) >= ticket {
            return Ok(()); // an offer made after our request already covered it
        }
        let covers = self.requested.load(Ordering::SeqCst);
        let negotiation_id = self.next_negotiation.fetch_add(1, Ordering::SeqCst);
        let sdp_err = |what: &str, e: webrtc::error::Error| {
            ErrorBody::new(ErrorCode::SdpNegotiationError, format!("{what}: {e}"))
        };
        if ice_restart {
            self.pc
                .restart_ice()
                .await
                .map_err(|e| sdp_err("restart ICE", e))?;
        }
        let gathers = ice_restart || !self.negotiated_once.load(Ordering::SeqCst);
        let before = *self.gathered.borrow();
        let offer = self
            .pc
            .create_offer(None)
            .await
            .map_err(|e| sdp_err("create offer", e))?;
        self.pc
            .set_local_description(offer)
            .await
            .map_err(|e| sdp_err("apply offer", e))?;
        if gathers {
            let mut rx = self.gathered.clone();
            let done = tokio::time::timeout(GATHER_TIMEOUT, rx.wait_for(|n| *n > before)).await;
            if !matches!(done, Ok(Ok(_))) {
                return Err(ErrorBody::new(
                    ErrorCode::IceGatheringTimeout,
                    format!("ICE gathering took over {GATHER_TIMEOUT:?}"),
                ));
            }
        }
        let sdp = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| ErrorBody::new(ErrorCode::SdpNegotiationError, "no local offer"))?
            .sdp;
        let response = signaling
            .request_with_timeout(
                Request::TransportOffer {
                    direction: self.direction,
                    negotiation_id,
                    sdp,
                    ice_restart,
                },
                ANSWER_TIMEOUT,
            )
            .await?;
        let answer = match response {
            Response::TransportAnswer {
                direction,
                negotiation_id: id,
                sdp,
            } if direction == self.direction && id == negotiation_id => sdp,
            other => {
                return Err(ErrorBody::new(
                    ErrorCode::SdpNegotiationError,
                    format!(
                        "stale or mismatched answer for negotiation {negotiation_id}: {other:?}"
                    ),
                ))
            }
        };
        let answer = RTCSessionDescription::answer(answer).map_err(|e| sdp_err("bad answer", e))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| sdp_err("apply answer", e))?;
        self.negotiated_once.store(true, Ordering::SeqCst);
        self.completed.store(covers, Ordering::SeqCst);
        tracing::debug!(direction = %self.direction, negotiation_id, ice_restart, "negotiated");
        Ok(())
    }

    /// RTT of the selected candidate pair and packet counts, from `get_stats`.
    pub async fn quality(&self) -> Quality {
        use webrtc::peer_connection::{RTCStatsReportEntry as E, StatsSelector};
        let report = self
            .pc
            .get_stats(std::time::Instant::now(), StatsSelector::None)
            .await;
        let selected: Vec<String> = report
            .iter()
            .filter_map(|e| match e {
                E::Transport(t) => Some(t.selected_candidate_pair_id.clone()),
                _ => None,
            })
            .collect();
        let mut q = Quality::default();
        for e in report.iter() {
            match e {
                E::IceCandidatePair(p)
                    if selected.contains(&p.stats.id) && p.current_round_trip_time > 0.0 =>
                {
                    q.rtt = Some(Duration::from_secs_f64(p.current_round_trip_time));
                }
                E::InboundRtp(s) => {
                    q.packets_received += s.received_rtp_stream_stats.packets_received;
                    q.packets_lost += s.received_rtp_stream_stats.packets_lost;
                }
                E::RemoteInboundRtp(s) => {
                    q.packets_received += s.received_rtp_stream_stats.packets_received;
                    q.packets_lost += s.received_rtp_stream_stats.packets_lost;
                }
                _ => {}
            }
        }
        q
    }

    /// Closes the PeerConnection.
    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}
