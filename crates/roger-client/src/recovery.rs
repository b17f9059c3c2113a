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

use crate::event::Status;
use roger_protocol::{ChannelId, Direction, ErrorBody, ErrorCode};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Every number the recovery policy uses.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryConfig {
    /// After ICE reports `disconnected`, wait this long for it to come back on its own
    /// before restarting ICE (consent checks often recover a blip by themselves).
    pub ice_disconnected_grace: Duration,
    /// After ICE reports `disconnected`, recreate the transport if it is still not
    /// connected after this long. Platform default: 10 s on Windows, 5 s elsewhere.
    pub disconnect_timeout: Duration,
    /// How long a newly built transport (a fresh session's, or a recreated one) may take
    /// to connect before it counts as an ICE failure and is built again. ICE and DTLS took
    /// up to ~3 s in the 500-client reconnect storm (the server near a full core), and a
    /// stalled one can sit in `checking` or half-connected without ever failing.
    pub connect_timeout: Duration,
    /// Delays before media retries 2, 3, 4, 5 (the first is immediate).
    pub retry_backoff: Vec<Duration>,
    /// Media recovery attempts per cycle before giving up.
    pub max_attempts: u32,
    /// A recovery cycle gives up after this long in all.
    pub recovery_window: Duration,
    /// Jitter added to each media retry delay, as a fraction of it (0.2 = up to +20 %).
    pub retry_jitter: f64,
    /// Delays between signaling reconnect attempts (the last one repeats).
    pub signaling_backoff: Vec<Duration>,
    /// Random extra delay, 0 to this, added to each signaling retry.
    pub signaling_jitter: Duration,
    /// After a drain notice the server is restarting: reconnect attempts come this
    /// often (plus `signaling_jitter`) instead of backing off, so clients are back as
    /// soon as it listens again. A refused connection is cheap for both sides.
    pub drain_retry_interval: Duration,
    /// How long after a drain notice that fast retrying lasts before the backoff resumes.
    pub drain_retry_window: Duration,
    /// ICE failures (per transport) after which it is recreated relay-only.
    pub relay_after_ice_failures: u32,
    /// `Degraded` above this loss fraction.
    pub degraded_loss: f64,
    /// `Degraded` above this round-trip time.
    pub degraded_rtt: Duration,
    /// Back to `Connected` below this loss fraction (hysteresis).
    pub recovered_loss: f64,
    /// Back to `Connected` below this RTT (hysteresis).
    pub recovered_rtt: Duration,
    /// Consecutive bad quality samples that trigger one ICE restart.
    pub bad_samples_before_restart: u32,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            ice_disconnected_grace: Duration::from_millis(500),
            disconnect_timeout: if cfg!(windows) {
                Duration::from_secs(10)
            } else {
                Duration::from_secs(5)
            },
            connect_timeout: Duration::from_secs(4),
            retry_backoff: [1, 2, 4, 8].map(Duration::from_secs).to_vec(),
            max_attempts: 5,
            recovery_window: Duration::from_secs(30),
            retry_jitter: 0.2,
            signaling_backoff: [1, 2, 4, 8, 16, 30].map(Duration::from_secs).to_vec(),
            signaling_jitter: Duration::from_millis(500),
            drain_retry_interval: Duration::from_millis(250),
            drain_retry_window: Duration::from_secs(20),
            relay_after_ice_failures: 2,
            degraded_loss: 0.10,
            degraded_rtt: Duration::from_millis(500),
            recovered_loss: 0.05,
            recovered_rtt: Duration::from_millis(300),
            bad_samples_before_restart: 3,
        }
    }
}

/// A transport's connection state as the machine sees it (from ICE and PC states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportState {
    /// Media can flow.
    Connected,
    /// No traffic for the ICE disconnected timeout; may recover on its own.
    Disconnected,
    /// ICE gave up on this path.
    Failed,
    /// Closed (by us or the remote).
    Closed,
}

/// What the machine is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The user connects (first time).
    Start,
    /// The user asks to start over (the Rejoin button).
    Rejoin,
    /// The user closes the session: nothing reconnects after this.
    Close,
    /// The user pressed PTT in `channel`.
    PttDown(ChannelId),
    /// The user released PTT.
    PttUp,
    /// A signaling attempt of generation `gen` produced a session (`hello` or `resume`).
    SessionUp {
        /// Generation of the attempt.
        gen: u64,
        /// True when the server resumed the old session; false for a fresh one.
        resumed: bool,
        /// Transports the server still holds (a resumed session); empty for a fresh one.
        server_transports: Vec<Direction>,
    },
    /// A signaling attempt failed or its socket died (timeout, refused, closed).
    SignalingDown {
        /// Generation of the socket or attempt.
        gen: u64,
        /// Why.
        error: ErrorBody,
    },
    /// The server is shutting down and suggests reconnecting after this long.
    ServerDraining {
        /// The suggested delay.
        reconnect_after: Duration,
    },
    /// A transport of generation `gen` changed state.
    Transport {
        /// Which.
        dir: Direction,
        /// Its generation.
        gen: u64,
        /// Its new state.
        state: TransportState,
    },
    /// A transport action (ICE restart, recreate) of generation `gen` failed outright.
    TransportActionFailed {
        /// Which.
        dir: Direction,
        /// Generation it was for.
        gen: u64,
        /// Why.
        error: ErrorBody,
    },
    /// An address was added to or removed from a usable interface (debounced).
    NetworkChanged {
        /// Whether the signaling socket's local address is gone.
        signaling_address_lost: bool,
    },
    /// A usable network appeared after none.
    NetworkUp,
    /// A quality sample (every 2 s).
    Quality {
        /// Round-trip time of the selected candidate pair, if known.
        rtt: Option<Duration>,
        /// Loss fraction over the sample period; `None` when too few packets flowed to
        /// tell (nobody talking).
        loss: Option<f64>,
    },
    /// A microphone or speaker failed (reported, not recovered here).
    DeviceError(ErrorBody),
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open a new signaling socket (closing any old one) and `resume` (if `resume`) or
    /// `hello`; a fresh session rejoins every channel and recreates both transports.
    /// Report [`Event::SessionUp`] or [`Event::SignalingDown`] with `gen`.
    ConnectSignaling {
        /// Generation of this attempt.
        gen: u64,
        /// Resume the old session (else start a fresh one).
        resume: bool,
    },
    /// Restart ICE on a transport (fresh offer with ICE restart).
    RestartIce {
        /// Which.
        dir: Direction,
        /// Its generation.
        gen: u64,
    },
    /// Close a transport and build a new one (new generation), negotiate, re-produce.
    RecreateTransport {
        /// Which.
        dir: Direction,
        /// The new generation.
        gen: u64,
        /// Use only TURN relay candidates.
        relay_only: bool,
    },
    /// Ask for the floor again (the user still holds PTT after a reconnect).
    RequestFloor {
        /// Where.
        channel: ChannelId,
    },
    /// Publish a new status.
    Status(Status),
    /// Close everything (user close or give-up).
    CloseAll,
    /// Report an error to the user.
    Report(ErrorBody),
    /// Telemetry to log and count.
    Telemetry(Telemetry),
}

/// Telemetry the shell turns into tracing events and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Telemetry {
    /// `reconnect.attempt`.
    Attempt {
        /// Cycle-relative attempt number.
        attempt: u32,
        /// What is being tried.
        what: &'static str,
    },
    /// `reconnect.success` after a cycle: how long it took.
    Success {
        /// Time from the first fault to everything connected.
        time_to_recover: Duration,
    },
    /// `reconnect.failure`: the cycle gave up.
    Failure {
        /// Why.
        code: ErrorCode,
    },
    /// A recovery cycle began (the shell opens its span).
    CycleStarted {
        /// Cycle id.
        id: u64,
        /// What broke first.
        why: &'static str,
    },
    /// `ice.restart`.
    IceRestart {
        /// Which transport.
        dir: Direction,
    },
}

/// Named timers; each lives in one table with the generation it was set for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Next signaling reconnect attempt.
    SignalingRetry,
    /// ICE restart after the disconnected grace.
    IceGrace(Direction),
    /// Recreate after the platform disconnect timeout.
    DisconnectTimeout(Direction),
    /// Next media retry of a transport.
    TransportRetry(Direction),
    /// A fresh session's new transport must have connected by now. Not a wait: the
    /// status does not announce it as the next try.
    ConnectTimeout(Direction),
    /// The recovery window of the current cycle.
    RecoveryWindow,
}

/// The overall phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started, or closed by the user.
    Idle,
    /// First connection in progress.
    Connecting,
    /// Everything up.
    Connected,
    /// Something broke; recovering.
    Recovering,
    /// Gave up (see the code).
    Failed(ErrorCode),
}

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

/// A random source for jitter: returns a value in `[0, 1)`.
pub trait Jitter: Send {
    /// The next value in `[0, 1)`.
    fn next_unit(&mut self) -> f64;
}

impl<R: rand::Rng + Send> Jitter for R {
    fn next_unit(&mut self) -> f64 {
        self.random::<f64>()
    }
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

    fn publish_status(&mut self, now: Instant, reason: &str) {
        let status = self.derive_status(now);
        if status != self.status {
            tracing::info!(old = ?self.status, new = ?status, reason, "status");
            self.status = status.clone();
            self.actions.push_back(Action::Status(status));
        }
    }

    fn derive_status(&self, now: Instant) -> Status {
        match self.phase {
            Phase::Idle => Status::Offline,
            Phase::Connecting => Status::Connecting,
            Phase::Failed(code) => Status::Failed { code },
            Phase::Connected => {
                if self.sig != Sig::Up {
                    Status::Degraded {
                        reason: "reconnecting to the server; audio still flows".into(),
                    }
                } else if self.degraded_quality {
                    Status::Degraded {
                        reason: "poor connection: high loss or delay".into(),
                    }
                } else {
                    Status::Connected
                }
            }
            Phase::Recovering => {
                let attempt = self
                    .cycle
                    .as_ref()
                    .map_or(1, |c| self.cycle_attempt(c).max(1));
                let retry_at = self
                    .timers
                    .iter()
                    .filter(|(t, _)| matches!(t, Timer::SignalingRetry | Timer::TransportRetry(_)))
                    .map(|(_, (at, _))| *at)
                    .min()
                    .unwrap_or(now);
                let (epoch_at, epoch_ms) = self.epoch;
                let offset = retry_at.saturating_duration_since(epoch_at).as_millis() as u64;
                Status::Reconnecting {
                    attempt,
                    max: self.config.max_attempts,
                    retry_at_ms: epoch_ms + offset,
                }
            }
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
        self.sig = Sig::Down;
        self.has_session = false;
        self.set_phase(now, Phase::Failed(code), "gave up");
    }

    // ---------------------------------------------------------------- signaling

    fn connect_signaling(&mut self, now: Instant, why: &'static str) {
        self.clear_timer(Timer::SignalingRetry);
        self.sig_gen += 1;
        self.sig = Sig::Connecting;
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
                let b = &self.config.signaling_backoff;
                let i = (self.sig_attempt as usize).min(b.len().saturating_sub(1));
                self.sig_attempt += 1;
                b.get(i).copied().unwrap_or(Duration::from_secs(1))
            }
        };
        let jitter = self
            .config
            .signaling_jitter
            .mul_f64(self.jitter.next_unit());
        self.set_timer(Timer::SignalingRetry, now + delay + jitter, self.sig_gen);
    }

    // ---------------------------------------------------------------- transports

    fn media_attempt(&mut self, now: Instant, dir: Direction, recreate: bool) {
        if self.sig != Sig::Up {
            // Offers need the socket; the resume path re-checks every transport.
            return;
        }
        let Some(c) = self.cycle.as_ref() else {
            return;
        };
        let signaling_attempts = c.signaling_attempts;
        if self.tr[idx(dir)].attempts >= self.config.max_attempts {
            self.give_up(
                now,
                ErrorCode::IceFailed,
                format!(
                    "audio did not reconnect after {} attempts",
                    self.config.max_attempts
                ),
            );
            return;
        }
        self.clear_timer(Timer::TransportRetry(dir));
        self.clear_timer(Timer::ConnectTimeout(dir));
        self.clear_timer(Timer::IceGrace(dir));
        let t = &mut self.tr[idx(dir)];
        t.attempts += 1;
        let attempt = t.attempts.max(signaling_attempts);
        t.working = true;
        t.restart_pending = false;
        let relay = self.relay_available
            && t.ice_failures >= self.config.relay_after_ice_failures
            && self.config.relay_after_ice_failures > 0;
        let rebuild = recreate || t.action_failed == Some(t.gen) || relay && !t.relay_only;
        if rebuild {
            t.gen += 1;
            t.relay_only = t.relay_only || relay;
            t.state = TransportState::Closed;
            t.disconnected_since = None;
            let (gen, relay_only) = (t.gen, t.relay_only);
            self.clear_timer(Timer::DisconnectTimeout(dir));
            self.actions
                .push_back(Action::Telemetry(Telemetry::Attempt {
                    attempt,
                    what: if relay_only {
                        "recreate transport (relay only)"
                    } else {
                        "recreate transport"
                    },
                }));
            self.actions.push_back(Action::RecreateTransport {
                dir,
                gen,
                relay_only,
            });
        } else {
            let gen = t.gen;
            self.actions
                .push_back(Action::Telemetry(Telemetry::Attempt {
                    attempt,
                    what: "ice restart",
                }));
            self.actions
                .push_back(Action::Telemetry(Telemetry::IceRestart { dir }));
            self.actions.push_back(Action::RestartIce { dir, gen });
        }
        // If this attempt does not bring the transport up, try again after the backoff.
        let b = &self.config.retry_backoff;
        let i =
            (self.tr[idx(dir)].attempts.saturating_sub(1) as usize).min(b.len().saturating_sub(1));
        let mut base = b.get(i).copied().unwrap_or(Duration::from_secs(1));
        if rebuild {
            // A new PeerConnection needs its whole ICE and DTLS handshake.
            base = base.max(self.config.connect_timeout);
        }
        let delay = base.mul_f64(1.0 + self.config.retry_jitter * self.jitter.next_unit());
        let gen = self.tr[idx(dir)].gen;
        self.set_timer(Timer::TransportRetry(dir), now + delay, gen);
    }

    fn on_transport(&mut self, now: Instant, dir: Direction, gen: u64, state: TransportState) {
        let t = &mut self.tr[idx(dir)];
        if gen != t.gen {
            tracing::debug!(%dir, gen, current = t.gen, ?state, "stale transport event ignored");
            return;
        }
        let old = t.state;
        t.state = state;
        match state {
            TransportState::Connected => {
                t.working = false;
                t.disconnected_since = None;
                t.action_failed = None;
                self.clear_timer(Timer::IceGrace(dir));
                self.clear_timer(Timer::DisconnectTimeout(dir));
                self.clear_timer(Timer::TransportRetry(dir));
                self.clear_timer(Timer::ConnectTimeout(dir));
                // ICE consent checks got through again: the path to the server is back.
                // Like a network coming up, that skips the signaling backoff wait.
                if old != TransportState::Connected
                    && self.sig == Sig::Down
                    && self.timers.contains_key(&Timer::SignalingRetry)
                {
                    self.connect_signaling(now, "media path is back");
                }
            }
            TransportState::Disconnected => {
                if old == TransportState::Connected {
                    t.disconnected_since = Some(now);
                    let gen = t.gen;
                    self.set_timer(
                        Timer::IceGrace(dir),
                        now + self.config.ice_disconnected_grace,
                        gen,
                    );
                    self.set_timer(
                        Timer::DisconnectTimeout(dir),
                        now + self.config.disconnect_timeout,
                        gen,
                    );
                }
            }
            TransportState::Failed => {
                t.ice_failures += 1;
                let in_flight = t.working;
                self.settle(now, "transport failed");
                // `failed` restarts ICE at once, unless an attempt is already in flight:
                // then its retry timer tries again after the backoff.
                if !in_flight {
                    self.media_attempt(now, dir, false);
                }
                return;
            }
            TransportState::Closed => {
                t.working = false;
            }
        }
        self.settle(now, "transport state");
    }

    // ---------------------------------------------------------------- inputs

    /// Feeds one event at `now`.
    pub fn handle_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Start | Event::Rejoin => self.start(now),
            Event::Close => {
                self.timers.clear();
                self.cycle = None;
                self.sig = Sig::Down;
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
                self.sig = Sig::Up;
                self.sig_attempt = 0;
                self.drain = None;
                self.clear_timer(Timer::SignalingRetry);
                self.has_session = true;
                if !resumed {
                    // A fresh session: the shell built new transports (new generation).
                    for t in &mut self.tr {
                        t.gen += 1;
                        t.state = TransportState::Closed;
                        t.working = false;
                        t.disconnected_since = None;
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
                self.sig = Sig::Down;
                self.settle(now, "signaling down");
                if error.code == ErrorCode::SessionExpired {
                    self.connect_signaling(now, "rejoin after session expired");
                } else {
                    self.schedule_signaling_retry(now);
                }
                self.publish_status(now, "signaling retry scheduled");
            }
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
                    self.sig = Sig::Down;
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
        for t in &mut self.tr {
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

    fn on_quality(&mut self, now: Instant, rtt: Option<Duration>, loss: Option<f64>) {
        // A sample taken while a transport restarts (or is down) measures the restart,
        // not the network; and a sample with nothing measured says nothing.
        if self.phase != Phase::Connected
            || self.tr.iter().any(|t| t.working)
            || (rtt.is_none() && loss.is_none())
        {
            return;
        }
        // Each measure has its own hysteresis, and only a measured value moves it: an
        // unknown loss (nobody talking) neither degrades nor clears a loss problem.
        let judge = |bad: bool, good: bool, was: bool| {
            if bad {
                true
            } else if good {
                false
            } else {
                was
            }
        };
        let loss_bad = loss.is_some_and(|l| l > self.config.degraded_loss);
        let loss_good = loss.is_some_and(|l| l < self.config.recovered_loss);
        let rtt_bad = rtt.is_some_and(|r| r > self.config.degraded_rtt);
        let rtt_good = rtt.is_some_and(|r| r < self.config.recovered_rtt);
        self.loss_degraded = judge(loss_bad, loss_good, self.loss_degraded);
        self.rtt_degraded = judge(rtt_bad, rtt_good, self.rtt_degraded);
        let was = self.degraded_quality;
        self.degraded_quality = self.loss_degraded || self.rtt_degraded;
        if loss_bad || rtt_bad {
            self.bad_samples += 1;
            if self.bad_samples >= self.config.bad_samples_before_restart
                && !self.quality_restart_done
                && self.sig == Sig::Up
            {
                self.quality_restart_done = true;
                tracing::info!(?loss, ?rtt, "sustained bad quality: one ICE restart");
                for dir in DIRS {
                    let gen = self.tr[idx(dir)].gen;
                    self.actions
                        .push_back(Action::Telemetry(Telemetry::IceRestart { dir }));
                    self.actions.push_back(Action::RestartIce { dir, gen });
                }
            }
        } else {
            self.bad_samples = 0;
        }
        if was && !self.degraded_quality {
            // A new episode may try its own restart.
            self.quality_restart_done = false;
        }
        self.publish_status(now, "quality sample");
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
