//! The transports: building a generation, recreating it, restarting its ICE, and
//! turning its PeerConnection events into recovery events.

use super::receiver::receive_track;
use super::rtp::RtpClock;
use super::state::{lock, RecvSide, SendSide, Shared};
use crate::recovery::{Event, TransportState};
use crate::transport::{Transport, TransportEvent};
use roger_protocol::*;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;
use webrtc::peer_connection::RTCPeerConnectionState;

/// Closes the current transport of `dir`, builds generation `gen`, and negotiates it.
pub(super) async fn build_transport(
    shared: &Arc<Shared>,
    dir: Direction,
    gen: u64,
    relay_only: bool,
) -> Result<(), ErrorBody> {
    let sig = shared.signaling().ok_or_else(|| {
        ErrorBody::new(ErrorCode::SignalingClosed, "no signaling to negotiate over")
    })?;
    let (tx, rx) = mpsc::unbounded_channel();
    let settings = shared.transport_settings(relay_only);
    let transport = Transport::new(dir, &settings, tx).await?;
    tokio::spawn(pump_transport(Arc::downgrade(shared), dir, gen, rx).in_current_span());
    let old = match dir {
        Direction::Send => {
            let (track, ssrc) = transport.add_send_track().await?;
            let side = SendSide {
                gen,
                transport: transport.clone(),
                track,
                ssrc,
                clock: Arc::new(Mutex::new(RtpClock::new())),
            };
            lock(&shared.media).send.replace(side).map(|s| s.transport)
        }
        Direction::Recv => {
            transport.ensure_recv_slots(shared.recv_slots()).await?;
            let side = RecvSide {
                gen,
                transport: transport.clone(),
            };
            lock(&shared.media).recv.replace(side).map(|r| r.transport)
        }
    };
    if let Some(old) = old {
        old.close().await;
    }
    transport.negotiate(&sig, false).await
}

pub(super) async fn recreate_transport(
    shared: Arc<Shared>,
    dir: Direction,
    gen: u64,
    relay_only: bool,
) {
    tracing::info!(transport = %dir, gen, relay_only, "recreating transport");
    if let Err(error) = build_transport(&shared, dir, gen, relay_only).await {
        shared.input(Event::TransportActionFailed { dir, gen, error });
    }
}

/// Restarts ICE on transport `dir` of generation `gen`, once the signaling socket has
/// answered a ping within `probe` (the machine's rule: a restart offer into a dead
/// socket would drop the current path for nothing).
pub(super) async fn restart_ice(shared: Arc<Shared>, dir: Direction, gen: u64, probe: Duration) {
    let transport = shared.transport(dir, Some(gen));
    let sig = lock(&shared.session).signaling.clone();
    let (Some(transport), Some((sig_gen, sig))) = (transport, sig) else {
        return;
    };
    if let Err(e) = sig.request_with_timeout(Request::Ping, probe).await {
        tracing::info!(transport = %dir, error = %e, "signaling did not answer before an ICE restart");
        if e.code == ErrorCode::SignalingTimeout {
            shared.input(Event::SignalingUnresponsive { gen: sig_gen });
        }
        shared.input(Event::TransportActionFailed { dir, gen, error: e });
        return;
    }
    if let Err(error) = transport.negotiate(&sig, true).await {
        shared.input(Event::TransportActionFailed { dir, gen, error });
    }
}

async fn pump_transport(
    shared: Weak<Shared>,
    dir: Direction,
    gen: u64,
    mut rx: mpsc::UnboundedReceiver<TransportEvent>,
) {
    while let Some(ev) = rx.recv().await {
        let Some(s) = shared.upgrade() else {
            break;
        };
        match ev {
            TransportEvent::Track(track) => {
                tokio::spawn(receive_track(Arc::downgrade(&s), track).in_current_span());
            }
            TransportEvent::State(_, state) => {
                tracing::debug!(transport = %dir, gen, %state, "peer connection state");
                let state = match state {
                    RTCPeerConnectionState::Connected => TransportState::Connected,
                    RTCPeerConnectionState::Disconnected => TransportState::Disconnected,
                    RTCPeerConnectionState::Failed => TransportState::Failed,
                    RTCPeerConnectionState::Closed => TransportState::Closed,
                    _ => continue,
                };
                s.input(Event::Transport { dir, gen, state });
            }
            TransportEvent::Ice(_, state) => {
                tracing::debug!(transport = %dir, gen, %state, "ice connection state");
            }
            TransportEvent::Signaling(_, state) => {
                tracing::debug!(transport = %dir, gen, %state, "sdp signaling state");
            }
        }
    }
}
