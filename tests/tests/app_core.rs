//! The desktop app's core (`roger_client::app::App`) without a window: what each Tauri
//! command calls, against a real server, with a private PulseAudio as microphone and
//! speaker. Sign-in, auto-join, PTT heard by a bot, the PTT button's states, a denied
//! press, the max talk time, switching channels, the microphone test through the echo
//! bot, settings persisted, and a bad token bannered with its code.

use roger_client::app::{App, AppEvent, AppState, Notice, PttState, Settings};
use roger_client::Status;
use roger_e2e::pulse::Pulse;
use roger_e2e::{Server, TempDir};
use roger_protocol::{ErrorAction, ErrorCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Seen {
    states: Vec<AppState>,
    notices: Vec<Notice>,
    levels: usize,
}

fn app(dir: &TempDir) -> (App, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let app = App::with_credentials(
        &dir.0,
        Arc::new(move |e| {
            let mut s = s.lock().unwrap();
            match e {
                AppEvent::State(st) => s.states.push(*st),
                AppEvent::Notice(n) => s.notices.push(n),
                AppEvent::Level { .. } => s.levels += 1,
            }
        }),
        // The test machine's credential store is not this test's to write.
        roger_client::app::Credentials::file_only(&dir.0),
    );
    (app, seen)
}

async fn until(within: Duration, what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_core_signs_in_talks_tests_the_mic_and_reports_errors() {
    let Some(pulse) = Pulse::start() else { return };
    // This process opens the devices itself: point it at the private sound server.
    for (k, v) in pulse.env() {
        std::env::set_var(k, v);
    }
    let server = Server::start(
        "[floor]\nmax_talk_ms = 4000\n\
         [[channels]]\nid = \"general\"\n[[channels]]\nid = \"echo\"\n[[channels]]\nid = \"ops\"\n",
    );
    let dir = TempDir::new("app-core");
    let (app, seen) = app(&dir);
    assert_eq!(app.state().status, Status::Offline);
    assert!(!app.autostart(), "nothing saved yet: no connection");

    // Bad input first: a refused token is bannered with its code and a sign-in action.
    app.sign_in(server.url(), "not-a-token".into(), false)
        .await
        .expect("sign-in starts");
    until(
        Duration::from_secs(15),
        "Failed with a TOKEN_INVALID banner",
        || {
            let s = app.state();
            matches!(s.status, Status::Failed { .. })
                && s.error.as_ref().is_some_and(|e| {
                    e.code == ErrorCode::TokenInvalid && e.action == ErrorAction::SignIn
                })
        },
    )
    .await;
    let bad_url = app
        .sign_in("http://example.invalid/ws".into(), "t".into(), false)
        .await
        .unwrap_err();
    assert!(bad_url.message.contains("ws://"), "{}", bad_url.message);

    // A real sign-in: connected, and the first allowed channel joined on its own.
    let echo_bot = pulse.bot(
        &server,
        "echo-bot",
        &["echo"],
        &["echo", "--channel", "echo"],
    );
    echo_bot.wait_for(Duration::from_secs(20), "echo bot joined", |v| {
        v["event"] == "joined"
    });
    let bob = pulse.bot(
        &server,
        "bob",
        &["general", "ops"],
        &[
            "listen",
            "--channel",
            "general",
            "--seconds",
            "60",
            "--out",
            pulse.path("bob.wav").to_str().expect("path"),
        ],
    );
    bob.wait_for(Duration::from_secs(20), "bob joined", |v| {
        v["event"] == "joined"
    });
    let token = server.token("alice", &["general", "ops", "echo"]);
    app.sign_in(server.url(), token.clone(), false)
        .await
        .unwrap();
    until(Duration::from_secs(15), "connected in general", || {
        let s = app.state();
        s.status == Status::Connected
            && s.channel.as_ref().is_some_and(|c| c.as_str() == "general")
            && s.members.iter().any(|m| m.name == "bob")
    })
    .await;
    assert!(
        app.state().error.is_none(),
        "a successful sign-in clears the banner"
    );
    assert_eq!(app.state().user.unwrap().name, "alice");

    // PTT: requesting -> talking; bob hears it; release -> idle.
    let feed = pulse.play_into_mic(&roger_e2e::speech_wav());
    let pressed = Instant::now();
    let press = app.ptt_down();
    assert_eq!(
        app.state().ptt,
        PttState::Requesting,
        "the press shows at once"
    );
    press.await.unwrap();
    assert!(matches!(app.state().ptt, PttState::Talking { .. }));
    // Informational: the microphone opening and the floor request, which run at once.
    println!("press -> talking: {:?}", pressed.elapsed());
    bob.wait_for(Duration::from_secs(10), "bob hears alice", |v| {
        v["event"] == "first_audio"
    });
    let press_again = app.ptt_down();
    press_again.await.unwrap(); // a key repeat changes nothing
    assert!(matches!(app.state().ptt, PttState::Talking { .. }));
    app.ptt_up().await;
    assert_eq!(app.state().ptt, PttState::Idle);
    bob.wait_for(Duration::from_secs(5), "floor idle", |v| {
        v["event"] == "floor" && v["state"] == "idle"
    });

    // Held past the max talk time: the server ends it and the button says so.
    app.ptt_down().await.unwrap();
    until(Duration::from_secs(9), "time up", || {
        app.state().ptt == PttState::TimeUp
    })
    .await;
    assert!(seen
        .lock()
        .unwrap()
        .notices
        .iter()
        .any(|n| matches!(n, Notice::TalkEnded { .. })));
    app.ptt_down().await.unwrap();
    assert_eq!(
        app.state().ptt,
        PttState::TimeUp,
        "a stuck key asks for nothing"
    );
    app.ptt_up().await;
    assert_eq!(app.state().ptt, PttState::Idle);

    // Someone else talking: "listening", and a press is "busy".
    let carol = pulse.bot(
        &server,
        "carol",
        &["general"],
        &[
            "talk",
            "--channel",
            "general",
            "--wav",
            roger_e2e::speech_wav().to_str().unwrap(),
        ],
    );
    until(
        Duration::from_secs(15),
        "listening to carol",
        || matches!(&app.state().ptt, PttState::Listening { name } if name == "carol"),
    )
    .await;
    app.ptt_down().await.unwrap();
    assert!(
        matches!(&app.state().ptt, PttState::Busy { holder } if holder == "carol"),
        "{:?}",
        app.state().ptt
    );
    app.ptt_up().await;
    let _ = carol.wait(Duration::from_secs(15));

    // A microphone that cannot be opened: the press fails with the device's code and a
    // "pick a device" banner, and the floor it asked for meanwhile (the request does
    // not wait for the device) is given back.
    let good = app.settings();
    app.save_settings(Settings {
        input: "no-such-microphone".parse().unwrap(),
        ..good.clone()
    })
    .unwrap();
    let floor_events = |state: &str| {
        bob.lines()
            .iter()
            .filter(|v| v["event"] == "floor" && v["state"] == state)
            .count()
    };
    let idle_before = floor_events("idle");
    let failed = app.ptt_down().await.unwrap_err();
    assert_eq!(failed.code, ErrorCode::MediaDeviceError, "{failed}");
    let s = app.state();
    assert_eq!(s.ptt, PttState::Idle);
    assert!(
        s.error.as_ref().is_some_and(
            |e| e.code == ErrorCode::MediaDeviceError && e.action == ErrorAction::PickDevice
        ),
        "{:?}",
        s.error
    );
    until(Duration::from_secs(5), "the floor given back", || {
        floor_events("idle") > idle_before
    })
    .await;
    app.save_settings(good).unwrap();
    app.dismiss_error();

    // Switching channels leaves the old one and is remembered.
    app.join("ops".into()).await.unwrap();
    assert_eq!(app.state().channel.unwrap().as_str(), "ops");
    let (saved, problem) = Settings::load(&dir.0);
    assert!(problem.is_none());
    assert_eq!(saved.channel.as_deref(), Some("ops"));
    // The token is not in the settings file; it is in the (here file-only) store.
    let settings_text = std::fs::read_to_string(Settings::path(&dir.0)).unwrap();
    assert!(
        !settings_text.contains(&token),
        "the token leaked into settings.json"
    );
    assert_eq!(
        roger_client::app::Credentials::file_only(&dir.0).load(&server.url()),
        Some((token.clone(), roger_client::app::TokenStore::File))
    );
    assert!(
        !serde_json::to_string(&app.state())
            .unwrap()
            .contains(&token)
            && !serde_json::to_string(&app.settings())
                .unwrap()
                .contains(&token),
        "what the window is sent never holds the token"
    );
    let refused = app.join("nope".into()).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::ChannelNotFound);
    assert_eq!(
        app.state().channel.unwrap().as_str(),
        "ops",
        "a refused join keeps the channel"
    );

    // The microphone test: talk to the echo channel, and its playback comes back.
    app.mic_test(true).await.unwrap();
    assert!(app.state().mic_test);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.mic_test(false).await.unwrap();
    assert!(!app.state().mic_test);
    echo_bot.wait_for(Duration::from_secs(10), "the echo bot plays it back", |v| {
        v["event"] == "floor" && v["state"] == "granted"
    });
    until(Duration::from_secs(10), "the playback is heard", || {
        app.diagnostics().events.iter().any(|e| {
            e.text.contains("\"channel\":\"echo\"") && e.text.contains("\"state\":\"taken\"")
        })
    })
    .await;
    drop(feed);

    // The level meter streams levels; diagnostics have the events.
    app.meter(true).unwrap();
    let before = seen.lock().unwrap().levels;
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.meter(false).unwrap();
    assert!(
        seen.lock().unwrap().levels >= before + 4,
        "the meter reports ~20/s"
    );
    let d = app.diagnostics();
    assert!(d.events.len() > 5);
    assert!(!app.devices().unwrap().is_empty());

    // Disconnect: offline; the next start connects with what was saved.
    app.disconnect().await;
    assert_eq!(app.state().status, Status::Offline);
    app.shutdown().await;
    let (again, _) = self::app(&dir);
    assert!(again.autostart());
    until(
        Duration::from_secs(15),
        "reconnected in ops from saved settings",
        || {
            let s = again.state();
            s.status == Status::Connected && s.channel.as_ref().is_some_and(|c| c.as_str() == "ops")
        },
    )
    .await;
    again.shutdown().await;
}
