//! `roger-bot`: a headless Roger client for people, tests and benchmarks.
//!
//! ```text
//! (`--server` may be repeated: the nodes of a cluster, tried in turn.)
//! roger-bot --server URL --token TOKEN [--json] talk --channel C --wav IN.wav [--repeat N]
//! roger-bot --server URL --token TOKEN [--json] talk --channel C --input DEVICE --seconds S
//! roger-bot --server URL --token TOKEN [--json] listen --channel C [--out OUT.wav]
//!           [--output DEVICE] --seconds S
//! roger-bot [--json] devices
//! roger-bot --server URL --token TOKEN [--json] echo [--channel echo]
//! roger-bot --server URL --token TOKEN [--json] history --channel C [--out DIR]
//! roger-bot --server URL [--json] load --tokens FILE --clients N --channel C[,C2...]
//!           --seconds T [--talker-every S] [--talk-seconds S] [--ramp PER_S] [--decode]
//! roger-bot --server URL --token TOKEN [--json] duplex --channel C --wav IN.wav --seconds S
//!           [--talk-every S] [--offset S]
//! ```
//!
//! With `--json`, stdout carries one JSON object per line, each with `t_ms` (Unix
//! milliseconds) and `event`: `status` (`status`), `floor` (`state`, `by`), `error`
//! (`code`, `message`), `audio` once a second (`frames_sent`, `frames_received`), and
//! `joining`, `joined`, `first_audio`, `recovered` (`time_to_recover_ms`), `done`;
//! after a recovery, `missed_replay` (`channel`, `by`, `missed_ms`, `from_ms`) as the
//! playback of each transmission missed while reconnecting starts, `replay_paused`
//! (`channel`, `paused`) while live audio holds it, `replay_done` (`channel`,
//! `played_ms`); `history` prints a `transmission` line each (`channel`, `id`, `by`, `user`,
//! `start_ms`, `duration_ms`, `ended`).

mod history;
mod load;
mod output;

use clap::{Parser, Subcommand};
use output::Output;
use roger_client::audio::device::{list_devices, DeviceEvent, DeviceEvents, Microphone, Speaker};
use roger_client::audio::{write_wav, PcmSource};
use roger_client::protocol::{ChannelId, ErrorBody, ErrorCode};
use roger_client::{AudioSink, ClientConfig, ConnectionManager, FloorEvent, FloorOutcome};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Parser)]
#[command(name = "roger-bot", version, about = "Headless Roger client")]
struct Cli {
    /// Server signaling URL, e.g. ws://127.0.0.1:7070/ws (every command but `devices`).
    /// Repeat it (or separate with commas) for the nodes of a cluster: the first is
    /// tried first, the others when it cannot be reached.
    #[arg(long, env = "ROGER_SERVER", value_delimiter = ',')]
    server: Vec<String>,
    /// Access token (`roger-server token ...`); `load` takes a file of them instead.
    #[arg(long, env = "ROGER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print one JSON object per line on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// UDP media bind address (repeatable); default: loopback for a loopback server.
    #[arg(long = "media-bind", global = true)]
    media_bind: Vec<String>,
    /// Also trust the CA certificate(s) in this PEM file for `wss://` (a self-hosted
    /// server with its own CA). Certificates are always verified.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Give up if the first connection is not up within this many seconds.
    #[arg(long, global = true, default_value_t = 15.0)]
    connect_timeout: f64,
    /// After giving up (`Failed`), start over by itself after this many seconds, as a
    /// person would press Rejoin (for unattended bots). Off by default.
    #[arg(long, global = true)]
    auto_rejoin: Option<f64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Request the floor, send a WAV file in real time (or hold PTT on a microphone for
    /// a while), release, exit.
    Talk {
        /// Channel to talk in.
        #[arg(long)]
        channel: String,
        /// 48 kHz WAV file to send.
        #[arg(long, required_unless_present = "input", conflicts_with = "input")]
        wav: Option<PathBuf>,
        /// Send the file this many times in one transmission.
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        /// Capture from this input device instead (`default`, or an id from `devices`).
        #[arg(long, requires = "seconds")]
        input: Option<String>,
        /// With --input: hold PTT this long.
        #[arg(long)]
        seconds: Option<f64>,
    },
    /// Listen to a channel for a while: record it into a WAV file, play it on an output
    /// device, or both.
    Listen {
        /// Channel to listen to.
        #[arg(long)]
        channel: String,
        /// Output WAV file (48 kHz mono).
        #[arg(long, required_unless_present = "output")]
        out: Option<PathBuf>,
        /// Play on this output device (`default`, or an id from `devices`).
        #[arg(long)]
        output: Option<String>,
        /// How long to listen.
        #[arg(long)]
        seconds: f64,
    },
    /// List audio input and output devices with their ids.
    Devices,
    /// Listen the whole time and talk a WAV file every few seconds (both directions of
    /// audio, for soak and fault tests).
    Duplex {
        /// Channel.
        #[arg(long)]
        channel: String,
        /// 48 kHz WAV file to send each time.
        #[arg(long)]
        wav: PathBuf,
        /// Start a transmission this often (skipped while someone else talks).
        #[arg(long, default_value_t = 5.0)]
        talk_every: f64,
        /// Wait this long before the first transmission.
        #[arg(long, default_value_t = 0.0)]
        offset: f64,
        /// Run this long in all.
        #[arg(long)]
        seconds: f64,
    },
    /// Many clients in one process (scale and reconnect-storm tests): the first client
    /// of each channel talks every few seconds, the others count packets and latency.
    /// Prints a JSON summary.
    Load(load::LoadArgs),
    /// List a channel's recorded transmissions (oldest first); with `--out`, save each
    /// as `<id>.wav` (48 kHz mono) in that directory.
    History {
        /// Channel.
        #[arg(long)]
        channel: String,
        /// Directory for the WAV files (created if needed).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Radio check: record each transmission and play it back after the talker releases.
    Echo {
        /// Channel to serve.
        #[arg(long, default_value = "echo")]
        channel: String,
    },
}

/// One channel's recording on one timeline: live frames by their RTP timestamps (so
/// pauses stay pauses), replayed frames where the timeline is when they come.
#[derive(Default)]
struct Track {
    pcm: Vec<i16>,
    /// An RTP timestamp and the position (sample) it was put at.
    live: Option<(u32, usize)>,
    /// The end of the last frame put in, and when it came.
    end: Option<(usize, std::time::Instant)>,
}

impl Track {
    /// Where the timeline is now: the end of the last frame, moved on by the time since.
    fn now(&self) -> usize {
        self.end.map_or(0, |(pos, at)| {
            pos + (at.elapsed().as_micros() * 48 / 1000) as usize
        })
    }

    fn put(&mut self, pos: usize, pcm: &[i16]) {
        let end = pos + pcm.len();
        if self.pcm.len() < end {
            self.pcm.resize(end, 0);
        }
        self.pcm[pos..end].copy_from_slice(pcm);
        self.end = Some((end, std::time::Instant::now()));
    }

    /// A live frame. A timestamp behind the anchor or an hour past it is a new stream (a
    /// fresh session's downlink): anchored where the timeline is now.
    fn add(&mut self, ts: u32, pcm: &[i16]) {
        let pos = match self.live {
            Some((ts0, pos0)) if ts.wrapping_sub(ts0) < 48_000 * 3600 => {
                pos0 + ts.wrapping_sub(ts0) as usize
            }
            _ => {
                let pos = self.now();
                self.live = Some((ts, pos));
                pos
            }
        };
        self.put(pos, pcm);
    }

    /// A replayed frame: right after the one before if that came just now (a replay's
    /// frames follow each other), else where the timeline is now.
    fn add_replay(&mut self, pcm: &[i16]) {
        let pos = match self.end {
            Some((end, at)) if at.elapsed() < Duration::from_millis(100) => end,
            _ => self.now(),
        };
        self.put(pos, pcm);
    }

    fn take(&mut self) -> Vec<i16> {
        std::mem::take(self).pcm
    }
}

/// Records each channel's audio (and what is replayed of it) and reports the first
/// frame.
#[derive(Clone)]
struct RecordingSink {
    recordings: Arc<Mutex<HashMap<ChannelId, Track>>>,
    out: Output,
    heard: Arc<std::sync::atomic::AtomicBool>,
    /// Off: packets are only noticed (first_audio), not decoded or recorded.
    record: Arc<std::sync::atomic::AtomicBool>,
}

impl AudioSink for RecordingSink {
    fn packet(&mut self, channel: &ChannelId, _: u16, _: u32, _: &[u8]) {
        if !self.heard.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.out.line(
                "first_audio",
                serde_json::json!({ "channel": channel }),
                || format!("hearing audio in {channel}"),
            );
        }
    }

    fn decodes(&self) -> bool {
        self.record.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn play(&mut self, channel: &ChannelId, rtp_timestamp: u32, pcm: &[i16]) {
        let mut r = self.recordings.lock().expect("recordings lock");
        r.entry(channel.clone())
            .or_default()
            .add(rtp_timestamp, pcm);
    }

    fn replay(&mut self, channel: &ChannelId, pcm: &[i16]) {
        let mut r = self.recordings.lock().expect("recordings lock");
        r.entry(channel.clone()).or_default().add_replay(pcm);
    }
}

impl RecordingSink {
    fn new(out: Output) -> Self {
        RecordingSink {
            recordings: Arc::default(),
            out,
            heard: Arc::default(),
            record: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }
    fn recording_off(&self) {
        self.record
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
    fn take(&self, channel: &ChannelId) -> Vec<i16> {
        self.heard
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.recordings
            .lock()
            .expect("recordings lock")
            .get_mut(channel)
            .map(Track::take)
            .unwrap_or_default()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "warn,webrtc=error,rtc=error,rtc_dtls=error,rtc_ice=error,pulseaudio::client::reactor=off".into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let out = Output::new(cli.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("INTERNAL_ERROR: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, out.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            out.error(&e);
            eprintln!("{}: {}", e.code, e.message);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, out: Output) -> Result<(), ErrorBody> {
    if let Command::Devices = cli.command {
        return devices(&out);
    }
    let Some(server) = cli.server.first() else {
        return Err(ErrorBody::new(
            ErrorCode::SignalingUnreachable,
            "--server (or ROGER_SERVER) is required",
        ));
    };
    let mut config = ClientConfig::new(server, cli.token.as_deref().unwrap_or_default());
    config.servers = cli.server[1..].to_vec();
    config.client_name = format!("roger-bot/{}", env!("CARGO_PKG_VERSION"));
    if !cli.media_bind.is_empty() {
        config.media_bind = Some(cli.media_bind.clone());
    }
    if let Some(ca) = &cli.ca {
        let pem = std::fs::read_to_string(ca).map_err(|e| {
            ErrorBody::new(
                ErrorCode::CertificateInvalid,
                format!("cannot read --ca {}: {e}", ca.display()),
            )
        })?;
        config.extra_ca_pem = Some(pem);
    }
    let command = match cli.command {
        Command::Load(args) => return load::run(config, args, out).await,
        _ if cli.token.is_none() => {
            return Err(ErrorBody::new(
                ErrorCode::TokenInvalid,
                "--token (or ROGER_TOKEN) is required",
            ))
        }
        Command::History { channel, out: dir } => {
            return history::run(config, &out, channel.into(), dir).await
        }
        other => other,
    };
    let sink = RecordingSink::new(out.clone());
    // The device-event callback needs the session, which needs the sink: late-bound.
    let session_slot: Arc<Mutex<Option<ConnectionManager>>> = Arc::default();
    let device_events = device_events(out.clone(), session_slot.clone());
    let speaker = match &command {
        Command::Listen {
            output: Some(device),
            ..
        } => Some(Speaker::open(
            device.parse().unwrap_or_default(),
            device_events.clone(),
        )?),
        _ => None,
    };
    // A speaker without a recording: the manager need not decode (the speaker does).
    if let (
        Command::Listen {
            out: None,
            output: Some(_),
            ..
        },
        Some(_),
    ) = (&command, &speaker)
    {
        sink.recording_off();
    }
    let boxed: Box<dyn AudioSink> = match &speaker {
        Some(speaker) => Box::new(Tee(sink.clone(), speaker.clone())),
        None => Box::new(sink.clone()),
    };
    let (session, events) = ConnectionManager::start(config, boxed);
    *session_slot.lock().expect("session slot") = Some(session.clone());
    let (floor_tx, floor_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(out.clone().print_events(events, floor_tx.clone()));
    wait_connected(
        &session,
        Duration::from_secs_f64(cli.connect_timeout.max(0.1)),
    )
    .await?;
    drop(floor_tx);
    if let Some(after) = cli.auto_rejoin {
        tokio::spawn(auto_rejoin(
            session.clone(),
            Duration::from_secs_f64(after.max(0.0)),
        ));
    }
    tokio::spawn(out.clone().print_audio_stats(session.clone()));

    let result = match command {
        Command::Talk {
            channel,
            wav: Some(wav),
            repeat,
            ..
        } => talk(&session, &out, channel.into(), wav, repeat).await,
        Command::Talk {
            channel,
            input: Some(device),
            seconds,
            ..
        } => {
            talk_device(
                &session,
                &out,
                channel.into(),
                &device,
                seconds.unwrap_or(0.0),
                device_events,
            )
            .await
        }
        Command::Talk { .. } => Err(ErrorBody::new(
            ErrorCode::MediaDeviceError,
            "talk needs --wav or --input",
        )),
        Command::Listen {
            channel,
            out: path,
            seconds,
            ..
        } => {
            let r = listen(&session, &out, &sink, channel.into(), path, seconds).await;
            if let Some(speaker) = &speaker {
                out.line(
                    "playout",
                    serde_json::to_value(speaker.stats()).unwrap_or_default(),
                    || format!("playout: {:?}", speaker.stats()),
                );
            }
            r
        }
        Command::Echo { channel } => echo(&session, &out, &sink, channel.into(), floor_rx).await,
        Command::Load(_) | Command::Devices | Command::History { .. } => {
            unreachable!("handled above")
        }
        Command::Duplex {
            channel,
            wav,
            talk_every,
            offset,
            seconds,
        } => {
            duplex(
                &session,
                &out,
                channel.into(),
                wav,
                talk_every,
                offset,
                seconds,
            )
            .await
        }
    };
    out.stats(&session);
    session.close().await;
    // Let the event printer flush the last status line.
    tokio::time::sleep(Duration::from_millis(50)).await;
    result
}

/// Waits for the first connection: `Connected` (or `Degraded`) within `within`, else the
/// error that stopped it.
async fn wait_connected(session: &ConnectionManager, within: Duration) -> Result<(), ErrorBody> {
    match tokio::time::timeout(within, session.wait_connected()).await {
        Ok(r) => r,
        Err(_) => {
            session.close().await;
            Err(ErrorBody::new(
                ErrorCode::SignalingUnreachable,
                format!("not connected within {within:?}"),
            ))
        }
    }
}

/// Presses Rejoin `after` each give-up that is not a refusal (a bad token stays failed).
async fn auto_rejoin(session: ConnectionManager, after: Duration) {
    let mut status = session.status();
    while status.changed().await.is_ok() {
        let failed = matches!(
            *status.borrow_and_update(),
            roger_client::Status::Failed { code } if !code.is_terminal()
        );
        if failed {
            tokio::time::sleep(after).await;
            tracing::info!("rejoining after a give-up");
            session.rejoin();
        }
    }
}

async fn duplex(
    session: &ConnectionManager,
    out: &Output,
    channel: ChannelId,
    wav: PathBuf,
    talk_every: f64,
    offset: f64,
    seconds: f64,
) -> Result<(), ErrorBody> {
    let pcm: std::sync::Arc<[i16]> = roger_client::audio::read_wav(&wav)?.into();
    join(session, out, &channel).await?;
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs_f64(seconds.max(0.0));
    let mut next = start + Duration::from_secs_f64(offset.max(0.0));
    let every = Duration::from_secs_f64(talk_every.max(0.1));
    while next < end {
        tokio::time::sleep_until(next).await;
        next += every;
        match session
            .talk(&channel, Box::new(PcmSource::new(pcm.clone(), 1)))
            .await
        {
            Ok(_) => {}
            // Refused or not connected right now: try again next time.
            Err(e) => out.error(&e),
        }
    }
    tokio::time::sleep_until(end).await;
    out.line("done", serde_json::json!({}), || "duplex finished".into());
    Ok(())
}

async fn join(
    session: &ConnectionManager,
    out: &Output,
    channel: &ChannelId,
) -> Result<(), ErrorBody> {
    out.line("joining", serde_json::json!({ "channel": channel }), || {
        format!("joining {channel}")
    });
    let state = session.join(channel).await?;
    out.line(
        "joined",
        serde_json::json!({ "channel": channel, "members": state.members.len() }),
        || format!("joined {channel} ({} members)", state.members.len()),
    );
    Ok(())
}

/// Plays into both a recording (decoded frames) and a speaker (packets).
struct Tee(RecordingSink, Speaker);

impl AudioSink for Tee {
    fn play(&mut self, channel: &ChannelId, rtp_timestamp: u32, pcm: &[i16]) {
        self.0.play(channel, rtp_timestamp, pcm);
    }
    fn replay(&mut self, channel: &ChannelId, pcm: &[i16]) {
        self.0.replay(channel, pcm);
        self.1.replay(channel, pcm);
    }
    fn replay_lead(&self) -> u32 {
        self.1.replay_lead()
    }
    fn packet(&mut self, channel: &ChannelId, sequence: u16, timestamp: u32, payload: &[u8]) {
        self.0.packet(channel, sequence, timestamp, payload);
        self.1.packet(channel, sequence, timestamp, payload);
    }
    fn decodes(&self) -> bool {
        self.0.decodes()
    }
}

/// Device events: printed, and reported to the session (as `MEDIA_DEVICE_ERROR`).
fn device_events(out: Output, session: Arc<Mutex<Option<ConnectionManager>>>) -> DeviceEvents {
    Arc::new(move |ev: DeviceEvent| match ev {
        DeviceEvent::Lost(error) => {
            out.error(&error);
            if !out.is_json() {
                eprintln!("{}: {}", error.code, error.message);
            }
            if let Some(s) = session.lock().expect("session slot").as_ref() {
                s.report_device_error(error);
            }
        }
        DeviceEvent::Restored { direction, name } => out.line(
            "device_restored",
            serde_json::json!({ "direction": direction, "name": name }),
            || format!("{name} is back"),
        ),
    })
}

fn devices(out: &Output) -> Result<(), ErrorBody> {
    for d in list_devices()? {
        let dir = match d.direction {
            roger_client::audio::device::DeviceDirection::Input => "input",
            roger_client::audio::device::DeviceDirection::Output => "output",
        };
        out.line(
            "device",
            serde_json::to_value(&d).unwrap_or_default(),
            || {
                format!(
                    "{dir:6} {}{}  ({})",
                    d.id,
                    if d.is_default { " [default]" } else { "" },
                    d.name
                )
            },
        );
    }
    Ok(())
}

/// `--seconds` as a duration; anything but a positive number is refused.
fn positive_seconds(seconds: f64) -> Result<Duration, ErrorBody> {
    if seconds.is_finite() && seconds > 0.0 {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(ErrorBody::new(
            ErrorCode::InternalError,
            "--seconds must be a positive number",
        ))
    }
}

/// Holds PTT for `seconds`, sending what `device` captures from the moment of the
/// press (audio captured before the grant is sent once it arrives).
async fn talk_device(
    session: &ConnectionManager,
    out: &Output,
    channel: ChannelId,
    device: &str,
    seconds: f64,
    events: DeviceEvents,
) -> Result<(), ErrorBody> {
    let hold = positive_seconds(seconds)?;
    join(session, out, &channel).await?;
    let mic = Microphone::open(device.parse().unwrap_or_default(), events)?;
    let pressed = std::time::Instant::now();
    out.line(
        "ptt_down",
        serde_json::json!({ "channel": channel, "device": mic.device_name() }),
        || format!("PTT down on {}", mic.device_name().unwrap_or_default()),
    );
    match session.ptt_down(&channel, Box::new(mic.source())).await? {
        FloorOutcome::Granted { .. } => {}
        FloorOutcome::Denied { holder } => {
            return Err(ErrorBody::new(
                ErrorCode::FloorDenied,
                format!("{} holds the floor in {channel}", holder.name),
            ))
        }
    }
    tokio::time::sleep_until((pressed + hold).into()).await;
    session.ptt_up().await?;
    mic.stop();
    out.line(
        "done",
        serde_json::json!({ "dropped_samples": mic.dropped() }),
        || "transmission sent".into(),
    );
    Ok(())
}

async fn talk(
    session: &ConnectionManager,
    out: &Output,
    channel: ChannelId,
    wav: PathBuf,
    repeat: u32,
) -> Result<(), ErrorBody> {
    let source = PcmSource::from_wav(&wav, repeat)?;
    join(session, out, &channel).await?;
    match session.talk(&channel, Box::new(source)).await? {
        FloorOutcome::Granted { .. } => {
            out.line("done", serde_json::json!({}), || "transmission sent".into());
            Ok(())
        }
        FloorOutcome::Denied { holder } => Err(ErrorBody::new(
            ErrorCode::FloorDenied,
            format!("{} holds the floor in {channel}", holder.name),
        )),
    }
}

async fn listen(
    session: &ConnectionManager,
    out: &Output,
    sink: &RecordingSink,
    channel: ChannelId,
    path: Option<PathBuf>,
    seconds: f64,
) -> Result<(), ErrorBody> {
    let listen_for = positive_seconds(seconds)?;
    join(session, out, &channel).await?;
    tokio::time::sleep(listen_for).await;
    let pcm = sink.take(&channel);
    let Some(path) = path else {
        out.line("done", serde_json::json!({ "samples": pcm.len() }), || {
            format!("heard {} s of audio", pcm.len() / 48_000)
        });
        return Ok(());
    };
    write_wav(&path, &pcm)?;
    out.line(
        "done",
        serde_json::json!({ "samples": pcm.len(), "out": path }),
        || {
            format!(
                "wrote {} s of audio to {}",
                pcm.len() / 48_000,
                path.display()
            )
        },
    );
    Ok(())
}

async fn echo(
    session: &ConnectionManager,
    out: &Output,
    sink: &RecordingSink,
    channel: ChannelId,
    mut floor: tokio::sync::mpsc::UnboundedReceiver<(ChannelId, FloorEvent)>,
) -> Result<(), ErrorBody> {
    join(session, out, &channel).await?;
    let mut status = session.status();
    loop {
        let ev = tokio::select! {
            ev = floor.recv() => ev,
            _ = tokio::signal::ctrl_c() => return Ok(()),
            changed = status.changed() => {
                if changed.is_err() || matches!(*status.borrow(), roger_client::Status::Failed { .. }) {
                    return Err(ErrorBody::new(ErrorCode::SignalingClosed, "lost the server"));
                }
                continue;
            }
        };
        let Some((ch, ev)) = ev else { return Ok(()) };
        if ch != channel {
            continue;
        }
        match ev {
            FloorEvent::Taken { .. } => {
                sink.take(&channel); // start a fresh recording for this transmission
            }
            FloorEvent::Idle => {
                let pcm = sink.take(&channel);
                if pcm.is_empty() {
                    continue;
                }
                // A short pause so the talker's client has switched to listening.
                tokio::time::sleep(Duration::from_millis(300)).await;
                match session
                    .talk(&channel, Box::new(PcmSource::new(pcm, 1)))
                    .await
                {
                    Ok(FloorOutcome::Granted { .. }) => {}
                    Ok(FloorOutcome::Denied { holder }) => {
                        tracing::info!("{} started talking again; echo skipped", holder.name)
                    }
                    Err(e) => out.error(&e),
                }
                sink.take(&channel);
            }
            _ => {}
        }
    }
}
