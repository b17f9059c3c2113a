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
//! Everything runs on one small virtual machine (the sound server, the talker, the server
//! and the listener on two CPUs), whose host now and then does not run it for tens of
//! milliseconds, and which is sometimes too busy to run an ordinary thread for as long:
//! no sound server plays through the first, and in the second the talker's and the
//! server's network threads (ordinary ones) hold packets up as a bad network would. A
//! stall witness (`stall.rs`) tells such moments apart from the software's own: a run
//! that failed while the machine stalled (a stall overlapping the speech's way through
//! the path, from the grant to after the release) is tried again (and said so); a run
//! that failed with no such stall fails the test, and so does a voice that never got a
//! smooth run. (What the witness cannot tell: the test's own processes using so much
//! CPU that an ordinary thread waits. `roger-bench audio` measures their CPU.)
//!
//! Needs PulseAudio; skips with a printed reason when it is missing, except under CI=true.

use roger_e2e::audio::voices;
use roger_e2e::pulse::Pulse;
use roger_e2e::quality::{speech_through_devices, SpeechRun};
use roger_e2e::stall::{Kind, StallWitness};
use roger_e2e::Server;
use std::time::Duration;

/// A stall of the machine this long, or a wait this long for an ordinary thread, can
/// make a gap the sound server plays or a packet later than the playout's margin (the
/// device buffer is 15 ms, the margin 15 ms, and the talker is on the same machine): a
/// run that failed with one is tried again.
const EXCUSES: Duration = Duration::from_millis(10);
/// Runs per voice at most.
const ATTEMPTS: usize = 4;

/// What is wrong with a run, if anything.
fn faults(run: &SpeechRun) -> Vec<String> {
    let p = &run.playout;
    let mut faults = Vec::new();
    for field in ["underruns", "concealed", "late"] {
        if p[field] != 0 {
            faults.push(format!("{field} {}", p[field]));
        }
    }
    let low = run.low(0.9);
    if !low.is_empty() {
        faults.push(format!("windows off the one lag: {low:?}"));
    }
    faults
}

#[test]
fn speech_on_a_clean_path_plays_with_no_concealment_and_no_jumps() {
    let Some(pulse) = Pulse::start() else { return };
    let server = Server::start("");
    let witness = StallWitness::start();
    // As root (CI) every CPU gets its pinned real-time witness; without them a machine
    // stall could pass for the software's fault, or the other way round.
    if roger_e2e::under_ci() {
        assert!(
            witness.trusted,
            "the stall witness needs real-time priority (root)"
        );
    }
    for (i, voice) in voices().iter().enumerate() {
        for attempt in 0.. {
            let run = speech_through_devices(&pulse, &server, voice, &format!("{i}-{attempt}"));
            // Only what overlapped the speech's way through the path counts.
            let (from, to) = run.speaking;
            let machine = witness.worst_between(from, to, Kind::Machine);
            let busy = witness.worst_between(from, to, Kind::Busy);
            let worst = machine.max(busy);
            let faults = faults(&run);
            println!(
                "{} (run {}): {} voiced windows; playout {}; capture {:?}; longest machine \
                 stall {machine:?}, longest wait of an ordinary thread {busy:?}; faults: \
                 {faults:?}",
                voice.display(),
                attempt + 1,
                run.windows.len(),
                run.playout,
                run.capture,
            );
            assert!(run.windows.len() >= 30, "the fixture has speech");
            if faults.is_empty() {
                break;
            }
            assert!(
                worst >= EXCUSES,
                "{}: {faults:?} while the machine ran smoothly (worst stall {worst:?})",
                voice.display()
            );
            assert!(
                attempt + 1 < ATTEMPTS,
                "{}: the machine stalled in every one of {ATTEMPTS} runs (last {worst:?}); \
                 faults {faults:?}",
                voice.display()
            );
            println!("  the machine stalled or was busy for {worst:?}: once more");
        }
    }
}
