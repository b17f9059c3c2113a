//! The media contract both ends negotiate: Opus exactly as Roger offers and answers it.
//!
//! The client registers these in its send and receive transports, the server in every
//! transport it answers; a third-party client offers the same (see `docs/protocol.md`).
//! Plain values (no webrtc types) so that this crate stays free of I/O.

/// The Opus MIME type in SDP.
pub const OPUS_MIME_TYPE: &str = "audio/opus";
/// Payload type Roger registers Opus under (what browsers use too).
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// Opus's RTP clock rate (RFC 7587: always 48 kHz).
pub const OPUS_CLOCK_RATE: u32 = 48_000;
/// Channels as SDP writes Opus (RFC 7587: always 2; the audio itself is mono).
pub const OPUS_SDP_CHANNELS: u16 = 2;
/// The fmtp line: 10 ms minimum packet time, in-band FEC on (Roger's senders use it
/// against measured loss; receivers decode it).
pub const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";
