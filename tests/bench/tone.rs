//! `roger-bench hotkey`, second part: key press -> talk-permit tone on the speaker
//! device. The app's core (`roger_client::app::App`, as the desktop app runs it) on a
//! private PulseAudio, connected to a local server on loopback; the key is F8 grabbed on
//! Xvfb by the event-driven X11 grab and pressed with XTEST. The speaker is a null sink;
//! this process records its monitor in 2.5 ms buffers and dates a sample by when its
//! buffer arrived (minus its distance to the buffer's end): when a recording of the
//! speaker could first have the tone, an upper bound on when the speaker played it.

use super::report;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use roger_client::app::x11key::X11Key;
use roger_client::app::{App, Credentials, PttState};
use roger_e2e::desktop::Display;
use roger_e2e::pulse::Pulse;
use roger_e2e::{Server, TempDir};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use x11rb::protocol::xproto::{KEY_PRESS_EVENT, KEY_RELEASE_EVENT};

const PRESSES: usize = 50;
/// A sample louder than this (of full scale) after silence starts a tone.
const LOUD: f32 = 0.02;

/// Starts recording `spk.monitor`; each sound onset after >= 200 ms of silence is sent as
/// the instant its first loud sample was captured.
fn onsets(tx: mpsc::Sender<Instant>) -> cpal::Stream {
    let host = roger_client::audio::device::host();
    let device = host
        .input_devices()
        .expect("input devices")
        .find(|d| {
            d.id()
                .is_ok_and(|id| id.to_string().ends_with("spk.monitor"))
        })
        .expect("the speaker's monitor");
    let config = cpal::StreamConfig {
        channels: 1,
        sample_rate: 48_000,
        buffer_size: cpal::BufferSize::Fixed(120),
    };
    let mut quiet_since: Option<Instant> = Some(Instant::now());
    // Small buffers: a sample's arrival is then close to its capture.
    let stream = device
        .build_input_stream(
            config,
            move |data: &[f32], _: &cpal::InputCallbackInfo| {
                // The last sample was captured by now at the latest: each sample is dated
                // back from here by its distance to the end of the buffer. (The PulseAudio
                // backend's capture timestamps do not advance with its callbacks, so they
                // cannot date a sample.) This is an upper bound on when the sink played it.
                let now = Instant::now();
                let start = now
                    .checked_sub(Duration::from_secs_f64(data.len() as f64 / 48_000.0))
                    .unwrap_or(now);
                for (i, s) in data.iter().enumerate() {
                    let at = start + Duration::from_secs_f64(i as f64 / 48_000.0);
                    if s.abs() >= LOUD {
                        if quiet_since
                            .is_some_and(|q| at.duration_since(q) >= Duration::from_millis(200))
                        {
                            let _ = tx.send(at);
                        }
                        quiet_since = None;
                    } else if quiet_since.is_none() {
                        quiet_since = Some(at);
                    }
                }
            },
            |e| eprintln!("monitor: {e}"),
            None,
        )
        .expect("record the speaker's monitor");
    stream.play().expect("monitor plays");
    stream
}

pub fn run(display: &Display) {
    let Some(pulse) = Pulse::start() else {
        println!("roger-bench hotkey: press -> tone skipped (no PulseAudio)");
        return;
    };
    for (k, v) in pulse.env() {
        std::env::set_var(k, v);
    }
    let server = Server::start("");
    let token = server.token("alice", &["general"]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = TempDir::new("bench-tone");
    let app = App::with_credentials(&dir.0, Arc::new(|_| {}), Credentials::file_only(&dir.0));
    rt.block_on(app.sign_in(server.url(), token, false))
        .expect("sign in");
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.state().channel.is_none() || app.state().members.is_empty() {
        assert!(Instant::now() < deadline, "the app did not join a channel");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));

    let (core, handle) = (app.clone(), rt.handle().clone());
    let key = X11Key::start_on(Some(&display.name), move |down| core.ptt_key(down, &handle))
        .expect("X11 key");
    key.set_key("F8").expect("grab");
    let code = key.keycode_of("F8").expect("map").expect("F8");
    let (tx, rx) = mpsc::channel();
    let _monitor = onsets(tx);
    std::thread::sleep(Duration::from_millis(500));

    let fake = super::hotkey::xtest_key(display, code);
    let mut out = Vec::new();
    for _ in 0..PRESSES {
        while rx.try_recv().is_ok() {}
        let pressed = fake(KEY_PRESS_EVENT);
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(at) if at >= pressed => out.push(at.duration_since(pressed).as_secs_f64() * 1000.0),
            Ok(_) => eprintln!("a sound began before the press: not counted"),
            Err(_) => eprintln!("no tone within 2 s of a press ({:?})", app.state().ptt),
        }
        std::thread::sleep(Duration::from_millis(400));
        if !matches!(app.state().ptt, PttState::Talking { .. }) {
            eprintln!("not talking while held: {:?}", app.state().ptt);
        }
        fake(KEY_RELEASE_EVENT);
        // The end-of-talk tone, then silence before the next press.
        std::thread::sleep(Duration::from_millis(700));
    }
    report(
        "key press -> talk-permit tone on the speaker device (X11 grab, loopback server)",
        " ms",
        out,
    );
    drop(key);
    rt.block_on(app.shutdown());
}
