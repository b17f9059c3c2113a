//! A hand-built client: real signaling and a real send transport, driven packet by
//! packet, for tests of what the server does with a producer that breaks the rules.

use roger_client::protocol::{Direction, Request, Response, PROTOCOL_VERSION};
use roger_client::signaling::Signaling;
use roger_client::transport::{Transport, TransportEvent, TransportSettings};
use std::sync::Arc;
use std::time::{Duration, Instant};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::RTCPeerConnectionState;

/// Transport settings for tests: loopback only, the client's ICE timeouts.
pub fn loopback_settings() -> TransportSettings {
    TransportSettings {
        bind: vec!["127.0.0.1:0".into()],
        ice_servers: vec![],
        ice_disconnected: Duration::from_secs(2),
        ice_failed: Duration::from_secs(5),
        ice_keepalive: Duration::from_millis(500),
        relay_only: false,
    }
}

/// Signaling at `url` with `hello` done (as `client`) and `channels` joined.
pub async fn sign_in(url: &str, token: &str, channels: &[&str], client: &str) -> Signaling {
    let (sig, _events) = Signaling::connect(url, Duration::from_secs(5))
        .await
        .expect("signaling");
    let welcome = sig
        .request(Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: token.to_owned(),
            client: client.to_owned(),
        })
        .await
        .expect("hello");
    assert!(matches!(welcome, Response::Welcome(_)), "{welcome:?}");
    for ch in channels {
        sig.request(Request::Join {
            channel: (*ch).into(),
        })
        .await
        .expect("join");
    }
    sig
}

/// A signed-in session with a connected send transport.
pub struct Producer {
    /// Its signaling.
    pub sig: Signaling,
    /// Its send transport.
    pub send: Arc<Transport>,
    /// The track it writes RTP into.
    pub track: Arc<TrackLocalStaticRTP>,
    /// The track's SSRC.
    pub ssrc: u32,
    payload: Vec<u8>,
}

impl Producer {
    /// Signs in at `url` with `token`, joins `channels`, and connects a send transport.
    pub async fn connect(url: &str, token: &str, channels: &[&str]) -> Producer {
        let sig = sign_in(url, token, channels, "hand-built producer").await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let settings = loopback_settings();
        let send = Transport::new(Direction::Send, &settings, tx)
            .await
            .expect("transport");
        let (track, ssrc) = send.add_send_track().await.expect("track");
        send.negotiate(&sig, false).await.expect("negotiate");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ev = tokio::time::timeout_at(deadline.into(), rx.recv())
                .await
                .expect("send transport connects within 10 s")
                .expect("events");
            if let TransportEvent::State(_, RTCPeerConnectionState::Connected) = ev {
                break;
            }
        }
        // A valid Opus packet (silence, 20 ms): the server must judge a packet by who
        // sent it and how often, not by what it is.
        let mut encoder = roger_client::audio::Encoder::new(24_000, 0).expect("encoder");
        let payload = encoder
            .encode(&[0i16; roger_client::audio::FRAME_SAMPLES])
            .expect("encode");
        Producer {
            sig,
            send,
            track,
            ssrc,
            payload,
        }
    }

    /// Writes `n` packets from sequence number `first_seq`, `per_tick` every `tick`.
    pub async fn stream(&self, first_seq: u16, n: u16, per_tick: u16, tick: Duration) {
        self.stream_marked(first_seq, n, per_tick, tick, false)
            .await
    }

    /// [`Producer::stream`], with the RTP marker bit set on every packet when `marker`
    /// (as some third-party stacks do).
    pub async fn stream_marked(
        &self,
        first_seq: u16,
        n: u16,
        per_tick: u16,
        tick: Duration,
        marker: bool,
    ) {
        let mut timer = tokio::time::interval(tick);
        let mut i = 0u16;
        while i < n {
            timer.tick().await;
            for _ in 0..per_tick.min(n - i) {
                let mut p = rtc::rtp::Packet::default();
                p.header.version = 2;
                p.header.payload_type = 111;
                p.header.sequence_number = first_seq.wrapping_add(i);
                p.header.timestamp = u32::from(first_seq.wrapping_add(i)) * 960;
                p.header.ssrc = self.ssrc;
                p.header.marker = marker;
                p.payload = bytes::Bytes::from(self.payload.clone());
                self.track.write_rtp(p).await.expect("write rtp");
                i += 1;
            }
        }
    }

    /// Says bye and closes the transport.
    pub async fn close(self) {
        let _ = self.sig.request(Request::Bye).await;
        self.send.close().await;
    }
}

/// A signed-in session with a connected receive transport of one slot, recording the
/// RTP headers it receives (sequence number, marker bit).
pub struct RawListener {
    /// Its signaling.
    pub sig: Signaling,
    recv: Arc<Transport>,
    /// (sequence number, marker) of each packet received, in order.
    pub packets: Arc<std::sync::Mutex<Vec<(u16, bool)>>>,
}

impl RawListener {
    /// Signs in, joins `channel`, and connects a receive transport.
    pub async fn connect(url: &str, token: &str, channel: &str) -> RawListener {
        let sig = sign_in(url, token, &[channel], "hand-built listener").await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let settings = loopback_settings();
        let recv = Transport::new(Direction::Recv, &settings, tx)
            .await
            .expect("transport");
        recv.ensure_recv_slots(1).await.expect("slot");
        recv.negotiate(&sig, false).await.expect("negotiate");
        let packets = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = packets.clone();
        tokio::spawn(async move {
            use webrtc::media_stream::track_remote::TrackRemoteEvent;
            while let Some(ev) = rx.recv().await {
                if let TransportEvent::Track(track) = ev {
                    let sink = sink.clone();
                    tokio::spawn(async move {
                        while let Some(ev) = track.poll().await {
                            if let TrackRemoteEvent::OnRtpPacket(p) = ev {
                                sink.lock()
                                    .expect("packets")
                                    .push((p.header.sequence_number, p.header.marker));
                            }
                        }
                    });
                }
            }
        });
        RawListener { sig, recv, packets }
    }

    /// Says bye and closes the transport.
    pub async fn close(self) {
        let _ = self.sig.request(Request::Bye).await;
        self.recv.close().await;
    }
}
