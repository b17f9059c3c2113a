//! Floor control for one channel: a pure state machine.
//!
//! It never reads the clock: every call takes `now`, and the owner asks
//! [`Floor::poll_timeout`] when to call [`Floor::handle_timeout`] next. That makes the
//! max-talk-time and grace rules testable on virtual time.
//!
//! Rules:
//! - A request when the floor is idle is granted for `max_talk`; a request while someone
//!   else holds it is denied with the holder's name (no queue: PTT users retry by
//!   pressing again, as on a radio).
//! - A request by the current holder is granted again with the time it has left (a
//!   client re-acquiring the floor after a reconnect keeps its original deadline).
//! - Only the holder can release.
//! - The floor is revoked at `max_talk`, when the holder leaves, and when the holder's
//!   connection has been lost for longer than `grace`.

use roger_protocol::{Member, RevokeReason, SessionId};
use std::time::{Duration, Instant};

/// Who holds the floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The talking session.
    pub session: SessionId,
    /// Its member record (for `denied` and `floor_taken`).
    pub member: Member,
    /// When the grant ends.
    pub expires_at: Instant,
    /// When the holder's connection was lost, if it is lost now.
    pub lost_at: Option<Instant>,
}

/// The result of a floor request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Talk; the grant ends after this long.
    Granted {
        /// Remaining talk time.
        expires_in: Duration,
        /// False when the caller already held the floor (no change to announce).
        newly_taken: bool,
    },
    /// Someone else holds it.
    Denied {
        /// The holder.
        holder: Member,
    },
}

/// A revocation the owner must announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The session that lost the floor.
    pub session: SessionId,
    /// Why.
    pub reason: RevokeReason,
}

/// Floor state for one channel.
#[derive(Debug, Clone)]
pub struct Floor {
    max_talk: Duration,
    grace: Duration,
    holder: Option<Holder>,
}

impl Floor {
    /// An idle floor with the channel's limits.
    pub fn new(max_talk: Duration, grace: Duration) -> Self {
        Floor {
            max_talk,
            grace,
            holder: None,
        }
    }

    /// Makes `session` the holder until `expires_at` whatever the floor was: a holder
    /// taken over from another node of the cluster, with the deadline it had there.
    pub fn restore(&mut self, session: &SessionId, member: &Member, expires_at: Instant) {
        self.holder = Some(Holder {
            session: session.clone(),
            member: member.clone(),
            expires_at,
            lost_at: None,
        });
    }

    /// The current holder.
    pub fn holder(&self) -> Option<&Holder> {
        self.holder.as_ref()
    }

    /// Handles a floor request from `session`.
    pub fn request(
        &mut self,
        now: Instant,
        session: &SessionId,
        member: &Member,
    ) -> RequestOutcome {
        match &mut self.holder {
            Some(h) if &h.session == session => {
                h.lost_at = None;
                RequestOutcome::Granted {
                    expires_in: h.expires_at.saturating_duration_since(now),
                    newly_taken: false,
                }
            }
            Some(h) => RequestOutcome::Denied {
                holder: h.member.clone(),
            },
            None => {
                self.holder = Some(Holder {
                    session: session.clone(),
                    member: member.clone(),
                    expires_at: now + self.max_talk,
                    lost_at: None,
                });
                RequestOutcome::Granted {
                    expires_in: self.max_talk,
                    newly_taken: true,
                }
            }
        }
    }

    /// Handles a release. Returns false (and changes nothing) if `session` is not the holder.
    pub fn release(&mut self, session: &SessionId) -> bool {
        if self.holder.as_ref().is_some_and(|h| &h.session == session) {
            self.holder = None;
            true
        } else {
            false
        }
    }

    /// The session left the channel: if it held the floor, that is a revocation.
    pub fn remove(&mut self, session: &SessionId) -> Option<Revoked> {
        self.release(session).then(|| Revoked {
            session: session.clone(),
            reason: RevokeReason::Left,
        })
    }

    /// Revokes whoever holds the floor (server shutting down).
    pub fn revoke_all(&mut self, reason: RevokeReason) -> Option<Revoked> {
        self.holder.take().map(|h| Revoked {
            session: h.session,
            reason,
        })
    }

    /// The holder's connection was lost at `now`; it keeps the floor for the grace period.
    pub fn connection_lost(&mut self, now: Instant, session: &SessionId) {
        if let Some(h) = self.holder.as_mut().filter(|h| &h.session == session) {
            h.lost_at.get_or_insert(now);
        }
    }

    /// The holder's connection is back: the grace timer stops.
    pub fn connection_restored(&mut self, session: &SessionId) {
        if let Some(h) = self.holder.as_mut().filter(|h| &h.session == session) {
            h.lost_at = None;
        }
    }

    /// When [`Floor::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let h = self.holder.as_ref()?;
        Some(match h.lost_at {
            Some(lost) => h.expires_at.min(lost + self.grace),
            None => h.expires_at,
        })
    }

    /// Applies the deadlines that have passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Revoked> {
        let h = self.holder.as_ref()?;
        let reason = if now >= h.expires_at {
            RevokeReason::MaxTalkTime
        } else if h.lost_at.is_some_and(|lost| now >= lost + self.grace) {
            RevokeReason::ConnectionLost
        } else {
            return None;
        };
        self.revoke_all(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str) -> Member {
        Member {
            user: name.into(),
            name: name.into(),
        }
    }
    fn s(name: &str) -> SessionId {
        SessionId(name.into())
    }
    fn floor() -> Floor {
        Floor::new(Duration::from_secs(60), Duration::from_secs(5))
    }

    #[test]
    fn an_idle_floor_is_granted_for_the_max_talk_time() {
        let t0 = Instant::now();
        let mut f = floor();
        assert_eq!(
            f.request(t0, &s("a"), &m("alice")),
            RequestOutcome::Granted {
                expires_in: Duration::from_secs(60),
                newly_taken: true
            }
        );
        assert_eq!(f.holder().unwrap().member, m("alice"));
    }

    #[test]
    fn a_busy_floor_is_denied_with_the_holders_name() {
        let t0 = Instant::now();
        let mut f = floor();
        f.request(t0, &s("a"), &m("alice"));
        assert_eq!(
            f.request(t0, &s("c"), &m("carol")),
            RequestOutcome::Denied { holder: m("alice") }
        );
    }

    #[test]
    fn the_next_talker_is_granted_after_a_release() {
        let t0 = Instant::now();
        let mut f = floor();
        f.request(t0, &s("a"), &m("alice"));
        assert!(f.release(&s("a")));
        assert!(matches!(
            f.request(t0, &s("c"), &m("carol")),
            RequestOutcome::Granted {
                newly_taken: true,
                ..
            }
        ));
    }

    #[test]
    fn only_the_holder_can_release() {
        let t0 = Instant::now();
        let mut f = floor();
        f.request(t0, &s("a"), &m("alice"));
        assert!(!f.release(&s("b")));
        assert_eq!(f.holder().unwrap().session, s("a"));
        assert!(!floor().release(&s("a")));
    }

    #[test]
    fn the_holder_asking_again_keeps_its_original_deadline() {
        let t0 = Instant::now();
        let mut f = floor();
        f.request(t0, &s("a"), &m("alice"));
        assert_eq!(
            f.request(t0 + Duration::from_secs(20), &s("a"), &m("alice")),
            RequestOutcome::Granted {
                expires_in: Duration::from_secs(40),
                newly_taken: false
            }
        );
    }

    #[test]
    fn the_floor_is_revoked_at_the_max_talk_time() {
        let t0 = Instant::now();
        let mut f = floor();
        f.request(t0, &s("a"), &m("alice"));
        assert_eq!(f.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        assert_eq!(f.handle_timeout(t0 + Duration::from_millis(59_999)), None);
        assert_eq!(
            f.handle_timeout(t0 + Duration::from_secs(60)),
            Some(Revoked {
                session: s("a"),
                reason: RevokeReason::MaxTalkTime
            })
        );
        assert!(f.holder().is_none());
        assert_eq!(f.poll_timeout(), None);
    }

    #[test]
    fn a_holder_whose_connection_blinks_keeps_the_floor_within_the_grace() {
        let t0 = Instant::now();
        let mut f = floor();
        f.request(t0, &s("a"), &m("alice"));
        f.connection_lost(t0 + Duration::from_secs(1), &s("a"));
        assert_eq!(f.poll_timeout(), Some(t0 + Duration::from_secs(6)));
        assert_eq!(f.handle_timeout(t0 + Duration::from_secs(4)), None);
        f.connection_restored(&s("a"));
        assert_eq!(f.handle_timeout(t0 + Duration::from_secs(7)), None);
        assert_eq!(f.holder().unwrap().session, s("a"));
    }

    #[test]
    fn a_holder_lost_past_the_grace_loses_the_floor() {
        let t0 = Instant::now();
        let mut f = floor();
        f.request(t0, &s("a"), &m("alice"));
        f.connection_lost(t0 + Duration::from_secs(1), &s("a"));
        // A second loss report does not restart the grace period.
        f.connection_lost(t0 + Duration::from_secs(3), &s("a"));
        assert_eq!(
            f.handle_timeout(t0 + Duration::from_secs(6)),
            Some(Revoked {
                session: s("a"),
                reason: RevokeReason::ConnectionLost
            })
        );
    }

    #[test]
    fn leaving_revokes_only_for_the_holder() {
        let t0 = Instant::now();
        let mut f = floor();
        f.request(t0, &s("a"), &m("alice"));
        assert_eq!(f.remove(&s("b")), None);
        assert_eq!(
            f.remove(&s("a")),
            Some(Revoked {
                session: s("a"),
                reason: RevokeReason::Left
            })
        );
    }

    #[test]
    fn a_lost_connection_of_a_non_holder_changes_nothing() {
        let t0 = Instant::now();
        let mut f = floor();
        f.request(t0, &s("a"), &m("alice"));
        f.connection_lost(t0, &s("b"));
        assert_eq!(f.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    }
}
