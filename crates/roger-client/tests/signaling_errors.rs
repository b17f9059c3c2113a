//! The signaling client turns every way a server can fail into a clear error code.

use futures_util::StreamExt;
use roger_client::protocol::{ErrorCode, Request};
use roger_client::signaling::Signaling;
use std::time::Duration;

/// A WebSocket server that accepts one connection and then does `behave` with it.
async fn fake_server<F, Fut>(behave: F) -> String
where
    F: FnOnce(tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        behave(ws).await;
    });
    url
}

#[tokio::test]
async fn a_server_that_never_answers_gives_signaling_timeout() {
    let url = fake_server(|mut ws| async move {
        while ws.next().await.is_some() {} // read, never answer
    })
    .await;
    let (sig, _events) = Signaling::connect(&url, Duration::from_millis(200))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let e = sig.request(Request::Ping).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SignalingTimeout);
    assert!(e.message.contains("ping"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_server_that_hangs_up_mid_request_gives_signaling_closed() {
    let url = fake_server(|mut ws| async move {
        let _ = ws.next().await; // take the request, then hang up
        let _ = ws.close(None).await;
    })
    .await;
    let (sig, mut events) = Signaling::connect(&url, Duration::from_secs(5))
        .await
        .unwrap();
    let e = sig.request(Request::Ping).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SignalingClosed);
    assert!(matches!(
        events.recv().await,
        Some(roger_client::signaling::SignalingEvent::Closed(_))
    ));
}

#[tokio::test]
async fn nobody_listening_gives_signaling_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = Signaling::connect(&format!("ws://127.0.0.1:{port}/ws"), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::SignalingUnreachable);
    let e = Signaling::connect("not a url", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::SignalingUnreachable);
}

#[tokio::test]
async fn garbage_from_the_server_is_ignored_and_the_request_still_times_out_cleanly() {
    let url = fake_server(|mut ws| async move {
        use futures_util::SinkExt;
        let _ = ws.next().await;
        let _ = ws
            .send(tokio_tungstenite::tungstenite::Message::text(
                "{\"id\": \"nonsense\"}",
            ))
            .await;
        while ws.next().await.is_some() {}
    })
    .await;
    let (sig, _events) = Signaling::connect(&url, Duration::from_millis(300))
        .await
        .unwrap();
    let e = sig.request(Request::Ping).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SignalingTimeout);
}
