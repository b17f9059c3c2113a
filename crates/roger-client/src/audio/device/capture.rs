//! Capture: the microphone's thread and ring, and the talker's 20 ms source.

use super::*;

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
    let mut first = true;
    device.build_input_stream::<T, _, _>(
        *config,
        move |data: &[T], _| {
            // Real-time path: no locks, no allocation.
            if std::mem::take(&mut first) {
                raise_audio_thread_priority();
            }
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
