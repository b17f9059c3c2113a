//! What a token must be, on a real server: a secret too short to be safe is refused at
//! start; `nbf` is honoured; a pinned `iss` and `aud` are required and checked; a token
//! is good only for as long as it says (a live session ends at `exp`, its resume token
//! dies with it), and `roger-server revoke` ends a user's sessions and voids their older
//! tokens, also after a restart.

use roger_e2e::{bin, RawClient, Server, TempDir};
use roger_protocol::*;
use roger_server::auth::{unix_now, Claims};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_server_with_a_short_secret_refuses_to_start_and_says_why() {
    let dir = TempDir::new("short-secret");
    let config = dir.join("roger.toml");
    std::fs::write(&config, "jwt_secret = \"only-twenty-one-bytes\"\n").unwrap();
    let out = Command::new(bin("roger-server"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run roger-server");
    assert!(!out.status.success(), "it started with a 21-byte secret");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("21 bytes") && stderr.contains("at least 32"),
        "{stderr}"
    );
}

fn claims(iss: Option<&str>, aud: Option<&str>, nbf: Option<u64>) -> Claims {
    Claims {
        sub: "ada".into(),
        name: "Ada".into(),
        channels: vec!["general".into()],
        exp: unix_now() + 600,
        iat: Some(unix_now()),
        nbf,
        iss: iss.map(str::to_owned),
        aud: aud.map(str::to_owned),
    }
}

async fn hello(server: &Server, claims: &Claims) -> Result<Response, ErrorBody> {
    RawClient::connect(server)
        .await
        .hello(&server.sign(claims))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbf_is_honoured_and_a_pinned_issuer_and_audience_are_checked() {
    let server = Server::start("jwt_issuer = \"roger-ops\"\njwt_audience = \"crew\"\n");
    let ok = claims(Some("roger-ops"), Some("crew"), None);
    assert!(matches!(
        hello(&server, &ok).await,
        Ok(Response::Welcome(_))
    ));
    for (bad, why) in [
        (claims(None, Some("crew"), None), "iss"),
        (claims(Some("mallory"), Some("crew"), None), "iss"),
        (claims(Some("roger-ops"), None, None), "aud"),
        (claims(Some("roger-ops"), Some("payroll"), None), "aud"),
        (
            claims(Some("roger-ops"), Some("crew"), Some(unix_now() + 300)),
            "nbf",
        ),
    ] {
        let e = hello(&server, &bad).await.expect_err("refused");
        assert_eq!(e.code, ErrorCode::TokenInvalid, "{bad:?}");
        assert!(e.message.contains(why), "{bad:?}: {e:?}");
    }
    // A token whose nbf has passed is good.
    let now = claims(Some("roger-ops"), Some("crew"), Some(unix_now() - 1));
    assert!(matches!(
        hello(&server, &now).await,
        Ok(Response::Welcome(_))
    ));
}

/// Pings every 500 ms until the server says something other than `pong` or closes:
/// returns the error notifications seen and the close code.
async fn ping_until_told(c: &mut RawClient, within: Duration) -> (Vec<ErrorBody>, Option<u16>) {
    let deadline = Instant::now() + within;
    let mut errors = Vec::new();
    'pinging: while Instant::now() < deadline {
        if !c.try_send(Request::Ping).await {
            break;
        }
        let next_ping = Instant::now() + Duration::from_millis(500);
        while let Some(left) = next_ping.checked_duration_since(Instant::now()) {
            match c.try_recv(left).await {
                Some(ServerMessage::Notification(Notification::Error(e))) => {
                    errors.push(e);
                    break 'pinging;
                }
                Some(_) => {}
                None if Instant::now() < next_ping => break 'pinging, // closed
                None => {}
            }
        }
    }
    (errors, c.close_code(Duration::from_secs(2)).await)
}

async fn resume(server: &Server, token: &str) -> Result<Response, ErrorBody> {
    RawClient::connect(server)
        .await
        .call(Request::Resume {
            protocol_version: PROTOCOL_VERSION,
            resume_token: token.to_owned(),
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_token_expires_and_cannot_be_resumed_after() {
    let server = Server::start("");
    let mut short = claims(None, None, None);
    short.exp = unix_now() + 5;
    let t0 = Instant::now();
    let mut c = RawClient::connect(&server).await;
    let Ok(Response::Welcome(w)) = c.hello(&server.sign(&short)).await else {
        panic!("hello with a 5 s token");
    };
    let (errors, code) = ping_until_told(&mut c, Duration::from_secs(10)).await;
    let ended = t0.elapsed();
    println!("session ended {ended:?} after hello: {errors:?}, close {code:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code, ErrorCode::TokenExpired);
    assert_eq!(code, Some(1008));
    assert!(
        ended >= Duration::from_secs(3) && ended <= Duration::from_millis(6_500),
        "ended {ended:?} after a token with 4-5 s left"
    );
    // Its resume token is refused with the real reason.
    let e = resume(&server, &w.resume_token).await.expect_err("refused");
    assert_eq!(e.code, ErrorCode::TokenExpired, "{e:?}");
    assert!(server.metric("roger_sessions_ended_total{why=\"token_expired\"}") >= 1.0);
}

fn revoke(server: &Server, user: &str) {
    let out = Command::new(bin("roger-server"))
        .arg("--data-dir")
        .arg(&server.dir.0)
        .args(["revoke", "--user", user])
        .output()
        .expect("run roger-server revoke");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_ends_a_live_session_and_voids_older_tokens_across_a_restart() {
    let mut server = Server::start("");
    let old = server.token("ada", &["general"]);
    let mut c = RawClient::connect(&server).await;
    let Ok(Response::Welcome(w)) = c.hello(&old).await else {
        panic!("hello");
    };
    let bystander = server.token("bea", &["general"]);
    let mut b = RawClient::connect(&server).await;
    assert!(matches!(
        b.hello(&bystander).await,
        Ok(Response::Welcome(_))
    ));

    let t0 = Instant::now();
    revoke(&server, "ada");
    let (errors, code) = ping_until_told(&mut c, Duration::from_secs(5)).await;
    println!(
        "ada's session ended {:?} after revoke: {errors:?}",
        t0.elapsed()
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code, ErrorCode::TokenInvalid);
    assert!(errors[0].message.contains("revoked"), "{errors:?}");
    assert_eq!(code, Some(1008));
    assert!(t0.elapsed() < Duration::from_secs(3));
    // Bea is untouched.
    assert!(matches!(
        b.call(Request::Ping).await,
        Ok(Response::Pong { .. })
    ));
    // The old token and the session's resume token are refused.
    let mut again = RawClient::connect(&server).await;
    let e = again.hello(&old).await.expect_err("old token refused");
    assert_eq!(e.code, ErrorCode::TokenInvalid);
    let e = resume(&server, &w.resume_token)
        .await
        .expect_err("resume refused");
    assert_eq!(e.code, ErrorCode::TokenInvalid);

    // After a restart, still refused; a token issued after the revocation is good.
    server.relaunch_with_log("info");
    let mut again = RawClient::connect(&server).await;
    let e = again
        .hello(&old)
        .await
        .expect_err("old token refused after restart");
    assert_eq!(e.code, ErrorCode::TokenInvalid);
    std::thread::sleep(Duration::from_millis(1_100));
    let fresh = server.token("ada", &["general"]);
    let mut again = RawClient::connect(&server).await;
    assert!(matches!(
        again.hello(&fresh).await,
        Ok(Response::Welcome(_))
    ));
}

/// The client side of a token's end: a session whose token expires gets TOKEN_EXPIRED and
/// stops there (Failed, the code the app shows as "sign in again"), without trying to
/// resume or rejoin with a token that cannot work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_token_expires_stops_and_asks_for_a_sign_in() {
    let server = Server::start("");
    let mut short = claims(None, None, None);
    short.exp = unix_now() + 4;
    let client = roger_e2e::TestClient::connect(roger_e2e::client_config(
        &server.url(),
        &server.sign(&short),
    ))
    .await;
    let t0 = Instant::now();
    client
        .wait_status(Duration::from_secs(8), "Failed(TOKEN_EXPIRED)", |s| {
            matches!(s, roger_client::Status::Failed { code, .. } if *code == ErrorCode::TokenExpired)
        })
        .await;
    println!(
        "failed with TOKEN_EXPIRED {:?} after connecting",
        t0.elapsed()
    );
    assert_eq!(
        ErrorCode::TokenExpired.action(),
        ErrorAction::SignIn,
        "the app's banner offers a sign-in, not Rejoin"
    );
    let attempts = server.metric("reconnect_attempts_total");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        server.metric("reconnect_attempts_total"),
        attempts,
        "it kept trying to resume"
    );
    assert_eq!(
        server.metric("roger_sessions_created_total"),
        1.0,
        "it rejoined"
    );
}

/// TURN credentials handed out in `welcome` and `resumed` expire no later than the token
/// (the TURN REST username is `EXPIRY:USER`), even with a day-long TURN lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_credentials_never_outlive_the_token() {
    let server = Server::start(
        "[turn]\nurls = [\"turn:198.18.0.1:3478?transport=udp\"]\nsecret = \"turn-shared\"\nttl_s = 86400\n",
    );
    let expiry = |servers: &[IceServer]| -> u64 {
        let name = &servers.first().expect("a TURN server").username;
        name.split(':')
            .next()
            .unwrap()
            .parse()
            .expect("EXPIRY:USER")
    };
    let mut short = claims(None, None, None);
    short.exp = unix_now() + 120;
    let mut c = RawClient::connect(&server).await;
    let Ok(Response::Welcome(w)) = c.hello(&server.sign(&short)).await else {
        panic!("hello");
    };
    assert_eq!(
        expiry(&w.ice_servers),
        short.exp,
        "welcome's TURN credentials"
    );
    drop(c);
    let r = resume(&server, &w.resume_token).await;
    let Ok(Response::Resumed(r)) = r else {
        panic!("{r:?}");
    };
    assert_eq!(
        expiry(&r.ice_servers),
        short.exp,
        "resumed's TURN credentials"
    );
    // A long-lived token gets the configured lifetime.
    let mut c = RawClient::connect(&server).await;
    let Ok(Response::Welcome(w)) = c.hello(&server.token("bea", &["general"])).await else {
        panic!("hello");
    };
    let left = expiry(&w.ice_servers) - unix_now();
    assert!((3_500..=3_600).contains(&left), "an hour's token: {left} s");
}
