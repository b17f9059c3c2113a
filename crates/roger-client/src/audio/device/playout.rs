//! Playout: per-channel jitter buffers and decoders, mixing, tones, and the device
//! thread that keeps the output ring filled.

use super::*;

struct ChannelPlayout {
    jitter: JitterBuffer,
    decoder: Option<Decoder>,
    volume: f32,
}

struct PlayoutShared {
    channels: Mutex<HashMap<ChannelId, ChannelPlayout>>,
    volumes: Mutex<HashMap<ChannelId, f32>>,
    tones: Mutex<VecDeque<f32>>,
    tone_settings: Mutex<ToneSettings>,
    stop: AtomicBool,
    meter: Meter,
    underruns: AtomicU64,
    frames: AtomicU64,
    device: Mutex<Option<String>>,
    /// The playout thread, woken when a talk spurt is due to start.
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl PlayoutShared {
    fn new() -> PlayoutShared {
        PlayoutShared {
            channels: Mutex::new(HashMap::new()),
            volumes: Mutex::new(HashMap::new()),
            tones: Mutex::new(VecDeque::new()),
            tone_settings: Mutex::new(ToneSettings::default()),
            stop: AtomicBool::new(false),
            meter: Meter::default(),
            underruns: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            device: Mutex::new(None),
            thread: std::sync::OnceLock::new(),
        }
    }
}

/// Playout counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpeakerStats {
    /// Device callbacks that found too little audio (a gap was played).
    pub device_underruns: u64,
    /// 20 ms frames mixed (silence included).
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

    /// Times the device ran out of audio to play.
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
        }
        SpeakerStats {
            jitter_target_frames: target,
            device_underruns: self.underruns(),
            frames_mixed: self.shared.frames.load(Ordering::Relaxed),
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

    fn packet(&mut self, channel: &ChannelId, sequence: u16, timestamp: u32, payload: &[u8]) {
        let now = Instant::now();
        let volume = self
            .shared
            .volumes
            .lock()
            .expect("volumes lock")
            .get(channel)
            .copied()
            .unwrap_or(1.0);
        let mut channels = self.shared.channels.lock().expect("channels lock");
        let c = channels
            .entry(channel.clone())
            .or_insert_with(|| ChannelPlayout {
                jitter: JitterBuffer::new(JitterConfig::default()),
                decoder: Decoder::new().ok(),
                volume,
            });
        c.jitter.push(
            now,
            sequence,
            timestamp,
            bytes::Bytes::copy_from_slice(payload),
        );
        // The first packet of a spurt: the playout thread may be asleep for up to a
        // frame; wake it, so an idle speaker starts the spurt now (see `align_start`).
        if c.jitter.spurt_start(now) == Some(true) {
            drop(channels);
            if let Some(t) = self.shared.thread.get() {
                t.unpark();
            }
        }
    }

    fn decodes(&self) -> bool {
        false
    }
}

/// How an idle speaker starts a talk spurt: what to do with the silence queued for the
/// device (`queued` samples in the ring, `pending` in the resampler) so that the
/// spurt's first frame, mixed now, is queued behind just enough for the next frame to
/// be due `margin` after its packet is expected.
///
/// Without this the first frame waits for the playout clock's next 20 ms tick, 0-20 ms
/// after its packet arrived (a random phase that then holds for the whole spurt), and
/// then behind the ring's `fill`.
///
/// The next frame is mixed when the ring falls below `fill`, which it does only at a
/// device callback, `chunk` samples at a time: behind `fill + x` queued samples that is
/// after `20 ms + x` rounded down to whole callbacks, so `x` is `margin` rounded up to
/// whole callbacks (at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    /// Drop this many queued samples (the oldest): they are silence.
    Skip(usize),
    /// Queue this many samples of silence first.
    Pad(usize),
}

fn align_start(queued: usize, pending: usize, fill: usize, margin: usize, chunk: usize) -> Align {
    let chunk = chunk.max(1);
    let cushion = fill + margin.div_ceil(chunk).max(1) * chunk;
    let have = queued + pending;
    if have > cushion {
        Align::Skip((have - cushion).min(queued))
    } else {
        Align::Pad(cushion - have)
    }
}

/// Talk spurts about to start at `now`: the largest start margin among those due (`None`
/// if none is), and whether one is buffering but not yet due.
fn due_spurts(shared: &PlayoutShared, now: Instant) -> (Option<Duration>, bool) {
    let channels = shared.channels.lock().expect("channels lock");
    let mut due: Option<Duration> = None;
    let mut waiting = false;
    for c in channels.values() {
        match c.jitter.spurt_start(now) {
            Some(true) => due = Some(due.unwrap_or_default().max(c.jitter.start_margin())),
            Some(false) => waiting = true,
            None => {}
        }
    }
    (due, waiting)
}

/// A mixed frame this quiet (its peak below -50 dBFS) can lose a few ms unheard.
const QUIET: f32 = 0.003_16;
/// Spare delay below this is not worth a cut.
const MIN_CUT: Duration = Duration::from_millis(2);

/// After a quiet frame: the delay every playing channel could spare
/// ([`JitterBuffer::spare`]), the smallest of them, at most `room`, if worth a cut;
/// each channel is told it was cut. Zero when nothing is playing or nothing is spare.
fn take_spare(shared: &PlayoutShared, room: Duration) -> Duration {
    let mut channels = shared.channels.lock().expect("channels lock");
    let cut = channels
        .values()
        .filter(|c| c.jitter.playing())
        .map(|c| c.jitter.spare())
        .min()
        .unwrap_or_default()
        .min(room);
    if cut < MIN_CUT {
        return Duration::ZERO;
    }
    for c in channels.values_mut().filter(|c| c.jitter.playing()) {
        c.jitter.trimmed(cut);
    }
    cut
}

fn samples_to_duration(n: usize, rate: u32) -> Duration {
    Duration::from_micros(n as u64 * 1_000_000 / u64::from(rate.max(1)))
}

fn duration_to_samples(d: Duration, rate: u32) -> usize {
    (u128::from(rate) * d.as_micros() / 1_000_000) as usize
}

/// What [`mix_frame`] made.
struct Mixed {
    /// False when there was nothing to play (every jitter buffer idle, no tone).
    active: bool,
    /// The frame's largest sample magnitude (also published to the level meter).
    peak: f32,
}

/// One 20 ms frame at 48 kHz: every channel's next frame mixed, plus tones.
fn mix_frame(shared: &PlayoutShared, now: Instant, out: &mut [f32]) -> Mixed {
    out.fill(0.0);
    let mut active = false;
    let mut channels = shared.channels.lock().expect("channels lock");
    for c in channels.values_mut() {
        let Some(decoder) = c.decoder.as_mut() else {
            continue;
        };
        let pcm = match c.jitter.pop(now) {
            Playout::Packet(p) => decoder.decode(&p),
            Playout::Fec(next) => decoder.decode_fec(&next),
            Playout::Conceal => decoder.conceal(),
            Playout::Silence => continue,
        };
        active = true;
        let Ok(pcm) = pcm else { continue };
        for (o, s) in out.iter_mut().zip(pcm.iter()) {
            *o += f32::from(*s) / 32768.0 * c.volume;
        }
    }
    drop(channels);
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
    Mixed { active, peak }
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
    let _ = shared.thread.set(std::thread::current());
    let weak = Arc::downgrade(&shared);
    drop(shared);
    let mut frame = vec![0f32; FRAME_SAMPLES];
    loop {
        let Some(shared) = weak.upgrade() else { return };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let opened = resolve(&host, DeviceDirection::Output, &choice)
            .ok_or_else(|| device_error(format!("speaker {choice} not found")))
            .and_then(|d| open_playout(&host, &d, &shared).map(|s| (s, d)));
        let ((stream, failure, mut producer, cursor, rate), device) = match opened {
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
        let mut resampler = match Resampler::new(SAMPLE_RATE, rate) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "playout resampler");
                return;
            }
        };
        let min_fill = (rate as usize) * OUTPUT_FILL.as_millis() as usize / 1000;
        let mut last_watch = Instant::now();
        // Samples committed to the ring since this stream opened (the callback counts
        // what it reads the same way; `skip_to` is a position on that count).
        let mut written: u64 = 0;
        let mut last_audible: Option<Instant> = None;
        // Samples to drop before the next ones reach the ring (`OutputCursor::owed`).
        let mut owed: usize = 0;
        let frame_out = (rate / 50) as usize;
        let why = loop {
            let Some(shared) = weak.upgrade() else { return };
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            let chunk = cursor.chunk.load(Ordering::Relaxed) as usize;
            let fill = min_fill.max(chunk);
            let queued = producer.buffer().capacity() - producer.slots();
            let idle = last_audible.is_none_or(|t| now.saturating_duration_since(t) >= IDLE_AFTER);
            owed = (owed + cursor.owed.swap(0, Ordering::Relaxed) as usize).min(frame_out);
            let (due, waiting) = due_spurts(&shared, now);
            // An idle speaker lines a starting spurt up with its arrival (`align_start`).
            let start = match due {
                Some(margin) if idle => {
                    // The start lines the ring up afresh: nothing is owed.
                    owed = 0;
                    cursor.owed.store(0, Ordering::Relaxed);
                    let margin = duration_to_samples(margin, rate);
                    match align_start(queued, resampler.available(), fill, margin, chunk) {
                        Align::Skip(n) => {
                            let to = written - queued as u64 + n as u64;
                            cursor.skip_to.store(to, Ordering::Release);
                        }
                        Align::Pad(n) => {
                            let n = n.min(producer.slots());
                            if let Ok(w) = producer.write_chunk_uninit(n) {
                                written += w.fill_from_iter(std::iter::repeat(0.0)) as u64;
                            }
                        }
                    }
                    true
                }
                _ => false,
            };
            // Otherwise keep the ring topped up to `fill` (beyond what is owed), a 20 ms
            // frame at a time: the device's consumption paces the jitter buffers.
            if start || queued + resampler.available() < fill + owed {
                let mixed = mix_frame(&shared, now, &mut frame);
                if mixed.active {
                    last_audible = Some(now);
                }
                shared.frames.fetch_add(1, Ordering::Relaxed);
                resampler.push(&frame);
                // A quiet frame is where delay nobody needs can go unheard: it is cut
                // from this frame's samples on their way into the ring (`owed`), as far
                // as the ring stays at `fill`.
                if !start && mixed.peak < QUIET {
                    let room = (queued + resampler.available()).saturating_sub(fill + owed);
                    let cut = take_spare(&shared, samples_to_duration(room, rate));
                    owed += duration_to_samples(cut, rate);
                }
            }
            let surplus = (queued + resampler.available()).saturating_sub(fill);
            owed = settle_owed(owed, surplus, &mut resampler);
            let n = resampler.available().min(producer.slots());
            if n > 0 {
                if let Some(samples) = resampler.take(n) {
                    if let Ok(w) = producer.write_chunk_uninit(n) {
                        written += w.fill_from_iter(samples.iter().copied()) as u64;
                    }
                }
            }
            if let Some(e) = failure.lock().expect("failure lock").take() {
                break format!("speaker {name} failed: {e}");
            }
            if last_watch.elapsed() >= WATCH_INTERVAL {
                last_watch = Instant::now();
                if !still_current(&host, DeviceDirection::Output, &choice, &id) {
                    break announce.gone(&choice, &name);
                }
            }
            drop(shared);
            // Sleep until the device has used up the surplus (less a millisecond),
            // instead of polling; a packet that starts a spurt wakes the thread early.
            // A spurt that is buffering but not yet due is checked every 2 ms.
            // (Exactly `fill` queued is no reason to spin: the next mix waits for the
            // next device callback either way.)
            let queued = producer.buffer().capacity() - producer.slots();
            let have = queued + resampler.available();
            if have >= fill {
                let surplus = have - fill;
                let ms = (surplus as u64 * 1000 / u64::from(rate)).saturating_sub(1);
                let ms = if waiting { ms.min(2) } else { ms };
                std::thread::park_timeout(Duration::from_millis(ms.clamp(1, 20)));
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

/// Drops what is owed (what the device played as silence while the ring was short, and
/// cuts of spare delay) from the samples ready to enter the ring, but only from the
/// `surplus` beyond what keeps the ring at `fill`: dropping more would leave the next
/// callback short, which would be owed again. Returns what is still owed.
fn settle_owed(owed: usize, surplus: usize, resampler: &mut Resampler) -> usize {
    let n = owed.min(surplus).min(resampler.available());
    if n > 0 {
        let _ = resampler.take(n);
    }
    owed - n
}

type OpenPlayout = (
    cpal::Stream,
    Failure,
    rtrb::Producer<f32>,
    Arc<OutputCursor>,
    u32,
);

/// Shared by the output callback and the playout thread.
#[derive(Debug, Default)]
struct OutputCursor {
    /// Ring position (samples read since the stream opened) below which queued samples
    /// are dropped unplayed: silence cut by `align_start`.
    skip_to: AtomicU64,
    /// Samples the latest device callback took (the first ones can be larger: the
    /// device's buffer being filled).
    chunk: AtomicU32,
    /// Samples the callback played as silence because the ring was short (the playout
    /// thread woke late). The thread drops as many (at most a frame's worth) from what it
    /// writes next beyond `fill` (`settle_owed`), so a late wake-up costs a gap in the
    /// sound, not latency that stays until latency control takes a whole frame.
    owed: AtomicU64,
}

fn open_playout(
    host: &cpal::Host,
    device: &cpal::Device,
    shared: &Arc<PlayoutShared>,
) -> Result<OpenPlayout, ErrorBody> {
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
    let (producer, consumer) = rtrb::RingBuffer::<f32>::new(rate as usize / 2);
    let (failure, on_error) = failure_slot();
    let out = Output {
        channels,
        consumer,
        cursor: Arc::default(),
        shared: Arc::downgrade(shared),
    };
    let cursor = out.cursor.clone();
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
    Ok((stream, failure, producer, cursor, rate))
}

/// What the output callback owns.
struct Output {
    /// Device channels (each gets the mono signal).
    channels: usize,
    consumer: rtrb::Consumer<f32>,
    cursor: Arc<OutputCursor>,
    shared: std::sync::Weak<PlayoutShared>,
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
    let mut read: u64 = 0;
    device.build_output_stream::<T, _, _>(
        *config,
        move |data: &mut [T], _| {
            // Real-time path: no locks, no allocation.
            let c = &out.cursor;
            c.chunk
                .store((data.len() / out.channels) as u32, Ordering::Relaxed);
            let skip = c.skip_to.load(Ordering::Acquire).saturating_sub(read);
            if skip > 0 {
                let n = (skip as usize).min(out.consumer.slots());
                if let Ok(chunk) = out.consumer.read_chunk(n) {
                    chunk.commit_all();
                    read += n as u64;
                }
            }
            let mut short = 0u64;
            for frame in data.chunks_mut(out.channels) {
                let s = match out.consumer.pop() {
                    Ok(s) => {
                        read += 1;
                        s
                    }
                    Err(_) => {
                        short += 1;
                        0.0
                    }
                };
                let v = T::from_sample_(s);
                for d in frame {
                    *d = v;
                }
            }
            if short > 0 {
                c.owed.fetch_add(short, Ordering::Relaxed);
                if let Some(shared) = out.shared.upgrade() {
                    shared.underruns.fetch_add(1, Ordering::Relaxed);
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
        let mut enc = Encoder::new(24_000, 5).unwrap();
        for i in 0..30u16 {
            let frame: Vec<i16> = (0..FRAME_SAMPLES)
                .map(|k| {
                    let t = (usize::from(i) * FRAME_SAMPLES + k) as f32 / 48_000.0;
                    (8000.0 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()) as i16
                })
                .collect();
            let p = enc.encode(&frame).unwrap();
            assert!(level(&frame).0 > 0.1);
            sp.packet(&a, i, u32::from(i) * 960, &p);
            sp.packet(&b, i, u32::from(i) * 960, &p);
        }
        let now = Instant::now() + Duration::from_millis(40);
        let mut out = vec![0f32; FRAME_SAMPLES];
        // Let the decoders settle, then: a alone (b muted), both, both with a tone.
        for _ in 0..5 {
            assert!(mix_frame(&sp.shared, now, &mut out).active);
        }
        mix_frame(&sp.shared, now, &mut out);
        let one = rms(&out);
        sp.set_volume(&b, 1.0);
        mix_frame(&sp.shared, now, &mut out);
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
        mix_frame(&sp.shared, now, &mut out);
        assert!(rms(&out) < 0.001, "muted: {}", rms(&out));
        sp.play_tone(Tone::TalkPermit);
        assert!(mix_frame(&sp.shared, now, &mut out).active);
        assert!(rms(&out) > 0.05, "the tone plays over muted channels");
        let stats = sp.stats();
        assert_eq!(stats.jitter.played, 2 * 9, "{stats:?}");
    }

    #[test]
    fn an_idle_speaker_mixes_silence_and_says_so() {
        let sp = speaker();
        let mut out = vec![1f32; FRAME_SAMPLES];
        assert!(!mix_frame(&sp.shared, Instant::now(), &mut out).active);
        assert!(out.iter().all(|s| *s == 0.0));
        assert_eq!(sp.level(), (0.0, 0.0));
    }

    /// A jitter buffer that has played a second of packets arriving `late` after their
    /// 20 ms slot (so each waits 20 ms less `late` for its pop), on virtual time.
    fn playing_for_a_second(late: Duration) -> JitterBuffer {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let t0 = Instant::now();
        for k in 0..60u32 {
            jb.push(
                t0 + FRAME * k + late,
                k as u16,
                k * 960,
                bytes::Bytes::from_static(&[0]),
            );
            let _ = jb.pop(t0 + FRAME * (k + 1));
        }
        jb
    }

    const FRAME: Duration = Duration::from_millis(20);

    /// A speaker's shared state holding these channels (no decoders).
    fn channels(list: Vec<(&str, JitterBuffer)>) -> PlayoutShared {
        let shared = PlayoutShared::new();
        for (name, jitter) in list {
            let c = ChannelPlayout {
                jitter,
                decoder: None,
                volume: 1.0,
            };
            shared
                .channels
                .lock()
                .unwrap()
                .insert(ChannelId::from(name), c);
        }
        shared
    }

    #[test]
    fn a_quiet_frame_takes_the_delay_every_playing_channel_can_spare() {
        let shared = channels(vec![
            ("a", playing_for_a_second(Duration::from_millis(1))),
            ("b", playing_for_a_second(Duration::from_millis(5))),
            // An idle channel holds nothing back.
            ("idle", JitterBuffer::new(JitterConfig::default())),
        ]);
        let spare = |name: &str| {
            shared.channels.lock().unwrap()[&ChannelId::from(name)]
                .jitter
                .spare()
        };
        let (a, b) = (spare("a"), spare("b"));
        assert!(b >= MIN_CUT && a > b, "a {a:?}, b {b:?}");
        let room = Duration::from_millis(15);
        assert_eq!(take_spare(&shared, room), b, "the smallest");
        assert_eq!(spare("a"), a - b);
        assert_eq!(spare("b"), Duration::ZERO);
        assert_eq!(
            take_spare(&shared, room),
            Duration::ZERO,
            "nothing until measured again"
        );
        // At most what the ring has room for, and no cut under 2 ms.
        let shared = channels(vec![("a", playing_for_a_second(Duration::from_millis(1)))]);
        let small = Duration::from_millis(1);
        assert_eq!(take_spare(&shared, small), Duration::ZERO);
        let room = Duration::from_millis(3);
        assert_eq!(take_spare(&shared, room), room);
        // Nothing playing: nothing to cut.
        assert_eq!(take_spare(&channels(vec![]), room), Duration::ZERO);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn what_is_owed_comes_out_of_the_surplus_above_fill_and_the_rest_waits() {
        let mut r = Resampler::new(48_000, 48_000).expect("resampler");
        // 100 samples owed, a frame ready, plenty of surplus: all 100 dropped.
        r.push(&[0.5; 960]);
        assert_eq!(settle_owed(100, 900, &mut r), 0);
        assert_eq!(r.available(), 860);
        // Owed with nothing ready: carried to the next pass.
        let _ = r.take(860);
        assert_eq!(settle_owed(50, 900, &mut r), 50);
        // Only the surplus goes: the ring must keep `fill` for the next callback, or the
        // shortfall would be owed again (a loop that plays silence).
        r.push(&[0.5; 960]);
        assert_eq!(settle_owed(500, 200, &mut r), 300);
        assert_eq!(r.available(), 760);
    }

    #[test]
    fn an_idle_speaker_starts_a_spurt_behind_fill_and_the_margin_in_whole_callbacks() {
        // 48 kHz: fill 8 ms = 384 samples, 5 ms callbacks = 240.
        let (fill, chunk) = (384, 240);
        // 3 ms of margin rounds up to one callback: the frame goes behind 624 samples.
        assert_eq!(align_start(1200, 0, fill, 144, chunk), Align::Skip(576));
        assert_eq!(align_start(100, 0, fill, 144, chunk), Align::Pad(524));
        // What the resampler holds counts, but only the ring can be cut.
        assert_eq!(align_start(600, 500, fill, 144, chunk), Align::Skip(476));
        assert_eq!(align_start(100, 900, fill, 144, chunk), Align::Skip(100));
        // 11 ms rounds up to three callbacks; no margin still leaves one.
        assert_eq!(align_start(0, 0, fill, 528, chunk), Align::Pad(fill + 720));
        assert_eq!(align_start(0, 0, fill, 0, chunk), Align::Pad(fill + 240));
        // Before the first callback says its size, samples are the unit.
        assert_eq!(align_start(0, 0, fill, 144, 0), Align::Pad(fill + 144));
    }
}
