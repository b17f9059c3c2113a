//! The recovery policy: a pure state machine (in the style of str0m and quinn-proto).
//!
//! It never reads the clock, sleeps, spawns or does I/O. The async shell
//! ([`crate::manager::ConnectionManager`]) feeds it [`Recovery::handle_event`] and
//! [`Recovery::handle_timeout`], sleeps until [`Recovery::poll_timeout`], and performs
//! each [`Action`] from [`Recovery::poll_action`], feeding the outcome back as an
//! [`Event`]. Randomness (jitter) comes from the RNG passed to [`Recovery::new`]. So
//! every timing rule below is tested on virtual time in microseconds.
//!
//! ## Rules (every number lives in [`RecoveryConfig`])
//! - Transport ICE `failed` -> ICE restart at once. `disconnected` -> ICE restart after
//!   `ice_disconnected_grace`; still not connected after `disconnect_timeout` (5 s, 10 s
//!   on Windows) -> recreate the transport. An ICE restart the PeerConnection refuses
//!   (`SDP_NEGOTIATION_ERROR`) -> the next attempt recreates the transport.
//! - A transport that was just built (a fresh session's, or a recreated one) gets
//!   `connect_timeout` (4 s) to connect. One that has not connected by then counts as an
//!   ICE failure and is built again: ICE or DTLS can stall on a fresh PeerConnection
//!   without ever reporting `failed`.
//! - Media retries back off 1, 2, 4, 8 s (with jitter; at least `connect_timeout` after
//!   a rebuild), at most `max_attempts` (5) per recovery cycle; a cycle lasts at most
//!   `recovery_window` (30 s). Then `Failed` with an actionable code; [`Event::Rejoin`]
//!   starts over cleanly.
//! - Signaling socket: reconnect with backoff 1 -> 2 -> 4 -> 8 -> 16 -> 30 s (cap) plus
//!   0-500 ms jitter, bounded by the recovery window. A clean close by the user never
//!   reconnects. Resume first; on `SESSION_EXPIRED`, full rejoin. A signaling drop with
//!   healthy media is `Degraded`, not an interruption.
//! - Terminal refusals (bad or expired token, session replaced, wrong protocol) fail at
//!   once: retrying cannot succeed.
//! - A server drain notice reconnects after the server's suggested delay, not a backoff,
//!   then retries every `drain_retry_interval` (plus jitter) while the server restarts,
//!   for up to `drain_retry_window`; the normal backoff follows if it never returns.
//! - A network change (address added or removed) restarts ICE on both transports at
//!   once, and reconnects signaling at once if its socket's address was lost. A network
//!   coming back retries at once, skipping the backoff wait; so does a transport whose
//!   ICE consent checks get through again (proof the path to the server is back).
//! - After `relay_after_ice_failures` ICE failures, transports are recreated relay-only
//!   (TURN), if the server offered TURN.
//! - After a resume or rejoin: recreate what is broken, re-produce, and re-request the
//!   floor if the user still holds PTT.
//! - Quality: `Degraded` when loss > 10 % or RTT > 500 ms (cleared below 5 % / 300 ms);
//!   sustained bad quality tries one ICE restart per episode.
//! - Every timer carries the generation of what it was set for; a timer of an older
//!   generation does nothing, so no stale callback tears down a newer connection.
//! - Before an ICE restart the signaling socket must answer a ping within
//!   `restart_probe_timeout`; a socket that does not (or misses its application pings)
//!   is dropped ([`Action::DropSignaling`]) and its end starts the reconnect.
//!
//! ## Files
//! [`RecoveryConfig`] (`config.rs`); the events, actions and timers (`types.rs`); the
//! state, its logged setters, cycles, signaling and inputs (this file); media attempts
//! and transport states (`transport.rs`); the status derivation (`status.rs`); quality
//! samples (`quality.rs`); one test per rule (`tests.rs`).

mod config;
mod quality;
mod status;
mod transport;
mod types;

pub use config::RecoveryConfig;
pub use types::{Action, Event, Jitter, Phase, Telemetry, Timer, TransportState};

use crate::event::Status;
use roger_protocol::{ChannelId, Direction, ErrorBody, ErrorCode};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sig {
    Down,
    Connecting,
    Up,
}

#[derive(Debug, Clone)]
struct Tr {
    gen: u64,
    state: TransportState,
    /// True while an ICE restart or recreate is in flight.
    working: bool,
    ice_failures: u32,
    relay_only: bool,
    disconnected_since: Option<Instant>,
    /// A network change happened while offers could not be sent: restart ICE as soon
    /// as the session is back, even if ICE has not noticed the change yet.
    restart_pending: bool,
    /// The generation whose ICE restart or recreate could not be applied
    /// (`SDP_NEGOTIATION_ERROR`: the PeerConnection refused the offer or answer): one
    /// that would not take a restart will not take the next either, so the next
    /// attempt builds a new transport. Another generation (a fresh session, a rebuild)
    /// or the transport reporting `connected` again forgets it.
    action_failed: Option<u64>,
    /// Media recovery attempts on this transport in the current cycle.
    attempts: u32,
}

impl Tr {
    fn new() -> Tr {
        Tr {
            gen: 0,
            state: TransportState::Closed,
            working: false,
            ice_failures: 0,
            relay_only: false,
            disconnected_since: None,
            restart_pending: false,
            action_failed: None,
            attempts: 0,
        }
    }
    /// Connected, with no restart or recreation in flight: a transport being restarted
    /// only counts as up once it reports `connected` again (a PeerConnection goes
    /// `connecting` -> `connected` on an ICE restart), so a recovery is never declared
    /// before media really flows on the new path.
    fn up(&self) -> bool {
        self.state == TransportState::Connected && !self.working
    }
}

#[derive(Debug, Clone)]
struct Cycle {
    id: u64,
    /// The first connection (its success is not a "recovery").
    initial: bool,
    started_at: Instant,
    signaling_attempts: u32,
}

/// A server drain notice being honoured.
#[derive(Debug)]
struct Drain {
    /// The server's suggested delay, used for the first reconnect attempt.
    first_delay: Option<Duration>,
    /// Fast retries end here; the normal backoff follows.
    until: Instant,
}

/// The recovery state machine.
pub struct Recovery {
    config: RecoveryConfig,
    jitter: Box<dyn Jitter>,
    phase: Phase,
    status: Status,
    sig: Sig,
    sig_gen: u64,
    sig_attempt: u32,
    /// Other addresses of the service are known (see `Event::Alternates`).
    alternates: bool,
    /// When the last run of fast attempts began.
    last_fast: Option<Instant>,
    /// Whether this run of signaling attempts starts with fast ones.
    fast_run: bool,
    has_session: bool,
    drain: Option<Drain>,
    tr: [Tr; 2],
    cycle: Option<Cycle>,
    next_cycle: u64,
    ptt: Option<ChannelId>,
    relay_available: bool,
    degraded_quality: bool,
    loss_degraded: bool,
    rtt_degraded: bool,
    bad_samples: u32,
    quality_restart_done: bool,
    timers: BTreeMap<Timer, (Instant, u64)>,
    actions: VecDeque<Action>,
    /// An instant and the Unix milliseconds it corresponds to, so `retry_at_ms` can be
    /// published as wall-clock time without the machine reading a clock.
    epoch: (Instant, u64),
}

fn idx(dir: Direction) -> usize {
    match dir {
        Direction::Send => 0,
        Direction::Recv => 1,
    }
}

const DIRS: [Direction; 2] = [Direction::Send, Direction::Recv];

impl Recovery {
    /// A machine in `Idle`, drawing jitter from `jitter`. `epoch` pairs an instant with
    /// its Unix time in milliseconds (used only to publish `retry_at_ms`).
    pub fn new(config: RecoveryConfig, jitter: Box<dyn Jitter>, epoch: (Instant, u64)) -> Recovery {
        Recovery {
            config,
            jitter,
            phase: Phase::Idle,
            status: Status::Offline,
            sig: Sig::Down,
            sig_gen: 0,
            sig_attempt: 0,
            alternates: false,
            last_fast: None,
            fast_run: false,
            has_session: false,
            drain: None,
            tr: [Tr::new(), Tr::new()],
            cycle: None,
            next_cycle: 1,
            ptt: None,
            relay_available: false,
            degraded_quality: false,
            loss_degraded: false,
            rtt_degraded: false,
            bad_samples: 0,
            quality_restart_done: false,
            timers: BTreeMap::new(),
            actions: VecDeque::new(),
            epoch,
        }
    }

    /// Whether the server offered TURN (relay-only fallback is possible).
    pub fn set_relay_available(&mut self, available: bool) {
        self.relay_available = available;
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The status last published.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The current generation of a transport.
    pub fn transport_gen(&self, dir: Direction) -> u64 {
        self.tr[idx(dir)].gen
    }

    /// The current signaling generation.
    pub fn signaling_gen(&self) -> u64 {
        self.sig_gen
    }

    /// The next action to perform.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Recovery::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.values().map(|(at, _)| *at).min()
    }

    // ---------------------------------------------------------------- state changes

    /// The one place the phase changes: logs old -> new with the reason, and publishes
    /// the derived status when it really changed.
    fn set_phase(&mut self, now: Instant, phase: Phase, reason: &str) {
        if self.phase != phase {
            tracing::info!(old = ?self.phase, new = ?phase, reason, "recovery phase");
            self.phase = phase;
        }
        self.publish_status(now, reason);
    }

    /// The one place the signaling sub-state changes: logs old -> new with the reason.
    fn set_sig(&mut self, sig: Sig, reason: &str) {
        if self.sig != sig {
            tracing::debug!(old = ?self.sig, new = ?sig, reason, "signaling state");
            self.sig = sig;
        }
    }

    /// The one place a transport's sub-state changes: logs old -> new (and the
    /// generation) with the reason.
    fn set_transport_state(&mut self, dir: Direction, state: TransportState, reason: &str) {
        let t = &mut self.tr[idx(dir)];
        if t.state != state {
            tracing::debug!(transport = %dir, gen = t.gen, old = ?t.state, new = ?state, reason, "transport state");
            t.state = state;
        }
    }

    fn publish_status(&mut self, now: Instant, reason: &str) {
        let status = self.derive_status(now);
        if status != self.status {
            tracing::info!(old = ?self.status, new = ?status, reason, "status");
            self.status = status.clone();
            self.actions.push_back(Action::Status(status));
        }
    }

    fn set_timer(&mut self, timer: Timer, at: Instant, gen: u64) {
        self.timers.insert(timer, (at, gen));
    }

    fn clear_timer(&mut self, timer: Timer) {
        self.timers.remove(&timer);
    }

    fn all_up(&self) -> bool {
        self.sig == Sig::Up && self.tr.iter().all(Tr::up)
    }

    fn media_up(&self) -> bool {
        self.tr.iter().all(Tr::up)
    }

    /// The attempt number shown to the user: the furthest any part of the connection
    /// has got in this cycle.
    fn cycle_attempt(&self, c: &Cycle) -> u32 {
        self.tr
            .iter()
            .map(|t| t.attempts)
            .fold(c.signaling_attempts, u32::max)
    }

    fn begin_cycle(&mut self, now: Instant, why: &'static str) {
        if self.cycle.is_some() || matches!(self.phase, Phase::Failed(_) | Phase::Idle) {
            return;
        }
        for t in &mut self.tr {
            t.attempts = 0;
        }
        let id = self.open_cycle(now, false);
        tracing::info!(cycle = id, why, "recovery cycle starts");
        self.actions
            .push_back(Action::Telemetry(Telemetry::CycleStarted { id, why }));
    }

    /// Starts a cycle with its recovery window; returns its id.
    fn open_cycle(&mut self, now: Instant, initial: bool) -> u64 {
        let id = self.next_cycle;
        self.next_cycle += 1;
        self.cycle = Some(Cycle {
            id,
            initial,
            started_at: now,
            signaling_attempts: 0,
        });
        self.set_timer(Timer::RecoveryWindow, now + self.config.recovery_window, id);
        id
    }

    /// Called after every change: ends the cycle when everything is up, and keeps the
    /// phase in line with the components.
    fn settle(&mut self, now: Instant, reason: &'static str) {
        if matches!(self.phase, Phase::Idle | Phase::Failed(_)) {
            return;
        }
        if self.all_up() || (self.media_up() && self.has_session && self.sig != Sig::Up) {
            // Media flowing is what the user feels: a signaling-only outage is Degraded.
            if self.all_up() {
                if let Some(c) = self.cycle.take() {
                    self.clear_timer(Timer::RecoveryWindow);
                    if !c.initial {
                        let took = now.saturating_duration_since(c.started_at);
                        self.actions
                            .push_back(Action::Telemetry(Telemetry::Success {
                                time_to_recover: took,
                            }));
                    }
                }
                self.sig_attempt = 0;
                for t in &mut self.tr {
                    t.ice_failures = 0;
                }
            }
            self.set_phase(now, Phase::Connected, reason);
        } else if self.phase == Phase::Connecting
            && self.cycle.as_ref().is_none_or(|c| {
                c.initial && c.signaling_attempts <= 1 && self.tr.iter().all(|t| t.attempts == 0)
            })
        {
            // Still the first attempt: that is "connecting", not "reconnecting".
            self.publish_status(now, reason);
        } else {
            self.begin_cycle(now, reason);
            self.set_phase(now, Phase::Recovering, reason);
        }
    }

    fn give_up(&mut self, now: Instant, code: ErrorCode, message: String) {
        tracing::warn!(%code, message, "recovery gives up");
        self.timers.clear();
        self.cycle = None;
        self.actions
            .push_back(Action::Telemetry(Telemetry::Failure { code }));
        self.actions
            .push_back(Action::Report(ErrorBody::new(code, message)));
        self.actions.push_back(Action::CloseAll);
        self.set_sig(Sig::Down, "gave up");
        self.has_session = false;
        self.set_phase(now, Phase::Failed(code), "gave up");
    }

    // ---------------------------------------------------------------- signaling

    fn connect_signaling(&mut self, now: Instant, why: &'static str) {
        self.clear_timer(Timer::SignalingRetry);
        self.sig_gen += 1;
        self.set_sig(Sig::Connecting, why);
        let resume = self.has_session;
        if let Some(c) = self.cycle.as_mut() {
            c.signaling_attempts += 1;
            let attempt = c
                .signaling_attempts
                .max(self.tr[0].attempts)
                .max(self.tr[1].attempts);
            self.actions
                .push_back(Action::Telemetry(Telemetry::Attempt { attempt, what: why }));
        }
        self.actions.push_back(Action::ConnectSignaling {
            gen: self.sig_gen,
            resume,
        });
        self.publish_status(now, why);
    }

    fn schedule_signaling_retry(&mut self, now: Instant) {
        let drain = self.drain.as_mut().filter(|d| now < d.until);
        let delay = match drain {
            // The server's suggested delay first, then short retries until it is back.
            Some(d) => d
                .first_delay
                .take()
                .unwrap_or(self.config.drain_retry_interval),
            None => {
                if self.sig_attempt == 0 {
                    // A new run of attempts: fast if another node is known and the last
                    // fast run is not recent.
                    let recently = self.last_fast.is_some_and(|t| {
                        now.saturating_duration_since(t) < self.config.failover_fast_every
                    });
                    self.fast_run = self.alternates && !recently;
                    if self.fast_run {
                        self.last_fast = Some(now);
                    }
                }
                let fast = if self.fast_run {
                    self.config.failover_fast_attempts
                } else {
                    0
                };
                let b = &self.config.signaling_backoff;
                let n = self.sig_attempt;
                self.sig_attempt += 1;
                if n < fast {
                    // Another node is known: try it at once.
                    let jitter = self.config.failover_jitter.mul_f64(self.jitter.next_unit());
                    self.set_timer(Timer::SignalingRetry, now + jitter, self.sig_gen);
                    return;
                }
                let i = ((n - fast) as usize).min(b.len().saturating_sub(1));
                b.get(i).copied().unwrap_or(Duration::from_secs(1))
            }
        };
        let jitter = self
            .config
            .signaling_jitter
            .mul_f64(self.jitter.next_unit());
        self.set_timer(Timer::SignalingRetry, now + delay + jitter, self.sig_gen);
    }

    // ---------------------------------------------------------------- inputs

    /// Feeds one event at `now`.
    pub fn handle_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Start | Event::Rejoin => self.start(now),
            Event::Close => {
                self.timers.clear();
                self.cycle = None;
                self.set_sig(Sig::Down, "closed by the user");
                self.has_session = false;
                self.ptt = None;
                self.actions.push_back(Action::CloseAll);
                self.set_phase(now, Phase::Idle, "closed by the user");
            }
            Event::PttDown(channel) => self.ptt = Some(channel),
            Event::PttUp => self.ptt = None,
            Event::SessionUp {
                gen,
                resumed,
                server_transports,
            } => {
                if gen != self.sig_gen || matches!(self.phase, Phase::Idle | Phase::Failed(_)) {
                    return;
                }
                self.set_sig(Sig::Up, "session up");
                self.sig_attempt = 0;
                self.drain = None;
                self.clear_timer(Timer::SignalingRetry);
                self.has_session = true;
                if !resumed {
                    // A fresh session: the shell built new transports (new generation).
                    for dir in DIRS {
                        let t = &mut self.tr[idx(dir)];
                        t.gen += 1;
                        t.working = false;
                        t.disconnected_since = None;
                        self.set_transport_state(dir, TransportState::Closed, "fresh session");
                    }
                    for d in DIRS {
                        self.clear_timer(Timer::IceGrace(d));
                        self.clear_timer(Timer::DisconnectTimeout(d));
                        self.clear_timer(Timer::TransportRetry(d));
                        // The new transports must connect within `connect_timeout`.
                        let gen = self.tr[idx(d)].gen;
                        self.set_timer(
                            Timer::ConnectTimeout(d),
                            now + self.config.connect_timeout,
                            gen,
                        );
                    }
                } else {
                    // Recreate what the server lost; restart ICE where it is broken.
                    for dir in DIRS {
                        let t = &self.tr[idx(dir)];
                        if !server_transports.contains(&dir) {
                            self.begin_cycle(now, "server lost a transport");
                            self.media_attempt(now, dir, true);
                        } else if t.restart_pending || (!t.up() && !t.working) {
                            self.begin_cycle(now, "transport broken after resume");
                            self.media_attempt(now, dir, false);
                        }
                    }
                }
                if let Some(channel) = self.ptt.clone() {
                    self.actions.push_back(Action::RequestFloor { channel });
                }
                self.settle(
                    now,
                    if resumed {
                        "session resumed"
                    } else {
                        "session started"
                    },
                );
            }
            Event::SignalingDown { gen, error } => {
                if gen != self.sig_gen
                    || self.sig == Sig::Down
                    || matches!(self.phase, Phase::Idle | Phase::Failed(_))
                {
                    // Stale, or a second report of the same loss (the attempt and the
                    // socket's reader can both notice it).
                    return;
                }
                if error.code.is_terminal() {
                    self.give_up(now, error.code, error.message);
                    return;
                }
                if error.code == ErrorCode::SessionExpired {
                    // The server forgot us: the next attempt starts a fresh session.
                    self.has_session = false;
                }
                self.set_sig(Sig::Down, "signaling down");
                self.settle(now, "signaling down");
                if error.code == ErrorCode::SessionExpired {
                    self.connect_signaling(now, "rejoin after session expired");
                } else {
                    self.schedule_signaling_retry(now);
                }
                self.publish_status(now, "signaling retry scheduled");
            }
            Event::SignalingUnresponsive { gen } => {
                // A socket that cannot answer a ping is dead even if TCP has not
                // noticed: close it. If it is the current one, its end starts the
                // reconnect; an older one (an attempt that finished after the machine
                // moved on or gave up) is only closed.
                tracing::info!(gen, "signaling stopped answering: dropping the socket");
                self.actions.push_back(Action::DropSignaling { gen });
            }
            Event::Alternates(known) => self.alternates = known,
            Event::ServerDraining { reconnect_after } => {
                self.drain = Some(Drain {
                    first_delay: Some(reconnect_after),
                    until: now + reconnect_after + self.config.drain_retry_window,
                });
            }
            Event::Transport { dir, gen, state } => self.on_transport(now, dir, gen, state),
            Event::TransportActionFailed { dir, gen, error } => {
                if gen != self.tr[idx(dir)].gen {
                    return;
                }
                tracing::warn!(%dir, %error, "transport action failed");
                self.tr[idx(dir)].working = false;
                if matches!(
                    error.code,
                    ErrorCode::SignalingTimeout | ErrorCode::SignalingClosed
                ) {
                    // The offer could not be sent: nothing was tried, so it does not
                    // count. The resume re-checks this transport.
                    let t = &mut self.tr[idx(dir)];
                    t.attempts = t.attempts.saturating_sub(1);
                    t.restart_pending = true;
                    self.clear_timer(Timer::TransportRetry(dir));
                } else if error.code == ErrorCode::SdpNegotiationError {
                    // Seen in a reconnect storm: a transport that failed ICE refused
                    // every restart (`cannot apply answer`) until the cycle gave up.
                    // (A refusal by the server, such as a rate limit, says nothing
                    // about this PeerConnection.)
                    self.tr[idx(dir)].action_failed = Some(gen);
                }
                if error.code == ErrorCode::IceFailed {
                    self.tr[idx(dir)].ice_failures += 1;
                }
                // The retry timer set with the attempt will try again.
                self.settle(now, "transport action failed");
            }
            Event::NetworkChanged {
                signaling_address_lost,
            } => {
                if matches!(self.phase, Phase::Idle | Phase::Failed(_)) {
                    return;
                }
                if self.sig != Sig::Up {
                    for t in &mut self.tr {
                        t.restart_pending = true;
                    }
                }
                if signaling_address_lost && self.sig != Sig::Down {
                    for t in &mut self.tr {
                        t.restart_pending = true;
                    }
                    self.set_sig(Sig::Down, "network change: signaling address lost");
                    self.begin_cycle(now, "network change");
                    self.connect_signaling(now, "network change: signaling on a lost address");
                }
                if self.sig == Sig::Up {
                    // Restart ICE proactively, before consent checks notice.
                    for dir in DIRS {
                        self.begin_cycle(now, "network change");
                        self.media_attempt(now, dir, false);
                    }
                }
                self.settle(now, "network change");
            }
            Event::NetworkUp => {
                if matches!(self.phase, Phase::Idle | Phase::Failed(_)) {
                    return;
                }
                if self.sig == Sig::Down {
                    self.connect_signaling(now, "network is back");
                }
                for dir in DIRS {
                    if self.timers.contains_key(&Timer::TransportRetry(dir)) {
                        self.media_attempt(now, dir, false);
                    }
                }
            }
            Event::Quality { rtt, loss } => self.on_quality(now, rtt, loss),
            Event::DeviceError(e) => self.actions.push_back(Action::Report(e)),
        }
    }

    fn start(&mut self, now: Instant) {
        self.timers.clear();
        self.cycle = None;
        self.has_session = false;
        self.sig_attempt = 0;
        self.drain = None;
        self.degraded_quality = false;
        self.loss_degraded = false;
        self.rtt_degraded = false;
        self.bad_samples = 0;
        for dir in DIRS {
            self.set_transport_state(dir, TransportState::Closed, "start");
            let t = &mut self.tr[idx(dir)];
            *t = Tr {
                gen: t.gen,
                ..Tr::new()
            };
        }
        self.set_phase(now, Phase::Connecting, "start");
        // The first connection has a window too: a server that never answers ends in
        // `Failed`, not an endless spinner.
        self.open_cycle(now, true);
        self.connect_signaling(now, "connect");
    }

    /// Applies every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<(Timer, u64)> = self
            .timers
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(t, (_, gen))| (*t, *gen))
            .collect();
        for (timer, gen) in due {
            // An earlier timer in this batch may have cleared or replaced this one.
            if self.timers.get(&timer).map(|(_, g)| *g) != Some(gen) {
                continue;
            }
            self.timers.remove(&timer);
            self.fire(now, timer, gen);
        }
        if !matches!(self.phase, Phase::Idle | Phase::Failed(_)) {
            self.publish_status(now, "timer");
        }
    }

    fn fire(&mut self, now: Instant, timer: Timer, gen: u64) {
        match timer {
            Timer::SignalingRetry => {
                if gen == self.sig_gen && self.sig == Sig::Down {
                    self.connect_signaling(now, "signaling reconnect");
                }
            }
            Timer::IceGrace(dir) => {
                let t = &self.tr[idx(dir)];
                if gen == t.gen && t.state == TransportState::Disconnected && !t.working {
                    self.begin_cycle(now, "ICE disconnected");
                    self.set_phase(now, Phase::Recovering, "ICE disconnected past the grace");
                    self.media_attempt(now, dir, false);
                }
            }
            Timer::DisconnectTimeout(dir) => {
                let t = &self.tr[idx(dir)];
                if gen == t.gen && !t.up() {
                    self.begin_cycle(now, "disconnect timeout");
                    self.media_attempt(now, dir, true);
                }
            }
            Timer::TransportRetry(dir) | Timer::ConnectTimeout(dir) => {
                let t = &mut self.tr[idx(dir)];
                if gen == t.gen && !t.up() {
                    if t.state == TransportState::Closed {
                        // Built (fresh or recreated) and never connected: as good as an
                        // ICE failure, and it counts towards the relay fallback.
                        tracing::info!(%dir, gen, "transport did not connect in time");
                        t.ice_failures += 1;
                    }
                    let recreate = t.state == TransportState::Closed
                        || t.disconnected_since
                            .is_some_and(|s| now >= s + self.config.disconnect_timeout);
                    self.media_attempt(now, dir, recreate);
                }
            }
            Timer::RecoveryWindow => {
                if self.cycle.as_ref().is_some_and(|c| c.id == gen) {
                    let code = if self.sig != Sig::Up {
                        ErrorCode::SignalingUnreachable
                    } else {
                        ErrorCode::IceFailed
                    };
                    let window = self.config.recovery_window;
                    self.give_up(
                        now,
                        code,
                        format!("could not reconnect within {} s", window.as_secs()),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
