//! Channel history: every transmission is recorded as it is forwarded, kept per channel
//! (the last N, at most T old), listed and fetched by members, downloadable as Ogg Opus.
//!
//! The forwarding path only appends each packet's payload (a reference-counted `Bytes`)
//! to a [`Tap`]'s buffer: a push under a lock nobody holds for longer than a swap, and
//! no wake-up. A channel send per packet woke the recorder thread for each one (two
//! futex calls and a context switch, ~2 % of the server's CPU in `roger-bench history`).
//! A recorder thread takes the buffer every [`BATCH`] and owns everything else:
//! transmissions in progress, the store (a blocking database, so a thread of its own
//! rather than the async runtime), retention, and the answers to `history` and
//! `history_fetch`, for which it takes the buffer first, so a fetch right after a
//! release sees the finished transmission.
//!
//! Files: the recorder (this file), the stores (`store.rs`: the one [`HistoryStore`]
//! interface, SQLite for a single node and memory for tests), Ogg Opus (`ogg.rs`).

pub mod ogg;
pub mod redis_store;
pub mod store;

use bytes::Bytes;
pub use redis_store::RedisStore;
use roger_protocol::{ChannelId, ErrorBody, ErrorCode, Member, Transmission, TransmissionId};
use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
pub use store::{HistoryStore, MemoryStore, Recorded, SqliteStore, StoreError};
use tokio::sync::oneshot;

/// How much of a channel's history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// At most this many transmissions (the oldest are evicted).
    pub keep_last: usize,
    /// None older than this.
    pub max_age: Duration,
}

/// What the forwarding path tells the recorder.
#[derive(Debug)]
enum Event {
    /// Somebody was granted the floor (a new talk spurt).
    Begin {
        channel: Arc<ChannelId>,
        spurt: u64,
        by: Member,
    },
    /// One of the holder's packets was forwarded.
    Frame {
        channel: Arc<ChannelId>,
        spurt: u64,
        /// When it arrived, Unix ms.
        at_ms: u64,
        /// Its RTP timestamp.
        ts: u32,
        payload: Bytes,
    },
    /// The floor was released, revoked or lost.
    End { channel: Arc<ChannelId>, spurt: u64 },
}

enum Cmd {
    List {
        channel: ChannelId,
        since_ms: Option<u64>,
        reply: oneshot::Sender<Result<Vec<Transmission>, ErrorBody>>,
    },
    Fetch {
        id: TransmissionId,
        reply: oneshot::Sender<Result<Recorded, ErrorBody>>,
    },
    Stop,
}

/// How often the recorder takes what the taps buffered.
pub const BATCH: Duration = Duration::from_millis(100);
/// Events buffered at most (a stalled store): more are dropped, and counted.
const MAX_BUFFERED: usize = 200_000;

type Buffer = Arc<Mutex<Vec<Event>>>;

/// A channel router's handle on the recorder.
#[derive(Clone)]
pub struct Tap {
    /// Shared: each packet's event costs a reference count, not a string copy.
    channel: Arc<ChannelId>,
    buffer: Buffer,
}

impl Tap {
    /// A talk spurt begins: `by` holds the floor.
    pub fn begin(&self, spurt: u64, by: &Member) {
        self.send(Event::Begin {
            channel: self.channel.clone(),
            spurt,
            by: by.clone(),
        });
    }

    /// The spurt's holder sent this packet (and it was forwarded).
    pub fn frame(&self, spurt: u64, ts: u32, payload: &Bytes) {
        if payload.is_empty() {
            return;
        }
        self.send(Event::Frame {
            channel: self.channel.clone(),
            spurt,
            at_ms: unix_ms(),
            ts,
            payload: payload.clone(),
        });
    }

    /// The spurt ended.
    pub fn end(&self, spurt: u64) {
        self.send(Event::End {
            channel: self.channel.clone(),
            spurt,
        });
    }

    fn send(&self, e: Event) {
        let mut b = crate::sync::lock(&self.buffer);
        // A stalled store loses frames, never a transmission's begin or end.
        if b.len() < MAX_BUFFERED || !matches!(e, Event::Frame { .. }) {
            b.push(e);
        } else {
            metrics::counter!("roger_history_dropped_total").increment(1);
        }
    }
}

/// The recorder: taps for the channels that record, and the queries.
pub struct History {
    tx: mpsc::Sender<Cmd>,
    buffer: Buffer,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    retention: HashMap<ChannelId, Retention>,
}

impl History {
    /// Starts the recorder thread on `store`, recording the channels in `retention`.
    pub fn start(
        store: Box<dyn HistoryStore>,
        retention: HashMap<ChannelId, Retention>,
    ) -> History {
        let (tx, rx) = mpsc::channel();
        let kept = retention.clone();
        let buffer = Buffer::default();
        let taken = buffer.clone();
        let thread = std::thread::Builder::new()
            .name("roger-history".into())
            .spawn(move || Recorder::new(store, kept).run(rx, taken))
            .expect("a thread can be started");
        History {
            tx,
            buffer,
            thread: std::sync::Mutex::new(Some(thread)),
            retention,
        }
    }

    /// The tap for `channel`, if it records.
    pub fn tap(&self, channel: &ChannelId) -> Option<Tap> {
        self.retention.contains_key(channel).then(|| Tap {
            channel: Arc::new(channel.clone()),
            buffer: self.buffer.clone(),
        })
    }

    /// `channel`'s kept transmissions (with those in progress), oldest first.
    pub async fn list(
        &self,
        channel: &ChannelId,
        since_ms: Option<u64>,
    ) -> Result<Vec<Transmission>, ErrorBody> {
        let (reply, rx) = oneshot::channel();
        self.ask(Cmd::List {
            channel: channel.clone(),
            since_ms,
            reply,
        })?;
        rx.await.map_err(|_| recorder_gone())?
    }

    /// A transmission and its frames (so far, if it is in progress).
    pub async fn fetch(&self, id: &TransmissionId) -> Result<Recorded, ErrorBody> {
        let (reply, rx) = oneshot::channel();
        self.ask(Cmd::Fetch {
            id: id.clone(),
            reply,
        })?;
        rx.await.map_err(|_| recorder_gone())?
    }

    fn ask(&self, cmd: Cmd) -> Result<(), ErrorBody> {
        self.tx.send(cmd).map_err(|_| recorder_gone())
    }

    /// Stores what is still in progress (the drain has ended every floor by now) and
    /// stops the recorder thread.
    pub fn stop(&self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Some(t) = crate::sync::lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

fn recorder_gone() -> ErrorBody {
    ErrorBody::new(ErrorCode::InternalError, "the history recorder has stopped")
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A transmission being recorded.
struct Pending {
    id: TransmissionId,
    by: Member,
    start_ms: u64,
    first_ts: u32,
    /// (offset from `first_ts` in samples, Opus packet)
    frames: Vec<(u32, Bytes)>,
}

impl Pending {
    fn duration_ms(&self) -> u64 {
        let Some((last, payload)) = self.frames.last() else {
            return 0;
        };
        u64::from(last + ogg::packet_samples(payload)) / 48
    }

    fn info(&self, channel: &ChannelId, ended: bool) -> Transmission {
        Transmission {
            id: self.id.clone(),
            channel: channel.clone(),
            by: self.by.clone(),
            start_ms: self.start_ms,
            duration_ms: self.duration_ms(),
            ended,
        }
    }
}

/// The recorder thread's state.
struct Recorder {
    store: Box<dyn HistoryStore>,
    retention: HashMap<ChannelId, Retention>,
    /// Spurts granted, waiting for their first frame: (channel, spurt) -> talker.
    granted: HashMap<(Arc<ChannelId>, u64), Member>,
    /// Spurts with audio: (channel, spurt) -> the transmission so far.
    pending: HashMap<(Arc<ChannelId>, u64), Pending>,
}

/// A frame whose timestamp is this far (samples) from where its arrival says it belongs
/// is a jump in the talker's clock (10 s: beyond any jitter, and beyond the audio a
/// client sends at once when a slow grant arrives).
const JUMP: u32 = 480_000;

/// How often expired transmissions are removed when nothing else prunes them.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Recorder {
    fn new(store: Box<dyn HistoryStore>, retention: HashMap<ChannelId, Retention>) -> Recorder {
        Recorder {
            store,
            retention,
            granted: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Cmd>, buffer: Buffer) {
        self.prune_all();
        let mut pruned = Instant::now();
        let mut taken = Vec::new();
        loop {
            let cmd = rx.recv_timeout(BATCH);
            // What the taps buffered comes first: a query sees every event before it.
            std::mem::swap(&mut taken, &mut *crate::sync::lock(&buffer));
            for e in taken.drain(..) {
                self.event(e);
            }
            match cmd {
                Ok(Cmd::List {
                    channel,
                    since_ms,
                    reply,
                }) => {
                    let _ = reply.send(self.list(&channel, since_ms));
                }
                Ok(Cmd::Fetch { id, reply }) => {
                    let _ = reply.send(self.fetch(&id));
                }
                Ok(Cmd::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                self.prune_all();
                pruned = Instant::now();
            }
        }
        // Whatever is still in progress is kept as it is.
        let left: Vec<_> = self.pending.keys().cloned().collect();
        for key in left {
            self.finish(key);
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Begin { channel, spurt, by } => {
                self.granted.insert((channel, spurt), by);
            }
            Event::Frame {
                channel,
                spurt,
                at_ms,
                ts,
                payload,
            } => {
                let key = (channel, spurt);
                if let Some(p) = self.pending.get_mut(&key) {
                    let mut offset = ts.wrapping_sub(p.first_ts);
                    // Where the arrival time says it belongs. A talker whose timestamps
                    // jump (a rebuilt send transport starts a new random clock) is
                    // rebased there, so a transmission never spans hours of nothing.
                    let expected = at_ms.saturating_sub(p.start_ms).saturating_mul(48);
                    if u64::from(offset).abs_diff(expected) > u64::from(JUMP) {
                        let after = p
                            .frames
                            .last()
                            .map_or(0, |(o, b)| o + ogg::packet_samples(b).max(1));
                        offset = (expected.min(u64::from(u32::MAX / 2)) as u32).max(after);
                        p.first_ts = ts.wrapping_sub(offset);
                    }
                    // A packet from before the last one (reordered) is not kept: offsets
                    // stay ordered.
                    if p.frames.last().is_none_or(|(o, _)| offset > *o) {
                        p.frames.push((offset, payload));
                        metrics::counter!("roger_history_frames_total").increment(1);
                    }
                } else if let Some(by) = self.granted.remove(&key) {
                    let id = TransmissionId(format!("{at_ms:x}-{:08x}", rand::random::<u32>()));
                    self.pending.insert(
                        key,
                        Pending {
                            id,
                            by,
                            start_ms: at_ms,
                            first_ts: ts,
                            frames: vec![(0, payload)],
                        },
                    );
                    metrics::counter!("roger_history_frames_total").increment(1);
                }
            }
            Event::End { channel, spurt } => {
                let key = (channel, spurt);
                self.granted.remove(&key);
                self.finish(key);
            }
        }
    }

    fn finish(&mut self, key: (Arc<ChannelId>, u64)) {
        let Some(p) = self.pending.remove(&key) else {
            return;
        };
        let channel = key.0;
        let recorded = Recorded {
            info: p.info(&channel, true),
            frames: p.frames,
        };
        match self.store.put(&recorded) {
            Ok(()) => {
                metrics::counter!("roger_history_transmissions_total").increment(1);
                tracing::debug!(id = %recorded.info.id, channel = %channel, by = %recorded.info.by.user,
                    duration_ms = recorded.info.duration_ms, "transmission recorded");
            }
            Err(e) => {
                metrics::counter!("roger_history_store_errors_total").increment(1);
                tracing::error!(channel = %channel, "a transmission could not be stored: {e}");
            }
        }
        self.prune(&channel);
    }

    fn prune(&mut self, channel: &ChannelId) {
        let Some(r) = self.retention.get(channel).copied() else {
            return;
        };
        let older_than = unix_ms().saturating_sub(r.max_age.as_millis() as u64);
        match self.store.prune(channel, r.keep_last, older_than) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(channel = %channel, evicted = n, "history pruned"),
            Err(e) => tracing::error!(channel = %channel, "history not pruned: {e}"),
        }
    }

    fn prune_all(&mut self) {
        let channels: Vec<_> = self.retention.keys().cloned().collect();
        for c in channels {
            self.prune(&c);
        }
        // A channel that no longer records (or is gone) keeps nothing said before.
        match self.store.channels() {
            Ok(stored) => {
                for c in stored.iter().filter(|c| !self.retention.contains_key(*c)) {
                    match self.store.prune(c, 0, u64::MAX) {
                        Ok(n) => {
                            tracing::info!(channel = %c, removed = n, "history removed: the channel no longer records")
                        }
                        Err(e) => tracing::error!(channel = %c, "history not removed: {e}"),
                    }
                }
            }
            Err(e) => tracing::error!("history channels not listed: {e}"),
        }
    }

    fn list(
        &mut self,
        channel: &ChannelId,
        since_ms: Option<u64>,
    ) -> Result<Vec<Transmission>, ErrorBody> {
        if !self.retention.contains_key(channel) {
            return Ok(Vec::new());
        }
        self.prune(channel);
        let mut out = self.store.list(channel, since_ms).map_err(store_error)?;
        out.extend(
            self.pending
                .iter()
                .filter(|((c, _), _)| **c == *channel)
                .map(|(_, p)| p.info(channel, false)),
        );
        out.sort_by(|a, b| (a.start_ms, &a.id).cmp(&(b.start_ms, &b.id)));
        Ok(out)
    }

    fn fetch(&mut self, id: &TransmissionId) -> Result<Recorded, ErrorBody> {
        if let Some(((channel, _), p)) = self.pending.iter().find(|(_, p)| &p.id == id) {
            return Ok(Recorded {
                info: p.info(channel, false),
                frames: p.frames.clone(),
            });
        }
        let found = self.store.get(id).map_err(store_error)?;
        // Expired but not yet pruned counts as gone.
        let found = found.filter(|r| {
            self.retention.get(&r.info.channel).is_some_and(|ret| {
                r.info.start_ms >= unix_ms().saturating_sub(ret.max_age.as_millis() as u64)
            })
        });
        found.ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::TransmissionNotFound,
                format!("no transmission \"{id}\" is kept"),
            )
        })
    }
}

fn store_error(e: StoreError) -> ErrorBody {
    tracing::error!("history store: {e}");
    ErrorBody::new(ErrorCode::InternalError, "the history store failed")
}

#[cfg(test)]
mod tests;
