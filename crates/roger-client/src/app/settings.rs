//! The desktop app's settings: one JSON file in the app's config directory. The sign-in
//! token is not among them (see `credentials.rs`).
//!
//! Saved atomically (write a temporary file, then rename). A file that cannot be read is
//! kept beside the new one (`settings.json.bad`) rather than overwritten, and the error
//! says so: a bad file loses nothing.

use crate::audio::device::DeviceChoice;
use roger_protocol::{ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The default push-to-talk key (a key nothing else uses by default).
pub const DEFAULT_HOTKEY: &str = "F8";

/// Light, dark, or what the system says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum Theme {
    /// Follow the system.
    #[default]
    System,
    /// Light.
    Light,
    /// Dark.
    Dark,
}

/// What the user chose; everything has a default so older files keep loading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(default)]
pub struct Settings {
    /// `ws://` or `wss://` address of the server.
    pub server_url: String,
    /// The user ticked "unencrypted connection": `ws://` to a server that is not on
    /// this machine is allowed (token and voice signaling travel in the clear).
    pub allow_unencrypted: bool,
    /// The channel to join after connecting.
    pub channel: Option<String>,
    /// The global push-to-talk shortcut (`F8`, `Ctrl+Shift+Space`).
    pub hotkey: String,
    /// The microphone.
    pub input: DeviceChoice,
    /// The speaker.
    pub output: DeviceChoice,
    /// Radio tones (talk permit, busy, end of transmission).
    pub tones: bool,
    /// The window's theme.
    pub theme: Theme,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server_url: String::new(),
            allow_unencrypted: false,
            channel: None,
            hotkey: DEFAULT_HOTKEY.to_owned(),
            input: DeviceChoice::Default,
            output: DeviceChoice::Default,
            tones: true,
            theme: Theme::System,
        }
    }
}

/// The addresses in the server setting: one, or several nodes of a cluster separated by
/// commas or spaces (the first is tried first; the others when it cannot be reached).
pub fn server_list(setting: &str) -> Vec<String> {
    setting
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Settings {
    /// The file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("settings.json")
    }

    /// Loads the settings from `dir`; a missing file gives the defaults. A file that does
    /// not parse is moved to `settings.json.bad` and reported; the defaults are used.
    pub fn load(dir: &Path) -> (Settings, Option<ErrorBody>) {
        let (settings, _, problem) = Self::load_with_legacy_token(dir);
        (settings, problem)
    }

    /// [`Settings::load`], also returning the `token` an older version kept in the file
    /// (the caller moves it to the credential store and saves the settings without it).
    pub fn load_with_legacy_token(dir: &Path) -> (Settings, Option<String>, Option<ErrorBody>) {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (Settings::default(), None, None)
            }
            Err(e) => {
                return (
                    Settings::default(),
                    None,
                    Some(settings_error(format!(
                        "cannot read {}: {e}",
                        path.display()
                    ))),
                )
            }
        };
        let legacy_token = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("token")?.as_str().map(str::to_owned))
            .filter(|t| !t.is_empty());
        match serde_json::from_str(&text) {
            Ok(s) => (s, legacy_token, None),
            Err(e) => {
                let bad = path.with_extension("json.bad");
                let kept = std::fs::rename(&path, &bad).is_ok();
                let message = if kept {
                    format!(
                        "{} is not valid ({e}); it was kept as {} and the defaults are used",
                        path.display(),
                        bad.display()
                    )
                } else {
                    format!(
                        "{} is not valid ({e}); the defaults are used",
                        path.display()
                    )
                };
                (Settings::default(), None, Some(invalid(message)))
            }
        }
    }

    /// Checks what a user typed; the message says what is wrong.
    pub fn validate(&self) -> Result<(), ErrorBody> {
        for address in server_list(&self.server_url) {
            let url = url::Url::parse(&address)
                .map_err(|e| invalid(format!("the server address {address:?}: {e}")))?;
            if !matches!(url.scheme(), "ws" | "wss") {
                return Err(invalid(format!(
                    "the server address must start with ws:// or wss://, not {}://",
                    url.scheme()
                )));
            }
            if url.scheme() == "ws" && !is_loopback(&url) && !self.allow_unencrypted {
                return Err(invalid(
                    "ws:// sends your token and everything you say to the server unencrypted: \
                     use wss://, or tick \"Allow an unencrypted connection\" if you must",
                ));
            }
        }
        if self.hotkey.trim().is_empty() {
            return Err(invalid("the push-to-talk key cannot be empty"));
        }
        Ok(())
    }

    /// Saves to `dir` (created if needed) atomically.
    pub fn save(&self, dir: &Path) -> Result<(), ErrorBody> {
        std::fs::create_dir_all(dir)
            .map_err(|e| settings_error(format!("cannot create {}: {e}", dir.display())))?;
        let path = Self::path(dir);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| settings_error(format!("cannot encode the settings: {e}")))?;
        write_private(&tmp, text.as_bytes())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| settings_error(format!("cannot write {}: {e}", path.display())))
    }
}

/// Whether the URL's host is this machine.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Writes a file only its owner can read (settings, or the token where no credential
/// store answers).
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The settings could not be read or written (the file system, not the user).
fn settings_error(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::InternalError, message)
}

/// What the user typed (or the file holds) is not a valid setting.
fn invalid(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::InvalidSettings, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("roger-settings-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn missing_file_is_the_defaults_and_a_saved_file_loads_back() {
        let d = dir("roundtrip");
        let (s, err) = Settings::load(&d);
        assert_eq!(s, Settings::default());
        assert!(err.is_none());
        let s = Settings {
            server_url: "ws://127.0.0.1:7070/ws".into(),
            allow_unencrypted: false,
            channel: Some("general".into()),
            hotkey: "Ctrl+Shift+Space".into(),
            input: DeviceChoice::Id("pulse:vmic".into()),
            output: DeviceChoice::Default,
            tones: false,
            theme: Theme::Dark,
        };
        s.save(&d).unwrap();
        assert_eq!(Settings::load(&d), (s, None));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(Settings::path(&d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the settings file is private: {mode:o}");
        }
        assert!(!std::fs::read_to_string(Settings::path(&d))
            .unwrap()
            .contains("token"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_older_file_s_token_is_handed_over_to_be_moved_out() {
        let d = dir("legacy");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            Settings::path(&d),
            r#"{"server_url":"wss://h/ws","token":"eyJ.old"}"#,
        )
        .unwrap();
        let (s, token, err) = Settings::load_with_legacy_token(&d);
        assert!(err.is_none());
        assert_eq!(s.server_url, "wss://h/ws");
        assert_eq!(token.as_deref(), Some("eyJ.old"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn unencrypted_ws_is_refused_off_this_machine_unless_ticked() {
        for local in [
            "ws://127.0.0.1:7070/ws",
            "ws://localhost:7070/ws",
            "ws://[::1]:7070/ws",
        ] {
            let s = Settings {
                server_url: local.into(),
                ..Settings::default()
            };
            assert!(s.validate().is_ok(), "{local}");
        }
        let mut s = Settings {
            server_url: "ws://198.18.0.5:7070/ws".into(),
            ..Settings::default()
        };
        let e = s.validate().unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidSettings);
        assert!(e.message.contains("unencrypted"), "{e:?}");
        s.allow_unencrypted = true;
        assert!(s.validate().is_ok());
        s.server_url = "wss://198.18.0.5/ws".into();
        s.allow_unencrypted = false;
        assert!(s.validate().is_ok());
    }

    #[test]
    fn a_corrupt_file_is_kept_aside_and_reported() {
        let d = dir("corrupt");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(Settings::path(&d), "{ not json").unwrap();
        let (s, err) = Settings::load(&d);
        assert_eq!(s, Settings::default());
        let err = err.expect("reported");
        assert_eq!(err.code, ErrorCode::InvalidSettings);
        assert!(err.message.contains("settings.json.bad"), "{}", err.message);
        assert_eq!(
            std::fs::read_to_string(d.join("settings.json.bad")).unwrap(),
            "{ not json"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_older_file_with_fewer_fields_loads_with_defaults() {
        let d = dir("older");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(Settings::path(&d), r#"{"server_url":"ws://h/ws"}"#).unwrap();
        let (s, err) = Settings::load(&d);
        assert!(err.is_none());
        assert_eq!(s.server_url, "ws://h/ws");
        assert_eq!(s.hotkey, DEFAULT_HOTKEY);
        assert!(s.tones);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_addresses_and_empty_hotkeys_are_refused_with_a_reason() {
        let mut s = Settings {
            server_url: "http://example/ws".into(),
            ..Settings::default()
        };
        let err = s.validate().unwrap_err();
        assert!(err.message.contains("ws://"));
        // The user's input, not a fault in Roger: the form shows it, no Rejoin offered.
        assert_eq!(err.code, ErrorCode::InvalidSettings);
        assert_eq!(err.code.action(), roger_protocol::ErrorAction::None);
        s.server_url = "wss://a.example/ws, wss://b.example/ws".into();
        assert!(s.validate().is_ok(), "several nodes of a cluster");
        assert_eq!(server_list(&s.server_url).len(), 2);
        s.server_url = "wss://a.example/ws, nope".into();
        assert!(s.validate().is_err(), "every address is checked");
        s.server_url = "not a url".into();
        assert_eq!(s.validate().unwrap_err().code, ErrorCode::InvalidSettings);
        s.server_url = "wss://roger.example/ws".into();
        assert!(s.validate().is_ok());
        s.hotkey = " ".into();
        assert_eq!(s.validate().unwrap_err().code, ErrorCode::InvalidSettings);
    }
}
