//! Adaptive jitter buffer: a pure state machine fed packets and time.
//!
//! Packets go in with their arrival instant ([`JitterBuffer::push`]); the playout clock
//! (the output device's consumption, a call whenever it needs the next 20 ms) takes
//! decisions out
//! ([`JitterBuffer::pop`]): decode this packet, recover it from the next packet's FEC,
//! conceal it (Opus PLC), or play silence. Nothing here reads a clock.
//!
//! - **Start of a talk spurt**: buffer until the target delay is reached, then play.
//! - **Target delay**: one frame plus a margin from the measured interarrival jitter
//!   (RFC 3550 estimator, in frames), between `min_frames` and `max_frames`. An underrun
//!   within 5 s of another raises it by a frame; it falls back a frame per 5 s calm.
//! - **Start margin**: how long a packet should wait, at least, beyond the target: the
//!   95th percentile of how late packets come relative to the earliest of the last 5 s,
//!   from a histogram that forgets (NetEq's relative-delay estimate and its defaults:
//!   the RFC 3550 mean hides the one late packet in a second that a percentile sees,
//!   while a lone late packet, a scheduling hiccup, does not hold the delay up for
//!   seconds as a peak-hold would), never less than 15 ms (`MIN_MARGIN`). The playout
//!   puts this much silence ahead of a spurt's first packet
//!   ([`JitterBuffer::spurt_start`]); latency control keeps it afterwards.
//! - **Loss**: a missing packet whose successor is here is recovered from the
//!   successor's in-band FEC; otherwise concealed. After `max_conceal` concealed frames
//!   in a row with nothing buffered, the spurt has ended: back to buffering.
//! - **Late packets** (behind the playout point) are dropped and counted.
//! - **Clock drift, backlogs and cushion: time-scale changes, not frames.** The sender's
//!   clock and the device's differ slightly, and a burst or a device that stalls leaves
//!   packets waiting longer than they need. Each played packet says how far ahead of
//!   need the playout is: what it waited plus how late it came relative to the earliest
//!   of the history (its jitter), the same for every packet whatever its jitter, so jitter
//!   alone never moves it; drift and stalls do. Against the wanted delay (the start
//!   margin plus the target's extra frames, plus the device's callback period): 4 ms or
//!   more too much for every packet of a 3 s window and the playout is asked to shorten
//!   the next frames by that much (in a quiet frame, unless it is 15 ms or more); too
//!   little, when a packet came with under 2 ms to spare (at once, in speech too) or the
//!   target asks half a frame more, to lengthen them ([`JitterBuffer::scale`]). The
//!   playout does it by a pitch period at a time where speech allows (`stretch.rs`) and
//!   says what it did ([`JitterBuffer::scaled`]). Concealment is for packets that did not come: a buffer
//!   that runs dry mid-spurt conceals (an underrun, counted once the late packet shows
//!   it was one) and raises the target. Only a backlog of 60 ms or more (a device that
//!   stopped taking audio for a while) is dropped in whole frames.
//! - **End of a spurt**: the frames concealed after a spurt's last packet (Opus PLC
//!   fading out) are counted as its `tail`, not as concealment or an underrun.

use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Samples per frame at 48 kHz (RTP timestamp units per frame).
const FRAME_TS: f64 = 960.0;
const FRAME: Duration = Duration::from_millis(20);
/// The relative-delay histogram's buckets: 0.5 ms each (in RTP timestamp units), the
/// last one for a frame or more.
const BUCKET_TS: f64 = 24.0;
const BUCKETS: usize = 41;
/// Where the histogram's mass starts, before any packet says: [9.5, 10) ms, a cautious
/// first guess (under the start margin's floor, [`MIN_MARGIN`], which rules at first).
const INITIAL_BUCKET: usize = 19;
/// Per packet, each bucket keeps this much of its weight and the packet's own bucket
/// gains the rest (NetEq's forget factor: a packet's weight falls to 5 % in ~3.5 s).
const FORGET: f64 = 0.983;
/// The start margin is this quantile of the relative delays (NetEq's).
const QUANTILE: f64 = 0.95;
/// Relative delay is measured against the earliest packet of this long. NetEq uses 2 s;
/// longer here because a sender's capture clock that runs slow against ours makes its
/// packets later and later until a capture block comes early (a sawtooth, measured at
/// 10 ms every ~3 s through PulseAudio): a history shorter than that period sees only
/// part of the lateness and the margin falls short of it, so the playout ran dry
/// before every step.
const DELAY_HISTORY: Duration = Duration::from_secs(5);
/// How long latency control measures the packets' waits before it shortens what they
/// could spare: longer than the 10 ms sawtooth a drifting capture clock makes (~3 s), so
/// the cushion its slow part needs is not taken away in its fast part.
const WINDOW: Duration = Duration::from_secs(3);
/// How long without an underrun or a loss before a raised target comes down a frame:
/// as long as an underrun counts towards raising it (a second one within 5 s), so a
/// hiccup every 4 s keeps the frame it needs instead of underrunning each time; about
/// as long as the relative-delay histogram remembers a late packet (its weight falls
/// to 5 % in ~3.5 s at [`FORGET`]). It was 10 s: 20 ms more for seconds after a
/// moment that had passed.
const CALM: Duration = UNDERRUN_MEMORY;
/// A second underrun within this long raises the target.
const UNDERRUN_MEMORY: Duration = Duration::from_secs(5);
/// After an underrun, the window that decides whether its frame can go.
const RECOVERY_WINDOW: Duration = Duration::from_millis(200);

/// The start margin is never less: a talker's sound server hands it audio in blocks
/// (10 ms through PulseAudio) and a frame leaves when its last block comes, so when the
/// phase between blocks and frames slips, or the capture clock runs slow for a while,
/// every packet from then on comes later, at any moment and with nothing before it to
/// learn from. Measured on loopback: +8 ms steps in the middle of a transmission, and
/// ramps of 10-12 ms over a few seconds before a block comes early (a sawtooth). With
/// 10 ms, a third of the clean-path runs lengthened a frame mid-speech (a 5 ms jump);
/// with 15 ms none did, for 5 ms more mouth-to-ear latency (BENCHMARKS.md).
const MIN_MARGIN: Duration = Duration::from_millis(15);
/// Delay beyond what is wanted that is not worth a time-scale change: every change moves
/// the rest of what is said, so small ones are left alone.
const MIN_CHANGE: Duration = Duration::from_millis(4);
/// A packet that came with less than this to spare says the playout is about to run dry.
const LOW_WAIT: Duration = Duration::from_millis(2);
/// Delay beyond what is wanted that is taken back in speech too, not only in quiet
/// frames (the frame an underrun inserted, a burst's backlog).
const URGENT_EXCESS: Duration = Duration::from_millis(15);
/// A backlog this large (a device that stalled) goes in whole frames, not by stretching.
const BIG_BACKLOG: Duration = Duration::from_millis(60);

/// What to play for the next 20 ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode this packet.
    Packet(Bytes),
    /// The packet is lost: decode its FEC copy carried in this (the next) packet.
    Fec(Bytes),
    /// The packet is lost: conceal it (Opus PLC).
    Conceal,
    /// Nothing to play (between transmissions, or buffering).
    Silence,
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct JitterConfig {
    /// Smallest target delay in frames (1 = 20 ms).
    pub min_frames: u32,
    /// Largest target delay in frames.
    pub max_frames: u32,
    /// Concealed frames in a row, with nothing buffered, that end a talk spurt.
    pub max_conceal: u32,
    /// Packets kept at most (older ones are dropped to make room).
    pub capacity: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min_frames: 1,
            max_frames: 10,
            max_conceal: 5,
            capacity: 100,
        }
    }
}

/// Counters for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct JitterStats {
    /// Packets decoded in order.
    pub played: u64,
    /// Frames recovered from FEC.
    pub fec: u64,
    /// Frames concealed for packets that were lost or came too late (not a spurt's tail).
    pub concealed: u64,
    /// Packets that came after their playout time.
    pub late: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// Frames dropped unplayed: a backlog of 60 ms or more, or a full buffer.
    pub dropped: u64,
    /// Times the buffer ran dry mid-spurt (a packet came after it was due).
    pub underruns: u64,
    /// Frames the playout lengthened (a pitch period, or a pad in a quiet frame).
    pub stretched: u64,
    /// Frames the playout shortened.
    pub compressed: u64,
    /// Frames concealed after a spurt's last packet (the decoder fading out).
    pub tail: u64,
    /// The latest any packet came relative to the earliest of its last 5 s, ms (rounded
    /// up): the most jitter the path showed. A packet later than the playout's margin
    /// (15 ms at least) runs it dry unless a time-scale change made room first.
    pub jitter_max_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the first packets of a spurt.
    Buffering,
    /// Playing; `next` is the extended sequence number due next.
    Playing { next: u64 },
}

/// A packet held, with when it came and how late relative to the earliest of the
/// history (RTP timestamp units).
#[derive(Debug)]
struct Held {
    payload: Bytes,
    arrived: Instant,
    late: f64,
}

/// The jitter buffer.
#[derive(Debug)]
pub struct JitterBuffer {
    config: JitterConfig,
    state: State,
    /// Packets by extended sequence number.
    packets: BTreeMap<u64, Held>,
    /// Highest extended sequence number seen (for unwrapping 16-bit numbers).
    highest: Option<u64>,
    /// When the first packet of the current buffering period arrived.
    buffering_since: Option<Instant>,
    /// RFC 3550 interarrival jitter, in RTP timestamp units.
    jitter: f64,
    /// Transit time (arrival less send time, in RTP timestamp units, from an arbitrary
    /// origin) of the packets of the last [`DELAY_HISTORY`] that came earlier than all
    /// after them, with their arrival: increasing, the front the earliest.
    transits: VecDeque<(Instant, f64)>,
    /// The latest packet's transit time.
    transit: f64,
    /// How late packets came relative to the earliest of their history: a histogram of
    /// [`BUCKET_TS`] buckets whose weights sum to 1 and forget ([`FORGET`]).
    delays: [f64; BUCKETS],
    /// Packets counted into the histogram (its first ones weigh more, as in NetEq).
    counted: u32,
    last_transit: Option<(Instant, u32)>,
    target: u32,
    concealed_run: u32,
    /// Over the current window ([`WINDOW`], or [`RECOVERY_WINDOW`] after an underrun):
    /// the least any played packet was ahead of need (its wait plus its lateness), and
    /// when the window started. Both start afresh with each spurt and each change.
    min_ahead: Option<Duration>,
    window_start: Option<Instant>,
    /// The current window is the short one after an underrun ([`RECOVERY_WINDOW`]).
    recovering: bool,
    /// The next packet played is a spurt's first.
    starting: bool,
    /// Samples (48 kHz) the playout is asked to add (> 0) or remove (< 0).
    debt: i64,
    /// The change asked for is needed now (about to run dry, or a large backlog): the
    /// playout makes it in speech too, not only in a quiet frame.
    urgent: bool,
    /// How often the playout takes audio (a device callback's period).
    granularity: Duration,
    last_underrun: Option<Instant>,
    last_loss: Option<Instant>,
    calm_since: Option<Instant>,
    stats: JitterStats,
}

fn samples(d: Duration) -> i64 {
    (d.as_secs_f64() * 48_000.0).round() as i64
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(config: JitterConfig) -> JitterBuffer {
        JitterBuffer {
            target: config.min_frames.max(1),
            config,
            state: State::Buffering,
            packets: BTreeMap::new(),
            highest: None,
            buffering_since: None,
            jitter: 0.0,
            transits: VecDeque::new(),
            transit: 0.0,
            delays: {
                let mut h = [0.0; BUCKETS];
                h[INITIAL_BUCKET] = 1.0;
                h
            },
            counted: 0,
            last_transit: None,
            concealed_run: 0,
            min_ahead: None,
            window_start: None,
            recovering: false,
            starting: false,
            debt: 0,
            urgent: false,
            granularity: Duration::ZERO,
            last_underrun: None,
            last_loss: None,
            calm_since: None,
            stats: JitterStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The current target delay in frames.
    pub fn target_frames(&self) -> u32 {
        self.target
    }

    /// Packets held.
    pub fn buffered(&self) -> usize {
        self.packets.len()
    }

    fn extend(&mut self, seq: u16) -> u64 {
        let Some(h) = self.highest else {
            // Start well above zero so a packet from just before does not underflow.
            let e = (1u64 << 32) + u64::from(seq);
            self.highest = Some(e);
            return e;
        };
        let base = h & !0xffff;
        let candidates = [base.wrapping_sub(0x10000), base, base + 0x10000];
        let e = candidates
            .into_iter()
            .map(|c| c + u64::from(seq))
            .min_by_key(|c| c.abs_diff(h))
            .unwrap_or(base + u64::from(seq));
        if e > h {
            self.highest = Some(e);
        }
        e
    }

    /// A packet arrived at `now`.
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, payload: Bytes) {
        let e = self.extend(seq);
        let mut late = 0.0;
        // RFC 3550 A.8: J += (|D| - J) / 16, D the change in transit time.
        if let Some((t0, ts0)) = self.last_transit {
            let arrival = now.saturating_duration_since(t0).as_secs_f64() * 48_000.0;
            let sent = f64::from(timestamp.wrapping_sub(ts0) as i32);
            let change = arrival - sent;
            let d = change.abs();
            // A pause between transmissions is not jitter.
            if d < 48_000.0 {
                self.jitter += (d - self.jitter) / 16.0;
                self.transit += change;
                late = self.relative_delay(now);
            } else {
                self.transits.clear();
            }
        }
        self.last_transit = Some((now, timestamp));
        let late_ms = (late / 48.0).ceil() as u64;
        self.stats.jitter_max_ms = self.stats.jitter_max_ms.max(late_ms);
        if let State::Playing { next } = self.state {
            if e < next {
                self.stats.late += 1;
                return;
            }
        }
        if self.packets.contains_key(&e) {
            self.stats.duplicates += 1;
            return;
        }
        self.packets.insert(
            e,
            Held {
                payload,
                arrived: now,
                late,
            },
        );
        while self.packets.len() > self.config.capacity {
            self.packets.pop_first();
            self.stats.dropped += 1;
        }
        if self.state == State::Buffering && self.buffering_since.is_none() {
            self.buffering_since = Some(now);
        }
    }

    /// Records how late the latest packet came relative to the earliest of the last
    /// [`DELAY_HISTORY`], and returns it (RTP timestamp units).
    fn relative_delay(&mut self, now: Instant) -> f64 {
        while self
            .transits
            .front()
            .is_some_and(|&(t, _)| now.saturating_duration_since(t) > DELAY_HISTORY)
        {
            self.transits.pop_front();
        }
        // Only packets earlier than every later one can be the earliest of some
        // window: the deque keeps those (increasing transits), so its front is the
        // earliest of the history.
        while self
            .transits
            .back()
            .is_some_and(|&(_, x)| x >= self.transit)
        {
            self.transits.pop_back();
        }
        self.transits.push_back((now, self.transit));
        let earliest = self.transits.front().map_or(self.transit, |&(_, x)| x);
        let late = (self.transit - earliest).max(0.0);
        let bucket = ((late / BUCKET_TS) as usize).min(BUCKETS - 1);
        // The first packets weigh more (as NetEq's start forget weight does): the first
        // guess weighs as two packets, so within a second the histogram says what this
        // path does instead of remembering the guess for 3.5 s.
        self.counted = self.counted.saturating_add(1);
        let n = f64::from(self.counted);
        let forget = FORGET.min((n + 1.0) / (n + 2.0));
        for w in &mut self.delays {
            *w *= forget;
        }
        self.delays[bucket] += 1.0 - forget;
        late
    }

    /// What the jitter estimate asks for, in frames.
    fn wanted(&self) -> u32 {
        // One frame, plus enough for twice the mean deviation (about p95 for this
        // estimator) beyond the half frame the first frame already covers on average.
        let extra = ((2.0 * self.jitter - FRAME_TS / 2.0) / FRAME_TS)
            .ceil()
            .max(0.0) as u32;
        (1 + extra).clamp(self.config.min_frames.max(1), self.config.max_frames)
    }

    /// Start once the first packet has waited the target delay beyond the frame it fills
    /// itself (the next pop is up to 20 ms away), or once more than the target's worth is
    /// here.
    fn start_due(&self, since: Instant, now: Instant) -> bool {
        let target = self.target.max(self.wanted());
        let waited = now.saturating_duration_since(since) + FRAME >= FRAME * target;
        waited || self.packets.len() as u32 > target
    }

    /// A talk spurt waiting to start: `None` when there is none (playing, or nothing
    /// buffered), else whether a [`pop`](Self::pop) at `now` would start it.
    pub fn spurt_start(&self, now: Instant) -> Option<bool> {
        match (self.state, self.buffering_since) {
            (State::Buffering, Some(since)) if !self.packets.is_empty() => {
                Some(self.start_due(since, now))
            }
            _ => None,
        }
    }

    /// How long a packet should wait before it is due, at least: the playout puts this
    /// much silence ahead of a spurt's first frame, so the next packets are due this much
    /// after they are expected. How late packets come ([`lateness`](Self::lateness)),
    /// and never less than [`MIN_MARGIN`].
    pub fn start_margin(&self) -> Duration {
        self.lateness().max(MIN_MARGIN)
    }

    /// The 95th percentile of the recent relative delays (the upper edge of its bucket),
    /// plus 1 ms; at most a frame.
    fn lateness(&self) -> Duration {
        let total: f64 = self.delays.iter().sum();
        let mut seen = 0.0;
        let bucket = self
            .delays
            .iter()
            .position(|w| {
                seen += w;
                seen >= QUANTILE * total
            })
            .unwrap_or(BUCKETS - 1);
        let late = Duration::from_secs_f64((bucket + 1) as f64 * BUCKET_TS / 48_000.0);
        (late + Duration::from_millis(1)).min(FRAME)
    }

    /// How far ahead of need a packet should be played: the start margin, plus the
    /// target's frames beyond the first.
    fn wanted_ahead(&self) -> Duration {
        self.start_margin() + FRAME * self.target.saturating_sub(1)
    }

    /// The playout takes audio every `period` (its device's callbacks): a packet is due
    /// at the callback that needs its first sample, so shortening by `x` brings packets'
    /// due times up to `x` plus a period earlier. Latency control keeps that period.
    pub fn set_granularity(&mut self, period: Duration) {
        self.granularity = period.min(FRAME);
    }

    /// Playing a spurt (not buffering or idle).
    pub fn playing(&self) -> bool {
        matches!(self.state, State::Playing { .. })
    }

    /// The time-scale change the playout is asked for, in 48 kHz samples: more than zero
    /// to lengthen what it plays next by that much, less than zero to shorten it. It
    /// applies it to decoded packets as it can and reports with
    /// [`scaled`](Self::scaled).
    pub fn scale(&self) -> i64 {
        if self.playing() {
            self.debt
        } else {
            0
        }
    }

    /// Whether the change [`scale`](Self::scale) asks for is needed now (made in speech
    /// if need be) or can wait for a quiet frame, where nobody hears it.
    pub fn scale_urgent(&self) -> bool {
        self.urgent
    }

    /// The playout lengthened (`samples` > 0) or shortened (< 0) what it plays by that
    /// much at `now`: packets are due that much later or earlier from here. The next
    /// measurement starts afresh, so it only sees waits after the change.
    pub fn scaled(&mut self, now: Instant, samples: i64) {
        if samples == 0 {
            return;
        }
        if samples > 0 {
            self.stats.stretched += 1;
        } else {
            self.stats.compressed += 1;
        }
        let left = self.debt - samples;
        // Done (or overdone by the rest of a pitch period): nothing more is owed.
        self.debt = if left.signum() == self.debt.signum() {
            left
        } else {
            0
        };
        self.min_ahead = None;
        self.window_start = Some(now);
    }

    /// The next 20 ms at `now`.
    pub fn pop(&mut self, now: Instant) -> Playout {
        match self.state {
            State::Buffering => {
                let Some(since) = self.buffering_since else {
                    return Playout::Silence;
                };
                self.target = self.target.max(self.wanted());
                if !self.start_due(since, now) {
                    return Playout::Silence;
                }
                let Some((&first, _)) = self.packets.first_key_value() else {
                    return Playout::Silence;
                };
                self.state = State::Playing { next: first };
                self.starting = true;
                self.buffering_since = None;
                self.concealed_run = 0;
                self.debt = 0;
                // What the last spurt's packets waited says nothing about this one's.
                self.min_ahead = None;
                self.window_start = None;
                self.recovering = false;
                self.pop(now)
            }
            State::Playing { .. } => {
                self.adapt(now);
                let State::Playing { next } = self.state else {
                    return Playout::Silence;
                };
                if let Some(held) = self.packets.remove(&next) {
                    self.state = State::Playing { next: next + 1 };
                    self.stats.played += 1;
                    let run = std::mem::take(&mut self.concealed_run);
                    if run > 0 {
                        self.underrun(now, run);
                    } else if !std::mem::take(&mut self.starting) {
                        // (A spurt's first packet plays behind the start margin the
                        // playout puts ahead of it: its wait says nothing.)
                        self.measure(now, &held);
                    }
                    return Playout::Packet(held.payload);
                }
                if self.packets.is_empty() {
                    // Nothing here: the packet is late or lost, or the spurt ended.
                    // Conceal without moving on, so a late packet still plays (this
                    // adds a frame of delay, which is what the path needs now). Whether
                    // it was an underrun or the spurt's tail shows later.
                    self.concealed_run += 1;
                    if self.concealed_run > self.config.max_conceal {
                        self.stats.tail += u64::from(self.concealed_run - 1);
                        self.state = State::Buffering;
                        self.concealed_run = 0;
                        self.debt = 0;
                        return Playout::Silence;
                    }
                    return Playout::Conceal;
                }
                // The packet is missing but later ones are here: it is lost.
                self.state = State::Playing { next: next + 1 };
                let run = std::mem::take(&mut self.concealed_run);
                if run > 0 {
                    self.underrun(now, run);
                }
                // A second loss within 5 s: keep a frame of cushion so the next single
                // loss can be recovered from its successor's FEC. (A lone one may well
                // have been a packet late, not lost, as a hiccup makes it.)
                if self
                    .last_loss
                    .is_some_and(|t| now.saturating_duration_since(t) < UNDERRUN_MEMORY)
                {
                    self.target = self.target.max(2).min(self.config.max_frames);
                    self.calm_since = None;
                }
                self.last_loss = Some(now);
                if let Some(p) = self.packets.get(&(next + 1)) {
                    self.stats.fec += 1;
                    return Playout::Fec(p.payload.clone());
                }
                self.stats.concealed += 1;
                Playout::Conceal
            }
        }
    }

    /// The buffer ran dry for `run` frames (concealed) before a packet came: an underrun.
    fn underrun(&mut self, now: Instant, run: u32) {
        self.stats.underruns += 1;
        self.stats.concealed += u64::from(run);
        // A second underrun within 5 s: the path needs more cushion. A lone one (a
        // scheduling hiccup) gets the frame its conceal added, which latency control
        // takes back once the short window after it shows the packets do not need it.
        if self
            .last_underrun
            .is_some_and(|t| now.saturating_duration_since(t) < UNDERRUN_MEMORY)
        {
            self.target = (self.target + 1).min(self.config.max_frames);
            self.calm_since = None;
        }
        self.last_underrun = Some(now);
        self.recovering = true;
        self.window_start = Some(now);
        self.min_ahead = None;
        self.debt = 0;
    }

    /// A packet played on time: how far ahead of need was it?
    fn measure(&mut self, now: Instant, held: &Held) {
        let waited = now.saturating_duration_since(held.arrived);
        let ahead = waited + Duration::from_secs_f64(held.late / 48_000.0);
        self.min_ahead = Some(self.min_ahead.map_or(ahead, |m| m.min(ahead)));
        // About to run dry, or short of a frame the target asks for: lengthen by what is
        // missing (a sender slower than the device, or a raised target). A packet that
        // came with almost nothing to spare is the surest sign, whatever the estimate
        // says (its lateness may be a drift the history takes for jitter): at least half
        // the floor margin more, in speech too.
        let wanted = self.wanted_ahead();
        let short = wanted.saturating_sub(ahead);
        if self.debt <= 0 {
            if waited < LOW_WAIT {
                self.debt = samples(short.max(MIN_MARGIN / 2));
                self.urgent = true;
            } else if short >= FRAME / 2 {
                self.debt = samples(short);
                self.urgent = false;
            }
        }
    }

    /// Latency control while playing.
    fn adapt(&mut self, now: Instant) {
        let State::Playing { next } = self.state else {
            return;
        };
        self.target = self.target.max(self.wanted());
        // If every packet of the last window (3 s, or 200 ms after an underrun) was
        // further ahead of need than wanted (and a device callback's period), by 4 ms or
        // more, shorten by that much: a
        // burst's backlog, a fast sender clock, the frame an underrun inserted, cushion
        // left over from a hiccup or from the first guess at the margin. A backlog of
        // 60 ms or more (a device that stopped taking audio) goes in whole frames first.
        let window = *self.window_start.get_or_insert(now);
        let length = if self.recovering {
            RECOVERY_WINDOW
        } else {
            WINDOW
        };
        if now.saturating_duration_since(window) >= length {
            self.recovering = false;
            if let Some(ahead) = self.min_ahead {
                let mut excess = ahead.saturating_sub(self.wanted_ahead() + self.granularity);
                if excess >= BIG_BACKLOG {
                    let mut next = next;
                    while excess >= FRAME && self.packets.len() > 1 {
                        if let Some((k, _)) = self.packets.pop_first() {
                            self.stats.dropped += 1;
                            next = next.max(k + 1);
                            excess -= FRAME;
                        }
                    }
                    self.state = State::Playing { next };
                }
                if excess >= MIN_CHANGE && self.debt >= 0 {
                    self.debt = -samples(excess);
                    self.urgent = excess >= URGENT_EXCESS;
                }
            }
            self.window_start = Some(now);
            self.min_ahead = None;
        }
        // Calm for a while: lower the target toward what the jitter asks for.
        if self.target > self.wanted() {
            let since = *self.calm_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= CALM {
                self.target -= 1;
                self.calm_since = Some(now);
            }
        } else {
            self.calm_since = None;
        }
    }
}

#[cfg(test)]
mod tests;
