//! Comparing a recording with its source: Opus delays and alters the waveform, so the
//! test searches for the lag and asserts on normalized correlation (see TESTING.md).

/// Reads a WAV written by roger-bot.
pub fn read(path: &std::path::Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(path).expect("open wav");
    r.samples::<i16>().map(|s| s.expect("sample")).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_known_delay_in_noise_like_audio() {
        let mut x: u32 = 12345;
        let reference: Vec<i16> = (0..20_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((x >> 16) as i16) / 4
            })
            .collect();
        let mut recorded = vec![0i16; 1234];
        recorded.extend_from_slice(&reference);
        let (lag, c) = best_lag(&reference, &recorded, 4800);
        assert_eq!(lag, 1234);
        assert!(c > 0.999);
        let silence = vec![0i16; 30_000];
        assert!(best_lag(&reference, &silence, 4800).1 < 0.1);
    }
}
