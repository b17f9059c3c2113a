//! `roger-bench history`: how soon what was missed plays back, and what recording
//! costs the server ([`super::load::recording_cost`]).
//!
//! Replay (root: network namespaces, no added delay): bob listens in the client
//! namespace; his path is cut, alice talks 3 s beside the server, the path returns.
//! Measured: bob's `Connected` line after the restore -> his `missed_replay` line (the
//! history listed, the missed part fetched and decoded, its first frame handed to
//! playout at once).

use super::report;
use roger_e2e::netns;
use roger_e2e::scenario::{Scenario, Side, S};
use roger_e2e::{now_ms, speech_wav, Bot};

fn replay_latency(trials: usize) {
    if !netns::available() {
        println!("history replay: skipped (network namespaces need root)");
        return;
    }
    let Some(sc) = Scenario::start("bench-replay") else {
        return;
    };
    let bob = sc.listener(Side::Near, "bob", (trials * 12 + 20) as u32);
    let speech = speech_wav();
    let mut times = Vec::new();
    for trial in 0..trials {
        let seen = bob.lines().len();
        sc.lab.cut();
        let alice = Bot::spawn_with(
            Some(&sc.lab.server_ns),
            &sc.url,
            &sc.server.token("alice", &["general"]),
            &[
                "talk",
                "--channel",
                "general",
                "--wav",
                speech.to_str().expect("path"),
            ],
        );
        let (ok, _, stderr) = alice.wait(20 * S);
        assert!(ok, "alice: {stderr}");
        let restored = now_ms();
        sc.lab.restore();
        let connected = bob.find_after(seen, 20 * S, |v| {
            v["event"] == "status"
                && v["status"] == "Connected"
                && v["t_ms"].as_u64().unwrap_or(0) >= restored
        });
        let replay = bob.find_after(seen, 20 * S, |v| v["event"] == "missed_replay");
        match (connected, replay) {
            (Some(c), Some(r)) => {
                let ms =
                    r["t_ms"].as_f64().unwrap_or(f64::NAN) - c["t_ms"].as_f64().unwrap_or(f64::NAN);
                times.push(ms);
            }
            _ => println!("  trial {trial}: no replay after the restore"),
        }
        bob.find_after(seen, 20 * S, |v| v["event"] == "replay_done");
    }
    report(
        "history: connected again -> first replayed frame",
        " ms",
        times,
    );
    drop(bob);
}

/// `roger-bench history`.
pub fn run() {
    replay_latency(12);
    super::load::recording_cost();
}
