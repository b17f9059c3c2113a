//! The client's handling of server messages without a network, for the fuzz target
//! `client_messages`: each text goes through the same decoder, notification handler,
//! response bookkeeping and clamps as on a live socket, and every event they raise drives
//! the real recovery machine on virtual time (its actions are taken and dropped: they
//! would open sockets). Not part of the API.

use super::session::handle_notification;
use super::state::{Input, Shared};
use super::ClientConfig;
use crate::audio::NullSink;
use crate::event::{ClientEvent, FloorEvent};
use crate::recovery::{Event, Recovery};
use crate::server_values;
use roger_protocol::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// One client, fed server messages by hand.
pub struct Harness {
    shared: Arc<Shared>,
    inputs: mpsc::UnboundedReceiver<Input>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    machine: Recovery,
    now: Instant,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A client that has just been asked to connect.
    pub fn new() -> Harness {
        let config = ClientConfig::new("ws://127.0.0.1:9/ws", "fuzz");
        let (events_tx, events) = mpsc::unbounded_channel();
        let (inputs_tx, inputs) = mpsc::unbounded_channel();
        let recovery = config.recovery.clone();
        let shared = Arc::new(Shared::new(
            config,
            inputs_tx,
            events_tx,
            Box::new(NullSink),
        ));
        let now = Instant::now();
        // A fixed jitter: the same input always takes the same path.
        struct Half;
        impl crate::recovery::Jitter for Half {
            fn next_unit(&mut self) -> f64 {
                0.5
            }
        }
        let mut machine = Recovery::new(recovery, Box::new(Half), (now, 0));
        machine.handle_event(now, Event::Start);
        let mut h = Harness {
            shared,
            inputs,
            events,
            machine,
            now,
        };
        h.settle();
        h
    }

    /// Handles one frame's text as the client would on socket generation 1.
    pub fn feed(&mut self, text: &str) {
        let Ok(msg) = decode_server(text) else {
            return;
        };
        match msg {
            ServerMessage::Notification(n) => handle_notification(&self.shared, n),
            ServerMessage::Response(r) => match r.outcome {
                Outcome::Ok(response) => self.response(response),
                Outcome::Err(error) => self.shared.input(Event::SignalingDown { gen: 1, error }),
            },
        }
        self.settle();
        // Let the machine's timers run for a while of virtual time.
        for _ in 0..4 {
            let Some(at) = self.machine.poll_timeout() else {
                break;
            };
            self.now = at.max(self.now).min(self.now + Duration::from_secs(120));
            self.machine.handle_timeout(self.now);
            self.settle();
        }
    }

    /// What the session code does with each response's values.
    fn response(&mut self, response: Response) {
        match response {
            Response::Welcome(w) => {
                let _ = server_values::ping_interval(w.ping_interval_ms)
                    * self.shared.config.recovery.ping_timeout_intervals.max(1);
                self.shared.input(Event::SessionUp {
                    gen: 1,
                    resumed: false,
                    server_transports: vec![],
                });
            }
            Response::Resumed(r) => {
                let _ = server_values::ping_interval(r.ping_interval_ms);
                for channel in &r.channels {
                    self.shared.record_channel(channel);
                }
                self.shared.input(Event::SessionUp {
                    gen: 1,
                    resumed: true,
                    server_transports: r.transports,
                });
            }
            Response::Joined { channel } => {
                self.shared.record_channel(&channel);
                let slots = server_values::recv_slots(self.shared.recv_slots());
                assert!(slots <= server_values::MAX_RECV_SLOTS);
            }
            Response::FloorGranted {
                channel,
                expires_in_ms,
            } => {
                let ms = server_values::floor_expiry_ms(expires_in_ms);
                self.shared
                    .floor(&channel, FloorEvent::Granted { expires_in_ms: ms });
                // What the app shows: the end of the grant on the wall clock.
                let _ = super::state::unix_ms() + ms;
            }
            _ => {}
        }
    }

    /// Feeds every queued input to the machine and takes its actions.
    fn settle(&mut self) {
        while let Ok(input) = self.inputs.try_recv() {
            if let Input::Event(ev) = input {
                self.machine.handle_event(self.now, ev);
            }
        }
        while self.machine.poll_action().is_some() {}
        while self.events.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz corpus's seed of absurd values (u64::MAX expiries and drain delay,
    /// u32::MAX receive slots): each line is a real server message, and the client
    /// takes them all without panicking (a debug build checks for overflow).
    #[test]
    fn a_server_sending_absurd_values_does_not_crash_the_client() {
        let seed = include_str!("../../../../fuzz/corpus/client_messages/welcome_join_floor");
        let mut client = Harness::new();
        for line in seed.lines() {
            decode_server(line).unwrap_or_else(|e| panic!("{line}: {e:?}"));
            client.feed(line);
        }
        assert_eq!(
            server_values::recv_slots(client.shared.recv_slots()),
            server_values::MAX_RECV_SLOTS
        );
    }
}
