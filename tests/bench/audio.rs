//! Mouth-to-ear latency and CPU through a sound server (a private PulseAudio with
//! virtual devices).
//!
//! Clicks are played into a combine sink that feeds both A's virtual microphone
//! (`micfeed` -> `vmic`) and B's virtual speaker (`spk`). So the recording of
//! `spk.monitor` holds each click twice: once directly, once after the whole path (A's
//! capture, Opus, the network, the server, B's jitter buffer, decoder and playout).
//! The distance between the two is the mouth-to-ear latency, on one clock.
//! `ROGER_BENCH_SERIES=1` also prints each click's latency in order.

use roger_e2e::pulse::{read_mono, stop_recording, Pulse};
use roger_e2e::stall::{Kind, StallWitness};
use roger_e2e::{proc_cpu_seconds, Bot, Server};
use std::time::{Duration, Instant};

const CLICKS: usize = 60;
const CLICK_EVERY_MS: usize = 300;
const SETTLE_MS: usize = 5000;

fn write_clicks(path: &std::path::Path) {
    let every = 48 * CLICK_EVERY_MS;
    // Silence first: the combine sink (the measuring instrument, not the path) settles
    // its slaves' latencies over the first seconds after it starts.
    let mut pcm = vec![0i16; 48 * SETTLE_MS];
    pcm.extend((0..CLICKS * every + 48_000).map(|i| {
        let k = i % every;
        // A 10 ms 1 -> 4 kHz chirp at the start of each period.
        let s = if i < CLICKS * every && k < 480 {
            let t = k as f64 / 48_000.0;
            let phase = 2.0 * std::f64::consts::PI * (1000.0 * t + 150_000.0 * t * t);
            16_000.0 * phase.sin()
        } else {
            0.0
        };
        s as i16
    }));
    roger_e2e::audio::write(path, &pcm);
}

/// Onsets (sample index) in `x`: envelope crossing 25 % of the peak after >= 8 ms quiet.
/// (The quiet used to be 40 ms: with the 10 ms click, a copy less than 50 ms behind
/// its click merged with it and went uncounted, so the fastest clicks were the ones
/// the bench could not see.)
fn onsets(x: &[i16]) -> Vec<usize> {
    let win = 48; // 1 ms
    let env: Vec<f64> = x
        .chunks(win)
        .map(|c| c.iter().map(|&s| f64::from(s).abs()).fold(0.0, f64::max))
        .collect();
    let peak = env.iter().copied().fold(0.0, f64::max);
    let th = peak * 0.25;
    let mut out = Vec::new();
    let mut quiet = 1000;
    for (i, &e) in env.iter().enumerate() {
        if e >= th {
            if quiet >= 8 {
                out.push(i * win);
            }
            quiet = 0;
        } else {
            quiet += 1;
        }
    }
    out
}

/// Mouth-to-ear latencies in ms from the recording's onsets. The direct clicks come
/// every [`CLICK_EVERY_MS`], starting with the first onset (nothing comes through the
/// path before it): each is the onset within 5 ms of where the last one found says it
/// should be, and its transmitted copy is the first onset more than 12 ms (the click
/// and a gap) and less than 250 ms after it.
fn pair(on: &[usize]) -> Vec<f64> {
    let Some(&first) = on.first() else {
        return Vec::new();
    };
    let (period, near) = (48 * CLICK_EVERY_MS, 48 * 5);
    let mut clicks = vec![first];
    let mut at = first;
    for _ in 1..CLICKS {
        let expected = at + period;
        match on.iter().find(|&&o| o.abs_diff(expected) <= near) {
            Some(&direct) => {
                clicks.push(direct);
                at = direct;
            }
            None => at = expected,
        }
    }
    clicks
        .into_iter()
        .filter_map(|direct| {
            let copy = *on
                .iter()
                .find(|&&o| o > direct + 48 * 12 && o < direct + 48 * 250)?;
            Some((copy - direct) as f64 / 48.0)
        })
        .collect()
}

fn cpu_seconds(pid: u32) -> f64 {
    proc_cpu_seconds(pid).unwrap_or(0.0)
}

fn bot(pulse: &Pulse, server: &Server, user: &str, args: &[&str]) -> Bot {
    pulse.bot(server, user, &["general"], args)
}

/// `roger-bench audio`.
pub fn run() {
    let Some(pulse) =
        Pulse::start_with("load-module module-combine-sink sink_name=both slaves=micfeed,spk")
    else {
        return;
    };
    let server = Server::start("");
    let seconds = ((CLICKS * CLICK_EVERY_MS + SETTLE_MS) / 1000 + 6).to_string();
    let listener = bot(
        &pulse,
        &server,
        "bob",
        &[
            "listen",
            "--channel",
            "general",
            "--output",
            "spk",
            "--seconds",
            &seconds,
        ],
    );
    listener.wait_event(Duration::from_secs(15), "joined");
    let rec_path = pulse.path("spk.wav");
    let recorder = pulse.record_speaker(&rec_path);
    let talker = bot(
        &pulse,
        &server,
        "alice",
        &[
            "talk",
            "--channel",
            "general",
            "--input",
            "vmic",
            "--seconds",
            &seconds,
        ],
    );
    talker.wait_for(Duration::from_secs(15), "floor granted", |v| {
        v["event"] == "floor" && v["state"] == "granted"
    });
    // Idle listener CPU first (joined, nobody's audio yet arriving: silence playout).
    let clicks = pulse.path("clicks.wav");
    write_clicks(&clicks);
    let (a0, b0, t0) = (
        cpu_seconds(talker.pid()),
        cpu_seconds(listener.pid()),
        Instant::now(),
    );
    let witness = StallWitness::start();
    let mut play = pulse
        .command("paplay")
        .args(["-d", "both"])
        .arg(&clicks)
        .spawn()
        .expect("paplay");
    let _ = play.wait();
    let elapsed = t0.elapsed().as_secs_f64();
    let (machine, busy) = (
        witness.worst(t0, Kind::Machine),
        witness.worst(t0, Kind::Busy),
    );
    drop(witness);
    let (a1, b1) = (cpu_seconds(talker.pid()), cpu_seconds(listener.pid()));
    std::thread::sleep(Duration::from_millis(500));
    stop_recording(recorder);
    drop(talker);
    let (_, lines, _) = listener.wait(Duration::from_secs(30));
    if let Some(p) = lines.iter().find(|v| v["event"] == "playout") {
        println!("listener playout: {p}");
    }

    let x = read_mono(&rec_path);
    let on = onsets(&x);
    let lat = pair(&on);
    if lat.len() < 50 {
        println!(
            "mouth-to-ear: only {} click pairs found in {} onsets (need 50); onsets (ms): {:?}",
            lat.len(),
            on.len(),
            on.iter().map(|o| o / 48).collect::<Vec<_>>()
        );
    }
    if std::env::var_os("ROGER_BENCH_SERIES").is_some() {
        println!(
            "series (ms): {:?}",
            lat.iter().map(|l| l.round() as i64).collect::<Vec<_>>()
        );
    }
    super::report("mouth-to-ear latency (vmic -> spk, PulseAudio)", "ms", lat);
    println!(
        "meanwhile the machine stalled at most {:.1} ms and an ordinary thread waited at \
         most {:.1} ms (stall.rs)",
        machine.as_secs_f64() * 1e3,
        busy.as_secs_f64() * 1e3
    );
    println!(
        "CPU while talking (capture, Opus encode, send): {:.1}% of a core; while listening \
         (jitter buffer, decode, playout): {:.1}% of a core (release build, {elapsed:.0} s)",
        (a1 - a0) / elapsed * 100.0,
        (b1 - b0) / elapsed * 100.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recording with a 10 ms click every period and its copy `lag_ms` behind it.
    fn recording(lags_ms: &[usize]) -> Vec<i16> {
        let every = 48 * CLICK_EVERY_MS;
        let mut x = vec![0i16; 48 * 1000 + lags_ms.len() * every + 48 * 1000];
        for (k, &lag) in lags_ms.iter().enumerate() {
            for start in [48 * 1000 + k * every, 48 * 1000 + k * every + 48 * lag] {
                for (i, s) in x[start..start + 480].iter_mut().enumerate() {
                    *s = if i % 8 < 4 { 12_000 } else { -12_000 };
                }
            }
        }
        x
    }

    #[test]
    fn copies_close_behind_their_click_are_counted() {
        // 25 and 45 ms were invisible to the old 40 ms quiet rule.
        let lags = [25, 45, 52, 60, 120, 45];
        let lat = pair(&onsets(&recording(&lags)));
        assert_eq!(lat, vec![25.0, 45.0, 52.0, 60.0, 120.0, 45.0]);
    }

    #[test]
    fn a_click_whose_copy_never_came_is_skipped_not_paired_with_the_next() {
        let mut x = recording(&[50, 50, 50]);
        let copy = 48 * 1000 + 48 * CLICK_EVERY_MS + 48 * 50;
        x[copy..copy + 480].fill(0);
        assert_eq!(pair(&onsets(&x)), vec![50.0, 50.0]);
    }
}
