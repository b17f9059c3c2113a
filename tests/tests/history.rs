//! Channel history through a real roger-server: a transmission is recorded as it is
//! forwarded; a member who was not there lists it and fetches audio that matches the
//! source; the Ogg Opus download plays in a standard decoder (`opusdec`) and matches
//! too; a token without the channel is refused both ways; a channel with `record =
//! false` keeps nothing; age expiry; and the history survives a restart.

use roger_e2e::audio::{best_lag, read};
use roger_e2e::{have, http_fetch, skip_or_panic, speech_wav, Bot, Server, TempDir};
use serde_json::Value;
use std::time::{Duration, Instant};

const S: Duration = Duration::from_secs(1);

const CONFIG: &str = r#"
[[channels]]
id = "general"

[[channels]]
id = "quiet"
record = false

[[channels]]
id = "brief"
max_age = "8s"
"#;

/// `roger-bot history` as `user` (token for `allowed`): ok, its `transmission` lines,
/// stderr.
fn history(
    server: &Server,
    user: &str,
    allowed: &[&str],
    channel: &str,
    out: Option<&TempDir>,
) -> (bool, Vec<Value>, String) {
    let mut args = vec!["history", "--channel", channel];
    if let Some(dir) = out {
        args.extend(["--out", dir.0.to_str().expect("path")]);
    }
    let bot = Bot::spawn(server, &server.token(user, allowed), &args);
    let (ok, lines, stderr) = bot.wait(20 * S);
    let kept = lines
        .into_iter()
        .filter(|v| v["event"] == "transmission")
        .collect();
    (ok, kept, stderr)
}

/// Correlation of `heard` with the source speech, wherever it starts in the first
/// 100 ms.
fn match_speech(heard: &[i16]) -> f64 {
    let reference = read(&speech_wav());
    let mut padded = vec![0i16; 4800];
    padded.extend_from_slice(heard);
    padded.resize(padded.len().max(reference.len() + 9600), 0);
    best_lag(&reference, &padded, 9600).1
}

#[test]
fn history_is_kept_listed_fetched_downloaded_guarded_and_kept_across_a_restart() {
    let mut server = Server::start(CONFIG);
    let speech = speech_wav();
    // Three talkers at once, one per channel (each sends the 3 s fixture).
    let talkers: Vec<Bot> = [("alice", "general"), ("amy", "quiet"), ("ann", "brief")]
        .iter()
        .map(|(user, channel)| {
            Bot::spawn(
                &server,
                &server.token(user, &[channel]),
                &[
                    "talk",
                    "--channel",
                    channel,
                    "--wav",
                    speech.to_str().expect("path"),
                ],
            )
        })
        .collect();
    for t in talkers {
        let (ok, _, stderr) = t.wait(20 * S);
        assert!(ok, "a talker failed: {stderr}");
    }
    let talked = Instant::now();

    // Dave was not there: he lists general's history and saves it.
    let dir = TempDir::new("history");
    let (ok, kept, stderr) = history(&server, "dave", &["general"], "general", Some(&dir));
    assert!(ok, "dave's history failed: {stderr}");
    assert_eq!(kept.len(), 1, "{kept:#?}");
    let t = &kept[0];
    assert_eq!(t["by"], "alice");
    assert_eq!(t["channel"], "general");
    let duration = t["duration_ms"].as_u64().expect("duration_ms");
    assert!(
        (2800..=3400).contains(&duration),
        "a 3 s transmission lasted {duration} ms"
    );
    let id = t["id"].as_str().expect("id").to_owned();
    let saved = read(&dir.join(&format!("{id}.wav")));
    let corr = match_speech(&saved);
    println!(
        "fetched audio: {} samples, correlation {corr:.3}",
        saved.len()
    );
    assert!(corr >= 0.9, "the fetched audio does not match: {corr:.3}");

    // The Ogg Opus download, with dave's token.
    let dave = server.token("dave", &["general"]);
    let path = format!("/history/{id}.ogg");
    let (status, ogg) = http_fetch(server.addr, &path, Some(&dave)).expect("download");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&ogg));
    assert_eq!(&ogg[..4], b"OggS");
    let ogg_path = dir.join("download.ogg");
    std::fs::write(&ogg_path, &ogg).expect("write ogg");
    if have("opusdec") {
        let decoded = dir.join("download.wav");
        let st = std::process::Command::new("opusdec")
            .args(["--quiet", "--rate", "48000", "--force-wav"])
            .arg(&ogg_path)
            .arg(&decoded)
            .status()
            .expect("run opusdec");
        assert!(st.success(), "opusdec refused the file");
        let pcm = read(&decoded);
        let corr = match_speech(&pcm);
        println!("opusdec: {} samples, correlation {corr:.3}", pcm.len());
        assert!(corr >= 0.9, "the Ogg file does not match: {corr:.3}");
        let secs = pcm.len() as f64 / 48_000.0;
        assert!(
            (secs * 1000.0 - duration as f64).abs() < 100.0,
            "the Ogg file lasts {secs:.3} s, the transmission {duration} ms"
        );
    } else {
        skip_or_panic("opusdec is not installed (apt install opus-tools)");
    }

    // No token, a bad token, a token without the channel, an unknown id.
    let refused = |bearer: Option<&str>, path: &str| {
        let (status, body) = http_fetch(server.addr, path, bearer).expect("request");
        let body: Value = serde_json::from_slice(&body).expect("a JSON error body");
        (status, body["code"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(refused(None, &path), (401, "NOT_AUTHENTICATED".into()));
    assert_eq!(
        refused(Some("not-a-token"), &path),
        (401, "TOKEN_INVALID".into())
    );
    let eve = server.token("eve", &["quiet"]);
    assert_eq!(
        refused(Some(&eve), &path),
        (403, "CHANNEL_NOT_ALLOWED".into())
    );
    assert_eq!(
        refused(Some(&dave), "/history/0-00000000.ogg"),
        (404, "TRANSMISSION_NOT_FOUND".into())
    );
    let (ok, kept, stderr) = history(&server, "eve", &["quiet"], "general", None);
    assert!(!ok && kept.is_empty(), "eve listed general: {kept:?}");
    assert!(stderr.contains("CHANNEL_NOT_ALLOWED"), "stderr: {stderr}");

    // Recording off: nothing kept.
    let (ok, kept, stderr) = history(&server, "eve", &["quiet"], "quiet", None);
    assert!(ok, "{stderr}");
    assert!(kept.is_empty(), "quiet recorded: {kept:?}");
    // Not hidden but never recorded: three talked, two transmissions were stored.
    assert_eq!(server.metric("roger_history_transmissions_total"), 2.0);
    let (ok, kept, _) = history(&server, "eve", &["brief"], "brief", None);
    assert!(ok && kept.len() == 1, "brief: {kept:?}");

    // A restart (a drain: SIGTERM) keeps the history; brief's expires by age.
    server
        .terminate(10 * S)
        .expect("the server stops on SIGTERM");
    server.restart();
    let (ok, kept, stderr) = history(&server, "dave", &["general"], "general", None);
    assert!(ok, "{stderr}");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["id"], id.as_str());
    let wait = Duration::from_secs(9).saturating_sub(talked.elapsed());
    std::thread::sleep(wait);
    let (ok, kept, _) = history(&server, "eve", &["brief"], "brief", None);
    assert!(ok && kept.is_empty(), "brief kept past its age: {kept:?}");
}
