//! Two people talk through a real roger-server: audio arrives intact, the floor admits
//! one talker at a time, and a late joiner hears the current speaker at once.

use roger_e2e::audio::{best_lag, read};
use roger_e2e::{speech_wav, Bot, Server, TempDir};
use std::time::Duration;

const S: Duration = Duration::from_secs(1);

fn floor_lines(lines: &[serde_json::Value], state: &str) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter(|v| v["event"] == "floor" && v["state"] == state)
        .cloned()
        .collect()
}

#[test]
fn alice_is_heard_by_bob_carol_waits_her_turn_and_a_late_joiner_hears_at_once() {
    let server = Server::start("");
    let dir = TempDir::new("talk");
    let speech = speech_wav();
    let bob_wav = dir.join("bob.wav");
    let dave_wav = dir.join("dave.wav");

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
            "20",
        ],
    );
    bob.wait_event(10 * S, "joined");

    // Alice talks for 9 s (the fixture three times in one transmission).
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
    alice.wait_for(10 * S, "floor granted", |v| {
        v["event"] == "floor" && v["state"] == "granted"
    });

    // Carol is denied while Alice holds the floor, and says so.
    let carol = Bot::spawn(
        &server,
        &server.token("carol", &["general"]),
        &[
            "talk",
            "--channel",
            "general",
            "--wav",
            speech.to_str().unwrap(),
        ],
    );
    let (ok, lines, stderr) = carol.wait(15 * S);
    assert!(!ok, "carol's talk must fail while alice talks");
    assert!(stderr.contains("FLOOR_DENIED"), "stderr: {stderr}");
    let denied = floor_lines(&lines, "denied");
    assert_eq!(denied.len(), 1, "{lines:#?}");
    assert_eq!(denied[0]["by"], "alice");
    assert!(lines
        .iter()
        .any(|v| v["event"] == "error" && v["code"] == "FLOOR_DENIED"));

    // Dave joins mid-transmission and hears Alice within 150 ms of joining.
    let dave = Bot::spawn(
        &server,
        &server.token("dave", &["general"]),
        &[
            "listen",
            "--channel",
            "general",
            "--out",
            dave_wav.to_str().unwrap(),
            "--seconds",
            "1.5",
        ],
    );
    let (ok, lines, stderr) = dave.wait(15 * S);
    assert!(ok, "dave failed: {stderr}");
    let joining = lines
        .iter()
        .find(|v| v["event"] == "joining")
        .expect("joining line");
    let first = lines
        .iter()
        .find(|v| v["event"] == "first_audio")
        .unwrap_or_else(|| panic!("dave heard nothing: {lines:#?}"));
    let waited = first["t_ms"].as_u64().unwrap() - joining["t_ms"].as_u64().unwrap();
    println!("late joiner heard audio {waited} ms after joining");
    assert!(waited <= 150, "late joiner waited {waited} ms");

    let (ok, lines, stderr) = alice.wait(20 * S);
    assert!(ok, "alice failed: {stderr}");
    assert_eq!(floor_lines(&lines, "released").len(), 1);
    let sent = lines.iter().rev().find(|v| v["event"] == "audio").unwrap()["frames_sent"]
        .as_u64()
        .unwrap();
    assert_eq!(sent, 450, "9 s of 20 ms frames");

    // With the floor free, Carol is granted.
    let carol = Bot::spawn(
        &server,
        &server.token("carol", &["general"]),
        &[
            "talk",
            "--channel",
            "general",
            "--wav",
            speech.to_str().unwrap(),
        ],
    );
    let (ok, lines, stderr) = carol.wait(15 * S);
    assert!(ok, "carol failed after alice released: {stderr}");
    assert_eq!(floor_lines(&lines, "granted").len(), 1);

    let (ok, lines, stderr) = bob.wait(25 * S);
    assert!(ok, "bob failed: {stderr}");
    let taken: Vec<_> = floor_lines(&lines, "taken")
        .iter()
        .map(|v| v["by"].clone())
        .collect();
    assert_eq!(taken, ["alice", "carol"]);
    let received = lines.iter().rev().find(|v| v["event"] == "audio").unwrap()["frames_received"]
        .as_u64()
        .unwrap();
    assert!(received >= 590, "bob received {received} of 600 frames");

    // Bob's recording matches the source.
    let reference = read(&speech);
    let recorded = read(&bob_wav);
    let (lag, corr) = best_lag(&reference, &recorded, 48_000);
    println!("bob's recording: lag {lag} samples, correlation {corr:.3}");
    assert!(corr >= 0.9, "correlation {corr:.3} at lag {lag}");
    // Carol's transmission, later in the same recording, matches too.
    let alice_end = lag + 450 * 960;
    let carol_start = alice_end
        + recorded[alice_end..]
            .iter()
            .position(|s| s.unsigned_abs() > 1000)
            .expect("carol's transmission is in bob's recording");
    let tail = &recorded[carol_start.saturating_sub(9_600)..];
    let (_, corr2) = best_lag(&reference, tail, 19_200);
    assert!(corr2 >= 0.9, "carol's part: correlation {corr2:.3}");
}
