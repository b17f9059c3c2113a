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
//! - [`Speaker`]: the listener's [`AudioSink`]: a jitter buffer, an Opus decoder (PLC,
//!   FEC) and time-scale changes per channel, mixing, per-channel volume, tones and
//!   resampling to the device rate, all run by the cpal callback as the device asks for
//!   audio. A spurt that starts on an idle speaker plays at the next callback after its
//!   first packet (behind the jitter buffer's start margin).
//! - Both watch their device: a stream error, or the device gone from the device list
//!   (PulseAudio moves a stream whose device vanished to another and says nothing), is
//!   reported as `MEDIA_DEVICE_ERROR` with the device's name through the `on_event`
//!   callback, and the stream is rebuilt when the device (or, for `Default`, any default
//!   device) is back. Nothing needs a restart.
//!
//! Files: device listing and watching, and what both stream threads share (this file);
//! `capture.rs` (the microphone); `playout.rs` (the speaker).

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

mod capture;
mod playout;

pub use capture::{MicSource, Microphone};
pub use playout::{Speaker, SpeakerStats};

/// Audio captured before the floor is granted that is kept (and sent once granted).
pub const PRE_GRANT_LIMIT: Duration = Duration::from_secs(2);
/// How often a stream's device presence is checked.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
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

/// Asks for real-time scheduling of the calling thread (a device callback's), as audio
/// apps do (PulseAudio's own threads run so; on a desktop, rtkit grants it; the crate
/// `thread-priority` makes the call on each platform): the device
/// plays a gap whenever the callback runs later than its buffer lasts (15 ms), and a busy
/// machine delays an ordinary thread by more than that now and then (measured: 18-21 ms
/// gaps in a third of debug-build clean-path runs, BENCHMARKS.md "Clean audio"). Best effort:
/// without the right (no rtkit, no RLIMIT_RTPRIO), the highest ordinary priority, or
/// nothing.
fn raise_audio_thread_priority() {
    use thread_priority::{set_current_thread_priority, ThreadPriority};
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
            ThreadSchedulePolicy,
        };
        let fifo = ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo);
        // Below the sound server's own threads (PulseAudio's run at 5), above every
        // ordinary thread.
        if let Ok(p) = 4u8.try_into() {
            let p = ThreadPriority::Crossplatform(p);
            if set_thread_priority_and_policy(thread_native_id(), p, fifo).is_ok() {
                return;
            }
        }
    }
    if let Err(e) = set_current_thread_priority(ThreadPriority::Max) {
        tracing::debug!(error = ?e, "audio thread priority unchanged");
    }
}

/// A built, playing stream and the failure slot its error callback fills.
type OpenStream = (cpal::Stream, Failure);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_told_apart_by_the_names_compared_here() {
        assert_eq!(cpal::HostId::PulseAudio.to_string(), "pulseaudio");
        assert_eq!(cpal::HostId::Alsa.to_string(), "alsa");
        let alsa = cpal::host_from_id(cpal::HostId::Alsa).expect("the ALSA host");
        assert!(host_is(&alsa, "alsa") && !host_is(&alsa, "pulseaudio"));
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
