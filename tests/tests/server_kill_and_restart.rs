//! `kill -9` the server and start it again on the same port: every client is back on
//! its own, rejoined, and audio flows both ways.

use roger_client::{ClientEvent, Status};
use roger_e2e::{Server, TestClient};
use roger_protocol::{ChannelId, ErrorCode};
use std::time::{Duration, Instant};

async fn two_way(alice: &TestClient, bob: &TestClient) {
    let t = Instant::now();
    alice.talk("general", 1.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heard = bob.frames_since(t);
    assert!(heard >= 45, "bob heard {heard} of 50 frames from alice");
    let t = Instant::now();
    bob.talk("general", 1.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heard = alice.frames_since(t);
    assert!(heard >= 45, "alice heard {heard} of 50 frames from bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_comes_back_two_way_after_the_server_is_killed_and_restarted() {
    let mut server = Server::start("");
    let general = ChannelId::from("general");
    let alice = TestClient::connect_as(&server, "alice", &["general"]).await;
    let bob = TestClient::connect_as(&server, "bob", &["general"]).await;
    alice.mgr.join(&general).await.unwrap();
    bob.mgr.join(&general).await.unwrap();
    two_way(&alice, &bob).await;

    server.kill9();
    let killed = Instant::now();
    // Both notice within about 3 s (ping timeout / socket close) and start recovering.
    for c in [&alice, &bob] {
        c.wait_status(Duration::from_secs(4), "not Connected", |s| {
            !matches!(s, Status::Connected)
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    let restarted = Instant::now();
    for c in [&alice, &bob] {
        let at = c
            .wait_status(Duration::from_secs(20), "Connected", |s| {
                matches!(s, Status::Connected)
            })
            .await;
        println!(
            "back {:?} after the restart ({:?} after the kill)",
            at.saturating_duration_since(restarted),
            at - killed
        );
    }
    two_way(&alice, &bob).await;
    // Each client reports the recovery.
    for c in [&alice, &bob] {
        let stats = c.mgr.recovery_stats();
        assert!(stats.reconnect_successes >= 1, "{stats:?}");
        assert!(stats.reconnect_attempts_total >= 1, "{stats:?}");
        assert!(!stats.time_to_recover_ms.is_empty());
    }
    assert_eq!(server.metric("roger_sessions"), 2.0);
    alice.mgr.close().await;
    bob.mgr.close().await;
}

/// A channel that is gone when the server comes back (its config changed across the
/// restart) is reported: an error naming it and `Left`, so a UI stops showing it as
/// joined; the channels that are still there come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_gone_after_a_restart_is_left_and_the_others_come_back() {
    let channels = |ids: &[&str]| {
        ids.iter()
            .map(|id| format!("[[channels]]\nid = \"{id}\"\n"))
            .collect::<String>()
    };
    let mut server = Server::start(&channels(&["general", "ops"]));
    let (general, ops) = (ChannelId::from("general"), ChannelId::from("ops"));
    let alice = TestClient::connect_as(&server, "alice", &["general", "ops"]).await;
    let bob = TestClient::connect_as(&server, "bob", &["general"]).await;
    alice.mgr.join(&general).await.unwrap();
    alice.mgr.join(&ops).await.unwrap();
    bob.mgr.join(&general).await.unwrap();

    server.kill9();
    server.rewrite_config(&channels(&["general"]));
    let killed = Instant::now();
    server.restart();
    alice
        .wait_status(Duration::from_secs(20), "Connected", |s| {
            matches!(s, Status::Connected)
        })
        .await;
    alice
        .wait_event(
            Duration::from_secs(5),
            killed,
            "Left for ops",
            |e| matches!(e, ClientEvent::Left { channel } if *channel == ops),
        )
        .await;
    alice
        .wait_event(Duration::from_secs(5), killed, "ChannelNotFound", |e| {
            matches!(e, ClientEvent::Error { error } if error.code == ErrorCode::ChannelNotFound)
        })
        .await;
    let left_general = alice.events.lock().expect("events").iter().any(|(at, e)| {
        *at > killed && matches!(e, ClientEvent::Left { channel } if *channel == general)
    });
    assert!(!left_general, "general was left");
    // general still carries audio both ways.
    bob.wait_status(Duration::from_secs(20), "Connected", |s| {
        matches!(s, Status::Connected)
    })
    .await;
    two_way(&alice, &bob).await;
    alice.mgr.close().await;
    bob.mgr.close().await;
}
