//! A firewall that blocks UDP except to the TURN port: media goes through a real coturn
//! relay, with credentials the server hands out (TURN REST convention), both ways.

use roger_e2e::netns::{self, Lab};
use roger_e2e::scenario::{Scenario, Side, S};
use roger_e2e::timeline::audio_at;
use roger_e2e::{now_ms, Plan, TempDir};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
const TURN_SECRET: &str = "roger-e2e-turn-secret";

struct Coturn(Child);

impl Drop for Coturn {
    fn drop(&mut self) {
        // SIGTERM, so coturn flushes its log; SIGKILL if it lingers.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_coturn(lab: &Lab, dir: &TempDir) -> Option<Coturn> {
    if Command::new("turnserver")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            !roger_e2e::under_ci(),
            "coturn (turnserver) must be installed in CI"
        );
        println!("SKIPPED: coturn (turnserver) is not installed");
        return None;
    }
    let log = std::fs::File::create(dir.join("turn.log")).expect("turn log");
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.server_ns, "turnserver", "-n"])
        .arg(format!("--listening-ip={}", netns::SERVER_IP))
        .arg(format!("--relay-ip={}", netns::SERVER_IP))
        .args([
            "--listening-port=3478",
            "--realm=roger",
            "--use-auth-secret",
        ])
        .arg(format!("--static-auth-secret={TURN_SECRET}"))
        // The relay's peers (the SFU) live in the test range.
        .arg("--allowed-peer-ip=198.18.0.0-198.19.255.255")
        .args([
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--log-file=stdout",
            "-v",
        ])
        .arg(format!("--pidfile={}", dir.join("turn.pid").display()))
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn turnserver");
    std::thread::sleep(Duration::from_millis(500));
    Some(Coturn(child))
}

#[test]
fn with_udp_blocked_audio_flows_both_ways_through_a_turn_relay() {
    let turn = format!(
        "[turn]\nurls = [\"turn:{}:3478?transport=udp\"]\nsecret = \"{TURN_SECRET}\"\nttl_s = 600\n",
        netns::SERVER_IP
    );
    let Some(sc) = Scenario::start_with("turn", &turn) else {
        return;
    };
    let Some(coturn) = start_coturn(&sc.lab, &sc.dir) else {
        return;
    };
    sc.lab.block_udp_except(3478);
    let plan = |offset, seconds| Plan {
        every: 7.0,
        offset,
        seconds,
    };
    let slow = ["--connect-timeout", "30"];
    let started = now_ms();
    // Each bot's schedule starts when it has joined; the relay makes the near one slower
    // to connect, so the far one starts once it has, and their turns alternate.
    let near = sc.duplex(Side::Near, "near", plan(1.0, 22.0), &slow);
    near.wait_event(40 * S, "joined");
    let far = sc.duplex(Side::Far, "far", plan(4.5, 18.0), &slow);
    let (_, near_lines, near_err) = near.wait(60 * S);
    let (_, far_lines, far_err) = far.wait(60 * S);
    let connected = near_lines
        .iter()
        .find(|v| v["event"] == "status" && v["status"] == "Connected")
        .unwrap_or_else(|| {
            panic!(
                "never connected through the relay: {near_lines:#?}\n{near_err}\nturn log:\n{}",
                std::fs::read_to_string(sc.dir.join("turn.log")).unwrap_or_default()
            )
        });
    println!(
        "connected through TURN {} ms after start",
        connected["t_ms"].as_u64().unwrap() - started
    );
    if std::env::var("ROGER_E2E_BOT_LOG").is_ok() {
        println!("NEAR STDERR:\n{near_err}");
    }
    let near_heard = audio_at(&near_lines, "frames_received", u64::MAX);
    let far_heard = audio_at(&far_lines, "frames_received", u64::MAX);
    println!("near heard {near_heard} frames, far heard {far_heard}");
    assert!(near_heard >= 140, "near heard {near_heard}\n{near_err}");
    assert!(far_heard >= 140, "far heard {far_heard}\n{far_err}");
    // The relay really carried it: coturn logged an allocation for the client (its log
    // is buffered until it stops).
    drop(coturn);
    let turn_log = std::fs::read_to_string(sc.dir.join("turn.log")).unwrap_or_default();
    assert!(
        turn_log.contains("ALLOCATE processed, success"),
        "no allocation in the coturn log:\n{turn_log}"
    );
}
