//! SIGTERM drains: members are told (`server_draining`), then the server exits cleanly.

use roger_e2e::{RawClient, Server};
use roger_protocol::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_every_member_then_exits() {
    let mut server = Server::start("");
    let mut alice = RawClient::connect(&server).await;
    alice
        .hello(&server.token("alice", &["general"]))
        .await
        .unwrap();
    alice
        .call(Request::Join {
            channel: "general".into(),
        })
        .await
        .unwrap();
    assert!(matches!(
        alice
            .call(Request::FloorRequest {
                channel: "general".into()
            })
            .await,
        Ok(Response::FloorGranted { .. })
    ));
    let mut bob = RawClient::connect(&server).await;
    bob.hello(&server.token("bob", &["general"])).await.unwrap();
    bob.call(Request::Join {
        channel: "general".into(),
    })
    .await
    .unwrap();

    let status = tokio::task::spawn_blocking(move || {
        let s = server.terminate(Duration::from_secs(10));
        (s, server)
    });
    let mut saw = Vec::new();
    while let Some(m) = alice.try_recv(Duration::from_secs(5)).await {
        if let ServerMessage::Notification(n) = m {
            saw.push(n);
        }
    }
    assert!(
        saw.contains(&Notification::FloorRevoked {
            channel: "general".into(),
            reason: RevokeReason::ServerDraining
        }),
        "{saw:?}"
    );
    assert!(
        saw.iter()
            .any(|n| matches!(n, Notification::ServerDraining { .. })),
        "{saw:?}"
    );
    let mut bob_saw = Vec::new();
    while let Some(m) = bob.try_recv(Duration::from_secs(5)).await {
        if let ServerMessage::Notification(n) = m {
            bob_saw.push(n);
        }
    }
    assert!(
        bob_saw
            .iter()
            .any(|n| matches!(n, Notification::ServerDraining { .. })),
        "{bob_saw:?}"
    );
    let (status, server) = status.await.unwrap();
    let status = status.expect("server exited after SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        server.log_text()
    );
}
