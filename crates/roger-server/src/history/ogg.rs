//! Ogg Opus (RFC 7845) files of recorded transmissions, for any player.
//!
//! The `ogg` crate does the paging (lacing, CRC); the Opus headers and the granule
//! positions are written here. webrtc-rs has an `OggWriter`, but it starts granule
//! positions at 1 regardless of the pre-skip and takes RTP packets; strict decoders
//! (libopusfile) reject such a first page.

use bytes::Bytes;
use ogg::writing::{PacketWriteEndInfo, PacketWriter};

/// Samples at 48 kHz the decoder drops at the start (the encoder's look-ahead, as
/// `opusenc` writes it).
pub const PRE_SKIP: u16 = 312;

/// Samples (at 48 kHz) in one Opus packet, from its TOC byte (RFC 6716 section 3.1);
/// 0 for an empty or malformed packet. The `opus` crate can tell too, but only by
/// linking libopus into the server for one table lookup.
pub fn packet_samples(packet: &[u8]) -> u32 {
    let Some(&toc) = packet.first() else {
        return 0;
    };
    let config = toc >> 3;
    // Frame length in 1/400 s (2.5 ms) units.
    let quarter_units: u32 = match config {
        0..=11 => [4, 8, 16, 24][usize::from(config % 4)],
        12..=15 => [4, 8][usize::from(config % 2)],
        _ => [1, 2, 4, 8][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => match packet.get(1) {
            Some(b) => u32::from(b & 0x3f),
            None => return 0,
        },
    };
    quarter_units * 120 * frames
}

/// An Ogg Opus file (mono, 48 kHz) of `frames` (offset in samples, Opus packet). A gap
/// between frames (the talker sent nothing, or a packet was lost) is filled with
/// empty frames, which decoders conceal, so the file keeps the transmission's timing.
pub fn ogg_opus(frames: &[(u32, Bytes)], serial: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = PacketWriter::new(&mut out);
    let mut head = Vec::with_capacity(19);
    head.extend_from_slice(b"OpusHead");
    head.push(1); // version
    head.push(1); // channels
    head.extend_from_slice(&PRE_SKIP.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes()); // input sample rate
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // mapping family: mono/stereo
    let vendor = b"roger";
    let mut tags = Vec::new();
    tags.extend_from_slice(b"OpusTags");
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor);
    tags.extend_from_slice(&0u32.to_le_bytes()); // no user comments
                                                 // Writing into a Vec cannot fail.
    let end_page = PacketWriteEndInfo::EndPage;
    w.write_packet(head, serial, end_page, 0)
        .expect("in memory");
    // Samples written so far (the granule position is this plus the pre-skip).
    let mut written: u64 = 0;
    let mut packets: Vec<(Bytes, u32)> = Vec::with_capacity(frames.len());
    for (offset, payload) in frames {
        let n = packet_samples(payload);
        if n == 0 {
            continue;
        }
        // Fill a gap with empty frames of this packet's mode (TOC only, code 0).
        let filler = Bytes::from(vec![payload[0] & 0xfc]);
        let filler_n = packet_samples(&filler);
        while u64::from(*offset) >= written + u64::from(filler_n) {
            written += u64::from(filler_n);
            packets.push((filler.clone(), filler_n));
        }
        written += u64::from(n);
        packets.push((payload.clone(), n));
    }
    // Without audio the tags page ends the stream.
    let tags_end = if packets.is_empty() {
        PacketWriteEndInfo::EndStream
    } else {
        PacketWriteEndInfo::EndPage
    };
    w.write_packet(tags, serial, tags_end, 0)
        .expect("in memory");
    let mut granule = u64::from(PRE_SKIP);
    let last = packets.len().saturating_sub(1);
    for (i, (packet, n)) in packets.into_iter().enumerate() {
        granule += u64::from(n);
        let end = if i == last {
            PacketWriteEndInfo::EndStream
        } else if i % 50 == 49 {
            // About a second per page.
            PacketWriteEndInfo::EndPage
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        w.write_packet(packet.to_vec(), serial, end, granule)
            .expect("in memory");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toc_tells_the_samples() {
        // CELT FB 20 ms, one frame.
        assert_eq!(packet_samples(&[31 << 3]), 960);
        // SILK NB 60 ms.
        assert_eq!(packet_samples(&[3 << 3]), 2880);
        // Hybrid FB 10 ms, two frames.
        assert_eq!(packet_samples(&[(14 << 3) | 1]), 960);
        // CELT 2.5 ms, code 3 with 4 frames.
        assert_eq!(packet_samples(&[(16 << 3) | 3, 4]), 480);
        assert_eq!(packet_samples(&[]), 0);
        assert_eq!(packet_samples(&[(16 << 3) | 3]), 0);
    }

    #[test]
    fn pages_carry_the_headers_and_granules_that_count_the_gaps() {
        let f = |b: u8| Bytes::from(vec![31 << 3, b, b]);
        // 20 ms frames at 0, 960 and (after a 40 ms gap) 3840.
        let frames = vec![(0, f(1)), (960, f(2)), (3840, f(3))];
        let file = ogg_opus(&frames, 7);
        let mut r = ogg::reading::PacketReader::new(std::io::Cursor::new(file));
        let head = r.read_packet_expected().unwrap();
        assert_eq!(&head.data[..8], b"OpusHead");
        assert_eq!(head.data[9], 1);
        let tags = r.read_packet_expected().unwrap();
        assert_eq!(&tags.data[..8], b"OpusTags");
        let mut audio = Vec::new();
        while let Some(p) = r.read_packet().unwrap() {
            audio.push((p.data.len(), p.absgp_page(), p.last_in_stream()));
        }
        // Three frames plus two one-byte fillers for the gap.
        let sizes: Vec<usize> = audio.iter().map(|a| a.0).collect();
        assert_eq!(sizes, [3, 3, 1, 1, 3]);
        let last = audio.last().unwrap();
        assert_eq!(last.1, u64::from(PRE_SKIP) + 5 * 960);
        assert!(last.2);
    }
}
