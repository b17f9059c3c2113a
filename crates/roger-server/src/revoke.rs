//! Revocation without a restart: `roger-server revoke --user U` records "U's tokens
//! issued up to now are void" in `<data dir>/revoked.json`; the running server reads the
//! file within a second (it checks its modification time), ends U's sessions and refuses
//! those tokens at `hello` and `resume`. The file outlives restarts: a server starting on
//! the same data dir refuses them too.

use crate::auth::Claims;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The file's name in the data dir.
pub const FILE: &str = "revoked.json";

/// Why the revocation file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// It could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not what this server writes.
    #[error("{path} is not a revocation list: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// Users whose tokens issued at or before a moment are void.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocations {
    /// User id (`sub`) -> Unix seconds: tokens with `iat` at or before it are refused.
    pub users: BTreeMap<String, u64>,
}

impl Revocations {
    /// Reads `path`; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<Revocations, RevokeError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| RevokeError::Parse {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Revocations::default()),
            Err(source) => Err(RevokeError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes `path` atomically (a reader never sees half a file).
    pub fn save(&self, path: &Path) -> Result<(), RevokeError> {
        let io = |source| RevokeError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).expect("a map of strings serializes");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Voids `user`'s tokens issued at or before `at` (Unix seconds).
    pub fn revoke(&mut self, user: &str, at: u64) {
        let e = self.users.entry(user.to_owned()).or_insert(at);
        *e = (*e).max(at);
    }

    /// Whether these claims were revoked. A token without `iat` of a revoked user is
    /// refused: nothing shows it was issued after the revocation.
    pub fn refuses(&self, claims: &Claims) -> bool {
        self.users
            .get(&claims.sub)
            .is_some_and(|&at| claims.iat.is_none_or(|iat| iat <= at))
    }
}

/// Watches `path` and hands every new version to `apply` (checked every `every`). A file
/// that cannot be read is logged and the last good list stays in force.
pub async fn watch(path: PathBuf, every: Duration, apply: impl Fn(Revocations) + Send + 'static) {
    let stamp = |p: &Path| -> Option<(SystemTime, u64)> {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    let mut seen = stamp(&path);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match Revocations::load(&path) {
            Ok(r) => {
                tracing::info!(users = r.users.len(), "revocation list read");
                apply(r);
            }
            Err(e) => tracing::error!("revocation list not read, the previous one stays: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, iat: Option<u64>) -> Claims {
        Claims {
            sub: sub.into(),
            iat,
            exp: 9_999_999_999,
            ..Default::default()
        }
    }

    #[test]
    fn tokens_issued_up_to_the_revocation_are_refused_and_later_ones_not() {
        let mut r = Revocations::default();
        r.revoke("alice", 1_000);
        assert!(r.refuses(&claims("alice", Some(999))));
        assert!(r.refuses(&claims("alice", Some(1_000))));
        assert!(r.refuses(&claims("alice", None)));
        assert!(!r.refuses(&claims("alice", Some(1_001))));
        assert!(!r.refuses(&claims("bob", Some(5))));
        // A later revocation moves the line; an earlier one does not move it back.
        r.revoke("alice", 2_000);
        r.revoke("alice", 1_500);
        assert!(r.refuses(&claims("alice", Some(1_999))));
    }

    #[test]
    fn the_list_survives_a_round_trip_through_its_file() {
        let dir = std::env::temp_dir().join(format!("roger-revoke-{}", std::process::id()));
        let path = dir.join(FILE);
        assert_eq!(Revocations::load(&path).unwrap(), Revocations::default());
        let mut r = Revocations::default();
        r.revoke("alice", 42);
        r.save(&path).unwrap();
        assert_eq!(Revocations::load(&path).unwrap(), r);
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            Revocations::load(&path),
            Err(RevokeError::Parse { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
