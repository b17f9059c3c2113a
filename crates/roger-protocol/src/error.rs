//! Error codes: one enum for the server's refusals and the client's own failures.
//!
//! The UI acts on the code (which button to show) and shows the message; it never
//! matches on message text.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every error Roger reports, on the wire as SCREAMING_SNAKE (`"TOKEN_EXPIRED"`).
///
/// Codes the server sends and codes only the client raises (signaling timeout, ICE,
/// devices) share this enum so the UI has one table to look things up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ErrorCode {
    // --- protocol ---
    /// The frame was not valid JSON or did not match any message shape.
    MalformedMessage,
    /// A request named a method this server does not know.
    UnknownMethod,
    /// `hello`/`resume` carried a protocol version the server does not speak.
    UnsupportedProtocolVersion,
    /// The frame was larger than the server accepts.
    MessageTooLarge,
    /// Too many requests in a short time.
    RateLimited,
    /// A request other than `hello`/`resume` arrived before authentication.
    NotAuthenticated,
    /// `hello`/`resume` arrived on a socket that is already authenticated.
    AlreadyAuthenticated,

    // --- auth ---
    /// The token's `exp` is in the past.
    TokenExpired,
    /// The token is malformed or its signature does not verify.
    TokenInvalid,
    /// The token does not allow the requested channel.
    ChannelNotAllowed,

    // --- session ---
    /// The resume token is unknown or its grace period has ended: rejoin from scratch.
    SessionExpired,
    /// The same identity connected elsewhere; this session was closed.
    SessionReplaced,
    /// The server has reached its session limit.
    ServerFull,
    /// The server is shutting down; reconnect after the given delay.
    ServerDraining,
    /// This node cannot reach the cluster's shared state (Redis) for a request that needs
    /// it; retry shortly.
    ClusterUnavailable,

    // --- channels ---
    /// No channel has that name.
    ChannelNotFound,
    /// The request needs a channel the session has not joined.
    NotInChannel,

    // --- floor ---
    /// Floor release (or talk) by a session that does not hold the floor.
    FloorNotHeld,
    /// Someone else holds the floor (raised by clients that treat a denial as failure,
    /// such as `roger-bot talk`; the server answers a busy floor with `floor_denied`).
    FloorDenied,

    // --- history ---
    /// No kept transmission has that id (never recorded, or past its retention).
    TransmissionNotFound,

    // --- transports / media ---
    /// An offer or answer could not be applied.
    SdpNegotiationError,
    /// ICE candidates were not gathered in time.
    IceGatheringTimeout,
    /// ICE could not find a working path.
    IceFailed,
    /// A microphone or speaker failed or disappeared.
    MediaDeviceError,

    // --- client side ---
    /// The server did not answer a request (or ping) in time.
    SignalingTimeout,
    /// The signaling server could not be reached.
    SignalingUnreachable,
    /// The signaling connection closed while the request was in flight.
    SignalingClosed,
    /// The server's TLS certificate is not trusted (unknown CA, wrong name, expired).
    CertificateInvalid,
    /// A setting the user entered (or the saved settings file) is not valid; the message
    /// says which and why. Nothing was applied.
    InvalidSettings,

    /// Something broke inside the server or client; the message has details.
    InternalError,

    /// A code this version does not know (sent by a newer peer). The message still applies.
    #[serde(other)]
    Unknown,
}

/// What a UI offers the user for an error. The UI picks its button from this, not from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum ErrorAction {
    /// Nothing to do; informational (the client may be retrying on its own).
    None,
    /// Offer a Rejoin button: start the session over.
    Rejoin,
    /// The credentials are bad or old: sign in again / paste a new token.
    SignIn,
    /// Pick another microphone or speaker.
    PickDevice,
    /// Wait a moment and try the same thing again.
    RetryLater,
    /// This client or server must be updated.
    Update,
}

impl ErrorCode {
    /// Every code, in declaration order (a test checks it against the generated
    /// TypeScript union, which specta derives from the enum itself).
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::MalformedMessage,
        ErrorCode::UnknownMethod,
        ErrorCode::UnsupportedProtocolVersion,
        ErrorCode::MessageTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::NotAuthenticated,
        ErrorCode::AlreadyAuthenticated,
        ErrorCode::TokenExpired,
        ErrorCode::TokenInvalid,
        ErrorCode::ChannelNotAllowed,
        ErrorCode::SessionExpired,
        ErrorCode::SessionReplaced,
        ErrorCode::ServerFull,
        ErrorCode::ServerDraining,
        ErrorCode::ClusterUnavailable,
        ErrorCode::ChannelNotFound,
        ErrorCode::NotInChannel,
        ErrorCode::FloorNotHeld,
        ErrorCode::FloorDenied,
        ErrorCode::TransmissionNotFound,
        ErrorCode::SdpNegotiationError,
        ErrorCode::IceGatheringTimeout,
        ErrorCode::IceFailed,
        ErrorCode::MediaDeviceError,
        ErrorCode::SignalingTimeout,
        ErrorCode::SignalingUnreachable,
        ErrorCode::SignalingClosed,
        ErrorCode::CertificateInvalid,
        ErrorCode::InvalidSettings,
        ErrorCode::InternalError,
        ErrorCode::Unknown,
    ];

    /// The wire name (`"TOKEN_EXPIRED"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedMessage => "MALFORMED_MESSAGE",
            ErrorCode::UnknownMethod => "UNKNOWN_METHOD",
            ErrorCode::UnsupportedProtocolVersion => "UNSUPPORTED_PROTOCOL_VERSION",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::NotAuthenticated => "NOT_AUTHENTICATED",
            ErrorCode::AlreadyAuthenticated => "ALREADY_AUTHENTICATED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::TokenInvalid => "TOKEN_INVALID",
            ErrorCode::ChannelNotAllowed => "CHANNEL_NOT_ALLOWED",
            ErrorCode::SessionExpired => "SESSION_EXPIRED",
            ErrorCode::SessionReplaced => "SESSION_REPLACED",
            ErrorCode::ServerFull => "SERVER_FULL",
            ErrorCode::ServerDraining => "SERVER_DRAINING",
            ErrorCode::ClusterUnavailable => "CLUSTER_UNAVAILABLE",
            ErrorCode::ChannelNotFound => "CHANNEL_NOT_FOUND",
            ErrorCode::NotInChannel => "NOT_IN_CHANNEL",
            ErrorCode::FloorNotHeld => "FLOOR_NOT_HELD",
            ErrorCode::FloorDenied => "FLOOR_DENIED",
            ErrorCode::TransmissionNotFound => "TRANSMISSION_NOT_FOUND",
            ErrorCode::SdpNegotiationError => "SDP_NEGOTIATION_ERROR",
            ErrorCode::IceGatheringTimeout => "ICE_GATHERING_TIMEOUT",
            ErrorCode::IceFailed => "ICE_FAILED",
            ErrorCode::MediaDeviceError => "MEDIA_DEVICE_ERROR",
            ErrorCode::SignalingTimeout => "SIGNALING_TIMEOUT",
            ErrorCode::SignalingUnreachable => "SIGNALING_UNREACHABLE",
            ErrorCode::SignalingClosed => "SIGNALING_CLOSED",
            ErrorCode::CertificateInvalid => "CERTIFICATE_INVALID",
            ErrorCode::InvalidSettings => "INVALID_SETTINGS",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// A sentence for the user: what happened, in their words.
    pub fn user_message(self) -> &'static str {
        match self {
            ErrorCode::MalformedMessage
            | ErrorCode::UnknownMethod
            | ErrorCode::NotAuthenticated
            | ErrorCode::AlreadyAuthenticated => "The app and the server misunderstood each other.",
            ErrorCode::UnsupportedProtocolVersion => {
                "This app and the server speak different versions. Update the app."
            }
            ErrorCode::MessageTooLarge => "A message to the server was too large.",
            ErrorCode::RateLimited => "Too many requests; slowing down.",
            ErrorCode::TokenExpired => "Your sign-in has expired. Sign in again.",
            ErrorCode::TokenInvalid => "Your sign-in was not accepted. Check the token.",
            ErrorCode::ChannelNotAllowed => "You are not allowed in that channel.",
            ErrorCode::SessionExpired => "The session ended while you were away. Rejoining.",
            ErrorCode::SessionReplaced => "You signed in somewhere else, so this window left.",
            ErrorCode::ServerFull => "The server is full. Try again in a moment.",
            ErrorCode::ServerDraining => "The server is restarting. Reconnecting shortly.",
            ErrorCode::ClusterUnavailable => "The server is having trouble. Try again shortly.",
            ErrorCode::ChannelNotFound => "That channel does not exist.",
            ErrorCode::NotInChannel => "Join the channel first.",
            ErrorCode::FloorNotHeld => "You are not holding the floor.",
            ErrorCode::FloorDenied => "Someone else is talking.",
            ErrorCode::TransmissionNotFound => "That recording is no longer kept.",
            ErrorCode::SdpNegotiationError => "Could not set up audio with the server.",
            ErrorCode::IceGatheringTimeout => "Could not find a network path for audio.",
            ErrorCode::IceFailed => "The audio connection failed. Check your network.",
            ErrorCode::MediaDeviceError => "Your microphone or speaker stopped working.",
            ErrorCode::SignalingTimeout => "The server stopped answering.",
            ErrorCode::SignalingUnreachable => "Cannot reach the server. Check the address.",
            ErrorCode::SignalingClosed => "The connection to the server closed.",
            ErrorCode::CertificateInvalid => {
                "The server's security certificate is not valid. Check the address."
            }
            ErrorCode::InvalidSettings => "A setting is not valid. Check it and save again.",
            ErrorCode::InternalError => "Something went wrong inside Roger.",
            ErrorCode::Unknown => "Something went wrong.",
        }
    }

    /// The action a UI offers for this code.
    pub fn action(self) -> ErrorAction {
        match self {
            ErrorCode::TokenExpired | ErrorCode::TokenInvalid => ErrorAction::SignIn,
            ErrorCode::UnsupportedProtocolVersion => ErrorAction::Update,
            ErrorCode::MediaDeviceError => ErrorAction::PickDevice,
            ErrorCode::RateLimited
            | ErrorCode::ServerFull
            | ErrorCode::ServerDraining
            | ErrorCode::ClusterUnavailable => ErrorAction::RetryLater,
            ErrorCode::ChannelNotAllowed
            | ErrorCode::ChannelNotFound
            | ErrorCode::NotInChannel
            | ErrorCode::FloorNotHeld
            | ErrorCode::FloorDenied
            | ErrorCode::TransmissionNotFound
            | ErrorCode::InvalidSettings => ErrorAction::None,
            _ => ErrorAction::Rejoin,
        }
    }

    /// Whether retrying the same credentials can ever succeed. Auth failures and a newer
    /// session elsewhere are terminal: reconnecting would only repeat the refusal.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ErrorCode::TokenExpired
                | ErrorCode::TokenInvalid
                | ErrorCode::UnsupportedProtocolVersion
                | ErrorCode::SessionReplaced
                | ErrorCode::CertificateInvalid
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error on the wire and in the client API: a machine code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[error("{code}: {message}")]
pub struct ErrorBody {
    /// What the UI acts on.
    pub code: ErrorCode,
    /// Details for a person (and logs). Never parsed.
    pub message: String,
}

impl ErrorBody {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_screaming_snake_on_the_wire_and_match_as_str() {
        for code in [
            ErrorCode::MalformedMessage,
            ErrorCode::TokenExpired,
            ErrorCode::SignalingTimeout,
            ErrorCode::SdpNegotiationError,
            ErrorCode::IceGatheringTimeout,
            ErrorCode::IceFailed,
            ErrorCode::MediaDeviceError,
            ErrorCode::FloorNotHeld,
            ErrorCode::CertificateInvalid,
            ErrorCode::InvalidSettings,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
        }
    }

    #[test]
    fn every_code_round_trips_by_its_wire_name() {
        for &code in ErrorCode::ALL {
            let back: ErrorCode = serde_json::from_str(&format!("\"{code}\"")).unwrap();
            assert_eq!(back, code);
        }
        let names: std::collections::HashSet<_> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "a code is listed twice");
    }

    #[test]
    fn an_unknown_code_from_a_newer_peer_decodes_as_unknown() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"code":"QUANTUM_FLUX","message":"new thing"}"#).unwrap();
        assert_eq!(body.code, ErrorCode::Unknown);
        assert_eq!(body.message, "new thing");
    }

    #[test]
    fn auth_errors_ask_for_sign_in_and_are_terminal() {
        assert_eq!(ErrorCode::TokenExpired.action(), ErrorAction::SignIn);
        assert!(ErrorCode::TokenInvalid.is_terminal());
        assert!(!ErrorCode::SignalingTimeout.is_terminal());
        assert_eq!(ErrorCode::IceFailed.action(), ErrorAction::Rejoin);
        assert_eq!(
            ErrorCode::MediaDeviceError.action(),
            ErrorAction::PickDevice
        );
    }
}
