//! `history` and `history_fetch`, and the HTTP download: who may read a channel's
//! history (a token that allows the channel, joined or not).

use super::{session_gone, Hub};
use crate::auth::Claims;
use crate::history::{History, Recorded};
use roger_protocol::*;
use std::sync::Arc;

impl Hub {
    /// The history recorder.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    fn session_claims(&self, session: &SessionId) -> Result<Claims, ErrorBody> {
        let st = self.lock();
        let s = st.sessions.get(session).ok_or_else(session_gone)?;
        Ok(s.claims.clone())
    }

    /// Refuses a channel the server does not have or the token does not allow.
    fn may_read(&self, claims: &Claims, channel: &ChannelId) -> Result<(), ErrorBody> {
        if !self.lock().channels.contains_key(channel) {
            return Err(ErrorBody::new(
                ErrorCode::ChannelNotFound,
                format!("no channel named \"{channel}\""),
            ));
        }
        if !claims.allows(channel) {
            return Err(ErrorBody::new(
                ErrorCode::ChannelNotAllowed,
                format!("your token does not allow \"{channel}\""),
            ));
        }
        Ok(())
    }

    /// `history`: `channel`'s kept transmissions, oldest first.
    pub async fn history_list(
        &self,
        session: &SessionId,
        channel: &ChannelId,
        since_ms: Option<u64>,
    ) -> Result<Vec<Transmission>, ErrorBody> {
        let claims = self.session_claims(session)?;
        self.may_read(&claims, channel)?;
        self.history.list(channel, since_ms).await
    }

    /// `history_fetch`: a transmission's frames from `from_ms` into it.
    pub async fn history_fetch(
        &self,
        session: &SessionId,
        id: &TransmissionId,
        from_ms: u64,
    ) -> Result<Response, ErrorBody> {
        let claims = self.session_claims(session)?;
        let recorded = self.history.fetch(id).await?;
        self.may_read(&claims, &recorded.info.channel)?;
        use base64::Engine;
        let from = from_ms.saturating_mul(48);
        let frames = recorded
            .frames
            .iter()
            .filter(|(offset, _)| u64::from(*offset) >= from)
            .map(|(offset, payload)| HistoryFrame {
                ts: *offset,
                opus: base64::engine::general_purpose::STANDARD.encode(payload),
            })
            .collect();
        Ok(Response::HistoryAudio {
            transmission: recorded.info,
            frames,
        })
    }

    /// A transmission for `GET /history/<id>.ogg`, for the bearer of `token` (checked
    /// like `hello`: signature, expiry, revocation; then the channel).
    pub async fn history_download(
        &self,
        token: &str,
        id: &TransmissionId,
    ) -> Result<Recorded, ErrorBody> {
        let claims = self.auth.verify(token)?;
        if let Some(e) = self.token_refusal(&self.lock(), &claims) {
            return Err(e);
        }
        let recorded = self.history.fetch(id).await?;
        self.may_read(&claims, &recorded.info.channel)?;
        Ok(recorded)
    }
}
