//! A 40 s cut outlasts the 30 s recovery window: the client gives up with an actionable
//! code instead of spinning forever, and Rejoin brings it back once the network is.

use roger_e2e::scenario::{connected_at, frames_after, Scenario, S};

#[test]
fn a_40_second_cut_gives_up_after_the_window_and_rejoin_succeeds_when_the_network_is_back() {
    let Some(sc) = Scenario::start("cut40") else {
        return;
    };
    // The near client presses Rejoin 5 s after it gives up, as a person would.
    let (near, far) = sc.conversation(8.0, 70.0, (4.5, 0.5), &["--auto-rejoin", "5"]);
    std::thread::sleep(2 * S);
    let (cut, restored) = sc.fault_for(40 * S, |lab| lab.cut());

    let (_, near_lines, near_err) = near.wait(60 * S);
    let (_, far_lines, _) = far.wait(60 * S);
    let failed = near_lines
        .iter()
        .find(|v| {
            v["event"] == "status" && v["status"] == "Failed" && v["t_ms"].as_u64().unwrap() > cut
        })
        .unwrap_or_else(|| panic!("never gave up: {near_lines:#?}\n{near_err}"));
    let gave_up_after = failed["t_ms"].as_u64().unwrap() - cut;
    println!(
        "gave up {gave_up_after} ms after the cut with {}",
        failed["code"]
    );
    assert!(
        (28_000..=36_000).contains(&gave_up_after),
        "gave up after {gave_up_after} ms"
    );
    assert!(
        failed["code"] == "SIGNALING_UNREACHABLE" || failed["code"] == "ICE_FAILED",
        "{failed}"
    );
    let back = connected_at(&near_lines, restored, &near_err);
    println!(
        "connected again {} ms after the path returned",
        back - restored
    );
    let settle = back + 1_000;
    let near_heard = frames_after(&near_lines, "frames_received", settle);
    let far_heard = frames_after(&far_lines, "frames_received", settle);
    println!("after rejoin: near heard {near_heard} frames, far heard {far_heard}");
    assert!(near_heard >= 140 && far_heard >= 140);
}
