//! A token means what it says for as long as it says: a session ends when its token
//! expires or is revoked, not only at `hello`.
//!
//! A session ended for its token leaves a tombstone under its resume token for the
//! session grace, so a client that tries to `resume` learns the real reason
//! (`TOKEN_EXPIRED`, or `TOKEN_INVALID` for a revoked token) and asks its user to sign
//! in, instead of being told the session is merely gone.

use super::{Hub, HubState};
use crate::auth::{unix_now, Claims};
use crate::revoke::Revocations;
use roger_protocol::*;
use std::time::{Duration, Instant};

/// When `claims` stop being valid, as an `Instant` on this process's clock.
pub(super) fn expiry_instant(claims: &Claims, now: Instant) -> Instant {
    let now_ms = super::unix_ms();
    now + Duration::from_millis(claims.exp.saturating_mul(1000).saturating_sub(now_ms))
}

pub(super) fn expired_error() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::TokenExpired,
        "your token has expired: sign in again",
    )
}

pub(super) fn revoked_error() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::TokenInvalid,
        "your access was revoked: sign in again",
    )
}

impl Hub {
    /// Why `claims` are no longer accepted, if they are not.
    pub(super) fn token_refusal(&self, st: &HubState, claims: &Claims) -> Option<ErrorBody> {
        if claims.exp <= unix_now() {
            Some(expired_error())
        } else if st.revoked.refuses(claims) {
            Some(revoked_error())
        } else {
            None
        }
    }

    /// Tells the session why, closes its socket and ends it at once (no grace), leaving
    /// a tombstone for its resume token.
    pub(super) fn end_for_token(
        &self,
        st: &mut HubState,
        id: &SessionId,
        error: ErrorBody,
        now: Instant,
    ) {
        let Some(s) = st.sessions.get(id) else {
            return;
        };
        if let Some(c) = &s.conn {
            c.end_with(error.clone(), error.code.as_str());
        }
        let why = if error.code == ErrorCode::TokenExpired {
            "token_expired"
        } else {
            "token_revoked"
        };
        st.tombstones.insert(
            s.resume_token.clone(),
            (error, now + self.config.session_grace()),
        );
        self.end_session(st, id, why);
    }

    /// Ends every session whose token expired by `now`; forgets old tombstones.
    pub(super) fn end_expired_tokens(&self, st: &mut HubState, now: Instant) {
        let expired: Vec<SessionId> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.end_for_token(st, &id, expired_error(), now);
        }
        st.tombstones.retain(|_, (_, until)| *until > now);
    }

    /// Puts a new revocation list in force: every session it voids is ended now.
    pub fn set_revocations(&self, revoked: Revocations) {
        let now = Instant::now();
        let mut st = self.lock();
        st.revoked = revoked;
        let void: Vec<SessionId> = st
            .sessions
            .iter()
            .filter(|(_, s)| st.revoked.refuses(&s.claims))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &void {
            self.end_for_token(&mut st, id, revoked_error(), now);
        }
        if !void.is_empty() {
            tracing::info!(sessions = void.len(), "revoked sessions ended");
            super::publish_gauges(&st);
        }
    }
}
