//! The status the user sees, derived from the machine's state (the one place that
//! decides it; the shell only publishes it).

use super::{Phase, Recovery, Sig, Timer};
use crate::event::Status;
use std::time::Instant;

impl Recovery {
    pub(super) fn derive_status(&self, now: Instant) -> Status {
        match self.phase {
            Phase::Idle => Status::Offline,
            Phase::Connecting => Status::Connecting,
            Phase::Failed(code) => Status::Failed { code },
            Phase::Connected => {
                if self.sig != Sig::Up {
                    Status::Degraded {
                        reason: "reconnecting to the server; audio still flows".into(),
                    }
                } else if self.degraded_quality {
                    Status::Degraded {
                        reason: "poor connection: high loss or delay".into(),
                    }
                } else {
                    Status::Connected
                }
            }
            Phase::Recovering => {
                let attempt = self
                    .cycle
                    .as_ref()
                    .map_or(1, |c| self.cycle_attempt(c).max(1));
                let retry_at = self
                    .timers
                    .iter()
                    .filter(|(t, _)| matches!(t, Timer::SignalingRetry | Timer::TransportRetry(_)))
                    .map(|(_, (at, _))| *at)
                    .min()
                    .unwrap_or(now);
                let (epoch_at, epoch_ms) = self.epoch;
                let offset = retry_at.saturating_duration_since(epoch_at).as_millis() as u64;
                Status::Reconnecting {
                    attempt,
                    max: self.config.max_attempts,
                    retry_at_ms: epoch_ms + offset,
                }
            }
        }
    }
}
