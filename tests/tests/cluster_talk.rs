//! Two and three nodes on one Redis: a talker on one node is heard on another, the floor
//! is one holder cluster-wide, a late joiner on a third node hears at once, and bad input
//! across the cluster (a forged relay datagram, a resume token replayed on two nodes)
//! gets nowhere.

use roger_e2e::audio::{best_lag, read};
use roger_e2e::cluster::Cluster;
use roger_e2e::{speech_wav, Bot, RawClient, TempDir};
use roger_protocol::{ChannelId, Request, Response};
use serde_json::Value;
use std::time::Duration;

const S: Duration = Duration::from_secs(1);

#[test]
fn a_talker_on_one_node_is_heard_on_the_others_and_holds_the_floor_cluster_wide() {
    let Some(cl) = Cluster::start(3, "") else {
        return;
    };
    let (a, b, c) = (&cl.nodes[0], &cl.nodes[1], &cl.nodes[2]);
    let dir = TempDir::new("cluster-talk");
    let speech = speech_wav();
    let bob_wav = dir.join("bob.wav");
    let dave_wav = dir.join("dave.wav");

    let bob = Bot::spawn(
        b,
        &b.token("bob", &["general"]),
        &[
            "listen",
            "--channel",
            "general",
            "--out",
            bob_wav.to_str().unwrap(),
            "--seconds",
            "16",
        ],
    );
    bob.wait_event(10 * S, "joined");
    let alice = Bot::spawn(
        a,
        &a.token("alice", &["general"]),
        &[
            "talk",
            "--channel",
            "general",
            "--wav",
            speech.to_str().unwrap(),
            "--repeat",
            "3",
        ],
    );
    alice.wait_for(10 * S, "floor granted", |v| {
        v["event"] == "floor" && v["state"] == "granted"
    });

    // Carol, on bob's node, is denied while alice (on another node) holds the floor.
    let carol = Bot::spawn(
        b,
        &b.token("carol", &["general"]),
        &[
            "talk",
            "--channel",
            "general",
            "--wav",
            speech.to_str().unwrap(),
        ],
    );
    let (ok, lines, stderr) = carol.wait(15 * S);
    assert!(!ok, "carol's talk must fail while alice talks");
    assert!(stderr.contains("FLOOR_DENIED"), "stderr: {stderr}");
    let denied: Vec<&Value> = lines
        .iter()
        .filter(|v| v["event"] == "floor" && v["state"] == "denied")
        .collect();
    assert_eq!(denied.len(), 1, "{lines:#?}");
    assert_eq!(denied[0]["by"], "alice");

    // Dave joins on a third node mid-transmission and hears alice at once.
    let dave = Bot::spawn(
        c,
        &c.token("dave", &["general"]),
        &[
            "listen",
            "--channel",
            "general",
            "--out",
            dave_wav.to_str().unwrap(),
            "--seconds",
            "1.5",
        ],
    );
    let (ok, lines, stderr) = dave.wait(15 * S);
    assert!(ok, "dave failed: {stderr}");
    let joining = lines
        .iter()
        .find(|v| v["event"] == "joining")
        .expect("joining line");
    let first = lines
        .iter()
        .find(|v| v["event"] == "first_audio")
        .unwrap_or_else(|| panic!("dave heard nothing: {lines:#?}"));
    let waited = first["t_ms"].as_u64().unwrap() - joining["t_ms"].as_u64().unwrap();
    println!("late joiner on a third node heard audio {waited} ms after joining");
    assert!(waited <= 300, "late joiner waited {waited} ms");

    let (ok, _, stderr) = alice.wait(20 * S);
    assert!(ok, "alice failed: {stderr}");
    let (ok, lines, stderr) = bob.wait(20 * S);
    assert!(ok, "bob failed: {stderr}");
    let taken: Vec<&Value> = lines
        .iter()
        .filter(|v| v["event"] == "floor" && v["state"] == "taken")
        .collect();
    assert_eq!(
        taken.len(),
        1,
        "bob saw alice take the floor once: {lines:#?}"
    );
    // Members on other nodes come and go in bob's view as if they were on his.
    for who in ["alice", "carol", "dave"] {
        for event in ["member_joined", "member_left"] {
            assert!(
                lines
                    .iter()
                    .any(|v| v["event"] == event && v["user"] == who),
                "bob saw no {event} for {who}: {lines:#?}"
            );
        }
    }
    let reference = read(&speech);
    let recorded = read(&bob_wav);
    let (lag, corr) = best_lag(&reference, &recorded, 48_000 * 2);
    println!("bob's recording across nodes: lag {lag} samples, correlation {corr:.3}");
    assert!(corr >= 0.9, "correlation {corr:.3} at lag {lag}");
    // One stream per channel per node: a's relay carried alice once to b (and to c
    // while dave listened), however many listened there.
    let relayed = a.metric("roger_relay_packets_sent_total");
    println!("node a relayed {relayed} packets");
    assert!(
        (450.0..=450.0 * 2.0).contains(&relayed),
        "relayed {relayed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_round_of_a_floor_race_across_nodes_has_exactly_one_winner() {
    // Rounds back to back: more requests than a person makes.
    let fast = "[limits]\nfanout_per_second = 1000\nfanout_burst = 1000\nrequests_per_second = 1000\nrequest_burst = 1000\n";
    let Some(cl) = Cluster::start(2, fast) else {
        return;
    };
    let general = ChannelId::from("general");
    // Four clients, two per node, all in `general`.
    let mut clients = Vec::new();
    for i in 0..4 {
        let node = &cl.nodes[i % 2];
        let mut c = RawClient::connect(node).await;
        c.hello(&node.token(&format!("u{i}"), &["general"]))
            .await
            .expect("hello");
        c.call(Request::Join {
            channel: general.clone(),
        })
        .await
        .expect("join");
        clients.push(c);
    }
    for round in 0..50 {
        let answers = futures_util::future::join_all(clients.iter_mut().map(|c| {
            let channel = general.clone();
            async move { c.call(Request::FloorRequest { channel }).await }
        }))
        .await;
        let winners: Vec<usize> = answers
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a, Ok(Response::FloorGranted { .. })))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:#?}");
        let w = format!("u{}", winners[0]);
        for a in &answers {
            match a {
                Ok(Response::FloorGranted { .. }) => {}
                Ok(Response::FloorDenied { holder, .. }) => {
                    assert_eq!(
                        holder.user.as_str(),
                        w,
                        "round {round}: told the wrong holder"
                    )
                }
                other => panic!("round {round}: {other:?}"),
            }
        }
        clients[winners[0]]
            .call(Request::FloorRelease {
                channel: general.clone(),
            })
            .await
            .expect("release");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_relay_datagram_is_dropped_and_a_replayed_resume_token_wins_once() {
    use roger_server::cluster::relay::{encode, Relayed};
    let Some(cl) = Cluster::start(2, "") else {
        return;
    };
    let (a, b) = (&cl.nodes[0], &cl.nodes[1]);

    // A stranger's datagrams to node b's relay port: junk, and a well-formed packet
    // signed with the wrong secret. Neither reaches anyone; both are counted.
    let relay = cl.relay_addr(1);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let forged = encode(
        b"not the cluster secret",
        roger_e2e::now_ms(),
        &Relayed {
            node: "a".into(),
            channel: "general".into(),
            session: "s".into(),
            ssrc: 1,
            seq: 1,
            timestamp: 960,
            marker: true,
            payload: vec![0xf8; 40],
        },
    );
    for _ in 0..10 {
        sock.send_to(&forged, relay).expect("send");
        sock.send_to(b"junk", relay).expect("send");
    }
    let deadline = std::time::Instant::now() + 5 * S;
    loop {
        let m = b.metrics();
        let forged = roger_e2e::metric_value(&m, "roger_relay_rejected_total{why=\"forged\"}");
        let junk = roger_e2e::metric_value(&m, "roger_relay_rejected_total{why=\"malformed\"}");
        if forged == 10.0 && junk == 10.0 {
            assert_eq!(
                roger_e2e::metric_value(&m, "roger_relay_packets_received_total"),
                0.0
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not counted: {forged} forged, {junk} junk"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The same user signing in on another node replaces the older session there.
    let mut first = RawClient::connect(a).await;
    first
        .hello(&a.token("zoe", &["general"]))
        .await
        .expect("hello on a");
    let mut second = RawClient::connect(b).await;
    second
        .hello(&b.token("zoe", &["general"]))
        .await
        .expect("hello on b");
    let code = first.close_code(5 * S).await;
    assert_eq!(code, Some(1008), "zoe's older session on a was not closed");
    assert!(
        first.notifications.iter().any(|n| matches!(
            n,
            roger_protocol::Notification::Error(e) if e.code == roger_protocol::ErrorCode::SessionReplaced
        )),
        "{:?}",
        first.notifications
    );
    assert!(second
        .call(Request::Join {
            channel: "general".into()
        })
        .await
        .is_ok());

    // A resume token presented on two nodes at once: one takes the session over, the
    // other is told the session is gone.
    for round in 0..5 {
        let mut first = RawClient::connect(a).await;
        let welcome = match first
            .hello(&a.token(&format!("eve{round}"), &["general"]))
            .await
        {
            Ok(Response::Welcome(w)) => w,
            other => panic!("hello: {other:?}"),
        };
        assert_eq!(
            welcome.nodes.len(),
            2,
            "welcome lists both nodes: {:?}",
            welcome.nodes
        );
        drop(first);
        let (mut on_a, mut on_b) = (RawClient::connect(a).await, RawClient::connect(b).await);
        let resume = Request::Resume {
            protocol_version: roger_protocol::PROTOCOL_VERSION,
            resume_token: welcome.resume_token.clone(),
        };
        let (ra, rb) = tokio::join!(on_a.call(resume.clone()), on_b.call(resume.clone()));
        let won = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, Ok(Response::Resumed(_))))
            .count();
        assert_eq!(won, 1, "round {round}: {ra:?} / {rb:?}");
        for r in [&ra, &rb] {
            if let Err(e) = r {
                assert_eq!(
                    e.code,
                    roger_protocol::ErrorCode::SessionExpired,
                    "round {round}"
                );
            }
        }
    }
}
