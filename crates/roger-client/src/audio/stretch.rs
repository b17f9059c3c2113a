//! Small time-scale changes of decoded speech, by whole pitch periods: how the playout
//! follows a sender whose clock drifts, or takes back delay nobody needs, without
//! concealing or dropping whole frames (WebRTC NetEq's "accelerate" and "preemptive
//! expand", which are WSOLA with a single overlap per frame).
//!
//! - [`shorten`] finds the pitch period `T` where the frame repeats itself best and
//!   replaces two periods by one cross-fade of them: `T` samples fewer, no change of
//!   pitch.
//! - [`lengthen`] plays one period twice (the second cross-faded back into the first):
//!   `T` samples more.
//! - A quiet frame (no speech to disturb) is cut or padded by exactly what is asked,
//!   with a short cross-fade.
//! - A loud frame that does not repeat itself (a fricative, a plosive, a note sliding
//!   in pitch) is left alone: the next frames get their turn. Nothing happens rather
//!   than something audible.
//!
//! Why not a crate: the stretchers on crates.io (signalsmith-stretch and rubberband
//! bindings, `sonic` ports) are streaming processors with a constant ratio and tens of
//! ms of their own latency. The jitter buffer needs something else: "remove about this
//! much from this 20 ms frame now, or nothing if it would be heard", reporting exactly
//! how much. That is a pitch search and one cross-fade, ~100 lines, as in NetEq.

/// Shortest pitch period considered: 2.5 ms at 48 kHz (400 Hz).
const MIN_PERIOD: usize = 120;
/// Longest: 10 ms (100 Hz), which still fits twice in a 20 ms frame.
const MAX_PERIOD: usize = 480;
/// How well two neighbouring periods must match (normalized correlation) for one of them
/// to go or to be repeated unheard. NetEq asks 0.9 for accelerate; speech through Opus
/// at 24 kb/s is a little less regular, 0.8 keeps most voiced frames usable.
const MIN_MATCH: f32 = 0.8;
/// Below this peak (-50 dBFS) a frame is quiet: it can be cut or padded anywhere.
const QUIET: f32 = 0.003_16;
/// Cross-fade of a cut or pad in a quiet frame.
const QUIET_FADE: usize = 48;
/// Decimation for the coarse pitch search (48 kHz -> 12 kHz).
const DECIMATE: usize = 4;

/// Removes about `want` samples from `frame` (a pitch period, or exactly `want` when the
/// frame is quiet, at most half the frame). Returns how many went: 0 when the frame is
/// not one to shorten unheard.
pub fn shorten(frame: &mut Vec<f32>, want: usize) -> usize {
    change(frame, want, cut_quiet, |frame, t| {
        // Two periods from the start become one: the first fading out into the second.
        let faded = crossfade(&frame[..t], &frame[t..2 * t]);
        frame.splice(..2 * t, faded);
    })
}

/// Adds about `want` samples to `frame` (a pitch period, or exactly `want` when quiet, at
/// most half the frame). Returns how many were added: 0 when the frame is not one to
/// lengthen unheard.
pub fn lengthen(frame: &mut Vec<f32>, want: usize) -> usize {
    change(frame, want, pad_quiet, |frame, t| {
        // Periods A B become A (B fading into A) B: one period more, each seam
        // continuous (A's end flows into B's start, and the cross-fade ends as A does).
        let extra = crossfade(&frame[t..2 * t], &frame[..t]);
        frame.splice(t..t, extra);
    })
}

/// What [`shorten`] and [`lengthen`] share: a quiet frame gets `quiet` with exactly
/// `want` (at most half the frame); a voiced one `voiced` with its pitch period, if it
/// repeats itself well enough. Returns the samples changed.
fn change(
    frame: &mut Vec<f32>,
    want: usize,
    quiet: fn(&mut Vec<f32>, usize),
    voiced: fn(&mut Vec<f32>, usize),
) -> usize {
    if want == 0 || frame.len() < 2 * MIN_PERIOD {
        return 0;
    }
    if is_quiet(frame) {
        let n = want.min(frame.len() / 2);
        quiet(frame, n);
        return n;
    }
    let Some(t) = period(frame, want) else {
        return 0;
    };
    voiced(frame, t);
    t
}

/// `from` fading out into `to` (equally long).
fn crossfade(from: &[f32], to: &[f32]) -> Vec<f32> {
    let n = from.len();
    from.iter()
        .zip(to)
        .enumerate()
        .map(|(i, (a, b))| {
            let w = (i as f32 + 0.5) / n as f32;
            a * (1.0 - w) + b * w
        })
        .collect()
}

/// A frame with no speech to disturb (its peak below -50 dBFS).
pub fn is_quiet(frame: &[f32]) -> bool {
    peak(frame) < QUIET
}

fn peak(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, s| m.max(s.abs()))
}

/// The pitch period where the frame's first two periods match best, preferring periods
/// near `want` (at most `want` rounded up to the shortest period, twice that at most,
/// and no longer than half the frame), if they match well enough.
fn period(frame: &[f32], want: usize) -> Option<usize> {
    let longest = MAX_PERIOD
        .min(frame.len() / 2)
        .min(want.max(MIN_PERIOD) * 2);
    if longest < MIN_PERIOD {
        return None;
    }
    // Coarse search at 12 kHz, then refined at full rate.
    let low: Vec<f32> = frame
        .chunks_exact(DECIMATE)
        .map(|c| c.iter().sum::<f32>() / DECIMATE as f32)
        .collect();
    let (lo, hi) = (MIN_PERIOD / DECIMATE, longest / DECIMATE);
    let coarse = (lo..=hi)
        .map(|t| (t, similarity(&low[..t], &low[t..2 * t])))
        .fold((lo, f32::MIN), |a, b| if b.1 > a.1 { b } else { a })
        .0
        * DECIMATE;
    let (t, m) = (coarse.saturating_sub(DECIMATE).max(MIN_PERIOD)
        ..=(coarse + DECIMATE).min(longest))
        .map(|t| (t, similarity(&frame[..t], &frame[t..2 * t])))
        .fold((0, f32::MIN), |a, b| if b.1 > a.1 { b } else { a });
    (m >= MIN_MATCH).then_some(t)
}

/// Normalized correlation of two equally long pieces.
fn similarity(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa <= f32::EPSILON || bb <= f32::EPSILON {
        return 0.0;
    }
    ab / (aa * bb).sqrt()
}

/// Cuts `n` samples from the middle of a quiet frame, cross-fading across the cut.
fn cut_quiet(frame: &mut Vec<f32>, n: usize) {
    let fade = QUIET_FADE.min((frame.len() - n) / 2);
    let at = (frame.len() - n - fade) / 2;
    let faded = crossfade(&frame[at..at + fade], &frame[at + n..at + n + fade]);
    frame.splice(at..at + fade + n, faded);
}

/// Pads a quiet frame with `n` samples in its middle: the quiet signal faded down to
/// silence and back.
fn pad_quiet(frame: &mut Vec<f32>, n: usize) {
    let at = frame.len() / 2;
    let v = frame[at];
    let pad: Vec<f32> = (0..n)
        .map(|i| {
            let w = 1.0 - (2.0 * i as f32 / n as f32 - 1.0).abs();
            v * (1.0 - w)
        })
        .collect();
    frame.splice(at..at, pad);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vowel-like signal: a 150 Hz pulse train through a resonance, at 0.3 of full
    /// scale, `n` samples from sample `from`.
    fn vowel(from: usize, n: usize) -> Vec<f32> {
        (from..from + n)
            .map(|i| {
                let t = i as f32 / 48_000.0;
                let f0 = 150.0;
                (1..12)
                    .map(|h| {
                        let f = f0 * h as f32;
                        let gain = 1.0 / (1.0 + ((f - 700.0) / 300.0).powi(2));
                        gain * (2.0 * std::f32::consts::PI * f * t).sin()
                    })
                    .sum::<f32>()
                    * 0.1
            })
            .collect()
    }

    fn noise(n: usize, amp: f32) -> Vec<f32> {
        let mut x: u32 = 1;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((x >> 16) as f32 / 32768.0 - 1.0) * amp
            })
            .collect()
    }

    /// The largest jump between neighbouring samples.
    fn max_step(x: &[f32]) -> f32 {
        x.windows(2).fold(0f32, |m, w| m.max((w[1] - w[0]).abs()))
    }

    #[test]
    fn a_voiced_frame_loses_or_gains_one_pitch_period_without_a_click() {
        // 150 Hz: a period of 320 samples.
        let frame = vowel(0, 960);
        let smooth = max_step(&frame);
        let mut short = frame.clone();
        assert_eq!(shorten(&mut short, 240), 320);
        assert_eq!(short.len(), 640);
        assert!(
            max_step(&short) <= smooth * 1.2,
            "{} vs {smooth}",
            max_step(&short)
        );
        // What follows the change is the original, a period on.
        assert_eq!(short[400..], frame[720..]);
        let mut long = frame.clone();
        assert_eq!(lengthen(&mut long, 240), 320);
        assert_eq!(long.len(), 1280);
        assert!(max_step(&long) <= smooth * 1.2);
        assert_eq!(long[960..], frame[640..]);
    }

    #[test]
    fn a_quiet_frame_is_cut_or_padded_by_exactly_what_is_asked() {
        let frame = noise(960, 0.001);
        let mut short = frame.clone();
        assert_eq!(shorten(&mut short, 100), 100);
        assert_eq!(short.len(), 860);
        let mut long = frame.clone();
        assert_eq!(lengthen(&mut long, 100), 100);
        assert_eq!(long.len(), 1060);
        // Never more than half a frame.
        let mut short = frame.clone();
        assert_eq!(shorten(&mut short, 2000), 480);
    }

    #[test]
    fn a_loud_frame_that_does_not_repeat_is_left_alone() {
        let frame = noise(960, 0.3);
        let mut x = frame.clone();
        assert_eq!(shorten(&mut x, 240), 0);
        assert_eq!(lengthen(&mut x, 240), 0);
        assert_eq!(x, frame);
        let mut nothing = frame.clone();
        assert_eq!(shorten(&mut nothing, 0), 0);
    }
}
