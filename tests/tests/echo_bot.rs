//! The echo bot plays each transmission back after the talker releases: a radio check
//! for one person.

use roger_e2e::audio::{best_lag, read};
use roger_e2e::{speech_wav, Bot, Server, TempDir};
use std::time::Duration;

const S: Duration = Duration::from_secs(1);

#[test]
fn the_echo_bot_plays_a_transmission_back_after_release() {
    let server = Server::start("");
    let dir = TempDir::new("echo");
    let heard = dir.join("heard.wav");
    let echo = Bot::spawn(
        &server,
        &server.token("echo-bot", &["echo"]),
        &["echo", "--channel", "echo"],
    );
    echo.wait_event(10 * S, "joined");
    let ears = Bot::spawn(
        &server,
        &server.token("ears", &["echo"]),
        &[
            "listen",
            "--channel",
            "echo",
            "--out",
            heard.to_str().unwrap(),
            "--seconds",
            "9",
        ],
    );
    ears.wait_event(10 * S, "joined");
    let speech = speech_wav();
    let alice = Bot::spawn(
        &server,
        &server.token("alice", &["echo"]),
        &[
            "talk",
            "--channel",
            "echo",
            "--wav",
            speech.to_str().unwrap(),
        ],
    );
    let (ok, _, stderr) = alice.wait(15 * S);
    assert!(ok, "alice: {stderr}");
    let (ok, lines, stderr) = ears.wait(15 * S);
    assert!(ok, "ears: {stderr}");
    let talkers: Vec<_> = lines
        .iter()
        .filter(|v| v["event"] == "floor" && v["state"] == "taken")
        .map(|v| v["by"].clone())
        .collect();
    assert_eq!(talkers, ["alice", "echo-bot"], "{lines:#?}");
    // The playback (second half of the recording) is the same speech. It went through
    // Opus twice (the bot decodes and re-encodes), hence a lower bar than a single pass.
    let recorded = read(&heard);
    let reference = read(&speech);
    let (lag, _) = best_lag(&reference, &recorded, 48_000);
    let after = lag + reference.len();
    let start = after
        + recorded[after..]
            .iter()
            .position(|s| s.unsigned_abs() > 1000)
            .expect("the echo is in the recording");
    let (_, corr) = best_lag(&reference, &recorded[start.saturating_sub(9_600)..], 19_200);
    println!("echo correlation {corr:.3}");
    assert!(corr >= 0.85, "echo correlation {corr:.3}");
}
