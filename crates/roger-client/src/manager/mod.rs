//! [`ConnectionManager`]: the async shell around the recovery machine, and the facade
//! a UI or bot uses.
//!
//! One driver task owns the [`Recovery`] machine. It is a `select!` over one input
//! channel and one sleep until `poll_timeout()`. Everything else (signaling sockets,
//! transports, the network watcher, the quality sampler) only sends tagged events into
//! that channel: webrtc callbacks never block and never decide anything. Each action the
//! machine asks for is performed in its own task whose outcome comes back as an event
//! carrying the generation it was for, so a late outcome of an old socket or transport
//! is ignored by the machine.
//!
//! ## Files
//! - this file: [`ClientConfig`], the public types and the API (connect, join, leave,
//!   rejoin, close, the status and counters);
//! - `state.rs`: [`Shared`](state::Shared), what the tasks share, grouped so that what
//!   changes together is locked together; requests and the outbox;
//! - `drive.rs`: the driver loop, each [`Action`](crate::recovery::Action) performed, and
//!   telemetry;
//! - `session.rs`: signaling (hello / resume, pings, notifications) and a fresh session's
//!   rejoin;
//! - `media.rs`: building, recreating and ICE-restarting the transports;
//! - `talker.rs`: push-to-talk: the floor, Opus encoding and RTP packets (`rtp.rs`:
//!   their numbering);
//! - `receiver.rs`: received RTP -> the sink by channel (and decoded with FEC and
//!   concealment here when the sink does not decode at playout itself);
//! - `quality.rs`: RTT and loss samples, and what the network watcher needs;
//! - `replay.rs`: what was missed while reconnecting, fetched from the channel's
//!   history and played back (live always wins).

mod drive;
#[doc(hidden)]
pub mod fuzzing;
mod media;
mod quality;
mod receiver;
pub mod replay;
mod rtp;
mod session;
mod state;
mod talker;

use crate::audio::AudioSink;
use crate::event::{ClientEvent, Status};
use crate::recovery::{Event, Recovery, RecoveryConfig};
use crate::signaling::{Signaling, DEFAULT_REQUEST_TIMEOUT};
use rand::SeedableRng;
use roger_protocol::*;
use state::{Input, Shared};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

pub(crate) use state::{lock, unix_ms};

/// How to reach and talk to a server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port/ws` or `wss://...`.
    pub server_url: String,
    /// More addresses of the same service (a cluster's nodes), tried in turn when the
    /// one in use cannot be reached. A cluster also tells the client its live nodes.
    pub servers: Vec<String>,
    /// A JWT from the server operator (`roger-server token ...`).
    pub token: String,
    /// Shown in server logs.
    pub client_name: String,
    /// UDP bind addresses; `None` picks loopback for a loopback server, else every
    /// interface.
    pub media_bind: Option<Vec<String>>,
    /// How long a request may wait for its response.
    pub request_timeout: Duration,
    /// Opus bitrate, bits per second.
    pub opus_bitrate: i32,
    /// The recovery policy, ICE timeouts included.
    pub recovery: RecoveryConfig,
    /// Watch network interfaces and restart ICE on a change.
    pub watch_network: bool,
    /// How often to sample RTT and loss.
    pub quality_interval: Duration,
    /// Extra CA certificates (PEM) to trust for `wss://`, besides the system's roots:
    /// for a self-hosted server with its own CA. Certificates are always verified.
    pub extra_ca_pem: Option<String>,
    /// Embed the send time in every packet ([`crate::audio::stamp`]), so listeners can
    /// measure latency (load generator, benchmarks). Off by default.
    pub stamp_packets: bool,
}

impl ClientConfig {
    /// A configuration with Roger's defaults.
    pub fn new(server_url: impl Into<String>, token: impl Into<String>) -> Self {
        ClientConfig {
            server_url: server_url.into(),
            servers: Vec::new(),
            token: token.into(),
            client_name: format!("roger-client/{}", env!("CARGO_PKG_VERSION")),
            media_bind: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            opus_bitrate: 24_000,
            recovery: RecoveryConfig::default(),
            watch_network: true,
            quality_interval: Duration::from_secs(2),
            extra_ca_pem: None,
            stamp_packets: false,
        }
    }

    fn bind_addresses(&self) -> Vec<String> {
        if let Some(b) = &self.media_bind {
            return b.clone();
        }
        let host = url::Url::parse(&self.server_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            vec!["127.0.0.1:0".to_owned()]
        } else {
            vec!["0.0.0.0:0".to_owned()]
        }
    }
}

/// The result of a floor request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FloorOutcome {
    /// Talking; the server ends it after this long at the latest.
    Granted {
        /// Max talk time left.
        expires_in: Duration,
    },
    /// Someone else holds the floor.
    Denied {
        /// Who.
        holder: Member,
    },
}

/// Audio counters for tools and the diagnostics view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct AudioStats {
    /// Opus frames sent.
    pub frames_sent: u64,
    /// Opus frames received (and decoded, when the sink decodes).
    pub frames_received: u64,
    /// Frames concealed (lost or late).
    pub frames_concealed: u64,
    /// Frames recovered from FEC.
    pub frames_recovered: u64,
}

/// Recovery figures (the same ones exported as metrics), for the diagnostics view.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct RecoveryStats {
    /// `reconnect_attempts_total`.
    pub reconnect_attempts_total: u64,
    /// Recovery cycles that succeeded.
    pub reconnect_successes: u64,
    /// Recovery cycles that gave up.
    pub reconnect_failures: u64,
    /// `reconnect_success_rate` (successes / finished cycles; 1.0 before any).
    pub reconnect_success_rate: f64,
    /// `time_to_recover_ms` of the most recent cycles (newest last, at most 50).
    pub time_to_recover_ms: Vec<u64>,
    /// ICE restarts performed.
    pub ice_restarts: u64,
}

/// The connection to a Roger server that heals itself. Cheap to clone.
#[derive(Clone)]
pub struct ConnectionManager {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionManager").finish_non_exhaustive()
    }
}

fn unexpected(wanted: &str, got: Response) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::MalformedMessage,
        format!("expected {wanted}, got {got:?}"),
    )
}

impl ConnectionManager {
    /// Connects and waits until signaling and media are up (or the first connection
    /// fails for good). Received audio goes to `sink`. After this returns, the manager
    /// keeps the connection healthy on its own.
    pub async fn connect(
        config: ClientConfig,
        sink: Box<dyn AudioSink>,
    ) -> Result<(ConnectionManager, mpsc::UnboundedReceiver<ClientEvent>), ErrorBody> {
        let (manager, events) = Self::start(config, sink);
        manager.wait_connected().await?;
        Ok((manager, events))
    }

    /// Waits until the connection is up (`Connected` or `Degraded`), or fails with the
    /// error that made it give up.
    pub async fn wait_connected(&self) -> Result<(), ErrorBody> {
        let mut status = self.status();
        loop {
            let s = status.borrow_and_update().clone();
            match s {
                Status::Connected | Status::Degraded { .. } => return Ok(()),
                Status::Failed { code } => {
                    let message = self
                        .shared
                        .last_error()
                        .map(|e| e.message)
                        .unwrap_or_else(|| code.user_message().to_owned());
                    return Err(ErrorBody::new(code, message));
                }
                _ => {}
            }
            if status.changed().await.is_err() {
                return Err(ErrorBody::new(
                    ErrorCode::InternalError,
                    "the connection task ended",
                ));
            }
        }
    }

    /// Starts connecting in the background and returns at once; follow
    /// [`ConnectionManager::status`] and the events.
    pub fn start(
        config: ClientConfig,
        sink: Box<dyn AudioSink>,
    ) -> (ConnectionManager, mpsc::UnboundedReceiver<ClientEvent>) {
        let (events, events_rx) = mpsc::unbounded_channel();
        let (inputs, inputs_rx) = mpsc::unbounded_channel();
        let recovery = config.recovery.clone();
        let shared = Arc::new(Shared::new(config, inputs, events, sink));
        let machine = Recovery::new(
            recovery,
            Box::new(rand::rngs::StdRng::from_os_rng()),
            (Instant::now(), unix_ms()),
        );
        // The recovery's log lines name their client: one process may run many
        // (`roger-bot load`).
        let span = tracing::info_span!("client", name = %shared.config.client_name);
        tokio::spawn(drive::drive(Arc::downgrade(&shared), machine, inputs_rx).instrument(span));
        if shared.config.watch_network {
            tokio::spawn(crate::netwatch::watch(
                Arc::downgrade(&shared) as Weak<dyn crate::netwatch::NetSink>,
                shared.config.recovery.network_debounce,
            ));
        }
        tokio::spawn(quality::sample_quality(Arc::downgrade(&shared)));
        // Several addresses given (a cluster's nodes): the machine knows from the start.
        shared.learn_servers(&[]);
        shared.input(Event::Start);
        (ConnectionManager { shared }, events_rx)
    }

    /// The current status; `changed()` on the receiver waits for the next one.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.shared.status.subscribe()
    }

    /// Who the server says we are and what we may join (after the first connection).
    pub fn welcome(&self) -> Option<Welcome> {
        lock(&self.shared.session).welcome.clone()
    }

    /// Audio counters.
    pub fn stats(&self) -> AudioStats {
        let c = &self.shared.counters;
        AudioStats {
            frames_sent: c.sent.load(Ordering::Relaxed),
            frames_received: c.received.load(Ordering::Relaxed),
            frames_concealed: c.concealed.load(Ordering::Relaxed),
            frames_recovered: c.recovered.load(Ordering::Relaxed),
        }
    }

    /// Recovery figures.
    pub fn recovery_stats(&self) -> RecoveryStats {
        lock(&self.shared.stats).clone()
    }

    /// The current signaling socket (tests use it to send raw frames or kill it).
    pub fn signaling(&self) -> Option<Signaling> {
        self.shared.signaling()
    }

    /// Joins a channel; audio for it starts arriving at the sink at once. Joined
    /// channels are rejoined by themselves after a reconnect.
    /// `channel`'s recorded transmissions, oldest first (see `docs/protocol.md`).
    pub async fn history(&self, channel: &ChannelId) -> Result<Vec<Transmission>, ErrorBody> {
        match self
            .shared
            .request(Request::History {
                channel: channel.clone(),
                since_ms: None,
            })
            .await?
        {
            Response::History { transmissions, .. } => Ok(transmissions),
            other => Err(unexpected("history", other)),
        }
    }

    /// A recorded transmission's audio, decoded (48 kHz mono).
    pub async fn history_audio(
        &self,
        id: &TransmissionId,
    ) -> Result<(Transmission, Vec<i16>), ErrorBody> {
        match self
            .shared
            .request(Request::HistoryFetch {
                id: id.clone(),
                from_ms: 0,
            })
            .await?
        {
            Response::HistoryAudio {
                transmission,
                frames,
            } => Ok((transmission, replay::decode_frames(&frames, 0, u64::MAX)?)),
            other => Err(unexpected("history_audio", other)),
        }
    }

    /// Stops a missed-while-reconnecting replay in progress (and what waits behind it).
    pub fn stop_replay(&self) {
        replay::stop(&self.shared);
    }

    /// A server time (Unix ms, as in history) on this machine's clock, as estimated
    /// from pings.
    pub fn local_time(&self, server_ms: u64) -> u64 {
        lock(&self.shared.replay).clock.local(server_ms)
    }

    pub async fn join(&self, channel: &ChannelId) -> Result<ChannelState, ErrorBody> {
        let state = match self
            .shared
            .request(Request::Join {
                channel: channel.clone(),
            })
            .await?
        {
            Response::Joined { channel } => channel,
            other => return Err(unexpected("joined", other)),
        };
        self.shared.record_channel(&state);
        let recv = lock(&self.shared.media)
            .recv
            .as_ref()
            .map(|r| r.transport.clone());
        if let (Some(recv), Some(sig)) = (recv, self.shared.signaling()) {
            if recv.ensure_recv_slots(state.recv_slots).await? {
                recv.negotiate(&sig, false).await?;
            }
        }
        self.shared.emit(ClientEvent::Joined {
            channel: state.clone(),
        });
        Ok(state)
    }

    /// Leaves a channel.
    pub async fn leave(&self, channel: &ChannelId) -> Result<(), ErrorBody> {
        if self.talking_in().as_ref() == Some(channel) {
            self.ptt_up().await?;
        }
        match self
            .shared
            .request(Request::Leave {
                channel: channel.clone(),
            })
            .await
        {
            Ok(Response::Left { .. }) => {}
            // Already out (a leave carried out while its answer was lost): what was asked.
            Err(e) if e.code == ErrorCode::NotInChannel => {}
            Ok(other) => return Err(unexpected("left", other)),
            Err(e) => return Err(e),
        }
        self.shared.forget_channel(channel);
        self.shared.emit(ClientEvent::Left {
            channel: channel.clone(),
        });
        Ok(())
    }

    /// Reports a microphone or speaker problem (`MEDIA_DEVICE_ERROR`): it reaches the
    /// event stream as an `Error`, like every other error. The connection is not
    /// affected; the device layer rebuilds the stream when the device is back.
    pub fn report_device_error(&self, error: ErrorBody) {
        self.shared.input(Event::DeviceError(error));
    }

    /// Starts over after `Failed` (the Rejoin button): a fresh session, every channel
    /// joined before rejoined.
    pub fn rejoin(&self) {
        self.shared.closing.store(false, Ordering::SeqCst);
        self.shared.input(Event::Rejoin);
    }

    /// Ends the session: stops talking, says `bye`, closes everything. Nothing
    /// reconnects afterwards.
    pub async fn close(&self) {
        if self.shared.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(channel) = self.shared.stop_talking() {
            let _ = talker::release(&self.shared, &channel).await;
        }
        if let Some(sig) = self.shared.signaling() {
            let _ = sig
                .request_with_timeout(Request::Bye, Duration::from_secs(1))
                .await;
        }
        let (tx, rx) = oneshot::channel();
        if self.shared.inputs.send(Input::Close(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
        }
    }
}
