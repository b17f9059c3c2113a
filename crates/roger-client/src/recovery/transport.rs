//! Media transports: ICE restarts and rebuilds with backoff, and what each reported
//! transport state means.

use super::{idx, Action, Recovery, Sig, Telemetry, Timer, TransportState};
use roger_protocol::{Direction, ErrorCode};
use std::time::{Duration, Instant};

impl Recovery {
    pub(super) fn media_attempt(&mut self, now: Instant, dir: Direction, recreate: bool) {
        if self.sig != Sig::Up {
            // Offers need the socket; the resume path re-checks every transport.
            return;
        }
        let Some(c) = self.cycle.as_ref() else {
            return;
        };
        let signaling_attempts = c.signaling_attempts;
        if self.tr[idx(dir)].attempts >= self.config.max_attempts {
            self.give_up(
                now,
                ErrorCode::IceFailed,
                format!(
                    "audio did not reconnect after {} attempts",
                    self.config.max_attempts
                ),
            );
            return;
        }
        self.clear_timer(Timer::TransportRetry(dir));
        self.clear_timer(Timer::ConnectTimeout(dir));
        self.clear_timer(Timer::IceGrace(dir));
        let t = &mut self.tr[idx(dir)];
        t.attempts += 1;
        let attempt = t.attempts.max(signaling_attempts);
        t.working = true;
        t.restart_pending = false;
        let relay = self.relay_available
            && t.ice_failures >= self.config.relay_after_ice_failures
            && self.config.relay_after_ice_failures > 0;
        let rebuild = recreate || t.action_failed == Some(t.gen) || relay && !t.relay_only;
        if rebuild {
            t.gen += 1;
            t.relay_only = t.relay_only || relay;
            t.disconnected_since = None;
            let (gen, relay_only) = (t.gen, t.relay_only);
            self.set_transport_state(dir, TransportState::Closed, "rebuilt");
            self.clear_timer(Timer::DisconnectTimeout(dir));
            self.actions
                .push_back(Action::Telemetry(Telemetry::Attempt {
                    attempt,
                    what: if relay_only {
                        "recreate transport (relay only)"
                    } else {
                        "recreate transport"
                    },
                }));
            self.actions.push_back(Action::RecreateTransport {
                dir,
                gen,
                relay_only,
            });
        } else {
            self.actions
                .push_back(Action::Telemetry(Telemetry::Attempt {
                    attempt,
                    what: "ice restart",
                }));
            self.restart_ice(dir);
        }
        // If this attempt does not bring the transport up, try again after the backoff.
        let b = &self.config.retry_backoff;
        let i =
            (self.tr[idx(dir)].attempts.saturating_sub(1) as usize).min(b.len().saturating_sub(1));
        let mut base = b.get(i).copied().unwrap_or(Duration::from_secs(1));
        if rebuild {
            // A new PeerConnection needs its whole ICE and DTLS handshake.
            base = base.max(self.config.connect_timeout);
        }
        let delay = base.mul_f64(1.0 + self.config.retry_jitter * self.jitter.next_unit());
        let gen = self.tr[idx(dir)].gen;
        self.set_timer(Timer::TransportRetry(dir), now + delay, gen);
    }

    /// Asks the shell to restart ICE on the current generation of `dir` (after its
    /// probe of the signaling socket), and counts it.
    pub(super) fn restart_ice(&mut self, dir: Direction) {
        let gen = self.tr[idx(dir)].gen;
        self.actions
            .push_back(Action::Telemetry(Telemetry::IceRestart { dir }));
        self.actions.push_back(Action::RestartIce {
            dir,
            gen,
            probe: self.config.restart_probe_timeout,
        });
    }

    pub(super) fn on_transport(
        &mut self,
        now: Instant,
        dir: Direction,
        gen: u64,
        state: TransportState,
    ) {
        if gen != self.tr[idx(dir)].gen {
            let current = self.tr[idx(dir)].gen;
            tracing::debug!(%dir, gen, current, ?state, "stale transport event ignored");
            return;
        }
        let old = self.tr[idx(dir)].state;
        self.set_transport_state(dir, state, "reported by the peer connection");
        let t = &mut self.tr[idx(dir)];
        match state {
            TransportState::Connected => {
                t.working = false;
                t.disconnected_since = None;
                t.action_failed = None;
                self.clear_timer(Timer::IceGrace(dir));
                self.clear_timer(Timer::DisconnectTimeout(dir));
                self.clear_timer(Timer::TransportRetry(dir));
                self.clear_timer(Timer::ConnectTimeout(dir));
                // ICE consent checks got through again: the path to the server is back.
                // Like a network coming up, that skips the signaling backoff wait.
                if old != TransportState::Connected
                    && self.sig == Sig::Down
                    && self.timers.contains_key(&Timer::SignalingRetry)
                {
                    self.connect_signaling(now, "media path is back");
                }
            }
            TransportState::Disconnected => {
                if old == TransportState::Connected {
                    t.disconnected_since = Some(now);
                    let gen = t.gen;
                    self.set_timer(
                        Timer::IceGrace(dir),
                        now + self.config.ice_disconnected_grace,
                        gen,
                    );
                    self.set_timer(
                        Timer::DisconnectTimeout(dir),
                        now + self.config.disconnect_timeout,
                        gen,
                    );
                }
            }
            TransportState::Failed => {
                t.ice_failures += 1;
                let in_flight = t.working;
                self.settle(now, "transport failed");
                // `failed` restarts ICE at once, unless an attempt is already in flight:
                // then its retry timer tries again after the backoff.
                if !in_flight {
                    self.media_attempt(now, dir, false);
                }
                return;
            }
            TransportState::Closed => {
                t.working = false;
            }
        }
        self.settle(now, "transport state");
    }
}
