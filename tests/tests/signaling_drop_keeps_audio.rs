//! Killing only the WebSocket: the session resumes and the audio never stops, not even
//! for the talker who holds the floor through it.

use roger_client::Status;
use roger_e2e::{client_config, noise_source, Server, TcpProxy, TestClient};
use roger_protocol::ChannelId;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_websocket_resumes_and_the_talkers_audio_never_stops() {
    let server = Server::start("");
    let proxy = TcpProxy::start(server.addr);
    let general = ChannelId::from("general");
    let bob = TestClient::connect_as(&server, "bob", &["general"]).await;
    bob.mgr.join(&general).await.unwrap();
    // Alice's signaling goes through the proxy; her media goes straight to the server.
    let alice = TestClient::connect(client_config(
        &proxy.url(),
        &server.token("alice", &["general"]),
    ))
    .await;
    alice.mgr.join(&general).await.unwrap();

    let talk = {
        let mgr = alice.mgr.clone();
        let general = general.clone();
        tokio::spawn(async move { mgr.talk(&general, Box::new(noise_source(6.0))).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cut_at = Instant::now();
    assert_eq!(proxy.cut(), 1, "alice's one signaling socket");
    // Alice notices at once (the socket closed) and says so honestly: media still flows.
    alice
        .wait_status(Duration::from_secs(2), "Degraded", |s| {
            matches!(s, Status::Degraded { .. })
        })
        .await;
    let back = alice
        .wait_status(Duration::from_secs(5), "Connected", |s| {
            matches!(s, Status::Connected)
        })
        .await;
    println!("signaling resumed {:?} after the cut", back - cut_at);
    assert!(back - cut_at < Duration::from_secs(3));
    let outcome = talk.await.unwrap().unwrap();
    assert!(matches!(
        outcome,
        roger_client::FloorOutcome::Granted { .. }
    ));
    let done = Instant::now();

    // Bob heard the whole transmission, without a gap around the cut.
    let frames = bob.frames();
    assert!(frames >= 295, "bob heard {frames} of 300 frames");
    let gap = bob.longest_gap(
        cut_at - Duration::from_secs(1),
        done - Duration::from_millis(200),
    );
    println!("longest gap at bob around the cut: {gap:?}");
    assert!(
        gap < Duration::from_millis(200),
        "audio stopped for {gap:?}"
    );
    // It never looked like a reconnect of the media.
    let statuses = alice.statuses.lock().unwrap().clone();
    assert!(
        !statuses
            .iter()
            .any(|(_, s)| matches!(s, Status::Reconnecting { .. } | Status::Failed { .. })),
        "{statuses:#?}"
    );
    assert!(server.metric("roger_sessions_resumed_total") >= 1.0);
    // The resume told Alice's app the channel as it is now: hers, with her talking.
    let rejoined = alice.events.lock().unwrap().iter().any(|(at, ev)| {
        *at > cut_at
            && matches!(
                ev,
                roger_client::ClientEvent::Joined { channel }
                    if channel.id == general
                        && matches!(&channel.floor, roger_protocol::FloorState::Taken { holder, .. }
                            if holder.name == "alice")
            )
    });
    assert!(
        rejoined,
        "no Joined with the channel's state after the resume"
    );
    // The floor was Alice's throughout: nobody saw it go idle before she finished.
    let idle_early = bob.events.lock().unwrap().iter().any(|(at, ev)| {
        *at < done - Duration::from_millis(300)
            && matches!(
                ev,
                roger_client::ClientEvent::Floor {
                    floor: roger_client::FloorEvent::Idle,
                    ..
                }
            )
    });
    assert!(!idle_early, "the floor went idle during the cut");
    alice.mgr.close().await;
    bob.mgr.close().await;
}

/// A `leave` the server carried out while its answer was lost with the socket: the
/// resumed session no longer lists the channel, and the client lets it go too (the app
/// would otherwise show it joined, and a fresh session would join it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_whose_answer_was_lost_is_settled_by_the_resume() {
    use roger_client::ClientEvent;
    let server = Server::start("[[channels]]\nid = \"general\"\n[[channels]]\nid = \"side\"\n");
    let proxy = TcpProxy::start(server.addr);
    let (general, side) = (ChannelId::from("general"), ChannelId::from("side"));
    let bob = TestClient::connect_as(&server, "bob", &["side"]).await;
    bob.mgr.join(&side).await.unwrap();
    let alice = TestClient::connect(client_config(
        &proxy.url(),
        &server.token("alice", &["general", "side"]),
    ))
    .await;
    alice.mgr.join(&general).await.unwrap();
    alice.mgr.join(&side).await.unwrap();

    proxy.swallow_replies();
    let asked = Instant::now();
    let leave = {
        let mgr = alice.mgr.clone();
        let side = side.clone();
        tokio::spawn(async move { mgr.leave(&side).await })
    };
    // The server carried it out: Bob sees Alice go.
    bob.wait_event(Duration::from_secs(5), asked, "alice leaving", |e| {
        matches!(e, ClientEvent::MemberLeft { channel, member }
            if channel == &side && member.name == "alice")
    })
    .await;
    // (If the swallowed pongs made Alice give up on the socket already, she is back on
    // a fresh one through the proxy, and that one is cut.)
    assert_eq!(proxy.cut(), 1, "alice's one signaling socket");
    let lost = leave.await.unwrap().unwrap_err();
    println!("the leave's own answer: {lost}");

    alice
        .wait_event(
            Duration::from_secs(5),
            asked,
            "Left side",
            |e| matches!(e, ClientEvent::Left { channel } if channel == &side),
        )
        .await;
    alice
        .wait_status(Duration::from_secs(5), "Connected", |s| {
            matches!(s, Status::Connected)
        })
        .await;
    assert!(server.metric("roger_sessions_resumed_total") >= 1.0);
    let events = alice.events.lock().unwrap().clone();
    let after = || events.iter().filter(|(at, _)| *at > asked).map(|(_, e)| e);
    assert!(
        after().any(|e| matches!(e, ClientEvent::Joined { channel } if channel.id == general)),
        "the channel Alice is still in comes back with the resume"
    );
    assert!(
        !after().any(|e| matches!(e, ClientEvent::Left { channel } if channel == &general)),
        "{events:#?}"
    );
    alice.mgr.close().await;
    bob.mgr.close().await;
}
