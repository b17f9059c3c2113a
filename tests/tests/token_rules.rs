//! What a token must be, on a real server: a secret too short to be safe is refused at
//! start; `nbf` is honoured; a pinned `iss` and `aud` are required and checked.

use roger_e2e::{bin, RawClient, Server, TempDir};
use roger_protocol::*;
use roger_server::auth::{unix_now, Claims};
use std::process::Command;

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
