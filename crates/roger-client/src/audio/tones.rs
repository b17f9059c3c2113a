//! Radio tones, generated in code (48 kHz mono) and mixed into playout.
//!
//! Short, distinct and quiet enough not to startle: a rising chirp when the floor is
//! granted (talk permit), a low triple beep when it is busy, a short high beep when a
//! transmission ends (the "roger beep"), a falling pair when the floor is taken away, a
//! rising pair when the connection is back, and two soft low blips before what was
//! missed while reconnecting is played back.

use super::SAMPLE_RATE;

/// The tones Roger plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tone {
    /// Floor granted: talk now.
    TalkPermit,
    /// Floor denied: someone else is talking.
    Busy,
    /// A transmission (yours or someone's) ended.
    EndOfTransmission,
    /// Your floor was revoked (max talk time, or the server took it).
    FloorLost,
    /// The connection recovered.
    Reconnected,
    /// What was missed while reconnecting plays next.
    Replay,
}

impl Tone {
    /// Every tone.
    pub const ALL: [Tone; 6] = [
        Tone::TalkPermit,
        Tone::Busy,
        Tone::EndOfTransmission,
        Tone::FloorLost,
        Tone::Reconnected,
        Tone::Replay,
    ];

    /// (frequency Hz, duration ms) segments; frequency 0 is a pause.
    fn segments(self) -> &'static [(f32, u32)] {
        match self {
            Tone::TalkPermit => &[(880.0, 50), (0.0, 20), (1320.0, 70)],
            Tone::Busy => &[(440.0, 90), (0.0, 60), (440.0, 90), (0.0, 60), (440.0, 90)],
            Tone::EndOfTransmission => &[(1600.0, 60)],
            Tone::FloorLost => &[(1320.0, 80), (0.0, 20), (660.0, 140)],
            Tone::Reconnected => &[(660.0, 60), (0.0, 20), (990.0, 60)],
            Tone::Replay => &[(523.0, 40), (0.0, 40), (523.0, 40)],
        }
    }

    /// The tone's samples at 48 kHz, at `volume` (0.0..=1.0 of full scale).
    pub fn render(self, volume: f32) -> Vec<f32> {
        let amp = volume.clamp(0.0, 1.0) * 0.3;
        let mut out = Vec::new();
        for &(hz, ms) in self.segments() {
            let n = (SAMPLE_RATE * ms / 1000) as usize;
            // 5 ms fade in and out: no clicks.
            let fade = (SAMPLE_RATE as usize / 200).min(n / 2).max(1);
            for i in 0..n {
                if hz == 0.0 {
                    out.push(0.0);
                    continue;
                }
                let env = (i.min(n - 1 - i) as f32 / fade as f32).min(1.0);
                let phase = 2.0 * std::f32::consts::PI * hz * i as f32 / SAMPLE_RATE as f32;
                out.push(amp * env * phase.sin());
            }
        }
        out
    }
}

/// Which tones are on, and how loud.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToneSettings {
    /// Tones that are turned off.
    pub off: Vec<Tone>,
    /// Volume of all tones, 0.0..=1.0.
    pub volume: f32,
}

impl Default for ToneSettings {
    fn default() -> Self {
        ToneSettings {
            off: Vec::new(),
            volume: 0.5,
        }
    }
}

impl ToneSettings {
    /// Whether `tone` plays.
    pub fn enabled(&self, tone: Tone) -> bool {
        !self.off.contains(&tone) && self.volume > 0.0
    }
}

/// The tone a client event calls for, if any (the app and bots feed events through
/// this so every front end beeps the same way).
pub fn tone_for(event: &crate::ClientEvent) -> Option<Tone> {
    use crate::event::{ClientEvent, FloorEvent};
    match event {
        ClientEvent::Floor { floor, .. } => match floor {
            FloorEvent::Granted { .. } => Some(Tone::TalkPermit),
            FloorEvent::Denied { .. } => Some(Tone::Busy),
            FloorEvent::Revoked { .. } => Some(Tone::FloorLost),
            FloorEvent::Idle | FloorEvent::Released => Some(Tone::EndOfTransmission),
            _ => None,
        },
        ClientEvent::Recovered { .. } => Some(Tone::Reconnected),
        ClientEvent::MissedReplay { .. } => Some(Tone::Replay),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tone_is_short_quiet_and_starts_and_ends_at_zero() {
        for t in Tone::ALL {
            let pcm = t.render(1.0);
            let ms = pcm.len() as u32 * 1000 / SAMPLE_RATE;
            assert!((50..=500).contains(&ms), "{t:?}: {ms} ms");
            let peak = pcm.iter().fold(0f32, |m, s| m.max(s.abs()));
            assert!(peak > 0.2 && peak <= 0.3, "{t:?}: peak {peak}");
            assert!(
                pcm[0].abs() < 0.01 && pcm[pcm.len() - 1].abs() < 0.02,
                "{t:?}"
            );
        }
        assert!(Tone::Busy.render(0.0).iter().all(|s| *s == 0.0));
    }

    #[test]
    fn tones_are_distinct() {
        let all: Vec<Vec<f32>> = Tone::ALL.iter().map(|t| t.render(1.0)).collect();
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j]);
            }
        }
    }

    #[test]
    fn settings_turn_tones_off() {
        let s = ToneSettings {
            off: vec![Tone::Busy],
            volume: 0.5,
        };
        assert!(!s.enabled(Tone::Busy));
        assert!(s.enabled(Tone::TalkPermit));
        let silent = ToneSettings {
            off: vec![],
            volume: 0.0,
        };
        assert!(!silent.enabled(Tone::TalkPermit));
    }
}
