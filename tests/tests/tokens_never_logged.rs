//! Tokens are credentials: the server never writes them (JWTs, resume tokens) to its
//! logs, not even at debug level, whatever happens to them.

use roger_e2e::{RawClient, Server};
use roger_protocol::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_appears_in_the_server_log_even_at_debug_level() {
    let mut server = Server::start("[session]\ngrace_ms = 5000\n");
    server.relaunch_with_log("debug");
    let good = server.token("alice", &["general"]);
    let expired = server.sign(&roger_server::auth::Claims {
        sub: "eve".into(),
        name: "Eve".into(),
        channels: vec!["general".into()],
        exp: roger_server::auth::unix_now() - 60,
        ..Default::default()
    });
    let forged = roger_server::auth::Authenticator::new(b"other-secret").issue(
        "mallory",
        "Mallory",
        &["general".into()],
        Duration::from_secs(600),
    );

    let mut c = RawClient::connect(&server).await;
    let Ok(Response::Welcome(w)) = c.hello(&good).await else {
        panic!("no welcome")
    };
    c.call(Request::Join {
        channel: "general".into(),
    })
    .await
    .unwrap();
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = RawClient::connect(&server).await;
    let Ok(Response::Resumed(r)) = c
        .call(Request::Resume {
            protocol_version: PROTOCOL_VERSION,
            resume_token: w.resume_token.clone(),
        })
        .await
    else {
        panic!("no resume")
    };
    for bad in [&expired, &forged] {
        let mut x = RawClient::connect(&server).await;
        assert!(x.hello(bad).await.is_err());
    }
    // A token inside a malformed frame is not echoed into the log either.
    let mut x = RawClient::connect(&server).await;
    x.send_text(format!(
        r#"{{"id":1,"method":"hello","params":{{"token":"{good}"}}}}"#
    ))
    .await;
    let _ = x.try_recv(Duration::from_secs(1)).await;
    assert_eq!(c.call(Request::Bye).await, Ok(Response::Goodbye));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let log = server.log_text();
    assert!(
        log.contains("session created"),
        "the log is being written:\n{log}"
    );
    for (what, secret) in [
        ("valid token", good.as_str()),
        ("expired token", expired.as_str()),
        ("forged token", forged.as_str()),
        ("resume token", w.resume_token.as_str()),
        ("new resume token", r.resume_token.as_str()),
    ] {
        // The signature part alone must not leak either.
        let tail = secret.rsplit('.').next().unwrap_or(secret);
        assert!(!log.contains(tail), "the {what} is in the server log");
    }
}
