//! # roger-client: the Roger client core (no Tauri)
//!
//! Map of the crate:
//! - [`manager`]: the facade, [`ConnectionManager`]. `connect` signs in and sets up both
//!   transports; then `join`, `leave`, `ptt_down`, `ptt_up`, `talk`, `rejoin`, `close`,
//!   a [`Status`] watch and a stream of [`ClientEvent`]s. It is the async shell of the
//!   recovery machine: it keeps the connection healthy on its own.
//! - [`recovery`]: the recovery policy as a pure state machine (virtual time, injected
//!   jitter), with every number in [`recovery::RecoveryConfig`].
//! - [`signaling`]: the WebSocket client: request/response correlation with timeouts
//!   (`SIGNALING_TIMEOUT`), notifications, application ping.
//! - [`transport`]: the send and receive PeerConnections (webrtc 0.21). The client always
//!   offers; negotiations are serialized and coalesced, and carry ids.
//! - [`outbox`]: requests waiting while the socket is down (PTT ones expire after 2 s).
//! - [`netwatch`]: network interface changes (if-watch), debounced.
//! - [`audio`]: the [`AudioSource`]/[`AudioSink`] seams, WAV files, and Opus (48 kHz
//!   mono, 20 ms, in-band FEC, concealment).
//! - [`app`]: the desktop app's core without Tauri ([`app::App`]): settings, the PTT
//!   button's logic, speaker and microphone, and the state the window shows.
//! - [`event`]: [`Status`] (the one status driving dot, tray and banner) and
//!   [`ClientEvent`].
//!
//! Everything a desktop shell needs is a plain async function here, so tests reach it
//! without a window.

pub mod app;
pub mod audio;
pub mod event;
pub mod manager;
pub mod netwatch;
pub mod outbox;
pub mod recovery;
pub mod server_values;
pub mod signaling;
pub mod transport;

pub use audio::{AudioSink, AudioSource, NullSink, PcmSource, Recording};
pub use event::{AudioDirection, ClientEvent, FloorEvent, Status};
pub use manager::{AudioStats, ClientConfig, ConnectionManager, FloorOutcome, RecoveryStats};
pub use roger_protocol as protocol;
