//! `roger-bot load` end to end, small: 12 clients in two channels, one talker each,
//! every packet counted and timed through a real server. Guards the load generator the
//! scale and storm benchmarks rely on (and the send-time stamps in Opus padding).

use roger_e2e::{bin, Bot, Server, TempDir};
use std::process::Command;
use std::time::Duration;

#[test]
fn twelve_clients_in_two_channels_lose_nothing_and_report_latency() {
    let server = Server::start("");
    let dir = TempDir::new("load");
    let tokens: Vec<String> = (0..12)
        .map(|i| server.token(&format!("load-{i}"), &["general", "echo"]))
        .collect();
    let path = dir.join("tokens");
    std::fs::write(&path, tokens.join("\n")).expect("tokens");
    let mut cmd = Command::new(bin("roger-bot"));
    cmd.arg("--server")
        .arg(server.url())
        .arg("--json")
        .arg("load")
        .arg("--tokens")
        .arg(&path)
        .args([
            "--clients",
            "12",
            "--channel",
            "general,echo",
            "--talker-every",
            "1.5",
            "--talk-seconds",
            "1",
            "--seconds",
            "4",
        ]);
    let bot = Bot::spawn_command(cmd);
    let (ok, lines, stderr) = bot.wait(Duration::from_secs(60));
    assert!(ok, "load failed: {stderr}");
    let ready = lines
        .iter()
        .find(|v| v["event"] == "ready")
        .expect("ready line");
    assert_eq!(ready["connected"], 12, "{ready}");
    let s = lines
        .iter()
        .find(|v| v["event"] == "summary")
        .expect("summary line");
    println!("{s}");
    let sent = s["packets_sent"].as_u64().unwrap_or(0);
    let expected = s["packets_expected"].as_u64().unwrap_or(0);
    let received = s["packets_received"].as_u64().unwrap_or(0);
    // Two talkers, at least two 1 s transmissions each, heard by 5 others each.
    assert!(sent >= 2 * 2 * 45, "sent {sent}");
    assert_eq!(expected, sent * 5);
    assert_eq!(received, expected, "lost packets: {s}");
    // Every received packet carried its send time.
    assert_eq!(s["latency_ms"]["count"].as_u64(), Some(received));
    let p95 = s["latency_ms"]["p95"].as_f64().unwrap_or(f64::MAX);
    assert!(p95 < 100.0, "p95 {p95} ms on loopback");
    assert_eq!(s["storm"]["dropped"], 0);
    assert_eq!(s["status_now"]["Connected"], 12);
}

#[test]
fn a_short_token_file_is_refused_with_a_clear_error() {
    let server = Server::start("");
    let dir = TempDir::new("load");
    let path = dir.join("tokens");
    std::fs::write(&path, server.token("only-one", &["general"])).expect("tokens");
    let out = Command::new(bin("roger-bot"))
        .arg("--server")
        .arg(server.url())
        .arg("load")
        .arg("--tokens")
        .arg(&path)
        .args(["--clients", "3", "--channel", "general", "--seconds", "1"])
        .output()
        .expect("roger-bot");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TOKEN_INVALID") && err.contains("has 1 tokens for 3 clients"),
        "{err}"
    );
}
