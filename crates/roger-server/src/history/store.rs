//! Where finished transmissions are kept: one interface, an embedded SQLite database for
//! a single node (in the data dir, survives restarts) and memory for tests. A store
//! shared by several nodes implements the same four calls.

use bytes::Bytes;
use roger_protocol::{ChannelId, Member, Transmission, TransmissionId, UserId};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

/// A transmission and its frames: (offset from its start in 48 kHz samples, Opus packet).
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// What it was.
    pub info: Transmission,
    /// Its audio, in order.
    pub frames: Vec<(u32, Bytes)>,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused.
    #[error("history database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database directory could not be made.
    #[error("history directory: {0}")]
    Io(#[from] std::io::Error),
    /// The shared store (cluster mode) is unreachable or refused.
    #[error("history in redis: {0}")]
    Redis(String),
    /// A stored row did not decode.
    #[error("a stored transmission is damaged: {0}")]
    Damaged(String),
}

/// Finished transmissions, per channel.
pub trait HistoryStore: Send {
    /// Keeps a finished transmission.
    fn put(&mut self, t: &Recorded) -> Result<(), StoreError>;
    /// `channel`'s transmissions that had not ended before `since_ms` (all without
    /// it), oldest first, without their frames.
    fn list(
        &mut self,
        channel: &ChannelId,
        since_ms: Option<u64>,
    ) -> Result<Vec<Transmission>, StoreError>;
    /// One transmission with its frames.
    fn get(&mut self, id: &TransmissionId) -> Result<Option<Recorded>, StoreError>;
    /// The channels with anything kept.
    fn channels(&mut self) -> Result<Vec<ChannelId>, StoreError>;
    /// Removes `channel`'s transmissions that started before `older_than_ms` and all but
    /// the newest `keep_last`; returns how many went.
    fn prune(
        &mut self,
        channel: &ChannelId,
        keep_last: usize,
        older_than_ms: u64,
    ) -> Result<usize, StoreError>;
}

/// Frames as one blob: per frame its offset (u32 LE), length (u16 LE) and bytes.
pub fn encode_frames(frames: &[(u32, Bytes)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames.iter().map(|(_, p)| p.len() + 6).sum());
    for (offset, payload) in frames {
        out.extend_from_slice(&offset.to_le_bytes());
        // RTP payloads fit one UDP datagram, far below 64 KiB.
        out.extend_from_slice(&(payload.len().min(u16::MAX as usize) as u16).to_le_bytes());
        out.extend_from_slice(&payload[..payload.len().min(u16::MAX as usize)]);
    }
    out
}

/// The inverse of [`encode_frames`].
pub fn decode_frames(blob: &[u8]) -> Result<Vec<(u32, Bytes)>, StoreError> {
    let mut out = Vec::new();
    let mut rest = blob;
    while !rest.is_empty() {
        if rest.len() < 6 {
            return Err(StoreError::Damaged("a frame header is cut short".into()));
        }
        let offset = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let len = usize::from(u16::from_le_bytes([rest[4], rest[5]]));
        if rest.len() < 6 + len {
            return Err(StoreError::Damaged("a frame is cut short".into()));
        }
        out.push((offset, Bytes::copy_from_slice(&rest[6..6 + len])));
        rest = &rest[6 + len..];
    }
    Ok(out)
}

/// The single-node store: `history.sqlite3` in the data dir.
pub struct SqliteStore {
    db: Connection,
}

/// The database's file name in the data dir.
pub const FILE: &str = "history.sqlite3";

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = Connection::open(path)?;
        // WAL: a write does not block a read; NORMAL sync is durable across a process
        // crash (only a power loss can drop the last transactions).
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS transmissions (
                id TEXT PRIMARY KEY,
                channel TEXT NOT NULL,
                user_id TEXT NOT NULL,
                name TEXT NOT NULL,
                start_ms INTEGER NOT NULL,
                duration_ms INTEGER NOT NULL,
                frames BLOB NOT NULL
            );
            CREATE INDEX IF NOT EXISTS transmissions_by_channel
                ON transmissions (channel, start_ms);",
        )?;
        Ok(SqliteStore { db })
    }
}

fn row_info(row: &rusqlite::Row<'_>) -> rusqlite::Result<Transmission> {
    Ok(Transmission {
        id: TransmissionId(row.get(0)?),
        channel: ChannelId(row.get(1)?),
        by: Member {
            user: UserId(row.get(2)?),
            name: row.get(3)?,
        },
        start_ms: row.get::<_, i64>(4)? as u64,
        duration_ms: row.get::<_, i64>(5)? as u64,
        ended: true,
    })
}

impl HistoryStore for SqliteStore {
    fn put(&mut self, t: &Recorded) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT OR REPLACE INTO transmissions
                (id, channel, user_id, name, start_ms, duration_ms, frames)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                t.info.id.as_str(),
                t.info.channel.as_str(),
                t.info.by.user.as_str(),
                t.info.by.name,
                t.info.start_ms as i64,
                t.info.duration_ms as i64,
                encode_frames(&t.frames),
            ],
        )?;
        Ok(())
    }

    fn list(
        &mut self,
        channel: &ChannelId,
        since_ms: Option<u64>,
    ) -> Result<Vec<Transmission>, StoreError> {
        let mut q = self.db.prepare_cached(
            "SELECT id, channel, user_id, name, start_ms, duration_ms FROM transmissions
             WHERE channel = ?1 AND start_ms + duration_ms >= ?2
             ORDER BY start_ms, id",
        )?;
        let rows = q.query_map(
            params![channel.as_str(), since_ms.unwrap_or(0) as i64],
            row_info,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn get(&mut self, id: &TransmissionId) -> Result<Option<Recorded>, StoreError> {
        let mut q = self.db.prepare_cached(
            "SELECT id, channel, user_id, name, start_ms, duration_ms, frames
             FROM transmissions WHERE id = ?1",
        )?;
        let row = q
            .query_row(params![id.as_str()], |row| {
                Ok((row_info(row)?, row.get::<_, Vec<u8>>(6)?))
            })
            .optional()?;
        match row {
            None => Ok(None),
            Some((info, blob)) => Ok(Some(Recorded {
                info,
                frames: decode_frames(&blob)?,
            })),
        }
    }

    fn channels(&mut self) -> Result<Vec<ChannelId>, StoreError> {
        let mut q = self
            .db
            .prepare_cached("SELECT DISTINCT channel FROM transmissions")?;
        let rows = q.query_map([], |row| Ok(ChannelId(row.get(0)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn prune(
        &mut self,
        channel: &ChannelId,
        keep_last: usize,
        older_than_ms: u64,
    ) -> Result<usize, StoreError> {
        let n = self.db.execute(
            "DELETE FROM transmissions WHERE channel = ?1 AND (start_ms < ?2 OR id NOT IN (
                SELECT id FROM transmissions WHERE channel = ?1
                ORDER BY start_ms DESC, id DESC LIMIT ?3))",
            params![
                channel.as_str(),
                older_than_ms as i64,
                keep_last.min(i64::MAX as usize) as i64
            ],
        )?;
        Ok(n)
    }
}

/// Transmissions in memory (tests, and a hub built without a data dir).
#[derive(Default)]
pub struct MemoryStore {
    kept: Vec<Recorded>,
}

impl HistoryStore for MemoryStore {
    fn put(&mut self, t: &Recorded) -> Result<(), StoreError> {
        self.kept.retain(|k| k.info.id != t.info.id);
        self.kept.push(t.clone());
        self.kept
            .sort_by(|a, b| (a.info.start_ms, &a.info.id).cmp(&(b.info.start_ms, &b.info.id)));
        Ok(())
    }

    fn list(
        &mut self,
        channel: &ChannelId,
        since_ms: Option<u64>,
    ) -> Result<Vec<Transmission>, StoreError> {
        let since = since_ms.unwrap_or(0);
        Ok(self
            .kept
            .iter()
            .filter(|k| &k.info.channel == channel)
            .filter(|k| k.info.start_ms + k.info.duration_ms >= since)
            .map(|k| k.info.clone())
            .collect())
    }

    fn get(&mut self, id: &TransmissionId) -> Result<Option<Recorded>, StoreError> {
        Ok(self.kept.iter().find(|k| &k.info.id == id).cloned())
    }

    fn channels(&mut self) -> Result<Vec<ChannelId>, StoreError> {
        let mut out: Vec<ChannelId> = self.kept.iter().map(|k| k.info.channel.clone()).collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn prune(
        &mut self,
        channel: &ChannelId,
        keep_last: usize,
        older_than_ms: u64,
    ) -> Result<usize, StoreError> {
        let before = self.kept.len();
        self.kept
            .retain(|k| &k.info.channel != channel || k.info.start_ms >= older_than_ms);
        let in_channel = self
            .kept
            .iter()
            .filter(|k| &k.info.channel == channel)
            .count();
        let mut extra = in_channel.saturating_sub(keep_last);
        // Oldest first: the first `extra` of this channel go.
        self.kept.retain(|k| {
            if extra > 0 && &k.info.channel == channel {
                extra -= 1;
                false
            } else {
                true
            }
        });
        Ok(before - self.kept.len())
    }
}
