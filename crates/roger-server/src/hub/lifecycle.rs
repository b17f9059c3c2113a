//! Timers (session grace, token expiry, floor deadlines), the drain, and the health
//! check.

use super::channels::{apply_revoked, publish_gauges};
use super::*;

impl Hub {
    /// The earliest deadline of any session or floor.
    pub fn next_deadline(&self) -> Option<Instant> {
        let st = self.lock();
        let grace = self.config.session_grace();
        let sessions = st
            .sessions
            .values()
            .filter_map(|s| s.detached_at.map(|d| d + grace));
        let tokens = st.sessions.values().map(|s| s.expires_at);
        let floors = st.channels.values().filter_map(|c| c.floor.poll_timeout());
        sessions.chain(tokens).chain(floors).min()
    }

    /// Applies every deadline that has passed at `now`.
    pub fn handle_timeout(&self, now: Instant) {
        let mut st = self.lock();
        let grace = self.config.session_grace();
        let expired: Vec<SessionId> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.detached_at.is_some_and(|d| now >= d + grace))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.end_session(&mut st, &id, "grace_expired");
        }
        self.end_expired_tokens(&mut st, now);
        let channels: Vec<ChannelId> = st.channels.keys().cloned().collect();
        for ch in channels {
            let revoked = st
                .channels
                .get_mut(&ch)
                .and_then(|c| c.floor.handle_timeout(now));
            if let Some(r) = revoked {
                apply_revoked(&mut st, &ch, r);
            }
        }
        publish_gauges(&st);
    }

    /// Runs the timer loop until the hub is dropped by everyone else.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let next = self.next_deadline();
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => self.handle_timeout(Instant::now()),
                _ = self.timers.notified() => {}
            }
        }
    }

    /// Starts shutting down: refuses new sessions, tells everyone, revokes floors and
    /// closes every socket after the notice.
    pub fn drain(&self, reconnect_after: Duration) {
        let mut st = self.lock();
        st.draining = true;
        // In a cluster the sessions go on elsewhere: straight away, with their floors
        // (the leases outlive this node by the floor grace; the new node takes them).
        let elsewhere: Vec<String> = st
            .cluster
            .as_ref()
            .map(|c| c.live_urls().into_iter().skip(1).collect())
            .unwrap_or_default();
        if !elsewhere.is_empty() {
            if let Some(c) = &st.cluster {
                c.leave();
            }
            for s in st.sessions.values() {
                if let Some(c) = &s.conn {
                    c.send(ServerMessage::Notification(Notification::ServerDraining {
                        reconnect_after_ms: 0,
                        nodes: elsewhere.clone(),
                    }));
                    c.close(CLOSE_GOING_AWAY, "node draining: resume on another node");
                }
            }
            tracing::info!(
                sessions = st.sessions.len(),
                nodes = ?elsewhere,
                "draining: clients sent to the other nodes"
            );
            return;
        }
        let channels: Vec<ChannelId> = st.channels.keys().cloned().collect();
        for ch in channels {
            let revoked = st
                .channels
                .get_mut(&ch)
                .and_then(|c| c.floor.revoke_all(RevokeReason::ServerDraining));
            if let Some(r) = revoked {
                apply_revoked(&mut st, &ch, r);
            }
        }
        for s in st.sessions.values() {
            if let Some(c) = &s.conn {
                c.send(ServerMessage::Notification(Notification::ServerDraining {
                    reconnect_after_ms: reconnect_after.as_millis() as u64,
                    nodes: vec![],
                }));
                c.close(CLOSE_GOING_AWAY, "server shutting down");
            }
        }
        tracing::info!(
            sessions = st.sessions.len(),
            "draining: clients told to reconnect"
        );
    }

    /// Closes every session's media (after a drain).
    pub async fn close_all_media(&self) {
        let media: Vec<Arc<SessionMedia>> = self
            .lock()
            .sessions
            .values()
            .map(|s| s.media.clone())
            .collect();
        for m in media {
            m.close().await;
        }
    }

    /// Sessions (connected or in grace).
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// The periodic health check: counts sessions by condition and publishes them.
    /// Dead sessions (socket gone past the grace) are ended by the timers; this makes
    /// what is unhealthy visible in `/metrics` before that.
    pub fn health_check(&self) -> Health {
        let st = self.lock();
        let h = Health {
            sessions: st.sessions.len(),
            detached: st.sessions.values().filter(|s| s.conn.is_none()).count(),
            failed_transports: st
                .sessions
                .values()
                .filter(|s| s.media.any_failed())
                .count(),
        };
        metrics::gauge!("roger_sessions").set(h.sessions as f64);
        metrics::gauge!("roger_sessions_detached").set(h.detached as f64);
        metrics::gauge!("roger_sessions_with_failed_transport").set(h.failed_transports as f64);
        metrics::counter!("roger_health_checks_total").increment(1);
        let attempts = RESUME_ATTEMPTS.load(std::sync::atomic::Ordering::Relaxed);
        if attempts > 0 {
            let resumed = RESUMED.load(std::sync::atomic::Ordering::Relaxed);
            metrics::gauge!("reconnect_success_rate").set(resumed as f64 / attempts as f64);
        }
        h
    }

    /// Runs the health check every `every`.
    pub async fn run_health(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let h = self.health_check();
            if h.failed_transports > 0 || h.detached > 0 {
                tracing::debug!(?h, "health");
            }
        }
    }
}

/// What the health check saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Sessions, connected or in grace.
    pub sessions: usize,
    /// Sessions whose socket is gone (in grace).
    pub detached: usize,
    /// Sessions with a transport in `failed`.
    pub failed_transports: usize,
}
