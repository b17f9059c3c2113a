//! Where the sign-in token lives: the OS credential store (the `keyring` crate: Secret
//! Service on Linux, Credential Manager on Windows, Keychain on macOS), and only when no
//! store answers, a file in the config dir that only its owner can read. Settings say
//! which. The token never goes into `settings.json` (an older file's token is moved out
//! of it at start) and never to the webview.
//!
//! A token is kept for the server it was given for (the entry is named by the server's
//! origin, `wss://host:port`): pointing the settings at another server finds no token,
//! so a changed address can never carry the token to someone else.

use roger_protocol::{ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The credential store's service name (the entry's user name is the server's origin).
pub const SERVICE: &str = "roger";

/// `wss://host:port` of a server address, or `None` for an address that does not parse.
pub fn origin(server_url: &str) -> Option<String> {
    // The first address of a cluster's list names the service.
    let first = super::settings::server_list(server_url)
        .into_iter()
        .next()?;
    let url = url::Url::parse(&first).ok()?;
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// What the private file holds when no credential store answers.
#[derive(Serialize, Deserialize)]
struct FileEntry {
    server: String,
    token: String,
}

/// Where the token is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum TokenStore {
    /// The OS credential store.
    Keyring,
    /// A file only the user can read (no credential store answered).
    File,
}

/// The token's home for one config dir.
#[derive(Debug, Clone)]
pub struct Credentials {
    file: PathBuf,
    /// Whether to try the OS store (tests of the fallback turn it off).
    use_keyring: bool,
}

impl Credentials {
    /// The token of the app whose config dir is `dir`.
    pub fn new(dir: &Path) -> Credentials {
        Credentials {
            file: dir.join("token"),
            use_keyring: std::env::var_os("ROGER_NO_KEYRING").is_none(),
        }
    }

    /// The same, never trying the OS store.
    pub fn file_only(dir: &Path) -> Credentials {
        Credentials {
            use_keyring: false,
            ..Credentials::new(dir)
        }
    }

    fn entry(&self, origin: &str) -> Option<keyring::Entry> {
        if !self.use_keyring {
            return None;
        }
        keyring::Entry::new(SERVICE, origin)
            .map_err(|e| tracing::info!("no credential store: {e}"))
            .ok()
    }

    /// The token saved for `server_url`'s origin and where it is, if there is one.
    pub fn load(&self, server_url: &str) -> Option<(String, TokenStore)> {
        let origin = origin(server_url)?;
        if let Some(entry) = self.entry(&origin) {
            match entry.get_password() {
                Ok(t) if !t.is_empty() => return Some((t, TokenStore::Keyring)),
                Ok(_) | Err(keyring::Error::NoEntry) => {}
                Err(e) => tracing::info!("credential store did not answer: {e}"),
            }
        }
        let text = std::fs::read_to_string(&self.file).ok()?;
        let saved: FileEntry = serde_json::from_str(&text).ok()?;
        (saved.server == origin && !saved.token.is_empty())
            .then_some((saved.token, TokenStore::File))
    }

    /// Keeps `token` for `server_url`'s origin: in the OS store if one answers (and then
    /// no file holds it), else in the private file. Returns where.
    pub fn save(&self, server_url: &str, token: &str) -> Result<TokenStore, ErrorBody> {
        let origin = origin(server_url).ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::InvalidSettings,
                format!("the server address {server_url:?} is not valid"),
            )
        })?;
        if let Some(entry) = self.entry(&origin) {
            match entry.set_password(token) {
                Ok(()) => {
                    remove(&self.file)?;
                    return Ok(TokenStore::Keyring);
                }
                Err(e) => tracing::warn!(
                    "the credential store did not take the token ({e}); keeping it in {} (owner-only)",
                    self.file.display()
                ),
            }
        }
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        }
        let tmp = self.file.with_extension("tmp");
        let text = serde_json::to_vec(&FileEntry {
            server: origin,
            token: token.to_owned(),
        })
        .expect("two strings serialize");
        super::settings::write_private(&tmp, &text)
            .and_then(|()| std::fs::rename(&tmp, &self.file))
            .map_err(|e| io_error(&self.file, e))?;
        Ok(TokenStore::File)
    }

    /// Forgets the token of `server_url`'s origin everywhere it could be (and the
    /// private file whatever it holds).
    pub fn forget(&self, server_url: &str) -> Result<(), ErrorBody> {
        if let Some(entry) = origin(server_url).and_then(|o| self.entry(&o)) {
            match entry.delete_credential() {
                Ok(()) | Err(keyring::Error::NoEntry) => {}
                Err(e) => {
                    tracing::warn!("could not remove the token from the credential store: {e}")
                }
            }
        }
        remove(&self.file)
    }
}

fn remove(path: &Path) -> Result<(), ErrorBody> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path, e)),
    }
}

fn io_error(path: &Path, e: std::io::Error) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::InternalError,
        format!("cannot keep the sign-in token in {}: {e}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_credential_store_the_token_is_a_private_file_and_sign_out_removes_it() {
        let dir = std::env::temp_dir().join(format!("roger-cred-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = Credentials::file_only(&dir);
        let server = "wss://roger.example:7443/ws";
        assert_eq!(c.load(server), None);
        assert_eq!(c.save(server, "eyJ.secret").unwrap(), TokenStore::File);
        assert_eq!(
            c.load(server),
            Some(("eyJ.secret".into(), TokenStore::File))
        );
        // Same origin, another path: the same server.
        assert!(c.load("wss://roger.example:7443/other").is_some());
        // Another server finds nothing: the token is never sent elsewhere.
        assert_eq!(c.load("wss://mallory.example/ws"), None);
        assert_eq!(c.load("ws://roger.example:7443/ws"), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the token file is private: {mode:o}");
        }
        c.forget(server).unwrap();
        assert_eq!(c.load(server), None);
        c.forget(server).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
