//! A stranger cannot take the server off the air with idle sockets: 1000 TCP sockets
//! that never send a request and 1000 upgraded WebSockets that never say `hello` (but
//! keep sending WebSocket pings) are all closed within their deadlines, the server stays
//! within its caps, the 1001st socket from one address is refused while another address
//! still gets in, and two bots talk normally throughout.

use futures_util::{SinkExt, StreamExt};
use roger_e2e::audio::{best_lag, read};
use roger_e2e::{metric_value, speech_wav, Bot, Server, TempDir};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const HEADER_MS: u64 = 2_000;
const HELLO_MS: u64 = 2_000;
const N: usize = 1_000;

/// A TCP connection to `server` from the loopback address `from`.
async fn connect_from(from: &str, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().expect("addr"))?;
    socket.connect(server).await
}

/// How long a test waits for a socket the server should have closed.
const GIVE_UP: Duration = Duration::from_secs(20);

/// Waits until `stream` is closed by the server (at most [`GIVE_UP`]); returns when.
async fn closed_at(mut stream: TcpStream) -> Instant {
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(GIVE_UP, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    Instant::now()
}

#[test]
fn idle_strangers_are_closed_in_time_capped_per_address_and_talk_goes_on() {
    // 2000 sockets on each side of loopback, plus the servers' own: the server fits its
    // caps to half its descriptor limit, so this needs a hard limit of 8192 or more.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    assert!(
        limit >= 8192,
        "the open-file hard limit is {limit}: raise it (ulimit -Hn 65536) to run this test"
    );
    let server = Server::start(&format!(
        "[admission]\nheader_timeout_ms = {HEADER_MS}\nhello_timeout_ms = {HELLO_MS}\n\
         max_connections = 2100\nmax_connections_per_address = {N}\n\
         max_pending = 2100\nmax_pending_per_address = {N}\n"
    ));
    let dir = TempDir::new("admission");
    let speech = speech_wav();
    let bob_wav = dir.join("bob.wav");
    let bob = Bot::spawn(
        &server,
        &server.token("bob", &["general"]),
        &[
            "listen",
            "--channel",
            "general",
            "--out",
            bob_wav.to_str().unwrap(),
            "--seconds",
            "14",
        ],
    );
    bob.wait_event(Duration::from_secs(10), "joined");
    // Alice talks for 9 s while the strangers come and are shown out.
    let alice = Bot::spawn(
        &server,
        &server.token("alice", &["general"]),
        &[
            "talk",
            "--channel",
            "general",
            "--wav",
            speech.to_str().unwrap(),
            "--repeat",
            "3",
        ],
    );
    alice.wait_for(Duration::from_secs(10), "floor granted", |v| {
        v["event"] == "floor" && v["state"] == "granted"
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = server.addr;
    let url = server.url();
    let (silent, upgraded, refused_quickly, metrics_mid) = rt.block_on(async {
        let t0 = Instant::now();
        // 1000 silent sockets from 127.0.0.2.
        // Each is watched from the moment it is open, so its close time is its own.
        let mut silent = Vec::new();
        for _ in 0..N {
            let s = connect_from("127.0.0.2", addr).await.expect("connect");
            silent.push(tokio::spawn(closed_at(s)));
        }
        // The 1001st from the same address is closed unread; 127.0.0.3 still gets in.
        let extra = connect_from("127.0.0.2", addr).await.expect("connect");
        let refused = tokio::time::timeout(Duration::from_millis(500), closed_at(extra))
            .await
            .is_ok();
        // 1000 upgraded sockets from 127.0.0.3 that never say hello and ping every 300 ms.
        let mut upgraded = Vec::new();
        for _ in 0..N {
            let tcp = connect_from("127.0.0.3", addr).await.expect("connect");
            let (ws, _) = tokio_tungstenite::client_async(url.as_str(), tcp)
                .await
                .expect("another address still gets in and upgrades");
            upgraded.push(tokio::spawn(async move {
                let (mut tx, mut rx) = ws.split();
                let mut code = None;
                let mut tick = tokio::time::interval(Duration::from_millis(300));
                let give_up = tokio::time::sleep(GIVE_UP);
                tokio::pin!(give_up);
                loop {
                    tokio::select! {
                        _ = &mut give_up => return (Instant::now(), code),
                        _ = tick.tick() => { let _ = tx.send(Message::Ping(vec![1].into())).await; }
                        m = rx.next() => match m {
                            Some(Ok(Message::Close(Some(f)))) => code = Some(u16::from(f.code)),
                            Some(Ok(_)) => {}
                            None | Some(Err(_)) => return (Instant::now(), code),
                        },
                    }
                }
            }));
        }
        let opened = t0.elapsed();
        println!("opened {N} silent and {N} upgraded sockets in {opened:?}");
        let metrics_mid = roger_e2e::http_get(addr, "/metrics").unwrap_or_default();
        let silent: Vec<Instant> = futures_util::future::join_all(silent)
            .await
            .into_iter()
            .map(|r| r.expect("task"))
            .collect();
        let upgraded = futures_util::future::join_all(upgraded).await;
        let silent: Vec<Duration> = silent.iter().map(|t| t.duration_since(t0)).collect();
        let upgraded: Vec<(Duration, Option<u16>)> = upgraded
            .into_iter()
            .map(|r| r.expect("task"))
            .map(|(t, c)| (t.duration_since(t0), c))
            .collect();
        (silent, upgraded, refused, metrics_mid)
    });

    let (ok, _, stderr) = alice.wait(Duration::from_secs(20));
    assert!(ok, "alice failed: {stderr}");
    let (ok, _, stderr) = bob.wait(Duration::from_secs(20));
    assert!(ok, "bob failed: {stderr}");

    assert!(
        refused_quickly,
        "the 1001st socket from one address was not refused"
    );
    let worst_silent = silent.iter().max().unwrap();
    println!("silent sockets closed by {worst_silent:?} (header timeout {HEADER_MS} ms)");
    assert!(
        *worst_silent < Duration::from_millis(HEADER_MS + 4_000),
        "a silent socket stayed open {worst_silent:?}"
    );
    let worst_ws = upgraded.iter().map(|(t, _)| *t).max().unwrap();
    println!("hello-less sockets closed by {worst_ws:?} (hello deadline {HELLO_MS} ms)");
    assert!(
        worst_ws < Duration::from_millis(HELLO_MS + 8_000),
        "a hello-less socket stayed open {worst_ws:?}"
    );
    let with_1008 = upgraded.iter().filter(|(_, c)| *c == Some(1008)).count();
    assert!(
        with_1008 >= N * 99 / 100,
        "only {with_1008} closed with 1008"
    );

    // Within the caps, and each refusal and deadline counted.
    let open_mid = metric_value(&metrics_mid, "roger_connections_open");
    assert!(open_mid <= 2100.0, "{open_mid} open connections");
    let m = server.metrics();
    let count = |name: &str| metric_value(&m, name);
    assert!(count("roger_admission_refused_total{reason=\"connections_per_address\"}") >= 1.0);
    assert!(count("roger_header_timeouts_total{phase=\"http\"}") >= N as f64);
    assert!(count("roger_hello_timeouts_total") >= (N * 99 / 100) as f64);
    assert!(count("roger_connections_pending") <= 2.0, "{m}");

    // Bob heard all three repeats, each matching the source.
    let reference = read(&speech);
    let recorded = read(&bob_wav);
    let (lag, corr) = best_lag(&reference, &recorded, 48_000 * 3);
    println!("bob's recording: lag {lag} samples, correlation {corr:.3}");
    assert!(corr >= 0.9, "correlation {corr:.3} at lag {lag}");
    for k in 1..3 {
        let from = lag + k * reference.len() - 4_800;
        let piece = &recorded[from.min(recorded.len())..];
        let (_, c) = best_lag(&reference, piece, 9_600);
        println!("repeat {k}: correlation {c:.3}");
        assert!(
            c >= 0.9,
            "repeat {k} (said while strangers were at the door): {c:.3}"
        );
    }
}
