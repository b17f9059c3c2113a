//! `roger-bench`: the numbers `make bench` prints (and BENCHMARKS.md records).
//!
//! `roger-bench [foundation|recovery|scale|storm|audio|quality|app|hotkey|history|cluster|all]`
//! (default `all`).
//!
//! foundation: a real roger-server (in process, on loopback) and real roger-client
//! sessions:
//! - packet latency, talker -> server -> listener, per 20 ms frame (includes Opus
//!   encode and decode, which is what a user hears);
//! - floor access time, request sent -> grant received.
//!
//! recovery (root: network namespaces): a roger-server process in one namespace and a
//! roger-bot in another, with faults applied by nftables, over >= 20 trials each:
//! - dead-path detection (cut -> first non-Connected status),
//! - recovery after the path returns (restore -> Connected; 3 s cuts),
//! - roam recovery (address replaced -> recovered),
//! - server restart recovery (kill -9, restart on the same port -> Connected).
//!
//! scale and storm: see [`load`]; audio (mouth-to-ear, CPU): see [`audio`]; history
//! (replay latency, recording's cost): see [`history`].

mod app;
mod audio;
mod cluster;
mod history;
mod hotkey;
mod load;
mod quality;
mod tone;

use roger_client::audio::{AudioSink, AudioSource, Frame, FRAME_DURATION, FRAME_SAMPLES};
use roger_client::protocol::{ChannelId, Request, Response, PROTOCOL_VERSION};
use roger_client::signaling::Signaling;
use roger_client::{ClientConfig, ConnectionManager, FloorOutcome};
use roger_server::auth::Authenticator;
use roger_server::config::Config;
use roger_server::hub::Hub;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"roger-bench-secret";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, unit: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    println!(
        "{name}: n={} p50={:.3}{unit} p95={:.3}{unit} p99={:.3}{unit} max={:.3}{unit}",
        v.len(),
        percentile(&v, 0.50),
        percentile(&v, 0.95),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN),
    );
}

/// Paced frames of noise; remembers when each frame was handed to the encoder.
struct TimedSource {
    sent: Arc<Mutex<Vec<Instant>>>,
    left: usize,
    interval: tokio::time::Interval,
    x: u32,
}

#[async_trait::async_trait]
impl AudioSource for TimedSource {
    async fn next_frame(&mut self) -> Option<Frame> {
        if self.left == 0 {
            return None;
        }
        self.interval.tick().await;
        self.left -= 1;
        let frame = (0..FRAME_SAMPLES)
            .map(|_| {
                self.x = self.x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                ((self.x >> 16) as i16) / 8
            })
            .collect();
        self.sent.lock().unwrap().push(Instant::now());
        Some(frame)
    }
}

/// Records when each RTP timestamp was first played.
#[derive(Clone, Default)]
struct TimedSink {
    arrivals: Arc<Mutex<HashMap<u32, Instant>>>,
}

impl AudioSink for TimedSink {
    fn play(&mut self, _: &ChannelId, rtp_timestamp: u32, _: &[i16]) {
        self.arrivals
            .lock()
            .unwrap()
            .entry(rtp_timestamp)
            .or_insert_with(Instant::now);
    }
}

async fn start_server() -> (String, Authenticator) {
    let mut config = Config::default();
    config.media.bind = vec!["127.0.0.1:0".into()];
    config.limits.requests_per_second = 10_000;
    config.limits.request_burst = 10_000;
    // 300 floor requests back to back: far more than a person makes.
    config.limits.fanout_per_second = 10_000;
    config.limits.fanout_burst = 10_000;
    let auth = Authenticator::new(SECRET);
    let hub = Hub::new(Arc::new(config), auth.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    tokio::spawn(roger_server::serve(
        listener,
        None,
        hub,
        None,
        std::future::pending(),
    ));
    (url, auth)
}

/// Per-frame latency with the listener on `url` and the talker on `talker_url` (another
/// node of a cluster, or the same server); prints the report and returns the samples.
async fn packet_latency(
    url: &str,
    talker_url: &str,
    auth: &Authenticator,
    frames: usize,
    name: &str,
) -> Vec<f64> {
    let token = |u: &str| auth.issue(u, u, &["general".into()], Duration::from_secs(600));
    let general = ChannelId::from("general");
    let sink = TimedSink::default();
    let (bob, _bob_events) =
        ConnectionManager::connect(ClientConfig::new(url, token("bob")), Box::new(sink.clone()))
            .await
            .expect("bob connects");
    bob.join(&general).await.expect("bob joins");
    let (alice, _alice_events) = ConnectionManager::connect(
        ClientConfig::new(talker_url, token("alice")),
        Box::new(roger_client::NullSink),
    )
    .await
    .expect("alice connects");
    alice.join(&general).await.expect("alice joins");
    let sent = Arc::new(Mutex::new(Vec::with_capacity(frames)));
    let source = TimedSource {
        sent: sent.clone(),
        left: frames,
        interval: tokio::time::interval(FRAME_DURATION),
        x: 1,
    };
    let outcome = alice.talk(&general, Box::new(source)).await.expect("talk");
    assert!(matches!(outcome, FloorOutcome::Granted { .. }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = sent.lock().unwrap().clone();
    let arrivals = sink.arrivals.lock().unwrap().clone();
    let base = *arrivals
        .keys()
        .min_by_key(|ts| arrivals[ts])
        .expect("bob heard something");
    let mut latencies = Vec::new();
    for (ts, at) in &arrivals {
        let k = (ts.wrapping_sub(base) / FRAME_SAMPLES as u32) as usize;
        if let Some(t0) = sent.get(k) {
            latencies.push(at.duration_since(*t0).as_secs_f64() * 1000.0);
        }
    }
    println!("frames sent {}, received {}", sent.len(), arrivals.len());
    report(name, " ms", latencies.clone());
    alice.close().await;
    bob.close().await;
    latencies
}

async fn floor_access(url: &str, auth: &Authenticator, n: usize, name: &str) -> Vec<f64> {
    let (sig, _events) = Signaling::connect(url, Duration::from_secs(5))
        .await
        .expect("connect");
    let token = auth.issue(
        "fiona",
        "Fiona",
        &["general".into()],
        Duration::from_secs(600),
    );
    sig.request(Request::Hello {
        protocol_version: PROTOCOL_VERSION,
        token,
        client: "bench".into(),
    })
    .await
    .expect("hello");
    let general = ChannelId::from("general");
    sig.request(Request::Join {
        channel: general.clone(),
    })
    .await
    .expect("join");
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let r = sig
            .request(Request::FloorRequest {
                channel: general.clone(),
            })
            .await
            .expect("floor");
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert!(matches!(r, Response::FloorGranted { .. }), "{r:?}");
        sig.request(Request::FloorRelease {
            channel: general.clone(),
        })
        .await
        .expect("release");
    }
    report(name, " ms", times.clone());
    let _ = sig.request(Request::Bye).await;
    times
}

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    if what == "foundation" || what == "all" {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (url, auth) = start_server().await;
            println!("roger-bench foundation: server at {url}");
            floor_access(&url, &auth, 300, "floor access (request -> grant)").await;
            packet_latency(
                &url,
                &url,
                &auth,
                1000,
                "packet latency client->server->listener",
            )
            .await;
        });
    }
    if what == "recovery" || what == "all" {
        recovery::run(20);
    }
    if what == "scale" || what == "all" {
        load::scale();
    }
    if what == "storm" || what == "all" {
        load::storm();
    }
    if what == "audio" || what == "all" {
        audio::run();
    }
    if what == "quality" || what == "all" {
        quality::run();
    }
    if what == "app" || what == "all" {
        app::run();
    }
    if what == "hotkey" || what == "all" {
        hotkey::run();
    }
    if what == "history" || what == "all" {
        history::run();
    }
    if what == "cluster" || what == "all" {
        cluster::run();
    }
}

mod recovery {
    use super::report;
    use roger_e2e::netns::{self, Lab};
    use roger_e2e::timeline::first_status_after;
    use roger_e2e::{now_ms, Bot, Server, TempDir};
    use std::time::{Duration, Instant};

    fn wait_until(
        bot: &Bot,
        after: u64,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<u64> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(t) = first_status_after(&bot.lines(), after, &pred) {
                return Some(t);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    fn wait_recovered(bot: &Bot, after: u64, within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let found = bot
                .lines()
                .iter()
                .find(|v| v["event"] == "recovered" && v["t_ms"].as_u64().unwrap_or(0) >= after)
                .and_then(|v| v["t_ms"].as_u64());
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    pub fn run(trials: usize) {
        if !netns::available() {
            println!("roger-bench recovery: skipped (needs root, ip and nft)");
            return;
        }
        let lab = Lab::create();
        let mut server = Server::start_in_lab(&lab, "");
        let url = server.url_at(netns::SERVER_IP);
        let dir = TempDir::new("bench");
        let out = dir.join("heard.wav");
        let near = Bot::spawn_with(
            Some(&lab.client_ns),
            &url,
            &server.token("near", &["general"]),
            &[
                "listen",
                "--channel",
                "general",
                "--out",
                out.to_str().unwrap(),
                "--seconds",
                "3600",
                "--auto-rejoin",
                "1",
            ],
        );
        near.wait_event(Duration::from_secs(20), "joined");
        println!("roger-bench recovery: {trials} trials each (server and client in namespaces)");

        let (mut detect, mut recover) = (Vec::new(), Vec::new());
        for _ in 0..trials {
            std::thread::sleep(Duration::from_millis(1500));
            let cut = now_ms();
            lab.cut();
            let noticed = wait_until(&near, cut, Duration::from_secs(10), |s| s != "Connected");
            let held = Duration::from_millis(now_ms() - cut);
            std::thread::sleep(Duration::from_millis(3000).saturating_sub(held));
            lab.restore();
            let restored = now_ms();
            let back = wait_until(&near, restored, Duration::from_secs(30), |s| {
                s == "Connected"
            });
            match (noticed, back) {
                (Some(n), Some(b)) => {
                    detect.push((n - cut) as f64);
                    recover.push((b - restored) as f64);
                }
                _ => {
                    println!("  a cut trial did not complete (noticed {noticed:?}, back {back:?})")
                }
            }
        }
        report("dead-path detection (3 s cut, idle)", " ms", detect);
        report("recovery after the path returns (3 s cut)", " ms", recover);

        let mut roam = Vec::new();
        let mut at = netns::CLIENT_IP;
        for _ in 0..trials {
            std::thread::sleep(Duration::from_millis(1500));
            let to = if at == netns::CLIENT_IP {
                netns::ROAMED_IP
            } else {
                netns::CLIENT_IP
            };
            let t = now_ms();
            lab.readdress(at, to);
            at = to;
            match wait_recovered(&near, t, Duration::from_secs(15)) {
                Some(r) => roam.push((r - t) as f64),
                None => println!("  a roam trial did not recover"),
            }
            wait_until(&near, t, Duration::from_secs(15), |s| s == "Connected");
        }
        report("roam recovery (address change -> recovered)", " ms", roam);

        let mut restart = Vec::new();
        for _ in 0..trials {
            std::thread::sleep(Duration::from_millis(1500));
            server.kill9();
            let killed = now_ms();
            wait_until(&near, killed, Duration::from_secs(10), |s| s != "Connected");
            server.restart();
            let up = now_ms();
            match wait_until(&near, up, Duration::from_secs(30), |s| s == "Connected") {
                Some(b) => restart.push((b - up) as f64),
                None => println!("  a restart trial did not reconnect"),
            }
        }
        report(
            "server restart recovery (server healthy -> Connected)",
            " ms",
            restart,
        );
    }
}
