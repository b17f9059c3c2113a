//! A dead node is a fault the client heals: `kill -9` the node a talker is on and it
//! moves to another by itself, keeps the floor and is heard again; a drained node's
//! clients all move at once, none of them failing.

use roger_client::Status;
use roger_e2e::cluster::{wait_heard_again, AcrossNodes, Cluster};
use roger_e2e::{client_config, TestClient};
use roger_protocol::ChannelId;
use std::time::{Duration, Instant};

fn never_failed(c: &TestClient) -> bool {
    !c.statuses
        .lock()
        .expect("statuses")
        .iter()
        .any(|(_, s)| matches!(s, Status::Failed { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_talker_whose_node_is_killed_moves_keeps_the_floor_and_is_heard_again() {
    let Some(mut cl) = Cluster::start(2, "") else {
        return;
    };
    // Alice is given node a only: she learns b from `welcome`. Bob hears her through
    // the relay...
    let AcrossNodes { alice, bob, talk } = cl.alice_talks_to_bob(9.0).await;
    // ... until her node dies.
    cl.nodes[0].kill9();
    let killed = Instant::now();
    let again = wait_heard_again(&bob, killed, Duration::from_secs(15))
        .await
        .expect("bob did not hear alice again");
    println!(
        "node killed: bob heard alice again {:?} later",
        again - killed
    );
    let outcome = talk.await.expect("talk task");
    assert!(
        matches!(outcome, roger_client::FloorOutcome::Granted { .. }),
        "{outcome:?}"
    );
    // She kept the floor throughout: no revocation, and bob never saw it go idle.
    let revoked = alice.events.lock().expect("events").iter().any(|(_, e)| {
        matches!(
            e,
            roger_client::ClientEvent::Floor {
                floor: roger_client::FloorEvent::Revoked { .. },
                ..
            }
        )
    });
    assert!(!revoked, "alice's floor was revoked");
    let idle_before_end = bob.events.lock().expect("events").iter().any(|(t, e)| {
        *t > killed
            && *t < again
            && matches!(
                e,
                roger_client::ClientEvent::Floor {
                    floor: roger_client::FloorEvent::Idle,
                    ..
                }
            )
    });
    assert!(
        !idle_before_end,
        "bob saw the floor go idle while alice moved"
    );
    // Reconnecting, then Connected: no Rejoin, no failure.
    assert!(
        never_failed(&alice),
        "{:#?}",
        alice.statuses.lock().unwrap()
    );
    assert!(alice
        .statuses
        .lock()
        .unwrap()
        .iter()
        .any(|(t, s)| *t > killed && matches!(s, Status::Reconnecting { .. })));
    assert_eq!(cl.nodes[1].metric("roger_sessions"), 2.0);
    alice.mgr.close().await;
    bob.mgr.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_sends_every_client_to_another_and_none_fails() {
    let Some(mut cl) = Cluster::start(2, "") else {
        return;
    };
    let general = ChannelId::from("general");
    let urls = cl.urls();
    let mut on_a = Vec::new();
    for user in ["alice", "carol", "erin"] {
        let c = TestClient::connect(client_config(
            &urls[0],
            &cl.nodes[0].token(user, &["general"]),
        ))
        .await;
        c.mgr.join(&general).await.expect("join");
        on_a.push(c);
    }
    let bob = TestClient::connect(client_config(
        &urls[1],
        &cl.nodes[1].token("bob", &["general"]),
    ))
    .await;
    bob.mgr.join(&general).await.expect("join");

    let drained = Instant::now();
    let status = cl.nodes[0].terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "node a did not drain cleanly"
    );
    for c in &on_a {
        c.wait_status(Duration::from_secs(10), "Connected again", |s| {
            matches!(s, Status::Connected)
        })
        .await;
    }
    let moved = drained.elapsed();
    println!("drain: all 3 clients back on node b within {moved:?}");
    for c in &on_a {
        assert!(never_failed(c), "{:#?}", c.statuses.lock().unwrap());
    }
    // Bob, on the node they moved to, never saw them leave: they moved, not left.
    let left: Vec<String> = bob
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t > drained)
        .filter_map(|(_, e)| match e {
            roger_client::ClientEvent::MemberLeft { member, .. } => Some(member.user.0.clone()),
            _ => None,
        })
        .collect();
    assert!(left.is_empty(), "bob saw {left:?} leave during the move");
    // Everyone is on b now, and still in the channel with two-way audio.
    assert_eq!(cl.nodes[1].metric("roger_sessions"), 4.0);
    let t = Instant::now();
    on_a[0].talk("general", 1.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heard = bob.frames_since(t);
    assert!(heard >= 45, "bob heard {heard} of 50 frames after the move");
    let t = Instant::now();
    bob.talk("general", 1.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heard = on_a[1].frames_since(t);
    assert!(
        heard >= 45,
        "carol heard {heard} of 50 frames after the move"
    );
    for c in on_a {
        c.mgr.close().await;
    }
    bob.mgr.close().await;
}

/// A talker whose node dies and who never comes back: the other nodes let the floor go
/// when its lease runs out (the floor grace), and the member after the session grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_floor_and_members_are_let_go_after_their_graces() {
    use roger_e2e::RawClient;
    use roger_protocol::{FloorState, Notification, Request, Response};
    let Some(mut cl) = Cluster::start(2, "[session]\ngrace_ms = 3000\n[floor]\ngrace_ms = 1000\n")
    else {
        return;
    };
    let general = ChannelId::from("general");
    let mut alice = RawClient::connect(&cl.nodes[0]).await;
    alice
        .hello(&cl.nodes[0].token("alice", &["general"]))
        .await
        .expect("hello");
    alice
        .call(Request::Join {
            channel: general.clone(),
        })
        .await
        .expect("join");
    let granted = alice
        .call(Request::FloorRequest {
            channel: general.clone(),
        })
        .await;
    assert!(
        matches!(granted, Ok(Response::FloorGranted { .. })),
        "{granted:?}"
    );
    let mut bob = RawClient::connect(&cl.nodes[1]).await;
    bob.hello(&cl.nodes[1].token("bob", &["general"]))
        .await
        .expect("hello");
    // Alice's grant reached node b before bob asks (the bus, or the next heartbeat).
    tokio::time::sleep(Duration::from_millis(600)).await;
    match bob
        .call(Request::Join {
            channel: general.clone(),
        })
        .await
    {
        Ok(Response::Joined { channel }) => {
            assert!(
                matches!(&channel.floor, FloorState::Taken { holder, .. } if holder.user.as_str() == "alice"),
                "{channel:?}"
            );
            assert!(channel.members.iter().any(|m| m.user.as_str() == "alice"));
        }
        other => panic!("join: {other:?}"),
    }
    drop(alice);
    cl.nodes[0].kill9();
    let killed = Instant::now();
    let (mut idle_at, mut left_at) = (None, None);
    let mut pinged = Instant::now();
    bob.try_send(Request::Ping).await;
    while (idle_at.is_none() || left_at.is_none()) && killed.elapsed() < Duration::from_secs(15) {
        // A raw client pings by hand (as a client does, once a second), or the server
        // drops it as silent.
        if pinged.elapsed() >= Duration::from_secs(1) {
            bob.try_send(Request::Ping).await;
            pinged = Instant::now();
        }
        if let Some(roger_protocol::ServerMessage::Notification(n)) =
            bob.try_recv(Duration::from_millis(200)).await
        {
            match n {
                Notification::FloorIdle { .. } => idle_at = Some(killed.elapsed()),
                Notification::MemberLeft { member, .. } if member.user.as_str() == "alice" => {
                    left_at = Some(killed.elapsed())
                }
                _ => {}
            }
        }
    }
    println!("node died: floor idle after {idle_at:?}, alice left after {left_at:?}");
    let idle = idle_at.expect("bob never saw the floor go idle");
    let left = left_at.expect("bob never saw alice leave");
    // The lease was last extended at most one heartbeat (500 ms) before the kill.
    assert!(
        idle >= Duration::from_millis(400),
        "the floor went before its grace: {idle:?}"
    );
    assert!(
        idle <= Duration::from_secs(4),
        "the floor lingered {idle:?}"
    );
    assert!(
        left >= Duration::from_secs(3),
        "alice left before the session grace: {left:?}"
    );
    assert!(left <= Duration::from_secs(9), "alice lingered {left:?}");
    let granted = bob
        .call(Request::FloorRequest {
            channel: general.clone(),
        })
        .await;
    assert!(
        matches!(granted, Ok(Response::FloorGranted { .. })),
        "{granted:?}"
    );
}

/// The talker's node is killed and restarted at once under the same id: the new run does
/// not take the old run's floor and members for its own (it would end them). Alice, who
/// retries the same node first, resumes on it with her floor, and bob on the other node
/// hears her again without seeing her leave or the floor go idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_under_the_same_id_keeps_its_old_runs_floor_and_members() {
    let Some(mut cl) = Cluster::start(2, "") else {
        return;
    };
    // Carol, on node a too, will not come back (a raw socket that dies with the node):
    // her entry is still there when the new run first beats, and must stay for her
    // session grace, not be taken for the new run's own and dropped.
    let mut carol = roger_e2e::RawClient::connect(&cl.nodes[0]).await;
    carol
        .hello(&cl.nodes[0].token("carol", &["general"]))
        .await
        .expect("hello");
    carol
        .call(roger_protocol::Request::Join {
            channel: "general".into(),
        })
        .await
        .expect("join");
    let AcrossNodes { alice, bob, talk } = cl.alice_talks_to_bob(9.0).await;
    cl.nodes[0].kill9();
    let killed = Instant::now();
    cl.nodes[0].restart();
    let again = wait_heard_again(&bob, killed, Duration::from_secs(15))
        .await
        .expect("bob did not hear alice again");
    println!(
        "node restarted: bob heard alice again {:?} after the kill",
        again - killed
    );
    // Two more heartbeats of the new run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let checked = Instant::now();
    let outcome = talk.await.expect("talk task");
    assert!(
        matches!(outcome, roger_client::FloorOutcome::Granted { .. }),
        "{outcome:?}"
    );
    let bob_saw: Vec<String> = bob
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t > killed && *t < checked)
        .filter_map(|(_, e)| match e {
            roger_client::ClientEvent::MemberLeft { member, .. } => {
                Some(format!("{} left", member.user))
            }
            roger_client::ClientEvent::Floor {
                floor: roger_client::FloorEvent::Idle,
                ..
            } => Some("floor idle".into()),
            _ => None,
        })
        .collect();
    assert!(
        bob_saw.is_empty(),
        "bob saw {bob_saw:?} while alice came back"
    );
    assert!(
        never_failed(&alice),
        "{:#?}",
        alice.statuses.lock().unwrap()
    );
    drop(carol);
    alice.mgr.close().await;
    bob.mgr.close().await;
}
