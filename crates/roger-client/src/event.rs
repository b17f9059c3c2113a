//! What a session tells its user: one [`Status`] and a stream of [`ClientEvent`]s.

use roger_protocol::{
    ChannelId, ChannelInfo, ChannelState, ErrorBody, ErrorCode, Member, RevokeReason,
    TransmissionId,
};
use serde::Serialize;

/// The one status that drives the tray, the dot and the banner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "status")]
pub enum Status {
    /// Not connected and not trying (before connect, after a clean close).
    Offline,
    /// Connecting for the first time.
    Connecting,
    /// Signaling and media are up.
    Connected,
    /// Up, but something is wrong (high loss, high RTT, signaling down while media flows).
    Degraded {
        /// What is wrong, for the user.
        reason: String,
    },
    /// Recovering on its own.
    Reconnecting {
        /// This attempt (1-based).
        attempt: u32,
        /// The last attempt before giving up.
        max: u32,
        /// Unix milliseconds of the next try.
        retry_at_ms: u64,
    },
    /// Gave up; the user must act (see the code's action).
    Failed {
        /// Why.
        code: ErrorCode,
    },
}

impl Status {
    /// The variant name (`"Connected"`), as `roger-bot --json` prints it.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Offline => "Offline",
            Status::Connecting => "Connecting",
            Status::Connected => "Connected",
            Status::Degraded { .. } => "Degraded",
            Status::Reconnecting { .. } => "Reconnecting",
            Status::Failed { .. } => "Failed",
        }
    }
}

/// A change in a channel's floor, from this client's point of view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FloorEvent {
    /// This client may talk.
    Granted {
        /// Until the server revokes it.
        expires_in_ms: u64,
    },
    /// Someone else is talking.
    Denied {
        /// Who.
        holder: Member,
    },
    /// This client stopped talking.
    Released,
    /// The server took the floor from this client.
    Revoked {
        /// Why.
        reason: RevokeReason,
    },
    /// Someone else started talking.
    Taken {
        /// Who.
        by: Member,
    },
    /// Nobody is talking.
    Idle,
}

impl FloorEvent {
    /// The state name as `roger-bot --json` prints it.
    pub fn name(&self) -> &'static str {
        match self {
            FloorEvent::Granted { .. } => "granted",
            FloorEvent::Denied { .. } => "denied",
            FloorEvent::Released => "released",
            FloorEvent::Revoked { .. } => "revoked",
            FloorEvent::Taken { .. } => "taken",
            FloorEvent::Idle => "idle",
        }
    }
}

/// Which way audio flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum AudioDirection {
    /// What this client sends.
    Tx,
    /// What this client hears.
    Rx,
}

/// Everything a session reports, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ClientEvent {
    /// The status changed.
    Status {
        /// The new status.
        status: Status,
    },
    /// Signed in.
    Welcome {
        /// Who the server says we are.
        user: Member,
        /// Channels we may join.
        channels: Vec<ChannelInfo>,
    },
    /// Joined a channel; its members and floor.
    Joined {
        /// The channel's state.
        channel: ChannelState,
    },
    /// Left a channel.
    Left {
        /// The channel.
        channel: ChannelId,
    },
    /// Someone joined.
    MemberJoined {
        /// Where.
        channel: ChannelId,
        /// Who.
        member: Member,
    },
    /// Someone left.
    MemberLeft {
        /// Where.
        channel: ChannelId,
        /// Who.
        member: Member,
    },
    /// The floor changed.
    Floor {
        /// Where.
        channel: ChannelId,
        /// What happened.
        #[serde(flatten)]
        floor: FloorEvent,
    },
    /// Audio level, about 10 times a second while audio flows.
    AudioLevel {
        /// Sent or heard.
        direction: AudioDirection,
        /// The channel.
        channel: ChannelId,
        /// RMS, 0..1.
        rms: f32,
        /// Peak, 0..1.
        peak: f32,
    },
    /// A recovery cycle ended with everything connected again.
    Recovered {
        /// From the first fault to everything connected.
        time_to_recover_ms: u64,
    },
    /// Playing back what was said in a channel while this client was reconnecting (one
    /// event per transmission, as its replay starts).
    MissedReplay {
        /// Which transmission.
        id: TransmissionId,
        /// Where it was said.
        channel: ChannelId,
        /// Who said it.
        by: Member,
        /// How much is played back, ms.
        missed_ms: u64,
        /// Where in the transmission the playback starts, ms (0: none of it was heard
        /// live; more: the start was heard before the connection dropped).
        from_ms: u64,
    },
    /// A replay paused because someone talks live (live always wins), or resumed.
    ReplayPaused {
        /// The replay's channel.
        channel: ChannelId,
        /// True when it paused, false when it resumed.
        paused: bool,
    },
    /// A missed transmission's replay played to its end.
    ReplayDone {
        /// The replay's channel.
        channel: ChannelId,
        /// How much was played, ms.
        played_ms: u64,
    },
    /// Something failed; the code says what the UI offers.
    Error {
        /// The error.
        error: ErrorBody,
    },
}
