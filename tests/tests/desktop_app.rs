//! The real desktop app, end to end: under Xvfb with tauri-driver and WebKitWebDriver,
//! a real server, a private PulseAudio (the app's microphone and speaker) and a bot
//! listening in the channel.
//!
//! The dot turns green; `xdotool keydown F8` makes the bot hear the app and `keyup`
//! releases the floor; a key held past the max talk time stops transmitting and the
//! button says so; the server is stopped -> amber "Reconnecting"; kept down past the
//! recovery window -> red and a banner with its code; the server is back, carol talks,
//! Rejoin -> green; carol's transmission is listed unplayed and Play plays it on the
//! speaker; talking works again, also with the window hidden (the hotkey is global).
//! Screenshots of each state go to target/screenshots/.

use roger_e2e::desktop::Desktop;
use roger_e2e::pulse::Pulse;
use roger_e2e::{Bot, Server};
use serde_json::json;
use std::time::{Duration, Instant};

const MAX_TALK_MS: u64 = 3000;

async fn dot(app: &Desktop) -> String {
    app.attr("status-dot", "data-color")
        .await
        .unwrap_or_default()
}

fn listener(server: &Server, pulse: &Pulse) -> Bot {
    pulse.bot(
        server,
        "bob",
        &["general"],
        &[
            "listen",
            "--channel",
            "general",
            "--seconds",
            "300",
            "--out",
            pulse.path("bob.wav").to_str().expect("path"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desktop_app_talks_recovers_and_rejoins() {
    let Some(pulse) = Pulse::start() else { return };
    let mut server = Server::start(&format!("[floor]\nmax_talk_ms = {MAX_TALK_MS}\n"));
    let token = server.token("alice", &["general", "echo"]);
    let settings = json!({
        "server_url": server.url(),
        "token": token,
        "channel": "general",
        "hotkey": "F8",
        "tones": true,
        "theme": "light",
    });
    let bob = listener(&server, &pulse);
    bob.wait_for(Duration::from_secs(20), "bob joined", |v| {
        v["event"] == "joined"
    });

    let launched = Instant::now();
    let Some(app) = Desktop::start(settings, pulse.env()).await else {
        return;
    };
    app.wait_until(Duration::from_secs(20), "a green dot", || async {
        dot(&app).await == "green"
    })
    .await;
    eprintln!("connected dot {:?} after launch", launched.elapsed());
    app.wait_until(Duration::from_secs(10), "alice in general", || async {
        app.text("members").await.contains("bob")
    })
    .await;
    app.screenshot("app-1-connected").await;

    // Hold the global hotkey: the bot hears the app.
    let mic = pulse.play_into_mic(&roger_e2e::speech_wav());
    app.display.xdotool(&["keydown", "F8"]);
    bob.wait_for(Duration::from_secs(10), "bob hears alice", |v| {
        v["event"] == "first_audio"
    });
    app.wait_until(
        Duration::from_secs(5),
        "the button says talking",
        || async { app.attr("ptt", "data-state").await.as_deref() == Some("talking") },
    )
    .await;
    app.screenshot("app-2-talking").await;
    app.display.xdotool(&["keyup", "F8"]);
    bob.wait_for(Duration::from_secs(5), "the floor is released", |v| {
        v["event"] == "floor" && (v["state"] == "idle" || v["state"] == "released")
    });
    app.wait_until(Duration::from_secs(5), "the button is idle", || async {
        app.attr("ptt", "data-state").await.as_deref() == Some("idle")
    })
    .await;

    // A stuck key: the server's max talk time ends it and the button says so.
    let pressed = Instant::now();
    app.display.xdotool(&["keydown", "F8"]);
    app.wait_until(Duration::from_secs(5), "talking again", || async {
        app.attr("ptt", "data-state").await.as_deref() == Some("talking")
    })
    .await;
    app.wait_until(
        Duration::from_millis(MAX_TALK_MS + 5000),
        "time is up while the key is down",
        || async { app.attr("ptt", "data-state").await.as_deref() == Some("time_up") },
    )
    .await;
    let held = pressed.elapsed();
    assert!(
        held >= Duration::from_millis(MAX_TALK_MS - 500),
        "ended after {held:?}, before the max talk time"
    );
    app.screenshot("app-3-stuck-key-time-up").await;
    // Nothing is sent while the key stays down.
    let sent = |lines: &[serde_json::Value]| {
        lines
            .iter()
            .rev()
            .find(|v| v["event"] == "floor")
            .map(|v| v["state"].as_str().unwrap_or_default().to_owned())
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_ne!(
        sent(&bob.lines()).as_deref(),
        Some("taken"),
        "the floor was taken again while the stuck key stayed down"
    );
    app.display.xdotool(&["keyup", "F8"]);
    app.wait_until(Duration::from_secs(5), "idle after release", || async {
        app.attr("ptt", "data-state").await.as_deref() == Some("idle")
    })
    .await;
    drop(mic);

    // The server goes away: amber, "Reconnecting".
    server.kill9();
    app.wait_until(
        Duration::from_secs(15),
        "an amber Reconnecting dot",
        || async {
            dot(&app).await == "amber" && app.text("status-text").await.contains("Reconnecting")
        },
    )
    .await;
    app.screenshot("app-4-reconnecting").await;

    // Down past the recovery window: red, and the banner with its code.
    app.wait_until(
        Duration::from_secs(60),
        "a red dot and a banner",
        || async { dot(&app).await == "red" && !app.text("banner-code").await.is_empty() },
    )
    .await;
    let code = app.text("banner-code").await;
    assert!(
        code.starts_with("SIGNALING_") || code.starts_with("ICE_"),
        "banner code {code:?}"
    );
    app.screenshot("app-5-failed-banner").await;

    // The server is back; carol talks before the app rejoins. Rejoin: green, and
    // talking works again.
    server.restart();
    let speech = roger_e2e::speech_wav();
    let carol = Bot::spawn(
        &server,
        &server.token("carol", &["general"]),
        &[
            "talk",
            "--channel",
            "general",
            "--wav",
            speech.to_str().expect("path"),
        ],
    );
    let (ok, _, stderr) = carol.wait(Duration::from_secs(20));
    assert!(ok, "carol: {stderr}");
    let bob = listener(&server, &pulse);
    bob.wait_for(Duration::from_secs(20), "bob joined again", |v| {
        v["event"] == "joined"
    });
    app.click("rejoin").await;
    app.wait_until(Duration::from_secs(20), "green after Rejoin", || async {
        dot(&app).await == "green" && app.text("banner-code").await.is_empty()
    })
    .await;

    // What carol said while the app could not hear it waits in the channel's history,
    // unplayed (the app had given up: it is not replayed by itself); Play plays it.
    let listed = Bot::spawn(
        &server,
        &server.token("dave", &["general"]),
        &["history", "--channel", "general"],
    );
    let (ok, lines, stderr) = listed.wait(Duration::from_secs(20));
    assert!(ok, "history: {stderr}");
    let id = lines
        .iter()
        .find(|v| v["event"] == "transmission" && v["by"] == "carol")
        .and_then(|v| v["id"].as_str())
        .expect("carol's transmission in the history")
        .to_owned();
    let item = format!("history-item-{id}");
    app.wait_until(
        Duration::from_secs(10),
        "carol's transmission unplayed",
        || async { app.attr(&item, "data-unplayed").await.as_deref() == Some("true") },
    )
    .await;
    assert!(app.text(&item).await.contains("carol"));
    app.scroll_to(&item).await;
    app.screenshot("app-7-history-unplayed").await;
    let heard = pulse.path("history-played.wav");
    let recorder = pulse.record_speaker(&heard);
    std::thread::sleep(Duration::from_millis(300));
    app.click(&format!("history-play-{id}")).await;
    app.wait_until(Duration::from_secs(5), "played, no longer new", || async {
        app.attr(&item, "data-unplayed").await.as_deref() == Some("false")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(3_800)).await;
    roger_e2e::pulse::stop_recording(recorder);
    app.screenshot("app-8-history-played").await;
    let reference = roger_e2e::audio::read(&speech);
    let played = roger_e2e::pulse::read_mono(&heard);
    assert!(
        played.len() > reference.len(),
        "the speaker recording is too short"
    );
    let (lag, corr) =
        roger_e2e::audio::best_lag(&reference, &played, played.len() - reference.len());
    let pieces = roger_e2e::audio::match_pieces(&reference, &played, lag, 0.6);
    println!("history played on the speaker: lag {lag}, correlation {corr:.3}, {pieces:?}");
    assert!(
        pieces.matched * 4 >= pieces.voiced * 3,
        "the speaker did not play carol's transmission: {pieces:?}"
    );
    bob.wait_for(Duration::from_secs(10), "alice back in general", |v| {
        v["event"] == "member_joined" && v["name"] == "alice"
    });
    app.wait_until(Duration::from_secs(10), "bob listed again", || async {
        app.text("members").await.contains("bob")
    })
    .await;
    app.screenshot("app-6-rejoined").await;

    // The hotkey is global: with the window unmapped (as when hidden in the tray), it
    // still talks.
    app.display
        .xdotool(&["search", "--name", "^Roger$", "windowunmap", "%@"]);
    app.display.xdotool(&["keydown", "F8"]);
    bob.wait_for(
        Duration::from_secs(10),
        "bob hears alice after Rejoin",
        |v| v["event"] == "first_audio",
    );
    app.display.xdotool(&["keyup", "F8"]);
    bob.wait_for(
        Duration::from_secs(5),
        "released with the window hidden",
        |v| v["event"] == "floor" && (v["state"] == "idle" || v["state"] == "released"),
    );
    app.stop().await;
}
