use super::*;

fn payload(n: u64) -> Bytes {
    Bytes::from(n.to_be_bytes().to_vec())
}

fn seq_of(p: &Playout) -> Option<u64> {
    match p {
        Playout::Packet(b) => Some(u64::from_be_bytes(b[..8].try_into().unwrap())),
        _ => None,
    }
}

/// Runs a sender and the playout clock on virtual time. `arrivals[i]` is when
/// packet `i` (seq i, sent at i * 20 ms) arrives (None = lost). The playout pops
/// every `pop_every`, a frame lengthened or shortened as the buffer asks (by a pitch
/// period of 2.5-10 ms) making the next pop that much later or sooner. Returns what was
/// played at each pop.
fn run(
    jb: &mut JitterBuffer,
    t0: Instant,
    arrivals: &[Option<Duration>],
    pop_every: Duration,
    pops: usize,
) -> Vec<Playout> {
    let mut sender = Sender::new(arrivals);
    let mut out = Vec::new();
    // Where the pops are, relative to `pop_every * k`, in samples.
    let mut shift: i64 = 0;
    for k in 0..pops {
        let base = pop_every * k as u32;
        let now = if shift >= 0 {
            base + Duration::from_micros(shift as u64 * 1000 / 48)
        } else {
            base.saturating_sub(Duration::from_micros(shift.unsigned_abs() * 1000 / 48))
        };
        sender.deliver(jb, t0, now);
        let p = jb.pop(t0 + now);
        if matches!(p, Playout::Packet(_)) {
            shift += stretch(jb, t0 + now);
        }
        out.push(p);
    }
    out
}

/// Makes the time-scale change the buffer asks for at `at` on a packet just popped, as
/// `stretch` does on voiced speech (a pitch period of 2.5-10 ms), and tells the buffer:
/// the samples added (> 0) or removed (< 0).
fn stretch(jb: &mut JitterBuffer, at: Instant) -> i64 {
    let want = jb.scale();
    let change = if want == 0 {
        0
    } else {
        want.signum() * want.abs().clamp(120, 480)
    };
    jb.scaled(at, change);
    change
}

/// The sender's packets in order of arrival (`arrivals` as in [`run`]), for tests
/// that pop on a clock of their own.
struct Sender(std::iter::Peekable<std::vec::IntoIter<(Duration, usize)>>);

impl Sender {
    fn new(arrivals: &[Option<Duration>]) -> Sender {
        let mut events: Vec<(Duration, usize)> = arrivals
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.map(|a| (a, i)))
            .collect();
        events.sort();
        Sender(events.into_iter().peekable())
    }

    /// Pushes every packet that has arrived by `now` (after `t0`).
    fn deliver(&mut self, jb: &mut JitterBuffer, t0: Instant, now: Duration) {
        while let Some((a, i)) = self.0.next_if(|&(a, _)| a <= now) {
            jb.push(t0 + a, i as u16, (i as u32) * 960, payload(i as u64));
        }
    }
}

fn steady(n: usize, delay_ms: u64) -> Vec<Option<Duration>> {
    (0..n)
        .map(|i| Some(Duration::from_millis(i as u64 * 20 + delay_ms)))
        .collect()
}

#[test]
fn a_steady_stream_plays_in_order_after_one_frame_of_buffering() {
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let out = run(&mut jb, Instant::now(), &steady(50, 1), FRAME, 60);
    let played: Vec<u64> = out.iter().filter_map(seq_of).collect();
    assert_eq!(played, (0..50).collect::<Vec<_>>());
    // First sound one pop after the first packet: 20 ms of buffering.
    assert_eq!(out.iter().position(|p| seq_of(p).is_some()), Some(1));
    // Nothing concealed until the stream ends (then a short PLC tail fades out).
    let last = out.iter().rposition(|p| seq_of(p).is_some()).unwrap();
    assert!(out[..last]
        .iter()
        .all(|p| seq_of(p).is_some() || *p == Playout::Silence));
    let s = jb.stats();
    assert_eq!((s.concealed, s.underruns, s.tail), (0, 0, 5), "{s:?}");
}

#[test]
fn reordered_packets_are_played_in_sequence() {
    let mut arr = steady(40, 5);
    // Swap neighbours after the start: 3 before 2, 5 before 4, ...
    for i in (2..40).step_by(2) {
        arr.swap(i, i + 1);
    }
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let out = run(&mut jb, Instant::now(), &arr, FRAME, 50);
    let played: Vec<u64> = out.iter().filter_map(seq_of).collect();
    // The estimator needs a few packets to see the reordering; from then on the
    // cushion holds every pair.
    assert!(played.windows(2).all(|w| w[0] < w[1]), "{played:?}");
    assert!(
        (12..40).all(|i| played.contains(&i)),
        "{played:?} {:?}",
        jb.stats()
    );
    assert!(jb.target_frames() >= 2);
}

#[test]
fn a_single_loss_is_recovered_from_fec_and_a_burst_is_concealed() {
    let mut arr = steady(60, 1);
    arr[10] = None; // single loss: FEC from packet 11
    for a in &mut arr[30..33] {
        *a = None; // burst of three: 30, 31 concealed, 32 from FEC of 33
    }
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let out = run(&mut jb, Instant::now(), &arr, FRAME, 70);
    let s = jb.stats();
    assert_eq!(s.played, 56, "{s:?}");
    // The first loss finds nothing buffered behind it: concealed (and the cushion
    // grows to 2 frames). The burst's last loss is recovered from FEC.
    assert!(s.fec >= 1, "{s:?}");
    assert!(
        (2..=4).contains(&jb.target_frames()),
        "{}",
        jb.target_frames()
    );
    let i32 = out.iter().position(|p| seq_of(p) == Some(33)).unwrap() - 1;
    assert!(
        matches!(out[i32], Playout::Fec(_)),
        "{:?}",
        &out[i32 - 3..=i32 + 1]
    );
}

#[test]
fn late_packets_are_dropped_not_played_out_of_order() {
    let mut arr = steady(30, 1);
    arr[5] = Some(Duration::from_millis(5 * 20 + 200)); // 200 ms late
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let out = run(&mut jb, Instant::now(), &arr, FRAME, 40);
    let played: Vec<u64> = out.iter().filter_map(seq_of).collect();
    assert!(!played.contains(&5));
    assert!(played.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(jb.stats().late, 1);
}

#[test]
fn jitter_raises_the_target_and_underruns_stop() {
    // Packets arrive 0-60 ms late, pseudo-randomly.
    let mut x: u32 = 7;
    let arr: Vec<Option<Duration>> = (0..500)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let extra = u64::from((x >> 16) % 60);
            Some(Duration::from_millis(i as u64 * 20 + extra))
        })
        .collect();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let out = run(&mut jb, Instant::now(), &arr, FRAME, 520);
    let s = jb.stats();
    assert!(jb.target_frames() >= 3, "target {}", jb.target_frames());
    // Some underruns while it learns, then none: the last 300 frames play clean.
    let concealed = out[200..500]
        .iter()
        .filter(|p| **p == Playout::Conceal)
        .count();
    assert!(concealed <= 3, "{concealed} concealed in the tail; {s:?}");
    assert!(s.played >= 480, "{s:?}");
}

#[test]
fn a_pause_ends_the_spurt_and_the_next_one_buffers_again() {
    let mut arr = steady(20, 1);
    // Second transmission 2 s later, sequence numbers continuing (as the server's
    // rewriter sends them).
    arr.extend((20..40).map(|i| Some(Duration::from_millis(2000 + (i - 20) * 20 + 1))));
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let out = run(&mut jb, Instant::now(), &arr, FRAME, 140);
    let played: Vec<u64> = out.iter().filter_map(seq_of).collect();
    assert_eq!(played, (0..40).collect::<Vec<_>>());
    let s = jb.stats();
    assert!(s.concealed <= 12, "{s:?}");
    // Silence in between, not endless concealment.
    assert!(
        out[40..95].iter().all(|p| *p == Playout::Silence),
        "{:?}",
        &out[20..100]
    );
}

#[test]
fn a_new_spurt_is_not_judged_by_the_last_ones_waits() {
    // The output device stalls for 40 ms at 2 s: the packets after it wait 59 ms.
    // The spurt ends at 2.5 s, before its window (from 2 s) closes. The next spurt,
    // at 5 s, must not take that window's waits as its own (dropping its packets or
    // offering spare delay it never measured).
    let mut arr = steady(125, 1);
    arr.extend((250..400).map(|slot| Some(Duration::from_millis(slot * 20 + 1))));
    let mut sender = Sender::new(&arr);
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let t0 = Instant::now();
    let stall = Duration::from_millis(40);
    let mut waited_59 = false;
    for k in 0..420u32 {
        let now = if k < 100 {
            FRAME * k
        } else {
            FRAME * k + stall
        };
        sender.deliver(&mut jb, t0, now);
        let p = jb.pop(t0 + now);
        if let Some(seq) = seq_of(&p) {
            let arrived = arr[seq as usize].unwrap();
            waited_59 |= now - arrived == Duration::from_millis(59);
            if seq == 125 {
                // The next spurt's first packet (packets are numbered on).
                assert_eq!(jb.scale(), 0, "nothing measured yet");
            }
        }
    }
    assert!(waited_59, "the stall made packets wait");
    let s = jb.stats();
    assert_eq!(s.dropped, 0, "{s:?}");
    assert_eq!(s.played, 125 + 150, "{s:?}");
    assert_eq!(s.compressed, 0, "nothing changed the playout here: {s:?}");
}

#[test]
fn a_spurt_is_due_at_once_with_one_frame_of_target_and_after_it_with_two() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    assert_eq!(jb.spurt_start(t0), None, "nothing buffered");
    jb.push(t0, 0, 0, payload(0));
    assert_eq!(jb.spurt_start(t0), Some(true));
    assert_eq!(seq_of(&jb.pop(t0)), Some(0));
    assert_eq!(jb.spurt_start(t0), None, "playing");

    let mut jb = JitterBuffer::new(JitterConfig {
        min_frames: 2,
        ..JitterConfig::default()
    });
    jb.push(t0, 0, 0, payload(0));
    assert_eq!(jb.spurt_start(t0 + Duration::from_millis(19)), Some(false));
    assert_eq!(jb.pop(t0 + Duration::from_millis(19)), Playout::Silence);
    assert_eq!(jb.spurt_start(t0 + FRAME), Some(true));
    assert_eq!(seq_of(&jb.pop(t0 + FRAME)), Some(0));
}

#[test]
fn the_start_margin_is_cautious_at_first_then_follows_how_late_packets_come() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    // Nothing known yet: 10 ms, plus the 1 ms for the playout's own wake-up.
    assert_eq!(jb.lateness(), Duration::from_millis(11));
    let mut k = 0u32;
    let mut send = |jb: &mut JitterBuffer, late_ms: i64| {
        let at = t0 + FRAME * k + Duration::from_millis(50);
        let at = if late_ms >= 0 {
            at + Duration::from_millis(late_ms as u64)
        } else {
            at - Duration::from_millis(late_ms.unsigned_abs())
        };
        jb.push(at, k as u16, k * 960, payload(u64::from(k)));
        k += 1;
    };
    // 10 s of packets exactly on time: the first guess is forgotten.
    for _ in 0..500 {
        send(&mut jb, 0);
    }
    let calm = Duration::from_micros(1500);
    assert_eq!(jb.lateness(), calm, "half a ms bucket plus 1 ms");
    // One packet 7 ms late (a hiccup) is not what the path does: the margin stays.
    send(&mut jb, 7);
    assert_eq!(jb.lateness(), calm);
    for _ in 0..50 {
        send(&mut jb, 0);
    }
    assert_eq!(jb.lateness(), calm);
    // One packet in ten 7 ms late: the 95th percentile is 7-7.5 ms.
    for i in 0..200 {
        send(&mut jb, if i % 10 == 0 { 7 } else { 0 });
    }
    assert_eq!(jb.lateness(), Duration::from_micros(8500));
    // Calm again for 5 s: back down.
    for _ in 0..250 {
        send(&mut jb, 0);
    }
    assert_eq!(jb.lateness(), calm);
    // One packet 6 ms early: for the 5 s it is remembered, the others come 6 ms
    // later than the path can carry them.
    send(&mut jb, -6);
    for _ in 0..50 {
        send(&mut jb, 0);
    }
    assert_eq!(jb.lateness(), Duration::from_micros(7500));
    // Packets a frame or more late half the time: capped at a frame.
    for i in 0..100 {
        send(&mut jb, if i % 2 == 0 { 200 } else { 0 });
    }
    assert_eq!(jb.lateness(), FRAME);
}

#[test]
fn a_target_raised_by_two_hiccups_comes_down_once_the_path_is_calm_for_seconds() {
    // Two packets 25 ms late a second apart (at 5 and 6 s): the second underrun
    // within 5 s raises the target. Then 10 s on time.
    let mut arr = steady(800, 1);
    arr[250] = Some(Duration::from_millis(250 * 20 + 26));
    arr[300] = Some(Duration::from_millis(300 * 20 + 26));
    let mut d = Device::new(1.0);
    d.run(&arr, Duration::from_secs(16));
    // One entry per 5 ms callback.
    let at = |ms: usize| d.targets[ms / 5];
    assert_eq!(at(5_800), 1);
    assert_eq!(at(6_200), 2, "raised by the second hiccup");
    // Down after 5 s calm (it used to take 10 s: 20 ms more for all that time).
    let down = (6_200..16_000).step_by(5).find(|&ms| at(ms) == 1);
    assert!(
        down.is_some_and(|ms| ms <= 6_200 + 5_100),
        "back to one frame at {down:?} ms"
    );
    let s = d.jb.stats();
    assert_eq!((s.underruns, s.dropped), (2, 0), "{s:?}");
}

#[test]
fn sequence_numbers_wrap() {
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let t0 = Instant::now();
    let mut played = Vec::new();
    for k in 0..20u32 {
        let seq = 65_530u16.wrapping_add(k as u16);
        jb.push(t0 + FRAME * k, seq, k * 960, payload(u64::from(k)));
        if let Some(s) = seq_of(&jb.pop(t0 + FRAME * k + Duration::from_millis(1))) {
            played.push(s);
        }
    }
    assert!(played.len() >= 18, "{played:?}");
    assert_eq!(played, (0..played.len() as u64).collect::<Vec<_>>());
}

/// The speaker on virtual time, run as `ChannelPlayout::fill` and the device callback run
/// it: every 5 ms of the device's clock (`speed` times the sender's) the device takes
/// 240 samples; before each take the queue is filled by popping the buffer. A spurt
/// starts behind the start margin of silence; each packet's 960 samples are lengthened
/// or shortened as the buffer asks, by a pitch period of 2.5-10 ms, as `stretch` does
/// on voiced speech.
struct Device {
    jb: JitterBuffer,
    speed: f64,
    queue: usize,
    /// Callbacks that take nothing: (from, length) of device time.
    stall: Option<(Duration, Duration)>,
    /// How long each played packet waited: (sequence, wait).
    waits: Vec<(u64, Duration)>,
    /// Start margins seen, one per callback.
    margins: Vec<Duration>,
    /// Targets, one per callback.
    targets: Vec<u32>,
    /// How late packets come ([`JitterBuffer::lateness`]), one per callback.
    lateness: Vec<Duration>,
}

const CALLBACK: usize = 240;

impl Device {
    fn new(speed: f64) -> Device {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.set_granularity(Duration::from_millis(5));
        Device {
            jb,
            speed,
            queue: 0,
            stall: None,
            waits: Vec::new(),
            margins: Vec::new(),
            targets: Vec::new(),
            lateness: Vec::new(),
        }
    }

    /// Plays `arrivals` (as in [`run`]) until `until` of device time.
    fn run(&mut self, arrivals: &[Option<Duration>], until: Duration) {
        let t0 = Instant::now();
        let mut sender = Sender::new(arrivals);
        let period = Duration::from_secs_f64(0.005 / self.speed);
        let mut k = 0u32;
        loop {
            let now = period * k;
            if now > until {
                break;
            }
            k += 1;
            sender.deliver(&mut self.jb, t0, now);
            if self
                .stall
                .is_some_and(|(from, len)| now >= from && now < from + len)
            {
                continue;
            }
            let at = t0 + now;
            while self.queue < CALLBACK {
                if self.jb.spurt_start(at) == Some(true) {
                    let margin = self.jb.start_margin().as_micros() as usize * 48 / 1000;
                    self.queue = self.queue.max(margin);
                }
                match self.jb.pop(at) {
                    Playout::Packet(p) => {
                        let seq = u64::from_be_bytes(p[..8].try_into().unwrap());
                        let arrived = arrivals[seq as usize].unwrap();
                        self.waits.push((seq, now.saturating_sub(arrived)));
                        let change = stretch(&mut self.jb, at);
                        self.queue += (960 + change) as usize;
                    }
                    Playout::Fec(_) | Playout::Conceal => self.queue += 960,
                    Playout::Silence => break,
                }
            }
            self.queue = self.queue.saturating_sub(CALLBACK);
            self.margins.push(self.jb.start_margin());
            self.targets.push(self.jb.target_frames());
            self.lateness.push(self.jb.lateness());
        }
    }

    fn wait_of(&self, seq: u64) -> Option<Duration> {
        self.waits.iter().find(|(s, _)| *s == seq).map(|(_, w)| *w)
    }
}

#[test]
fn a_sender_0_3_percent_slow_or_fast_for_60_s_plays_with_no_conceal_and_no_drop() {
    // 0.3 % slow: the device takes audio faster than it comes (speed 1.003), 180 ms
    // over the minute; fast: the other way.
    for (speed, slow) in [(1.003, true), (0.997, false)] {
        let n = 3000;
        let arrivals = steady(n, 2);
        let mut d = Device::new(speed);
        d.run(&arrivals, Duration::from_millis(n as u64 * 20 + 300));
        let s = d.jb.stats();
        assert_eq!(
            (s.concealed, s.underruns, s.dropped, s.late),
            (0, 0, 0, 0),
            "speed {speed}: {s:?}"
        );
        assert_eq!(s.played, n as u64, "{s:?}");
        assert_eq!(s.tail, 5, "the end of the stream: {s:?}");
        // The drift is followed by time-scale changes: lengthening for a slow sender,
        // shortening for a fast one (about 180 ms in 2.5-10 ms steps).
        if slow {
            assert!(s.stretched >= 18, "speed {speed}: {s:?}");
        } else {
            assert!(s.compressed >= 18, "speed {speed}: {s:?}");
        }
        // The delay stays in its band once the first guess at the margin is gone: a
        // packet waits from 0 to the margin plus a frame (the 20 ms of a frame it may
        // come into) plus the 2 ms not worth a change and a period's overshoot.
        let margin = *d.margins.last().unwrap();
        let band = margin + Duration::from_millis(20 + 2 + 10);
        let worst = d.waits[150..].iter().map(|(_, w)| *w).max().unwrap();
        assert!(
            worst <= band,
            "speed {speed}: waited up to {worst:?} (band {band:?}); {s:?}"
        );
    }
}

#[test]
fn a_calm_path_plays_at_one_delay_from_the_first_packet_to_the_last() {
    // Packets 1 ms after their slot: the spurt starts behind the start margin and
    // nothing moves afterwards (the first guess, 11 ms, and the floor, 10 ms, are
    // within the 2 ms not worth a change).
    let arrivals = steady(500, 1);
    let mut d = Device::new(1.0);
    d.run(&arrivals, Duration::from_secs(11));
    let s = d.jb.stats();
    assert_eq!((s.concealed, s.underruns, s.dropped), (0, 0, 0), "{s:?}");
    assert_eq!((s.compressed, s.stretched), (0, 0), "{s:?}");
    let waits: Vec<Duration> = d.waits[1..].iter().map(|(_, w)| *w).collect();
    let (lo, hi) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
    assert!(*hi - *lo <= Duration::from_millis(1), "{lo:?}..{hi:?}");
    assert!(*lo >= MIN_MARGIN, "{lo:?}");
}

#[test]
fn a_talker_whose_packets_all_come_8_ms_later_from_some_moment_is_not_run_dry() {
    // A talker's capture blocks slip against its frames: from 4 s on, every packet
    // comes 8 ms later. Nothing to learn from before it; the margin takes it.
    let arrivals: Vec<Option<Duration>> = (0..500u64)
        .map(|i| {
            Some(Duration::from_millis(
                i * 20 + 1 + if i >= 200 { 8 } else { 0 },
            ))
        })
        .collect();
    let mut d = Device::new(1.0);
    d.run(&arrivals, Duration::from_secs(11));
    let s = d.jb.stats();
    assert_eq!((s.concealed, s.underruns, s.dropped), (0, 0, 0), "{s:?}");
    assert_eq!((s.compressed, s.stretched), (0, 0), "{s:?}");
}

#[test]
fn a_lone_hiccup_costs_one_concealed_frame_and_the_delay_it_added_is_taken_back() {
    // After 5 s on time, one packet 25 ms late (a scheduling hiccup on the sender).
    let mut arrivals = steady(500, 1);
    arrivals[250] = Some(Duration::from_millis(250 * 20 + 26));
    let mut d = Device::new(1.0);
    d.run(&arrivals, Duration::from_secs(11));
    let s = d.jb.stats();
    assert_eq!((s.underruns, s.concealed), (1, 1), "{s:?}");
    assert_eq!(
        d.jb.target_frames(),
        1,
        "a lone hiccup does not raise the target"
    );
    assert_eq!(s.dropped, 0, "{s:?}");
    // The frame it inserted is taken back by shortening within a second or so.
    let before = d.wait_of(240).unwrap();
    let after = d.wait_of(252).unwrap();
    assert!(
        after >= before + Duration::from_millis(15),
        "{before:?} -> {after:?}"
    );
    let back = (252..500).find(|&q| {
        d.wait_of(q)
            .is_some_and(|w| w <= before + Duration::from_millis(3))
    });
    assert!(back.is_some_and(|q| q <= 320), "back at packet {back:?}");
}

#[test]
fn a_device_that_stalls_has_the_backlog_taken_back_by_shortening_or_in_frames_if_large() {
    for (stall_ms, frames) in [(40, false), (140, true)] {
        let arrivals = steady(400, 1);
        let mut d = Device::new(1.0);
        d.stall = Some((Duration::from_secs(3), Duration::from_millis(stall_ms)));
        d.run(&arrivals, Duration::from_secs(9));
        let s = d.jb.stats();
        assert_eq!((s.concealed, s.underruns), (0, 0), "{stall_ms} ms: {s:?}");
        assert_eq!(s.played + s.dropped, 400, "{s:?}");
        if frames {
            assert!(
                s.dropped >= 3,
                "{stall_ms} ms: a large backlog goes in frames: {s:?}"
            );
        } else {
            assert_eq!(s.dropped, 0, "{stall_ms} ms: {s:?}");
            assert!(s.compressed >= 2, "{stall_ms} ms: {s:?}");
        }
        let before = d.wait_of(140).unwrap();
        let last = d.waits.last().unwrap().1;
        assert!(
            last <= before + Duration::from_millis(5),
            "{stall_ms} ms: waits {before:?} before, {last:?} at the end"
        );
    }
}

#[test]
fn a_sender_clock_that_lags_then_catches_up_a_block_does_not_run_the_buffer_dry() {
    // The talker's capture clock runs ~0.33 % slow against the listener's: each packet
    // comes a little later than the last, 10 ms over 3 s, until a 10 ms capture block
    // comes early and the lag starts again (measured through PulseAudio). A margin
    // measured over less than the 3 s period saw only part of the 10 ms.
    let n = 1500; // 30 s
    let arrivals: Vec<Option<Duration>> = (0..n)
        .map(|i| {
            let lag_us = (i % 150) as u64 * 10_000 / 150;
            Some(Duration::from_millis(i as u64 * 20 + 1) + Duration::from_micros(lag_us))
        })
        .collect();
    let mut d = Device::new(1.0);
    d.run(&arrivals, Duration::from_millis(n as u64 * 20 + 300));
    let s = d.jb.stats();
    assert_eq!((s.underruns, s.concealed), (0, 0), "{s:?}");
    assert_eq!(s.played, n as u64, "{s:?}");
    // Once the first lag is seen the lateness follows its 95th percentile: 9.5-12 ms
    // (under the floor of the start margin, which takes it whole).
    let tail = &d.lateness[d.lateness.len() / 3..];
    let (lo, hi) = (tail.iter().min(), tail.iter().max());
    assert!(
        lo >= Some(&Duration::from_micros(9500)) && hi <= Some(&Duration::from_millis(12)),
        "lateness {lo:?}..{hi:?}"
    );
    assert!(d.margins.iter().all(|&m| m == MIN_MARGIN));
}

#[test]
fn the_most_jitter_a_path_showed_is_counted_in_whole_ms_rounded_up() {
    // Packets on time, except one late by `late_us`: the path's jitter, rounded up.
    for (late_us, ms) in [(12_000, 12), (12_300, 13), (0, 0)] {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let t0 = Instant::now();
        let arrivals: Vec<Option<Duration>> = (0..50u32)
            .map(|i| {
                let late = if i == 30 { late_us } else { 0 };
                Some(FRAME * i + Duration::from_micros(late))
            })
            .collect();
        run(&mut jb, t0, &arrivals, FRAME, 60);
        assert_eq!(jb.stats().jitter_max_ms, ms, "{late_us} us late");
        assert_eq!(jb.stats().underruns, 0);
    }
}
