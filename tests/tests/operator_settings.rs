//! What an operator sets, on a real server process: `/metrics` on its own address and
//! behind a bearer token (and not on the public one), the TLS certificate reloaded on
//! SIGHUP for new connections without dropping a session already up, and media bound to
//! a configured UDP port range only.

use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use roger_e2e::{free_port, http_get, Server, TempDir};
use roger_protocol::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message;

/// A raw HTTP/1.0 GET with optional headers: (status line, body).
fn get(addr: SocketAddr, path: &str, headers: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

#[test]
fn metrics_live_on_their_own_address_behind_a_bearer_token() {
    let probe: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let port = free_port();
    // The test harness probes health on the metrics address (which serves /healthz).
    let server = Server::start_probed(
        port,
        probe,
        &format!("[metrics]\nlisten = \"{probe}\"\nbearer_token = \"scrape-me-please\"\n"),
    );
    let public: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        http_get(public, "/healthz").is_ok(),
        "the public address serves health"
    );
    let (status, _) = get(
        public,
        "/metrics",
        "Authorization: Bearer scrape-me-please\r\n",
    );
    assert!(
        status.contains("404"),
        "metrics on the public address: {status}"
    );
    let (status, body) = get(probe, "/metrics", "");
    assert!(status.contains("401"), "no token: {status} {body}");
    let (status, _) = get(probe, "/metrics", "Authorization: Bearer wrong\r\n");
    assert!(status.contains("401"), "wrong token: {status}");
    let (status, body) = get(
        probe,
        "/metrics",
        "Authorization: Bearer scrape-me-please\r\n",
    );
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("roger_connections_open"), "{body}");
    drop(server);
}

struct Pki {
    dir: TempDir,
    roots: rustls::RootCertStore,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Roger reload test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        Pki {
            dir: TempDir::new("reload"),
            roots,
            issuer: Issuer::new(ca, ca_key),
        }
    }

    /// Writes a fresh `localhost` certificate named `cn`; returns its DER.
    fn leaf(&self, cn: &str) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        // Written whole then renamed, as a certificate manager does.
        for (name, text) in [("cert.pem", cert.pem()), ("key.pem", key.serialize_pem())] {
            let tmp = self.dir.join(&format!("{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.dir.join(name)).unwrap();
        }
        cert.der().to_vec()
    }

    /// A TLS connection to `port`: the stream and the certificate the server showed.
    async fn connect(
        &self,
        port: u16,
    ) -> (
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        Vec<u8>,
    ) {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(self.roots.clone())
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .expect("handshake");
        let seen = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        (tls, seen)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_for_new_clients_and_keeps_sessions() {
    let pki = Pki::new();
    let first = pki.leaf("first");
    let probe: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let port = free_port();
    let server = Server::start_probed(
        port,
        probe,
        &format!(
            "[metrics]\nlisten = \"{probe}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.dir.join("cert.pem").display(),
            pki.dir.join("key.pem").display()
        ),
    );

    // A session over wss:// with the first certificate.
    let (tls, seen) = pki.connect(port).await;
    assert_eq!(seen, first);
    let url = format!("wss://localhost:{port}/ws");
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), tls)
        .await
        .expect("upgrade");
    let send = |id: u64, request: Request| Message::text(ClientMessage { id, request }.to_json());
    ws.send(send(
        1,
        Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: server.token("ada", &["general"]),
            client: "reload test".into(),
        },
    ))
    .await
    .unwrap();
    let answer = ws.next().await.unwrap().unwrap();
    assert!(answer.to_text().unwrap().contains("welcome"), "{answer:?}");

    // A new certificate on disk and SIGHUP.
    let second = pki.leaf("second");
    assert_ne!(first, second);
    let pid = server.pid().expect("running");
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, seen) = pki.connect(port).await;
        if seen == second {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The session from before the reload still answers.
    ws.send(send(2, Request::Ping)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .expect("an answer")
        .unwrap()
        .unwrap();
    assert!(answer.to_text().unwrap().contains("pong"), "{answer:?}");
    assert!(server.log_text().contains("certificate reloaded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_binds_only_the_configured_port_range_and_flows() {
    use roger_e2e::{client_config, TestClient};
    let (min, max) = (41_200u16, 41_263u16);
    let server = Server::start(&format!("[media]\nport_range = \"{min}-{max}\"\n"));
    let url = server.url();
    let alice =
        TestClient::connect(client_config(&url, &server.token("alice", &["general"]))).await;
    let bob = TestClient::connect(client_config(&url, &server.token("bob", &["general"]))).await;
    alice.mgr.join(&"general".into()).await.unwrap();
    bob.mgr.join(&"general".into()).await.unwrap();
    let before = bob.frames();
    alice.talk("general", 1.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        bob.frames() >= before + 45,
        "bob heard {}",
        bob.frames() - before
    );

    // Every UDP socket the server has open is in the range.
    let pid = server.pid().expect("running");
    let out = std::process::Command::new("ss")
        .args(["-uanp"])
        .output()
        .expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let ports: Vec<u16> = text
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    println!("server UDP ports: {ports:?}");
    assert!(
        ports.len() >= 4,
        "two transports per session: {ports:?}\n{text}"
    );
    assert!(
        ports.iter().all(|p| (min..=max).contains(p)),
        "a port outside {min}-{max}: {ports:?}"
    );
    alice.mgr.close().await;
    bob.mgr.close().await;
}
