//! What the recovery machine is told ([`Event`]), what it asks for ([`Action`],
//! [`Telemetry`]), its named timers ([`Timer`]) and its phase ([`Phase`]).

use crate::event::Status;
use roger_protocol::{ChannelId, Direction, ErrorBody, ErrorCode};
use std::time::Duration;

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
    /// The signaling socket of generation `gen` did not answer in time (an application
    /// ping, or the probe before an ICE restart).
    SignalingUnresponsive {
        /// Generation of the socket.
        gen: u64,
    },
    /// Whether the client knows another address of the service (a cluster's nodes):
    /// then a lost server is first retried at once, on the next address.
    Alternates(bool),
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
    /// Restart ICE on a transport (fresh offer with ICE restart), once the signaling
    /// socket has answered a ping within `probe`; if it does not, report
    /// [`Event::SignalingUnresponsive`] and [`Event::TransportActionFailed`] instead.
    RestartIce {
        /// Which.
        dir: Direction,
        /// Its generation.
        gen: u64,
        /// How long the socket may take to answer the probe.
        probe: Duration,
    },
    /// Abort the signaling socket of generation `gen`: it stopped answering. Its end
    /// comes back as [`Event::SignalingDown`].
    DropSignaling {
        /// The socket's generation.
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
