//! Quality samples (RTT, loss): `Degraded` with hysteresis, and one ICE restart per
//! episode of sustained bad quality.

use super::{Phase, Recovery, Sig, DIRS};
use std::time::{Duration, Instant};

impl Recovery {
    pub(super) fn on_quality(&mut self, now: Instant, rtt: Option<Duration>, loss: Option<f64>) {
        // A sample taken while a transport restarts (or is down) measures the restart,
        // not the network; and a sample with nothing measured says nothing.
        if self.phase != Phase::Connected
            || self.tr.iter().any(|t| t.working)
            || (rtt.is_none() && loss.is_none())
        {
            return;
        }
        // Each measure has its own hysteresis, and only a measured value moves it: an
        // unknown loss (nobody talking) neither degrades nor clears a loss problem.
        let judge = |bad: bool, good: bool, was: bool| {
            if bad {
                true
            } else if good {
                false
            } else {
                was
            }
        };
        let loss_bad = loss.is_some_and(|l| l > self.config.degraded_loss);
        let loss_good = loss.is_some_and(|l| l < self.config.recovered_loss);
        let rtt_bad = rtt.is_some_and(|r| r > self.config.degraded_rtt);
        let rtt_good = rtt.is_some_and(|r| r < self.config.recovered_rtt);
        self.loss_degraded = judge(loss_bad, loss_good, self.loss_degraded);
        self.rtt_degraded = judge(rtt_bad, rtt_good, self.rtt_degraded);
        let was = self.degraded_quality;
        self.degraded_quality = self.loss_degraded || self.rtt_degraded;
        if loss_bad || rtt_bad {
            self.bad_samples += 1;
            if self.bad_samples >= self.config.bad_samples_before_restart
                && !self.quality_restart_done
                && self.sig == Sig::Up
            {
                self.quality_restart_done = true;
                tracing::info!(?loss, ?rtt, "sustained bad quality: one ICE restart");
                for dir in DIRS {
                    self.restart_ice(dir);
                }
            }
        } else {
            self.bad_samples = 0;
        }
        if was && !self.degraded_quality {
            // A new episode may try its own restart.
            self.quality_restart_done = false;
        }
        self.publish_status(now, "quality sample");
    }
}
