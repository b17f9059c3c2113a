//! The push-to-talk key on X11 reaches the PTT path within a few milliseconds: an
//! event-driven grab (`roger_client::app::x11key`), not a 50 ms poll. Keys are pressed
//! with XTEST on a virtual display (Xvfb), timed from the fake press to the callback.

use roger_client::app::x11key::X11Key;
use roger_e2e::desktop::Display;
use roger_e2e::{have, skip_or_panic};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{KEY_PRESS_EVENT, KEY_RELEASE_EVENT};
use x11rb::protocol::xtest::ConnectionExt as _;

#[test]
fn the_key_reaches_the_ptt_path_in_milliseconds_and_held_means_one_press() {
    if !have("Xvfb") {
        skip_or_panic("Xvfb is not installed (scripts/install-deps.sh installs it)");
        return;
    }
    let display = Display::start();
    let (tx, rx) = mpsc::channel::<(bool, Instant)>();
    let key = X11Key::start_on(Some(&display.name), move |down| {
        let _ = tx.send((down, Instant::now()));
    })
    .expect("X11 key");
    key.set_key("F8").expect("grab F8");
    let code = key.keycode_of("F8").unwrap().expect("F8 has a keycode");
    let (presser, screen) = x11rb::connect(Some(&display.name)).expect("second connection");
    let root = presser.setup().roots[screen].root;
    let press = |kind: u8| {
        presser
            .xtest_fake_input(kind, code, 0, root, 0, 0, 0)
            .expect("fake input");
        presser.flush().expect("flush");
        Instant::now()
    };

    let mut delays = Vec::new();
    for _ in 0..20 {
        let t = press(KEY_PRESS_EVENT);
        let (down, at) = rx.recv_timeout(Duration::from_secs(1)).expect("the press");
        assert!(down);
        delays.push(at.saturating_duration_since(t));
        // Held for 300 ms: the X server's auto-repeat must not make more presses.
        std::thread::sleep(Duration::from_millis(300));
        let t = press(KEY_RELEASE_EVENT);
        let (down, at) = rx
            .recv_timeout(Duration::from_secs(1))
            .expect("the release");
        assert!(!down, "a held key repeated its press");
        delays.push(at.saturating_duration_since(t));
        assert!(
            rx.try_recv().is_err(),
            "more than one press and one release"
        );
    }
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (p50, p95, max) = (delays[20], delays[37], delays[39]);
    println!(
        "X11 key to PTT path over 40 events: p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
        ms(p50),
        ms(p95),
        ms(max)
    );
    // A 50 ms poll would put the median near 25 ms.
    assert!(p50 < Duration::from_millis(10), "median {p50:?}");

    // Another key replaces it; F8 is let go.
    key.set_key("Ctrl+Shift+Space")
        .expect("grab Ctrl+Shift+Space");
    press(KEY_PRESS_EVENT);
    press(KEY_RELEASE_EVENT);
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "F8 still grabbed"
    );
    assert!(key.set_key("Hyper+F8").is_err());
}
