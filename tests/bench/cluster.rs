//! `roger-bench cluster`: nodes of a cluster (real `roger-server` processes on one
//! `redis-server`, all on loopback).
//!
//! - hop: per-frame latency with the listener on the talker's node and on another node
//!   (the relay hop), alternated; and floor access (request -> grant) on a single server
//!   and on a cluster node (the lease in Redis in the path), alternated.
//! - node death: `kill -9` of the talker's node, never restarted: time until a listener
//!   on a surviving node hears the talker again (>= 10 trials, a fresh cluster each).
//! - failover: three nodes, 600 clients in 4 channels (200 per node, the talkers on the
//!   node that dies), one node killed: how long until each of its clients is back on a
//!   survivor, and whether its listeners hear the talkers again.

use super::{floor_access, packet_latency, report};
use roger_e2e::cluster::{wait_heard_again, AcrossNodes, Cluster};
use roger_e2e::{bin, now_ms, Bot, Server, TempDir, TEST_SECRET};
use roger_server::auth::Authenticator;
use std::process::Command;
use std::time::{Duration, Instant};

/// Everything.
pub fn run() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(hop_and_floor());
    rt.block_on(node_death(10));
    failover(600);
}

async fn hop_and_floor() {
    let Some(cl) = Cluster::start(2, "[limits]\nrequests_per_second = 10000\nrequest_burst = 10000\nfanout_per_second = 10000\nfanout_burst = 10000\n")
    else {
        return;
    };
    let single = Server::start(
        "[limits]\nrequests_per_second = 10000\nrequest_burst = 10000\nfanout_per_second = 10000\nfanout_burst = 10000\n",
    );
    let auth = Authenticator::new(TEST_SECRET.as_bytes());
    let (a, b) = (cl.nodes[0].url(), cl.nodes[1].url());
    let (mut same, mut cross) = (Vec::new(), Vec::new());
    for round in 0..2 {
        println!("cluster hop, round {round}:");
        same.extend(packet_latency(&a, &a, &auth, 500, "  listener on the talker's node").await);
        cross.extend(packet_latency(&b, &a, &auth, 500, "  listener on another node").await);
    }
    let p = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        super::percentile(v, q)
    };
    let (s50, s95) = (p(&mut same, 0.5), p(&mut same, 0.95));
    let (c50, c95) = (p(&mut cross, 0.5), p(&mut cross, 0.95));
    println!(
        "cross-node hop: added latency p50 {:.3} ms, p95 {:.3} ms (same node p50 {s50:.3} / p95 {s95:.3} ms, \
         other node p50 {c50:.3} / p95 {c95:.3} ms; 1000 frames each, alternated)",
        c50 - s50,
        c95 - s95
    );
    // A listener on the other node, so the channel spans nodes while the floor moves.
    let dir = TempDir::new("hop");
    let ears = dir.join("ears.wav");
    let listener = Bot::spawn(
        &cl.nodes[1],
        &cl.nodes[1].token("ears", &["general"]),
        &[
            "listen",
            "--channel",
            "general",
            "--seconds",
            "60",
            "--out",
            ears.to_str().unwrap(),
        ],
    );
    listener.wait_event(Duration::from_secs(10), "joined");
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for round in 0..2 {
        println!("floor access, round {round}:");
        one.extend(floor_access(&single.url(), &auth, 200, "  single server").await);
        many.extend(floor_access(&a, &auth, 200, "  cluster node (lease in Redis)").await);
    }
    report("floor access, single server (request -> grant)", " ms", one);
    report(
        "floor access across nodes (request -> grant, Redis in the path)",
        " ms",
        many,
    );
    drop(listener);
}

async fn node_death(trials: usize) {
    let mut times = Vec::new();
    for trial in 0..trials {
        let Some(mut cl) = Cluster::start(2, "") else {
            return;
        };
        let AcrossNodes { alice, bob, talk } = cl.alice_talks_to_bob(8.0).await;
        cl.nodes[0].kill9();
        let killed = Instant::now();
        let again = wait_heard_again(&bob, killed, Duration::from_secs(15)).await;
        match again {
            Some(t) => {
                let ms = (t - killed).as_secs_f64() * 1000.0;
                println!("  trial {trial}: bob heard alice again {ms:.0} ms after her node died");
                times.push(ms);
            }
            None => println!("  trial {trial}: bob did not hear alice again within 15 s"),
        }
        let _ = talk.await;
        alice.mgr.close().await;
        bob.mgr.close().await;
    }
    report(
        &format!("node death (kill -9) -> listener on a survivor hears the talker again ({trials} trials)"),
        " ms",
        times,
    );
}

fn failover(clients: usize) {
    let channels: String = (0..4)
        .map(|i| format!("[[channels]]\nid = \"c{i}\"\n"))
        .collect();
    let Some(mut cl) = Cluster::start(3, &format!("[limits]\nmax_sessions = 5000\n{channels}"))
    else {
        return;
    };
    let dir = TempDir::new("failover");
    let per_node = clients / 3;
    let urls = cl.urls();
    let bots: Vec<Bot> = (0..3)
        .map(|i| {
            // Each node's clients know it first, then the others.
            let mut cmd = Command::new(bin("roger-bot"));
            for k in 0..3 {
                cmd.arg("--server").arg(&urls[(i + k) % 3]);
            }
            let tokens = super::load::tokens(&cl.nodes[i], &dir, &format!("n{i}"), per_node);
            cmd.args(["--json", "load", "--tokens", &tokens, "--clients"])
                .arg(per_node.to_string())
                .args(["--channel", "c0,c1,c2,c3", "--seconds", "30"]);
            if i == 0 {
                cmd.args(["--talker-every", "2", "--talk-seconds", "1.5"]);
            } else {
                cmd.arg("--listen-only");
            }
            Bot::spawn_command(cmd)
        })
        .collect();
    for b in &bots {
        b.wait_event(Duration::from_secs(120), "ready");
    }
    std::thread::sleep(Duration::from_secs(3));
    let killed_ms = now_ms();
    cl.nodes[0].kill9();
    // Well past the 10 s target, while the clients still run: where are they?
    std::thread::sleep(Duration::from_secs(12));
    let on_survivors: f64 = (1..3).map(|i| cl.nodes[i].metric("roger_sessions")).sum();
    let mut summaries = Vec::new();
    for b in bots {
        summaries.push(super::load::summary(b, Duration::from_secs(120)));
    }
    let storm = &summaries[0]["storm"];
    let mut back: Vec<f64> = storm["returns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["back_at_ms"].as_u64())
        .map(|t| t.saturating_sub(killed_ms) as f64)
        .collect();
    back.sort_by(f64::total_cmp);
    println!(
        "failover: {clients} clients on 3 nodes, node a killed: {} of its {per_node} clients dropped, \
         {} back on the survivors (the last {:.0} ms after the kill, p95 {:.0} ms), {} not back; \
         {} of its {} listeners hear the talkers again; survivors hold {on_survivors} sessions",
        storm["dropped"],
        back.len(),
        back.last().copied().unwrap_or(f64::NAN),
        super::percentile(&back, 0.95),
        storm["not_back"],
        storm["listeners_hearing_again"],
        storm["listeners_back"],
    );
    for (i, s) in summaries.iter().enumerate().skip(1) {
        println!(
            "  node {} listeners: {} dropped, packets received {} (loss {}%)",
            (b'a' + i as u8) as char,
            s["storm"]["dropped"],
            s["packets_received"],
            s["loss_percent"]
        );
    }
}
