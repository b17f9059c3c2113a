//! The real desktop app on Wayland, natively (`GDK_BACKEND=wayland`, no XWayland, no X
//! display at all): a headless sway, a private D-Bus session bus with a stand-in
//! GlobalShortcuts portal on it (tests/portal.rs, the XDG interface as specified), a real
//! server, a private PulseAudio and a bot listening.
//!
//! The window renders (screenshot); the app binds "Push to talk" with F8 preferred;
//! `Activated` makes the bot hear the app's microphone, `Deactivated` releases the
//! floor; a trigger the desktop changes shows in Settings. The portal goes away: the
//! app says this desktop gives no global talk key (screenshot) and the on-screen button
//! still talks. The portal comes back: the app binds again by itself. A second launch
//! hands over to the first (single instance), and with no tray on this desktop the app
//! says so rather than hiding its window where nobody can get it back.

use fantoccini::actions::InputSource;
use roger_e2e::audio::{best_lag, match_pieces};
use roger_e2e::desktop::{screenshot_dir, Desktop, Display, SessionBus};
use roger_e2e::portal::StandInPortal;
use roger_e2e::pulse::{read_mono, Pulse};
use roger_e2e::{bin, have, Server};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ID: &str = "push-to-talk";

async fn ptt_state(app: &Desktop) -> Option<String> {
    app.attr("ptt", "data-state").await
}

/// The screenshot shows a rendered window, not an empty output: many colours.
fn rendered(path: &std::path::Path) -> bool {
    let out = Command::new("identify")
        .args(["-format", "%k"])
        .arg(path)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    out.parse::<u32>().is_ok_and(|colours| colours > 16)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_runs_natively_on_wayland_with_the_global_shortcuts_portal() {
    let Some(pulse) = Pulse::start() else { return };
    if !have("dbus-daemon") || !have("identify") {
        roger_e2e::skip_or_panic("dbus-daemon or ImageMagick is not installed");
        return;
    }
    let Some(display) = Display::sway() else {
        return;
    };
    let bus = SessionBus::start();
    let portal = StandInPortal::start(&bus.address).await;
    let server = Server::start("");
    let token = server.token("alice", &["general"]);
    let settings = json!({
        "server_url": server.url(),
        "token": token,
        "channel": "general",
        "hotkey": "F8",
        "tones": true,
        "theme": "light",
    });
    let mut env = pulse.env().to_vec();
    env.push(("DBUS_SESSION_BUS_ADDRESS".into(), bus.address.clone()));
    env.push(("ROGER_NO_KEYRING".into(), "1".into()));
    let Some(app) = Desktop::start_on(display, settings, &env).await else {
        return;
    };
    app.wait_until(Duration::from_secs(30), "a green dot", || async {
        app.attr("status-dot", "data-color").await.as_deref() == Some("green")
    })
    .await;
    let shot = app.screenshot("wayland-1-connected").await;
    assert!(
        rendered(&shot),
        "the window did not render: {}",
        shot.display()
    );
    let log = app.app_log();
    assert!(
        !log.contains("XWayland") && !log.contains("cannot open display"),
        "the app looked for X: {log}"
    );

    // "Push to talk" is bound with the configured key as the preferred trigger.
    let bound = portal.wait_bound(Duration::from_secs(20)).await;
    assert_eq!(
        bound.last().cloned(),
        Some((ID.to_owned(), "Push to talk".to_owned(), "F8".to_owned())),
        "what the app asked the portal for"
    );
    app.click("nav-settings").await;
    app.wait_until(Duration::from_secs(10), "Settings names F8", || async {
        app.text("hotkey-state")
            .await
            .contains("The desktop gave \"Push to talk\" F8")
    })
    .await;
    // The stand-in is version 2: the desktop's own settings can be opened.
    app.click("hotkey-configure").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while portal.configured() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(portal.configured(), 1, "ConfigureShortcuts was called");
    app.click("nav-main").await;

    // Activated: the bot hears the app's microphone; Deactivated releases the floor.
    let bob_wav = pulse.path("bob.wav");
    let bob = pulse.bot(
        &server,
        "bob",
        &["general"],
        &[
            "listen",
            "--channel",
            "general",
            "--seconds",
            "14",
            "--out",
            bob_wav.to_str().expect("path"),
        ],
    );
    bob.wait_for(Duration::from_secs(20), "bob joined", |v| {
        v["event"] == "joined"
    });
    // The speech starts once the floor is ours and bob hears the stream, so every
    // voiced piece of it must reach him (speech started before the press is cut).
    portal.press(ID, true).await;
    bob.wait_for(Duration::from_secs(10), "bob hears alice", |v| {
        v["event"] == "first_audio"
    });
    app.wait_until(
        Duration::from_secs(5),
        "the button says talking",
        || async { ptt_state(&app).await.as_deref() == Some("talking") },
    )
    .await;
    let mut mic = pulse.play_into_mic(&roger_e2e::speech_wav());
    app.screenshot("wayland-2-talking").await;
    let _ = mic.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    portal.press(ID, false).await;
    bob.wait_for(Duration::from_secs(5), "the floor is released", |v| {
        v["event"] == "floor" && (v["state"] == "idle" || v["state"] == "released")
    });
    app.wait_until(Duration::from_secs(5), "the button is idle", || async {
        ptt_state(&app).await.as_deref() == Some("idle")
    })
    .await;
    let (ok, _, stderr) = bob.wait(Duration::from_secs(20));
    assert!(ok, "bob failed: {stderr}");
    let reference = roger_e2e::audio::read(&roger_e2e::speech_wav());
    let heard = read_mono(&bob_wav);
    assert!(
        heard.len() > reference.len(),
        "bob's recording is too short"
    );
    let (lag, corr) = best_lag(&reference, &heard, heard.len() - reference.len());
    // The point here is that the app's microphone reaches bob through the portal's key,
    // not a quality figure (the clean-audio tests own those): a 100 ms piece of speech
    // after Opus and the app's capture path can fall to ~0.6 on a loaded machine, while
    // a piece that did not arrive scores near 0.
    let pieces = match_pieces(&reference, &heard, lag, 0.6);
    println!("bob heard the speech at lag {lag} (correlation {corr:.3}); {pieces:?}");
    assert!(
        pieces.matched * 4 >= pieces.voiced * 3,
        "bob did not hear the app's microphone: {pieces:?}, correlation {corr:.3}"
    );

    // The desktop changes the trigger: Settings follows.
    portal.change_trigger(ID, "Ctrl+Alt+T").await;
    app.click("nav-settings").await;
    app.wait_until(
        Duration::from_secs(10),
        "Settings shows the new trigger",
        || async { app.text("hotkey-state").await.contains("Ctrl+Alt+T") },
    )
    .await;
    app.screenshot("wayland-3-trigger-changed").await;

    // The portal goes away: the app says plainly there is no global key...
    portal.stop().await;
    app.wait_until(
        Duration::from_secs(10),
        "the no-global-key notice",
        || async {
            app.text("hotkey-state")
                .await
                .contains("this desktop gives apps no global talk key")
        },
    )
    .await;
    app.screenshot("wayland-4-no-portal-settings").await;
    app.click("nav-main").await;
    app.wait_until(Duration::from_secs(5), "the Talk view says so", || async {
        app.text("ptt").await.contains("no global talk key")
    })
    .await;
    app.screenshot("wayland-5-no-portal-talk").await;
    // ...and the on-screen button still talks.
    let button = app
        .client
        .find(fantoccini::Locator::Css("[data-testid='ptt']"))
        .await
        .expect("the PTT button");
    let hold = fantoccini::actions::MouseActions::new("mouse".into())
        .then(fantoccini::actions::PointerAction::MoveToElement {
            element: button,
            duration: None,
            x: 0.0,
            y: 0.0,
        })
        .then(fantoccini::actions::PointerAction::Down {
            button: fantoccini::actions::MOUSE_BUTTON_LEFT,
        });
    app.client.perform_actions(hold).await.expect("press");
    app.wait_until(Duration::from_secs(5), "the button talks", || async {
        ptt_state(&app).await.as_deref() == Some("talking")
    })
    .await;
    let release = fantoccini::actions::MouseActions::new("mouse".into()).then(
        fantoccini::actions::PointerAction::Up {
            button: fantoccini::actions::MOUSE_BUTTON_LEFT,
        },
    );
    app.client.perform_actions(release).await.expect("release");
    app.wait_until(
        Duration::from_secs(5),
        "the button is idle again",
        || async { ptt_state(&app).await.as_deref() == Some("idle") },
    )
    .await;

    // The portal comes back (a restart): the app binds again by itself.
    let portal = StandInPortal::start(&bus.address).await;
    let again = portal.wait_bound(Duration::from_secs(10)).await;
    assert_eq!(again.last().map(|b| b.0.as_str()), Some(ID));
    app.click("nav-settings").await;
    app.wait_until(Duration::from_secs(10), "bound again", || async {
        app.text("hotkey-state").await.contains("The desktop gave")
    })
    .await;

    // Single instance: a second launch hands over to the running app and ends.
    let mut second = Command::new(bin("roger"));
    app.home.apply(&mut second, &app.display);
    let mut second = second
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("a second launch");
    let deadline = Instant::now() + Duration::from_secs(15);
    let ended = loop {
        if let Ok(Some(status)) = second.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        ended.is_some(),
        "a second Roger kept running beside the first"
    );
    assert_eq!(
        app.attr("status-dot", "data-color").await.as_deref(),
        Some("green"),
        "the first instance is still connected"
    );
    // No StatusNotifierWatcher here: no tray, and closing must not hide the window.
    assert!(
        app.app_log().contains("no tray icon"),
        "the app did not notice this desktop has no tray"
    );
    let _ = std::fs::copy(
        app.home.join("app.log"),
        screenshot_dir().join("wayland-app.log"),
    );
    app.stop().await;
}
