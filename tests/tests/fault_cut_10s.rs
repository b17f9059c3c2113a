//! A 10 s path cut with two people talking in turns: detected within 3 s, recovered by
//! itself once the path returns, and audio flows both ways afterwards.

use roger_e2e::netns::{self, Lab};
use roger_e2e::timeline::{audio_at, first_status_after};
use roger_e2e::{now_ms, Bot, Plan, Server};
use std::time::Duration;

const S: Duration = Duration::from_secs(1);

#[test]
fn a_10_second_cut_heals_by_itself_and_both_directions_work_after() {
    if !netns::available() {
        return;
    }
    let lab = Lab::create();
    let server = Server::start_in_lab(&lab, "");
    let url = server.url_at(netns::SERVER_IP);
    let plan = |offset| Plan {
        every: 8.0,
        offset,
        seconds: 42.0,
    };
    let far = Bot::duplex(&server, &lab.server_ns, &url, "far", plan(0.5), &[]);
    let near = Bot::duplex(&server, &lab.client_ns, &url, "near", plan(4.5), &[]);
    far.wait_event(15 * S, "joined");
    near.wait_event(15 * S, "joined");
    std::thread::sleep(6 * S);
    let cut = now_ms();
    lab.cut();
    std::thread::sleep(10 * S);
    lab.restore();
    let restored = now_ms();

    let (_, near_lines, near_err) = near.wait(60 * S);
    let (_, far_lines, far_err) = far.wait(60 * S);
    let noticed = first_status_after(&near_lines, cut, |s| s != "Connected")
        .unwrap_or_else(|| panic!("the cut went unnoticed: {near_lines:#?}\n{near_err}"));
    println!("cut noticed after {} ms", noticed - cut);
    assert!(noticed - cut <= 3_000);
    let back = first_status_after(&near_lines, restored, |s| s == "Connected")
        .unwrap_or_else(|| panic!("never connected again: {near_lines:#?}\n{near_err}"));
    println!(
        "connected again {} ms after the path returned",
        back - restored
    );
    assert!(back - restored <= 8_000);
    // Both directions after recovery: each side heard at least one full transmission.
    let settle = back + 1_000;
    let near_heard = audio_at(&near_lines, "frames_received", u64::MAX)
        - audio_at(&near_lines, "frames_received", settle);
    let far_heard = audio_at(&far_lines, "frames_received", u64::MAX)
        - audio_at(&far_lines, "frames_received", settle);
    println!("after recovery: near heard {near_heard} frames, far heard {far_heard}");
    assert!(near_heard >= 140, "near heard {near_heard}\n{near_err}");
    assert!(far_heard >= 140, "far heard {far_heard}\n{far_err}");
}
