//! The desktop app keeps the token out of reach, on a real Secret Service (a private
//! D-Bus session bus with gnome-keyring): after signing in through the window, the
//! token is in the credential store, not in the settings file or any other file; the
//! window is never sent it; Sign out removes it from the store; `ws://` to another
//! machine is refused with INVALID_SETTINGS unless the "unencrypted" box is ticked; and a
//! token is kept under the name of the server it was given for, no other.

use fantoccini::Locator;
use roger_e2e::desktop::{Desktop, SecretService};
use roger_e2e::Server;
use serde_json::json;
use std::time::Duration;

async fn type_into(app: &Desktop, testid: &str, text: &str) {
    let el = app
        .client
        .find(Locator::Css(&format!("[data-testid='{testid}']")))
        .await
        .unwrap_or_else(|e| panic!("no {testid}: {e}"));
    el.clear().await.expect("clear");
    el.send_keys(text).await.expect("type");
}

/// Everything the window has been sent or shows: the state, the settings, the
/// diagnostics, and the page itself.
async fn what_the_window_has(app: &Desktop) -> String {
    let script = r#"
        const done = arguments[arguments.length - 1];
        const invoke = window.__TAURI_INTERNALS__.invoke;
        Promise.all([invoke("get_state"), invoke("get_settings"), invoke("diagnostics")])
            .then((r) => done(JSON.stringify(r) + document.documentElement.outerHTML))
            .catch((e) => done("ERROR " + e));
    "#;
    let v = app
        .client
        .execute_async(script, vec![])
        .await
        .expect("script");
    let text = v.as_str().unwrap_or_default().to_owned();
    assert!(!text.starts_with("ERROR"), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_lives_in_the_credential_store_and_never_reaches_the_window() {
    let Some(secrets) = SecretService::start() else {
        return;
    };
    let server = Server::start("");
    let token = server.token("alice", &["general"]);
    let settings = json!({ "server_url": server.url(), "channel": "general", "theme": "light" });
    let Some(app) = Desktop::start(settings, &secrets.env()).await else {
        return;
    };
    let config = app.home.join("config/dev.roger.desktop");
    // The store's entry is named by the server's origin.
    let origin = format!("ws://{}", server.addr);
    let entry = ["service", "roger", "username", origin.as_str()];

    // Sign in through the window.
    app.wait_until(Duration::from_secs(20), "the sign-in form", || async {
        app.attr("token", "type").await.as_deref() == Some("password")
    })
    .await;
    type_into(&app, "token", &token).await;
    app.click("connect").await;
    app.wait_until(Duration::from_secs(20), "a green dot", || async {
        app.attr("status-dot", "data-color").await.as_deref() == Some("green")
    })
    .await;

    // In the store; in no file of the app's.
    assert_eq!(secrets.lookup(&entry).as_deref(), Some(token.as_str()));
    let saved = std::fs::read_to_string(config.join("settings.json")).expect("settings");
    assert!(
        !saved.contains(&token),
        "settings.json holds the token:\n{saved}"
    );
    assert!(
        !config.join("token").exists(),
        "a token file beside a working store"
    );
    // The window never had it.
    let seen = what_the_window_has(&app).await;
    assert!(!seen.contains(&token), "the window was sent the token");
    app.click("nav-signin").await;
    app.wait_until(
        Duration::from_secs(5),
        "where the token is kept",
        || async { app.text("token-store").await.contains("system keyring") },
    )
    .await;
    app.screenshot("keyring-1-signed-in").await;

    // Sign out forgets it.
    app.click("sign-out").await;
    app.wait_until(
        Duration::from_secs(10),
        "the token gone from the store",
        || async { secrets.lookup(&entry).is_none() },
    )
    .await;
    app.wait_until(Duration::from_secs(10), "signed out", || async {
        app.attr("status-dot", "data-color").await.as_deref() != Some("green")
    })
    .await;

    // Signing in again stores it again; Sign out removes it again.
    type_into(&app, "token", &token).await;
    app.click("connect").await;
    app.wait_until(Duration::from_secs(20), "green again", || async {
        app.attr("status-dot", "data-color").await.as_deref() == Some("green")
    })
    .await;
    app.click("nav-signin").await;
    app.click("sign-out").await;
    app.wait_until(Duration::from_secs(10), "signed out again", || async {
        secrets.lookup(&entry).is_none()
    })
    .await;

    // ws:// to another machine: refused unless ticked.
    type_into(&app, "server-url", "ws://198.18.0.7:7070/ws").await;
    type_into(&app, "token", "eyJ.a.b").await;
    app.click("connect").await;
    app.wait_until(
        Duration::from_secs(5),
        "INVALID_SETTINGS inline",
        || async {
            let e = app.text("signin-error").await;
            e.contains("INVALID_SETTINGS") && e.contains("unencrypted")
        },
    )
    .await;
    assert!(
        secrets.lookup(&entry).is_none(),
        "a refused sign-in kept the token"
    );
    app.screenshot("keyring-2-unencrypted-refused").await;
    app.click("allow-unencrypted").await;
    app.click("connect").await;
    let elsewhere = ["service", "roger", "username", "ws://198.18.0.7:7070"];
    app.wait_until(Duration::from_secs(10), "accepted once ticked", || async {
        secrets.lookup(&elsewhere).as_deref() == Some("eyJ.a.b")
    })
    .await;
    assert!(
        secrets.lookup(&entry).is_none(),
        "kept for the wrong server"
    );
    let saved = std::fs::read_to_string(config.join("settings.json")).expect("settings");
    assert!(saved.contains("\"allow_unencrypted\": true"), "{saved}");
    app.stop().await;
}
