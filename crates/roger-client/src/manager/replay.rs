//! Missed while reconnecting: once the connection is back after an outage, the client
//! asks each joined channel's history for what it carried from the last audio this
//! client received there to the moment its media was back, and plays the missed part
//! through the sink's replay path.
//!
//! - Live always wins: the replay holds while live audio arrives on any channel (and
//!   while this client talks), and continues after.
//! - A transmission partly heard live is replayed from where the listener lost it, and
//!   only up to where live audio took over; a part once replayed is never replayed
//!   again, whatever later outages ask.
//! - The window is in the server's clock (history times are), estimated from pings:
//!   the pong with the lowest round trip gives the offset, and half that round trip is
//!   the path's one-way delay (a packet heard at T here left the server that much
//!   earlier).
//!
//! The arithmetic ([`missed_part`], [`ServerClock`], [`Pacer`]) is pure and tested on
//! virtual time; [`run`] is the task that fetches, decodes and paces.

use super::state::{lock, unix_ms, Shared};
use crate::audio::{Decoder, FRAME_SAMPLES};
use crate::event::{ClientEvent, Status};
use roger_protocol::*;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Less missed than this is not worth a tone and a note.
pub const MIN_REPLAY_MS: u64 = 200;
/// Live audio within this long holds the replay (a talk spurt's pauses and its jitter
/// buffer's tail are still "live").
pub const LIVE_HOLD: Duration = Duration::from_millis(400);
const FRAME: Duration = Duration::from_millis(20);

/// The server's clock as seen from here.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerClock {
    /// Server time minus local time, ms; with the round trip it was measured over.
    best: Option<(i64, u64, Instant)>,
}

/// A sample older than this is replaced by any newer one (clocks drift).
const CLOCK_SAMPLE_LIFE: Duration = Duration::from_secs(60);

impl ServerClock {
    /// A ping sent at `sent` and answered at `received` (local Unix ms) carried
    /// `server_ms`.
    pub fn sample(&mut self, sent: u64, received: u64, server_ms: u64, now: Instant) {
        let rtt = received.saturating_sub(sent);
        let offset = server_ms as i64 - (sent + rtt / 2) as i64;
        let better = match self.best {
            None => true,
            Some((_, best_rtt, at)) => {
                let age = now.saturating_duration_since(at);
                // An old best gives way to a comparable sample (clocks drift), or to any
                // after five minutes (the path changed); never to one slow pong.
                rtt <= best_rtt
                    || (age > CLOCK_SAMPLE_LIFE && rtt <= 2 * best_rtt + 50)
                    || age > 5 * CLOCK_SAMPLE_LIFE
            }
        };
        if better {
            self.best = Some((offset, rtt, now));
        }
    }

    /// A server time on this machine's clock.
    pub fn local(&self, server_ms: u64) -> u64 {
        let offset = self.best.map_or(0, |(o, _, _)| o);
        (server_ms as i64 - offset).max(0) as u64
    }

    /// A local Unix ms time in the server's clock, moved back by the one-way delay: when
    /// the server sent what arrived here at `local_ms`.
    pub fn server_sent(&self, local_ms: u64) -> u64 {
        let (offset, rtt) = self.best.map_or((0, 0), |(o, r, _)| (o, r));
        (local_ms as i64 + offset - (rtt / 2) as i64).max(0) as u64
    }
}

/// Outages and what has been replayed.
#[derive(Default)]
pub struct ReplayState {
    /// The server's clock.
    pub clock: ServerClock,
    /// Connected at least once (a first connection misses nothing).
    connected_once: bool,
    /// When the current outage began (local Unix ms), while it lasts.
    outage_since: Option<u64>,
    /// When each channel's audio was last heard as the outage began (its heard time
    /// after that may be live audio that came back before the status did).
    heard_before: HashMap<ChannelId, u64>,
    /// How far into each transmission audio was replayed (or heard live), ms.
    replayed: HashMap<TransmissionId, u64>,
    /// A replay task runs: a new window waits for it (and is then fetched afresh).
    running: bool,
    /// Bumped by a stop: a replay of an older generation ends.
    generation: u64,
    /// Windows waiting for the running task: (channel, from, to) in server ms.
    queued: Vec<(ChannelId, u64, u64)>,
}

/// The part of `t` to replay for an outage from `from` to `to` (server ms), given what
/// was replayed of it before: `(from_ms, to_ms)` into the transmission, or `None`.
pub fn missed_part(
    t: &Transmission,
    from: u64,
    to: u64,
    replayed_until: Option<u64>,
) -> Option<(u64, u64)> {
    if t.start_ms >= to {
        return None; // it began once media was back: heard live
    }
    let end = t.start_ms + t.duration_ms;
    if end <= from {
        return None; // over before the last audio heard
    }
    let a = from
        .saturating_sub(t.start_ms)
        .max(replayed_until.unwrap_or(0));
    let b = to.min(end) - t.start_ms;
    (b >= a + MIN_REPLAY_MS).then_some((a, b))
}

/// Paces frames in real time: the first `lead + 1` at once (a speaker's queue then
/// holds `lead` frames ahead and never runs dry between two), then one per 20 ms; a
/// hold starts it afresh.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    next: Instant,
    lead: u32,
    burst: u32,
}

impl Pacer {
    /// Starting now, `lead` frames ahead.
    pub fn new(now: Instant, lead: u32) -> Pacer {
        Pacer {
            next: now,
            lead,
            burst: lead,
        }
    }

    /// When the next frame is due to be handed over.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// One frame handed over.
    pub fn sent(&mut self) {
        if self.burst > 0 {
            self.burst -= 1;
        } else {
            self.next += FRAME;
        }
    }

    /// Held (live audio) until `now`: the pace starts again from now.
    pub fn held_until(&mut self, now: Instant) {
        if now > self.next {
            *self = Pacer::new(now, self.lead);
        }
    }
}

/// Whether live audio holds a replay: heard within [`LIVE_HOLD`], or we talk.
pub fn live_now(now_ms: u64, live_at_ms: u64, talking: bool) -> bool {
    talking || (live_at_ms > 0 && now_ms.saturating_sub(live_at_ms) < LIVE_HOLD.as_millis() as u64)
}

/// Called on every status change: an outage begins, or ends (then the replay starts).
pub(super) fn status_changed(shared: &Arc<Shared>, old: &Status, new: &Status) {
    let up = |s: &Status| matches!(s, Status::Connected | Status::Degraded { .. });
    let now = unix_ms();
    // What the channels heard, taken before the replay state's lock (one lock at a time).
    #[allow(clippy::type_complexity)]
    let (joined, heard_at, joined_at, resumed_at): (
        Vec<ChannelId>,
        HashMap<ChannelId, u64>,
        HashMap<ChannelId, u64>,
        HashMap<ChannelId, u64>,
    ) = {
        let c = lock(&shared.channels);
        (
            c.by_id.keys().cloned().collect(),
            c.heard_at.clone(),
            c.joined_at.clone(),
            c.resumed_at.clone(),
        )
    };
    let mut r = lock(&shared.replay);
    if up(new) {
        let Some(since) = r.outage_since.take() else {
            r.connected_once = true;
            return;
        };
        if !r.connected_once {
            r.connected_once = true;
            return;
        }
        // The window per channel: from the last audio heard there before the outage (or
        // the join, or the outage's start) to now, or to when live audio came back there
        // if that was earlier; both in the server's clock.
        let heard_before = std::mem::take(&mut r.heard_before);
        let windows: Vec<(ChannelId, u64, u64)> = joined
            .into_iter()
            .map(|ch| {
                let from = heard_before
                    .get(&ch)
                    .or(joined_at.get(&ch))
                    .copied()
                    .unwrap_or(since);
                // Live audio that came back before the status did took over there.
                let until = resumed_at
                    .get(&ch)
                    .copied()
                    .filter(|&back| back > from)
                    .map_or(now, |back| back.min(now));
                let window = (r.clock.server_sent(from), r.clock.server_sent(until));
                (ch, window.0, window.1)
            })
            .collect();
        tracing::info!(
            outage_ms = now.saturating_sub(since),
            channels = windows.len(),
            "connected again: asking what was missed"
        );
        r.queued.extend(windows);
        if !r.running {
            r.running = true;
            drop(r);
            tokio::spawn(run(Arc::downgrade(shared)));
        }
    } else if matches!(new, Status::Failed { .. } | Status::Offline) {
        // Given up (or closed): what is said from here on waits in the history, marked
        // unplayed, for the user; only an outage the client heals by itself replays.
        r.outage_since = None;
    } else if up(old) {
        r.outage_since = Some(now);
        r.heard_before = heard_at;
    }
}

/// One transmission's missed part, decoded.
struct Missed {
    channel: ChannelId,
    id: TransmissionId,
    by: Member,
    from_ms: u64,
    to_ms: u64,
    pcm: Vec<i16>,
}

/// Replays every queued window, one after another, until none is left. Each missed part
/// is fetched and decoded just before it plays (a long outage's backlog is never all in
/// memory); one that cannot be fetched is skipped, not the rest.
async fn run(shared: Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let (windows, generation) = {
            let mut r = lock(&s.replay);
            if r.queued.is_empty() {
                r.running = false;
                return;
            }
            (std::mem::take(&mut r.queued), r.generation)
        };
        for (channel, from, to) in windows {
            let parts = match missed_parts(&s, &channel, from, to).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e, "what was missed could not be listed");
                    continue;
                }
            };
            for (t, a, b) in parts {
                if lock(&s.replay).generation != generation {
                    break; // stopped
                }
                match fetch(&s, &t, a, b).await {
                    Ok(m) => play(&s, m, generation).await,
                    Err(e) => {
                        tracing::warn!(id = %t.id, error = %e, "a missed transmission could not be fetched")
                    }
                }
            }
        }
    }
}

/// Stops a replay in progress and drops what waits (the user pressed Stop).
pub(super) fn stop(shared: &Shared) {
    let mut r = lock(&shared.replay);
    r.generation += 1;
    r.queued.clear();
}

/// `channel`'s transmissions over the window, each with its missed part (ms into it).
async fn missed_parts(
    shared: &Arc<Shared>,
    channel: &ChannelId,
    from: u64,
    to: u64,
) -> Result<Vec<(Transmission, u64, u64)>, ErrorBody> {
    let me = lock(&shared.session)
        .welcome
        .as_ref()
        .map(|w| w.user.user.clone());
    let list = match shared
        .request(Request::History {
            channel: channel.clone(),
            since_ms: Some(from),
        })
        .await?
    {
        Response::History { transmissions, .. } => transmissions,
        other => return Err(super::unexpected("history", other)),
    };
    let r = lock(&shared.replay);
    Ok(list
        .into_iter()
        // Our own words are not played back to us.
        .filter(|t| Some(&t.by.user) != me.as_ref())
        .filter_map(|t| {
            let (a, b) = missed_part(&t, from, to, r.replayed.get(&t.id).copied())?;
            Some((t, a, b))
        })
        .collect())
}

/// One missed part, fetched and decoded.
async fn fetch(
    shared: &Arc<Shared>,
    t: &Transmission,
    a: u64,
    b: u64,
) -> Result<Missed, ErrorBody> {
    let frames = match shared
        .request(Request::HistoryFetch {
            id: t.id.clone(),
            from_ms: a,
        })
        .await?
    {
        Response::HistoryAudio { frames, .. } => frames,
        other => return Err(super::unexpected("history_audio", other)),
    };
    Ok(Missed {
        channel: t.channel.clone(),
        id: t.id.clone(),
        by: t.by.clone(),
        from_ms: a,
        to_ms: b,
        pcm: decode_frames(&frames, a, b)?,
    })
}

/// The longest stretch decoded from one transmission (a server's max talk time is a
/// minute by default): a broken or hostile answer cannot make the decoder fill memory.
const MAX_DECODED: u64 = 48_000 * 600;

/// Decodes a transmission's frames between `a` and `b` ms into it onto one timeline
/// (a short gap is concealed, a long one stays silent).
pub fn decode_frames(frames: &[HistoryFrame], a: u64, b: u64) -> Result<Vec<i16>, ErrorBody> {
    use base64::Engine;
    let mut decoder = Decoder::new()?;
    let start = a.saturating_mul(48);
    let end = b.saturating_mul(48);
    let mut pcm: Vec<i16> = Vec::new();
    for f in frames {
        let ts = u64::from(f.ts);
        if ts < start {
            continue;
        }
        if ts >= end || ts - start > MAX_DECODED {
            break;
        }
        let at = (ts - start) as usize;
        // A gap before it: concealed for up to 5 frames, the rest silent.
        let mut concealed = 0;
        while pcm.len() + FRAME_SAMPLES <= at && concealed < 5 {
            pcm.extend(decoder.conceal()?);
            concealed += 1;
        }
        // (A frame that overlaps the one before wins.)
        pcm.resize(at, 0);
        // A frame that is not base64 or not Opus (any talker can send garbage) is
        // concealed like a lost one, not the end of the replay.
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&f.opus)
            .ok()
            .and_then(|packet| decoder.decode(&packet).ok());
        match decoded {
            Some(frame) => pcm.extend(frame),
            None => pcm.extend(decoder.conceal()?),
        }
    }
    pcm.truncate(usize::try_from(end - start).unwrap_or(usize::MAX));
    Ok(pcm)
}

/// Plays one missed part in real time, holding while live audio plays, until done or
/// stopped (the generation changed).
async fn play(shared: &Arc<Shared>, m: Missed, generation: u64) {
    shared.emit(ClientEvent::MissedReplay {
        id: m.id.clone(),
        channel: m.channel.clone(),
        by: m.by.clone(),
        missed_ms: m.to_ms - m.from_ms,
        from_ms: m.from_ms,
    });
    let lead = lock(&shared.sink).replay_lead();
    let mut pacer = Pacer::new(Instant::now(), lead);
    let mut held = false;
    let mut played = 0usize;
    for frame in m.pcm.chunks(FRAME_SAMPLES) {
        loop {
            let talking = lock(&shared.talk).is_some();
            let live_at = shared.counters.live_at_ms.load(Ordering::Relaxed);
            if !live_now(unix_ms(), live_at, talking) {
                break;
            }
            if !held {
                held = true;
                shared.emit(ClientEvent::ReplayPaused {
                    channel: m.channel.clone(),
                    paused: true,
                });
            }
            tokio::time::sleep(FRAME).await;
        }
        if held {
            held = false;
            pacer.held_until(Instant::now());
            shared.emit(ClientEvent::ReplayPaused {
                channel: m.channel.clone(),
                paused: false,
            });
        }
        tokio::time::sleep_until(pacer.due().into()).await;
        if shared.closing.load(Ordering::Relaxed) || lock(&shared.replay).generation != generation {
            return;
        }
        lock(&shared.sink).replay(&m.channel, frame);
        pacer.sent();
        played += frame.len();
        // Replayed this far: a later outage does not play it again.
        let until = m.from_ms + (played as u64) / 48;
        lock(&shared.replay).replayed.insert(m.id.clone(), until);
    }
    shared.emit(ClientEvent::ReplayDone {
        channel: m.channel.clone(),
        played_ms: played as u64 / 48,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(start_ms: u64, duration_ms: u64) -> Transmission {
        Transmission {
            id: "t".into(),
            channel: "general".into(),
            by: Member {
                user: "alice".into(),
                name: "Alice".into(),
            },
            start_ms,
            duration_ms,
            ended: true,
        }
    }

    #[test]
    fn the_missed_part_is_what_fell_between_the_last_audio_and_media_back() {
        // Said wholly inside the outage: all of it.
        assert_eq!(
            missed_part(&t(1_000, 6_000), 500, 9_000, None),
            Some((0, 6_000))
        );
        // Heard the first 2 s live: from there.
        assert_eq!(
            missed_part(&t(1_000, 6_000), 3_000, 9_000, None),
            Some((2_000, 6_000))
        );
        // Still going when media came back: up to then (the rest is heard live).
        assert_eq!(
            missed_part(&t(1_000, 6_000), 500, 5_000, None),
            Some((0, 4_000))
        );
        // Over before the last audio heard, or begun after media was back: nothing.
        assert_eq!(missed_part(&t(1_000, 6_000), 7_000, 9_000, None), None);
        assert_eq!(missed_part(&t(9_000, 6_000), 500, 9_000, None), None);
        // Already replayed up to 5 s: only the rest; all of it: nothing.
        assert_eq!(
            missed_part(&t(1_000, 6_000), 500, 9_000, Some(5_000)),
            Some((5_000, 6_000))
        );
        assert_eq!(missed_part(&t(1_000, 6_000), 500, 9_000, Some(6_000)), None);
        // A sliver is not worth a tone.
        assert_eq!(missed_part(&t(1_000, 6_000), 6_900, 9_000, None), None);
    }

    #[test]
    fn the_server_clock_comes_from_the_fastest_pong() {
        let now = Instant::now();
        let mut c = ServerClock::default();
        // Server 5 s ahead; a slow pong (rtt 200) then a fast one (rtt 20).
        c.sample(1_000, 1_200, 6_150, now);
        c.sample(2_000, 2_020, 7_010, now);
        // A slower one later does not replace it.
        c.sample(3_000, 3_400, 8_300, now);
        // Sent by the server one-way (10 ms) before it arrived here.
        assert_eq!(c.server_sent(10_000), 15_000 - 10);
        // A minute on, one slow pong (rtt 400) does not replace it...
        c.sample(70_000, 70_400, 75_100, now + Duration::from_secs(61));
        assert_eq!(c.server_sent(10_000), 15_000 - 10);
        // ...a comparable one does (rtt 60: the clocks drifted by 40 ms)...
        c.sample(80_000, 80_060, 85_070, now + Duration::from_secs(62));
        assert_eq!(c.server_sent(90_000), 95_040 - 30);
        // ...and after five minutes any does (the path changed).
        c.sample(90_000, 90_400, 95_100, now + Duration::from_secs(62 + 301));
        assert_eq!(c.server_sent(100_000), 105_000 - 100 - 200);
    }

    #[test]
    fn the_pacer_hands_over_a_lead_then_keeps_real_time_and_starts_again_after_a_hold() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut p = Pacer::new(t0, 3);
        let mut due = Vec::new();
        for _ in 0..6 {
            due.push(p.due());
            p.sent();
        }
        // The lead at once, then one per 20 ms.
        assert_eq!(due, [t0, t0, t0, t0, ms(20), ms(40)]);
        // Held by live audio until 1 s: the lead again from then.
        p.held_until(ms(1_000));
        let mut due = Vec::new();
        for _ in 0..5 {
            due.push(p.due());
            p.sent();
        }
        assert_eq!(due, [ms(1_000), ms(1_000), ms(1_000), ms(1_000), ms(1_020)]);
        // A hold that ends before the next frame is due changes nothing.
        p.held_until(ms(1_000));
        assert_eq!(p.due(), ms(1_040));
        // Without a lead: one per 20 ms from the first.
        let mut p = Pacer::new(t0, 0);
        p.sent();
        assert_eq!(p.due(), ms(20));
    }

    #[test]
    fn live_audio_and_talking_hold_a_replay() {
        assert!(live_now(10_000, 9_800, false));
        assert!(!live_now(10_000, 9_500, false));
        assert!(!live_now(10_000, 0, false));
        assert!(live_now(10_000, 0, true));
    }
}
