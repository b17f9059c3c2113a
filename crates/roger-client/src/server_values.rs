//! Values a server sends that feed the client's arithmetic, timers or loops, each held to
//! what a sane server sends. A hostile or broken server must not be able to crash the
//! client (an `Instant` or `u64` overflow panics), hang it (a ping timer of 0) or make it
//! allocate without bound (millions of receive slots). Each clamp is logged.

use std::time::Duration;

/// The longest `server_draining.reconnect_after_ms` honoured.
pub const MAX_RECONNECT_AFTER: Duration = Duration::from_secs(60);
/// The longest floor grant (`expires_in_ms`) shown or timed.
pub const MAX_FLOOR_GRANT: Duration = Duration::from_secs(24 * 3600);
/// The ping interval the client keeps to, whatever `ping_interval_ms` says.
pub const PING_INTERVAL_MS: std::ops::RangeInclusive<u64> = 100..=60_000;
/// The most receive slots (audio m-lines) a receive transport gets.
pub const MAX_RECV_SLOTS: u32 = 64;

fn clamped(what: &str, got: u64, to: u64) -> u64 {
    if got != to {
        tracing::warn!(
            what,
            got,
            used = to,
            "the server sent an out-of-range value"
        );
    }
    to
}

/// `reconnect_after_ms` of `server_draining`.
pub fn reconnect_after(ms: u64) -> Duration {
    let max = MAX_RECONNECT_AFTER.as_millis() as u64;
    Duration::from_millis(clamped("reconnect_after_ms", ms, ms.min(max)))
}

/// `expires_in_ms` of a floor grant or `floor_taken`.
pub fn floor_expiry_ms(ms: u64) -> u64 {
    let max = MAX_FLOOR_GRANT.as_millis() as u64;
    clamped("expires_in_ms", ms, ms.min(max))
}

/// `ping_interval_ms` of `welcome` / `resumed`.
pub fn ping_interval(ms: u64) -> Duration {
    let to = ms.clamp(*PING_INTERVAL_MS.start(), *PING_INTERVAL_MS.end());
    Duration::from_millis(clamped("ping_interval_ms", ms, to))
}

/// `recv_slots` of `joined`.
pub fn recv_slots(n: u32) -> u32 {
    clamped("recv_slots", u64::from(n), u64::from(n.min(MAX_RECV_SLOTS))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_values_are_held_to_sane_ones_and_sane_ones_pass() {
        assert_eq!(reconnect_after(500), Duration::from_millis(500));
        assert_eq!(reconnect_after(u64::MAX), MAX_RECONNECT_AFTER);
        assert_eq!(floor_expiry_ms(60_000), 60_000);
        assert_eq!(floor_expiry_ms(u64::MAX), 86_400_000);
        assert_eq!(ping_interval(1_000), Duration::from_secs(1));
        assert_eq!(ping_interval(0), Duration::from_millis(100));
        assert_eq!(ping_interval(u64::MAX), Duration::from_secs(60));
        assert_eq!(recv_slots(3), 3);
        assert_eq!(recv_slots(u32::MAX), MAX_RECV_SLOTS);
        // What the clamped values feed cannot overflow.
        let now = std::time::Instant::now();
        let _ = now + reconnect_after(u64::MAX) + Duration::from_secs(3600);
        let _ = u64::MAX / 2 + floor_expiry_ms(u64::MAX);
        let _ = ping_interval(u64::MAX) * 1000;
    }
}
