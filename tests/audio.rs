//! Comparing a recording with its source: Opus delays and alters the waveform, so the
//! test searches for the lag and asserts on normalized correlation (see TESTING.md).

/// Reads a WAV written by roger-bot.
pub fn read(path: &std::path::Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(path).expect("open wav");
    r.samples::<i16>().map(|s| s.expect("sample")).collect()
}

/// Writes 48 kHz mono 16-bit PCM as a WAV.
pub fn write(path: &std::path::Path, pcm: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("wav");
    for &s in pcm {
        w.write_sample(s).expect("sample");
    }
    w.finalize().expect("finalize");
}

/// RMS of `x`: a 100 ms piece at 30 % of a whole's or more has sound in it.
pub fn loudness(x: &[i16]) -> f64 {
    (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

fn corr_at(reference: &[f64], recorded: &[f64], lag: usize) -> f64 {
    let n = reference.len().min(recorded.len().saturating_sub(lag));
    if n == 0 {
        return 0.0;
    }
    let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (x, y) = (reference[i], recorded[lag + i]);
        xy += x * y;
        xx += x * x;
        yy += y * y;
    }
    if xx == 0.0 || yy == 0.0 {
        0.0
    } else {
        xy / (xx.sqrt() * yy.sqrt())
    }
}

fn decimate(x: &[i16], k: usize) -> Vec<f64> {
    x.chunks(k)
        .map(|c| c.iter().map(|&s| f64::from(s)).sum::<f64>() / k as f64)
        .collect()
}

/// Finds where `reference` starts inside `recorded` (searching lags `0..max_lag`) and
/// returns `(lag_samples, correlation)`. A coarse search on 8x decimated signals is
/// refined at full rate around its best lag.
pub fn best_lag(reference: &[i16], recorded: &[i16], max_lag: usize) -> (usize, f64) {
    const K: usize = 8;
    let (r8, c8) = (decimate(reference, K), decimate(recorded, K));
    let coarse = (0..=max_lag / K)
        .map(|l| (l, corr_at(&r8, &c8, l)))
        .fold((0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a })
        .0
        * K;
    let rf: Vec<f64> = reference.iter().map(|&s| f64::from(s)).collect();
    let cf: Vec<f64> = recorded.iter().map(|&s| f64::from(s)).collect();
    (coarse.saturating_sub(2 * K)..=coarse + 2 * K)
        .map(|l| (l, corr_at(&rf, &cf, l)))
        .fold((0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a })
}

/// How a recording made through real devices matches its source, piece by piece.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pieces {
    /// Pieces of the reference with sound in them (silent ones say nothing).
    pub voiced: usize,
    /// Of those, how many were found in the recording at `min_corr` or better.
    pub matched: usize,
    /// How often the position of a piece moved from where the one before it was found.
    pub slips: usize,
    /// The last matched piece's position minus the first's expected one, in samples.
    pub drift: i64,
}

/// Follows `reference` through `recorded` from `lag` (as found by [`best_lag`]) in
/// 100 ms pieces, each searched for within 50 ms of where the piece before it was
/// found. A sound server that under- or overruns on a loaded machine shifts the rest of
/// a recording by a few ms; one whole-signal correlation then drops for every sample
/// after the glitch, though nothing was lost. Here the glitch costs the pieces it
/// touched and is counted as a slip.
pub fn match_pieces(reference: &[i16], recorded: &[i16], lag: usize, min_corr: f64) -> Pieces {
    const PIECE: usize = 4_800;
    const SLACK: usize = 2_400;
    let overall = loudness(reference);
    let mut out = Pieces {
        voiced: 0,
        matched: 0,
        slips: 0,
        drift: 0,
    };
    // Where the recording is ahead of the reference (samples), as last found.
    let mut offset = lag as i64;
    for (i, piece) in reference.chunks_exact(PIECE).enumerate() {
        if loudness(piece) < 0.3 * overall {
            continue;
        }
        out.voiced += 1;
        let expected = ((i * PIECE) as i64 + offset).max(0);
        let from = (expected - SLACK as i64).max(0) as usize;
        let to = (expected as usize + PIECE + SLACK).min(recorded.len());
        if to <= from + PIECE {
            continue;
        }
        let (at, corr) = best_lag(piece, &recorded[from..to], to - from - PIECE);
        if corr >= min_corr {
            out.matched += 1;
            let found = (from + at) as i64 - (i * PIECE) as i64;
            if (found - offset).abs() > 48 {
                out.slips += 1;
            }
            offset = found;
            out.drift = offset - lag as i64;
        }
    }
    out
}

/// The speech fixtures for quality work: one sentence in three synthesized voices
/// (`make fixture`), 5.5 s each, 48 kHz mono.
pub fn voices() -> Vec<std::path::PathBuf> {
    ["en-us", "en-gb-f3", "en-us-m3"]
        .iter()
        .map(|v| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/voices")
                .join(format!("{v}.wav"))
        })
        .collect()
}

/// `pcm` through Opus alone (the client's encoder at `bitrate` with the in-band FEC a
/// talker starts with, 5 %; its decoder), after a second of silence as a talker's
/// transmission has before the speech, aligned with the input (the encoder's look-ahead
/// removed): what a perfect path delivers.
pub fn opus_alone(pcm: &[i16], bitrate: i32) -> Vec<i16> {
    const FRAME: usize = 960;
    const LEAD: usize = 48_000;
    let mut enc = roger_client::audio::Encoder::new(bitrate, 5).expect("encoder");
    let mut dec = roger_client::audio::Decoder::new().expect("decoder");
    let mut out = Vec::with_capacity(pcm.len() + LEAD + FRAME);
    let mut padded = vec![0i16; LEAD];
    padded.extend_from_slice(pcm);
    padded.resize((LEAD + pcm.len()).div_ceil(FRAME) * FRAME + FRAME, 0);
    for frame in padded.chunks_exact(FRAME) {
        let packet = enc.encode(frame).expect("encode");
        out.extend_from_slice(&dec.decode(&packet).expect("decode"));
    }
    out.drain(..LEAD);
    let (lag, _) = best_lag(pcm, &out, 960);
    out.drain(..lag);
    out.truncate(pcm.len());
    out
}

/// One voiced 100 ms window of a reference, as found in a recording near one lag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Where the window starts in the reference, ms.
    pub at_ms: u32,
    /// The best correlation within the tolerance around the lag.
    pub corr: f64,
    /// The lag that gave it, relative to the one lag, in samples.
    pub shift: i64,
}

/// Every voiced 100 ms window of `reference` (RMS at least 30 % of the whole's),
/// correlated with `recorded` at `lag` give or take `tolerance` samples: a recording
/// with no slips finds every window near the one lag; a jump of a few ms moves all the
/// windows after it.
pub fn windows_at_lag(
    reference: &[i16],
    recorded: &[i16],
    lag: usize,
    tolerance: usize,
) -> Vec<Window> {
    const PIECE: usize = 4_800;
    let overall = loudness(reference);
    let rf: Vec<f64> = recorded.iter().map(|&s| f64::from(s)).collect();
    let mut out = Vec::new();
    for (i, piece) in reference.chunks_exact(PIECE).enumerate() {
        if loudness(piece) < 0.3 * overall {
            continue;
        }
        let pf: Vec<f64> = piece.iter().map(|&s| f64::from(s)).collect();
        let centre = (lag + i * PIECE) as i64;
        let (mut best, mut shift) = (f64::MIN, 0);
        for d in -(tolerance as i64)..=tolerance as i64 {
            let at = centre + d;
            if at < 0 || at as usize + PIECE > rf.len() {
                continue;
            }
            let c = corr_at(&pf, &rf[at as usize..at as usize + PIECE], 0);
            if c > best {
                (best, shift) = (c, d);
            }
        }
        out.push(Window {
            at_ms: (i * 100) as u32,
            corr: best.max(0.0),
            shift,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` samples of noise-like audio (an LCG), a quarter of full scale.
    fn noise(seed: u32, n: usize) -> Vec<i16> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((x >> 16) as i16) / 4
            })
            .collect()
    }

    #[test]
    fn finds_a_known_delay_in_noise_like_audio() {
        let reference = noise(12345, 20_000);
        let mut recorded = vec![0i16; 1234];
        recorded.extend_from_slice(&reference);
        let (lag, c) = best_lag(&reference, &recorded, 4800);
        assert_eq!(lag, 1234);
        assert!(c > 0.999);
        let silence = vec![0i16; 30_000];
        assert!(best_lag(&reference, &silence, 4800).1 < 0.1);
    }

    #[test]
    fn a_slip_costs_the_pieces_it_touched_not_the_whole_recording() {
        let reference = noise(777, 48_000);
        // 1000 samples late, then 480 samples of silence inserted halfway (an underrun).
        let mut recorded = vec![0i16; 1_000];
        recorded.extend_from_slice(&reference[..24_000]);
        recorded.extend(std::iter::repeat_n(0i16, 480));
        recorded.extend_from_slice(&reference[24_000..]);
        recorded.extend(std::iter::repeat_n(0i16, 4_800));
        let (lag, whole) = best_lag(&reference, &recorded, 4_800);
        assert_eq!(lag, 1_000);
        assert!(whole < 0.8, "one correlation over all of it: {whole}");
        let p = match_pieces(&reference, &recorded, lag, 0.9);
        assert_eq!(p.voiced, 10);
        assert!(p.matched >= 9, "{p:?}");
        assert_eq!(p.slips, 1, "{p:?}");
        assert_eq!(p.drift, 480, "{p:?}");
        // Silence where the sound should be matches nothing.
        let lost = vec![0i16; recorded.len()];
        assert_eq!(match_pieces(&reference, &lost, lag, 0.9).matched, 0);
    }

    #[test]
    fn a_jump_of_five_ms_fails_the_windows_after_it_at_two_ms_of_tolerance() {
        let reference = noise(99, 48_000);
        let mut recorded = vec![0i16; 2_000];
        recorded.extend_from_slice(&reference[..24_000]);
        recorded.extend(std::iter::repeat_n(0i16, 240));
        recorded.extend_from_slice(&reference[24_000..]);
        let w = windows_at_lag(&reference, &recorded, 2_000, 96);
        assert_eq!(w.len(), 10);
        assert!(
            w[..5].iter().all(|w| w.corr > 0.99 && w.shift == 0),
            "{w:?}"
        );
        assert!(w[5..].iter().all(|w| w.corr < 0.5), "{w:?}");
        // With 6 ms of tolerance the same recording passes, shifted by 5 ms.
        let w = windows_at_lag(&reference, &recorded, 2_000, 288);
        assert!(
            w[5..].iter().all(|w| w.corr > 0.99 && w.shift == 240),
            "{w:?}"
        );
    }

    #[test]
    fn opus_alone_is_aligned_with_its_input() {
        let reference = read(&voices()[0]);
        let coded = opus_alone(&reference, 24_000);
        assert_eq!(coded.len(), reference.len());
        let (lag, corr) = best_lag(&reference, &coded, 100);
        assert!(lag <= 1, "{lag}");
        assert!(corr > 0.8, "{corr}");
    }
}
