//! One answering PeerConnection per transport, and the SDP helpers it needs.

use super::{opus_codec, MediaSettings, GATHER_TIMEOUT, OPUS_PAYLOAD_TYPE};
use roger_protocol::{Direction, ErrorBody, ErrorCode};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodecParameters, RtpCodecKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceConnectionState, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder,
};

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
    pub(super) remote_fingerprint: Option<String>,
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
        let bind = match &settings.ports {
            Some(range) => range.assign(&settings.bind)?,
            None => settings.bind.clone(),
        };
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
            .with_udp_addrs(bind)
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
}
