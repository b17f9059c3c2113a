//! The driver: one task owns the recovery machine, feeds it inputs and timeouts, and
//! performs each action it asks for (in a task of its own when it awaits anything).

use super::state::{lock, Input, Shared};
use super::{media, session, talker};
use crate::event::ClientEvent;
use crate::recovery::{Action, Event, Recovery, Telemetry};
use roger_protocol::{Direction, ErrorBody, ErrorCode};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

pub(super) async fn drive(
    shared: Weak<Shared>,
    mut machine: Recovery,
    mut inputs: mpsc::UnboundedReceiver<Input>,
) {
    let mut cycle_span: Option<tracing::Span> = None;
    loop {
        let deadline = machine.poll_timeout();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let mut closed: Option<oneshot::Sender<()>> = None;
        tokio::select! {
            input = inputs.recv() => match input {
                Some(Input::Event(ev)) => machine.handle_event(Instant::now(), ev),
                Some(Input::Close(done)) => {
                    machine.handle_event(Instant::now(), Event::Close);
                    closed = Some(done);
                }
                None => return,
            },
            _ = sleep => machine.handle_timeout(Instant::now()),
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        while let Some(action) = machine.poll_action() {
            let span = cycle_span.clone().unwrap_or_else(tracing::Span::none);
            let _enter = span.enter();
            perform(&shared, &machine, action, &mut cycle_span);
        }
        if let Some(done) = closed {
            let _ = done.send(());
        }
    }
}

fn perform(
    shared: &Arc<Shared>,
    machine: &Recovery,
    action: Action,
    cycle_span: &mut Option<tracing::Span>,
) {
    match action {
        Action::Status(status) => {
            let old = shared.status.send_replace(status.clone());
            shared.emit(ClientEvent::Status {
                status: status.clone(),
            });
            super::replay::status_changed(shared, &old, &status);
        }
        Action::Report(error) => {
            shared.set_last_error(error.clone());
            shared.emit(ClientEvent::Error { error });
        }
        Action::ConnectSignaling { gen, resume } => {
            let next = [
                machine.transport_gen(Direction::Send) + 1,
                machine.transport_gen(Direction::Recv) + 1,
            ];
            tokio::spawn(
                session::connect_signaling(shared.clone(), gen, resume, next).in_current_span(),
            );
        }
        Action::DropSignaling { gen } => {
            let sig = lock(&shared.session)
                .signaling
                .as_ref()
                .filter(|(g, _)| *g == gen)
                .map(|(_, s)| s.clone());
            if let Some(sig) = sig {
                // Its reader reports the end (`SignalingDown`) like any other close.
                sig.abort(ErrorBody::new(
                    ErrorCode::SignalingTimeout,
                    "the server stopped answering",
                ));
            }
        }
        Action::RestartIce { dir, gen, probe } => {
            let span = tracing::info_span!("ice.restart", transport = %dir);
            tokio::spawn(media::restart_ice(shared.clone(), dir, gen, probe).instrument(span));
        }
        Action::RecreateTransport {
            dir,
            gen,
            relay_only,
        } => {
            tokio::spawn(
                media::recreate_transport(shared.clone(), dir, gen, relay_only).in_current_span(),
            );
        }
        Action::RequestFloor { channel } => {
            tokio::spawn(talker::reacquire_floor(shared.clone(), channel).in_current_span());
        }
        Action::CloseAll => {
            shared.stop_talking();
            let sig = lock(&shared.session).signaling.take();
            if let Some((_, sig)) = sig {
                sig.close();
            }
            let (send, recv) = {
                let mut m = lock(&shared.media);
                (m.send.take(), m.recv.take())
            };
            tokio::spawn(async move {
                if let Some(s) = send {
                    s.transport.close().await;
                }
                if let Some(r) = recv {
                    r.transport.close().await;
                }
            });
            if !shared.closing.load(Ordering::SeqCst) {
                // Give-up: the old session is gone; Rejoin starts a fresh one.
                lock(&shared.session).resume_token = None;
            }
        }
        Action::Telemetry(t) => telemetry(shared, t, cycle_span),
    }
}

fn telemetry(shared: &Shared, t: Telemetry, cycle_span: &mut Option<tracing::Span>) {
    match t {
        Telemetry::CycleStarted { id, why } => {
            *cycle_span = Some(tracing::info_span!("recovery.cycle", cycle = id, why));
        }
        Telemetry::Attempt { attempt, what } => {
            tracing::info!(name: "reconnect.attempt", attempt, what, "reconnect.attempt");
            metrics::counter!("reconnect_attempts_total").increment(1);
            lock(&shared.stats).reconnect_attempts_total += 1;
        }
        Telemetry::Success { time_to_recover } => {
            let ms = time_to_recover.as_millis() as u64;
            tracing::info!(name: "reconnect.success", time_to_recover_ms = ms, "reconnect.success");
            metrics::histogram!("time_to_recover_ms").record(ms as f64);
            let rate = {
                let mut s = lock(&shared.stats);
                s.reconnect_successes += 1;
                s.time_to_recover_ms.push(ms);
                if s.time_to_recover_ms.len() > 50 {
                    s.time_to_recover_ms.remove(0);
                }
                s.reconnect_success_rate = s.reconnect_successes as f64
                    / (s.reconnect_successes + s.reconnect_failures) as f64;
                s.reconnect_success_rate
            };
            metrics::gauge!("reconnect_success_rate").set(rate);
            *cycle_span = None;
            shared.emit(ClientEvent::Recovered {
                time_to_recover_ms: ms,
            });
        }
        Telemetry::Failure { code } => {
            tracing::warn!(name: "reconnect.failure", %code, "reconnect.failure");
            let rate = {
                let mut s = lock(&shared.stats);
                s.reconnect_failures += 1;
                s.reconnect_success_rate = s.reconnect_successes as f64
                    / (s.reconnect_successes + s.reconnect_failures) as f64;
                s.reconnect_success_rate
            };
            metrics::gauge!("reconnect_success_rate").set(rate);
            *cycle_span = None;
        }
        Telemetry::IceRestart { dir } => {
            tracing::info!(name: "ice.restart", transport = %dir, "ice.restart");
            metrics::counter!("ice_restarts_total").increment(1);
            lock(&shared.stats).ice_restarts += 1;
        }
    }
}
