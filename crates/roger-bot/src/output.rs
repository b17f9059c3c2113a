//! What the bot prints: JSON lines (`--json`) or short human lines.

use roger_client::protocol::{ChannelId, ErrorBody};
use roger_client::{ClientEvent, ConnectionManager, FloorEvent, Status as ClientStatus};
use serde_json::{json, Value};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where floor events go on to (the echo bot acts on them).
pub type FloorTx = tokio::sync::mpsc::UnboundedSender<(ChannelId, FloorEvent)>;
type Events = tokio::sync::mpsc::UnboundedReceiver<ClientEvent>;

/// The name in a floor event's `by` field: who holds or took the floor.
fn floor_by(ev: &FloorEvent) -> Option<String> {
    match ev {
        FloorEvent::Denied { holder } => Some(holder.name.clone()),
        FloorEvent::Taken { by } => Some(by.name.clone()),
        _ => None,
    }
}

/// Prints lines; cheap to clone.
#[derive(Clone)]
pub struct Output {
    json: bool,
}

/// Now, in Unix milliseconds (every line's `t_ms`).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Output {
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// One line: with `--json` the object `fields` plus `t_ms` and `event`; otherwise
    /// the human text.
    pub fn line(&self, event: &str, fields: Value, human: impl FnOnce() -> String) {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        if self.json {
            let mut obj = match fields {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            };
            obj.insert("t_ms".into(), json!(unix_ms()));
            obj.insert("event".into(), json!(event));
            let _ = writeln!(lock, "{}", Value::Object(obj));
        } else {
            let _ = writeln!(lock, "{}", human());
        }
        let _ = lock.flush();
    }

    pub fn error(&self, e: &ErrorBody) {
        if self.json {
            self.line(
                "error",
                json!({ "code": e.code, "message": e.message }),
                String::new,
            );
        }
    }

    pub fn stats(&self, session: &ConnectionManager) {
        let s = session.stats();
        self.line(
            "audio",
            json!({
                "frames_sent": s.frames_sent,
                "frames_received": s.frames_received,
                "frames_concealed": s.frames_concealed,
                "frames_recovered": s.frames_recovered,
            }),
            || {
                format!(
                    "audio: {} frames sent, {} received",
                    s.frames_sent, s.frames_received
                )
            },
        );
    }

    pub async fn print_audio_stats(self, session: ConnectionManager) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            if self.json {
                self.stats(&session);
            }
        }
    }

    pub async fn print_events(self, mut events: Events, floor: FloorTx) {
        while let Some(ev) = events.recv().await {
            match ev {
                ClientEvent::Status { status } => {
                    let mut fields = serde_json::to_value(&status).unwrap_or(json!({}));
                    fields["status"] = json!(status.name());
                    if let ClientStatus::Failed { code } = &status {
                        fields["code"] = json!(code);
                    }
                    self.line("status", fields, || format!("status: {}", status.name()));
                }
                ClientEvent::Floor { channel, floor: f } => {
                    let by = floor_by(&f);
                    let mut fields = serde_json::to_value(&f).unwrap_or(json!({}));
                    fields["channel"] = json!(channel);
                    fields["by"] = json!(by);
                    self.line("floor", fields, || match &by {
                        Some(by) => format!("floor {} in {channel}: {by}", f.name()),
                        None => format!("floor {} in {channel}", f.name()),
                    });
                    let _ = floor.send((channel, f));
                }
                ClientEvent::Error { error } => {
                    if self.json {
                        self.error(&error);
                    } else {
                        eprintln!("{}: {}", error.code, error.message);
                    }
                }
                ClientEvent::MemberJoined { channel, member } => self.line(
                    "member_joined",
                    json!({ "channel": channel, "user": member.user, "name": member.name }),
                    || format!("{} joined {channel}", member.name),
                ),
                ClientEvent::MemberLeft { channel, member } => self.line(
                    "member_left",
                    json!({ "channel": channel, "user": member.user, "name": member.name }),
                    || format!("{} left {channel}", member.name),
                ),
                ClientEvent::Recovered { time_to_recover_ms } => self.line(
                    "recovered",
                    json!({ "time_to_recover_ms": time_to_recover_ms }),
                    || format!("reconnected in {:.1} s", time_to_recover_ms as f64 / 1000.0),
                ),
                ClientEvent::MissedReplay {
                    id,
                    channel,
                    by,
                    missed_ms,
                    from_ms,
                } => self.line(
                    "missed_replay",
                    json!({ "channel": channel, "id": id, "by": by.name, "user": by.user,
                        "missed_ms": missed_ms, "from_ms": from_ms }),
                    || {
                        format!(
                            "missed while reconnecting: {}, {:.1} s in {channel} (from {:.1} s in)",
                            by.name,
                            missed_ms as f64 / 1000.0,
                            from_ms as f64 / 1000.0
                        )
                    },
                ),
                ClientEvent::ReplayPaused { channel, paused } => self.line(
                    "replay_paused",
                    json!({ "channel": channel, "paused": paused }),
                    || {
                        if paused {
                            format!("replay in {channel} paused: live audio")
                        } else {
                            format!("replay in {channel} resumed")
                        }
                    },
                ),
                ClientEvent::ReplayDone { channel, played_ms } => self.line(
                    "replay_done",
                    json!({ "channel": channel, "played_ms": played_ms }),
                    || format!("replayed {:.1} s in {channel}", played_ms as f64 / 1000.0),
                ),
                ClientEvent::Welcome { .. }
                | ClientEvent::Joined { .. }
                | ClientEvent::Left { .. }
                | ClientEvent::AudioLevel { .. } => {}
            }
        }
    }
}
