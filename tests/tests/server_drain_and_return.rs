//! SIGTERM: clients are told the server is draining, and reconnect promptly (after the
//! server's suggested delay, not a backoff) when it returns.

use roger_client::Status;
use roger_e2e::{Server, TestClient};
use roger_protocol::ChannelId;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reconnect_promptly_when_a_drained_server_returns() {
    let mut server = Server::start("");
    let general = ChannelId::from("general");
    let alice = TestClient::connect_as(&server, "alice", &["general"]).await;
    let bob = TestClient::connect_as(&server, "bob", &["general"]).await;
    alice.mgr.join(&general).await.unwrap();
    bob.mgr.join(&general).await.unwrap();

    let status = tokio::task::spawn_blocking(move || {
        let s = server.terminate(Duration::from_secs(10));
        (s, server)
    });
    let (status, mut server) = status.await.unwrap();
    assert!(status.expect("the server exits on SIGTERM").success());
    for c in [&alice, &bob] {
        c.wait_status(Duration::from_secs(3), "not Connected", |s| {
            !matches!(s, Status::Connected)
        })
        .await;
    }
    server.restart();
    let back_at = Instant::now();
    for c in [&alice, &bob] {
        let at = c
            .wait_status(Duration::from_secs(10), "Connected", |s| {
                matches!(s, Status::Connected)
            })
            .await;
        let took = at.saturating_duration_since(back_at);
        println!("reconnected {took:?} after the server returned");
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
    let t = Instant::now();
    alice.talk("general", 1.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(bob.frames_since(t) >= 45);
    alice.mgr.close().await;
    bob.mgr.close().await;
}
