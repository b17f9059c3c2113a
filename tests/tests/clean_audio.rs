//! Clean audio on a clean path: 10 s of PTT with 5.5 s of speech through real (virtual
//! PulseAudio) devices, nothing lost on loopback, in three voices. The listener's
//! playout conceals nothing and never runs dry: concealment is for packets that did not
//! come, and drift and jitter are followed by time-scale changes.
//!
//! And what the speaker plays follows the speech at one lag: every voiced 100 ms window
//! of it, as the listener decoded it, is in the speaker's recording within 2 ms of one
//! lag with a correlation of 0.9 or more (a jump of a few ms, a swallowed or doubled
//! bit of a syllable, fails the windows after it). `roger-bench quality` scores the same
//! runs with PESQ.
//!
//! Needs PulseAudio; skips with a printed reason when it is missing, except under CI=true.

use roger_e2e::audio::voices;
use roger_e2e::pulse::Pulse;
use roger_e2e::quality::speech_through_devices;
use roger_e2e::Server;

/// The device buffer the playout asks PulseAudio for (three 5 ms callbacks): a device
/// callback later than this after the one before means the sound server played a gap.
const DEVICE_BUFFER_MS: f64 = 15.0;

#[test]
fn speech_on_a_clean_path_plays_with_no_concealment_and_no_jumps() {
    let Some(pulse) = Pulse::start() else { return };
    let server = Server::start("");
    for (i, voice) in voices().iter().enumerate() {
        // A run whose device callbacks were held up longer than the device's buffer (the
        // machine, not Roger: the callback runs at real-time priority and takes well
        // under a millisecond) has a gap the sound server played; such a run, and only
        // such a run, is tried once more.
        for attempt in 0..2 {
            let run = speech_through_devices(&pulse, &server, voice, &format!("{i}-{attempt}"));
            let p = &run.playout;
            println!(
                "{}: {} voiced windows, below 0.9 at one lag: {:?}; playout {p}; capture {:?}",
                voice.display(),
                run.windows.len(),
                run.low(0.9),
                run.capture,
            );
            assert!(run.windows.len() >= 30, "the fixture has speech");
            assert_eq!(p["underruns"], 0, "{}: {p}", voice.display());
            assert_eq!(p["concealed"], 0, "{}: {p}", voice.display());
            assert_eq!(p["late"], 0, "{}: {p}", voice.display());
            let gap = p["device_max_gap_ms"].as_f64().unwrap_or(0.0);
            if !run.low(0.9).is_empty() && gap > DEVICE_BUFFER_MS && attempt == 0 {
                println!(
                    "  the device waited {gap} ms for a callback (its buffer lasts \
                     {DEVICE_BUFFER_MS} ms): the sound server played a gap; once more"
                );
                continue;
            }
            assert!(
                run.low(0.9).is_empty(),
                "{}: windows of speech off the one lag: {:?}; {p}",
                voice.display(),
                run.low(0.9)
            );
            break;
        }
    }
}
