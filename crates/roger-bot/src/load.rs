//! `roger-bot load`: many headless clients in one process, for scale and storm tests.
//!
//! Clients are spread round-robin over the given channels; the first client of each
//! channel is its talker and starts a transmission every `--talker-every` seconds. Talkers
//! stamp each packet with its send time ([`roger_client::audio::stamp`]); listeners count
//! packets and read the stamps (no decoding unless `--decode`), so the summary has loss
//! and end-to-end latency without any audio work on the listening side.
//!
//! Lines (`--json`): `ready` once every client is connected and joined (the measurement
//! starts), then `summary`. Status changes of every client are recorded, so the summary
//! also says when each client dropped and came back (the reconnect storm benchmark kills
//! the server during a run).

use crate::output::{unix_ms, Output};
use roger_client::audio::{stamp, PcmSource, FRAME_SAMPLES, SAMPLE_RATE};
use roger_client::protocol::{ChannelId, ErrorBody, ErrorCode};
use roger_client::{AudioSink, ClientConfig, ConnectionManager, FloorOutcome, Status};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What `roger-bot load` was asked to do.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Number of clients.
    #[arg(long)]
    pub clients: usize,
    /// Channel(s), comma-separated; clients are spread over them round-robin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub channel: Vec<String>,
    /// Each channel's talker starts a transmission this often.
    #[arg(long, default_value_t = 5.0)]
    pub talker_every: f64,
    /// Length of each transmission.
    #[arg(long, default_value_t = 3.0)]
    pub talk_seconds: f64,
    /// How long to measure once every client is connected.
    #[arg(long)]
    pub seconds: f64,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 100.0)]
    pub ramp: f64,
    /// Decode received audio (Opus) as a real listener would.
    #[arg(long)]
    pub decode: bool,
    /// No talkers: every client only listens (a bulk audience; the talker and a probe
    /// listener can run in another process, e.g. at a higher priority).
    #[arg(long)]
    pub listen_only: bool,
    /// A file of tokens, one per line (`roger-server token --count N`): client `i` uses
    /// line `i`. A user has one session at a time, so each client needs its own.
    #[arg(long)]
    pub tokens: std::path::PathBuf,
}

/// One listener's counters; its sink writes, the summary reads.
#[derive(Default)]
struct Counts {
    packets: AtomicU64,
    /// Latencies in microseconds of stamped packets received during the measurement.
    latencies_us: Mutex<Vec<u32>>,
    /// Unix ms of the last packet received.
    last_heard_ms: AtomicU64,
}

struct CountingSink {
    counts: Arc<Counts>,
    decode: bool,
}

impl AudioSink for CountingSink {
    fn play(&mut self, _: &ChannelId, _: u32, _: &[i16]) {}

    fn packet(&mut self, _: &ChannelId, _: u16, _: u32, payload: &[u8]) {
        let c = &self.counts;
        c.packets.fetch_add(1, Ordering::Relaxed);
        let now = stamp::now_us();
        c.last_heard_ms.store(now / 1000, Ordering::Relaxed);
        if let Some(sent_us) = stamp::extract(payload) {
            let latency = now.saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32;
            c.latencies_us.lock().expect("latency lock").push(latency);
        }
    }

    fn decodes(&self) -> bool {
        self.decode
    }
}

type StatusChange = (u64, &'static str, Option<u64>);

struct Client {
    index: usize,
    channel: ChannelId,
    session: ConnectionManager,
    counts: Arc<Counts>,
    /// (Unix ms, status name, next retry in Unix ms if reconnecting) of every status
    /// change after the first connect.
    statuses: Arc<Mutex<Vec<StatusChange>>>,
    connect_ms: u64,
}

fn bad(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::InternalError, message)
}

/// CPU seconds used by this process so far (user + system), from /proc on Linux.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}

fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn percentiles(mut v: Vec<u32>, scale: f64) -> serde_json::Value {
    if v.is_empty() {
        return json!(null);
    }
    v.sort_unstable();
    let at = |q: f64| f64::from(v[((v.len() - 1) as f64 * q).round() as usize]) / scale;
    json!({
        "count": v.len(),
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": at(1.0),
    })
}

/// A quiet 400 Hz tone, `seconds` long: something for Opus to encode.
fn tone(seconds: f64) -> Arc<[i16]> {
    let n = ((seconds * f64::from(SAMPLE_RATE)) as usize).max(FRAME_SAMPLES);
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(SAMPLE_RATE);
            (3000.0 * (2.0 * std::f64::consts::PI * 400.0 * t).sin()) as i16
        })
        .collect()
}

async fn connect_one(
    base: &ClientConfig,
    index: usize,
    channel: ChannelId,
    decode: bool,
) -> Result<Client, ErrorBody> {
    let started = Instant::now();
    let mut config = base.clone();
    config.client_name = format!("roger-bot-load/{index}");
    config.stamp_packets = true;
    // One process, many clients: a shared network watcher is not worth N of them.
    config.watch_network = false;
    let counts = Arc::new(Counts::default());
    let sink = CountingSink {
        counts: counts.clone(),
        decode,
    };
    let (session, mut events) = ConnectionManager::start(config, Box::new(sink));
    // Nobody reads the events; drain them so they do not pile up.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    match tokio::time::timeout(Duration::from_secs(30), session.wait_connected()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            session.close().await;
            return Err(e);
        }
        Err(_) => {
            session.close().await;
            return Err(ErrorBody::new(
                ErrorCode::SignalingUnreachable,
                "not connected within 30 s",
            ));
        }
    }
    session.join(&channel).await?;
    let statuses: Arc<Mutex<Vec<StatusChange>>> = Arc::default();
    let mut watch = session.status();
    let log = statuses.clone();
    tokio::spawn(async move {
        watch.borrow_and_update();
        while watch.changed().await.is_ok() {
            let (name, retry_at) = {
                let s = watch.borrow_and_update();
                let retry_at = match &*s {
                    Status::Reconnecting { retry_at_ms, .. } => Some(*retry_at_ms),
                    _ => None,
                };
                (s.name(), retry_at)
            };
            log.lock()
                .expect("status log")
                .push((unix_ms(), name, retry_at));
        }
    });
    Ok(Client {
        index,
        channel,
        session,
        counts,
        statuses,
        connect_ms: started.elapsed().as_millis() as u64,
    })
}

/// Runs the load; prints `ready` and `summary`.
pub async fn run(base: ClientConfig, args: LoadArgs, out: Output) -> Result<(), ErrorBody> {
    if args.clients == 0 || args.channel.is_empty() {
        return Err(bad("--clients must be at least 1 and --channel given"));
    }
    for (name, v) in [
        ("--seconds", args.seconds),
        ("--talker-every", args.talker_every),
        ("--talk-seconds", args.talk_seconds),
        ("--ramp", args.ramp),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(bad(format!("{name} must be a positive number")));
        }
    }
    let channels: Vec<ChannelId> = args.channel.iter().map(|c| c.as_str().into()).collect();
    let tokens: Vec<String> = std::fs::read_to_string(&args.tokens)
        .map_err(|e| {
            bad(format!(
                "cannot read --tokens {}: {e}",
                args.tokens.display()
            ))
        })?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if tokens.len() < args.clients {
        return Err(ErrorBody::new(
            ErrorCode::TokenInvalid,
            format!(
                "--tokens {} has {} tokens for {} clients (make them with roger-server token --count {})",
                args.tokens.display(),
                tokens.len(),
                args.clients,
                args.clients
            ),
        ));
    }

    // Ramp up: `ramp` new connections per second, each connecting on its own task.
    let ramp_started = Instant::now();
    let mut pending = Vec::with_capacity(args.clients);
    let gap = Duration::from_secs_f64(1.0 / args.ramp);
    for index in 0..args.clients {
        let channel = channels[index % channels.len()].clone();
        let mut base = base.clone();
        base.token = tokens[index].clone();
        pending.push(tokio::spawn(async move {
            connect_one(&base, index, channel, args.decode).await
        }));
        tokio::time::sleep(gap).await;
    }
    let mut clients = Vec::with_capacity(args.clients);
    let mut connect_errors: std::collections::BTreeMap<String, usize> = Default::default();
    for p in pending {
        match p.await {
            Ok(Ok(c)) => clients.push(c),
            Ok(Err(e)) => *connect_errors.entry(e.code.to_string()).or_default() += 1,
            Err(e) => *connect_errors.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    let ramp_s = ramp_started.elapsed().as_secs_f64();
    let connect_ms: Vec<u32> = clients.iter().map(|c| c.connect_ms as u32).collect();
    out.line(
        "ready",
        json!({ "connected": clients.len(), "errors": connect_errors, "ramp_s": ramp_s }),
        || format!("{} clients connected in {ramp_s:.1} s", clients.len()),
    );
    if clients.is_empty() {
        return Err(ErrorBody::new(
            ErrorCode::SignalingUnreachable,
            format!("no client connected: {connect_errors:?}"),
        ));
    }

    // Measure.
    let measure_start_ms = unix_ms();
    for c in &clients {
        c.counts.latencies_us.lock().expect("latency lock").clear();
        c.counts.packets.store(0, Ordering::Relaxed);
    }
    let cpu_before = process_cpu_seconds();
    let measured = Instant::now();
    let talk_pcm = tone(args.talk_seconds);
    let sent_before: Vec<u64> = clients
        .iter()
        .map(|c| c.session.stats().frames_sent)
        .collect();
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(args.seconds);
    let mut talkers = Vec::new();
    for ch in channels.iter().filter(|_| !args.listen_only) {
        let Some(talker) = clients.iter().find(|c| &c.channel == ch) else {
            continue;
        };
        let session = talker.session.clone();
        let ch = ch.clone();
        let pcm = talk_pcm.clone();
        let every = Duration::from_secs_f64(args.talker_every);
        let talk_len = Duration::from_secs_f64(args.talk_seconds);
        talkers.push(tokio::spawn(async move {
            let (mut granted, mut refused) = (0u32, 0u32);
            let mut next = tokio::time::Instant::now();
            // Leave time for the last packets to arrive before counting.
            while next + talk_len + Duration::from_millis(500) < end {
                tokio::time::sleep_until(next).await;
                next += every;
                match session
                    .talk(&ch, Box::new(PcmSource::new(pcm.clone(), 1)))
                    .await
                {
                    Ok(FloorOutcome::Granted { .. }) => granted += 1,
                    _ => refused += 1,
                }
            }
            (granted, refused)
        }));
    }
    tokio::time::sleep_until(end).await;
    let mut transmissions = (0u32, 0u32);
    for t in talkers {
        if let Ok((g, r)) = t.await {
            transmissions.0 += g;
            transmissions.1 += r;
        }
    }
    let elapsed = measured.elapsed().as_secs_f64();
    let cpu_percent = match (cpu_before, process_cpu_seconds()) {
        (Some(a), Some(b)) => json!(((b - a) / elapsed * 100.0 * 10.0).round() / 10.0),
        _ => json!(null),
    };

    // Expected: every packet a talker in this process sent, once per other client of
    // this process in its channel (with --listen-only the talkers are elsewhere).
    let mut sent = 0u64;
    let mut expected = 0u64;
    for (i, c) in clients.iter().enumerate() {
        let n = c.session.stats().frames_sent - sent_before[i];
        if n > 0 {
            let listeners = clients
                .iter()
                .filter(|o| o.channel == c.channel && o.index != c.index)
                .count() as u64;
            sent += n;
            expected += n * listeners;
        }
    }
    let received: u64 = clients
        .iter()
        .map(|c| c.counts.packets.load(Ordering::Relaxed))
        .sum();
    let mut latencies = Vec::new();
    for c in &clients {
        latencies.append(&mut c.counts.latencies_us.lock().expect("latency lock"));
    }
    let loss_percent = if expected > 0 {
        (expected.saturating_sub(received) as f64 / expected as f64) * 100.0
    } else {
        0.0
    };

    // Drops and returns during the measurement (the storm benchmark's figures).
    let mut dropped = 0usize;
    let mut back_at_ms: Vec<serde_json::Value> = Vec::new();
    let mut not_back = 0usize;
    let mut stuck: Vec<serde_json::Value> = Vec::new();
    let mut hearing_again = 0usize;
    let mut listeners_dropped = 0usize;
    let mut attempts = Vec::new();
    for c in &clients {
        let log = c.statuses.lock().expect("status log");
        let went_down = log
            .iter()
            .any(|(t, s, _)| *t >= measure_start_ms && !matches!(*s, "Connected" | "Degraded"));
        if !went_down {
            continue;
        }
        dropped += 1;
        let is_talker = !args.listen_only
            && clients
                .iter()
                .find(|o| o.channel == c.channel)
                .is_some_and(|o| o.index == c.index);
        match log.last() {
            Some((t, "Connected" | "Degraded", _)) => {
                let mut retries: Vec<u64> = log.iter().filter_map(|(_, _, r)| *r).collect();
                retries.dedup();
                // Each wait the client announced after the drop, in order: when the
                // status set a new retry time (Unix ms), and how far ahead it was.
                let mut waits: Vec<(u64, u64)> = Vec::new();
                let mut last_retry = None;
                for (t, _, r) in log.iter().filter(|(t, _, _)| *t >= measure_start_ms) {
                    if let Some(r) = *r {
                        if last_retry != Some(r) {
                            waits.push((*t, r.saturating_sub(*t)));
                            last_retry = Some(r);
                        }
                    }
                }
                let trail: Vec<(u64, &str)> = log
                    .iter()
                    .filter(|(t, _, _)| *t >= measure_start_ms)
                    .map(|(t, s, _)| (*t, *s))
                    .collect();
                back_at_ms.push(json!({
                    "client": c.index,
                    "back_at_ms": t,
                    "retries_at_ms": retries,
                    "waits_ms": waits,
                    "statuses": trail,
                }));
                if !is_talker {
                    listeners_dropped += 1;
                    if c.counts.last_heard_ms.load(Ordering::Relaxed) > *t {
                        hearing_again += 1;
                    }
                }
            }
            _ => {
                not_back += 1;
                let trail: Vec<(u64, &str, Option<u64>)> = log
                    .iter()
                    .filter(|(t, _, _)| *t >= measure_start_ms)
                    .copied()
                    .collect();
                stuck.push(json!({ "client": c.index, "statuses": trail }));
            }
        }
        attempts.push(c.session.recovery_stats().reconnect_attempts_total as u32);
    }
    let statuses_now: std::collections::BTreeMap<&str, usize> =
        clients.iter().fold(Default::default(), |mut m, c| {
            *m.entry(c.session.status().borrow().name()).or_default() += 1;
            m
        });

    out.line(
        "summary",
        json!({
            "clients": args.clients,
            "connected": clients.len(),
            "connect_errors": connect_errors,
            "channels": channels.len(),
            "ramp_s": ramp_s,
            "connect_ms": percentiles(connect_ms, 1.0),
            "seconds": elapsed,
            "transmissions": transmissions.0,
            "floor_refused": transmissions.1,
            "packets_sent": sent,
            "packets_expected": expected,
            "packets_received": received,
            "loss_percent": loss_percent,
            "latency_ms": percentiles(latencies, 1000.0),
            "cpu_percent": cpu_percent,
            "rss_mib": rss_mib(),
            "status_now": statuses_now,
            "storm": {
                "dropped": dropped,
                "not_back": not_back,
                "not_back_statuses": stuck,
                "returns": back_at_ms,
                "listeners_back": listeners_dropped,
                "listeners_hearing_again": hearing_again,
                "reconnect_attempts": percentiles(attempts, 1.0),
            },
        }),
        || {
            format!(
                "{} clients, {sent} packets sent, {received}/{expected} received ({loss_percent:.3} % lost)",
                clients.len()
            )
        },
    );
    for c in &clients {
        c.session.close().await;
    }
    Ok(())
}
