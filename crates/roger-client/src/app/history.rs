//! Channel history in the app: a channel's recent transmissions (who, when, how long,
//! unplayed marked), and playing one back through the speaker (live audio wins).
//!
//! A transmission is played once this app heard it: live (it fell inside a time this
//! app was connected with the channel selected), replayed after a reconnect, or played
//! from the list. The played ids are kept in the config dir, so what arrived while the
//! app was closed stays unplayed across launches.

use super::{lock, not_connected, App};
use crate::event::{ClientEvent, Status};
use roger_protocol::{ChannelId, ErrorBody, ErrorCode, Transmission, TransmissionId};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::path::Path;

/// One transmission as the window lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct HistoryEntry {
    /// Its id, for [`App::play_transmission`].
    pub id: String,
    /// Who said it (display name).
    pub by: String,
    /// When it started, Unix ms (this machine's clock).
    pub start_ms: u64,
    /// How long it is.
    pub duration_ms: u64,
    /// Not heard by this app yet.
    pub unplayed: bool,
    /// Still being said.
    pub live: bool,
}

/// The played ids kept (the newest; a channel keeps 50 by default).
const KEEP_PLAYED: usize = 2_000;
/// The file in the config dir.
const FILE: &str = "played.json";

/// What this app has heard.
#[derive(Default)]
pub(super) struct Heard {
    played: VecDeque<TransmissionId>,
    /// Per channel, the times (local Unix ms) this app listened to it: connected with it
    /// selected. The open one has no end yet.
    listening: HashMap<ChannelId, Vec<(u64, Option<u64>)>>,
    /// The channel listened to now.
    now: Option<ChannelId>,
}

#[derive(Serialize, Deserialize)]
struct PlayedFile {
    played: Vec<TransmissionId>,
}

impl Heard {
    pub(super) fn load(dir: &Path) -> Heard {
        let played = std::fs::read_to_string(dir.join(FILE))
            .ok()
            .and_then(|t| serde_json::from_str::<PlayedFile>(&t).ok())
            .map(|f| f.played.into())
            .unwrap_or_default();
        Heard {
            played,
            ..Heard::default()
        }
    }

    fn save(&self, dir: &Path) {
        let file = PlayedFile {
            played: self.played.iter().cloned().collect(),
        };
        let text = serde_json::to_string(&file).unwrap_or_default();
        if let Err(e) = std::fs::write(dir.join(FILE), text) {
            tracing::warn!(error = %e, "cannot keep which transmissions were played");
        }
    }

    fn mark(&mut self, id: &TransmissionId) -> bool {
        if self.played.contains(id) {
            return false;
        }
        self.played.push_back(id.clone());
        while self.played.len() > KEEP_PLAYED {
            self.played.pop_front();
        }
        true
    }

    /// Follows what the app listens to: `listening` is the channel selected while
    /// connected (None otherwise).
    pub(super) fn listen(&mut self, listening: Option<&ChannelId>, now_ms: u64) {
        if self.now.as_ref() == listening {
            return;
        }
        if let Some(prev) = self.now.take() {
            if let Some(open) = self
                .listening
                .get_mut(&prev)
                .and_then(|v| v.last_mut())
                .filter(|(_, end)| end.is_none())
            {
                open.1 = Some(now_ms);
            }
        }
        if let Some(ch) = listening {
            let spans = self.listening.entry(ch.clone()).or_default();
            spans.push((now_ms, None));
            if spans.len() > 200 {
                spans.remove(0);
            }
            self.now = Some(ch.clone());
        }
    }

    /// Whether this app listened to `channel` all through `from..to` (local ms).
    fn heard_live(&self, channel: &ChannelId, from: u64, to: u64) -> bool {
        self.listening.get(channel).is_some_and(|spans| {
            spans
                .iter()
                .any(|&(a, b)| a <= from && b.is_none_or(|b| to <= b))
        })
    }
}

impl App {
    /// Follows an event for the history: a replay marks its transmission played; the
    /// status and the channel say what the app is listening to.
    pub(super) fn heard(&self, event: Option<&ClientEvent>, now_ms: u64) {
        let (listening, replayed) = {
            let view = lock(&self.inner.view);
            let up = matches!(
                view.state().status,
                Status::Connected | Status::Degraded { .. }
            );
            let listening = up.then(|| view.state().channel.clone()).flatten();
            let replayed = match event {
                Some(ClientEvent::MissedReplay { id, .. }) => Some(id.clone()),
                _ => None,
            };
            (listening, replayed)
        };
        let mut heard = lock(&self.inner.heard);
        heard.listen(listening.as_ref(), now_ms);
        if let Some(id) = replayed {
            if heard.mark(&id) {
                heard.save(&self.inner.config_dir);
            }
        }
    }

    /// `channel`'s recent transmissions, newest first, unplayed marked.
    pub async fn channel_history(&self, channel: String) -> Result<Vec<HistoryEntry>, ErrorBody> {
        let manager = self.manager().ok_or_else(not_connected)?;
        let channel = ChannelId(channel);
        let list = manager.history(&channel).await?;
        let mut heard = lock(&self.inner.heard);
        let mut changed = false;
        let mut out: Vec<HistoryEntry> = list
            .into_iter()
            .map(|t: Transmission| {
                let start = manager.local_time(t.start_ms);
                let mut unplayed = !heard.played.contains(&t.id);
                if unplayed && heard.heard_live(&channel, start, start + t.duration_ms) {
                    changed |= heard.mark(&t.id);
                    unplayed = false;
                }
                HistoryEntry {
                    id: t.id.0,
                    by: t.by.name,
                    start_ms: start,
                    duration_ms: t.duration_ms,
                    unplayed: unplayed && t.ended,
                    live: !t.ended,
                }
            })
            .collect();
        if changed {
            heard.save(&self.inner.config_dir);
        }
        out.reverse();
        Ok(out)
    }

    /// Plays a recorded transmission (after any live audio; replacing one playing).
    pub async fn play_transmission(&self, id: String) -> Result<(), ErrorBody> {
        let manager = self.manager().ok_or_else(not_connected)?;
        let id = TransmissionId(id);
        let (t, pcm) = manager.history_audio(&id).await?;
        let speaker = lock(&self.inner.speaker).clone().ok_or_else(|| {
            ErrorBody::new(ErrorCode::MediaDeviceError, "no speaker to play it on")
        })?;
        speaker.stop_replay();
        let mut sink = speaker.clone();
        crate::audio::AudioSink::replay(&mut sink, &t.channel, &pcm);
        let mut heard = lock(&self.inner.heard);
        if heard.mark(&id) {
            heard.save(&self.inner.config_dir);
        }
        Ok(())
    }

    /// Stops what [`App::play_transmission`] (or a replay) is playing.
    pub fn stop_playback(&self) {
        if let Some(m) = self.manager() {
            m.stop_replay();
        }
        if let Some(s) = lock(&self.inner.speaker).as_ref() {
            s.stop_replay();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transmission_inside_a_time_the_app_listened_was_heard_live() {
        let mut h = Heard::default();
        let ch: ChannelId = "general".into();
        h.listen(Some(&ch), 1_000);
        h.listen(None, 5_000); // disconnected
        h.listen(Some(&ch), 9_000); // back
        assert!(h.heard_live(&ch, 2_000, 4_000));
        assert!(!h.heard_live(&ch, 4_000, 6_000), "cut by the outage");
        assert!(!h.heard_live(&ch, 6_000, 7_000), "said while away");
        assert!(h.heard_live(&ch, 9_500, 20_000), "the open span");
        assert!(!h.heard_live(&"other".into(), 2_000, 3_000));
    }

    #[test]
    fn played_ids_survive_a_restart_and_the_oldest_go() {
        let dir = std::env::temp_dir().join(format!("roger-played-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = Heard::load(&dir);
        assert!(h.mark(&"a".into()));
        assert!(!h.mark(&"a".into()));
        h.save(&dir);
        let h2 = Heard::load(&dir);
        assert!(h2.played.contains(&"a".into()));
        let mut h3 = Heard::default();
        for i in 0..KEEP_PLAYED + 1 {
            h3.mark(&TransmissionId(i.to_string()));
        }
        assert_eq!(h3.played.len(), KEEP_PLAYED);
        assert!(!h3.played.contains(&"0".into()));
        let _ = std::fs::remove_dir_all(dir);
    }
}
