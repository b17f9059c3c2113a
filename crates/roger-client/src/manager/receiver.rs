//! The receiver: RTP from the receive transport's tracks, to the channel its SSRC
//! carries, into the sink. A sink that decodes at playout (the app's speaker, with its
//! jitter buffer) gets the packets; for one that does not (a bot's recording) they are
//! decoded here, with FEC for a single loss and concealment for short gaps.

use super::state::{lock, Shared};
use crate::audio::{level, Decoder, FRAME_SAMPLES};
use crate::event::{AudioDirection, ClientEvent};
use roger_protocol::ChannelId;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

struct ChannelDecoder {
    decoder: Decoder,
    last_seq: Option<u16>,
}

/// Longest gap concealed frame by frame; a longer one is a pause (a new talk spurt).
const MAX_CONCEAL: u16 = 5;

pub(super) async fn receive_track(shared: Weak<Shared>, track: Arc<dyn TrackRemote>) {
    let mut decoders: HashMap<ChannelId, ChannelDecoder> = HashMap::new();
    let mut last_level = Instant::now();
    while let Some(ev) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(p) = ev else {
            continue;
        };
        let Some(shared) = shared.upgrade() else {
            break;
        };
        let Some(channel) = shared.heard(p.header.ssrc) else {
            continue;
        };
        {
            let mut sink = lock(&shared.sink);
            sink.packet(
                &channel,
                p.header.sequence_number,
                p.header.timestamp,
                &p.payload,
            );
            if !sink.decodes() {
                shared.counters.received.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        let d = match decoders.entry(channel.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => match Decoder::new() {
                Ok(decoder) => v.insert(ChannelDecoder {
                    decoder,
                    last_seq: None,
                }),
                Err(e) => {
                    tracing::error!(error = %e, "cannot create decoder");
                    continue;
                }
            },
        };
        let seq = p.header.sequence_number;
        let gap = d.last_seq.map(|l| seq.wrapping_sub(l)).unwrap_or(1);
        if gap == 0 || gap >= 0x8000 {
            continue; // duplicate or late: playout is already past it
        }
        let mut frames: Vec<(u32, Vec<i16>)> = Vec::with_capacity(2);
        if (2..=MAX_CONCEAL).contains(&gap) {
            for k in (1..gap).rev() {
                let ts = p
                    .header
                    .timestamp
                    .wrapping_sub(u32::from(k) * FRAME_SAMPLES as u32);
                let recovered = if k == 1 {
                    d.decoder.decode_fec(&p.payload).ok()
                } else {
                    None
                };
                let (frame, counter) = match recovered {
                    Some(f) => (f, &shared.counters.recovered),
                    None => match d.decoder.conceal() {
                        Ok(f) => (f, &shared.counters.concealed),
                        Err(_) => continue,
                    },
                };
                counter.fetch_add(1, Ordering::Relaxed);
                frames.push((ts, frame));
            }
        }
        d.last_seq = Some(seq);
        match d.decoder.decode(&p.payload) {
            Ok(f) => frames.push((p.header.timestamp, f)),
            Err(e) => {
                tracing::debug!(error = %e, "undecodable packet");
                continue;
            }
        }
        shared.counters.received.fetch_add(1, Ordering::Relaxed);
        {
            let mut sink = lock(&shared.sink);
            for (ts, f) in &frames {
                sink.play(&channel, *ts, f);
            }
        }
        if last_level.elapsed() >= Duration::from_millis(100) {
            last_level = Instant::now();
            if let Some((_, f)) = frames.last() {
                let (rms, peak) = level(f);
                shared.emit(ClientEvent::AudioLevel {
                    direction: AudioDirection::Rx,
                    channel: channel.clone(),
                    rms,
                    peak,
                });
            }
        }
    }
}
