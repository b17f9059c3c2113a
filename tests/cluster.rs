//! A local cluster for tests and benchmarks: a private `redis-server` (no files) and
//! `roger-server` nodes on loopback ports, started with the documented command line.

use crate::{free_port, have, http_get, skip_or_panic, Server};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private Redis: no persistence, loopback only, killed on drop.
pub struct Redis {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
}

impl Redis {
    /// Starts one, or returns None (after saying why) where `redis-server` is missing
    /// and this is not CI.
    pub fn start() -> Option<Redis> {
        if !have("redis-server") {
            skip_or_panic("redis-server is not installed (apt install redis-server)");
            return None;
        }
        let mut r = Redis {
            child: None,
            port: free_port(),
        };
        r.restart();
        Some(r)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL: everything in it is gone).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let pong = Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "ping"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"));
            if pong {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Redis and `n` nodes named `a`, `b`, `c`, ...
pub struct Cluster {
    /// The shared Redis.
    pub redis: Redis,
    /// The nodes, in name order.
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// Starts Redis and `n` nodes (each with `extra_toml`) and waits until every node
    /// sees all of them; None where Redis is missing outside CI.
    pub fn start(n: usize, extra_toml: &str) -> Option<Cluster> {
        let redis = Redis::start()?;
        let nodes = (0..n)
            .map(|i| {
                let id = ((b'a' + i as u8) as char).to_string();
                Server::start_node(&redis.url(), &id, extra_toml)
            })
            .collect();
        let c = Cluster { redis, nodes };
        c.wait_nodes(n, Duration::from_secs(10));
        Some(c)
    }

    /// Every node's URL, in order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Server::url).collect()
    }

    /// Waits until every running node counts `n` live nodes.
    pub fn wait_nodes(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let seen: Vec<f64> = self
                .nodes
                .iter()
                .filter(|s| s.pid().is_some())
                .map(|s| s.metric("roger_cluster_nodes"))
                .collect();
            if seen.iter().all(|&k| k as usize == n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes see {seen:?} live nodes, not {n}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `/healthz` of node `i`.
    pub fn health(&self, i: usize) -> String {
        http_get(self.nodes[i].addr, "/healthz").unwrap_or_default()
    }
}

impl Cluster {
    /// Node `i`'s relay address, as it registered it in Redis.
    pub fn relay_addr(&self, i: usize) -> std::net::SocketAddr {
        let id = ((b'a' + i as u8) as char).to_string();
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &self.redis.port.to_string(),
                "GET",
                &format!("roger:node:{id}"),
            ])
            .output()
            .expect("redis-cli");
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("the node's registry entry is JSON");
        v["relay"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("a relay address")
    }
}

/// When `c` heard audio again after the outage that began about `after`: the frame
/// after the longest silence among those heard since, once a second of audio followed
/// it (None until then).
pub fn heard_again(c: &crate::TestClient, after: Instant) -> Option<Instant> {
    let heard = c.heard.lock().expect("heard");
    let times: Vec<Instant> = heard
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t >= after)
        .collect();
    let mut best: Option<(Duration, usize)> = None;
    let mut prev = after;
    for (i, t) in times.iter().enumerate() {
        let gap = *t - prev;
        if best.is_none_or(|(g, _)| gap > g) {
            best = Some((gap, i));
        }
        prev = *t;
    }
    let (_, i) = best?;
    (times.len() - i >= 50).then(|| times[i])
}

/// Alice on node 0 talking noise in `general` (the task), heard by bob on node 1 through
/// the relay.
pub struct AcrossNodes {
    /// The talker, on node 0 (she learns the others from `welcome`).
    pub alice: std::sync::Arc<crate::TestClient>,
    /// The listener, on node 1.
    pub bob: crate::TestClient,
    /// Alice's talk, running.
    pub talk: tokio::task::JoinHandle<roger_client::FloorOutcome>,
}

impl Cluster {
    /// Alice (node 0) starts talking `seconds` in `general`; returns once bob (node 1)
    /// has heard a second of her (panics after 10 s).
    pub async fn alice_talks_to_bob(&self, seconds: f64) -> AcrossNodes {
        let general = roger_protocol::ChannelId::from("general");
        let on = |i: usize, user: &str| {
            crate::client_config(
                &self.nodes[i].url(),
                &self.nodes[i].token(user, &["general"]),
            )
        };
        let alice = std::sync::Arc::new(crate::TestClient::connect(on(0, "alice")).await);
        let bob = crate::TestClient::connect(on(1, "bob")).await;
        alice.mgr.join(&general).await.expect("alice joins");
        bob.mgr.join(&general).await.expect("bob joins");
        let started = Instant::now();
        let talker = alice.clone();
        let talk = tokio::spawn(async move { talker.talk("general", seconds).await });
        while bob.frames_since(started) < 50 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "bob never heard alice across nodes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        AcrossNodes { alice, bob, talk }
    }
}

/// Waits (up to `within`) for [`heard_again`].
pub async fn wait_heard_again(
    c: &crate::TestClient,
    after: Instant,
    within: Duration,
) -> Option<Instant> {
    loop {
        if let Some(t) = heard_again(c, after) {
            return Some(t);
        }
        if after.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
