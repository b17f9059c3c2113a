//! A 10 s path cut with two people talking in turns: detected within 3 s, recovered by
//! itself once the path returns, and audio flows both ways afterwards.

use roger_e2e::scenario::{connected_at, frames_after, noticed_at, Scenario, S};

#[test]
fn a_10_second_cut_heals_by_itself_and_both_directions_work_after() {
    let Some(sc) = Scenario::start("cut10") else {
        return;
    };
    let (near, far) = sc.conversation(8.0, 42.0, (4.5, 0.5), &[]);
    std::thread::sleep(6 * S);
    let (cut, restored) = sc.fault_for(10 * S, |lab| lab.cut());

    let (_, near_lines, near_err) = near.wait(60 * S);
    let (_, far_lines, far_err) = far.wait(60 * S);
    let noticed = noticed_at(&near_lines, cut, &near_err);
    println!("cut noticed after {} ms", noticed - cut);
    assert!(noticed - cut <= 3_000);
    let back = connected_at(&near_lines, restored, &near_err);
    println!(
        "connected again {} ms after the path returned",
        back - restored
    );
    assert!(back - restored <= 8_000);
    // Both directions after recovery: each side heard at least one full transmission.
    let settle = back + 1_000;
    let near_heard = frames_after(&near_lines, "frames_received", settle);
    let far_heard = frames_after(&far_lines, "frames_received", settle);
    println!("after recovery: near heard {near_heard} frames, far heard {far_heard}");
    assert!(near_heard >= 140, "near heard {near_heard}\n{near_err}");
    assert!(far_heard >= 140, "far heard {far_heard}\n{far_err}");
}
