//! What a desktop shell hands over as it is: the launch options (merged into the saved
//! settings) and the push-to-talk key's presses and releases (spawned here, once, for
//! every source: the global hotkey, the on-screen button, Space).

use super::{App, Settings};
use roger_protocol::ErrorBody;
use std::path::PathBuf;

/// Options given at launch (`roger --server URL --token-file F --channel C`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchOptions {
    /// Server address.
    pub server: Option<String>,
    /// A file holding the sign-in token.
    pub token_file: Option<PathBuf>,
    /// The channel to join.
    pub channel: Option<String>,
}

impl App {
    /// Launch options become settings, so the next launch needs none. Returns the
    /// settings now in force. A token file that cannot be read is logged (naming it)
    /// and skipped; the other options still apply. Settings that do not validate are
    /// refused as in the Settings view (`INVALID_SETTINGS`), and nothing is saved.
    pub fn apply_launch_options(&self, options: &LaunchOptions) -> Result<Settings, ErrorBody> {
        let mut settings = self.settings();
        if let Some(server) = &options.server {
            settings.server_url = server.clone();
        }
        if let Some(path) = &options.token_file {
            match std::fs::read_to_string(path) {
                // Kept like a signed-in token (credential store, else a private file).
                Ok(token) if !token.trim().is_empty() => {
                    self.keep_token(&settings.server_url, token.trim())?
                }
                Ok(_) => tracing::error!("--token-file {} is empty", path.display()),
                Err(e) => tracing::error!("cannot read --token-file {}: {e}", path.display()),
            }
        }
        if let Some(channel) = &options.channel {
            settings.channel = Some(channel.clone());
        }
        if settings != self.settings() {
            self.save_settings(settings.clone())?;
        }
        Ok(settings)
    }

    /// The push-to-talk key went down (`true`) or up: the press or release is taken now
    /// (so a release right after a press is never overtaken), and its work runs on
    /// `runtime`. A failed press reaches the window as a notice or banner; it is only
    /// logged here.
    pub fn ptt_key(&self, down: bool, runtime: &tokio::runtime::Handle) {
        if down {
            let press = self.ptt_down();
            runtime.spawn(async move {
                if let Err(e) = press.await {
                    tracing::info!(error = %e, "PTT");
                }
            });
        } else {
            runtime.spawn(self.ptt_up());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roger_protocol::ErrorCode;
    use std::sync::Arc;

    fn app(dir: &std::path::Path) -> App {
        // Never the real user's credential store.
        App::with_credentials(
            dir,
            Arc::new(|_| {}),
            crate::app::Credentials::file_only(dir),
        )
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("roger-launch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn launch_options_are_saved_and_a_second_launch_needs_none() {
        let dir = temp_dir("saved");
        let token = dir.join("token");
        std::fs::write(&token, "  eyJ.token.x \n").unwrap();
        let options = LaunchOptions {
            server: Some("ws://127.0.0.1:7070/ws".into()),
            token_file: Some(token),
            channel: Some("echo".into()),
        };
        let s = app(&dir).apply_launch_options(&options).expect("applied");
        assert_eq!(s.server_url, "ws://127.0.0.1:7070/ws");
        assert_eq!(s.channel.as_deref(), Some("echo"));
        // The token is kept apart from the settings, and found again at the next launch.
        assert!(!std::fs::read_to_string(dir.join("settings.json"))
            .unwrap()
            .contains("eyJ.token.x"));
        assert_eq!(app(&dir).token().as_deref(), Some("eyJ.token.x"));
        assert_eq!(
            app(&dir).state().token_store,
            Some(crate::app::TokenStore::File)
        );
        // The next launch, without options, finds them in the settings.
        let again = app(&dir);
        assert_eq!(
            again
                .apply_launch_options(&LaunchOptions::default())
                .unwrap(),
            s
        );
        assert_eq!(again.settings(), s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreadable_token_file_is_skipped_and_the_other_options_still_apply() {
        let dir = temp_dir("unreadable");
        let a = app(&dir);
        let s = a
            .apply_launch_options(&LaunchOptions {
                server: Some("ws://127.0.0.1:7070/ws".into()),
                token_file: Some(dir.join("missing")),
                channel: Some("echo".into()),
            })
            .expect("applied");
        assert_eq!(a.token(), None);
        assert_eq!(s.server_url, "ws://127.0.0.1:7070/ws");
        assert_eq!(s.channel.as_deref(), Some("echo"));
        assert_eq!(a.settings(), s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_server_address_at_launch_is_refused_like_in_settings() {
        let dir = temp_dir("bad-server");
        let a = app(&dir);
        let e = a
            .apply_launch_options(&LaunchOptions {
                server: Some("not a url".into()),
                ..LaunchOptions::default()
            })
            .expect_err("refused");
        assert_eq!(e.code, ErrorCode::InvalidSettings);
        let _ = std::fs::remove_dir_all(&dir);
    }

    // One thread: the spawned work runs only when the test awaits.
    #[tokio::test(flavor = "current_thread")]
    async fn a_key_is_taken_when_it_moves_and_its_work_runs_on_the_runtime() {
        let dir = temp_dir("key");
        let a = app(&dir);
        let rt = tokio::runtime::Handle::current();
        a.ptt_key(true, &rt);
        // Taken at once, before any task ran: the button shows the press.
        assert!(lock_held(&a));
        assert_eq!(a.state().ptt, crate::app::PttState::Requesting);
        a.ptt_key(false, &rt);
        assert!(!lock_held(&a));
        // The press's work (no channel joined: refused) runs on the runtime and does
        // not undo the release that came after it.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!lock_held(&a));
        assert_eq!(a.state().ptt, crate::app::PttState::Idle);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn lock_held(a: &App) -> bool {
        super::super::lock(&a.inner.view).held()
    }
}
