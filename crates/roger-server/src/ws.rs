//! One WebSocket connection: read frames, enforce limits, dispatch to the hub, write
//! responses and notifications.
//!
//! The reader never waits for slow work: `transport_offer` (which waits for ICE
//! gathering) runs in its own task and answers through the same outbound queue, so
//! pings keep flowing while a negotiation is in progress.

use crate::hub::{server_time_ms, Conn, Hub, Outbound, CLOSE_POLICY};
use crate::limits::TokenBucket;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use roger_protocol::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Outbound queue depth per socket. A client this far behind is too slow to serve.
const OUTBOUND_QUEUE: usize = 256;
/// Consecutive rate-limited requests after which the socket is closed.
const MAX_RATE_STRIKES: u32 = 200;

/// Serves one socket until it closes.
pub async fn serve_socket(hub: Arc<Hub>, socket: WebSocket, peer: SocketAddr) {
    let conn_id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Outbound>(OUTBOUND_QUEUE);
    metrics::gauge!("roger_ws_connections").increment(1.0);

    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let result = match out {
                Outbound::Message(m) => {
                    sink.send(Message::Text(Utf8Bytes::from(m.to_json()))).await
                }
                Outbound::Close(code, reason) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: Utf8Bytes::from(reason),
                        })))
                        .await;
                    break;
                }
            };
            if result.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let config = hub.config().clone();
    let idle = config.socket_idle_timeout();
    let max_bytes = config.limits.max_message_bytes;
    let mut bucket = TokenBucket::new(
        Instant::now(),
        config.limits.requests_per_second,
        config.limits.request_burst,
    );
    let mut strikes = 0u32;
    let mut session: Option<SessionId> = None;
    let mut said_bye = false;
    let conn = Conn {
        id: conn_id,
        tx: tx.clone(),
    };
    let refuse = |id: Option<RequestId>, err: ErrorBody| refuse(&tx, id, err);

    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(idle, stream.next()) => next,
            // The writer ended (the hub closed this socket, or the peer stopped reading).
            _ = tx.closed() => break,
        };
        let frame = match next {
            Err(_) => {
                tracing::info!(%peer, ?session, "socket silent for {idle:?}: closing");
                metrics::counter!("roger_ws_idle_closed_total").increment(1);
                // Say why before closing: a client learns to ping, a person reads it.
                refuse(
                    None,
                    ErrorBody::new(
                        ErrorCode::SignalingTimeout,
                        format!(
                            "nothing received for {} ms: closing (send a ping every ping_interval_ms)",
                            idle.as_millis()
                        ),
                    ),
                );
                let _ = tx.try_send(Outbound::Close(CLOSE_POLICY, "idle".into()));
                break;
            }
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(frame))) => frame,
        };
        let text = match frame {
            Message::Text(t) => t,
            Message::Binary(_) => {
                refuse(
                    None,
                    ErrorBody::new(
                        ErrorCode::MalformedMessage,
                        "binary frames are not part of the protocol",
                    ),
                );
                continue;
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if text.len() > max_bytes {
            refuse(
                None,
                ErrorBody::new(
                    ErrorCode::MessageTooLarge,
                    format!(
                        "frame of {} bytes is over the {max_bytes}-byte limit",
                        text.len()
                    ),
                ),
            );
            continue;
        }
        if !bucket.try_take(Instant::now()) {
            strikes += 1;
            if strikes >= MAX_RATE_STRIKES {
                tracing::warn!(%peer, "request flood: closing socket and ending its session");
                // An abusive client gets no grace period to resume in.
                if let Some(sid) = &session {
                    hub.end(sid, "flood");
                    said_bye = true;
                }
                let _ = tx.try_send(Outbound::Close(CLOSE_POLICY, "request flood".into()));
                break;
            }
            // Only the first refusal of a burst is answered: answering every request of a
            // flood would let the flood drive our own output.
            if strikes == 1 || strikes.is_multiple_of(50) {
                let id = decode_client(&text).ok().map(|m| m.id);
                refuse(
                    id,
                    ErrorBody::new(ErrorCode::RateLimited, "too many requests; slow down"),
                );
            } else {
                metrics::counter!("roger_refusals_total", "code" => "RATE_LIMITED").increment(1);
            }
            continue;
        }
        strikes = 0;
        if handle_text(&hub, &conn, &mut session, &text).await == Flow::Close {
            said_bye = session.is_some();
            break;
        }
    }

    if let (Some(sid), false) = (&session, said_bye) {
        hub.detach(sid, conn_id);
    }
    drop(conn);
    drop(tx);
    let _ = writer.await;
    metrics::gauge!("roger_ws_connections").decrement(1.0);
}

/// What the reader does after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next frame.
    Continue,
    /// The session said `bye`: close the socket.
    Close,
}

fn reply(tx: &mpsc::Sender<Outbound>, msg: ServerMessage) {
    if tx.try_send(Outbound::Message(msg)).is_err() {
        metrics::counter!("roger_responses_dropped_total").increment(1);
    }
}

fn refuse(tx: &mpsc::Sender<Outbound>, id: Option<RequestId>, err: ErrorBody) {
    metrics::counter!("roger_refusals_total", "code" => err.code.as_str()).increment(1);
    match id {
        Some(id) => reply(tx, ServerMessage::err(id, err)),
        None => reply(tx, ServerMessage::Notification(Notification::Error(err))),
    }
}

/// Handles one text frame that passed the size and rate limits: decodes it, dispatches
/// it to the hub for `session` (set by `hello`/`resume`), and queues the answer on the
/// connection. Public so the fuzz target drives exactly what a socket drives.
pub async fn handle_text(
    hub: &Arc<Hub>,
    conn: &Conn,
    session: &mut Option<SessionId>,
    text: &str,
) -> Flow {
    let tx = &conn.tx;
    let reply = |msg: ServerMessage| reply(tx, msg);
    let refuse = |id: Option<RequestId>, err: ErrorBody| refuse(tx, id, err);
    let msg = match decode_client(text) {
        Ok(m) => m,
        Err(e) => {
            refuse(e.id, e.error);
            return Flow::Continue;
        }
    };
    metrics::counter!("roger_requests_total", "method" => msg.request.method()).increment(1);
    let id = msg.id;
    match (msg.request, &*session) {
        (
            Request::Hello {
                protocol_version,
                token,
                client,
            },
            None,
        ) => match hub.hello(conn.clone(), protocol_version, &token, &client) {
            Ok((sid, welcome)) => {
                *session = Some(sid);
                reply(ServerMessage::ok(id, Response::Welcome(welcome)));
            }
            Err(e) => refuse(Some(id), e),
        },
        (
            Request::Resume {
                protocol_version,
                resume_token,
            },
            None,
        ) => {
            match hub
                .resume(conn.clone(), protocol_version, &resume_token)
                .await
            {
                Ok((sid, resumed)) => {
                    *session = Some(sid);
                    reply(ServerMessage::ok(id, Response::Resumed(resumed)));
                }
                Err(e) => refuse(Some(id), e),
            }
        }
        (Request::Hello { .. } | Request::Resume { .. }, Some(_)) => refuse(
            Some(id),
            ErrorBody::new(
                ErrorCode::AlreadyAuthenticated,
                "this socket already has a session",
            ),
        ),
        (_, None) => refuse(
            Some(id),
            ErrorBody::new(ErrorCode::NotAuthenticated, "send hello (or resume) first"),
        ),
        (Request::Ping, Some(_)) => reply(ServerMessage::ok(
            id,
            Response::Pong {
                server_time_ms: server_time_ms(),
            },
        )),
        (Request::Join { channel }, Some(sid)) => match hub.join(sid, &channel) {
            Ok(state) => reply(ServerMessage::ok(id, Response::Joined { channel: state })),
            Err(e) => refuse(Some(id), e),
        },
        (Request::Leave { channel }, Some(sid)) => match hub.leave(sid, &channel) {
            Ok(()) => reply(ServerMessage::ok(id, Response::Left { channel })),
            Err(e) => refuse(Some(id), e),
        },
        (Request::FloorRequest { channel }, Some(sid)) => {
            let delay = hub.config().floor.test_grant_delay_ms;
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            }
            match hub.floor_request(sid, &channel) {
                Ok(r) => reply(ServerMessage::ok(id, r)),
                Err(e) => refuse(Some(id), e),
            }
        }
        (Request::FloorRelease { channel }, Some(sid)) => match hub.floor_release(sid, &channel) {
            Ok(()) => reply(ServerMessage::ok(id, Response::FloorReleased { channel })),
            Err(e) => refuse(Some(id), e),
        },
        (
            Request::TransportOffer {
                direction,
                negotiation_id,
                sdp,
                ice_restart,
            },
            Some(sid),
        ) => {
            let media = match hub.media(sid) {
                Ok(m) => m,
                Err(e) => {
                    refuse(Some(id), e);
                    return Flow::Continue;
                }
            };
            let tx = tx.clone();
            tracing::debug!(session = %sid, %direction, negotiation_id, ice_restart, "offer");
            tokio::spawn(async move {
                let msg = match media.negotiate(direction, negotiation_id, sdp).await {
                    Ok(sdp) => ServerMessage::ok(
                        id,
                        Response::TransportAnswer {
                            direction,
                            negotiation_id,
                            sdp,
                        },
                    ),
                    Err(e) => {
                        metrics::counter!("roger_refusals_total", "code" => e.code.as_str())
                            .increment(1);
                        ServerMessage::err(id, e)
                    }
                };
                let _ = tx.try_send(Outbound::Message(msg));
            });
        }
        (Request::Bye, Some(sid)) => {
            hub.bye(sid);
            reply(ServerMessage::ok(id, Response::Goodbye));
            let _ = tx.try_send(Outbound::Close(1000, "bye".into()));
            return Flow::Close;
        }
    }
    Flow::Continue
}
