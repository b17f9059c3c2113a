//! Twenty rapid leave/rejoin cycles: leaving destroys the signaling client and the
//! transports (no ghost sessions on the server), and every cycle ends two-way.

use roger_e2e::{client_config, Server, TestClient};
use roger_protocol::ChannelId;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_rapid_leave_rejoin_cycles_all_end_two_way_with_no_ghosts() {
    let server = Server::start("");
    let general = ChannelId::from("general");
    let bob = TestClient::connect_as(&server, "bob", &["general"]).await;
    bob.mgr.join(&general).await.unwrap();
    let token = server.token("alice", &["general"]);
    for cycle in 1..=20 {
        let alice = TestClient::connect(client_config(&server.url(), &token)).await;
        alice.mgr.join(&general).await.unwrap();
        // A short exchange both ways, then leave at once.
        let t = Instant::now();
        alice.talk("general", 0.2).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        let bob_heard = bob.frames_since(t);
        let t = Instant::now();
        bob.talk("general", 0.2).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        let alice_heard = alice.frames_since(t);
        assert!(
            bob_heard >= 8,
            "cycle {cycle}: bob heard {bob_heard} of 10 frames"
        );
        assert!(
            alice_heard >= 8,
            "cycle {cycle}: alice heard {alice_heard} of 10 frames"
        );
        alice.mgr.leave(&general).await.unwrap();
        alice.mgr.close().await;
    }
    // Only bob is left: no ghost of any of alice's twenty sessions, no leaked transport.
    let mut sessions = 0.0;
    for _ in 0..50 {
        sessions = server.metric("roger_sessions");
        if sessions == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sessions, 1.0, "{}", server.metrics());
    assert_eq!(server.metric("roger_channel_members"), 1.0);
    // Bob's two transports are the only ones left open on the server.
    let mut pcs = 0.0;
    for _ in 0..100 {
        pcs = server.metric("roger_peer_connections");
        if pcs == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pcs, 2.0, "peer connections left open on the server");
    bob.mgr.close().await;
}
