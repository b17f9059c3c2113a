//! What a listener missed while its connection healed is played back by itself, once,
//! from where it lost it; live audio wins over a replay.
//!
//! Bob listens in the client namespace; alice and carol talk beside the server.
//! 1. Bob's path is cut for 9 s while alice speaks 5.5 s in the middle of it: after bob
//!    recovers, his recording holds all of it, replayed, exactly once.
//! 2. Alice speaks again; 2.3 s in, bob's path is cut for 6 s: bob heard that much live
//!    and gets the rest replayed from where he lost it, with nothing played twice.
//! 3. Carol talks live during that replay: the replay pauses and completes after.
//!
//! Alice reads one sentence that does not repeat itself (a voice fixture), so each
//! piece of it can be found in bob's recording only where it belongs.

use roger_e2e::audio::{best_lag, loudness, read, voices};
use roger_e2e::scenario::{Scenario, Side, S};
use roger_e2e::Bot;
use serde_json::Value;
use std::time::Duration;

const RATE: usize = 48_000;

/// `user` reads the voice fixture in `general`, beside the server (not waited for).
fn read_aloud(sc: &Scenario, user: &str) -> Bot {
    let wav = voices()[0].clone();
    Bot::spawn_with(
        Some(&sc.lab.server_ns),
        &sc.url,
        &sc.server.token(user, &["general"]),
        &[
            "talk",
            "--channel",
            "general",
            "--wav",
            wav.to_str().expect("utf-8 path"),
        ],
    )
}

/// Where `piece` matches best in `rec` between `from` and `to` (samples), and how well.
fn find(piece: &[i16], rec: &[i16], from: usize, to: usize) -> (usize, f64) {
    let to = to.min(rec.len());
    if to <= from + piece.len() {
        return (from, 0.0);
    }
    let (lag, corr) = best_lag(piece, &rec[from..to], to - from - piece.len());
    (from + lag, corr)
}

#[test]
fn what_was_missed_while_reconnecting_is_replayed_once_from_where_it_was_lost() {
    let Some(sc) = Scenario::start("replay") else {
        return;
    };
    let bob = sc.listener(Side::Near, "bob", 48);
    let src = read(&voices()[0]);
    let len_ms = (src.len() * 1000 / RATE) as u64;

    // 1. All of it said during a cut.
    sc.lab.cut();
    std::thread::sleep(S);
    let alice = read_aloud(&sc, "alice");
    std::thread::sleep(8 * S);
    sc.lab.restore();
    let (ok, _, stderr) = alice.wait(20 * S);
    assert!(ok, "alice: {stderr}");
    let first = bob.wait_for(20 * S, "the first replay", |v| {
        v["event"] == "missed_replay"
    });
    println!("replay 1: {first}");
    assert_eq!(first["by"], "alice");
    let from = first["from_ms"].as_u64().expect("from_ms");
    let missed = first["missed_ms"].as_u64().expect("missed_ms");
    assert!(
        from <= 300,
        "none of it was heard live, yet it starts at {from} ms"
    );
    assert!(
        missed.abs_diff(len_ms) <= 400,
        "{len_ms} ms were said during the cut; {missed} ms are replayed"
    );
    bob.wait_for(15 * S, "the first replay ends", |v| {
        v["event"] == "replay_done"
    });

    // 2. Heard 2 s live, then cut for 6 s.
    // Counted before the cut: bob can be back and replaying before alice's bot exits.
    let n_before = bob.lines().len();
    let alice = read_aloud(&sc, "alice");
    bob.wait_for(10 * S, "bob hears alice live", |v| {
        v["event"] == "floor" && v["state"] == "taken"
    });
    std::thread::sleep(Duration::from_millis(2_300));
    sc.lab.cut();
    std::thread::sleep(6 * S);
    sc.lab.restore();
    let (ok, _, stderr) = alice.wait(20 * S);
    assert!(ok, "alice: {stderr}");
    let second = bob.wait_for(20 * S, "the second replay", |v| {
        v["event"] == "missed_replay" && v["from_ms"].as_u64().unwrap_or(0) > 0
    });
    println!("replay 2: {second}");
    let from2 = second["from_ms"].as_u64().expect("from_ms");
    let missed2 = second["missed_ms"].as_u64().expect("missed_ms");
    assert!(
        (1_500..=3_300).contains(&from2),
        "the cut began about 2.3 s in; the replay starts at {from2} ms"
    );
    assert!(
        (from2 + missed2).abs_diff(len_ms) <= 400,
        "the replay runs to the end of the {len_ms} ms transmission: {from2} + {missed2} ms"
    );

    // 3. Carol talks live during the replay: it pauses, and completes after.
    std::thread::sleep(Duration::from_millis(500));
    let carol = sc.talker(Side::Far, "carol", 1);
    let (ok, _, stderr) = carol.wait(20 * S);
    assert!(ok, "carol: {stderr}");
    let done = bob.wait_for_after(n_before, 20 * S, "the end of the second replay", |v| {
        v["event"] == "replay_done"
    });
    let lines = bob.lines();
    let paused = lines[n_before..]
        .iter()
        .find(|v| v["event"] == "replay_paused");
    assert!(
        paused.is_some_and(|v| v["paused"] == true),
        "the replay did not pause for carol: {lines:#?}"
    );
    // One replay for part 2, of part 2 (part 1 is not played again).
    let replays: Vec<&Value> = lines[n_before..]
        .iter()
        .filter(|v| v["event"] == "missed_replay")
        .collect();
    assert_eq!(replays.len(), 1, "{replays:#?}");
    assert_ne!(replays[0]["id"], first["id"], "part 1 was replayed again");
    let played = done["played_ms"].as_u64().expect("played_ms");
    assert!(
        played.abs_diff(missed2) <= 40,
        "the replay completed {played} of {missed2} ms"
    );
    let (ok, _, stderr) = bob.wait(60 * S);
    assert!(ok, "bob: {stderr}");

    // The recording: each part of the source where it belongs, and only once.
    // The recording ends with the replay's last frame, and what bob decodes lags the
    // source by the codec's delay: silence after it lets the source's last piece be
    // searched for where it really is, not cut short.
    let mut rec = read(&sc.dir.join("bob.wav"));
    rec.extend(std::iter::repeat_n(0, RATE / 5));
    let secs = |s: f64| (s * RATE as f64) as usize;
    // Part 1: all of it, in one piece.
    // (Each search is bounded to where the piece can be: a correlation over the whole
    // recording costs seconds in a debug build.)
    let (at1, c1) = find(&src, &rec, 0, src.len() + secs(2.0));
    println!(
        "part 1 replayed at {:.2} s, correlation {c1:.3}",
        at1 as f64 / RATE as f64
    );
    assert!(c1 >= 0.9, "the replay of part 1 does not match: {c1:.3}");
    // Part 2: the start live, the rest (from where the replay starts) after it.
    let live = &src[secs(0.2)..secs(1.8)];
    let (at_live, c_live) = find(live, &rec, at1 + src.len(), at1 + src.len() + secs(5.0));
    let rest = &src[secs(from2 as f64 / 1000.0)..];
    // Carol's 3 s split the replay: its first 400 ms came before she spoke.
    let (at_rest, c_rest) = find(&rest[..secs(0.4)], &rec, at_live, rec.len());
    println!(
        "part 2: live at {:.2} s ({c_live:.3}), replay at {:.2} s ({c_rest:.3})",
        at_live as f64 / RATE as f64,
        at_rest as f64 / RATE as f64
    );
    assert!(
        c_live >= 0.9,
        "part 2's live start does not match: {c_live:.3}"
    );
    assert!(
        c_rest >= 0.9,
        "the replay of part 2 does not start where bob lost it: {c_rest:.3}"
    );
    // Carol, live, intact.
    let carol_src = read(&roger_e2e::speech_wav());
    let (at_carol, c_carol) = find(
        &carol_src,
        &rec,
        at_rest,
        at_rest + carol_src.len() + secs(3.0),
    );
    println!(
        "carol at {:.2} s ({c_carol:.3})",
        at_carol as f64 / RATE as f64
    );
    assert!(
        c_carol >= 0.9,
        "carol's live audio is damaged: {c_carol:.3}"
    );
    // The replay, 200 ms at a time: every piece where it belongs, some before carol and
    // the rest after her (the piece her first words cut into aside: the bot's recording
    // places live frames by their timestamps, so they may overlap the replay's last
    // frame before it held by a few tens of ms).
    let piece = secs(0.2);
    let mut after_carol = 0;
    let overall = loudness(&src);
    for k in 0..rest.len() / piece {
        let this = &rest[k * piece..(k + 1) * piece];
        if loudness(this) < 0.3 * overall {
            continue; // a quiet piece says nothing either way
        }
        let (at, c) = find(this, &rec, at_rest, rec.len());
        println!(
            "replayed piece {k}: at {:.2} s ({c:.3})",
            at as f64 / RATE as f64
        );
        let cut_by_carol = at + piece > at_carol && at < at_carol + secs(0.1);
        assert!(
            cut_by_carol || c >= 0.85,
            "replayed piece {k} does not match: {c:.3}"
        );
        if at >= at_carol + carol_src.len() {
            after_carol += 1;
        }
    }
    assert!(
        after_carol >= 5,
        "the replay did not continue after carol ({after_carol} pieces after her)"
    );
    // Nothing twice: what bob heard live (its last second) is not in the replay.
    let heard = &src[secs(from2 as f64 / 1000.0 - 1.0)..secs(from2 as f64 / 1000.0 - 0.1)];
    let (_, c_twice) = find(
        heard,
        &rec,
        at_live + secs(from2 as f64 / 1000.0) + secs(0.5),
        rec.len(),
    );
    println!("what was heard live, searched for in the replay: {c_twice:.3}");
    assert!(
        c_twice < 0.6,
        "part of what was heard live was replayed again: {c_twice:.3}"
    );
    // And part 1 is not replayed a second time after it.
    let (_, c_again) = find(&src[..secs(1.5)], &rec, at1 + src.len(), at_live);
    assert!(c_again < 0.6, "part 1 was replayed twice: {c_again:.3}");
}
