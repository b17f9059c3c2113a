//! One WebSocket connection: read frames, enforce limits, dispatch to the hub, write
//! responses and notifications.
//!
//! The reader never waits for slow work: `transport_offer` (which waits for ICE
//! gathering) runs in its own task and answers through the same outbound queue, so
//! pings keep flowing while a negotiation is in progress.

use crate::hub::{server_time_ms, Conn, Hub, Outbound, CLOSE_POLICY};
use crate::limits::TokenBucket;
use crate::listen::ConnInfo;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use roger_protocol::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Outbound queue depth per socket. A client this far behind is too slow to serve.
const OUTBOUND_QUEUE: usize = 256;
/// Consecutive rate-limited frames after which the socket is closed.
const MAX_RATE_STRIKES: u32 = 200;
/// Frames that are not protocol messages (binary, oversize) after which the socket is
/// closed: a client that keeps sending them is broken or hostile either way.
const MAX_BAD_FRAMES: u32 = 10;
/// How long one write to a socket may take.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves one socket until it closes.
pub async fn serve_socket(hub: Arc<Hub>, socket: WebSocket, info: ConnInfo) {
    let ConnInfo { peer, ticket } = info;
    let conn_id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Outbound>(OUTBOUND_QUEUE);
    metrics::gauge!("roger_ws_connections").increment(1.0);

    // Every write has a deadline: a peer that stops reading cannot hold the socket (and
    // its place under the admission caps) by letting our sends block.
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let result = match out {
                Outbound::Message(m) => {
                    let frame = Message::Text(Utf8Bytes::from(m.to_json()));
                    tokio::time::timeout(WRITE_TIMEOUT, sink.send(frame)).await
                }
                Outbound::Close(code, reason) => {
                    let frame = Message::Close(Some(CloseFrame {
                        code,
                        reason: Utf8Bytes::from(reason),
                    }));
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(frame)).await;
                    break;
                }
            };
            if !matches!(result, Ok(Ok(()))) {
                if result.is_err() {
                    metrics::counter!("roger_ws_write_timeouts_total").increment(1);
                }
                break;
            }
        }
        let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.close()).await;
    });

    let config = hub.config().clone();
    let idle = config.socket_idle_timeout();
    let hello_by = tokio::time::Instant::now() + config.admission.hello_timeout();
    let max_bytes = config.limits.max_message_bytes;
    let mut bucket = TokenBucket::new(
        Instant::now(),
        config.limits.requests_per_second,
        config.limits.request_burst,
    );
    let mut fanout = TokenBucket::new(
        Instant::now(),
        config.limits.fanout_per_second,
        config.limits.fanout_burst,
    );
    let mut strikes = 0u32;
    let mut bad_frames = 0u32;
    // Owns the session from here on: if this task ends in any way, a panic included,
    // the session is detached (grace, then cleanup), never left attached to a dead socket.
    let mut guard = SocketGuard {
        hub: hub.clone(),
        conn_id,
        session: None,
        said_bye: false,
    };
    let conn = Conn::new(conn_id, tx.clone());
    let kill = conn.kill.clone();
    let refuse = |id: Option<RequestId>, err: ErrorBody| refuse(&tx, id, err);
    let close = |why: &str| {
        let _ = tx.try_send(Outbound::Close(CLOSE_POLICY, why.into()));
    };

    loop {
        // Before hello the deadline is fixed from the upgrade: nothing a client sends
        // (pings included) extends it. After hello, any frame keeps the socket alive.
        let wait = match guard.session {
            None => tokio::time::sleep_until(hello_by.min(tokio::time::Instant::now() + idle)),
            Some(_) => tokio::time::sleep(idle),
        };
        let next = tokio::select! {
            next = stream.next() => Some(next),
            _ = wait => None,
            // The writer ended (the hub closed this socket, or the peer stopped reading).
            _ = tx.closed() => break,
            // The hub closed this socket (ended, replaced, revoked, expired).
            _ = kill.notified() => break,
        };
        let frame = match next {
            None if guard.session.is_none() && tokio::time::Instant::now() >= hello_by => {
                tracing::debug!(%peer, "no hello within {:?}: closing", config.admission.hello_timeout());
                metrics::counter!("roger_hello_timeouts_total").increment(1);
                refuse(
                    None,
                    ErrorBody::new(
                        ErrorCode::NotAuthenticated,
                        format!(
                            "no hello or resume within {} ms of connecting: closing",
                            config.admission.hello_timeout().as_millis()
                        ),
                    ),
                );
                close("no hello");
                break;
            }
            None => {
                tracing::info!(%peer, session = ?guard.session, "socket silent for {idle:?}: closing");
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
                close("idle");
                break;
            }
            Some(None) | Some(Some(Err(_))) => break,
            Some(Some(Ok(Message::Close(_)))) => break,
            Some(Some(Ok(frame))) => frame,
        };
        // Every frame counts against the rate limit: binary, oversize and WebSocket
        // pings (each of which costs us a pong) included.
        if !bucket.try_take(Instant::now()) {
            strikes += 1;
            if strikes >= MAX_RATE_STRIKES {
                tracing::warn!(%peer, "request flood: closing socket and ending its session");
                metrics::counter!("roger_ws_flood_closed_total").increment(1);
                // An abusive client gets no grace period to resume in.
                if let Some(sid) = &guard.session {
                    hub.end(sid, "flood");
                    guard.said_bye = true;
                }
                close("request flood");
                break;
            }
            // Only the first refusal of a burst is answered: answering every request of a
            // flood would let the flood drive our own output.
            if strikes == 1 || strikes.is_multiple_of(50) {
                let id = match &frame {
                    Message::Text(t) => decode_client(t).ok().map(|m| m.id),
                    _ => None,
                };
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
        let bad = match frame {
            Message::Text(t) if t.len() > max_bytes => ErrorBody::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "frame of {} bytes is over the {max_bytes}-byte limit",
                    t.len()
                ),
            ),
            Message::Text(text) => {
                let flow = handle_text(&hub, &conn, &mut guard.session, &mut fanout, &text).await;
                if guard.session.is_some() {
                    ticket.authenticated();
                }
                if flow == Flow::Close {
                    guard.said_bye = guard.session.is_some();
                    break;
                }
                continue;
            }
            Message::Binary(_) => ErrorBody::new(
                ErrorCode::MalformedMessage,
                "binary frames are not part of the protocol",
            ),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => continue,
        };
        bad_frames += 1;
        refuse(None, bad);
        if bad_frames >= MAX_BAD_FRAMES {
            tracing::info!(%peer, "{bad_frames} frames outside the protocol: closing");
            metrics::counter!("roger_ws_bad_frames_closed_total").increment(1);
            refuse(
                None,
                ErrorBody::new(
                    ErrorCode::MalformedMessage,
                    format!("{bad_frames} frames outside the protocol: closing"),
                ),
            );
            close("frames outside the protocol");
            break;
        }
    }

    drop(guard);
    drop(conn);
    drop(tx);
    // The writer sends what is queued (a close frame last) within its write deadlines;
    // past them, the socket goes.
    let mut writer = writer;
    if tokio::time::timeout(WRITE_TIMEOUT * 2, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// Detaches the socket's session when the socket's task ends, however it ends.
struct SocketGuard {
    hub: Arc<Hub>,
    conn_id: u64,
    session: Option<SessionId>,
    /// The session ended on purpose (`bye`, flood): nothing to detach.
    said_bye: bool,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            metrics::counter!("roger_socket_panics_total").increment(1);
            tracing::error!(session = ?self.session, "a socket's handler panicked: detaching its session");
        }
        if let (Some(sid), false) = (&self.session, self.said_bye) {
            self.hub.detach(sid, self.conn_id);
        }
        metrics::gauge!("roger_ws_connections").decrement(1.0);
    }
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
/// connection. `fanout` limits the requests that reach every member of a channel.
/// Public so the fuzz target drives exactly what a socket drives.
pub async fn handle_text(
    hub: &Arc<Hub>,
    conn: &Conn,
    session: &mut Option<SessionId>,
    fanout: &mut TokenBucket,
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
    let fans_out = matches!(
        msg.request,
        Request::Join { .. } | Request::Leave { .. } | Request::FloorRequest { .. }
    );
    if fans_out && session.is_some() && !fanout.try_take(Instant::now()) {
        metrics::counter!("roger_fanout_limited_total", "method" => msg.request.method())
            .increment(1);
        refuse(
            Some(id),
            ErrorBody::new(
                ErrorCode::RateLimited,
                "too many join, leave or floor requests (each reaches every member of the channel); slow down",
            ),
        );
        return Flow::Continue;
    }
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
            match hub.floor_request(sid, &channel).await {
                Ok(r) => reply(ServerMessage::ok(id, r)),
                Err(e) => refuse(Some(id), e),
            }
        }
        (Request::FloorRelease { channel }, Some(sid)) => {
            match hub.floor_release(sid, &channel).await {
                Ok(()) => reply(ServerMessage::ok(id, Response::FloorReleased { channel })),
                Err(e) => refuse(Some(id), e),
            }
        }
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
        (Request::History { channel, since_ms }, Some(sid)) => {
            match hub.history_list(sid, &channel, since_ms).await {
                Ok(transmissions) => reply(ServerMessage::ok(
                    id,
                    Response::History {
                        channel,
                        transmissions,
                    },
                )),
                Err(e) => refuse(Some(id), e),
            }
        }
        (Request::HistoryFetch { id: tid, from_ms }, Some(sid)) => {
            match hub.history_fetch(sid, &tid, from_ms).await {
                Ok(r) => reply(ServerMessage::ok(id, r)),
                Err(e) => refuse(Some(id), e),
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Authenticator;
    use crate::config::Config;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panicking_socket_task_still_detaches_its_session() {
        let mut config = Config::default();
        config.media.bind = vec!["127.0.0.1:0".into()];
        let auth = Authenticator::new(&[7u8; 32]);
        let token = auth.issue(
            "alice",
            "alice",
            &["general".into()],
            Duration::from_secs(60),
        );
        let hub = Hub::new(Arc::new(config), auth);
        let (tx, _rx) = mpsc::channel(8);
        let (sid, _) = hub
            .hello(Conn::new(1, tx), PROTOCOL_VERSION, &token, "test")
            .unwrap();
        assert_eq!(hub.health_check().detached, 0);
        let h = hub.clone();
        let task = tokio::spawn(async move {
            let _guard = SocketGuard {
                hub: h,
                conn_id: 1,
                session: Some(sid),
                said_bye: false,
            };
            panic!("a bug in a handler");
        });
        assert!(task.await.unwrap_err().is_panic());
        // Detached: kept for resume during the grace, then ended by the timers.
        let h = hub.health_check();
        assert_eq!((h.sessions, h.detached), (1, 1));
    }
}
