//! The talker's address changes mid-transmission (Wi-Fi roam): the client restarts ICE
//! and reconnects signaling at once, before any timeout, and keeps talking.

use roger_e2e::scenario::{frames_after, Scenario, Side, S};
use roger_e2e::timeline::{audio_at, floors};
use roger_e2e::{now_ms, Plan};
use std::time::Duration;

#[test]
fn a_roam_while_talking_recovers_at_once_and_both_directions_work_after() {
    let Some(sc) = Scenario::start("roam") else {
        return;
    };
    let server = &sc.server;
    let plan = |offset| Plan {
        every: 7.0,
        offset,
        seconds: 22.0,
    };
    let near = sc.duplex(Side::Near, "near", plan(1.0), &[]);
    let far = sc.duplex(Side::Far, "far", plan(4.5), &[]);
    near.wait_event(15 * S, "joined");
    far.wait_event(15 * S, "joined");
    near.wait_for(10 * S, "floor granted", |v| {
        v["event"] == "floor" && v["state"] == "granted"
    });
    std::thread::sleep(Duration::from_millis(1200));
    let roamed = now_ms();
    sc.lab.roam();

    let (_, near_lines, near_err) = near.wait(40 * S);
    let (_, far_lines, _) = far.wait(40 * S);
    if std::env::var("ROGER_E2E_BOT_LOG").is_ok() {
        println!("NEAR STDERR:\n{near_err}");
        for l in near_lines.iter().chain(far_lines.iter()) {
            if l["event"] != "audio" {
                println!("{l}");
            }
        }
        for (t, name, v) in [
            ("near", "frames_sent", &near_lines),
            ("far", "frames_received", &far_lines),
        ] {
            let series: Vec<u64> = v
                .iter()
                .filter(|l| l["event"] == "audio")
                .map(|l| l[name].as_u64().unwrap())
                .collect();
            println!("{t} {name}: {series:?}");
        }
        for l in server
            .metrics()
            .lines()
            .filter(|l| l.starts_with("roger_rtp") || l.starts_with("roger_transports"))
        {
            println!("SERVER {l}");
        }
        println!("SERVER LOG:\n{}", server.log_text());
    }
    let recovered = near_lines
        .iter()
        .find(|v| v["event"] == "recovered" && v["t_ms"].as_u64().unwrap() >= roamed)
        .unwrap_or_else(|| panic!("no recovery after the roam: {near_lines:#?}\n{near_err}"));
    let took = recovered["time_to_recover_ms"].as_u64().unwrap();
    let since_roam = recovered["t_ms"].as_u64().unwrap() - roamed;
    println!("roam: recovered in {took} ms ({since_roam} ms after the address changed)");
    assert!(since_roam <= 3_000, "recovery took {since_roam} ms");
    // The transmission in progress was not cut off: no revocation.
    assert!(!floors(&near_lines).iter().any(|(_, s, _)| s == "revoked"));
    // The far side heard most of that transmission, and both directions work after.
    let far_first = audio_at(&far_lines, "frames_received", roamed + 4_000);
    assert!(
        far_first >= 100,
        "far heard only {far_first} frames of the roaming talk"
    );
    let settle = recovered["t_ms"].as_u64().unwrap() + 1_000;
    let near_heard = frames_after(&near_lines, "frames_received", settle);
    let far_heard = frames_after(&far_lines, "frames_received", settle);
    println!("after the roam: near heard {near_heard}, far heard {far_heard}");
    assert!(near_heard >= 140 && far_heard >= 140, "{near_err}");
}
