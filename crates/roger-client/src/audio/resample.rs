//! Streaming sample-rate conversion between a device's rate and Roger's 48 kHz.
//!
//! A thin wrapper over rubato's FFT resampler (fixed 10 ms input chunks, about 10 ms of
//! delay): push any number of samples in, take whole frames out. Equal rates pass
//! through untouched.

use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Resampler as _};
use std::collections::VecDeque;

/// Mono streaming resampler.
pub struct Resampler {
    inner: Option<Fft<f32>>,
    chunk: usize,
    pending: Vec<f32>,
    out_buf: Vec<f32>,
    ready: VecDeque<f32>,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("converting", &self.inner.is_some())
            .field("chunk", &self.chunk)
            .finish()
    }
}

/// Why a resampler could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot resample {from} Hz to {to} Hz: {why}")]
pub struct ResampleError {
    from: u32,
    to: u32,
    why: String,
}

impl Resampler {
    /// Converts `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Result<Resampler, ResampleError> {
        let err = |why: String| ResampleError { from, to, why };
        if from == 0 || to == 0 {
            return Err(err("a rate of 0".into()));
        }
        let chunk = (from as usize / 100).max(1);
        let inner = if from == to {
            None
        } else {
            Some(
                Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input)
                    .map_err(|e| err(e.to_string()))?,
            )
        };
        let out_len = inner.as_ref().map_or(0, |r| r.output_frames_max());
        Ok(Resampler {
            inner,
            chunk,
            pending: Vec::with_capacity(chunk * 2),
            out_buf: vec![0.0; out_len],
            ready: VecDeque::new(),
        })
    }

    /// Adds input samples.
    pub fn push(&mut self, input: &[f32]) {
        let Some(r) = self.inner.as_mut() else {
            self.ready.extend(input);
            return;
        };
        self.pending.extend_from_slice(input);
        let mut start = 0;
        while self.pending.len() - start >= self.chunk {
            let chunk = &self.pending[start..start + self.chunk];
            let input = SequentialSlice::new(chunk, 1, self.chunk).expect("chunk-sized buffer");
            let frames = self.out_buf.len();
            let mut output =
                SequentialSlice::new_mut(&mut self.out_buf, 1, frames).expect("sized buffer");
            match r.process_into_buffer(&input, &mut output, None) {
                Ok((_, produced)) => self.ready.extend(&self.out_buf[..produced]),
                Err(e) => tracing::warn!(error = %e, "resampling failed; chunk dropped"),
            }
            start += self.chunk;
        }
        self.pending.drain(..start);
    }

    /// Samples ready to take.
    pub fn available(&self) -> usize {
        self.ready.len()
    }

    /// Takes the next ready sample.
    pub fn pop(&mut self) -> Option<f32> {
        self.ready.pop_front()
    }

    /// Drops everything ready or pending and starts afresh (what was queued was
    /// silence, and the next push need not wait behind it).
    pub fn clear(&mut self) {
        self.ready.clear();
        self.pending.clear();
        if let Some(r) = self.inner.as_mut() {
            r.reset();
        }
    }

    /// Takes exactly `n` samples if that many are ready.
    pub fn take(&mut self, n: usize) -> Option<Vec<f32>> {
        if self.ready.len() < n {
            return None;
        }
        Some(self.ready.drain(..n).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f64, seconds: f64) -> Vec<f32> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin()) as f32
            })
            .collect()
    }

    fn rising_zero_crossings(v: &[f32]) -> usize {
        v.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count()
    }

    #[test]
    fn equal_rates_pass_through() {
        let mut r = Resampler::new(48_000, 48_000).unwrap();
        let x = sine(48_000, 440.0, 0.1);
        r.push(&x);
        assert_eq!(r.take(x.len()).unwrap(), x);
        assert!(r.take(1).is_none());
    }

    #[test]
    fn converting_keeps_the_pitch_and_the_duration_in_odd_sized_pushes() {
        for (from, to) in [
            (44_100, 48_000),
            (48_000, 44_100),
            (16_000, 48_000),
            (48_000, 96_000),
        ] {
            let x = sine(from, 1000.0, 2.0);
            let mut r = Resampler::new(from, to).unwrap();
            // Device callbacks come in odd sizes.
            for part in x.chunks(333) {
                r.push(part);
            }
            let n = r.available();
            let expected = 2 * to as usize;
            assert!(
                n + to as usize / 20 >= expected && n <= expected,
                "{from}->{to}: {n} samples for {expected}"
            );
            let y = r.take(n).unwrap();
            // 1 kHz stays 1 kHz: count cycles over the steady middle second.
            let mid = &y[to as usize / 2..to as usize * 3 / 2];
            let cycles = rising_zero_crossings(mid);
            assert!(
                (995..=1005).contains(&cycles),
                "{from}->{to}: {cycles} cycles"
            );
            let peak = mid.iter().fold(0f32, |m, s| m.max(s.abs()));
            assert!((0.45..0.55).contains(&peak), "{from}->{to}: peak {peak}");
        }
    }

    #[test]
    fn a_zero_rate_is_refused() {
        assert!(Resampler::new(0, 48_000).is_err());
    }
}
