//! The cluster's history store: finished transmissions in the Redis every node shares, so
//! a listener on any node can list and replay what was said through another.
//!
//! Keys: `roger:hist:ch:{channel}` (sorted set of ids by start time),
//! `roger:hist:t:{id}` (hash: `info`, the transmission as JSON, and `frames`, the blob
//! of [`encode_frames`]), `roger:hist:channels` (set of channels with anything kept).
//! Only the talker's node records a transmission (it is the one that hears it), so each
//! is written once. The recorder thread calls this synchronously, so it uses Redis's
//! blocking connection, opened again after a failure; while Redis is away a write
//! fails (logged by the recorder) and the transmission is lost, as with a full disk.

use super::store::{decode_frames, encode_frames, HistoryStore, Recorded, StoreError};
use roger_protocol::{ChannelId, Transmission, TransmissionId};
use std::time::Duration;

const CHANNELS: &str = "roger:hist:channels";
const TIMEOUT: Duration = Duration::from_millis(500);

fn channel_key(c: &ChannelId) -> String {
    format!("roger:hist:ch:{c}")
}

fn item_key(id: &TransmissionId) -> String {
    format!("roger:hist:t:{id}")
}

/// History in Redis.
pub struct RedisStore {
    client: redis::Client,
    conn: Option<redis::Connection>,
}

impl RedisStore {
    /// A store on the Redis at `url` (connects on first use).
    pub fn open(url: &str) -> Result<RedisStore, StoreError> {
        Ok(RedisStore {
            client: redis::Client::open(url).map_err(redis_error)?,
            conn: None,
        })
    }

    /// Runs `f` on a connection, opening one if needed; a failed connection is dropped
    /// so the next call opens a fresh one.
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        if self.conn.is_none() {
            let c = self
                .client
                .get_connection_with_timeout(TIMEOUT)
                .map_err(redis_error)?;
            c.set_read_timeout(Some(TIMEOUT)).map_err(redis_error)?;
            c.set_write_timeout(Some(TIMEOUT)).map_err(redis_error)?;
            self.conn = Some(c);
        }
        let conn = self.conn.as_mut().expect("opened above");
        let r = f(conn);
        if r.is_err() {
            self.conn = None;
        }
        r.map_err(redis_error)
    }

    fn remove(&mut self, channel: &ChannelId, ids: &[String]) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ck = channel_key(channel);
        self.with(|c| {
            let mut p = redis::pipe();
            p.cmd("ZREM").arg(&ck).arg(ids).ignore();
            for id in ids {
                p.cmd("DEL")
                    .arg(item_key(&TransmissionId(id.clone())))
                    .ignore();
            }
            p.query::<()>(c)
        })?;
        Ok(ids.len())
    }
}

fn redis_error(e: redis::RedisError) -> StoreError {
    StoreError::Redis(e.to_string())
}

fn info_of(json: &str) -> Result<Transmission, StoreError> {
    let mut t: Transmission =
        serde_json::from_str(json).map_err(|e| StoreError::Damaged(e.to_string()))?;
    t.ended = true; // only finished transmissions are stored
    Ok(t)
}

impl HistoryStore for RedisStore {
    fn put(&mut self, t: &Recorded) -> Result<(), StoreError> {
        let info = serde_json::to_string(&t.info).expect("transmissions serialize");
        let frames = encode_frames(&t.frames);
        let (ck, ik) = (channel_key(&t.info.channel), item_key(&t.info.id));
        self.with(|c| {
            redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(&ik)
                .arg("info")
                .arg(&info)
                .arg("frames")
                .arg(&frames)
                .ignore()
                .cmd("ZADD")
                .arg(&ck)
                .arg(t.info.start_ms)
                .arg(t.info.id.as_str())
                .ignore()
                .cmd("SADD")
                .arg(CHANNELS)
                .arg(t.info.channel.as_str())
                .ignore()
                .query::<()>(c)
        })
    }

    fn list(
        &mut self,
        channel: &ChannelId,
        since_ms: Option<u64>,
    ) -> Result<Vec<Transmission>, StoreError> {
        let ck = channel_key(channel);
        let ids: Vec<String> =
            self.with(|c| redis::cmd("ZRANGE").arg(&ck).arg(0).arg(-1).query(c))?;
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let infos: Vec<Option<String>> = self.with(|c| {
            let mut p = redis::pipe();
            for id in &ids {
                p.cmd("HGET")
                    .arg(item_key(&TransmissionId(id.clone())))
                    .arg("info");
            }
            p.query(c)
        })?;
        let since = since_ms.unwrap_or(0);
        let mut out = Vec::new();
        for info in infos.into_iter().flatten() {
            let t = info_of(&info)?;
            if t.start_ms + t.duration_ms >= since {
                out.push(t);
            }
        }
        out.sort_by(|a, b| (a.start_ms, &a.id).cmp(&(b.start_ms, &b.id)));
        Ok(out)
    }

    fn get(&mut self, id: &TransmissionId) -> Result<Option<Recorded>, StoreError> {
        let ik = item_key(id);
        let (info, frames): (Option<String>, Option<Vec<u8>>) = self.with(|c| {
            redis::cmd("HMGET")
                .arg(&ik)
                .arg("info")
                .arg("frames")
                .query(c)
        })?;
        match (info, frames) {
            (Some(info), Some(frames)) => Ok(Some(Recorded {
                info: info_of(&info)?,
                frames: decode_frames(&frames)?,
            })),
            _ => Ok(None),
        }
    }

    fn channels(&mut self) -> Result<Vec<ChannelId>, StoreError> {
        let mut out: Vec<String> = self.with(|c| redis::cmd("SMEMBERS").arg(CHANNELS).query(c))?;
        out.sort();
        Ok(out.into_iter().map(ChannelId).collect())
    }

    fn prune(
        &mut self,
        channel: &ChannelId,
        keep_last: usize,
        older_than_ms: u64,
    ) -> Result<usize, StoreError> {
        let ck = channel_key(channel);
        // Every node prunes every channel: the same deletions, harmless twice.
        let old: Vec<String> = self.with(|c| {
            redis::cmd("ZRANGEBYSCORE")
                .arg(&ck)
                .arg("-inf")
                .arg(format!("({older_than_ms}"))
                .query(c)
        })?;
        let mut n = self.remove(channel, &old)?;
        let mut left: usize = self.with(|c| redis::cmd("ZCARD").arg(&ck).query(c))?;
        if left > keep_last {
            let extra: Vec<String> = self.with(|c| {
                redis::cmd("ZRANGE")
                    .arg(&ck)
                    .arg(0)
                    .arg((left - keep_last - 1) as i64)
                    .query(c)
            })?;
            let gone = self.remove(channel, &extra)?;
            n += gone;
            left -= gone;
        }
        if left == 0 {
            self.with(|c| {
                redis::cmd("SREM")
                    .arg(CHANNELS)
                    .arg(channel.as_str())
                    .query::<()>(c)
            })?;
        }
        Ok(n)
    }
}
