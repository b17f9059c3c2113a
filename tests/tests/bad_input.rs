//! Bad input gets its error code, the server keeps serving everyone else, and nothing
//! leaks: the session count is back to zero once everyone has left.

use roger_e2e::{RawClient, Server};
use roger_protocol::*;
use std::time::Duration;

fn code(r: Result<Response, ErrorBody>) -> ErrorCode {
    r.expect_err("expected a refusal").code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_gets_its_code_and_the_server_keeps_serving() {
    let server = Server::start(
        "[limits]\nmax_message_bytes = 4096\nrequests_per_second = 20\nrequest_burst = 40\n",
    );

    // A well-behaved client stays connected through everything below.
    let mut good = RawClient::connect(&server).await;
    assert!(matches!(
        good.hello(&server.token("good", &["general"])).await,
        Ok(Response::Welcome(_))
    ));

    // Tokens: expired, forged, garbage.
    let expired = server.sign(&roger_server::auth::Claims {
        sub: "eve".into(),
        name: "Eve".into(),
        channels: vec!["general".into()],
        exp: roger_server::auth::unix_now() - 60,
        ..Default::default()
    });
    let forged = roger_server::auth::Authenticator::new(b"not-the-secret").issue(
        "eve",
        "Eve",
        &["general".into()],
        Duration::from_secs(600),
    );
    for (token, want) in [
        (expired.as_str(), ErrorCode::TokenExpired),
        (forged.as_str(), ErrorCode::TokenInvalid),
        ("not.a.jwt", ErrorCode::TokenInvalid),
    ] {
        let mut c = RawClient::connect(&server).await;
        assert_eq!(code(c.hello(token).await), want);
        // Refused, not authenticated: nothing else works on this socket.
        assert_eq!(
            code(c.call(Request::Ping).await),
            ErrorCode::NotAuthenticated
        );
    }

    // Protocol version.
    let mut c = RawClient::connect(&server).await;
    let r = c
        .call(Request::Hello {
            protocol_version: 99,
            token: server.token("vic", &["general"]),
            client: String::new(),
        })
        .await;
    assert_eq!(code(r), ErrorCode::UnsupportedProtocolVersion);

    // A token for another channel.
    let mut mallory = RawClient::connect(&server).await;
    mallory
        .hello(&server.token("mallory", &["echo"]))
        .await
        .unwrap();
    assert_eq!(
        code(
            mallory
                .call(Request::Join {
                    channel: "general".into()
                })
                .await
        ),
        ErrorCode::ChannelNotAllowed
    );
    assert_eq!(
        code(
            mallory
                .call(Request::Join {
                    channel: "nowhere".into()
                })
                .await
        ),
        ErrorCode::ChannelNotFound
    );
    // Talking in a channel it never joined.
    assert_eq!(
        code(
            mallory
                .call(Request::FloorRequest {
                    channel: "general".into()
                })
                .await
        ),
        ErrorCode::NotInChannel
    );

    // Malformed JSON: answered with a notification (no id to answer to).
    mallory.send_text("{not json".into()).await;
    match mallory.next_notification().await {
        Notification::Error(e) => assert_eq!(e.code, ErrorCode::MalformedMessage),
        other => panic!("{other:?}"),
    }
    // A known method with bad params: answered by id.
    mallory
        .send_text(r#"{"id":77,"method":"join","params":{"chan":"x"}}"#.into())
        .await;
    assert_eq!(
        code(mallory.response_to(77).await),
        ErrorCode::MalformedMessage
    );
    // An unknown message type.
    mallory
        .send_text(r#"{"id":78,"method":"teleport","params":{}}"#.into())
        .await;
    assert_eq!(
        code(mallory.response_to(78).await),
        ErrorCode::UnknownMethod
    );
    // An oversize frame.
    mallory
        .send_text(format!(
            r#"{{"id":79,"method":"ping","pad":"{}"}}"#,
            "x".repeat(8000)
        ))
        .await;
    match mallory.next_notification().await {
        Notification::Error(e) => assert_eq!(e.code, ErrorCode::MessageTooLarge),
        other => panic!("{other:?}"),
    }
    // Still usable afterwards.
    assert!(matches!(
        mallory.call(Request::Ping).await,
        Ok(Response::Pong { .. })
    ));

    // Floor release by someone who does not hold it.
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
    good.call(Request::Join {
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
    assert_eq!(
        code(
            good.call(Request::FloorRelease {
                channel: "general".into()
            })
            .await
        ),
        ErrorCode::FloorNotHeld
    );
    // Alice still holds it.
    assert!(matches!(
        good.call(Request::FloorRequest { channel: "general".into() }).await,
        Ok(Response::FloorDenied { holder, .. }) if holder.user.as_str() == "alice"
    ));

    // A flood: 150 pings at once. The burst (40, one spent on hello) passes, the rest
    // is refused with RATE_LIMITED (answered once per 50, counted every time).
    let mut flood = RawClient::connect(&server).await;
    flood
        .hello(&server.token("flood", &["general"]))
        .await
        .unwrap();
    for _ in 0..150 {
        flood.send(Request::Ping).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    while let Some(m) = flood.try_recv(Duration::from_millis(500)).await {
        if let ServerMessage::Response(r) = m {
            match r.outcome {
                Outcome::Ok(_) => pongs += 1,
                Outcome::Err(e) => {
                    assert_eq!(e.code, ErrorCode::RateLimited);
                    limited += 1
                }
            }
        }
    }
    assert!((39..=45).contains(&pongs), "{pongs} pongs");
    assert!(limited >= 1, "the flood was never told it is rate limited");
    let refused = server.metric("roger_refusals_total{code=\"RATE_LIMITED\"}");
    assert!(refused >= 100.0, "{refused} refusals counted");
    // Once the bucket refills, the same client is served again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(
        flood.call(Request::Ping).await,
        Ok(Response::Pong { .. })
    ));

    // A sustained flood gets the socket closed.
    let mut hammer = RawClient::connect(&server).await;
    hammer
        .hello(&server.token("hammer", &["general"]))
        .await
        .unwrap();
    // The server may close the socket while the flood is still being written: a
    // failed send means it already did.
    let mut closed = false;
    for _ in 0..400 {
        if !hammer.try_send(Request::Ping).await {
            closed = true;
            break;
        }
    }
    for _ in 0..500 {
        if closed {
            break;
        }
        if hammer.try_recv(Duration::from_secs(2)).await.is_none() {
            closed = true;
            break;
        }
    }
    assert!(closed, "a sustained flood must be disconnected");
    drop(hammer);

    // The good client never noticed.
    assert!(matches!(
        good.call(Request::Ping).await,
        Ok(Response::Pong { .. })
    ));

    // Everyone leaves cleanly: no session is left behind.
    for c in [&mut good, &mut mallory, &mut alice, &mut flood] {
        assert_eq!(c.call(Request::Bye).await, Ok(Response::Goodbye));
    }
    let mut sessions = f64::NAN;
    for _ in 0..50 {
        sessions = server.metric("roger_sessions");
        if sessions == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sessions, 0.0, "metrics:\n{}", server.metrics());
    let m = server.metrics();
    assert!(
        m.contains("roger_refusals_total{code=\"TOKEN_EXPIRED\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("roger_refusals_total{code=\"FLOOR_NOT_HELD\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_keeps_its_session_until_the_grace_ends_then_it_is_cleaned_up() {
    let server = Server::start("[session]\ngrace_ms = 600\n");
    let mut c = RawClient::connect(&server).await;
    let Ok(Response::Welcome(w)) = c.hello(&server.token("alice", &["general"])).await else {
        panic!("no welcome")
    };
    c.call(Request::Join {
        channel: "general".into(),
    })
    .await
    .unwrap();
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.metric("roger_sessions"), 1.0);
    assert_eq!(server.metric("roger_sessions_connected"), 0.0);
    // Resume within the grace: same session, still in its channel.
    let mut c = RawClient::connect(&server).await;
    let r = c
        .call(Request::Resume {
            protocol_version: PROTOCOL_VERSION,
            resume_token: w.resume_token.clone(),
        })
        .await;
    let Ok(Response::Resumed(resumed)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(resumed.session_id, w.session_id);
    assert_eq!(resumed.channels.len(), 1);
    // The spent token does not work twice.
    let mut other = RawClient::connect(&server).await;
    let r = other
        .call(Request::Resume {
            protocol_version: PROTOCOL_VERSION,
            resume_token: w.resume_token,
        })
        .await;
    assert_eq!(code(r), ErrorCode::SessionExpired);
    // Drop again and wait out the grace: the session is gone.
    drop(c);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(server.metric("roger_sessions"), 0.0, "{}", server.metrics());
    let mut c = RawClient::connect(&server).await;
    let r = c
        .call(Request::Resume {
            protocol_version: PROTOCOL_VERSION,
            resume_token: resumed.resume_token,
        })
        .await;
    assert_eq!(code(r), ErrorCode::SessionExpired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_identity_connecting_again_replaces_the_older_session() {
    let server = Server::start("");
    let mut first = RawClient::connect(&server).await;
    first
        .hello(&server.token("alice", &["general"]))
        .await
        .unwrap();
    first
        .call(Request::Join {
            channel: "general".into(),
        })
        .await
        .unwrap();
    let mut second = RawClient::connect(&server).await;
    second
        .hello(&server.token("alice", &["general"]))
        .await
        .unwrap();
    match first.next_notification().await {
        Notification::Error(e) => assert_eq!(e.code, ErrorCode::SessionReplaced),
        other => panic!("{other:?}"),
    }
    assert!(
        first.try_recv(Duration::from_secs(2)).await.is_none(),
        "old socket closed"
    );
    let r = second
        .call(Request::Join {
            channel: "general".into(),
        })
        .await
        .unwrap();
    let Response::Joined { channel } = r else {
        panic!()
    };
    assert_eq!(channel.members.len(), 1, "no ghost of the old session");
    assert_eq!(server.metric("roger_sessions"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_the_limit_get_server_full_and_a_freed_place_is_reusable() {
    let server = Server::start("[limits]\nmax_sessions = 2\n");
    let mut a = RawClient::connect(&server).await;
    a.hello(&server.token("a", &["general"])).await.unwrap();
    let mut b = RawClient::connect(&server).await;
    b.hello(&server.token("b", &["general"])).await.unwrap();
    let mut c = RawClient::connect(&server).await;
    assert_eq!(
        code(c.hello(&server.token("c", &["general"])).await),
        ErrorCode::ServerFull
    );
    // The same identity replacing its own session is not a new session.
    let mut a2 = RawClient::connect(&server).await;
    assert!(matches!(
        a2.hello(&server.token("a", &["general"])).await,
        Ok(Response::Welcome(_))
    ));
    assert_eq!(b.call(Request::Bye).await, Ok(Response::Goodbye));
    let mut c = RawClient::connect(&server).await;
    assert!(matches!(
        c.hello(&server.token("c", &["general"])).await,
        Ok(Response::Welcome(_))
    ));
}

/// What a client written from docs/protocol.md with another stack sends: `"params": {}`
/// on requests that take none, and it reads every error as a sentence (the RawClient
/// checks that no error message shows Rust's debug form, here and in every test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_params_on_ping_and_bye_are_answered_and_errors_read_as_sentences() {
    let server = Server::start("");
    let mut c = RawClient::connect(&server).await;
    c.hello(&server.token("ada", &["echo"])).await.unwrap();
    c.send_text(r#"{"id":901,"method":"ping","params":{}}"#.into())
        .await;
    assert!(matches!(
        c.response_to(901).await,
        Ok(Response::Pong { .. })
    ));
    // The channel errors name the channel as people write it.
    for (request, want, name) in [
        (
            Request::Join {
                channel: "general".into(),
            },
            ErrorCode::ChannelNotAllowed,
            "\"general\"",
        ),
        (
            Request::Join {
                channel: "nowhere".into(),
            },
            ErrorCode::ChannelNotFound,
            "\"nowhere\"",
        ),
        (
            Request::FloorRequest {
                channel: "echo".into(),
            },
            ErrorCode::NotInChannel,
            "\"echo\"",
        ),
        (
            Request::FloorRelease {
                channel: "echo".into(),
            },
            ErrorCode::NotInChannel,
            "\"echo\"",
        ),
    ] {
        let e = c.call(request).await.expect_err("refused");
        assert_eq!(e.code, want);
        assert!(e.message.contains(name), "{e:?}");
    }
    c.call(Request::Join {
        channel: "echo".into(),
    })
    .await
    .unwrap();
    let e = c
        .call(Request::FloorRelease {
            channel: "echo".into(),
        })
        .await
        .expect_err("not held");
    assert_eq!(e.code, ErrorCode::FloorNotHeld);
    assert!(e.message.contains("\"echo\""), "{e:?}");
    c.send_text(r#"{"id":902,"method":"bye","params":{}}"#.into())
        .await;
    assert_eq!(c.response_to(902).await, Ok(Response::Goodbye));
}

/// A socket that says nothing is told why before it is closed, with a close code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_is_told_why_and_closed_with_a_code() {
    let server = Server::start("[session]\nping_interval_ms = 200\n");
    let mut c = RawClient::connect(&server).await;
    let code = c.close_code(Duration::from_secs(5)).await;
    assert_eq!(code, Some(1008), "closed without a code");
    match c.notifications.first() {
        Some(Notification::Error(e)) => {
            assert_eq!(e.code, ErrorCode::SignalingTimeout);
            assert!(e.message.contains("600 ms"), "{e:?}");
        }
        other => panic!("no error before the close: {other:?}"),
    }
}

/// Every frame counts: binary frames and WebSocket pings are not free, a socket that
/// keeps sending frames outside the protocol or floods pings is closed, and requests
/// that reach every member of a channel have their own, lower limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_counts_and_fan_out_requests_have_their_own_limit() {
    use tokio_tungstenite::tungstenite::Message;
    let server = Server::start("");

    // Binary frames: each answered MALFORMED_MESSAGE, the 10th closes the socket.
    let mut c = RawClient::connect(&server).await;
    c.hello(&server.token("bin", &["general"])).await.unwrap();
    for _ in 0..10 {
        assert!(c.send_frame(Message::binary(vec![0u8; 16])).await);
    }
    assert_eq!(c.close_code(Duration::from_secs(3)).await, Some(1008));
    let malformed = c
        .notifications
        .iter()
        .filter(|n| matches!(n, Notification::Error(e) if e.code == ErrorCode::MalformedMessage))
        .count();
    assert!(malformed >= 10, "{:?}", c.notifications);

    // A ping flood (WebSocket pings cost a pong each) is rate limited, then closed.
    let mut c = RawClient::connect(&server).await;
    c.hello(&server.token("pinger", &["general"]))
        .await
        .unwrap();
    let mut sent = 0;
    while sent < 1_000 && c.send_frame(Message::Ping(vec![1].into())).await {
        sent += 1;
    }
    assert_eq!(c.close_code(Duration::from_secs(3)).await, Some(1008));
    assert!(c
        .notifications
        .iter()
        .any(|n| matches!(n, Notification::Error(e) if e.code == ErrorCode::RateLimited)));
    assert!(server.metric("roger_ws_flood_closed_total") >= 1.0);

    // 30 joins at once: the fan-out burst (20) passes, the rest are refused by id, and
    // the socket keeps working.
    let mut c = RawClient::connect(&server).await;
    c.hello(&server.token("joiner", &["general"]))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(
            c.send(Request::Join {
                channel: "general".into(),
            })
            .await,
        );
    }
    let mut limited = 0;
    for id in ids {
        if let Err(e) = c.response_to(id).await {
            assert_eq!(e.code, ErrorCode::RateLimited, "{e:?}");
            limited += 1;
        }
    }
    // 20 pass at once and 5 more per second: however slowly this machine answers them,
    // some of 30 sent in a burst are refused, and at most the 10 beyond the burst.
    assert!((1..=10).contains(&limited), "{limited} of 30 joins refused");
    assert!(matches!(
        c.call(Request::Ping).await,
        Ok(Response::Pong { .. })
    ));
    assert!(server.metric("roger_fanout_limited_total{method=\"join\"}") >= 1.0);
}
