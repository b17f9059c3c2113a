//! Every message of the signaling protocol and the decoders for them.
//!
//! Wire shapes (one JSON object per WebSocket text frame):
//! - client request: `{"id": 7, "method": "join", "params": {"channel": "general"}}`
//! - server response: `{"id": 7, "result": {"type": "joined", ...}}` or
//!   `{"id": 7, "error": {"code": "CHANNEL_NOT_ALLOWED", "message": "..."}}`
//! - server notification: `{"event": "floor_taken", "params": {...}}`

use crate::error::{ErrorBody, ErrorCode};
use crate::types::*;
use serde::{Deserialize, Serialize};

/// A request from client to server, with the id its response will carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientMessage {
    /// Chosen by the client; echoed in the response.
    pub id: RequestId,
    /// What is asked.
    #[serde(flatten)]
    pub request: Request,
}

/// What a client can ask. On the wire: `"method"` names the variant, `"params"` holds its
/// fields (omitted for variants without fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum Request {
    /// First message of a new session.
    Hello {
        /// Must equal the server's [`crate::PROTOCOL_VERSION`].
        protocol_version: u32,
        /// A JWT (HS256) with `sub`, `name`, `channels`, `exp`.
        token: String,
        /// Free-form client description for logs (`"roger-bot/0.1.0"`).
        #[serde(default)]
        client: String,
    },
    /// First message of a reconnecting socket: take over an existing session.
    Resume {
        /// Must equal the server's [`crate::PROTOCOL_VERSION`].
        protocol_version: u32,
        /// From `welcome` (or the last `resumed`).
        resume_token: String,
    },
    /// Join a channel the token allows.
    Join {
        /// The channel.
        channel: ChannelId,
    },
    /// Leave a joined channel.
    Leave {
        /// The channel.
        channel: ChannelId,
    },
    /// An SDP offer for one of the client's transports. The client always offers.
    TransportOffer {
        /// Which transport.
        direction: Direction,
        /// Increases per transport; the answer echoes it.
        negotiation_id: NegotiationId,
        /// The offer SDP.
        sdp: String,
        /// Whether this offer restarts ICE.
        #[serde(default)]
        ice_restart: bool,
    },
    /// Ask to talk in a channel.
    FloorRequest {
        /// The channel.
        channel: ChannelId,
    },
    /// Stop talking in a channel.
    FloorRelease {
        /// The channel.
        channel: ChannelId,
    },
    /// List a channel's recorded transmissions, oldest first. Allowed to any session
    /// whose token allows the channel (joined or not).
    History {
        /// The channel.
        channel: ChannelId,
        /// Only transmissions still going on at or after this time (Unix ms, server
        /// clock): their start plus duration is not before it. Absent: all kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_ms: Option<u64>,
    },
    /// One transmission's audio.
    HistoryFetch {
        /// From `history`.
        id: TransmissionId,
        /// Only frames from this far into it (ms): a listener that heard the start live
        /// fetches just the rest.
        #[serde(default)]
        from_ms: u64,
    },
    /// Liveness check; answered with `pong`.
    Ping,
    /// End the session now (no grace period, no resume).
    Bye,
}

/// Method names a server accepts, so an unknown one can be told from a malformed one.
pub const METHODS: &[&str] = &[
    "hello",
    "resume",
    "join",
    "leave",
    "transport_offer",
    "floor_request",
    "floor_release",
    "history",
    "history_fetch",
    "ping",
    "bye",
];

impl Request {
    /// The wire name of this request's method.
    pub fn method(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Resume { .. } => "resume",
            Request::Join { .. } => "join",
            Request::Leave { .. } => "leave",
            Request::TransportOffer { .. } => "transport_offer",
            Request::FloorRequest { .. } => "floor_request",
            Request::FloorRelease { .. } => "floor_release",
            Request::History { .. } => "history",
            Request::HistoryFetch { .. } => "history_fetch",
            Request::Ping => "ping",
            Request::Bye => "bye",
        }
    }
}

/// A successful result. `"type"` names the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Answer to `hello`: the session exists.
    Welcome(Welcome),
    /// Answer to `resume`: the old session is this socket's again.
    Resumed(Resumed),
    /// Answer to `join`.
    Joined {
        /// The channel's state, including the caller's downlink SSRC.
        channel: ChannelState,
    },
    /// Answer to `leave`.
    Left {
        /// The channel left.
        channel: ChannelId,
    },
    /// Answer to `transport_offer`.
    TransportAnswer {
        /// Which transport.
        direction: Direction,
        /// Echoes the offer's id.
        negotiation_id: NegotiationId,
        /// The answer SDP (all candidates included; no trickle).
        sdp: String,
    },
    /// Answer to `floor_request`: you may talk.
    FloorGranted {
        /// The channel.
        channel: ChannelId,
        /// The server revokes the floor after this long (max talk time).
        expires_in_ms: u64,
    },
    /// Answer to `floor_request`: someone else is talking.
    FloorDenied {
        /// The channel.
        channel: ChannelId,
        /// Who holds the floor.
        holder: Member,
    },
    /// Answer to `floor_release`.
    FloorReleased {
        /// The channel.
        channel: ChannelId,
    },
    /// Answer to `history`.
    History {
        /// The channel.
        channel: ChannelId,
        /// Oldest first.
        transmissions: Vec<Transmission>,
    },
    /// Answer to `history_fetch`.
    HistoryAudio {
        /// Which transmission (its duration so far, if it is still going on).
        transmission: Transmission,
        /// Its frames from `from_ms` on, in order.
        frames: Vec<HistoryFrame>,
    },
    /// Answer to `ping`.
    Pong {
        /// The server's clock, Unix milliseconds (for diagnostics only).
        server_time_ms: u64,
    },
    /// Answer to `bye`.
    Goodbye,
}

/// Contents of `welcome`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The new session.
    pub session_id: SessionId,
    /// Present this in `resume` to take the session over after a signaling drop.
    pub resume_token: String,
    /// Who the token says you are.
    pub user: Member,
    /// The protocol version the server speaks (equal to the client's).
    pub protocol_version: u32,
    /// The server's software version, for diagnostics.
    pub server_version: String,
    /// STUN/TURN servers for the transports (TURN credentials are time-limited).
    pub ice_servers: Vec<IceServer>,
    /// Send `ping` this often; the server drops a socket silent for 3 intervals.
    pub ping_interval_ms: u64,
    /// How long the server keeps this session after the socket drops.
    pub session_grace_ms: u64,
    /// How long a floor holder keeps the floor after its connection is lost.
    pub floor_grace_ms: u64,
    /// The longest a floor grant lasts.
    pub max_talk_ms: u64,
    /// Channels the token allows (and the server has).
    pub channels: Vec<ChannelInfo>,
    /// In a cluster: the public URLs of the live nodes (this one first), where the
    /// session can be resumed if this node is lost. Empty for a single server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

/// Contents of `resumed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resumed {
    /// The same session as before.
    pub session_id: SessionId,
    /// A fresh resume token (the old one is spent).
    pub resume_token: String,
    /// Fresh ICE servers (TURN credentials may have been renewed).
    pub ice_servers: Vec<IceServer>,
    /// Ping interval, as in `welcome`.
    pub ping_interval_ms: u64,
    /// The channels the session is still in, with their current state.
    pub channels: Vec<ChannelState>,
    /// Transports the server still holds for this session. A transport missing here must
    /// be recreated with a fresh offer.
    pub transports: Vec<Direction>,
    /// Channels whose floor this session still holds (kept through the floor grace).
    #[serde(default)]
    pub floors_held: Vec<ChannelId>,
    /// In a cluster: the live nodes' public URLs, as in `welcome`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

/// Something the server tells a client without being asked. `"event"` names the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "params", rename_all = "snake_case")]
pub enum Notification {
    /// Someone joined a channel you are in.
    MemberJoined {
        /// The channel.
        channel: ChannelId,
        /// Who.
        member: Member,
    },
    /// Someone left a channel you are in.
    MemberLeft {
        /// The channel.
        channel: ChannelId,
        /// Who.
        member: Member,
    },
    /// Someone started talking.
    FloorTaken {
        /// The channel.
        channel: ChannelId,
        /// The talker.
        by: Member,
        /// Until the server revokes it at the latest.
        expires_in_ms: u64,
    },
    /// Nobody is talking any more.
    FloorIdle {
        /// The channel.
        channel: ChannelId,
    },
    /// You lost the floor without releasing it.
    FloorRevoked {
        /// The channel.
        channel: ChannelId,
        /// Why.
        reason: RevokeReason,
    },
    /// The server is shutting down; reconnect after this long.
    ServerDraining {
        /// Suggested delay before reconnecting.
        reconnect_after_ms: u64,
        /// In a cluster: other live nodes to resume on at once (public URLs).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        nodes: Vec<String>,
    },
    /// An error that belongs to no request (for example a frame that was not JSON).
    Error(ErrorBody),
}

/// What the server sends a response envelope's outcome as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Success.
    #[serde(rename = "result")]
    Ok(Response),
    /// Refusal.
    #[serde(rename = "error")]
    Err(ErrorBody),
}

/// A response to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    /// The request's id.
    pub id: RequestId,
    /// Result or error.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Anything the server sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ServerMessage {
    /// A response to a request.
    Response(ResponseMessage),
    /// A push.
    Notification(Notification),
}

impl ServerMessage {
    /// A successful response.
    pub fn ok(id: RequestId, response: Response) -> Self {
        ServerMessage::Response(ResponseMessage {
            id,
            outcome: Outcome::Ok(response),
        })
    }

    /// An error response.
    pub fn err(id: RequestId, error: ErrorBody) -> Self {
        ServerMessage::Response(ResponseMessage {
            id,
            outcome: Outcome::Err(error),
        })
    }

    /// Serializes to one text frame.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string and no value
        // is a non-finite float.
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

impl ClientMessage {
    /// Serializes to one text frame.
    pub fn to_json(&self) -> String {
        // Cannot fail; see ServerMessage::to_json.
        serde_json::to_string(self).expect("client messages always serialize")
    }
}

/// A frame that could not be turned into a typed message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error}")]
pub struct DecodeError {
    /// The request id, when it could be read, so the refusal can be correlated.
    pub id: Option<RequestId>,
    /// `MALFORMED_MESSAGE` or `UNKNOWN_METHOD`, with details.
    pub error: ErrorBody,
}

impl DecodeError {
    fn malformed(id: Option<RequestId>, message: impl Into<String>) -> Self {
        DecodeError {
            id,
            error: ErrorBody::new(ErrorCode::MalformedMessage, message),
        }
    }
}

/// Decodes a client frame. Unknown fields are ignored; an unknown method is
/// `UNKNOWN_METHOD` (with the id); anything else that does not fit is `MALFORMED_MESSAGE`.
pub fn decode_client(text: &str) -> Result<ClientMessage, DecodeError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| DecodeError::malformed(None, format!("not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| DecodeError::malformed(None, "expected a JSON object"))?;
    let id = obj.get("id").and_then(|v| v.as_u64());
    let Some(id_value) = id else {
        return Err(DecodeError::malformed(
            None,
            "missing or invalid \"id\" (a non-negative integer)",
        ));
    };
    let method = obj
        .get("method")
        .and_then(|v| v.as_str())
        .ok_or_else(|| DecodeError::malformed(id, "missing \"method\" (a string)"))?
        .to_owned();
    let method = method.as_str();
    if !METHODS.contains(&method) {
        return Err(DecodeError {
            id,
            error: ErrorBody::new(
                ErrorCode::UnknownMethod,
                // Cut short: an error must not echo a frame's worth of a stranger's text.
                format!(
                    "unknown method {:?}",
                    method.chars().take(64).collect::<String>()
                ),
            ),
        });
    }
    // A method without parameters (`ping`, `bye`) may still carry `"params": {}` or
    // `null`: other stacks send an empty object with every request.
    let mut value = value;
    if matches!(method, "ping" | "bye") {
        if let Some(obj) = value.as_object_mut() {
            let empty = obj
                .get("params")
                .is_some_and(|p| p.is_null() || p.as_object().is_some_and(|o| o.is_empty()));
            if empty {
                obj.remove("params");
            }
        }
    }
    let request = Request::deserialize(&value)
        .map_err(|e| DecodeError::malformed(id, format!("bad {method} request: {e}")))?;
    Ok(ClientMessage {
        id: id_value,
        request,
    })
}

/// Decodes a server frame (a response if it has `"id"`, a notification if it has
/// `"event"`).
pub fn decode_server(text: &str) -> Result<ServerMessage, DecodeError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| DecodeError::malformed(None, format!("not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| DecodeError::malformed(None, "expected a JSON object"))?;
    if obj.contains_key("id") {
        let id = obj.get("id").and_then(|v| v.as_u64());
        ResponseMessage::deserialize(&value)
            .map(ServerMessage::Response)
            .map_err(|e| DecodeError::malformed(id, format!("bad response: {e}")))
    } else if obj.contains_key("event") {
        Notification::deserialize(&value)
            .map(ServerMessage::Notification)
            .map_err(|e| DecodeError::malformed(None, format!("bad notification: {e}")))
    } else {
        Err(DecodeError::malformed(
            None,
            "neither a response (\"id\") nor a notification (\"event\")",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTOCOL_VERSION;

    fn member(name: &str) -> Member {
        Member {
            user: UserId::from(name),
            name: name.to_uppercase(),
        }
    }

    fn all_requests() -> Vec<Request> {
        vec![
            Request::Hello {
                protocol_version: PROTOCOL_VERSION,
                token: "t".into(),
                client: "test".into(),
            },
            Request::Resume {
                protocol_version: PROTOCOL_VERSION,
                resume_token: "r".into(),
            },
            Request::Join {
                channel: "general".into(),
            },
            Request::Leave {
                channel: "general".into(),
            },
            Request::TransportOffer {
                direction: Direction::Recv,
                negotiation_id: 3,
                sdp: "v=0\r\n".into(),
                ice_restart: true,
            },
            Request::FloorRequest {
                channel: "general".into(),
            },
            Request::FloorRelease {
                channel: "general".into(),
            },
            Request::History {
                channel: "general".into(),
                since_ms: Some(1_700_000_000_000),
            },
            Request::HistoryFetch {
                id: "18c3f0a2b41-9f3e2a10".into(),
                from_ms: 2_300,
            },
            Request::Ping,
            Request::Bye,
        ]
    }

    fn transmission() -> Transmission {
        Transmission {
            id: "18c3f0a2b41-9f3e2a10".into(),
            channel: "general".into(),
            by: member("alice"),
            start_ms: 1_700_000_000_000,
            duration_ms: 4_180,
            ended: true,
        }
    }

    #[test]
    fn every_request_round_trips_and_its_method_is_known() {
        for (i, request) in all_requests().into_iter().enumerate() {
            let msg = ClientMessage {
                id: i as u64,
                request,
            };
            let json = msg.to_json();
            let back = decode_client(&json).unwrap();
            assert_eq!(back, msg, "{json}");
            assert!(METHODS.contains(&msg.request.method()));
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["method"], msg.request.method());
        }
        assert_eq!(METHODS.len(), all_requests().len());
    }

    #[test]
    fn every_response_and_notification_round_trips() {
        let state = ChannelState {
            id: "general".into(),
            members: vec![member("alice")],
            floor: FloorState::Taken {
                holder: member("bob"),
                expires_in_ms: 1000,
            },
            downlink_ssrc: 42,
            recv_slots: 1,
        };
        let responses = vec![
            Response::Welcome(Welcome {
                session_id: "s".into(),
                resume_token: "r".into(),
                user: member("alice"),
                protocol_version: 1,
                server_version: "0.1.0".into(),
                ice_servers: vec![IceServer {
                    urls: vec!["turn:127.0.0.1:3478".into()],
                    username: "1:alice".into(),
                    credential: "x".into(),
                }],
                ping_interval_ms: 1000,
                session_grace_ms: 30000,
                floor_grace_ms: 5000,
                max_talk_ms: 60000,
                channels: vec![ChannelInfo {
                    id: "general".into(),
                    description: String::new(),
                }],
                nodes: vec!["ws://198.18.0.1:9000/ws".into()],
            }),
            Response::Resumed(Resumed {
                session_id: "s".into(),
                resume_token: "r2".into(),
                ice_servers: vec![],
                ping_interval_ms: 1000,
                channels: vec![state.clone()],
                transports: vec![Direction::Send],
                floors_held: vec!["general".into()],
                nodes: vec![],
            }),
            Response::Joined { channel: state },
            Response::Left {
                channel: "general".into(),
            },
            Response::TransportAnswer {
                direction: Direction::Send,
                negotiation_id: 9,
                sdp: "v=0".into(),
            },
            Response::FloorGranted {
                channel: "general".into(),
                expires_in_ms: 60000,
            },
            Response::FloorDenied {
                channel: "general".into(),
                holder: member("bob"),
            },
            Response::FloorReleased {
                channel: "general".into(),
            },
            Response::History {
                channel: "general".into(),
                transmissions: vec![transmission()],
            },
            Response::HistoryAudio {
                transmission: transmission(),
                frames: vec![HistoryFrame {
                    ts: 960,
                    opus: "+AEC".into(),
                }],
            },
            Response::Pong { server_time_ms: 5 },
            Response::Goodbye,
        ];
        for (i, r) in responses.into_iter().enumerate() {
            let msg = ServerMessage::ok(i as u64, r);
            let back = decode_server(&msg.to_json()).unwrap();
            assert_eq!(back.to_json(), msg.to_json());
            match (back, msg) {
                (ServerMessage::Response(a), ServerMessage::Response(b)) => assert_eq!(a, b),
                _ => panic!("kind changed"),
            }
        }
        let err = ServerMessage::err(4, ErrorBody::new(ErrorCode::TokenExpired, "old"));
        let json = err.to_json();
        assert_eq!(
            json,
            r#"{"id":4,"error":{"code":"TOKEN_EXPIRED","message":"old"}}"#
        );
        assert_eq!(decode_server(&json).unwrap().to_json(), json);

        let notes = vec![
            Notification::MemberJoined {
                channel: "g".into(),
                member: member("a"),
            },
            Notification::MemberLeft {
                channel: "g".into(),
                member: member("a"),
            },
            Notification::FloorTaken {
                channel: "g".into(),
                by: member("a"),
                expires_in_ms: 5,
            },
            Notification::FloorIdle {
                channel: "g".into(),
            },
            Notification::FloorRevoked {
                channel: "g".into(),
                reason: RevokeReason::MaxTalkTime,
            },
            Notification::ServerDraining {
                reconnect_after_ms: 100,
                nodes: vec![],
            },
            Notification::ServerDraining {
                reconnect_after_ms: 0,
                nodes: vec!["ws://198.18.0.2:9000/ws".into()],
            },
            Notification::Error(ErrorBody::new(ErrorCode::MalformedMessage, "x")),
        ];
        for n in notes {
            let msg = ServerMessage::Notification(n.clone());
            match decode_server(&msg.to_json()).unwrap() {
                ServerMessage::Notification(back) => assert_eq!(back, n),
                other => panic!("decoded as {other:?}"),
            }
        }
    }

    #[test]
    fn the_wire_shape_is_the_documented_one() {
        let msg = ClientMessage {
            id: 7,
            request: Request::Join {
                channel: "general".into(),
            },
        };
        assert_eq!(
            msg.to_json(),
            r#"{"id":7,"method":"join","params":{"channel":"general"}}"#
        );
        let ping = ClientMessage {
            id: 8,
            request: Request::Ping,
        };
        assert_eq!(ping.to_json(), r#"{"id":8,"method":"ping"}"#);
        let n = ServerMessage::Notification(Notification::FloorIdle {
            channel: "general".into(),
        });
        assert_eq!(
            n.to_json(),
            r#"{"event":"floor_idle","params":{"channel":"general"}}"#
        );
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let m = decode_client(
            r#"{"id":1,"method":"join","params":{"channel":"g","colour":"red"},"extra":true}"#,
        )
        .unwrap();
        assert_eq!(
            m.request,
            Request::Join {
                channel: "g".into()
            }
        );
    }

    #[test]
    fn ping_and_bye_take_empty_params_as_other_stacks_send_them() {
        for (text, want) in [
            (r#"{"id":1,"method":"ping","params":{}}"#, Request::Ping),
            (r#"{"id":1,"method":"ping","params":null}"#, Request::Ping),
            (r#"{"id":1,"method":"bye","params":{}}"#, Request::Bye),
            (r#"{"id":1,"method":"bye"}"#, Request::Bye),
        ] {
            assert_eq!(decode_client(text).unwrap().request, want, "{text}");
        }
        // Parameters a method without any cannot have are still refused.
        assert!(decode_client(r#"{"id":1,"method":"ping","params":{"x":1}}"#).is_err());
    }

    #[test]
    fn an_unknown_method_is_reported_with_its_request_id() {
        let e = decode_client(r#"{"id":12,"method":"teleport","params":{}}"#).unwrap_err();
        assert_eq!(e.id, Some(12));
        assert_eq!(e.error.code, ErrorCode::UnknownMethod);
        assert!(e.error.message.contains("teleport"));
    }

    #[test]
    fn an_unknown_method_is_not_echoed_at_length() {
        // A stranger's 60 KB method name must not come back 60 KB long: answers to
        // junk would otherwise fill the socket's outbound queue faster than the junk.
        let long = "x".repeat(60_000);
        let text = format!(r#"{{"id":1,"method":"{long}"}}"#);
        let e = decode_client(&text).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::UnknownMethod);
        assert!(
            e.error.message.len() < 100,
            "{} bytes",
            e.error.message.len()
        );
    }

    #[test]
    fn malformed_frames_are_refused_with_malformed_message() {
        for (text, id) in [
            ("not json", None),
            ("[1,2]", None),
            (r#"{"method":"ping"}"#, None),
            (r#"{"id":-1,"method":"ping"}"#, None),
            (r#"{"id":3}"#, Some(3)),
            (r#"{"id":3,"method":"join","params":{}}"#, Some(3)),
            (
                r#"{"id":3,"method":"join","params":{"channel":5}}"#,
                Some(3),
            ),
        ] {
            let e = decode_client(text).unwrap_err();
            assert_eq!(e.error.code, ErrorCode::MalformedMessage, "{text}");
            assert_eq!(e.id, id, "{text}");
        }
    }

    #[test]
    fn a_server_frame_that_is_neither_kind_is_malformed() {
        let e = decode_server(r#"{"hello":1}"#).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::MalformedMessage);
    }
}
