//! A client cannot inject media into a channel it has not been granted: a hand-built
//! client (real signaling, a real send transport, no floor request) streams RTP while
//! another member listens. Nothing reaches the listener; the server counts the packets
//! as `roger_rtp_dropped_total{reason="no_floor"}`. Then the same client takes the floor
//! in a channel it *was* granted (echo) and streams into it: a listener in general still
//! hears nothing, because media goes only where the floor is held.

use roger_client::protocol::{ChannelId, Request, Response};
use roger_e2e::producer::Producer;
use roger_e2e::{client_config, Server, TestClient};
use std::time::Duration;

/// 50 packets (1 s) at the pace of a real talker.
async fn stream_rtp(mallory: &Producer, first_seq: u16) {
    mallory
        .stream(first_seq, 50, 1, Duration::from_millis(20))
        .await;
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
    let mallory = Producer::connect(
        &url,
        &server.token("mallory", &["general", "echo"]),
        &["general"],
    )
    .await;
    let sig = &mallory.sig;

    // 1. No floor anywhere: 50 packets (1 s) into general.
    let dropped_before = server.metric("roger_rtp_dropped_total{reason=\"no_floor\"}");
    let heard_before = bob.frames();
    stream_rtp(&mallory, 1).await;
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
    stream_rtp(&mallory, 51).await;
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
    stream_rtp(&mallory, 101).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        bob.frames() >= heard_before + 40,
        "with the floor, in a channel bob listens to, the stream reaches him: {} frames",
        bob.frames() - heard_before
    );
    mallory.close().await;
    bob.mgr.close().await;
}
