//! Push-to-talk: the floor request and release, and the talker task that encodes what
//! the source produces with Opus and sends it as RTP on the current send transport.

use super::state::{lock, Shared, Talk};
use super::{unexpected, ConnectionManager, FloorOutcome};
use crate::audio::{level, AudioSource, Encoder};
use crate::event::{AudioDirection, ClientEvent, FloorEvent};
use crate::recovery::Event;
use roger_protocol::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use webrtc::media_stream::track_local::TrackLocal;

/// Between the last packet and the floor release: the release travels on the signaling
/// socket and could overtake the last packets on the media path, and the server drops
/// packets from a talker who no longer holds the floor (the last 20 ms of every
/// transmission were lost to that race).
const RELEASE_TAIL: Duration = Duration::from_millis(40);

impl ConnectionManager {
    /// The channel this client is talking in, if any.
    pub fn talking_in(&self) -> Option<ChannelId> {
        lock(&self.shared.talk).as_ref().map(|t| t.channel.clone())
    }

    /// Presses PTT: requests the floor in `channel` and, if granted, sends what `source`
    /// produces until [`ConnectionManager::ptt_up`], a revocation, or the source's end
    /// (which releases the floor). While PTT is held, a reconnect re-acquires the floor.
    pub async fn ptt_down(
        &self,
        channel: &ChannelId,
        source: Box<dyn AudioSource>,
    ) -> Result<FloorOutcome, ErrorBody> {
        if self.talking_in().is_some() {
            self.ptt_up().await?;
        }
        self.shared.input(Event::PttDown(channel.clone()));
        let response = self
            .shared
            .request(Request::FloorRequest {
                channel: channel.clone(),
            })
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                self.shared.input(Event::PttUp);
                return Err(e);
            }
        };
        match response {
            Response::FloorGranted { expires_in_ms, .. } => {
                let expires_in_ms = crate::server_values::floor_expiry_ms(expires_in_ms);
                self.shared
                    .floor(channel, FloorEvent::Granted { expires_in_ms });
                self.start_talker(channel.clone(), source).await?;
                Ok(FloorOutcome::Granted {
                    expires_in: Duration::from_millis(expires_in_ms),
                })
            }
            Response::FloorDenied { holder, .. } => {
                self.shared.input(Event::PttUp);
                self.shared.floor(
                    channel,
                    FloorEvent::Denied {
                        holder: holder.clone(),
                    },
                );
                Ok(FloorOutcome::Denied { holder })
            }
            other => {
                self.shared.input(Event::PttUp);
                Err(unexpected("floor_granted or floor_denied", other))
            }
        }
    }

    /// Releases PTT: stops sending and releases the floor.
    pub async fn ptt_up(&self) -> Result<(), ErrorBody> {
        self.shared.input(Event::PttUp);
        let Some(channel) = self.shared.stop_talking() else {
            return Ok(());
        };
        tokio::time::sleep(RELEASE_TAIL).await;
        release(&self.shared, &channel).await
    }

    /// Talks `source` to its end in one transmission: PTT down, wait, PTT up.
    pub async fn talk(
        &self,
        channel: &ChannelId,
        source: Box<dyn AudioSource>,
    ) -> Result<FloorOutcome, ErrorBody> {
        let outcome = self.ptt_down(channel, source).await?;
        if matches!(outcome, FloorOutcome::Granted { .. }) {
            let done = lock(&self.shared.talk).as_mut().and_then(|t| t.done.take());
            if let Some(done) = done {
                let _ = done.await;
            }
        }
        Ok(outcome)
    }

    async fn start_talker(
        &self,
        channel: ChannelId,
        source: Box<dyn AudioSource>,
    ) -> Result<(), ErrorBody> {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let transport = self.shared.transport(Direction::Send, None);
        let payload_type = match transport {
            Some(t) => t.send_payload_type().await,
            None => crate::transport::OPUS_PAYLOAD_TYPE,
        };
        let loss_percent = self.shared.counters.loss_percent.load(Ordering::Relaxed);
        let encoder = Encoder::new(self.shared.config.opus_bitrate, loss_percent as i32)?;
        *lock(&self.shared.talk) = Some(Talk {
            channel: channel.clone(),
            stop: Some(stop_tx),
            done: Some(done_rx),
        });
        let talker = Talker {
            shared: self.shared.clone(),
            channel,
            encoder,
            loss_percent,
            payload_type,
        };
        tokio::spawn(async move {
            talker.run(source, stop_rx).await;
            let _ = done_tx.send(());
        });
        Ok(())
    }
}

/// One talk spurt's sending task.
struct Talker {
    shared: Arc<Shared>,
    channel: ChannelId,
    encoder: Encoder,
    loss_percent: u32,
    payload_type: u8,
}

impl Talker {
    async fn run(mut self, mut source: Box<dyn AudioSource>, mut stop: oneshot::Receiver<()>) {
        let mut first = true;
        let mut n: u64 = 0;
        let ended_by_source = loop {
            let frame = tokio::select! {
                _ = &mut stop => break false,
                f = source.next_frame() => f,
            };
            let Some(frame) = frame else { break true };
            let Some(payload) = self.encode(&frame) else {
                continue;
            };
            if self.send(payload, first).await {
                first = false;
            }
            n += 1;
            // About 25 level readings a second for the UI's meter.
            if n.is_multiple_of(2) {
                let (rms, peak) = level(&frame);
                self.shared.emit(ClientEvent::AudioLevel {
                    direction: AudioDirection::Tx,
                    channel: self.channel.clone(),
                    rms,
                    peak,
                });
            }
        };
        if ended_by_source {
            self.release_after_source_end().await;
        }
    }

    /// One Opus frame, with FEC tuned to the loss measured now.
    fn encode(&mut self, frame: &[i16]) -> Option<Vec<u8>> {
        let measured = self.shared.counters.loss_percent.load(Ordering::Relaxed);
        if measured != self.loss_percent {
            self.loss_percent = measured;
            if let Err(e) = self.encoder.set_loss_percent(measured as i32) {
                tracing::debug!(error = %e, "cannot set the encoder's loss percentage");
            }
        }
        match self.encoder.encode(frame) {
            Ok(p) if self.shared.config.stamp_packets => {
                Some(crate::audio::stamp::embed(&p, crate::audio::stamp::now_us()).unwrap_or(p))
            }
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, "encode failed; frame skipped");
                None
            }
        }
    }

    /// Writes one RTP packet to the current send transport (it may have been recreated
    /// since the last one). False when there is none yet: the marker stays for the
    /// first packet that goes out.
    async fn send(&mut self, payload: Vec<u8>, first: bool) -> bool {
        let target = lock(&self.shared.media)
            .send
            .as_ref()
            .map(|s| (s.track.clone(), s.ssrc, s.clock.clone()));
        let Some((track, ssrc, clock)) = target else {
            return false;
        };
        let (seq, ts) = lock(&clock).next(Instant::now());
        let mut packet = rtc::rtp::Packet::default();
        packet.header.version = 2;
        packet.header.payload_type = self.payload_type;
        packet.header.sequence_number = seq;
        packet.header.timestamp = ts;
        packet.header.marker = first;
        packet.header.ssrc = ssrc;
        packet.payload = bytes::Bytes::from(payload);
        if track.write_rtp(packet).await.is_ok() {
            self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// The source ended (a WAV file played out): release the floor, unless the spurt
    /// was already stopped.
    async fn release_after_source_end(&mut self) {
        let still_ours = {
            let mut t = lock(&self.shared.talk);
            if t.as_ref().is_some_and(|t| t.channel == self.channel) {
                t.take();
                true
            } else {
                false
            }
        };
        if still_ours {
            self.shared.input(Event::PttUp);
            tokio::time::sleep(RELEASE_TAIL).await;
            if let Err(e) = release(&self.shared, &self.channel).await {
                tracing::warn!(error = %e, "floor release after the source ended failed");
            }
        }
    }
}

pub(super) async fn release(shared: &Shared, channel: &ChannelId) -> Result<(), ErrorBody> {
    match shared
        .request(Request::FloorRelease {
            channel: channel.clone(),
        })
        .await
    {
        Ok(_) => {
            shared.floor(channel, FloorEvent::Released);
            Ok(())
        }
        // Already revoked by the server: nothing left to release.
        Err(e) if e.code == ErrorCode::FloorNotHeld => Ok(()),
        Err(e) => Err(e),
    }
}

/// The user still holds PTT after a reconnect: ask for the floor again.
pub(super) async fn reacquire_floor(shared: Arc<Shared>, channel: ChannelId) {
    match shared
        .request(Request::FloorRequest {
            channel: channel.clone(),
        })
        .await
    {
        Ok(Response::FloorGranted { expires_in_ms, .. }) => {
            let expires_in_ms = crate::server_values::floor_expiry_ms(expires_in_ms);
            tracing::info!(%channel, "floor re-acquired after reconnect");
            shared.floor(&channel, FloorEvent::Granted { expires_in_ms });
        }
        Ok(Response::FloorDenied { holder, .. }) => {
            shared.stop_talking();
            shared.input(Event::PttUp);
            shared.floor(&channel, FloorEvent::Denied { holder });
        }
        Ok(other) => tracing::warn!(?other, "unexpected answer to a floor re-request"),
        Err(e) => tracing::warn!(error = %e, "floor re-request failed"),
    }
}
