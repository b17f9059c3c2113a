//! `wss://` with rustls: a client trusting the server's CA connects and talks; a client
//! that does not trust it, or reaches it under another name, is refused with
//! `CERTIFICATE_INVALID` (and gives up at once: retrying cannot fix a certificate).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use roger_client::signaling::{tls_config, Signaling};
use roger_client::Status;
use roger_e2e::{client_config, TempDir, TestClient, TEST_SECRET};
use roger_protocol::{ChannelId, ErrorCode, Request, Response, PROTOCOL_VERSION};
use roger_server::auth::Authenticator;
use roger_server::config::Config;
use roger_server::hub::Hub;
use std::sync::Arc;
use std::time::Duration;

struct Pki {
    ca_pem: String,
    dir: TempDir,
}

/// A CA and a server certificate for `localhost` signed by it.
fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Roger test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let dir = TempDir::new("tls");
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        dir,
    }
}

/// An in-process server speaking wss:// with the PKI's certificate; returns its port.
async fn tls_server(pki: &Pki) -> (u16, Authenticator) {
    let mut config = Config::default();
    config.media.bind = vec!["127.0.0.1:0".into()];
    let auth = Authenticator::new(TEST_SECRET.as_bytes());
    let hub = Hub::new(Arc::new(config), auth.clone());
    let store =
        roger_server::tls::CertStore::load(&pki.dir.join("cert.pem"), &pki.dir.join("key.pem"))
            .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    tokio::spawn(roger_server::serve(
        tcp,
        Some(store),
        hub,
        None,
        std::future::pending(),
    ));
    (port, auth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_the_ca_connects_over_wss_and_talks() {
    let pki = pki();
    let (port, auth) = tls_server(&pki).await;
    let url = format!("wss://localhost:{port}/ws");
    let token = |u: &str| auth.issue(u, u, &["general".into()], Duration::from_secs(600));
    let general = ChannelId::from("general");
    let mut c = client_config(&url, &token("alice"));
    c.extra_ca_pem = Some(pki.ca_pem.clone());
    let alice = TestClient::connect(c).await;
    let mut c = client_config(&url, &token("bob"));
    c.extra_ca_pem = Some(pki.ca_pem.clone());
    let bob = TestClient::connect(c).await;
    alice.mgr.join(&general).await.unwrap();
    bob.mgr.join(&general).await.unwrap();
    let t = std::time::Instant::now();
    alice.talk("general", 1.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        bob.frames_since(t) >= 45,
        "bob heard {}",
        bob.frames_since(t)
    );
    alice.mgr.close().await;
    bob.mgr.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_or_misnamed_certificate_is_refused_with_certificate_invalid() {
    let pki = pki();
    let (port, auth) = tls_server(&pki).await;

    // Not trusting the CA (only the system roots).
    let e = Signaling::connect(
        &format!("wss://localhost:{port}/ws"),
        Duration::from_secs(2),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::CertificateInvalid, "{e}");

    // Trusting the CA, but reaching the server under a name the certificate lacks.
    let tls = tls_config(Some(&pki.ca_pem)).unwrap();
    let e = Signaling::connect_with(
        &format!("wss://127.0.0.1:{port}/ws"),
        Duration::from_secs(2),
        Some(tls.clone()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::CertificateInvalid, "{e}");

    // The right name works, and the protocol runs over it.
    let (sig, _events) = Signaling::connect_with(
        &format!("wss://localhost:{port}/ws"),
        Duration::from_secs(2),
        Some(tls),
    )
    .await
    .unwrap();
    let r = sig
        .request(Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: auth.issue(
                "carol",
                "Carol",
                &["general".into()],
                Duration::from_secs(60),
            ),
            client: "tls-test".into(),
        })
        .await
        .unwrap();
    assert!(matches!(r, Response::Welcome(_)));

    // Plain ws:// to a TLS port does not get through either.
    let e = Signaling::connect(&format!("ws://localhost:{port}/ws"), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::SignalingUnreachable, "{e}");

    // A manager refused this way gives up at once with the code (no retry loop).
    let token = auth.issue("dave", "Dave", &["general".into()], Duration::from_secs(60));
    let (mgr, _ev) = roger_client::ConnectionManager::start(
        client_config(&format!("wss://localhost:{port}/ws"), &token),
        Box::new(roger_client::NullSink),
    );
    let mut status = mgr.status();
    let failed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Status::Failed { code } = *status.borrow_and_update() {
                return code;
            }
            status.changed().await.unwrap();
        }
    })
    .await
    .expect("gave up within 5 s");
    assert_eq!(failed, ErrorCode::CertificateInvalid);
}

#[test]
fn bad_tls_files_are_refused_with_a_clear_error() {
    let dir = TempDir::new("badtls");
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    let e = roger_server::tls::acceptor(&dir.join("empty.pem"), &dir.join("empty.pem"))
        .err()
        .expect("an empty PEM is refused");
    assert!(e.to_string().contains("no certificate"), "{e}");
    let e = roger_server::tls::acceptor(&dir.join("missing.pem"), &dir.join("missing.pem"))
        .err()
        .expect("a missing file is refused");
    assert!(e.to_string().contains("cannot read"), "{e}");
    assert!(tls_config(Some("not a pem")).is_err());
}
