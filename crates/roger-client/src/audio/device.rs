//! Real microphones and speakers through cpal.
//!
//! - [`list_devices`]: inputs and outputs with stable ids (`pulseaudio:vmic`,
//!   `alsa:default`, ...). [`DeviceChoice::Default`] follows the system default.
//! - [`Microphone`]: capture on its own thread. The cpal callback only downmixes into a
//!   lock-free ring (rtrb; a full ring counts drops) and wakes the reader; it never
//!   blocks or allocates. [`MicSource`] re-chunks to 20 ms, resamples to 48 kHz and is
//!   the talker's [`AudioSource`]. It starts capturing when made, before the floor is
//!   granted, and keeps up to [`PRE_GRANT_LIMIT`] of audio, so the first word is sent once
//!   the grant arrives; a denied floor drops it with the source.
//! - [`Speaker`]: the listener's [`AudioSink`]: a jitter buffer and an Opus decoder
//!   (PLC, FEC) per channel, mixing, per-channel volume, tones, resampling to the device
//!   rate, and a lock-free ring the cpal callback reads. A spurt that starts on an idle
//!   speaker plays as its first packet arrives (plus a margin), not on the next 20 ms
//!   tick of the playout clock (`align_start`).
//! - Both watch their device: a stream error, or the device gone from the device list
//!   (PulseAudio moves a stream whose device vanished to another and says nothing), is
//!   reported as `MEDIA_DEVICE_ERROR` with the device's name through the `on_event`
//!   callback, and the stream is rebuilt when the device (or, for `Default`, any default
//!   device) is back. Nothing needs a restart.

use super::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout};
use super::resample::Resampler;
use super::tones::{Tone, ToneSettings};
use super::{AudioSink, AudioSource, Decoder, Frame, FRAME_SAMPLES, SAMPLE_RATE};
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use futures_util::task::AtomicWaker;
use roger_protocol::{ChannelId, ErrorBody, ErrorCode};
use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Audio captured before the floor is granted that is kept (and sent once granted).
pub const PRE_GRANT_LIMIT: Duration = Duration::from_secs(2);
/// How often a stream's device presence is checked.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Output ring level below which the playout thread mixes the next 20 ms frame, at
/// least: one device callback's worth (the level only falls at a callback, so the thread
/// has until the next one, a callback period, to add the frame). The latest callback's
/// size is used when it is larger. Every millisecond here is a millisecond of
/// mouth-to-ear latency.
const OUTPUT_FILL: Duration = Duration::from_millis(5);
/// No audible frame mixed for this long: everything queued for the device is silence,
/// and the next talk spurt may line the playout up with its arrival.
const IDLE_AFTER: Duration = Duration::from_millis(100);

/// Input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum DeviceDirection {
    /// A microphone.
    Input,
    /// A speaker.
    Output,
}

/// One device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct DeviceInfo {
    /// Stable id (`host:device`), what [`DeviceChoice::Id`] takes.
    pub id: String,
    /// Name for people.
    pub name: String,
    /// Input or output.
    pub direction: DeviceDirection,
    /// Whether it is the system default now.
    pub is_default: bool,
}

/// Which device to use.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// The system default, following changes.
    #[default]
    Default,
    /// A device id from [`list_devices`].
    Id(String),
}

impl FromStr for DeviceChoice {
    type Err = std::convert::Infallible;
    /// `default` is the system default; anything else is an id. A bare name (`vmic`)
    /// is matched against ids and names when the stream is opened.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s.is_empty() || s == "default" {
            DeviceChoice::Default
        } else {
            DeviceChoice::Id(s.to_owned())
        })
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Default => f.write_str("default"),
            DeviceChoice::Id(id) => f.write_str(id),
        }
    }
}

/// What a device stream reports.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEvent {
    /// The device failed or disappeared (`MEDIA_DEVICE_ERROR`, naming it).
    Lost(ErrorBody),
    /// Capture or playout runs again on `name`.
    Restored {
        /// Input or output.
        direction: DeviceDirection,
        /// The device now in use.
        name: String,
    },
}

/// Where device events go (the app shows them; the manager reports them).
pub type DeviceEvents = Arc<dyn Fn(DeviceEvent) + Send + Sync>;

fn device_error(message: String) -> ErrorBody {
    ErrorBody::new(ErrorCode::MediaDeviceError, message)
}

/// The audio host: PulseAudio (also PipeWire's pulse server) when reachable on Linux,
/// else the platform default (ALSA, WASAPI, CoreAudio).
pub fn host() -> cpal::Host {
    #[cfg(target_os = "linux")]
    if std::env::var_os("ROGER_AUDIO_HOST").is_none_or(|h| h == "pulseaudio") {
        if let Ok(h) = cpal::host_from_id(cpal::HostId::PulseAudio) {
            return h;
        }
    }
    cpal::default_host()
}

/// Whether `host` is the one named (`"pulseaudio"`, `"alsa"`): by name, because the
/// variants of `cpal::HostId` differ from platform to platform.
fn host_is(host: &cpal::Host, name: &str) -> bool {
    host.id().to_string() == name
}

fn device_id(d: &cpal::Device) -> Option<String> {
    d.id().ok().map(|id| id.to_string())
}

fn device_name(d: &cpal::Device) -> String {
    d.description()
        .map(|desc| desc.name().to_owned())
        .unwrap_or_else(|_| device_id(d).unwrap_or_else(|| "unknown device".into()))
}

/// Every input and output device.
pub fn list_devices() -> Result<Vec<DeviceInfo>, ErrorBody> {
    let host = host();
    let mut out = Vec::new();
    for direction in [DeviceDirection::Input, DeviceDirection::Output] {
        let (devices, default) = match direction {
            DeviceDirection::Input => (host.input_devices(), host.default_input_device()),
            DeviceDirection::Output => (host.output_devices(), host.default_output_device()),
        };
        let default_id = default.as_ref().and_then(device_id);
        let devices =
            devices.map_err(|e| device_error(format!("cannot list audio devices: {e}")))?;
        for d in devices {
            let Some(id) = device_id(&d) else { continue };
            out.push(DeviceInfo {
                is_default: Some(&id) == default_id.as_ref(),
                name: device_name(&d),
                id,
                direction,
            });
        }
    }
    Ok(out)
}

/// Finds the device `choice` names now.
fn resolve(
    host: &cpal::Host,
    direction: DeviceDirection,
    choice: &DeviceChoice,
) -> Option<cpal::Device> {
    match choice {
        DeviceChoice::Default => match direction {
            DeviceDirection::Input => host.default_input_device(),
            DeviceDirection::Output => host.default_output_device(),
        },
        DeviceChoice::Id(want) => {
            let devices = match direction {
                DeviceDirection::Input => host.input_devices().ok()?.collect::<Vec<_>>(),
                DeviceDirection::Output => host.output_devices().ok()?.collect::<Vec<_>>(),
            };
            // An exact id, else an id whose device part matches (`vmic` for
            // `pulseaudio:vmic`), else a name.
            let by_id = |d: &cpal::Device| device_id(d).as_deref() == Some(want.as_str());
            let by_short = |d: &cpal::Device| {
                device_id(d).is_some_and(|id| id.split_once(':').is_some_and(|(_, s)| s == want))
            };
            let by_name = |d: &cpal::Device| device_name(d) == *want;
            devices
                .iter()
                .find(|d| by_id(d))
                .or_else(|| devices.iter().find(|d| by_short(d)))
                .or_else(|| devices.iter().find(|d| by_name(d)))
                .cloned()
        }
    }
}

/// Whether the device opened as `opened_id` is still what `choice` names.
fn still_current(
    host: &cpal::Host,
    direction: DeviceDirection,
    choice: &DeviceChoice,
    opened_id: &str,
) -> bool {
    resolve(host, direction, choice)
        .and_then(|d| device_id(&d))
        .is_some_and(|id| id == opened_id)
}

/// The stream formats Roger converts from and to.
#[derive(Debug, Clone, Copy)]
enum Format {
    F32,
    I16,
    I32,
    U16,
}

fn format_of(f: cpal::SampleFormat) -> Option<Format> {
    match f {
        cpal::SampleFormat::F32 => Some(Format::F32),
        cpal::SampleFormat::I16 => Some(Format::I16),
        cpal::SampleFormat::I32 => Some(Format::I32),
        cpal::SampleFormat::U16 => Some(Format::U16),
        _ => None,
    }
}

/// Level meter values, as f32 bits in atomics (written by the audio callback).
#[derive(Default)]
struct Meter {
    rms: AtomicU32,
    peak: AtomicU32,
}

impl Meter {
    fn set(&self, sum_sq: f32, n: usize, peak: f32) {
        let rms = if n == 0 {
            0.0
        } else {
            (sum_sq / n as f32).sqrt()
        };
        self.rms.store(rms.to_bits(), Ordering::Relaxed);
        self.peak.store(peak.to_bits(), Ordering::Relaxed);
    }
    fn get(&self) -> (f32, f32) {
        (
            f32::from_bits(self.rms.load(Ordering::Relaxed)),
            f32::from_bits(self.peak.load(Ordering::Relaxed)),
        )
    }
}

// ------------------------------------------------------------------ capture

/// The reading end of the current capture stream (replaced when the stream is rebuilt).
struct CaptureRing {
    consumer: rtrb::Consumer<f32>,
    rate: u32,
    generation: u64,
}

struct CaptureShared {
    ring: Mutex<Option<CaptureRing>>,
    waker: AtomicWaker,
    meter: Meter,
    dropped: AtomicU64,
    stop: AtomicBool,
    /// The device in use now, for people.
    device: Mutex<Option<String>>,
}

/// A running microphone: capture thread, device watch, level meter.
#[derive(Clone)]
pub struct Microphone {
    shared: Arc<CaptureShared>,
}

impl std::fmt::Debug for Microphone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Microphone")
            .field("device", &self.device_name())
            .finish()
    }
}

impl Microphone {
    /// Opens `choice` and starts capturing at once. Fails (`MEDIA_DEVICE_ERROR`) if the
    /// device cannot be opened now; after that, losses are reported through `on_event`
    /// and the stream is rebuilt by itself.
    pub fn open(choice: DeviceChoice, on_event: DeviceEvents) -> Result<Microphone, ErrorBody> {
        let shared = Arc::new(CaptureShared {
            ring: Mutex::new(None),
            waker: AtomicWaker::new(),
            meter: Meter::default(),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            device: Mutex::new(None),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("roger-capture".into())
            .spawn(move || capture_thread(s, choice, on_event, ready_tx))
            .map_err(|e| device_error(format!("cannot start the capture thread: {e}")))?;
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(Microphone { shared }),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                shared.stop.store(true, Ordering::SeqCst);
                Err(device_error(
                    "the microphone did not start within 5 s".into(),
                ))
            }
        }
    }

    /// Input level of the latest callback: (RMS, peak), 0..1.
    pub fn level(&self) -> (f32, f32) {
        self.shared.meter.get()
    }

    /// Samples dropped because nobody read them in time.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The device in use now.
    pub fn device_name(&self) -> Option<String> {
        self.shared.device.lock().expect("device lock").clone()
    }

    /// A talker source reading from now on (earlier audio is discarded).
    pub fn source(&self) -> MicSource {
        if let Some(ring) = self.shared.ring.lock().expect("ring lock").as_mut() {
            let n = ring.consumer.slots();
            if let Ok(chunk) = ring.consumer.read_chunk(n) {
                chunk.commit_all();
            }
        }
        MicSource {
            mic: self.clone(),
            generation: u64::MAX,
            resampler: None,
            scratch: Vec::new(),
        }
    }

    /// Stops capturing (also when the last handle is dropped).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for CaptureShared {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn capture_thread(
    shared: Arc<CaptureShared>,
    choice: DeviceChoice,
    on_event: DeviceEvents,
    ready: std::sync::mpsc::Sender<Result<(), ErrorBody>>,
) {
    let host = host();
    let mut announce = Announcer {
        direction: DeviceDirection::Input,
        on_event,
        ready: Some(ready),
        lost_reported: false,
    };
    let mut generation = 0u64;
    // Hold only a weak reference while idle, so dropping every handle ends the thread.
    let weak = Arc::downgrade(&shared);
    drop(shared);
    loop {
        let Some(shared) = weak.upgrade() else { return };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let opened = resolve(&host, DeviceDirection::Input, &choice)
            .ok_or_else(|| device_error(format!("microphone {choice} not found")))
            .and_then(|d| {
                generation += 1;
                open_capture(&d, &shared, generation).map(|s| (s, d))
            });
        let (stream, device) = match opened {
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
        tracing::info!(device = %name, %id, "capture started");
        announce.opened(&name);
        let (stream, failure) = stream;
        drop(shared);
        // Watch: stream errors, and the device leaving the list (or the default moving).
        let why = loop {
            std::thread::sleep(WATCH_INTERVAL);
            let Some(shared) = weak.upgrade() else { return };
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            if let Some(e) = failure.lock().expect("failure lock").take() {
                break format!("microphone {name} failed: {e}");
            }
            if !still_current(&host, DeviceDirection::Input, &choice, &id) {
                break announce.gone(&choice, &name);
            }
        };
        drop(stream);
        tracing::warn!(%why, "capture stopped");
        if let Some(shared) = weak.upgrade() {
            *shared.device.lock().expect("device lock") = None;
            *shared.ring.lock().expect("ring lock") = None;
        }
        announce.stopped(&host, &choice, why);
    }
}

type Failure = Arc<Mutex<Option<String>>>;

/// What a stream thread tells its opener and the `on_event` callback, shared by
/// capture and playout: the first open's result, then losses and returns.
struct Announcer {
    direction: DeviceDirection,
    on_event: DeviceEvents,
    /// Until the first open: where its result goes.
    ready: Option<std::sync::mpsc::Sender<Result<(), ErrorBody>>>,
    lost_reported: bool,
}

impl Announcer {
    /// An open failed. True if this was the first open (the opener gets the error and
    /// the thread ends); later failures mean: try again after a while.
    fn open_failed(&mut self, e: ErrorBody) -> bool {
        match self.ready.take() {
            Some(r) => {
                let _ = r.send(Err(e));
                true
            }
            None => false,
        }
    }

    /// A stream runs on `name`.
    fn opened(&mut self, name: &str) {
        if let Some(r) = self.ready.take() {
            let _ = r.send(Ok(()));
        } else if self.lost_reported {
            (self.on_event)(DeviceEvent::Restored {
                direction: self.direction,
                name: name.to_owned(),
            });
            self.lost_reported = false;
        }
    }

    /// The stream on `name` stopped for `why`. A default that merely moved to another
    /// device is not a loss: the next stream opens on the new default.
    fn stopped(&mut self, host: &cpal::Host, choice: &DeviceChoice, why: String) {
        let default_moved = matches!(choice, DeviceChoice::Default)
            && resolve(host, self.direction, choice).is_some();
        if !default_moved {
            (self.on_event)(DeviceEvent::Lost(device_error(why)));
            self.lost_reported = true;
        }
    }

    /// Why the device opened as `name` is no longer the one `choice` names.
    fn gone(&self, choice: &DeviceChoice, name: &str) -> String {
        let what = match self.direction {
            DeviceDirection::Input => "microphone",
            DeviceDirection::Output => "speaker",
        };
        match choice {
            DeviceChoice::Default => format!("default {what} changed from {name}"),
            DeviceChoice::Id(_) => format!("{what} {name} is gone"),
        }
    }
}

/// A stream's failure slot and the error callback that fills it (first error wins).
fn failure_slot() -> (Failure, impl FnMut(cpal::Error) + Send + 'static) {
    let failure: Failure = Arc::default();
    let slot = failure.clone();
    let on_error = move |e: cpal::Error| {
        // Error path, not the data path: a short lock is fine here.
        if let Ok(mut f) = slot.lock() {
            f.get_or_insert_with(|| e.to_string());
        }
    };
    (failure, on_error)
}

/// The device's default stream configuration, and its sample format if Roger converts it.
fn default_config(
    device: &cpal::Device,
    direction: DeviceDirection,
    name: &str,
) -> Result<(cpal::SupportedStreamConfig, Format), ErrorBody> {
    let what = match direction {
        DeviceDirection::Input => "microphone",
        DeviceDirection::Output => "speaker",
    };
    let cfg = match direction {
        DeviceDirection::Input => device.default_input_config(),
        DeviceDirection::Output => device.default_output_config(),
    }
    .map_err(|e| device_error(format!("{what} {name}: {e}")))?;
    let format = format_of(cfg.sample_format()).ok_or_else(|| {
        device_error(format!(
            "{what} {name}: sample format {:?} is not supported",
            cfg.sample_format()
        ))
    })?;
    Ok((cfg, format))
}

/// A built, playing stream and the failure slot its error callback fills.
type OpenStream = (cpal::Stream, Failure);

fn open_capture(
    device: &cpal::Device,
    shared: &Arc<CaptureShared>,
    generation: u64,
) -> Result<OpenStream, ErrorBody> {
    let name = device_name(device);
    let (cfg, format) = default_config(device, DeviceDirection::Input, &name)?;
    let channels = usize::from(cfg.channels()).max(1);
    let rate = cfg.sample_rate();
    let config = cpal::StreamConfig {
        channels: cfg.channels(),
        sample_rate: rate,
        // The pulse host lost samples with small fixed capture buffers (TESTING.md: it
        // caps the server's record buffer at one block). 5 ms blocks with that cap
        // lifted, tried 2026-11-22: p50 ~2 ms lower, but the talker at 5.1-5.6 % of a
        // core instead of 3.7-4.6 %; not kept.
        buffer_size: cpal::BufferSize::Default,
    };
    tracing::info!(device = %name, rate, channels, format = ?cfg.sample_format(), "opening capture");
    let capacity = (rate as usize) * PRE_GRANT_LIMIT.as_secs() as usize;
    let (producer, consumer) = rtrb::RingBuffer::<f32>::new(capacity);
    *shared.ring.lock().expect("ring lock") = Some(CaptureRing {
        consumer,
        rate,
        generation,
    });
    let (failure, on_error) = failure_slot();
    let weak = Arc::downgrade(shared);
    let stream = match format {
        Format::F32 => build_input::<f32>(device, &config, channels, producer, weak, on_error),
        Format::I16 => build_input::<i16>(device, &config, channels, producer, weak, on_error),
        Format::I32 => build_input::<i32>(device, &config, channels, producer, weak, on_error),
        Format::U16 => build_input::<u16>(device, &config, channels, producer, weak, on_error),
    }
    .map_err(|e| device_error(format!("microphone {name}: {e}")))?;
    stream
        .play()
        .map_err(|e| device_error(format!("microphone {name}: {e}")))?;
    Ok((stream, failure))
}

fn build_input<T>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    channels: usize,
    mut producer: rtrb::Producer<f32>,
    shared: std::sync::Weak<CaptureShared>,
    on_error: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<cpal::Stream, cpal::Error>
where
    T: cpal::SizedSample,
    f32: cpal::FromSample<T>,
{
    device.build_input_stream::<T, _, _>(
        *config,
        move |data: &[T], _| {
            // Real-time path: no locks, no allocation.
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let (mut sum_sq, mut peak, mut n, mut dropped) = (0f32, 0f32, 0usize, 0u64);
            for frame in data.chunks(channels) {
                let mut s = 0f32;
                for &x in frame {
                    s += <f32 as cpal::FromSample<T>>::from_sample_(x);
                }
                let s = s / frame.len() as f32;
                sum_sq += s * s;
                peak = peak.max(s.abs());
                n += 1;
                if producer.push(s).is_err() {
                    dropped += 1;
                }
            }
            shared.meter.set(sum_sq, n, peak);
            if dropped > 0 {
                shared.dropped.fetch_add(dropped, Ordering::Relaxed);
            }
            shared.waker.wake();
        },
        on_error,
        None,
    )
}

/// The talker's source on a [`Microphone`]: 20 ms frames at 48 kHz.
pub struct MicSource {
    mic: Microphone,
    generation: u64,
    resampler: Option<Resampler>,
    scratch: Vec<f32>,
}

impl MicSource {
    /// Moves whatever the ring holds into the resampler; false if it held nothing.
    fn drain(&mut self) -> bool {
        let mut guard = self.mic.shared.ring.lock().expect("ring lock");
        let Some(ring) = guard.as_mut() else {
            return false;
        };
        if ring.generation != self.generation || self.resampler.is_none() {
            // A new stream (first read, or rebuilt after a device change).
            self.generation = ring.generation;
            self.resampler = match Resampler::new(ring.rate, SAMPLE_RATE) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(error = %e, "capture resampler");
                    None
                }
            };
        }
        let n = ring.consumer.slots();
        if n == 0 {
            return false;
        }
        let Ok(chunk) = ring.consumer.read_chunk(n) else {
            return false;
        };
        let (a, b) = chunk.as_slices();
        self.scratch.clear();
        self.scratch.extend_from_slice(a);
        self.scratch.extend_from_slice(b);
        chunk.commit_all();
        drop(guard);
        if let Some(r) = self.resampler.as_mut() {
            r.push(&self.scratch);
        }
        true
    }
}

#[async_trait::async_trait]
impl AudioSource for MicSource {
    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.resampler.as_mut().and_then(|r| r.take(FRAME_SAMPLES)) {
                return Some(
                    f.into_iter()
                        .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16)
                        .collect(),
                );
            }
            if self.drain() {
                continue;
            }
            if self.mic.shared.stop.load(Ordering::SeqCst) {
                return None;
            }
            // Wait for the next callback (or re-check after a while: the device may be
            // gone and come back on a new stream).
            let shared = self.mic.shared.clone();
            let wait = futures_util::future::poll_fn(move |cx| {
                shared.waker.register(cx.waker());
                let has = shared
                    .ring
                    .lock()
                    .expect("ring lock")
                    .as_ref()
                    .is_some_and(|r| r.consumer.slots() > 0);
                if has {
                    std::task::Poll::Ready(())
                } else {
                    std::task::Poll::Pending
                }
            });
            let _ = tokio::time::timeout(Duration::from_millis(100), wait).await;
        }
    }
}

// ------------------------------------------------------------------ playout

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
    fn hosts_are_told_apart_by_the_names_compared_here() {
        assert_eq!(cpal::HostId::PulseAudio.to_string(), "pulseaudio");
        assert_eq!(cpal::HostId::Alsa.to_string(), "alsa");
        let alsa = cpal::host_from_id(cpal::HostId::Alsa).expect("the ALSA host");
        assert!(host_is(&alsa, "alsa") && !host_is(&alsa, "pulseaudio"));
    }

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

    #[test]
    fn device_choice_parses_default_and_ids() {
        assert_eq!(
            "default".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Default
        );
        assert_eq!("".parse::<DeviceChoice>().unwrap(), DeviceChoice::Default);
        assert_eq!(
            "pulseaudio:vmic".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Id("pulseaudio:vmic".into())
        );
        assert_eq!(DeviceChoice::Default.to_string(), "default");
    }
}
