//! Audio seams and the Opus codec.
//!
//! Everything inside Roger is 48 kHz mono `i16` PCM in 20 ms frames (960 samples).
//! - [`AudioSource`]: where a talker's frames come from (a WAV file here; a microphone
//!   in the audio issue). It paces itself: `next_frame` returns when the frame is due.
//! - [`AudioSink`]: where a listener's decoded frames go (a recording, a speaker).
//! - [`Encoder`] / [`Decoder`]: Opus VoIP, in-band FEC on, with packet-loss concealment.

pub mod device;
pub mod jitter;
pub mod resample;
pub mod stretch;
pub mod tones;

use roger_protocol::{ChannelId, ErrorBody, ErrorCode};
use std::path::Path;
use std::time::Duration;

/// Sample rate of everything inside Roger.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per 20 ms frame.
pub const FRAME_SAMPLES: usize = 960;
/// Duration of one frame.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);
/// Largest Opus packet we produce.
const MAX_PACKET: usize = 1500;

/// A 20 ms frame of 48 kHz mono PCM.
pub type Frame = Vec<i16>;

/// Where a talker's audio comes from.
#[async_trait::async_trait]
pub trait AudioSource: Send {
    /// The next 20 ms frame, returned when it is due; `None` when the source has ended.
    async fn next_frame(&mut self) -> Option<Frame>;
}

/// Where a listener's audio goes.
pub trait AudioSink: Send {
    /// One decoded frame of `channel`, with its (rewritten, continuous) RTP timestamp.
    fn play(&mut self, channel: &ChannelId, rtp_timestamp: u32, pcm: &[i16]);

    /// Every packet as received, before decoding (tools count and time packets here;
    /// `payload` may carry a [`stamp`]; a device sink feeds its jitter buffer).
    fn packet(&mut self, _channel: &ChannelId, _sequence: u16, _timestamp: u32, _payload: &[u8]) {}

    /// Missed audio played back (decoded 20 ms frames of `channel`, paced in real time by
    /// the manager, which holds them back while live audio plays). A speaker mixes them
    /// while no channel plays live; a recording puts them where the channel's timeline is
    /// now. The default drops them (a sink that only counts packets).
    fn replay(&mut self, _channel: &ChannelId, _pcm: &[i16]) {}

    /// How many replayed frames this sink wants ahead of their time: a device's queue
    /// must not run dry between two frames; a recording places each as it comes.
    fn replay_lead(&self) -> u32 {
        0
    }

    /// Whether received packets are decoded and played. A sink that only counts packets
    /// (the load generator's listeners) says no and saves the decoder's CPU.
    fn decodes(&self) -> bool {
        true
    }
}

/// A sink that drops everything (a client that only talks).
pub struct NullSink;

impl AudioSink for NullSink {
    fn play(&mut self, _: &ChannelId, _: u32, _: &[i16]) {}
}

/// Reads a WAV file as 48 kHz mono frames (stereo is downmixed). Other rates are
/// refused with a clear error rather than played at the wrong pitch.
pub fn read_wav(path: &Path) -> Result<Vec<i16>, ErrorBody> {
    let bad = |why: String| {
        ErrorBody::new(
            ErrorCode::MediaDeviceError,
            format!("{}: {why}", path.display()),
        )
    };
    let mut reader = hound::WavReader::open(path).map_err(|e| bad(e.to_string()))?;
    let spec = reader.spec();
    if spec.sample_rate != SAMPLE_RATE {
        return Err(bad(format!(
            "sample rate {} Hz; Roger needs {SAMPLE_RATE} Hz (convert with: sox in.wav -r 48000 -c 1 out.wav)",
            spec.sample_rate
        )));
    }
    let samples: Vec<i32> = match spec.sample_format {
        hound::SampleFormat::Int => reader
            .samples::<i32>()
            .map(|s| s.map(|v| v >> (spec.bits_per_sample.saturating_sub(16))))
            .collect::<Result<_, _>>(),
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i32))
            .collect::<Result<_, _>>(),
    }
    .map_err(|e| bad(e.to_string()))?;
    let ch = usize::from(spec.channels.max(1));
    Ok(samples
        .chunks(ch)
        .map(|c| (c.iter().sum::<i32>() / ch as i32).clamp(-32768, 32767) as i16)
        .collect())
}

/// Writes 48 kHz mono PCM as a 16-bit WAV file.
pub fn write_wav(path: &Path, pcm: &[i16]) -> Result<(), ErrorBody> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let io = |e: hound::Error| {
        ErrorBody::new(ErrorCode::InternalError, format!("{}: {e}", path.display()))
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(io)?;
    for s in pcm {
        w.write_sample(*s).map_err(io)?;
    }
    w.finalize().map_err(io)
}

/// Plays PCM in real time, `repeat` times back to back, as 20 ms frames.
pub struct PcmSource {
    pcm: std::sync::Arc<[i16]>,
    repeat: u32,
    pass: u32,
    pos: usize,
    interval: Option<tokio::time::Interval>,
}

impl PcmSource {
    /// A source over `pcm` played `repeat` times (at least once).
    pub fn new(pcm: impl Into<std::sync::Arc<[i16]>>, repeat: u32) -> Self {
        PcmSource {
            pcm: pcm.into(),
            repeat: repeat.max(1),
            pass: 0,
            pos: 0,
            interval: None,
        }
    }

    /// A source over a WAV file.
    pub fn from_wav(path: &Path, repeat: u32) -> Result<Self, ErrorBody> {
        Ok(Self::new(read_wav(path)?, repeat))
    }

    /// Total duration of what this source will play.
    pub fn duration(&self) -> Duration {
        let frames = self.pcm.len().div_ceil(FRAME_SAMPLES) as u32 * self.repeat;
        FRAME_DURATION * frames
    }
}

#[async_trait::async_trait]
impl AudioSource for PcmSource {
    async fn next_frame(&mut self) -> Option<Frame> {
        if self.pos >= self.pcm.len() {
            self.pass += 1;
            self.pos = 0;
        }
        if self.pass >= self.repeat || self.pcm.is_empty() {
            return None;
        }
        let interval = self.interval.get_or_insert_with(|| {
            let mut i = tokio::time::interval(FRAME_DURATION);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            i
        });
        interval.tick().await;
        let end = (self.pos + FRAME_SAMPLES).min(self.pcm.len());
        let mut frame = self.pcm[self.pos..end].to_vec();
        frame.resize(FRAME_SAMPLES, 0);
        self.pos = end;
        Some(frame)
    }
}

/// Records what a channel plays onto a timeline by RTP timestamp, so pauses between
/// transmissions stay pauses and a lost frame leaves its concealment in place.
#[derive(Default)]
pub struct Recording {
    base: Option<u32>,
    pcm: Vec<i16>,
}

impl Recording {
    /// An empty recording.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a frame at its timestamp.
    pub fn add(&mut self, rtp_timestamp: u32, frame: &[i16]) {
        let base = *self.base.get_or_insert(rtp_timestamp);
        let offset = rtp_timestamp.wrapping_sub(base) as usize;
        // Ignore frames from before the start or absurdly far ahead (a broken stream).
        if offset > SAMPLE_RATE as usize * 3600 {
            return;
        }
        let end = offset + frame.len();
        if self.pcm.len() < end {
            self.pcm.resize(end, 0);
        }
        self.pcm[offset..end].copy_from_slice(frame);
    }

    /// The samples so far.
    pub fn samples(&self) -> &[i16] {
        &self.pcm
    }

    /// Takes the samples, leaving the recording empty.
    pub fn take(&mut self) -> Vec<i16> {
        self.base = None;
        std::mem::take(&mut self.pcm)
    }
}

/// Root-mean-square and peak of a frame, both in 0.0..=1.0.
pub fn level(pcm: &[i16]) -> (f32, f32) {
    if pcm.is_empty() {
        return (0.0, 0.0);
    }
    let sum: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / pcm.len() as f64).sqrt() / 32768.0;
    let peak = pcm
        .iter()
        .map(|&s| i32::from(s).unsigned_abs())
        .max()
        .unwrap_or(0) as f32
        / 32768.0;
    (rms as f32, peak)
}

fn codec_err(e: opus::Error) -> ErrorBody {
    ErrorBody::new(ErrorCode::InternalError, format!("opus: {e}"))
}

/// Opus encoder: 48 kHz mono, VoIP, in-band FEC.
pub struct Encoder {
    inner: opus::Encoder,
    out: Vec<u8>,
}

impl Encoder {
    /// A VoIP encoder at `bitrate` bits/s with FEC tuned for `loss_percent` loss.
    pub fn new(bitrate: i32, loss_percent: i32) -> Result<Self, ErrorBody> {
        let mut inner =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .map_err(codec_err)?;
        inner
            .set_bitrate(opus::Bitrate::Bits(bitrate))
            .map_err(codec_err)?;
        inner.set_inband_fec(true).map_err(codec_err)?;
        inner
            .set_packet_loss_perc(loss_percent)
            .map_err(codec_err)?;
        Ok(Encoder {
            inner,
            out: vec![0; MAX_PACKET],
        })
    }

    /// Encodes one 20 ms frame.
    pub fn encode(&mut self, frame: &[i16]) -> Result<Vec<u8>, ErrorBody> {
        let n = self.inner.encode(frame, &mut self.out).map_err(codec_err)?;
        Ok(self.out[..n].to_vec())
    }

    /// Tells the encoder how much loss to protect against (from the quality monitor).
    pub fn set_loss_percent(&mut self, percent: i32) -> Result<(), ErrorBody> {
        self.inner
            .set_packet_loss_perc(percent.clamp(0, 100))
            .map_err(codec_err)
    }
}

/// Opus decoder with loss concealment.
pub struct Decoder {
    inner: opus::Decoder,
}

impl Decoder {
    /// A 48 kHz mono decoder.
    pub fn new() -> Result<Self, ErrorBody> {
        Ok(Decoder {
            inner: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).map_err(codec_err)?,
        })
    }

    /// Decodes one packet into a frame.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Frame, ErrorBody> {
        let mut out = vec![0i16; FRAME_SAMPLES * 6];
        let n = self
            .inner
            .decode(packet, &mut out, false)
            .map_err(codec_err)?;
        out.truncate(n);
        Ok(out)
    }

    /// Recovers the frame *before* `next_packet` from its in-band FEC data.
    pub fn decode_fec(&mut self, next_packet: &[u8]) -> Result<Frame, ErrorBody> {
        let mut out = vec![0i16; FRAME_SAMPLES];
        let n = self
            .inner
            .decode(next_packet, &mut out, true)
            .map_err(codec_err)?;
        out.truncate(n);
        Ok(out)
    }

    /// Conceals one missing frame (packet-loss concealment).
    pub fn conceal(&mut self) -> Result<Frame, ErrorBody> {
        let mut out = vec![0i16; FRAME_SAMPLES];
        let n = self.inner.decode(&[], &mut out, false).map_err(codec_err)?;
        out.truncate(n);
        Ok(out)
    }
}

/// A send timestamp hidden in an Opus packet's padding, for latency measurement (the
/// load generator, benchmarks). The packet stays valid Opus: RFC 6716 §3.2.5 lets a
/// code-3 packet carry padding that decoders skip, and the server forwards payloads
/// untouched, so a listener reads the talker's send time from what it receives.
///
/// Written by hand because no Opus crate exposes packet padding (libopus has
/// `opus_packet_pad`, which the `opus` crate does not bind).
pub mod stamp {
    const MAGIC: [u8; 4] = *b"RGR1";
    /// Bytes appended as padding: magic + Unix microseconds.
    const LEN: usize = 12;

    /// `packet` (one code-0 Opus frame, as Roger's encoder produces) re-framed as a
    /// code-3 packet whose padding carries `unix_us`. `None` for other packet codes
    /// (sent unstamped) or a frame too large to re-frame.
    pub fn embed(packet: &[u8], unix_us: u64) -> Option<Vec<u8>> {
        let (&toc, frame) = packet.split_first()?;
        if toc & 0b11 != 0 || frame.is_empty() || frame.len() > 1275 {
            return None;
        }
        let mut out = Vec::with_capacity(packet.len() + 3 + LEN);
        out.push(toc | 0b11); // code 3: an arbitrary number of frames
        out.push(0b0100_0001); // CBR, padding present, M = 1 frame
        out.push(LEN as u8); // padding length (< 255: one byte)
        out.extend_from_slice(frame);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&unix_us.to_be_bytes());
        Some(out)
    }

    /// The send time embedded by [`embed`], if `packet` carries one.
    pub fn extract(packet: &[u8]) -> Option<u64> {
        if packet.len() < 3 + LEN + 1 || packet[0] & 0b11 != 0b11 {
            return None;
        }
        if packet[1] != 0b0100_0001 || usize::from(packet[2]) != LEN {
            return None;
        }
        let tail = &packet[packet.len() - LEN..];
        if tail[..4] != MAGIC {
            return None;
        }
        Some(u64::from_be_bytes(tail[4..].try_into().ok()?))
    }

    /// Now, in Unix microseconds.
    pub fn now_us() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_packet_decodes_like_the_original_and_gives_back_its_time() {
        let mut enc = Encoder::new(24_000, 5).unwrap();
        let pcm = chirp(FRAME_SAMPLES * 10);
        let (mut plain, mut stamped) = (Decoder::new().unwrap(), Decoder::new().unwrap());
        for (i, frame) in pcm.chunks(FRAME_SAMPLES).enumerate() {
            let packet = enc.encode(frame).unwrap();
            assert_eq!(stamp::extract(&packet), None, "a plain packet has no stamp");
            let t = 1_700_000_000_000_000 + i as u64;
            let s = stamp::embed(&packet, t).expect("Roger's encoder makes code-0 packets");
            assert_eq!(stamp::extract(&s), Some(t));
            assert_eq!(plain.decode(&packet).unwrap(), stamped.decode(&s).unwrap());
            // FEC data is read through the padding too.
            assert_eq!(
                plain.decode_fec(&packet).unwrap(),
                stamped.decode_fec(&s).unwrap()
            );
        }
        assert_eq!(stamp::embed(&[], 1), None);
        assert_eq!(
            stamp::embed(&[0b0000_0001, 1, 2], 1),
            None,
            "code 1 is not re-framed"
        );
        assert_eq!(stamp::extract(&[0xff; 8]), None);
    }

    fn chirp(samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|i| {
                let t = i as f64 / f64::from(SAMPLE_RATE);
                (8000.0 * (2.0 * std::f64::consts::PI * (200.0 + 900.0 * t) * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn opus_round_trip_keeps_frame_size_and_energy() {
        let mut enc = Encoder::new(24_000, 5).unwrap();
        let mut dec = Decoder::new().unwrap();
        let pcm = chirp(FRAME_SAMPLES * 20);
        let mut energy_in = 0.0;
        let mut energy_out = 0.0;
        for frame in pcm.chunks(FRAME_SAMPLES) {
            let packet = enc.encode(frame).unwrap();
            assert!(!packet.is_empty() && packet.len() < 400);
            let out = dec.decode(&packet).unwrap();
            assert_eq!(out.len(), FRAME_SAMPLES);
            energy_in += level(frame).0;
            energy_out += level(&out).0;
        }
        assert!(
            (energy_out / energy_in) > 0.7,
            "{energy_out} vs {energy_in}"
        );
    }

    #[test]
    fn a_lost_frame_is_concealed_or_recovered_from_fec() {
        let mut enc = Encoder::new(24_000, 20).unwrap();
        let mut dec = Decoder::new().unwrap();
        let pcm = chirp(FRAME_SAMPLES * 10);
        let packets: Vec<_> = pcm
            .chunks(FRAME_SAMPLES)
            .map(|f| enc.encode(f).unwrap())
            .collect();
        for p in &packets[..5] {
            dec.decode(p).unwrap();
        }
        assert_eq!(dec.decode_fec(&packets[6]).unwrap().len(), FRAME_SAMPLES);
        assert_eq!(dec.conceal().unwrap().len(), FRAME_SAMPLES);
    }

    #[test]
    fn a_recording_places_frames_by_timestamp() {
        let mut r = Recording::new();
        r.add(1000, &[1; 960]);
        r.add(1000 + 960 * 3, &[2; 960]);
        assert_eq!(r.samples().len(), 960 * 4);
        assert_eq!(r.samples()[959], 1);
        assert_eq!(r.samples()[960], 0);
        assert_eq!(r.samples()[960 * 3], 2);
    }

    #[test]
    fn wav_files_round_trip_and_wrong_rates_are_refused() {
        let dir = std::env::temp_dir().join(format!("roger-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.wav");
        let pcm = chirp(4800);
        write_wav(&path, &pcm).unwrap();
        assert_eq!(read_wav(&path).unwrap(), pcm);
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let bad = dir.join("b.wav");
        let mut w = hound::WavWriter::create(&bad, spec).unwrap();
        w.write_sample(0i16).unwrap();
        w.finalize().unwrap();
        let e = read_wav(&bad).unwrap_err();
        assert!(e.message.contains("16000"), "{e}");
        assert!(read_wav(&dir.join("missing.wav")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_pcm_source_paces_frames_and_repeats() {
        let mut s = PcmSource::new(vec![7i16; 960 * 2 + 10], 2);
        assert_eq!(s.duration(), Duration::from_millis(120));
        let start = tokio::time::Instant::now();
        let mut n = 0;
        while let Some(f) = s.next_frame().await {
            assert_eq!(f.len(), FRAME_SAMPLES);
            n += 1;
        }
        assert_eq!(n, 6);
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }
}
