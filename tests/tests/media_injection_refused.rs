//! A client cannot inject media into a channel it has not been granted: a hand-built
//! client (real signaling, a real send transport, no floor request) streams RTP while
//! another member listens. Nothing reaches the listener; the server counts the packets
//! as `roger_rtp_dropped_total{reason="no_floor"}`. Then the same client takes the floor
//! in a channel it *was* granted (echo) and streams into it: a listener in general still
//! hears nothing, because media goes only where the floor is held.

use roger_client::protocol::{ChannelId, Direction, Request, Response, PROTOCOL_VERSION};
use roger_client::signaling::Signaling;
use roger_client::transport::{Transport, TransportEvent, TransportSettings};
use roger_e2e::{client_config, Server, TestClient};
use std::time::{Duration, Instant};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::RTCPeerConnectionState;

async fn stream_rtp(
    track: &std::sync::Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP>,
    ssrc: u32,
    first_seq: u16,
    n: u16,
) {
    // A valid Opus packet (silence, 20 ms): the server must refuse it for who sent it,
    // not for what it is.
    let mut encoder = roger_client::audio::Encoder::new(24_000, 0).expect("encoder");
    let payload = encoder
        .encode(&[0i16; roger_client::audio::FRAME_SAMPLES])
        .expect("encode");
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..n {
        tick.tick().await;
        let mut p = rtc::rtp::Packet::default();
        p.header.version = 2;
        p.header.payload_type = 111;
        p.header.sequence_number = first_seq.wrapping_add(i);
        p.header.timestamp = u32::from(first_seq.wrapping_add(i)) * 960;
        p.header.ssrc = ssrc;
        p.payload = bytes::Bytes::from(payload.clone());
        track.write_rtp(p).await.expect("write rtp");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_without_the_floor_reaches_nobody_and_is_counted() {
    let server = Server::start("");
    let url = server.url();

    // Bob listens in general.
    let bob = TestClient::connect(client_config(
        &url,
        &server.token("bob", &["general", "echo"]),
    ))
    .await;
    bob.mgr.join(&"general".into()).await.expect("bob joins");

    // Mallory: signaling, hello, join general (allowed), a send transport; no floor.
    let (sig, _events) = Signaling::connect(&url, Duration::from_secs(5))
        .await
        .expect("signaling");
    let welcome = sig
        .request(Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: server.token("mallory", &["general", "echo"]),
            client: "injection test".into(),
        })
        .await
        .expect("hello");
    assert!(matches!(welcome, Response::Welcome(_)), "{welcome:?}");
    let general: ChannelId = "general".into();
    sig.request(Request::Join {
        channel: general.clone(),
    })
    .await
    .expect("join");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let settings = TransportSettings {
        bind: vec!["127.0.0.1:0".into()],
        ice_servers: vec![],
        ice_disconnected: Duration::from_secs(2),
        ice_failed: Duration::from_secs(5),
        ice_keepalive: Duration::from_millis(500),
        relay_only: false,
    };
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

    // 1. No floor anywhere: 50 packets (1 s) into general.
    let dropped_before = server.metric("roger_rtp_dropped_total{reason=\"no_floor\"}");
    let heard_before = bob.frames();
    stream_rtp(&track, ssrc, 1, 50).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bob.frames(), heard_before, "bob heard injected media");
    let dropped = server.metric("roger_rtp_dropped_total{reason=\"no_floor\"}") - dropped_before;
    assert!(
        dropped >= 45.0,
        "the server should count the refused packets as no_floor, counted {dropped}"
    );

    // 2. Floor granted in echo (not general): media goes to echo only.
    let echo: ChannelId = "echo".into();
    sig.request(Request::Join {
        channel: echo.clone(),
    })
    .await
    .expect("join echo");
    let granted = sig
        .request(Request::FloorRequest {
            channel: echo.clone(),
        })
        .await
        .expect("floor request");
    assert!(
        matches!(granted, Response::FloorGranted { .. }),
        "{granted:?}"
    );
    let forwarded_before = server.metric("roger_rtp_forwarded_total");
    stream_rtp(&track, ssrc, 51, 50).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        bob.frames(),
        heard_before,
        "bob (in general) heard media from echo's floor holder"
    );
    assert_eq!(
        server.metric("roger_rtp_forwarded_total"),
        forwarded_before,
        "nobody else is in echo: nothing to forward"
    );

    // 3. The control: with bob in echo too, the same stream reaches him.
    bob.mgr.join(&echo).await.expect("bob joins echo");
    stream_rtp(&track, ssrc, 101, 50).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        bob.frames() >= heard_before + 40,
        "with the floor, in a channel bob listens to, the stream reaches him: {} frames",
        bob.frames() - heard_before
    );
    let _ = sig.request(Request::Bye).await;
    send.close().await;
    bob.mgr.close().await;
}
