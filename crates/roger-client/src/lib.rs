//! # roger-client: the Roger client core (no Tauri)
//!
//! Map of the crate:
//! - [`session`]: the facade. [`Session::connect`] signs in and sets up both transports;
//!   then `join`, `leave`, `ptt_down`, `ptt_up`, `talk`, `close`, and a stream of
//!   [`ClientEvent`]s (status, members, floor, audio levels, errors).
//! - [`signaling`]: the WebSocket client: request/response correlation with timeouts
//!   (`SIGNALING_TIMEOUT`), notifications, application ping.
//! - [`transport`]: the send and receive PeerConnections (webrtc 0.21). The client always
//!   offers; negotiations are serialized and coalesced, and carry ids.
//! - [`audio`]: the [`AudioSource`]/[`AudioSink`] seams, WAV files, and Opus (48 kHz
//!   mono, 20 ms, in-band FEC, concealment).
//! - [`event`]: [`Status`] (the one status driving dot, tray and banner) and
//!   [`ClientEvent`].
//!
//! Everything a desktop shell needs is a plain async function here, so tests reach it
//! without a window.

pub mod audio;
pub mod event;
pub mod recovery;
pub mod session;
pub mod signaling;
pub mod transport;

pub use audio::{AudioSink, AudioSource, NullSink, PcmSource, Recording};
pub use event::{AudioDirection, ClientEvent, FloorEvent, Status};
pub use roger_protocol as protocol;
pub use session::{AudioStats, ClientConfig, FloorOutcome, Session};
