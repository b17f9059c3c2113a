//! The signaling session: opening a socket and resuming (or starting) the session on
//! it, the application ping, the socket's notifications, and a fresh session's rejoin.

use super::media::build_transport;
use super::state::{lock, unix_ms, Shared};
use super::unexpected;
use crate::event::{ClientEvent, FloorEvent};
use crate::recovery::Event;
use crate::server_values;
use crate::signaling::{Signaling, SignalingEvent};
use roger_protocol::*;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use tokio::sync::mpsc;
use tracing::Instrument;

/// Opens a socket and resumes (or starts) the session. A fresh session rebuilds both
/// transports (generations `next`) and rejoins every channel.
pub(super) async fn connect_signaling(shared: Arc<Shared>, gen: u64, resume: bool, next: [u64; 2]) {
    let old = lock(&shared.session).signaling.take();
    if let Some((_, old)) = old {
        old.close();
    }
    let result = async {
        let tls = crate::signaling::tls_config(shared.config.extra_ca_pem.as_deref())?;
        let url = lock(&shared.servers).current();
        let (sig, events) = Signaling::connect_with(&url, shared.config.request_timeout, Some(tls))
            .await
            .inspect_err(|_| {
                // Unreachable: the next attempt tries the next known node.
                lock(&shared.servers).advance();
            })?;
        lock(&shared.session).local_addr = sig.local_addr();
        tokio::spawn(pump_signaling(Arc::downgrade(&shared), gen, events).in_current_span());
        let token = lock(&shared.session).resume_token.clone();
        match (resume, token) {
            (true, Some(resume_token)) => resume_session(&shared, gen, sig, resume_token).await,
            _ => start_session(&shared, gen, sig, next).await,
        }
    }
    .await;
    if let Err(error) = result {
        tracing::info!(gen, %error, "signaling attempt failed");
        shared.set_last_error(error.clone());
        shared.drop_signaling(gen);
        shared.input(Event::SignalingDown { gen, error });
    }
}

/// `resume` on a new socket: the session, its channels and (on the server) its
/// transports carry on.
async fn resume_session(
    shared: &Arc<Shared>,
    gen: u64,
    sig: Signaling,
    resume_token: String,
) -> Result<(), ErrorBody> {
    let r = match sig
        .request(Request::Resume {
            protocol_version: PROTOCOL_VERSION,
            resume_token,
        })
        .await
    {
        Ok(Response::Resumed(r)) => r,
        Ok(other) => {
            sig.close();
            return Err(unexpected("resumed", other));
        }
        Err(e) => {
            sig.close();
            return Err(e);
        }
    };
    lock(&shared.session).resume_token = Some(r.resume_token.clone());
    shared.learn_servers(&r.nodes);
    for ch in &r.channels {
        shared.record_channel(ch);
    }
    // A channel the session is no longer in (a `leave` the server carried out while its
    // answer was lost with the socket): gone here too, or the app would show it joined
    // and a fresh session would rejoin it. Before the socket is published: a join
    // flushed from the outbox may record (and announce) the same channel again right
    // after.
    let gone: Vec<ChannelId> = shared
        .channel_ids()
        .into_iter()
        .filter(|id| !r.channels.iter().any(|c| &c.id == id))
        .collect();
    for id in gone {
        if shared.forget_channel(&id).is_some() {
            tracing::info!(channel = %id, "not in the resumed session: left");
            shared.emit(ClientEvent::Left { channel: id });
        }
    }
    {
        let mut s = lock(&shared.session);
        if let Some(w) = s.welcome.as_mut() {
            w.ice_servers = r.ice_servers.clone();
        }
        s.signaling = Some((gen, sig.clone()));
    }
    spawn_ping(shared, gen, sig.clone(), r.ping_interval_ms);
    shared.input(Event::SessionUp {
        gen,
        resumed: true,
        server_transports: r.transports,
    });
    shared.flush_outbox(&sig);
    // The channels as they are now: what changed while the socket was down (a talker
    // who stopped, members who left) was not notified.
    for channel in r.channels {
        shared.emit(ClientEvent::Joined { channel });
    }
    Ok(())
}

/// `hello` on a new socket: a fresh session, new transports, every channel rejoined.
async fn start_session(
    shared: &Arc<Shared>,
    gen: u64,
    sig: Signaling,
    next: [u64; 2],
) -> Result<(), ErrorBody> {
    let welcome = match sig
        .request(Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: shared.config.token.clone(),
            client: shared.config.client_name.clone(),
        })
        .await
    {
        Ok(Response::Welcome(w)) => w,
        Ok(other) => {
            sig.close();
            return Err(unexpected("welcome", other));
        }
        Err(e) => {
            sig.close();
            return Err(e);
        }
    };
    shared.learn_servers(&welcome.nodes);
    shared.emit(ClientEvent::Welcome {
        user: welcome.user.clone(),
        channels: welcome.channels.clone(),
    });
    let ping_ms = welcome.ping_interval_ms;
    {
        let mut s = lock(&shared.session);
        s.resume_token = Some(welcome.resume_token.clone());
        s.welcome = Some(welcome);
        s.signaling = Some((gen, sig.clone()));
    }
    spawn_ping(shared, gen, sig.clone(), ping_ms);
    // The machine moves to the new transport generations on this event, so it goes
    // first: their state events come after it on the same channel.
    shared.input(Event::SessionUp {
        gen,
        resumed: false,
        server_transports: vec![],
    });
    fresh_media(shared, &sig, next).await;
    shared.flush_outbox(&sig);
    Ok(())
}

/// Builds both transports for a fresh session and rejoins every channel.
async fn fresh_media(shared: &Arc<Shared>, sig: &Signaling, next: [u64; 2]) {
    let channels = shared.channel_ids();
    lock(&shared.channels).by_ssrc.clear();
    let mut rejoined = Vec::new();
    for ch in channels {
        match sig
            .request(Request::Join {
                channel: ch.clone(),
            })
            .await
        {
            Ok(Response::Joined { channel }) => {
                shared.record_channel(&channel);
                rejoined.push(channel);
            }
            Ok(other) => tracing::warn!(?other, "unexpected answer to a rejoin"),
            Err(e) => {
                tracing::warn!(channel = %ch, error = %e, "could not rejoin a channel");
                shared.forget_channel(&ch);
                shared.emit(ClientEvent::Error { error: e });
                shared.emit(ClientEvent::Left { channel: ch });
            }
        }
    }
    for (dir, gen) in [(Direction::Send, next[0]), (Direction::Recv, next[1])] {
        let shared = shared.clone();
        tokio::spawn(
            async move {
                if let Err(error) = build_transport(&shared, dir, gen, false).await {
                    shared.input(Event::TransportActionFailed { dir, gen, error });
                }
            }
            .in_current_span(),
        );
    }
    for channel in rejoined {
        shared.emit(ClientEvent::Joined { channel });
    }
}

/// Pings every `interval_ms`; one unanswered within `ping_timeout_intervals` intervals is
/// reported to the machine, which drops the socket.
fn spawn_ping(shared: &Arc<Shared>, gen: u64, sig: Signaling, interval_ms: u64) {
    let weak = Arc::downgrade(shared);
    let interval = server_values::ping_interval(interval_ms);
    let timeout = interval * shared.config.recovery.ping_timeout_intervals.max(1);
    tokio::spawn(
        async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                if weak.upgrade().is_none() || !sig.is_open() {
                    break;
                }
                let sent = unix_ms();
                let answer = sig.request_with_timeout(Request::Ping, timeout).await;
                if let (Ok(Response::Pong { server_time_ms }), Some(shared)) =
                    (&answer, weak.upgrade())
                {
                    lock(&shared.replay).clock.sample(
                        sent,
                        unix_ms(),
                        *server_time_ms,
                        std::time::Instant::now(),
                    );
                }
                if let Err(e) = answer {
                    if e.code == ErrorCode::SignalingTimeout {
                        tracing::warn!(
                            gen,
                            "no pong within {timeout:?}: the signaling path is dead"
                        );
                        if let Some(shared) = weak.upgrade() {
                            // A node that stopped answering may be a machine gone: the
                            // next attempt goes to another node rather than wait out a
                            // connect timeout on this one.
                            lock(&shared.servers).advance();
                            shared.input(Event::SignalingUnresponsive { gen });
                        }
                    }
                    break;
                }
            }
        }
        .in_current_span(),
    );
}

async fn pump_signaling(
    shared: Weak<Shared>,
    gen: u64,
    mut events: mpsc::UnboundedReceiver<SignalingEvent>,
) {
    while let Some(ev) = events.recv().await {
        let Some(shared) = shared.upgrade() else {
            break;
        };
        match ev {
            SignalingEvent::Notification(n) => handle_notification(&shared, n),
            SignalingEvent::Closed(reason) => {
                shared.drop_signaling(gen);
                if shared.closing.load(Ordering::SeqCst) {
                    break;
                }
                let error = reason.unwrap_or_else(|| {
                    ErrorBody::new(
                        ErrorCode::SignalingClosed,
                        "the server closed the connection",
                    )
                });
                shared.set_last_error(error.clone());
                shared.input(Event::SignalingDown { gen, error });
                break;
            }
        }
    }
}

pub(super) fn handle_notification(shared: &Arc<Shared>, n: Notification) {
    match n {
        Notification::MemberJoined { channel, member } => {
            shared.update_channel(&channel, |s| s.members.push(member.clone()));
            shared.emit(ClientEvent::MemberJoined { channel, member });
        }
        Notification::MemberLeft { channel, member } => {
            shared.update_channel(&channel, |s| s.members.retain(|m| m.user != member.user));
            shared.emit(ClientEvent::MemberLeft { channel, member });
        }
        Notification::FloorTaken {
            channel,
            by,
            expires_in_ms,
        } => {
            let expires_in_ms = server_values::floor_expiry_ms(expires_in_ms);
            shared.update_channel(&channel, |s| {
                s.floor = FloorState::Taken {
                    holder: by.clone(),
                    expires_in_ms,
                }
            });
            shared.floor(&channel, FloorEvent::Taken { by });
        }
        Notification::FloorIdle { channel } => {
            shared.update_channel(&channel, |s| s.floor = FloorState::Idle);
            shared.floor(&channel, FloorEvent::Idle);
        }
        Notification::FloorRevoked { channel, reason } => {
            let ours = lock(&shared.talk)
                .as_ref()
                .is_some_and(|t| t.channel == channel);
            if ours {
                shared.stop_talking();
                shared.input(Event::PttUp);
            }
            shared.floor(&channel, FloorEvent::Revoked { reason });
        }
        Notification::ServerDraining {
            reconnect_after_ms,
            nodes,
        } => {
            // A cluster node naming others: resume on one of them at once.
            let moved = !nodes.is_empty() && lock(&shared.servers).move_off(&nodes);
            shared.learn_servers(&[]);
            let reconnect_after = if moved {
                std::time::Duration::ZERO
            } else {
                server_values::reconnect_after(reconnect_after_ms)
            };
            tracing::info!(reconnect_after_ms, moved, "server is draining");
            shared.input(Event::ServerDraining { reconnect_after });
        }
        Notification::Error(error) => {
            if error.code.is_terminal() {
                // Terminal (replaced elsewhere, token expired or revoked): reported
                // through the machine so it stops reconnecting and asks for a sign-in.
                if let Some(gen) = shared.signaling_gen() {
                    shared.input(Event::SignalingDown {
                        gen,
                        error: error.clone(),
                    });
                }
            }
            shared.emit(ClientEvent::Error { error });
        }
    }
}
