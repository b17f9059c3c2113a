//! Ids and records shared by several messages.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Correlates a request with its one response. Chosen by the client, unique per socket.
pub type RequestId = u64;

/// Identifies one negotiation (offer/answer) on one transport. Increases per transport;
/// an answer for an older id than the latest offer is stale and is dropped.
pub type NegotiationId = u64;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "specta", derive(specta::Type))]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// A channel's name, as configured on the server (`general`, `echo`).
    ChannelId
);
string_id!(
    /// A user's stable identity: the token's `sub`.
    UserId
);
string_id!(
    /// One server-side session (random, opaque).
    SessionId
);

string_id!(
    /// One recorded transmission in a channel's history (opaque; safe in a file name or
    /// a URL path: `[0-9a-z-]`).
    TransmissionId
);

/// A person in a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Member {
    /// Stable identity (token `sub`).
    pub user: UserId,
    /// Display name (token `name`).
    pub name: String,
}

/// Who holds a channel's floor, as seen in channel state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FloorState {
    /// Nobody is talking.
    Idle,
    /// `holder` is talking; the floor ends at the latest in `expires_in_ms`.
    Taken {
        /// The talker.
        holder: Member,
        /// Milliseconds until the server revokes the floor (max talk time).
        expires_in_ms: u64,
    },
}

/// A channel a token allows, as listed in `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ChannelInfo {
    /// The channel's name.
    pub id: ChannelId,
    /// A description from the server's config (may be empty).
    #[serde(default)]
    pub description: String,
}

/// The state of a joined channel (in `joined` and `resumed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    /// The channel.
    pub id: ChannelId,
    /// Everyone in it, including the caller.
    pub members: Vec<Member>,
    /// Who is talking.
    pub floor: FloorState,
    /// The SSRC of the caller's downlink track for this channel on its receive transport.
    /// Audio for this channel arrives with this SSRC, whoever is speaking.
    pub downlink_ssrc: u32,
    /// How many audio m-lines the caller's receive transport must offer so every joined
    /// channel has its downlink track. When the client's receive transport has fewer, it
    /// adds `recvonly` transceivers and renegotiates.
    pub recv_slots: u32,
}

/// An ICE server (STUN or TURN) for the client's transports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp`.
    pub urls: Vec<String>,
    /// TURN username (for TURN REST credentials: `expiry:user`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// TURN password.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential: String,
}

/// Which of the client's two transports a negotiation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client -> server: carries the client's microphone producer.
    Send,
    /// Server -> client: carries one downlink track per joined channel.
    Recv,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Send => "send",
            Direction::Recv => "recv",
        })
    }
}

/// Why the server took the floor away from its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// The holder talked for the channel's maximum talk time.
    MaxTalkTime,
    /// The holder left the channel (or the session ended).
    Left,
    /// The holder's connection was lost for longer than the floor grace period.
    ConnectionLost,
    /// The server is shutting down.
    ServerDraining,
}

/// One recorded transmission: somebody holding a channel's floor, from grant to release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transmission {
    /// Its id, for `history_fetch` and `GET /history/<id>.ogg`.
    pub id: TransmissionId,
    /// The channel it was said in.
    pub channel: ChannelId,
    /// The talker.
    pub by: Member,
    /// When its first audio reached the server, Unix milliseconds (server clock).
    pub start_ms: u64,
    /// From its first audio frame to the end of its last, in milliseconds.
    pub duration_ms: u64,
    /// False while the talker still holds the floor (the audio so far can be fetched).
    pub ended: bool,
}

/// One Opus frame of a recorded transmission, as the talker sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryFrame {
    /// Where the frame starts, in 48 kHz samples from the transmission's start (the
    /// talker's RTP timestamps, so pauses and pacing are kept).
    pub ts: u32,
    /// The Opus packet, base64 (standard alphabet, padded).
    pub opus: String,
}
