//! Speech through the whole device path, and how good it comes out: one talker holds
//! PTT for 10 s and 5.5 s of speech comes into its (virtual) microphone about 2 s in;
//! the listener plays to its (virtual) speaker, which is recorded. Used by
//! `roger-bench quality`.

use crate::audio::{best_lag, opus_alone, read, windows_at_lag, Window};
use crate::pulse::{read_mono, stop_recording, Pulse};
use crate::Server;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const S: Duration = Duration::from_secs(1);

/// What one run gave.
pub struct SpeechRun {
    /// The listener's `playout` line.
    pub playout: Value,
    /// The talker's `done` line (`dropped_samples`: what its microphone dropped).
    pub capture: Option<Value>,
    /// The speech as the listener decoded it, before its playout.
    pub reference: Vec<i16>,
    /// The speech through Opus alone at the same bitrate (the best any path can do).
    pub opus_alone: Vec<i16>,
    /// The speaker's recording from where the speech starts, as long as the reference.
    pub heard: Vec<i16>,
    /// Every voiced 100 ms window of the reference found in the recording within 2 ms of
    /// the one lag.
    pub windows: Vec<Window>,
    /// From the grant of the floor to half a second after the talker let go: when the
    /// speech went through the path (what a stall must overlap to be blamed for a fault).
    pub speaking: (Instant, Instant),
}

impl SpeechRun {
    /// Windows that correlate below `min` at the one lag.
    pub fn low(&self, min: f64) -> Vec<String> {
        self.windows
            .iter()
            .filter(|w| w.corr < min)
            .map(|w| format!("{} ms: {:.2} (shift {})", w.at_ms, w.corr, w.shift))
            .collect()
    }
}

/// One run with `voice` (a 48 kHz mono WAV) on `server`, users named after `tag`.
pub fn speech_through_devices(
    pulse: &Pulse,
    server: &Server,
    voice: &Path,
    tag: &str,
) -> SpeechRun {
    // The listener also records what it decoded, at the packets' RTP timestamps (no
    // jitter buffer, no device): the exact audio a perfect playout would play, the
    // reference the speaker's recording is held to (Opus itself codes a few windows of
    // speech differently with every shift of its frames, so the source would fail
    // windows a perfect path cannot help).
    let decoded = pulse.path(&format!("decoded{tag}.wav"));
    let listener = pulse.bot(
        server,
        &format!("bob{tag}"),
        &["general"],
        &[
            "listen",
            "--channel",
            "general",
            "--output",
            "spk",
            "--out",
            decoded.to_str().expect("utf-8 path"),
            "--seconds",
            "13",
        ],
    );
    listener.wait_event(15 * S, "joined");
    let spk = pulse.path(&format!("spk{tag}.wav"));
    let recorder = pulse.record_speaker(&spk);
    // The microphone's feed runs before the press, as a real microphone does: the
    // speech comes 3 s into it (about 2 s into the transmission) and silence follows.
    // (Starting the feed mid-transmission makes the sound server re-time the virtual
    // microphone's blocks, a step in the talker's timing no real microphone makes.)
    let feed = pulse.path(&format!("feed{tag}.wav"));
    let mut pcm = vec![0i16; 3 * 48_000];
    pcm.extend(read(voice));
    pcm.extend(std::iter::repeat_n(0i16, 3 * 48_000));
    crate::audio::write(&feed, &pcm);
    let mut play = pulse.play_into_mic(&feed);
    let talker = pulse.bot(
        server,
        &format!("alice{tag}"),
        &["general"],
        &[
            "talk",
            "--channel",
            "general",
            "--input",
            "vmic",
            "--seconds",
            "10",
        ],
    );
    talker.wait_for(15 * S, "floor granted", |v| {
        v["event"] == "floor" && v["state"] == "granted"
    });
    let granted = Instant::now();
    let (ok, lines, stderr) = talker.wait(15 * S);
    assert!(ok, "talker failed: {stderr}");
    let _ = play.wait();
    std::thread::sleep(Duration::from_millis(500));
    let speaking = (granted, Instant::now());
    stop_recording(recorder);
    let (ok, heard, stderr) = listener.wait(15 * S);
    assert!(ok, "listener failed: {stderr}");

    let source = read(voice);
    let decoded = read(&decoded);
    assert!(decoded.len() > source.len(), "decoded recording too short");
    let (at, _) = best_lag(&source, &decoded, decoded.len() - source.len());
    let reference = decoded[at..at + source.len()].to_vec();
    let recorded = read_mono(&spk);
    assert!(
        recorded.len() > reference.len(),
        "speaker recording too short"
    );
    let (lag, _) = best_lag(&reference, &recorded, recorded.len() - reference.len());
    let windows = windows_at_lag(&reference, &recorded, lag, 96);
    let playout = heard
        .iter()
        .find(|v| v["event"] == "playout")
        .cloned()
        .unwrap_or_else(|| panic!("no playout line: {heard:?}"));
    let capture = lines.iter().find(|v| v["event"] == "done").cloned();
    let end = (lag + reference.len()).min(recorded.len());
    SpeechRun {
        opus_alone: opus_alone(&source, 24_000),
        playout,
        capture,
        heard: recorded[lag..end].to_vec(),
        reference,
        windows,
        speaking,
    }
}

/// Wideband PESQ (ITU-T P.862.2, MOS-LQO) of `degraded` against `reference` (both
/// 48 kHz, aligned), through the `pesq` Python package and sox for the 16 kHz it
/// needs. `None` (with the reason printed) when python3, the package or sox is missing.
pub fn pesq_wb(dir: &Path, reference: &[i16], degraded: &[i16]) -> Option<f64> {
    let write = |name: &str, pcm: &[i16]| {
        let path = dir.join(name);
        crate::audio::write(&path, pcm);
        let low = dir.join(format!("16k-{name}"));
        let ok = std::process::Command::new("sox")
            .arg(&path)
            .args(["-r", "16000"])
            .arg(&low)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(low)
    };
    let (Some(r), Some(d)) = (write("ref.wav", reference), write("deg.wav", degraded)) else {
        println!("  (no PESQ: sox is missing)");
        return None;
    };
    let script = "import sys, wave, numpy\n\
                  from pesq import pesq\n\
                  def load(p):\n\
                  \x20   w = wave.open(p)\n\
                  \x20   return numpy.frombuffer(w.readframes(w.getnframes()), dtype=numpy.int16).astype(numpy.float32) / 32768\n\
                  print(pesq(16000, load(sys.argv[1]), load(sys.argv[2]), 'wb'))\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&r)
        .arg(&d)
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().parse().ok(),
        Ok(o) => {
            println!(
                "  (no PESQ: {}; `pip install pesq numpy` installs it)",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            None
        }
        Err(e) => {
            println!("  (no PESQ: python3: {e})");
            None
        }
    }
}
