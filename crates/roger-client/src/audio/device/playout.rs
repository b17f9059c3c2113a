//! Playout: per-channel jitter buffers, decoders and time-scale changes, mixing and
//! tones, all run by the output device's callback as it asks for audio.
//!
//! The device pulls: each callback mixes what it asks for, so the sound reaches the
//! device exactly when it asks, with nothing queued between a thread and the callback (a thread that filled a ring woke late now and then on a loaded machine, the
//! device played a few ms of silence, and taking them back later made a second slip).
//! WebRTC's audio device pulls from NetEq the same way. The callback takes the channels'
//! lock, which the network side holds only to queue a packet.
//!
//! Each channel decodes into its own queue of samples: a spurt starts behind the jitter
//! buffer's start margin of silence, and the time-scale changes the jitter buffer asks
//! for (`stretch.rs`) make a decoded frame a little shorter or longer, and the channels
//! mix sample for sample whatever each one did.

use super::*;
use crate::audio::stretch;

struct ChannelPlayout {
    jitter: JitterBuffer,
    decoder: Option<Decoder>,
    volume: f32,
    /// Decoded audio not mixed yet, -1..1 at 48 kHz.
    queue: VecDeque<f32>,
}

impl ChannelPlayout {
    fn new(volume: f32) -> ChannelPlayout {
        ChannelPlayout {
            jitter: JitterBuffer::new(JitterConfig::default()),
            decoder: Decoder::new().ok(),
            volume,
            queue: VecDeque::with_capacity(FRAME_SAMPLES * 3),
        }
    }

    /// Decodes until `n` samples are queued or the jitter buffer has nothing to play.
    /// False when the channel is idle (nothing queued, nothing to play).
    fn fill(&mut self, now: Instant, n: usize, granularity: Duration) -> bool {
        let Some(decoder) = self.decoder.as_mut() else {
            return false;
        };
        self.jitter.set_granularity(granularity);
        while self.queue.len() < n {
            if self.jitter.spurt_start(now) == Some(true) {
                // A spurt starts: behind the start margin, so the packets after the
                // first have that much time to come.
                let margin =
                    FRAME_SAMPLES * self.jitter.start_margin().as_micros() as usize / 20_000;
                let pad = margin.saturating_sub(self.queue.len());
                self.queue.extend(std::iter::repeat_n(0.0, pad));
            }
            let (pcm, packet) = match self.jitter.pop(now) {
                Playout::Packet(p) => (decoder.decode(&p), true),
                Playout::Fec(next) => (decoder.decode_fec(&next), false),
                Playout::Conceal => (decoder.conceal(), false),
                Playout::Silence => break,
            };
            let Ok(pcm) = pcm else {
                // Undecodable (a corrupt packet): its 20 ms as silence.
                self.queue.extend(std::iter::repeat_n(0.0, FRAME_SAMPLES));
                continue;
            };
            let mut frame: Vec<f32> = pcm.iter().map(|&s| f32::from(s) / 32768.0).collect();
            let want = self.jitter.scale();
            // A change that can wait waits for a quiet frame, where nobody hears it.
            let now_or_quiet = self.jitter.scale_urgent() || stretch::is_quiet(&frame);
            if packet && want != 0 && now_or_quiet {
                let changed = if want > 0 {
                    stretch::lengthen(&mut frame, want as usize) as i64
                } else {
                    -(stretch::shorten(&mut frame, want.unsigned_abs() as usize) as i64)
                };
                self.jitter.scaled(now, changed);
            }
            self.queue.extend(frame);
        }
        !self.queue.is_empty()
    }
}

struct PlayoutShared {
    channels: Mutex<HashMap<ChannelId, ChannelPlayout>>,
    volumes: Mutex<HashMap<ChannelId, f32>>,
    tones: Mutex<VecDeque<f32>>,
    tone_settings: Mutex<ToneSettings>,
    /// Missed audio being played back: mixed only while no channel plays live.
    replay: Mutex<VecDeque<f32>>,
    stop: AtomicBool,
    meter: Meter,
    underruns: AtomicU64,
    /// Samples mixed (48 kHz).
    mixed: AtomicU64,
    /// The longest time between two device callbacks, µs.
    max_gap_us: AtomicU64,
    device: Mutex<Option<String>>,
}

impl PlayoutShared {
    /// `channel`'s volume (1.0 unless set).
    fn volume(&self, channel: &ChannelId) -> f32 {
        self.volumes
            .lock()
            .expect("volumes lock")
            .get(channel)
            .copied()
            .unwrap_or(1.0)
    }

    fn new() -> PlayoutShared {
        PlayoutShared {
            channels: Mutex::new(HashMap::new()),
            volumes: Mutex::new(HashMap::new()),
            tones: Mutex::new(VecDeque::new()),
            tone_settings: Mutex::new(ToneSettings::default()),
            replay: Mutex::new(VecDeque::new()),
            stop: AtomicBool::new(false),
            meter: Meter::default(),
            underruns: AtomicU64::new(0),
            mixed: AtomicU64::new(0),
            max_gap_us: AtomicU64::new(0),
            device: Mutex::new(None),
        }
    }
}

/// Playout counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SpeakerStats {
    /// Device callbacks that took longer to mix than the audio they asked for lasts
    /// (the device then runs short). The callback mixes what it needs itself, so a late
    /// thread can no longer leave it short.
    pub device_underruns: u64,
    /// The longest time between two device callbacks while sound played, ms: more than
    /// the device's buffer (15 ms with PulseAudio) and the sound server played a gap.
    pub device_max_gap_ms: f64,
    /// 20 ms of audio mixed, in frames (silence included).
    pub frames_mixed: u64,
    /// The largest jitter-buffer target now, in 20 ms frames.
    pub jitter_target_frames: u32,
    /// Jitter buffer counters, all channels.
    #[serde(flatten)]
    pub jitter: JitterStats,
}

/// A running speaker, and the listener's [`AudioSink`] (cheap to clone).
#[derive(Clone)]
pub struct Speaker {
    shared: Arc<PlayoutShared>,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker")
            .field("device", &self.device_name())
            .finish()
    }
}

impl Speaker {
    /// Opens `choice` and starts playing (silence until audio arrives). Fails
    /// (`MEDIA_DEVICE_ERROR`) if the device cannot be opened now.
    pub fn open(choice: DeviceChoice, on_event: DeviceEvents) -> Result<Speaker, ErrorBody> {
        let shared = Arc::new(PlayoutShared::new());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("roger-playout".into())
            .spawn(move || playout_thread(s, choice, on_event, ready_tx))
            .map_err(|e| device_error(format!("cannot start the playout thread: {e}")))?;
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(Speaker { shared }),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                shared.stop.store(true, Ordering::SeqCst);
                Err(device_error("the speaker did not start within 5 s".into()))
            }
        }
    }

    /// Volume of one channel, 0.0..=2.0 (1.0 as received).
    pub fn set_volume(&self, channel: &ChannelId, volume: f32) {
        let v = volume.clamp(0.0, 2.0);
        self.shared
            .volumes
            .lock()
            .expect("volumes lock")
            .insert(channel.clone(), v);
        if let Some(c) = self
            .shared
            .channels
            .lock()
            .expect("channels lock")
            .get_mut(channel)
        {
            c.volume = v;
        }
    }

    /// Which tones play and how loud.
    pub fn set_tones(&self, settings: ToneSettings) {
        *self.shared.tone_settings.lock().expect("tones lock") = settings;
    }

    /// Drops the missed or history audio queued for playback (the Stop button).
    pub fn stop_replay(&self) {
        self.shared.replay.lock().expect("replay lock").clear();
    }

    /// Plays `tone` (mixed over whatever is playing), unless it is turned off.
    pub fn play_tone(&self, tone: Tone) {
        let settings = self
            .shared
            .tone_settings
            .lock()
            .expect("tones lock")
            .clone();
        if settings.enabled(tone) {
            self.shared
                .tones
                .lock()
                .expect("tones lock")
                .extend(tone.render(settings.volume));
        }
    }

    /// Output level of the latest frame: (RMS, peak), 0..1.
    pub fn level(&self) -> (f32, f32) {
        self.shared.meter.get()
    }

    /// Device callbacks too slow for the device (see [`SpeakerStats::device_underruns`]).
    pub fn underruns(&self) -> u64 {
        self.shared.underruns.load(Ordering::Relaxed)
    }

    /// Playout counters: device underruns, and the jitter buffers' counters summed over
    /// channels.
    pub fn stats(&self) -> SpeakerStats {
        let mut jitter = JitterStats::default();
        let mut target = 0;
        for c in self.shared.channels.lock().expect("channels lock").values() {
            target = target.max(c.jitter.target_frames());
            let s = c.jitter.stats();
            jitter.played += s.played;
            jitter.fec += s.fec;
            jitter.concealed += s.concealed;
            jitter.late += s.late;
            jitter.duplicates += s.duplicates;
            jitter.dropped += s.dropped;
            jitter.underruns += s.underruns;
            jitter.stretched += s.stretched;
            jitter.compressed += s.compressed;
            jitter.tail += s.tail;
            jitter.jitter_max_ms = jitter.jitter_max_ms.max(s.jitter_max_ms);
        }
        SpeakerStats {
            jitter_target_frames: target,
            device_max_gap_ms: self.shared.max_gap_us.load(Ordering::Relaxed) as f64 / 1000.0,
            device_underruns: self.underruns(),
            frames_mixed: self.shared.mixed.load(Ordering::Relaxed) / FRAME_SAMPLES as u64,
            jitter,
        }
    }

    /// The device in use now.
    pub fn device_name(&self) -> Option<String> {
        self.shared.device.lock().expect("device lock").clone()
    }

    /// Stops playing.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

impl AudioSink for Speaker {
    fn play(&mut self, _: &ChannelId, _: u32, _: &[i16]) {}

    fn replay_lead(&self) -> u32 {
        // 60 ms: a few late wake-ups of the pacing task do not leave a gap.
        3
    }

    fn replay(&mut self, channel: &ChannelId, pcm: &[i16]) {
        let volume = self.shared.volume(channel);
        self.shared
            .replay
            .lock()
            .expect("replay lock")
            .extend(pcm.iter().map(|&s| f32::from(s) / 32768.0 * volume));
    }

    fn packet(&mut self, channel: &ChannelId, sequence: u16, timestamp: u32, payload: &[u8]) {
        let now = Instant::now();
        let volume = self.shared.volume(channel);
        let payload = bytes::Bytes::copy_from_slice(payload);
        self.shared
            .channels
            .lock()
            .expect("channels lock")
            .entry(channel.clone())
            .or_insert_with(|| ChannelPlayout::new(volume))
            .jitter
            .push(now, sequence, timestamp, payload);
    }

    fn decodes(&self) -> bool {
        false
    }
}

/// Whether a talk spurt is due to start at `now` on some channel.
fn spurt_due(shared: &PlayoutShared, now: Instant) -> bool {
    let channels = shared.channels.lock().expect("channels lock");
    channels
        .values()
        .any(|c| c.jitter.spurt_start(now) == Some(true))
}

/// What [`mix_frame`] made.
struct Mixed {
    /// False when there was nothing to play (every channel idle, no tone).
    active: bool,
}

/// The next `out.len()` samples at 48 kHz (at most a frame): every channel's mixed, plus
/// tones. The device asks for audio every `granularity` (its callback period).
fn mix_frame(
    shared: &PlayoutShared,
    now: Instant,
    granularity: Duration,
    out: &mut [f32],
) -> Mixed {
    out.fill(0.0);
    let mut active = false;
    let mut channels = shared.channels.lock().expect("channels lock");
    for c in channels.values_mut() {
        if !c.fill(now, out.len(), granularity) {
            continue;
        }
        active = true;
        let n = out.len().min(c.queue.len());
        for (o, s) in out.iter_mut().zip(c.queue.drain(..n)) {
            *o += s * c.volume;
        }
    }
    drop(channels);
    // Live wins: missed audio plays back only while no channel plays live.
    if !active {
        let mut replay = shared.replay.lock().expect("replay lock");
        active |= !replay.is_empty();
        let n = out.len().min(replay.len());
        for (o, s) in out.iter_mut().zip(replay.drain(..n)) {
            *o += s;
        }
    }
    let mut tones = shared.tones.lock().expect("tones lock");
    active |= !tones.is_empty();
    for o in out.iter_mut() {
        match tones.pop_front() {
            Some(t) => *o += t,
            None => break,
        }
    }
    drop(tones);
    let (mut sum_sq, mut peak) = (0f32, 0f32);
    for o in out.iter_mut() {
        *o = o.clamp(-1.0, 1.0);
        sum_sq += *o * *o;
        peak = peak.max(o.abs());
    }
    shared.meter.set(sum_sq, out.len(), peak);
    Mixed { active }
}

/// What the output callback owns: it mixes as the device asks for samples.
struct Mixer {
    shared: std::sync::Weak<PlayoutShared>,
    resampler: Resampler,
    frame: Vec<f32>,
    /// The device's rate.
    rate: u32,
    /// When the previous callback came.
    last_callback: Option<Instant>,
    /// The latest frame mixed had sound: what is queued is not all silence.
    sounding: bool,
}

impl Mixer {
    /// Makes sure `n` samples at the device rate are ready. An idle speaker whose
    /// channel has a spurt due drops the silence it queued, so the spurt starts at this
    /// callback, not behind up to a frame of silence.
    fn prepare(&mut self, n: usize) -> bool {
        let Some(shared) = self.shared.upgrade() else {
            return false;
        };
        let now = Instant::now();
        match self.last_callback.replace(now) {
            // Only while sound plays: a gap then is heard (at the start of a stream,
            // while the sound server fills its buffer, it is not).
            Some(last) if self.sounding => {
                let gap = now.saturating_duration_since(last).as_micros() as u64;
                shared.max_gap_us.fetch_max(gap, Ordering::Relaxed);
            }
            Some(_) => {}
            // The first callback: this is the device's thread.
            None => raise_audio_thread_priority(),
        }
        if !self.sounding && self.resampler.available() > 0 && spurt_due(&shared, now) {
            self.resampler.clear();
        }
        let period = Duration::from_micros(n as u64 * 1_000_000 / u64::from(self.rate.max(1)));
        while self.resampler.available() < n {
            // Mix what this callback still needs (at 48 kHz), not a whole 20 ms frame
            // ahead: a channel then decodes its next packet only when the device needs
            // its first sample, so the start margin is what a packet really has.
            let short = n - self.resampler.available();
            let m = (short as u64 * u64::from(SAMPLE_RATE)).div_ceil(u64::from(self.rate.max(1)));
            let m = (m as usize).clamp(1, FRAME_SAMPLES);
            let mixed = mix_frame(&shared, now, period, &mut self.frame[..m]);
            self.sounding = mixed.active;
            shared.mixed.fetch_add(m as u64, Ordering::Relaxed);
            self.resampler.push(&self.frame[..m]);
        }
        // A callback that takes longer than the audio it asks for leaves the device
        // short: count it.
        if now.elapsed() > period {
            shared.underruns.fetch_add(1, Ordering::Relaxed);
        }
        true
    }
}

fn playout_thread(
    shared: Arc<PlayoutShared>,
    choice: DeviceChoice,
    on_event: DeviceEvents,
    ready: std::sync::mpsc::Sender<Result<(), ErrorBody>>,
) {
    let host = host();
    let mut announce = Announcer {
        direction: DeviceDirection::Output,
        on_event,
        ready: Some(ready),
        lost_reported: false,
    };
    let weak = Arc::downgrade(&shared);
    drop(shared);
    loop {
        let Some(shared) = weak.upgrade() else { return };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let opened = resolve(&host, DeviceDirection::Output, &choice)
            .ok_or_else(|| device_error(format!("speaker {choice} not found")))
            .and_then(|d| open_playout(&host, &d, &shared).map(|s| (s, d)));
        let ((stream, failure, rate), device) = match opened {
            Ok(x) => x,
            Err(e) => {
                if announce.open_failed(e) {
                    return;
                }
                drop(shared);
                std::thread::sleep(WATCH_INTERVAL);
                continue;
            }
        };
        let name = device_name(&device);
        let id = device_id(&device).unwrap_or_default();
        *shared.device.lock().expect("device lock") = Some(name.clone());
        tracing::info!(device = %name, %id, rate, "playout started");
        announce.opened(&name);
        drop(shared);
        // The callback does the work; this thread watches the device.
        let why = loop {
            std::thread::sleep(WATCH_INTERVAL);
            let Some(shared) = weak.upgrade() else { return };
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            if let Some(e) = failure.lock().expect("failure lock").take() {
                break format!("speaker {name} failed: {e}");
            }
            if !still_current(&host, DeviceDirection::Output, &choice, &id) {
                break announce.gone(&choice, &name);
            }
        };
        drop(stream);
        tracing::warn!(%why, "playout stopped");
        if let Some(shared) = weak.upgrade() {
            *shared.device.lock().expect("device lock") = None;
        }
        announce.stopped(&host, &choice, why);
    }
}

fn open_playout(
    host: &cpal::Host,
    device: &cpal::Device,
    shared: &Arc<PlayoutShared>,
) -> Result<(cpal::Stream, Failure, u32), ErrorBody> {
    let name = device_name(device);
    let (cfg, format) = default_config(device, DeviceDirection::Output, &name)?;
    let channels = usize::from(cfg.channels()).max(1);
    let rate = cfg.sample_rate();
    // 10 ms device buffers: the pulse host's default buffer is about 2 s (TESTING.md);
    // ALSA delivers 2/3 of what is asked, hence 15 ms there.
    let frames = if host_is(host, "alsa") {
        rate * 15 / 1000
    } else {
        rate / 200
    };
    let config = cpal::StreamConfig {
        channels: cfg.channels(),
        sample_rate: rate,
        buffer_size: cpal::BufferSize::Fixed(frames),
    };
    let resampler = Resampler::new(SAMPLE_RATE, rate)
        .map_err(|e| device_error(format!("speaker {name}: {e}")))?;
    let (failure, on_error) = failure_slot();
    let out = Output {
        channels,
        mixer: Mixer {
            shared: Arc::downgrade(shared),
            resampler,
            frame: vec![0f32; FRAME_SAMPLES],
            rate,
            last_callback: None,
            sounding: false,
        },
    };
    let stream = match format {
        Format::F32 => build_output::<f32>(device, &config, out, on_error),
        Format::I16 => build_output::<i16>(device, &config, out, on_error),
        Format::I32 => build_output::<i32>(device, &config, out, on_error),
        Format::U16 => build_output::<u16>(device, &config, out, on_error),
    }
    .map_err(|e| device_error(format!("speaker {name}: {e}")))?;
    stream
        .play()
        .map_err(|e| device_error(format!("speaker {name}: {e}")))?;
    Ok((stream, failure, rate))
}

/// What the output callback owns.
struct Output {
    /// Device channels (each gets the mono signal).
    channels: usize,
    mixer: Mixer,
}

fn build_output<T>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    mut out: Output,
    on_error: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<cpal::Stream, cpal::Error>
where
    T: cpal::SizedSample + cpal::FromSample<f32>,
{
    device.build_output_stream::<T, _, _>(
        *config,
        move |data: &mut [T], _| {
            let n = data.len() / out.channels;
            // False only while the speaker is being dropped: silence then.
            let ready = out.mixer.prepare(n);
            for frame in data.chunks_mut(out.channels) {
                let s = if ready {
                    out.mixer.resampler.pop().unwrap_or(0.0)
                } else {
                    0.0
                };
                let v = T::from_sample_(s);
                for d in frame {
                    *d = v;
                }
            }
        },
        on_error,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{level, Encoder};

    /// A speaker without a device: packets in, `mix_frame` out.
    fn speaker() -> Speaker {
        Speaker {
            shared: Arc::new(PlayoutShared::new()),
        }
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|s| s * s).sum::<f32>() / x.len() as f32).sqrt()
    }

    #[test]
    fn channels_mix_at_their_own_volume_and_tones_play_over_them() {
        let mut sp = speaker();
        let (a, b): (ChannelId, ChannelId) = ("a".into(), "b".into());
        sp.set_volume(&b, 0.0);
        tone_packets(&mut sp, &a, 30);
        tone_packets(&mut sp, &b, 30);
        let now = Instant::now() + Duration::from_millis(40);
        let mut out = vec![0f32; FRAME_SAMPLES];
        // Let the decoders settle, then: a alone (b muted), both, both with a tone.
        for _ in 0..5 {
            assert!(mix_frame(&sp.shared, now, Duration::ZERO, &mut out).active);
        }
        mix_frame(&sp.shared, now, Duration::ZERO, &mut out);
        let one = rms(&out);
        sp.set_volume(&b, 1.0);
        mix_frame(&sp.shared, now, Duration::ZERO, &mut out);
        let two = rms(&out);
        assert!(one > 0.1, "{one}");
        assert!(
            (1.7..2.3).contains(&(two / one)),
            "a + b = {two}, a = {one}"
        );
        sp.set_tones(ToneSettings {
            off: vec![Tone::Busy],
            volume: 1.0,
        });
        sp.play_tone(Tone::Busy); // off: nothing queued
        assert!(sp.shared.tones.lock().unwrap().is_empty());
        sp.set_volume(&a, 0.0);
        sp.set_volume(&b, 0.0);
        mix_frame(&sp.shared, now, Duration::ZERO, &mut out);
        assert!(rms(&out) < 0.001, "muted: {}", rms(&out));
        sp.play_tone(Tone::TalkPermit);
        assert!(mix_frame(&sp.shared, now, Duration::ZERO, &mut out).active);
        assert!(rms(&out) > 0.05, "the tone plays over muted channels");
        let stats = sp.stats();
        assert_eq!(stats.jitter.played, 2 * 9, "{stats:?}");
    }

    #[test]
    fn a_replay_plays_only_while_no_channel_plays_live() {
        let mut sp = speaker();
        let ch: ChannelId = "a".into();
        let loud = vec![16_000i16; FRAME_SAMPLES];
        sp.replay(&ch, &loud);
        // Live audio arrives: the replay waits while it plays.
        tone_packets(&mut sp, &ch, 30);
        let mut out = vec![0f32; FRAME_SAMPLES];
        let start = Instant::now();
        let mut t = start;
        let mut live_frames = 0;
        while mix_frame(&sp.shared, t, Duration::from_millis(20), &mut out).active {
            let queued = sp.shared.replay.lock().unwrap().len();
            if queued == FRAME_SAMPLES {
                live_frames += 1;
            } else {
                // The replay played once the channel went quiet, in one piece.
                assert_eq!(queued, 0);
                assert!(out.iter().all(|s| (s - 16_000.0 / 32768.0).abs() < 1e-6));
                break;
            }
            t += Duration::from_millis(20);
            assert!(
                t - start < Duration::from_secs(5),
                "the replay never played"
            );
        }
        assert!(live_frames >= 25, "live played {live_frames} frames first");
    }

    #[test]
    fn an_idle_speaker_mixes_silence_and_says_so() {
        let sp = speaker();
        let mut out = vec![1f32; FRAME_SAMPLES];
        assert!(!mix_frame(&sp.shared, Instant::now(), Duration::ZERO, &mut out).active);
        assert!(out.iter().all(|s| *s == 0.0));
        assert_eq!(sp.level(), (0.0, 0.0));
    }

    /// Packets of a 440 Hz tone on channel `ch`, `n` of them from sequence 0.
    fn tone_packets(sp: &mut Speaker, ch: &ChannelId, n: u16) {
        let mut enc = Encoder::new(24_000, 5).unwrap();
        for i in 0..n {
            let frame: Vec<i16> = (0..FRAME_SAMPLES)
                .map(|k| {
                    let t = (usize::from(i) * FRAME_SAMPLES + k) as f32 / 48_000.0;
                    (8000.0 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()) as i16
                })
                .collect();
            assert!(level(&frame).0 > 0.1);
            let p = enc.encode(&frame).unwrap();
            sp.packet(ch, i, u32::from(i) * 960, &p);
        }
    }

    #[test]
    fn a_spurt_starts_behind_the_start_margin_of_silence() {
        let mut sp = speaker();
        let ch: ChannelId = "a".into();
        tone_packets(&mut sp, &ch, 10);
        let margin = {
            let channels = sp.shared.channels.lock().unwrap();
            channels[&ch].jitter.start_margin()
        };
        let pad = FRAME_SAMPLES * margin.as_micros() as usize / 20_000;
        assert!(pad > 0);
        let mut out = vec![0f32; FRAME_SAMPLES];
        assert!(mix_frame(&sp.shared, Instant::now(), Duration::ZERO, &mut out).active);
        assert!(out[..pad].iter().all(|s| *s == 0.0), "silence first");
        // Then the spurt (after the decoder's first few ms, its look-ahead).
        assert!(mix_frame(&sp.shared, Instant::now(), Duration::ZERO, &mut out).active);
        assert!(rms(&out) > 0.05, "then the spurt: {}", rms(&out));
    }

    #[test]
    fn an_idle_speaker_drops_its_queued_silence_when_a_spurt_is_due() {
        let mut sp = speaker();
        let mut mixer = Mixer {
            shared: Arc::downgrade(&sp.shared),
            resampler: Resampler::new(48_000, 48_000).unwrap(),
            frame: vec![0f32; FRAME_SAMPLES],
            rate: 48_000,
            last_callback: None,
            sounding: false,
        };
        // A 5 ms callback mixes 5 ms of silence; the device takes only 100 samples of it
        // (as a resampler converting in 10 ms chunks leaves some queued).
        assert!(mixer.prepare(240));
        for _ in 0..100 {
            mixer.resampler.pop();
        }
        assert_eq!(mixer.resampler.available(), 140);
        // A spurt comes: the next callback plays it behind the margin, not behind the
        // silence left.
        tone_packets(&mut sp, &"a".into(), 5);
        assert!(mixer.prepare(240));
        assert_eq!(mixer.resampler.available(), 240);
        assert!(mixer.sounding);
        // While it sounds, what is queued is kept.
        for _ in 0..100 {
            mixer.resampler.pop();
        }
        assert!(mixer.prepare(240));
        assert_eq!(mixer.resampler.available(), 240);
    }
}
