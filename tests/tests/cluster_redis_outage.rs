//! Redis goes away for 10 s mid-conversation and comes back empty: every node keeps
//! serving what it has (same-node audio never stops, a channel whose members are all on
//! one node keeps its floor), `/healthz` says degraded, and when Redis returns the nodes
//! write back what they hold: cross-node audio and a single floor holder throughout.

use roger_client::FloorOutcome;
use roger_e2e::cluster::Cluster;
use roger_e2e::{client_config, TestClient};
use roger_protocol::ChannelId;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHANNELS: &str = "[[channels]]\nid = \"general\"\n[[channels]]\nid = \"ops\"\n";

async fn wait_health(cl: &Cluster, word: &str, within: Duration) -> Duration {
    let t = Instant::now();
    while !(0..cl.nodes.len()).all(|i| cl.health(i).contains(word)) {
        assert!(t.elapsed() < within, "healthz never said {word}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_local_audio_and_converges_when_redis_returns_empty() {
    let Some(mut cl) = Cluster::start(2, CHANNELS) else {
        return;
    };
    let (general, ops) = (ChannelId::from("general"), ChannelId::from("ops"));
    let urls = cl.urls();
    let on = |i: usize, user: &str, channels: &[&str]| {
        client_config(&urls[i], &cl.nodes[i].token(user, channels))
    };
    let alice = Arc::new(TestClient::connect(on(0, "alice", &["general"])).await);
    let carol = TestClient::connect(on(0, "carol", &["general"])).await;
    let bob = TestClient::connect(on(1, "bob", &["general"])).await;
    let dave = TestClient::connect(on(0, "dave", &["ops"])).await;
    let erin = TestClient::connect(on(0, "erin", &["ops"])).await;
    for c in [&*alice, &carol, &bob] {
        c.mgr.join(&general).await.expect("join general");
    }
    for c in [&dave, &erin] {
        c.mgr.join(&ops).await.expect("join ops");
    }

    let started = Instant::now();
    let talker = alice.clone();
    let talk = tokio::spawn(async move { talker.talk("general", 16.0).await });
    while bob.frames_since(started) < 25 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "bob never heard alice"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cl.redis.kill();
    let down = Instant::now();
    let noticed = wait_health(&cl, "degraded", Duration::from_secs(3)).await;
    println!("redis killed: /healthz degraded on both nodes within {noticed:?}");
    // A channel with only local members keeps its floor.
    let t = Instant::now();
    let outcome = dave.talk("ops", 1.0).await;
    assert!(
        matches!(outcome, FloorOutcome::Granted { .. }),
        "{outcome:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heard = erin.frames_since(t);
    assert!(
        heard >= 45,
        "erin heard {heard} of 50 frames while redis was down"
    );
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down.elapsed())).await;
    // Same-node audio never stopped.
    let gap = carol.longest_gap(down, Instant::now());
    println!("carol's longest silence while redis was down: {gap:?}");
    assert!(
        gap < Duration::from_millis(300),
        "carol's audio stopped for {gap:?}"
    );

    cl.redis.restart();
    let up = Instant::now();
    let back = wait_health(&cl, "ok", Duration::from_secs(5)).await;
    println!("redis back (empty): /healthz ok on both nodes within {back:?}");
    // Each node said so once, with the reason, and nothing panicked.
    for (i, node) in cl.nodes.iter().enumerate() {
        let log = node.log_text();
        let said = log.matches("redis unreachable").count();
        assert_eq!(said, 1, "node {i} logged the outage {said} times");
        assert!(!log.contains("panicked"), "node {i} panicked:\n{log}");
        assert!(log.contains("redis reachable again"), "node {i}");
    }
    // The nodes wrote back what they hold.
    let redis = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &cl.redis.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(redis(&["HLEN", "roger:members:general"]), "3");
    assert!(redis(&["GET", "roger:floor:general"]).contains("alice"));
    // Cross-node audio flows after the return.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heard = bob.frames_since(up + Duration::from_millis(500));
    assert!(
        heard >= 40,
        "bob heard {heard} frames of alice after redis returned"
    );
    let outcome = talk.await.expect("alice's talk");
    assert!(
        matches!(outcome, FloorOutcome::Granted { .. }),
        "{outcome:?}"
    );

    // One holder cluster-wide afterwards: bob (node b) talks, alice (node a) is denied.
    let speaker = Arc::new(bob);
    let s2 = speaker.clone();
    let bob_talk = tokio::spawn(async move { s2.talk("general", 2.0).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let denied = alice.talk("general", 0.5).await;
    match denied {
        FloorOutcome::Denied { holder } => assert_eq!(holder.user.as_str(), "bob"),
        other => panic!("alice was not denied while bob talked: {other:?}"),
    }
    let outcome = bob_talk.await.expect("bob's talk");
    assert!(
        matches!(outcome, FloorOutcome::Granted { .. }),
        "{outcome:?}"
    );
}
