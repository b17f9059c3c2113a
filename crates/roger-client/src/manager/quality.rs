//! The quality sampler (RTT and loss of both transports, for the machine and the
//! encoder's FEC), and what the network watcher needs from the manager.

use super::state::{lock, Shared};
use crate::netwatch::NetSink;
use crate::recovery::Event;
use roger_protocol::Direction;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

impl NetSink for Shared {
    fn network_event(&self, ev: Event) {
        self.input(ev);
    }
    fn signaling_local_addr(&self) -> Option<SocketAddr> {
        lock(&self.session).local_addr
    }
}

pub(super) async fn sample_quality(shared: Weak<Shared>) {
    let interval = match shared.upgrade() {
        Some(s) => s.config.quality_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    let mut last: Option<(u64, i64)> = None;
    loop {
        tick.tick().await;
        let Some(s) = shared.upgrade() else { break };
        let transports: Vec<_> = [Direction::Send, Direction::Recv]
            .into_iter()
            .filter_map(|dir| s.transport(dir, None))
            .collect();
        drop(s);
        let mut rtt: Option<Duration> = None;
        let (mut received, mut lost) = (0u64, 0i64);
        for t in transports {
            let q = t.quality().await;
            rtt = match (rtt, q.rtt) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            received += q.packets_received;
            lost += q.packets_lost;
        }
        // Loss over the period, when enough packets flowed to tell (25 is half a
        // second of audio); otherwise unknown, e.g. while nobody talks.
        // Counters that went backwards were reset (an ICE restart can do that): the
        // period says nothing about loss.
        let loss = last.and_then(|(r0, l0)| {
            if received < r0 || lost < l0 {
                return None;
            }
            let (dr, dl) = ((received - r0) as f64, (lost - l0) as f64);
            (dr + dl >= 25.0).then(|| dl / (dr + dl))
        });
        last = Some((received, lost));
        tracing::debug!(?rtt, ?loss, received, lost, "quality sample");
        let Some(s) = shared.upgrade() else { break };
        if let Some(l) = loss {
            // Opus spends FEC bits on this much loss: what was measured, 1-30 %.
            let percent = ((l * 100.0).ceil() as u32).clamp(1, 30);
            s.counters.loss_percent.store(percent, Ordering::Relaxed);
        }
        s.input(Event::Quality { rtt, loss });
    }
}
