//! `roger-bench hotkey`: how long a push-to-talk key press takes to reach the app, on a
//! virtual X display, for the event-driven X11 grab (`roger_client::app::x11key`) and for
//! the global-shortcut plugin's X11 backend (`global-hotkey`, which polls every 50 ms).
//! Keys are pressed with XTEST; each press is timed from the fake input to the callback.
//! Presses are spaced at random so they do not lock onto the poll's phase.

use super::report;
use roger_client::app::x11key::X11Key;
use roger_e2e::desktop::Display;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{KEY_PRESS_EVENT, KEY_RELEASE_EVENT};
use x11rb::protocol::xtest::ConnectionExt as _;

const PRESSES: usize = 100;

/// Presses (`KEY_PRESS_EVENT`) or releases the key `code` on `display` with XTEST;
/// returns when the fake input was sent.
pub fn xtest_key(display: &Display, code: u8) -> impl Fn(u8) -> Instant {
    let (conn, screen) = x11rb::connect(Some(&display.name)).expect("X connection");
    let root = conn.setup().roots[screen].root;
    move |kind: u8| {
        conn.xtest_fake_input(kind, code, 0, root, 0, 0, 0)
            .expect("fake input");
        conn.flush().expect("flush");
        Instant::now()
    }
}

fn time_presses(display: &Display, code: u8, events: &mpsc::Receiver<Instant>) -> Vec<f64> {
    let fake = xtest_key(display, code);
    let mut x: u32 = 0x2545_f491;
    let mut out = Vec::new();
    for _ in 0..PRESSES {
        let t = fake(KEY_PRESS_EVENT);
        match events.recv_timeout(Duration::from_secs(1)) {
            Ok(at) => out.push(at.saturating_duration_since(t).as_secs_f64() * 1000.0),
            Err(_) => eprintln!("a press was not reported within 1 s"),
        }
        std::thread::sleep(Duration::from_millis(30));
        fake(KEY_RELEASE_EVENT);
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        std::thread::sleep(Duration::from_millis(40 + u64::from(x % 60)));
        while events.try_recv().is_ok() {}
    }
    out
}

pub fn run() {
    if !roger_e2e::have("Xvfb") {
        println!("roger-bench hotkey: skipped (no Xvfb)");
        return;
    }
    let display = Display::start();
    println!(
        "roger-bench hotkey: {PRESSES} presses of F8 on Xvfb {}",
        display.name
    );

    let (tx, rx) = mpsc::channel();
    let key = X11Key::start_on(Some(&display.name), move |down| {
        if down {
            let _ = tx.send(Instant::now());
        }
    })
    .expect("X11 key");
    key.set_key("F8").expect("grab");
    let code = key.keycode_of("F8").expect("map").expect("F8");
    report(
        "key press -> PTT path, event-driven X11 grab (roger)",
        " ms",
        time_presses(&display, code, &rx),
    );
    drop(key); // lets F8 go for the next backend

    // The plugin's backend reads $DISPLAY.
    std::env::set_var("DISPLAY", &display.name);
    let manager = global_hotkey::GlobalHotKeyManager::new().expect("global-hotkey");
    let f8 = global_hotkey::hotkey::HotKey::new(None, global_hotkey::hotkey::Code::F8);
    manager.register(f8).expect("register F8");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let events = global_hotkey::GlobalHotKeyEvent::receiver();
        while let Ok(e) = events.recv() {
            if e.state == global_hotkey::HotKeyState::Pressed && tx.send(Instant::now()).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    report(
        "key press -> PTT path, global-shortcut plugin (global-hotkey 0.8, polls 50 ms)",
        " ms",
        time_presses(&display, code, &rx),
    );
    drop(manager); // lets F8 go for the app's own grab
    super::tone::run(&display);
}
