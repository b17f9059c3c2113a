//! One test per recovery rule, on virtual time.

use super::*;
use roger_protocol::Direction::{Recv, Send};

/// Jitter that always returns the same value (0.0 = none, 0.999 = maximum).
struct Fixed(f64);
impl Jitter for Fixed {
    fn next_unit(&mut self) -> f64 {
        self.0
    }
}

const EPOCH_MS: u64 = 1_700_000_000_000;

struct H {
    m: Recovery,
    t0: Instant,
    now: Instant,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

impl H {
    fn new() -> H {
        Self::with(RecoveryConfig::default(), 0.0)
    }
    fn with(config: RecoveryConfig, jitter: f64) -> H {
        let t0 = Instant::now();
        H {
            m: Recovery::new(config, Box::new(Fixed(jitter)), (t0, EPOCH_MS)),
            t0,
            now: t0,
        }
    }
    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.m.poll_action()).collect()
    }
    fn ev(&mut self, e: Event) -> Vec<Action> {
        self.m.handle_event(self.now, e);
        self.drain()
    }
    /// Moves time forward by `d`, firing every timer on the way at its own instant.
    fn advance(&mut self, d: Duration) -> Vec<Action> {
        let end = self.now + d;
        let mut out = Vec::new();
        while let Some(t) = self.m.poll_timeout().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            self.m.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = end;
        out
    }
    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }
    fn tr(&mut self, dir: Direction, state: TransportState) -> Vec<Action> {
        let gen = self.m.transport_gen(dir);
        self.ev(Event::Transport { dir, gen, state })
    }
    /// The shell reports that its last action on transport `dir` failed with `code`.
    fn action_failed(&mut self, dir: Direction, code: ErrorCode, message: &str) -> Vec<Action> {
        let gen = self.m.transport_gen(dir);
        self.ev(Event::TransportActionFailed {
            dir,
            gen,
            error: ErrorBody::new(code, message),
        })
    }
    fn sig_down(&mut self, code: ErrorCode) -> Vec<Action> {
        let gen = self.m.signaling_gen();
        self.ev(Event::SignalingDown {
            gen,
            error: ErrorBody::new(code, "test"),
        })
    }
    fn session_up(&mut self, resumed: bool, server_transports: Vec<Direction>) -> Vec<Action> {
        let gen = self.m.signaling_gen();
        self.ev(Event::SessionUp {
            gen,
            resumed,
            server_transports,
        })
    }
    /// Start, fresh session, both transports connected.
    fn connected() -> H {
        let mut h = H::new();
        h.ev(Event::Start);
        h.session_up(false, vec![]);
        h.tr(Send, TransportState::Connected);
        h.tr(Recv, TransportState::Connected);
        assert_eq!(h.m.status(), &Status::Connected);
        h.drain();
        h
    }
}

fn restarts(actions: &[Action]) -> Vec<Direction> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RestartIce { dir, .. } => Some(*dir),
            _ => None,
        })
        .collect()
}
fn recreates(actions: &[Action]) -> Vec<(Direction, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RecreateTransport {
                dir, relay_only, ..
            } => Some((*dir, *relay_only)),
            _ => None,
        })
        .collect()
}
fn connects(actions: &[Action]) -> Vec<bool> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ConnectSignaling { resume, .. } => Some(*resume),
            _ => None,
        })
        .collect()
}
fn statuses(actions: &[Action]) -> Vec<Status> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Status(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}
fn gave_up(actions: &[Action]) -> Option<ErrorCode> {
    actions.iter().find_map(|a| match a {
        Action::Telemetry(Telemetry::Failure { code }) => Some(*code),
        _ => None,
    })
}

#[test]
fn connecting_opens_signaling_with_hello_and_reports_connecting_then_connected() {
    let mut h = H::new();
    let a = h.ev(Event::Start);
    assert_eq!(connects(&a), [false]);
    assert_eq!(statuses(&a), [Status::Connecting]);
    let a = h.session_up(false, vec![]);
    assert!(
        statuses(&a).is_empty(),
        "still connecting until media is up"
    );
    h.tr(Send, TransportState::Connected);
    let a = h.tr(Recv, TransportState::Connected);
    assert_eq!(statuses(&a), [Status::Connected]);
    // The first connection is not counted as a recovery.
    assert!(!a
        .iter()
        .any(|a| matches!(a, Action::Telemetry(Telemetry::Success { .. }))));
}

#[test]
fn ice_failed_restarts_ice_at_once() {
    let mut h = H::connected();
    let a = h.tr(Send, TransportState::Failed);
    assert_eq!(restarts(&a), [Send]);
    assert!(matches!(
        statuses(&a).last(),
        Some(Status::Reconnecting {
            attempt: 1,
            max: 5,
            ..
        })
    ));
}

#[test]
fn ice_disconnected_restarts_ice_after_the_short_grace() {
    let mut h = H::connected();
    assert!(restarts(&h.tr(Recv, TransportState::Disconnected)).is_empty());
    assert!(restarts(&h.advance(ms(499))).is_empty());
    assert_eq!(restarts(&h.advance(ms(1))), [Recv]);
}

#[test]
fn a_disconnect_that_heals_within_the_grace_does_nothing() {
    let mut h = H::connected();
    h.tr(Recv, TransportState::Disconnected);
    h.advance(ms(300));
    let a = h.tr(Recv, TransportState::Connected);
    let a2 = h.advance(secs(60));
    assert!(restarts(&a).is_empty() && restarts(&a2).is_empty());
    assert!(recreates(&a2).is_empty());
    assert_eq!(h.m.status(), &Status::Connected);
}

#[test]
fn a_transport_still_down_after_the_platform_timeout_is_recreated() {
    let mut h = H::connected();
    let start = h.now;
    h.tr(Send, TransportState::Disconnected);
    // ICE restarts after the grace, then on the backoff (0.5 s, 1.5 s, 3.5 s)...
    let mut restart_times = Vec::new();
    while let Some(t) = h.m.poll_timeout().filter(|t| *t < start + secs(5)) {
        h.now = t;
        h.m.handle_timeout(t);
        if !restarts(&h.drain()).is_empty() {
            restart_times.push(t - start);
        }
    }
    assert_eq!(restart_times, [ms(500), ms(1_500), ms(3_500)]);
    // ...and at the platform disconnect timeout the transport is recreated.
    let a = h.advance(start + secs(5) - h.now);
    assert_eq!(recreates(&a), [(Send, false)]);
    assert_eq!(
        RecoveryConfig::default().disconnect_timeout,
        if cfg!(windows) { secs(10) } else { secs(5) }
    );
}

#[test]
fn media_retries_back_off_1_2_4_8_seconds_and_give_up_after_5_attempts() {
    let mut h = H::connected();
    let start = h.now;
    h.tr(Send, TransportState::Failed);
    let mut times = vec![Duration::ZERO];
    let mut code = None;
    while let Some(t) = h.m.poll_timeout() {
        h.now = t;
        h.m.handle_timeout(t);
        let a = h.drain();
        if !restarts(&a).is_empty() || !recreates(&a).is_empty() {
            times.push(t - start);
        }
        if let Some(c) = gave_up(&a) {
            code = Some(c);
            break;
        }
    }
    assert_eq!(times, [secs(0), secs(1), secs(3), secs(7), secs(15)]);
    assert_eq!(code, Some(ErrorCode::IceFailed));
    assert_eq!(
        h.now - start,
        secs(23),
        "the 5th attempt's retry finds nothing left to try"
    );
    assert_eq!(
        h.m.status(),
        &Status::Failed {
            code: ErrorCode::IceFailed
        }
    );
}

#[test]
fn retry_jitter_stretches_the_backoff_by_at_most_20_percent() {
    let mut h = H::with(RecoveryConfig::default(), 0.999);
    h.ev(Event::Start);
    h.session_up(false, vec![]);
    h.tr(Send, TransportState::Connected);
    h.tr(Recv, TransportState::Connected);
    let start = h.now;
    h.tr(Send, TransportState::Failed);
    let t = h.m.poll_timeout().unwrap();
    let d = t - start;
    assert!(d > ms(1_190) && d < ms(1_200), "{d:?}");
}

#[test]
fn the_whole_recovery_window_is_30_seconds_then_failed_and_rejoin_starts_over() {
    let mut h = H::connected();
    h.tr(Send, TransportState::Disconnected);
    h.tr(Recv, TransportState::Disconnected);
    let a = h.sig_down(ErrorCode::SignalingClosed);
    assert!(connects(&a).is_empty(), "first signaling retry waits 1 s");
    let mut all = Vec::new();
    // Every reconnect attempt fails.
    for _ in 0..20 {
        let a = h.advance(ms(50));
        let tried = !connects(&a).is_empty();
        all.extend(a);
        if tried {
            h.sig_down(ErrorCode::SignalingUnreachable);
        }
        if h.elapsed() > secs(40) {
            break;
        }
    }
    while h.elapsed() < secs(40) {
        let a = h.advance(ms(250));
        let tried = !connects(&a).is_empty();
        all.extend(a);
        if tried {
            h.sig_down(ErrorCode::SignalingUnreachable);
        }
    }
    assert_eq!(gave_up(&all), Some(ErrorCode::SignalingUnreachable));
    assert_eq!(h.m.phase(), Phase::Failed(ErrorCode::SignalingUnreachable));
    assert!(all.contains(&Action::CloseAll));
    // Nothing more happens by itself.
    assert!(h.m.poll_timeout().is_none());
    // Rejoin starts over with a fresh hello.
    let a = h.ev(Event::Rejoin);
    assert_eq!(connects(&a), [false]);
    assert_eq!(statuses(&a), [Status::Connecting]);
}

#[test]
fn signaling_reconnects_with_backoff_1_2_4_8_16_30_plus_up_to_500_ms_jitter() {
    for (jitter, extra) in [(0.0, ms(0)), (0.999, ms(499))] {
        let config = RecoveryConfig {
            recovery_window: secs(600),
            ..Default::default()
        };
        let mut h = H::with(config, jitter);
        h.ev(Event::Start);
        let start = h.now;
        h.sig_down(ErrorCode::SignalingUnreachable);
        let mut times = Vec::new();
        while times.len() < 7 {
            let t = h.m.poll_timeout().unwrap();
            h.now = t;
            h.m.handle_timeout(t);
            if !connects(&h.drain()).is_empty() {
                times.push(t - start);
                h.sig_down(ErrorCode::SignalingUnreachable);
            }
        }
        let gaps: Vec<Duration> = times
            .iter()
            .zip(std::iter::once(&Duration::ZERO).chain(times.iter()))
            .map(|(a, b)| *a - *b)
            .collect();
        let want: Vec<Duration> = [1, 2, 4, 8, 16, 30, 30]
            .iter()
            .map(|s| secs(*s) + extra)
            .collect();
        for (g, w) in gaps.iter().zip(&want) {
            assert!(g.abs_diff(*w) < ms(2), "gaps {gaps:?} want {want:?}");
        }
    }
}

#[test]
fn a_clean_user_close_never_reconnects() {
    let mut h = H::connected();
    let a = h.ev(Event::Close);
    assert!(a.contains(&Action::CloseAll));
    assert_eq!(h.m.status(), &Status::Offline);
    let a = h.sig_down(ErrorCode::SignalingClosed);
    let a2 = h.advance(secs(120));
    assert!(connects(&a).is_empty() && connects(&a2).is_empty());
    assert!(h.m.poll_timeout().is_none());
}

#[test]
fn a_signaling_drop_with_healthy_media_is_degraded_and_resumes_without_touching_transports() {
    let mut h = H::connected();
    let a = h.sig_down(ErrorCode::SignalingTimeout);
    assert!(matches!(statuses(&a).last(), Some(Status::Degraded { .. })));
    let a = h.advance(secs(1));
    assert_eq!(connects(&a), [true], "resume, not hello");
    let a = h.session_up(true, vec![Send, Recv]);
    assert!(restarts(&a).is_empty() && recreates(&a).is_empty());
    assert_eq!(statuses(&a), [Status::Connected]);
}

#[test]
fn an_expired_session_is_rejoined_from_scratch_at_once() {
    let mut h = H::connected();
    h.sig_down(ErrorCode::SignalingClosed);
    let a = h.advance(secs(1));
    assert_eq!(connects(&a), [true]);
    let a = h.sig_down(ErrorCode::SessionExpired);
    assert_eq!(connects(&a), [false], "hello immediately");
    let old = h.m.transport_gen(Send);
    h.session_up(false, vec![]);
    assert_eq!(h.m.transport_gen(Send), old + 1, "fresh transports");
    h.tr(Send, TransportState::Connected);
    let a = h.tr(Recv, TransportState::Connected);
    assert_eq!(statuses(&a), [Status::Connected]);
}

#[test]
fn terminal_refusals_fail_at_once_without_retrying() {
    for code in [
        ErrorCode::TokenExpired,
        ErrorCode::TokenInvalid,
        ErrorCode::SessionReplaced,
    ] {
        let mut h = H::connected();
        h.sig_down(ErrorCode::SignalingClosed);
        h.advance(secs(1));
        let a = h.sig_down(code);
        assert_eq!(gave_up(&a), Some(code));
        assert_eq!(h.m.status(), &Status::Failed { code });
        assert!(connects(&h.advance(secs(60))).is_empty());
    }
}

#[test]
fn a_network_change_restarts_ice_on_both_transports_at_once() {
    let mut h = H::connected();
    let a = h.ev(Event::NetworkChanged {
        signaling_address_lost: false,
    });
    assert_eq!(restarts(&a), [Send, Recv]);
    assert!(connects(&a).is_empty());
}

#[test]
fn a_network_change_that_took_the_signaling_address_reconnects_signaling_at_once() {
    let mut h = H::connected();
    let a = h.ev(Event::NetworkChanged {
        signaling_address_lost: true,
    });
    assert_eq!(connects(&a), [true]);
    // ICE restarts wait for the new socket (offers travel over it)...
    assert!(restarts(&a).is_empty());
    // ...and happen once the session is back, even though ICE has not noticed yet
    // (its sockets were on the lost address too).
    let a = h.session_up(true, vec![Send, Recv]);
    assert_eq!(restarts(&a), [Send, Recv]);
    // Once: the next resume has nothing pending.
    h.sig_down(ErrorCode::SignalingClosed);
    h.advance(secs(1));
    let a = h.session_up(true, vec![Send, Recv]);
    assert!(restarts(&a).is_empty());
}

#[test]
fn the_first_retry_after_the_network_comes_back_is_immediate() {
    let mut h = H::connected();
    h.sig_down(ErrorCode::SignalingUnreachable);
    h.advance(secs(1));
    h.sig_down(ErrorCode::SignalingUnreachable); // next retry in 2 s
    h.advance(ms(200));
    let a = h.ev(Event::NetworkUp);
    assert_eq!(connects(&a), [true]);
}

#[test]
fn repeated_ice_failures_fall_back_to_relay_only_when_turn_is_offered() {
    let mut h = H::connected();
    h.m.set_relay_available(true);
    let a = h.tr(Send, TransportState::Failed);
    assert_eq!(restarts(&a), [Send]);
    let a = h.tr(Send, TransportState::Failed); // in flight: waits for the retry timer
    assert!(restarts(&a).is_empty());
    let a = h.advance(secs(2));
    assert_eq!(recreates(&a), [(Send, true)]);
    // Without TURN there is no relay fallback.
    let mut h = H::connected();
    h.tr(Send, TransportState::Failed);
    h.tr(Send, TransportState::Failed);
    let a = h.advance(secs(2));
    assert!(recreates(&a).iter().all(|(_, relay)| !relay));
}

#[test]
fn the_floor_is_requested_again_after_a_resume_if_ptt_is_still_held() {
    let mut h = H::connected();
    h.ev(Event::PttDown("general".into()));
    h.sig_down(ErrorCode::SignalingTimeout);
    h.advance(secs(1));
    let a = h.session_up(true, vec![Send, Recv]);
    assert!(a.contains(&Action::RequestFloor {
        channel: "general".into()
    }));
    // Released before the reconnect: nothing to re-acquire.
    h.ev(Event::PttUp);
    h.sig_down(ErrorCode::SignalingTimeout);
    h.advance(secs(1));
    let a = h.session_up(true, vec![Send, Recv]);
    assert!(!a.iter().any(|a| matches!(a, Action::RequestFloor { .. })));
}

#[test]
fn transports_the_server_lost_are_recreated_after_a_resume() {
    let mut h = H::connected();
    h.sig_down(ErrorCode::SignalingClosed);
    h.advance(secs(1));
    let a = h.session_up(true, vec![Send]);
    assert_eq!(recreates(&a), [(Recv, false)]);
}

#[test]
fn a_timer_set_for_an_older_transport_does_nothing() {
    let mut h = H::connected();
    h.tr(Send, TransportState::Disconnected); // grace + disconnect timers for gen N
    h.advance(ms(500)); // grace fired: ICE restart
    h.advance(ms(4_500)); // disconnect timeout: recreate -> gen N+1
    let gen = h.m.transport_gen(Send);
    h.tr(Send, TransportState::Connected);
    h.tr(Recv, TransportState::Connected);
    // An event from the old PeerConnection arrives late: ignored.
    let a = h.ev(Event::Transport {
        dir: Send,
        gen: gen - 1,
        state: TransportState::Failed,
    });
    assert!(restarts(&a).is_empty() && recreates(&a).is_empty());
    assert!(h.advance(secs(60)).iter().all(|a| !matches!(
        a,
        Action::RestartIce { .. } | Action::RecreateTransport { .. } | Action::CloseAll
    )));
    assert_eq!(h.m.status(), &Status::Connected);
}

#[test]
fn a_stale_signaling_outcome_is_ignored() {
    let mut h = H::connected();
    let old = h.m.signaling_gen();
    h.sig_down(ErrorCode::SignalingClosed);
    h.advance(secs(1)); // attempt old+1 in flight
    let a = h.ev(Event::SignalingDown {
        gen: old,
        error: ErrorBody::new(ErrorCode::SessionExpired, "late"),
    });
    assert!(a.is_empty());
}

#[test]
fn sustained_bad_quality_is_degraded_and_tries_one_ice_restart() {
    let mut h = H::connected();
    let bad = Event::Quality {
        rtt: Some(ms(80)),
        loss: Some(0.2),
    };
    let a = h.ev(bad.clone());
    assert!(matches!(statuses(&a).as_slice(), [Status::Degraded { .. }]));
    assert!(restarts(&h.ev(bad.clone())).is_empty());
    assert_eq!(restarts(&h.ev(bad.clone())), [Send, Recv]);
    assert!(
        restarts(&h.ev(bad.clone())).is_empty(),
        "one restart per episode"
    );
    // Between the thresholds: stays degraded (hysteresis).
    let a = h.ev(Event::Quality {
        rtt: Some(ms(80)),
        loss: Some(0.07),
    });
    assert!(statuses(&a).is_empty());
    let a = h.ev(Event::Quality {
        rtt: Some(ms(80)),
        loss: Some(0.01),
    });
    assert_eq!(statuses(&a), [Status::Connected]);
    let a = h.ev(Event::Quality {
        rtt: Some(ms(700)),
        loss: Some(0.0),
    });
    assert!(matches!(statuses(&a).as_slice(), [Status::Degraded { .. }]));
}

#[test]
fn a_drain_notice_reconnects_after_the_servers_delay_not_the_backoff() {
    let mut h = H::connected();
    h.ev(Event::ServerDraining {
        reconnect_after: ms(300),
    });
    h.sig_down(ErrorCode::SignalingClosed);
    assert!(connects(&h.advance(ms(299))).is_empty());
    assert_eq!(connects(&h.advance(ms(1))), [true]);
}

#[test]
fn after_a_drain_notice_retries_stay_short_until_the_server_is_back_then_back_off() {
    let mut h = H::connected();
    h.ev(Event::ServerDraining {
        reconnect_after: ms(300),
    });
    h.sig_down(ErrorCode::SignalingClosed);
    assert_eq!(connects(&h.advance(ms(300))), [true]);
    // The restarting server refuses connections: retry every 250 ms, not 1, 2, 4 s...
    for _ in 0..40 {
        h.sig_down(ErrorCode::SignalingUnreachable);
        assert!(connects(&h.advance(ms(249))).is_empty());
        assert_eq!(connects(&h.advance(ms(1))), [true]);
    }
    // 10.3 s in: back, then a later drop (not a drain) backs off as usual.
    h.session_up(true, vec![Send, Recv]);
    h.sig_down(ErrorCode::SignalingClosed);
    assert!(connects(&h.advance(ms(999))).is_empty());
    assert_eq!(connects(&h.advance(ms(1))), [true]);
}

#[test]
fn a_server_that_never_returns_from_a_drain_gets_the_normal_backoff_after_the_window() {
    let config = RecoveryConfig {
        drain_retry_window: secs(2),
        recovery_window: secs(600),
        ..Default::default()
    };
    let mut h = H::with(config, 0.0);
    h.ev(Event::Start);
    h.session_up(false, vec![]);
    h.tr(Send, TransportState::Connected);
    h.tr(Recv, TransportState::Connected);
    h.ev(Event::ServerDraining {
        reconnect_after: ms(500),
    });
    h.sig_down(ErrorCode::SignalingClosed);
    let mut attempts_at = Vec::new();
    while attempts_at.len() < 12 && h.elapsed() < secs(120) {
        if !connects(&h.advance(ms(10))).is_empty() {
            attempts_at.push(h.elapsed().as_millis());
            h.sig_down(ErrorCode::SignalingUnreachable);
        }
    }
    // 0.5 s, then every 250 ms until 2.5 s, then 1 s, 2 s, 4 s... apart.
    let gaps: Vec<u128> = attempts_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(attempts_at[0], 500, "{attempts_at:?}");
    assert!(gaps[..7].iter().all(|&g| g <= 300), "{gaps:?}");
    assert!(
        gaps[gaps.len() - 2..].iter().all(|&g| g >= 1000),
        "{gaps:?}"
    );
}

#[test]
fn a_recovery_reports_its_time_to_recover_and_counts_attempts() {
    let mut h = H::connected();
    h.tr(Recv, TransportState::Failed);
    h.advance(ms(800));
    let a = h.tr(Recv, TransportState::Connected);
    assert!(a.contains(&Action::Telemetry(Telemetry::Success {
        time_to_recover: ms(800)
    })));
    assert_eq!(statuses(&a), [Status::Connected]);
}

#[test]
fn the_reconnecting_status_says_when_the_next_try_is_in_wall_clock_time() {
    let mut h = H::connected();
    h.tr(Send, TransportState::Disconnected);
    h.tr(Recv, TransportState::Disconnected);
    h.advance(ms(500)); // grace: restarts for both, retry in 1 s
    match h.m.status() {
        Status::Reconnecting {
            attempt,
            retry_at_ms,
            ..
        } => {
            assert_eq!(*attempt, 1, "both transports restarted once: one round");
            assert_eq!(*retry_at_ms, EPOCH_MS + 1_500);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_recovery_is_declared_only_when_the_restarted_transports_report_connected_again() {
    let mut h = H::connected();
    h.ev(Event::NetworkChanged {
        signaling_address_lost: true,
    });
    h.advance(ms(150));
    let a = h.session_up(true, vec![Send, Recv]);
    assert_eq!(restarts(&a), [Send, Recv]);
    let succeeded = |a: &[Action]| {
        a.iter()
            .any(|a| matches!(a, Action::Telemetry(Telemetry::Success { .. })))
    };
    assert!(!succeeded(&a), "ICE is still restarting");
    assert!(matches!(h.m.status(), Status::Reconnecting { .. }));
    h.advance(ms(7));
    assert!(!succeeded(&h.tr(Send, TransportState::Connected)));
    let a = h.tr(Recv, TransportState::Connected);
    assert!(a.contains(&Action::Telemetry(Telemetry::Success {
        time_to_recover: ms(157)
    })));
    assert_eq!(h.m.status(), &Status::Connected);
}

#[test]
fn media_coming_back_during_a_signaling_outage_retries_signaling_at_once() {
    let mut h = H::connected();
    h.tr(Send, TransportState::Disconnected);
    h.tr(Recv, TransportState::Disconnected);
    h.sig_down(ErrorCode::SignalingTimeout);
    h.advance(secs(1));
    h.sig_down(ErrorCode::SignalingUnreachable); // next retry in 2 s
    h.advance(ms(300));
    // Consent checks get through: the path is back. Do not wait 1.7 s more.
    let a = h.tr(Recv, TransportState::Connected);
    assert_eq!(connects(&a), [true]);
}

#[test]
fn a_restart_that_could_not_be_offered_does_not_count_and_happens_after_the_resume() {
    let mut h = H::connected();
    h.tr(Send, TransportState::Disconnected);
    let a = h.advance(ms(500));
    assert_eq!(restarts(&a), [Send]);
    // The shell found the socket dead before sending the offer.
    h.action_failed(Send, ErrorCode::SignalingTimeout, "probe failed");
    h.sig_down(ErrorCode::SignalingTimeout);
    h.advance(secs(1));
    let a = h.session_up(true, vec![Send, Recv]);
    assert_eq!(restarts(&a), [Send]);
    match h.m.status() {
        Status::Reconnecting { attempt, .. } => assert_eq!(*attempt, 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_transport_that_refuses_an_ice_restart_is_recreated_at_the_next_attempt() {
    let mut h = H::connected();
    let a = h.tr(Recv, TransportState::Failed);
    assert_eq!(restarts(&a), [Recv]);
    // The PeerConnection would not take the restart (seen in a storm:
    // "cannot apply answer: SendError(IceGathering)", attempt after attempt).
    h.action_failed(Recv, ErrorCode::SdpNegotiationError, "cannot apply answer");
    let a = h.advance(ms(1200));
    assert_eq!(restarts(&a), Vec::<Direction>::new());
    assert_eq!(recreates(&a), [(Recv, false)]);
    // The new transport comes up: recovered.
    let a = h.tr(Recv, TransportState::Connected);
    assert!(matches!(statuses(&a).last(), Some(Status::Connected)));
    // Its next ICE failure is restarted as usual: the refusal was the old one's.
    let a = h.tr(Recv, TransportState::Failed);
    assert_eq!(restarts(&a), [Recv]);
}

#[test]
fn a_refused_restart_is_forgotten_by_a_fresh_session_and_a_server_refusal_is_not_one() {
    let mut h = H::connected();
    h.tr(Send, TransportState::Failed);
    h.action_failed(Send, ErrorCode::SdpNegotiationError, "cannot apply answer");
    // The session expires before the retry: a fresh one builds new transports.
    h.sig_down(ErrorCode::SignalingUnreachable);
    h.advance(secs(2));
    h.session_up(false, vec![Send, Recv]);
    h.tr(Send, TransportState::Connected);
    h.tr(Recv, TransportState::Connected);
    let a = h.tr(Send, TransportState::Failed);
    assert_eq!(
        restarts(&a),
        [Send],
        "the new transport never refused anything"
    );
    // A rate limit on the restart offer is the server's answer, not this transport's.
    h.action_failed(Send, ErrorCode::RateLimited, "slow down");
    let a = h.advance(ms(1200));
    assert_eq!(restarts(&a), [Send]);
    assert!(recreates(&a).is_empty());
}

#[test]
fn quality_samples_with_nothing_measured_or_taken_during_a_restart_change_nothing() {
    let mut h = H::connected();
    let bad = Event::Quality {
        rtt: Some(ms(80)),
        loss: Some(0.3),
    };
    h.ev(bad.clone());
    assert!(matches!(h.m.status(), Status::Degraded { .. }));
    // Nobody talking: no loss figure, no RTT: not a reason to call it healthy.
    let a = h.ev(Event::Quality {
        rtt: None,
        loss: None,
    });
    assert!(statuses(&a).is_empty());
    // A good RTT says nothing about the loss that degraded the connection.
    let a = h.ev(Event::Quality {
        rtt: Some(ms(10)),
        loss: None,
    });
    assert!(statuses(&a).is_empty());
    assert!(matches!(h.m.status(), Status::Degraded { .. }));
    // During an ICE restart the sample measures the restart, not the network.
    h.tr(Send, TransportState::Failed); // restart in flight
    let a = h.ev(Event::Quality {
        rtt: Some(ms(10)),
        loss: Some(0.0),
    });
    assert!(!statuses(&a).contains(&Status::Connected));
}

#[test]
fn a_fresh_transport_that_has_not_connected_after_4_s_is_rebuilt() {
    let mut h = H::new();
    h.ev(Event::Start);
    h.session_up(false, vec![]);
    h.tr(Send, TransportState::Connected);
    // The receive transport stalls without a word: ICE stuck in `checking`, or DTLS
    // never finishing (seen in the reconnect storm). ICE alone would report `failed`
    // after 7 s, DTLS never.
    let a = h.advance(ms(3_999));
    assert!(recreates(&a).is_empty() && restarts(&a).is_empty());
    let a = h.advance(ms(1));
    assert_eq!(recreates(&a), [(Recv, false)]);
    let a = h.tr(Recv, TransportState::Connected);
    assert_eq!(statuses(&a).last(), Some(&Status::Connected));
    // After a storm's rejoin too; and transports that connect in time are left alone.
    let mut h = H::connected();
    h.sig_down(ErrorCode::SessionExpired);
    h.session_up(false, vec![]);
    // Connecting is not waiting: the status does not announce the deadline as a retry.
    match h.m.status() {
        Status::Reconnecting { retry_at_ms, .. } => {
            assert_eq!(*retry_at_ms, EPOCH_MS + h.elapsed().as_millis() as u64)
        }
        other => panic!("expected Reconnecting, got {other:?}"),
    }
    h.tr(Send, TransportState::Connected);
    h.advance(ms(3_900));
    h.tr(Recv, TransportState::Connected);
    let a = h.advance(secs(30));
    assert!(recreates(&a).is_empty() && restarts(&a).is_empty());
    assert_eq!(h.m.status(), &Status::Connected);
}

#[test]
fn a_first_connection_that_never_connects_is_rebuilt_then_relayed_when_turn_is_offered() {
    // A firewall eats UDP: nothing connects. Rebuilt at 4 s; the rebuilt transports get
    // 4 s too (not the 1 s backoff step), then count as the second failure: relay-only.
    let mut h = H::new();
    h.m.set_relay_available(true);
    h.ev(Event::Start);
    h.session_up(false, vec![]);
    let a = h.advance(secs(4));
    let mut r = recreates(&a);
    r.sort_by_key(|(d, _)| idx(*d));
    assert_eq!(r, [(Send, false), (Recv, false)]);
    let a = h.advance(ms(3_999));
    assert!(recreates(&a).is_empty());
    let a = h.advance(ms(1));
    let mut r = recreates(&a);
    r.sort_by_key(|(d, _)| idx(*d));
    assert_eq!(r, [(Send, true), (Recv, true)]);
    h.tr(Send, TransportState::Connected);
    let a = h.tr(Recv, TransportState::Connected);
    assert_eq!(statuses(&a).last(), Some(&Status::Connected));
}

#[test]
fn an_ice_restart_probes_the_socket_first_for_the_configured_time() {
    let mut h = H::connected();
    let a = h.ev(Event::NetworkChanged {
        signaling_address_lost: false,
    });
    let probes: Vec<Duration> = a
        .iter()
        .filter_map(|a| match a {
            Action::RestartIce { probe, .. } => Some(*probe),
            _ => None,
        })
        .collect();
    assert_eq!(probes, vec![ms(600), ms(600)]);
}

#[test]
fn a_socket_that_stops_answering_is_dropped_and_its_end_reconnects() {
    let mut h = H::connected();
    let gen = h.m.signaling_gen();
    let a = h.ev(Event::SignalingUnresponsive { gen });
    assert_eq!(a, vec![Action::DropSignaling { gen }]);
    // The dropped socket's end is what starts the reconnect: a resume after the backoff.
    assert!(connects(&h.sig_down(ErrorCode::SignalingTimeout)).is_empty());
    assert_eq!(connects(&h.advance(secs(1))), vec![true]);
}

#[test]
fn an_unresponsive_older_socket_is_closed_without_touching_the_current_one() {
    let mut h = H::connected();
    let old = h.m.signaling_gen();
    h.sig_down(ErrorCode::SignalingClosed);
    h.advance(secs(2));
    h.session_up(true, vec![Send, Recv]);
    assert_eq!(h.m.status(), &Status::Connected);
    // An older attempt's socket that lingers in the shell is closed; the session on
    // the current one carries on.
    let a = h.ev(Event::SignalingUnresponsive { gen: old });
    assert_eq!(a, vec![Action::DropSignaling { gen: old }]);
    assert_eq!(h.m.status(), &Status::Connected);
    assert!(connects(&h.advance(secs(5))).is_empty());
}

#[test]
fn with_other_nodes_known_a_lost_server_is_retried_at_once_then_backs_off() {
    let mut h = H::connected();
    h.ev(Event::Alternates(true));
    h.sig_down(ErrorCode::SignalingClosed);
    // The same node first (it may have been a blip), then the next one: both at once.
    assert_eq!(connects(&h.advance(ms(0))), [true]);
    h.sig_down(ErrorCode::SignalingUnreachable);
    assert_eq!(connects(&h.advance(ms(0))), [true]);
    // Nobody answers: the usual backoff from its start.
    h.sig_down(ErrorCode::SignalingUnreachable);
    assert!(connects(&h.advance(ms(999))).is_empty());
    assert_eq!(connects(&h.advance(ms(1))), [true]);
}

#[test]
fn a_single_server_keeps_the_usual_backoff() {
    let mut h = H::connected();
    h.ev(Event::Alternates(false));
    h.sig_down(ErrorCode::SignalingClosed);
    assert!(connects(&h.advance(ms(999))).is_empty());
    assert_eq!(connects(&h.advance(ms(1))), [true]);
}

#[test]
fn a_session_that_keeps_dropping_gets_the_fast_retries_once_then_the_backoff() {
    let mut h = H::connected();
    h.ev(Event::Alternates(true));
    h.sig_down(ErrorCode::SignalingClosed);
    assert_eq!(connects(&h.advance(ms(0))), [true]);
    h.session_up(true, vec![Send, Recv]);
    // Down again 5 s later: no second run of fast attempts so soon.
    h.advance(secs(5));
    h.sig_down(ErrorCode::SignalingClosed);
    assert!(connects(&h.advance(ms(999))).is_empty());
    assert_eq!(connects(&h.advance(ms(1))), [true]);
}
