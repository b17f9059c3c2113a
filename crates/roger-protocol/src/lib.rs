//! # roger-protocol: the wire types of Roger's signaling protocol
//!
//! Roger's signaling is JSON over WebSocket. This crate holds every message that crosses
//! the socket and nothing else: no I/O, no async, no clocks. Both `roger-server` and
//! `roger-client` (and any third-party client) speak exactly these types.
//!
//! Map of the crate:
//! - [`message`]: the envelopes ([`ClientMessage`], [`ServerMessage`]), every
//!   [`Request`], [`Response`] and [`Notification`], and [`decode_client`] /
//!   [`decode_server`] which turn text into typed messages with deliberate errors.
//! - [`error`]: [`ErrorCode`] (SCREAMING_SNAKE on the wire), the user message and the
//!   [`ErrorAction`] a UI offers for each, and [`ErrorBody`] (`{code, message}`).
//! - [`types`]: ids and shared records (members, channel state, ICE servers).
//! - [`codec`]: the Opus contract both ends negotiate (payload type, fmtp).
//!
//! The human-readable specification is `docs/protocol.md` at the repository root.
//!
//! ## Compatibility rules
//! - The first request on a socket is `hello` (or `resume`) and carries
//!   [`PROTOCOL_VERSION`]. A server answers an unknown version with
//!   [`ErrorCode::UnsupportedProtocolVersion`] and closes.
//! - Unknown *fields* are ignored on both sides, so a minor revision may add optional
//!   fields. Unknown *methods* are answered with [`ErrorCode::UnknownMethod`] (the request
//!   id is recovered so the error can be correlated). Unknown error codes decode as
//!   [`ErrorCode::Unknown`] so an older client still shows the message.

pub mod codec;
pub mod error;
pub mod message;
pub mod types;

pub use error::{ErrorAction, ErrorBody, ErrorCode};
pub use message::*;
pub use types::*;

/// The protocol version this crate speaks. Sent in `hello`/`resume`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest text frame either side accepts by default, in bytes. SDP for two audio
/// transports is about 2-4 KiB; 64 KiB leaves room without inviting abuse.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
