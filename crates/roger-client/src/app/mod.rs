//! The desktop app's core, without Tauri: settings, one session with its speaker and
//! microphone, the PTT button's logic, and what the window shows ([`AppState`]).
//!
//! The Tauri shell (`src-tauri`) is a thin layer over [`App`]: each command is one call
//! here, and every [`AppEvent`] is forwarded to the webview. Tests drive [`App`] directly.
//!
//! Files: the session, channels, settings and diagnostics (this file); push-to-talk and
//! the microphone (`ptt.rs`); launch options and the PTT key (`launch.rs`); what the
//! dot, tray and banner show (`presentation.rs`); the pure fold of events into the
//! window's state (`view.rs`); the settings file (`settings.rs`).

pub mod credentials;
pub mod history;
pub mod keys;
mod launch;
#[cfg(target_os = "linux")]
pub mod portal;
pub mod presentation;
mod ptt;
pub mod settings;
pub mod view;
#[cfg(target_os = "linux")]
pub mod x11key;

pub use credentials::{Credentials, TokenStore};
pub use launch::LaunchOptions;
pub use presentation::{DotColor, StatusPresentation};
pub use settings::{Settings, Theme, DEFAULT_HOTKEY};
pub use view::{AppError, AppState, Notice, PttState, View};

use crate::audio::device::{
    list_devices, DeviceEvent, DeviceEvents, DeviceInfo, MicSource, Microphone, Speaker,
};
use crate::audio::tones::{tone_for, Tone, ToneSettings};
use crate::audio::Frame;
use crate::event::{AudioDirection, ClientEvent, Status};
use crate::manager::{
    lock, unix_ms, AudioStats, ClientConfig, ConnectionManager, FloorOutcome, RecoveryStats,
};
use crate::{AudioSink, AudioSource};
use roger_protocol::{ChannelId, ErrorAction, ErrorBody, ErrorCode};
use serde::Serialize;
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// The channel the echo bot listens in (the microphone test talks there).
pub const ECHO_CHANNEL: &str = "echo";

/// How many recent events the diagnostics view keeps.
const EVENT_LOG: usize = 200;

/// What the app reports to its window.
#[derive(Debug, Clone, PartialEq)]
pub enum AppEvent {
    /// Everything shown changed (sent whole: it is small; boxed, as it is the one
    /// large variant).
    State(Box<AppState>),
    /// A level reading for the meters.
    Level {
        /// Microphone (`Tx`) or what plays (`Rx`).
        direction: AudioDirection,
        /// RMS, 0..1.
        rms: f32,
        /// Peak, 0..1.
        peak: f32,
    },
    /// Something to announce once (a toast).
    Notice(Notice),
}

/// Where [`AppEvent`]s go.
pub type Emit = Arc<dyn Fn(AppEvent) + Send + Sync>;

/// One line of the diagnostics view's event list.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct LoggedEvent {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The event as JSON.
    pub text: String,
}

/// What the diagnostics view shows (and copies).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Diagnostics {
    /// The app's version.
    pub version: String,
    /// The status now.
    pub status: Status,
    /// How it looks (the same as the header's).
    pub presentation: StatusPresentation,
    /// The recovery figures (as exported to metrics).
    pub recovery: RecoveryStats,
    /// Audio counters.
    pub audio: AudioStats,
    /// Speaker callbacks slower than the audio they asked for (the device ran short).
    pub underruns: u64,
    /// Samples the microphone dropped while transmitting (its capture ring was full:
    /// nobody read them in time), all transmissions of this run of the app.
    pub capture_dropped: u64,
    /// The speaker in use.
    pub output_device: Option<String>,
    /// Recent events, oldest first.
    pub events: Vec<LoggedEvent>,
}

/// The desktop app's core. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    config_dir: PathBuf,
    emit: Emit,
    /// Wakes the state emitter (see [`App::emit_state`]).
    state_changed: std::sync::mpsc::Sender<()>,
    settings: Mutex<Settings>,
    /// Where the token is kept, and the token with the origin it is for (never sent to
    /// the window).
    credentials: Credentials,
    token: Mutex<Option<SavedToken>>,
    view: Mutex<View>,
    session: Mutex<Option<Session>>,
    /// The speaker the session plays into (swapped when the user picks another).
    speaker: Arc<Mutex<Option<Speaker>>>,
    /// The microphone while transmitting.
    mic: Mutex<Option<Microphone>>,
    /// Samples the transmissions' microphones dropped (their capture ring full), those
    /// closed so far.
    capture_dropped: std::sync::atomic::AtomicU64,
    /// The settings' level meter.
    meter: Mutex<Option<(Microphone, tokio::task::JoinHandle<()>)>>,
    /// One PTT operation at a time (press and release arrive from a key and a button).
    ptt_lock: tokio::sync::Mutex<()>,
    log: Mutex<VecDeque<LoggedEvent>>,
    /// Which transmissions this app has heard (see `history.rs`).
    heard: Mutex<history::Heard>,
}

/// The sign-in token, where it is kept, and the server origin it was given for.
struct SavedToken {
    token: String,
    store: TokenStore,
    origin: String,
}

impl SavedToken {
    /// `token` for `server_url`'s origin (`None` for an address without one).
    fn new(server_url: &str, token: String, store: TokenStore) -> Option<SavedToken> {
        credentials::origin(server_url).map(|origin| SavedToken {
            token,
            store,
            origin,
        })
    }
}

struct Session {
    manager: ConnectionManager,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The state emitter's loop: on each wake-up (several at once count as one), sends the
/// state as it is now. Ends with the app.
fn state_emitter(inner: &Weak<Inner>, changes: &std::sync::mpsc::Receiver<()>) {
    while changes.recv().is_ok() {
        while changes.try_recv().is_ok() {}
        let Some(inner) = inner.upgrade() else { return };
        let state = inner.snapshot();
        (inner.emit)(AppEvent::State(Box::new(state)));
    }
}

impl Inner {
    /// Closes a transmission's microphone, counting what it dropped.
    fn close_mic(&self, mic: Microphone) {
        self.capture_dropped
            .fetch_add(mic.dropped(), std::sync::atomic::Ordering::Relaxed);
        mic.stop();
    }

    /// What the window shows now.
    fn snapshot(&self) -> AppState {
        let mut state = lock(&self.view).snapshot();
        state.token_store = self.token().map(|(_, store)| store);
        state
    }

    /// The saved token, if it is for the server the settings name.
    fn token(&self) -> Option<(String, TokenStore)> {
        let server_url = lock(&self.settings).server_url.clone();
        self.token_for(&server_url)
    }

    /// The saved token, if it is for `server_url`'s origin.
    fn token_for(&self, server_url: &str) -> Option<(String, TokenStore)> {
        let origin = credentials::origin(server_url)?;
        lock(&self.token)
            .as_ref()
            .filter(|t| t.origin == origin)
            .map(|t| (t.token.clone(), t.store))
    }
}

fn not_connected() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::NotAuthenticated,
        "not connected: enter a server and a token and connect first",
    )
}

/// Received audio goes to whichever speaker is current (or nowhere without one).
struct SpeakerSink(Arc<Mutex<Option<Speaker>>>);

impl AudioSink for SpeakerSink {
    fn play(&mut self, _channel: &ChannelId, _rtp_timestamp: u32, _pcm: &[i16]) {}
    fn packet(&mut self, channel: &ChannelId, sequence: u16, timestamp: u32, payload: &[u8]) {
        if let Some(s) = lock(&self.0).as_mut() {
            s.packet(channel, sequence, timestamp, payload);
        }
    }
    fn replay(&mut self, channel: &ChannelId, pcm: &[i16]) {
        if let Some(s) = lock(&self.0).as_mut() {
            s.replay(channel, pcm);
        }
    }
    fn replay_lead(&self) -> u32 {
        lock(&self.0).as_ref().map_or(0, |s| s.replay_lead())
    }
    fn decodes(&self) -> bool {
        false
    }
}

fn tone_settings(on: bool) -> ToneSettings {
    ToneSettings {
        off: if on { Vec::new() } else { Tone::ALL.to_vec() },
        ..ToneSettings::default()
    }
}

impl App {
    /// Loads the settings from `config_dir` (a bad file is kept aside and reported in the
    /// banner) and starts idle. Call [`App::autostart`] to connect with saved settings.
    pub fn new(config_dir: &Path, emit: Emit) -> App {
        Self::with_credentials(config_dir, emit, Credentials::new(config_dir))
    }

    /// [`App::new`] with the token kept by `credentials` (tests use a file-only store).
    pub fn with_credentials(config_dir: &Path, emit: Emit, credentials: Credentials) -> App {
        let (settings, legacy_token, problem) = Settings::load_with_legacy_token(config_dir);
        let server = settings.server_url.as_str();
        let mut token = credentials
            .load(server)
            .and_then(|(token, store)| SavedToken::new(server, token, store));
        if let Some(old) = legacy_token {
            // An older version kept the token in settings.json: move it out.
            match credentials.save(server, &old) {
                Ok(store) => {
                    token = SavedToken::new(server, old, store);
                    if let Err(e) = settings.save(config_dir) {
                        tracing::error!(error = %e, "could not rewrite the settings without the token");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not move the token out of the settings")
                }
            }
        }
        let mut view = View::default();
        if let Some(p) = problem {
            tracing::warn!(error = %p, "settings");
            view.state_mut().error = Some(AppError {
                action: ErrorAction::None,
                message: "Your settings could not be read; the defaults are used.".into(),
                ..AppError::from_body(&p)
            });
        }
        let (state_changed, changes) = std::sync::mpsc::channel();
        let app = App {
            inner: Arc::new(Inner {
                config_dir: config_dir.to_owned(),
                emit,
                state_changed,
                settings: Mutex::new(settings),
                credentials,
                token: Mutex::new(token),
                view: Mutex::new(view),
                session: Mutex::new(None),
                speaker: Arc::new(Mutex::new(None)),
                mic: Mutex::new(None),
                capture_dropped: std::sync::atomic::AtomicU64::new(0),
                meter: Mutex::new(None),
                ptt_lock: tokio::sync::Mutex::new(()),
                log: Mutex::new(VecDeque::new()),
                heard: Mutex::new(history::Heard::load(config_dir)),
            }),
        };
        let weak = Arc::downgrade(&app.inner);
        let spawned = std::thread::Builder::new()
            .name("roger-app-state".into())
            .spawn(move || state_emitter(&weak, &changes));
        if let Err(e) = spawned {
            // Without the thread the window would never hear of a change.
            tracing::error!(error = %e, "could not start the state emitter");
        }
        app
    }

    /// What the window shows now.
    pub fn state(&self) -> AppState {
        self.inner.snapshot()
    }

    /// The saved token for the server in the settings (none for another server).
    fn token(&self) -> Option<String> {
        self.inner.token().map(|(t, _)| t)
    }

    /// Keeps `token` for `server_url` (credential store, else a private file) for the
    /// next launches.
    fn keep_token(&self, server_url: &str, token: &str) -> Result<(), ErrorBody> {
        let store = self.inner.credentials.save(server_url, token)?;
        *lock(&self.inner.token) = SavedToken::new(server_url, token.to_owned(), store);
        Ok(())
    }

    /// The saved settings.
    pub fn settings(&self) -> Settings {
        lock(&self.inner.settings).clone()
    }

    /// Connects with the saved server and token, if there are any. Returns whether it did.
    pub fn autostart(&self) -> bool {
        let s = self.settings();
        if s.server_url.is_empty() || self.token().is_none() {
            return false;
        }
        self.start_session();
        true
    }

    /// Saves a server address (and whether an unencrypted `ws://` to another machine is
    /// allowed) and keeps the token in the credential store for that server, then
    /// connects (closing any previous session). An empty token means the one saved for
    /// that server. Returns once connecting has started; the status follows in
    /// [`AppEvent::State`].
    pub async fn sign_in(
        &self,
        server_url: String,
        token: String,
        allow_unencrypted: bool,
    ) -> Result<(), ErrorBody> {
        let mut s = self.settings();
        s.server_url = server_url.trim().to_owned();
        s.allow_unencrypted = allow_unencrypted;
        let mut token = token.trim().to_owned();
        if token.is_empty() {
            // "Connect" with the token field empty: the one saved for this server.
            if let Some((saved, _)) = self.inner.token_for(&s.server_url) {
                token = saved;
            }
        }
        if s.server_url.is_empty() || token.is_empty() {
            return Err(ErrorBody::new(
                ErrorCode::TokenInvalid,
                "enter the server address and a token",
            ));
        }
        s.validate()?;
        let server = s.server_url.clone();
        s.save(&self.inner.config_dir)?;
        *lock(&self.inner.settings) = s;
        self.keep_token(&server, &token)?;
        self.disconnect().await;
        self.start_session();
        Ok(())
    }

    /// Disconnects and forgets the token (credential store and file). The server address
    /// stays, so signing in again needs only a new token.
    pub async fn sign_out(&self) -> Result<(), ErrorBody> {
        self.disconnect().await;
        *lock(&self.inner.token) = None;
        let forgotten = self.inner.credentials.forget(&self.settings().server_url);
        self.emit_state();
        forgotten
    }

    /// Closes the session (the settings stay). The status turns `Offline`.
    pub async fn disconnect(&self) {
        let session = lock(&self.inner.session).take();
        if let Some(session) = session {
            if let Some(mic) = lock(&self.inner.mic).take() {
                self.inner.close_mic(mic);
            }
            session.manager.close().await;
            for t in session.tasks {
                t.abort();
            }
            // A grant that landed during the close stored a microphone: close it too.
            if let Some(mic) = lock(&self.inner.mic).take() {
                self.inner.close_mic(mic);
            }
        }
        {
            let mut view = lock(&self.inner.view);
            let error = view.state().error.clone();
            *view = View::default();
            view.state_mut().error = error.filter(|e| e.action != ErrorAction::Rejoin);
        }
        self.emit_state();
    }

    fn start_session(&self) {
        let settings = self.settings();
        self.ensure_speaker(&settings);
        let mut servers = settings::server_list(&settings.server_url).into_iter();
        let mut config = ClientConfig::new(
            servers.next().unwrap_or_default(),
            self.token().unwrap_or_default(),
        );
        config.servers = servers.collect();
        config.client_name = format!("roger-desktop/{}", env!("CARGO_PKG_VERSION"));
        let (manager, events) =
            ConnectionManager::start(config, Box::new(SpeakerSink(self.inner.speaker.clone())));
        {
            let mut view = lock(&self.inner.view);
            let st = view.state_mut();
            st.signed_in = true;
            st.server_url = settings.server_url.clone();
            st.status = Status::Connecting;
            if st
                .error
                .as_ref()
                .is_some_and(|e| e.action != ErrorAction::PickDevice)
            {
                st.error = None;
            }
        }
        let weak = Arc::downgrade(&self.inner);
        let pump = tokio::spawn(pump(weak.clone(), events));
        let join = tokio::spawn(join_when_connected(weak, manager.clone(), settings.channel));
        *lock(&self.inner.session) = Some(Session {
            manager,
            tasks: vec![pump, join],
        });
        self.emit_state();
    }

    fn manager(&self) -> Option<ConnectionManager> {
        lock(&self.inner.session)
            .as_ref()
            .map(|s| s.manager.clone())
    }

    fn device_events(&self) -> DeviceEvents {
        let weak = Arc::downgrade(&self.inner);
        Arc::new(move |ev: DeviceEvent| {
            let Some(inner) = weak.upgrade() else { return };
            let app = App { inner };
            match ev {
                DeviceEvent::Lost(error) => match app.manager() {
                    // Through the session, so it is logged and bannered like any error.
                    Some(m) => m.report_device_error(error),
                    None => {
                        lock(&app.inner.view).state_mut().error = Some(AppError::from_body(&error));
                        app.emit_state();
                    }
                },
                DeviceEvent::Restored { name, .. } => {
                    app.log_line(format!("device restored: {name}"));
                    let cleared = {
                        let mut view = lock(&app.inner.view);
                        let st = view.state_mut();
                        let device = st
                            .error
                            .as_ref()
                            .is_some_and(|e| e.code == ErrorCode::MediaDeviceError);
                        if device {
                            st.error = None;
                        }
                        device
                    };
                    if cleared {
                        app.emit_state();
                    }
                }
            }
        })
    }

    /// Opens the chosen speaker if none is open (a failure is bannered; the session
    /// still connects and can talk).
    fn ensure_speaker(&self, settings: &Settings) {
        if lock(&self.inner.speaker).is_some() {
            return;
        }
        match Speaker::open(settings.output.clone(), self.device_events()) {
            Ok(s) => {
                s.set_tones(tone_settings(settings.tones));
                *lock(&self.inner.speaker) = Some(s);
            }
            Err(e) => {
                tracing::warn!(error = %e, "no speaker");
                lock(&self.inner.view).state_mut().error = Some(AppError::from_body(&e));
            }
        }
    }

    /// Joins `channel` and makes it the one PTT talks to (leaving the previous one).
    pub async fn join(&self, channel: String) -> Result<(), ErrorBody> {
        let manager = self.manager().ok_or_else(not_connected)?;
        let channel = ChannelId(channel);
        let previous = lock(&self.inner.view).state().channel.clone();
        if previous.as_ref() == Some(&channel) {
            return Ok(());
        }
        // Switching while talking: end that transmission first.
        if lock(&self.inner.view).held() {
            self.ptt_up().await;
        }
        lock(&self.inner.view).state_mut().channel = Some(channel.clone());
        match manager.join(&channel).await {
            Ok(state) => {
                lock(&self.inner.view).apply(&ClientEvent::Joined { channel: state });
            }
            Err(e) => {
                lock(&self.inner.view).state_mut().channel = previous;
                self.emit_state();
                return Err(e);
            }
        }
        if let Some(prev) = previous.filter(|p| p.as_str() != ECHO_CHANNEL) {
            if let Err(e) = manager.leave(&prev).await {
                tracing::debug!(error = %e, "leaving the previous channel");
            }
        }
        {
            let mut s = lock(&self.inner.settings);
            s.channel = Some(channel.0.clone());
            if let Err(e) = s.save(&self.inner.config_dir) {
                tracing::warn!(error = %e, "cannot save the channel");
            }
        }
        self.emit_state();
        Ok(())
    }

    /// Leaves the current channel.
    pub async fn leave(&self) -> Result<(), ErrorBody> {
        let manager = self.manager().ok_or_else(not_connected)?;
        let Some(channel) = lock(&self.inner.view).state().channel.clone() else {
            return Ok(());
        };
        self.ptt_up().await;
        let result = manager.leave(&channel).await;
        {
            let mut view = lock(&self.inner.view);
            view.apply(&ClientEvent::Left { channel });
        }
        self.emit_state();
        result
    }

    /// Starts over after a failure (the banner's Rejoin): the session reconnects and
    /// rejoins its channels; without a session, connects with the saved settings.
    pub fn rejoin(&self) {
        lock(&self.inner.view).state_mut().error = None;
        self.ensure_speaker(&self.settings());
        match self.manager() {
            Some(m) => m.rejoin(),
            None => {
                self.autostart();
            }
        }
        self.emit_state();
    }

    /// Hides the banner.
    pub fn dismiss_error(&self) {
        lock(&self.inner.view).state_mut().error = None;
        self.emit_state();
    }

    /// The audio devices.
    pub fn devices(&self) -> Result<Vec<DeviceInfo>, ErrorBody> {
        list_devices()
    }

    /// Saves new settings (checked first) and applies what changed: the speaker, tones,
    /// the meter's microphone. A new server or token takes effect with [`App::sign_in`].
    pub fn save_settings(&self, new: Settings) -> Result<(), ErrorBody> {
        new.validate()?;
        new.save(&self.inner.config_dir)?;
        let old = std::mem::replace(&mut *lock(&self.inner.settings), new.clone());
        if old.output != new.output {
            let replaced = lock(&self.inner.speaker).take();
            if let Some(s) = replaced {
                s.stop();
            }
            self.ensure_speaker(&new);
            self.emit_state();
        } else if lock(&self.inner.speaker).is_none() {
            // The speaker failed to open before: saving (the banner's "pick a device")
            // tries again.
            self.ensure_speaker(&new);
            self.emit_state();
        } else if old.tones != new.tones {
            if let Some(s) = lock(&self.inner.speaker).as_ref() {
                s.set_tones(tone_settings(new.tones));
            }
        }
        if old.input != new.input && lock(&self.inner.meter).is_some() {
            self.meter(true)?;
        }
        Ok(())
    }

    /// Figures and recent events for the diagnostics view.
    pub fn diagnostics(&self) -> Diagnostics {
        let manager = self.manager();
        let speaker = lock(&self.inner.speaker).clone();
        let view = lock(&self.inner.view).snapshot();
        Diagnostics {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            status: view.status,
            presentation: view.presentation,
            recovery: manager
                .as_ref()
                .map(|m| m.recovery_stats())
                .unwrap_or_default(),
            audio: manager.as_ref().map(|m| m.stats()).unwrap_or_default(),
            underruns: speaker.as_ref().map(|s| s.underruns()).unwrap_or(0),
            capture_dropped: self
                .inner
                .capture_dropped
                .load(std::sync::atomic::Ordering::Relaxed)
                + lock(&self.inner.mic).as_ref().map_or(0, |m| m.dropped()),
            output_device: speaker.as_ref().and_then(|s| s.device_name()),
            events: lock(&self.inner.log).iter().cloned().collect(),
        }
    }

    /// Closes everything (app exit).
    pub async fn shutdown(&self) {
        let _ = self.meter(false);
        self.disconnect().await;
        if let Some(s) = lock(&self.inner.speaker).take() {
            s.stop();
        }
    }

    /// Tells the window that the state changed. One thread sends every snapshot, each
    /// taken after the change that woke it: were each caller to snapshot and send,
    /// two threads could deliver theirs in either order and the window would keep an
    /// old one (seen in CI: "requesting" arriving after "talking", the button stuck).
    fn emit_state(&self) {
        self.heard(None, unix_ms());
        let _ = self.inner.state_changed.send(());
    }

    fn log_line(&self, text: String) {
        let mut log = lock(&self.inner.log);
        if log.len() == EVENT_LOG {
            log.pop_front();
        }
        log.push_back(LoggedEvent {
            at_ms: unix_ms(),
            text,
        });
    }

    /// Folds a session event into the view, plays its tone, and tells the window.
    fn on_event(&self, event: ClientEvent) {
        if let ClientEvent::AudioLevel {
            direction,
            rms,
            peak,
            ..
        } = event
        {
            (self.inner.emit)(AppEvent::Level {
                direction,
                rms,
                peak,
            });
            return;
        }
        self.log_line(serde_json::to_string(&event).unwrap_or_default());
        let relevant_tone = match &event {
            ClientEvent::Floor { channel, .. } => {
                let view = lock(&self.inner.view);
                view.state().channel.as_ref() == Some(channel)
                    || (view.state().mic_test && channel.as_str() == ECHO_CHANNEL)
            }
            _ => true,
        };
        if relevant_tone {
            if let Some(tone) = tone_for(&event) {
                if let Some(s) = lock(&self.inner.speaker).as_ref() {
                    s.play_tone(tone);
                }
            }
        }
        let (notice, transmitting) = {
            let mut view = lock(&self.inner.view);
            let notice = view.apply(&event);
            let ptt = &view.state().ptt;
            (
                notice,
                matches!(ptt, PttState::Talking { .. } | PttState::Requesting),
            )
        };
        if !transmitting {
            // Revoked, taken over after a reconnect, or failed: the manager stopped
            // sending; close the microphone.
            if let Some(mic) = lock(&self.inner.mic).take() {
                self.inner.close_mic(mic);
            }
        }
        if let Some(n) = notice {
            (self.inner.emit)(AppEvent::Notice(n));
        }
        self.heard(Some(&event), unix_ms());
        self.emit_state();
    }
}

async fn pump(inner: Weak<Inner>, mut events: mpsc::UnboundedReceiver<ClientEvent>) {
    while let Some(event) = events.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        App { inner }.on_event(event);
    }
}

/// Joins the saved channel (else the first one allowed) once the session is up.
async fn join_when_connected(
    inner: Weak<Inner>,
    manager: ConnectionManager,
    saved: Option<String>,
) {
    // A first connection that fails (server down at launch) is retried by Rejoin: keep
    // waiting across Failed until the session is up.
    while manager.wait_connected().await.is_err() {
        let mut status = manager.status();
        loop {
            if status.changed().await.is_err() {
                return;
            }
            if !matches!(*status.borrow_and_update(), Status::Failed { .. }) {
                break;
            }
        }
    }
    let Some(inner) = inner.upgrade() else { return };
    let app = App { inner };
    if lock(&app.inner.view).state().channel.is_some() {
        return; // the user picked one meanwhile
    }
    let allowed: Vec<String> = manager
        .welcome()
        .map(|w| w.channels.iter().map(|c| c.id.0.clone()).collect())
        .unwrap_or_default();
    let channel = saved
        .filter(|c| allowed.contains(c))
        .or_else(|| allowed.iter().find(|c| *c != ECHO_CHANNEL).cloned())
        .or_else(|| allowed.first().cloned());
    if let Some(channel) = channel {
        if let Err(e) = app.join(channel.clone()).await {
            tracing::warn!(%channel, error = %e, "could not join the saved channel");
        }
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config_dir", &self.inner.config_dir)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The window keeps the last state it is sent, so that must be the newest, also when
    /// whoever sends an older snapshot is held up: here the callback dawdles over
    /// "requesting" while another thread is granted the floor and says so.
    #[test]
    fn the_last_state_sent_is_the_newest_even_when_sending_one_is_slow() {
        let sent: Arc<Mutex<Vec<PttState>>> = Arc::default();
        let record = sent.clone();
        let dir = std::env::temp_dir().join("roger-app-state-order-never-written");
        let app = App::with_credentials(
            &dir,
            Arc::new(move |e| {
                if let AppEvent::State(s) = e {
                    if s.ptt == PttState::Requesting {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    lock(&record).push(s.ptt);
                }
            }),
            Credentials::file_only(&dir),
        );
        assert!(lock(&app.inner.view).press());
        let presser = {
            let app = app.clone();
            std::thread::spawn(move || app.emit_state())
        };
        std::thread::sleep(Duration::from_millis(20));
        lock(&app.inner.view).granted(u64::MAX);
        app.emit_state();
        presser.join().expect("presser");
        let talking = PttState::Talking { until_ms: u64::MAX };
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock(&sent).last() != Some(&talking) {
            assert!(Instant::now() < deadline, "sent: {:?}", lock(&sent));
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(lock(&sent).last(), Some(&talking), "{:?}", lock(&sent));
    }
}
