//! A 40 s cut outlasts the 30 s recovery window: the client gives up with an actionable
//! code instead of spinning forever, and Rejoin brings it back once the network is.

use roger_e2e::netns::{self, Lab};
use roger_e2e::timeline::{audio_at, first_status_after};
use roger_e2e::{now_ms, Bot, Plan, Server};
use std::time::Duration;

const S: Duration = Duration::from_secs(1);

#[test]
fn a_40_second_cut_gives_up_after_the_window_and_rejoin_succeeds_when_the_network_is_back() {
    if !netns::available() {
        return;
    }
    let lab = Lab::create();
    let server = Server::start_in_lab(&lab, "");
    let url = server.url_at(netns::SERVER_IP);
    let plan = |offset| Plan {
        every: 8.0,
        offset,
        seconds: 70.0,
    };
    let far = Bot::duplex(&server, &lab.server_ns, &url, "far", plan(0.5), &[]);
    // The near client presses Rejoin 5 s after it gives up, as a person would.
    let near = Bot::duplex(
        &server,
        &lab.client_ns,
        &url,
        "near",
        plan(4.5),
        &["--auto-rejoin", "5"],
    );
    far.wait_event(15 * S, "joined");
    near.wait_event(15 * S, "joined");
    std::thread::sleep(2 * S);
    let cut = now_ms();
    lab.cut();
    std::thread::sleep(40 * S);
    lab.restore();
    let restored = now_ms();

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
    let back = first_status_after(&near_lines, restored, |s| s == "Connected")
        .unwrap_or_else(|| panic!("rejoin never connected: {near_lines:#?}\n{near_err}"));
    println!(
        "connected again {} ms after the path returned",
        back - restored
    );
    let settle = back + 1_000;
    let near_heard = audio_at(&near_lines, "frames_received", u64::MAX)
        - audio_at(&near_lines, "frames_received", settle);
    let far_heard = audio_at(&far_lines, "frames_received", u64::MAX)
        - audio_at(&far_lines, "frames_received", settle);
    println!("after rejoin: near heard {near_heard} frames, far heard {far_heard}");
    assert!(near_heard >= 140 && far_heard >= 140);
}
