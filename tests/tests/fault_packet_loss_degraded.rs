//! Heavy packet loss is reported honestly: `Degraded` while it lasts (loss > 10 %),
//! `Connected` again once it is gone (below 5 %, the hysteresis).

use roger_e2e::scenario::{Scenario, Side, S};
use roger_e2e::timeline::first_status_after;

#[test]
fn twenty_five_percent_loss_is_degraded_and_clears_when_the_loss_stops() {
    let Some(sc) = Scenario::start("loss") else {
        return;
    };
    let near = sc.listener(Side::Near, "near", 26);
    let far = sc.talker(Side::Far, "far", 8);
    near.wait_event(15 * S, "first_audio");
    std::thread::sleep(3 * S);
    let (lossy, clean) = sc.fault_for(9 * S, |lab| lab.lose_incoming_udp(25));
    let (_, lines, stderr) = near.wait(40 * S);
    if std::env::var("ROGER_E2E_BOT_LOG").is_ok() {
        println!("loss from {lossy} to {clean}\nNEAR STDERR:\n{stderr}");
    }
    drop(far);
    let degraded = first_status_after(&lines, lossy, |s| s == "Degraded")
        .unwrap_or_else(|| panic!("25 % loss never showed as Degraded: {lines:#?}\n{stderr}"));
    println!("Degraded {} ms after the loss began", degraded - lossy);
    assert!(degraded - lossy <= 8_000);
    let reason = lines
        .iter()
        .find(|v| v["event"] == "status" && v["status"] == "Degraded")
        .and_then(|v| v["reason"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("loss"), "reason: {reason}");
    let healthy = first_status_after(&lines, clean, |s| s == "Connected")
        .unwrap_or_else(|| panic!("never Connected after the loss stopped: {lines:#?}"));
    println!("Connected {} ms after the loss stopped", healthy - clean);
    assert!(healthy - clean <= 8_000);
}
