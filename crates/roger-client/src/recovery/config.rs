//! [`RecoveryConfig`]: every number the recovery policy uses, in one place.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryConfig {
    /// After ICE reports `disconnected`, wait this long for it to come back on its own
    /// before restarting ICE (consent checks often recover a blip by themselves).
    pub ice_disconnected_grace: Duration,
    /// After ICE reports `disconnected`, recreate the transport if it is still not
    /// connected after this long. Platform default: 10 s on Windows, 5 s elsewhere.
    pub disconnect_timeout: Duration,
    /// How long a newly built transport (a fresh session's, or a recreated one) may take
    /// to connect before it counts as an ICE failure and is built again. ICE and DTLS took
    /// up to ~3 s in the 500-client reconnect storm (the server near a full core), and a
    /// stalled one can sit in `checking` or half-connected without ever failing.
    pub connect_timeout: Duration,
    /// Delays before media retries 2, 3, 4, 5 (the first is immediate).
    pub retry_backoff: Vec<Duration>,
    /// Media recovery attempts per cycle before giving up.
    pub max_attempts: u32,
    /// A recovery cycle gives up after this long in all.
    pub recovery_window: Duration,
    /// Jitter added to each media retry delay, as a fraction of it (0.2 = up to +20 %).
    pub retry_jitter: f64,
    /// Delays between signaling reconnect attempts (the last one repeats).
    pub signaling_backoff: Vec<Duration>,
    /// Random extra delay, 0 to this, added to each signaling retry.
    pub signaling_jitter: Duration,
    /// With other addresses of the service known (a cluster), this many signaling
    /// attempts come at once (plus `failover_jitter`) before `signaling_backoff`
    /// applies: the manager moves to the next address after each failed one, so a dead
    /// node costs a refused connection, not a backoff.
    pub failover_fast_attempts: u32,
    /// Random extra delay, 0 to this, before each of those (spreads a dead node's
    /// clients over the survivors).
    pub failover_jitter: Duration,
    /// Fast attempts are used at most once this often: a session that keeps dropping
    /// right after it comes back gets the ordinary backoff.
    pub failover_fast_every: Duration,
    /// After a drain notice the server is restarting: reconnect attempts come this
    /// often (plus `signaling_jitter`) instead of backing off, so clients are back as
    /// soon as it listens again. A refused connection is cheap for both sides.
    pub drain_retry_interval: Duration,
    /// How long after a drain notice that fast retrying lasts before the backoff resumes.
    pub drain_retry_window: Duration,
    /// ICE failures (per transport) after which it is recreated relay-only.
    pub relay_after_ice_failures: u32,
    /// `Degraded` above this loss fraction.
    pub degraded_loss: f64,
    /// `Degraded` above this round-trip time.
    pub degraded_rtt: Duration,
    /// Back to `Connected` below this loss fraction (hysteresis).
    pub recovered_loss: f64,
    /// Back to `Connected` below this RTT (hysteresis).
    pub recovered_rtt: Duration,
    /// Consecutive bad quality samples that trigger one ICE restart.
    pub bad_samples_before_restart: u32,
    /// ICE: no traffic for this long -> `disconnected` (the transport's own timer; ~2 s
    /// to notice a silent path even when nobody talks).
    pub ice_disconnected_timeout: Duration,
    /// ICE: `failed` this long after `disconnected`.
    pub ice_failed_timeout: Duration,
    /// ICE consent checks this often, even when nobody talks.
    pub ice_keepalive_interval: Duration,
    /// Before an ICE restart the signaling socket must answer a ping within this long:
    /// a restart offer drops the current path until its answer arrives, so an offer
    /// into a dead socket would stop ICE from healing by itself. A socket that does not
    /// answer is treated as dead.
    pub restart_probe_timeout: Duration,
    /// An application ping unanswered for this many ping intervals: the signaling path
    /// is dead even if TCP has not noticed.
    pub ping_timeout_intervals: u32,
    /// Requests that may wait while the signaling socket is down.
    pub outbox_capacity: usize,
    /// A queued push-to-talk request older than this is dropped, not replayed.
    pub ptt_max_age: Duration,
    /// Network interface changes closer together than this are one change (a roam adds
    /// one address and removes another within milliseconds).
    pub network_debounce: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            ice_disconnected_grace: Duration::from_millis(500),
            disconnect_timeout: if cfg!(windows) {
                Duration::from_secs(10)
            } else {
                Duration::from_secs(5)
            },
            connect_timeout: Duration::from_secs(4),
            retry_backoff: [1, 2, 4, 8].map(Duration::from_secs).to_vec(),
            max_attempts: 5,
            recovery_window: Duration::from_secs(30),
            retry_jitter: 0.2,
            signaling_backoff: [1, 2, 4, 8, 16, 30].map(Duration::from_secs).to_vec(),
            signaling_jitter: Duration::from_millis(500),
            failover_fast_attempts: 2,
            failover_jitter: Duration::from_millis(200),
            failover_fast_every: Duration::from_secs(30),
            drain_retry_interval: Duration::from_millis(250),
            drain_retry_window: Duration::from_secs(20),
            relay_after_ice_failures: 2,
            degraded_loss: 0.10,
            degraded_rtt: Duration::from_millis(500),
            recovered_loss: 0.05,
            recovered_rtt: Duration::from_millis(300),
            bad_samples_before_restart: 3,
            ice_disconnected_timeout: Duration::from_secs(2),
            ice_failed_timeout: Duration::from_secs(5),
            ice_keepalive_interval: Duration::from_millis(500),
            restart_probe_timeout: Duration::from_millis(600),
            ping_timeout_intervals: 2,
            outbox_capacity: 100,
            ptt_max_age: Duration::from_secs(2),
            network_debounce: Duration::from_millis(150),
        }
    }
}
