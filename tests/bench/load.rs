//! Scale and reconnect-storm figures: a roger-server process and `roger-bot load`
//! processes on loopback.
//!
//! scale: N listeners in one channel (a `--listen-only` audience at `nice 10`, standing
//! in for clients on other machines) plus a probe process at normal priority holding the
//! talker and one listener, so the probe's latency is the server's added delay plus
//! loopback, not the audience's own CPU starvation. Also 10 channels at once.
//!
//! storm: N clients (one talker) connected; the server is killed (SIGKILL) or drained
//! (SIGTERM) and restarted 1.5 s later on the same port; how long until every client
//! is back, how many hear the talker again, the server's peak CPU.

use roger_e2e::{
    bin, now_ms, proc_cpu_seconds, proc_rss_mib, thread_cpu_seconds, Bot, Server, TempDir,
};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

const SERVER_TOML: &str = "[limits]\nmax_sessions = 5000\n\
    [[channels]]\nid = \"load\"\n\
    [[channels]]\nid = \"storm\"\n";

fn channels_toml(n: usize) -> String {
    (0..n)
        .map(|i| format!("[[channels]]\nid = \"c{i}\"\n"))
        .collect()
}

/// Writes `n` tokens for users `prefix-0..` to a file.
pub(crate) fn tokens(server: &Server, dir: &TempDir, prefix: &str, n: usize) -> String {
    let list: Vec<String> = (0..n)
        .map(|i| server.token(&format!("{prefix}-{i}"), &["*"]))
        .collect();
    let path = dir.join(&format!("{prefix}.tokens"));
    std::fs::write(&path, list.join("\n")).expect("write tokens");
    path.display().to_string()
}

fn load_bot(server: &Server, nice: bool, args: &[String]) -> Bot {
    let mut cmd = if nice {
        let mut c = Command::new("nice");
        c.args(["-n", "10"]).arg(bin("roger-bot"));
        c
    } else {
        Command::new(bin("roger-bot"))
    };
    cmd.arg("--server")
        .arg(server.url())
        .arg("--json")
        .arg("load")
        .args(args);
    Bot::spawn_command(cmd)
}

/// Where to keep a log named `name` (with a timestamp): under `ROGER_BENCH_BOT_LOG=DIR`
/// if set. Each load process's log is kept there (with `ROGER_E2E_BOT_LOG=info` for the
/// clients' recovery lines, each in a span naming its client), and the storm's
/// restarted server's.
fn kept_log(name: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var("ROGER_BENCH_BOT_LOG").ok()?;
    Some(std::path::Path::new(&dir).join(format!("{name}-{}.log", now_ms())))
}

pub(crate) fn summary(bot: Bot, within: Duration) -> Value {
    let (ok, lines, stderr) = bot.wait(within);
    if let Some(path) = kept_log("load") {
        if let Err(e) = std::fs::write(&path, &stderr) {
            println!("cannot keep the log in {}: {e}", path.display());
        }
    }
    let s = lines
        .into_iter()
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no load summary (ok={ok}); stderr: {stderr}"));
    assert!(ok, "roger-bot load failed: {stderr}");
    s
}

/// Samples a process's CPU use in 500 ms windows until `stop`; returns (mean, peak)
/// in percent of one core.
fn sample_cpu(pid: u32, stop: Instant) -> (f64, f64) {
    let mut last = (Instant::now(), proc_cpu_seconds(pid).unwrap_or(0.0));
    let first = last;
    let mut peak: f64 = 0.0;
    while Instant::now() < stop {
        std::thread::sleep(Duration::from_millis(500));
        let Some(cpu) = proc_cpu_seconds(pid) else {
            break;
        };
        let now = Instant::now();
        peak = peak.max((cpu - last.1) / (now - last.0).as_secs_f64() * 100.0);
        last = (now, cpu);
    }
    let mean = (last.1 - first.1) / (last.0 - first.0).as_secs_f64().max(0.001) * 100.0;
    (mean, peak)
}

/// UDP datagrams the kernel dropped because a receiving socket's buffer was full
/// (`RcvbufErrors` in /proc/net/snmp, for this network namespace: here, loopback's
/// receivers, which in the scale bench are almost all the audience's sockets).
fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Packets the kernel dropped because a CPU's input backlog was full (the second column
/// of /proc/net/softnet_stat, summed over CPUs; `net.core.netdev_max_backlog`). On
/// loopback every datagram the server sends is queued there for the receiving socket,
/// so a fan-out burst the softirq cannot drain in time is lost here, not in a socket.
fn softnet_dropped() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/net/softnet_stat").ok()?;
    stat.lines()
        .map(|l| {
            let field = l.split_whitespace().nth(1)?;
            u64::from_str_radix(field, 16).ok()
        })
        .sum()
}

/// Copies the server dropped itself (a listener's transport queue was full).
fn server_dropped(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("roger_rtp_dropped_total{reason=\"downlink_full\"} "))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

fn forward_delay_p(metrics: &str, q: f64) -> f64 {
    // Prometheus histogram buckets: the smallest bound holding a fraction q of samples.
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("roger_forward_delay_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, rest) = l.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, n)| *n >= total * q)
        .map_or(f64::NAN, |b| b.0 * 1000.0)
}

fn lat(v: &Value, p: &str) -> f64 {
    v["latency_ms"][p].as_f64().unwrap_or(f64::NAN)
}

/// One scale run: `listeners` in `channels` channels (round-robin), one talker and one
/// probe listener per channel in the probe process.
/// `listeners` listen-only clients spread over `channel_arg`'s channels, connected and
/// joined (the probe talks for `seconds` once they are; the 10 s after are a tail for
/// an audience that falls behind to read what it was sent, not counted as loss).
fn audience(
    server: &Server,
    dir: &TempDir,
    listeners: usize,
    channel_arg: &str,
    seconds: u64,
) -> Bot {
    let bulk = load_bot(
        server,
        true,
        &[
            "--tokens".into(),
            tokens(server, dir, "bulk", listeners),
            "--clients".into(),
            listeners.to_string(),
            "--channel".into(),
            channel_arg.to_owned(),
            "--listen-only".into(),
            "--ramp".into(),
            "100".into(),
            "--seconds".into(),
            (seconds + 10).to_string(),
        ],
    );
    bulk.wait_event(Duration::from_secs(listeners as u64 / 50 + 60), "ready");
    bulk
}

/// Two clients per channel, the first talking 2.5 s every 3 s, for `seconds`; ready.
fn probe(server: &Server, dir: &TempDir, channels: usize, channel_arg: &str, seconds: u64) -> Bot {
    let probe = load_bot(
        server,
        false,
        &[
            "--tokens".into(),
            tokens(server, dir, "probe", 2 * channels),
            "--clients".into(),
            (2 * channels).to_string(),
            "--channel".into(),
            channel_arg.to_owned(),
            "--talker-every".into(),
            "3".into(),
            "--talk-seconds".into(),
            "2.5".into(),
            "--seconds".into(),
            seconds.to_string(),
        ],
    );
    probe.wait_event(Duration::from_secs(30), "ready");
    probe
}

fn scale_run(listeners: usize, channels: usize, seconds: u64) {
    let names: Vec<String> = if channels == 1 {
        vec!["load".into()]
    } else {
        (0..channels).map(|i| format!("c{i}")).collect()
    };
    let server = Server::start(&format!("{SERVER_TOML}{}", channels_toml(channels)));
    let pid = server.pid().expect("server pid");
    let dir = TempDir::new("scale");
    let rss_before = proc_rss_mib(pid).unwrap_or(f64::NAN);
    let channel_arg = names.join(",");
    let bulk = audience(&server, &dir, listeners, &channel_arg, seconds);
    let rss_connected = proc_rss_mib(pid).unwrap_or(f64::NAN);
    let probe = probe(&server, &dir, channels, &channel_arg, seconds);
    let overflows_before = udp_rcvbuf_errors();
    let backlog_before = softnet_dropped();
    let (cpu_mean, cpu_peak) = sample_cpu(pid, Instant::now() + Duration::from_secs(seconds));
    let p = summary(probe, Duration::from_secs(60));
    let b = summary(bulk, Duration::from_secs(60));
    let overflows = overflows_before
        .zip(udp_rcvbuf_errors())
        .map_or(f64::NAN, |(a, b)| b.saturating_sub(a) as f64);
    let backlog = backlog_before
        .zip(softnet_dropped())
        .map_or(f64::NAN, |(a, b)| b.saturating_sub(a) as f64);
    let metrics = server.metrics();
    let received = b["packets_received"].as_f64().unwrap_or(0.0)
        + p["packets_received"].as_f64().unwrap_or(0.0);
    // Every packet the probe's talkers sent, once per client of its channel: the bulk
    // listeners plus the probe listener.
    let sent = p["packets_sent"].as_f64().unwrap_or(0.0);
    let audience = (listeners / channels + 1) as f64;
    let expected = sent * audience;
    let loss = if expected > 0.0 {
        (expected - received).max(0.0) / expected * 100.0
    } else {
        f64::NAN
    };
    println!(
        "scale {listeners} listeners in {channels} channel(s): loss={loss:.3}% ({received}/{expected}) \
         probe latency p50={:.1}ms p95={:.1}ms p99={:.1}ms | audience latency p50={:.1}ms p95={:.1}ms | \
         server fan-out delay p50<={:.2}ms p95<={:.2}ms | server CPU mean={cpu_mean:.0}% peak={cpu_peak:.0}% of a core | \
         server RSS {rss_before:.0} -> {rss_connected:.0} MiB = {:.2} MiB/session | connect p95={}ms | \
         where the loss was: dropped by the server {:.0}, by receivers' full socket buffers {overflows:.0} (kernel RcvbufErrors), \
         by the kernel's full input backlog {backlog:.0} (softnet_stat)",
        lat(&p, "p50"),
        lat(&p, "p95"),
        lat(&p, "p99"),
        lat(&b, "p50"),
        lat(&b, "p95"),
        forward_delay_p(&metrics, 0.50),
        forward_delay_p(&metrics, 0.95),
        (rss_connected - rss_before) / listeners as f64,
        b["connect_ms"]["p95"],
        server_dropped(&metrics),
    );
}

fn storm_run(clients: usize, drain: bool) {
    let mut server = Server::start(SERVER_TOML);
    let dir = TempDir::new("storm");
    let bot = load_bot(
        &server,
        false,
        &[
            "--tokens".into(),
            tokens(&server, &dir, "storm", clients),
            "--clients".into(),
            clients.to_string(),
            "--channel".into(),
            "storm".into(),
            "--talker-every".into(),
            "2".into(),
            "--talk-seconds".into(),
            "1.5".into(),
            "--seconds".into(),
            "30".into(),
        ],
    );
    bot.wait_event(Duration::from_secs(clients as u64 / 50 + 60), "ready");
    std::thread::sleep(Duration::from_secs(3));
    let down_ms = now_ms();
    if drain {
        server.terminate(Duration::from_secs(10));
    } else {
        server.kill9();
    }
    std::thread::sleep(Duration::from_millis(1500));
    // `ROGER_BENCH_SERVER_LOG=FILTER` runs the restarted server with that `RUST_LOG`
    // (its log is kept with the load log, under `ROGER_BENCH_BOT_LOG`).
    match std::env::var("ROGER_BENCH_SERVER_LOG") {
        Ok(filter) => server.relaunch_with_log(&filter),
        Err(_) => server.restart(),
    }
    let back_ms = now_ms();
    let pid = server.pid().expect("server pid");
    let (cpu_mean, cpu_peak) = sample_cpu(pid, Instant::now() + Duration::from_secs(12));
    let s = summary(bot, Duration::from_secs(90));
    if let Some(path) = kept_log("server") {
        if let Err(e) = std::fs::copy(&server.log, &path) {
            println!("cannot keep the server log in {}: {e}", path.display());
        }
    }
    let storm = &s["storm"];
    let returns = storm["returns"].as_array().cloned().unwrap_or_default();
    let mut waits: Vec<f64> = returns
        .iter()
        .filter_map(|r| r["back_at_ms"].as_u64())
        .map(|t| t as f64 - back_ms as f64)
        .collect();
    // For each client, its first reconnect attempt after the server was back (from the
    // `retry_at` its status announced): how long the backoff made it wait.
    let mut attempt_waits: Vec<f64> = returns
        .iter()
        .filter_map(|r| {
            r["retries_at_ms"]
                .as_array()?
                .iter()
                .filter_map(Value::as_u64)
                .find(|t| *t >= back_ms)
                .map(|t| (t - back_ms) as f64)
        })
        .collect();
    attempt_waits.sort_by(f64::total_cmp);
    waits.sort_by(f64::total_cmp);
    for c in storm["not_back_statuses"].as_array().into_iter().flatten() {
        println!(
            "  client {} not back: statuses (Unix ms, status, retry at) {}",
            c["client"], c["statuses"]
        );
    }
    // The slowest client's status trail, to see where its time went.
    if let Some(slowest) = returns
        .iter()
        .max_by_key(|r| r["back_at_ms"].as_u64().unwrap_or(0))
    {
        println!(
            "  slowest client {}: statuses (Unix ms) {}",
            slowest["client"], slowest["statuses"]
        );
    }
    let pick = |q: f64| {
        waits
            .get(((waits.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    // Arrivals per 100 ms: a thundering herd would put most clients in one bucket.
    let mut buckets = std::collections::BTreeMap::<i64, usize>::new();
    for w in &waits {
        *buckets.entry((w / 100.0).floor() as i64).or_default() += 1;
    }
    let peak_bucket = buckets.values().max().copied().unwrap_or(0);
    // Each wait a client announced against its schedule. Attempts made while its status
    // was still Degraded (media up, signaling down) announce nothing, so the step is
    // bounded by time instead: t after the drop, at most the k-th step can be pending,
    // k the number of whole steps (without jitter) that fit in t. Allowed: that
    // signaling step plus its jitter (after a drain notice: the server's 500 ms plus
    // jitter, the longest of the drain schedule, whose later retries come every 250 ms),
    // that media retry step plus its jitter, or, for the retry after a rebuild, the
    // time a new transport gets to connect plus that jitter, whichever is longest. The
    // numbers are the client's own defaults.
    let config = roger_client::recovery::RecoveryConfig::default();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let signaling: Vec<f64> = config.signaling_backoff.iter().map(ms).collect();
    let media: Vec<f64> = config.retry_backoff.iter().map(ms).collect();
    let (sig_jitter, media_jitter) = (ms(&config.signaling_jitter), 1.0 + config.retry_jitter);
    let connect = ms(&config.connect_timeout) * media_jitter;
    let pending_step = |steps: &[f64], elapsed: f64| {
        let (mut sum, mut k) = (0.0, 0);
        while k + 1 < steps.len() && sum + steps[k] <= elapsed {
            sum += steps[k];
            k += 1;
        }
        steps[k]
    };
    let mut over_schedule = Vec::new();
    let mut longest_wait: f64 = 0.0;
    for r in &returns {
        for pair in r["waits_ms"].as_array().into_iter().flatten() {
            let (Some(t), Some(w)) = (pair[0].as_f64(), pair[1].as_f64()) else {
                continue;
            };
            let elapsed = t - down_ms as f64;
            let signaling_allows = if drain {
                500.0 + sig_jitter
            } else {
                pending_step(&signaling, elapsed) + sig_jitter
            };
            let allowed = signaling_allows
                .max(pending_step(&media, elapsed) * media_jitter)
                .max(connect);
            longest_wait = longest_wait.max(w);
            if w > allowed {
                over_schedule.push(json!({"client": r["client"], "at_ms": elapsed, "wait_ms": w, "allowed_ms": allowed}));
            }
        }
    }
    println!(
        "storm ({}) {clients} clients, server down {:.1} s: {} dropped, {} back, {} not back; \
         time after the server's return until back p50={:.0}ms p95={:.0}ms all={:.0}ms \
         (first attempt after the return: max {:.0}ms); most back in one 100 ms window: {peak_bucket}; \
         listeners hearing the talker again: {}/{}; status at the end {}; server CPU after return mean={cpu_mean:.0}% peak={cpu_peak:.0}%; \
         waits each client announced between attempts: longest {longest_wait:.0}ms, {} over the client's own schedule {}",
        if drain { "SIGTERM drain" } else { "kill -9" },
        (back_ms - down_ms) as f64 / 1000.0,
        storm["dropped"],
        waits.len(),
        storm["not_back"],
        pick(0.5),
        pick(0.95),
        waits.last().copied().unwrap_or(f64::NAN),
        attempt_waits.last().copied().unwrap_or(0.0),
        storm["listeners_hearing_again"],
        storm["listeners_back"],
        s["status_now"],
        over_schedule.len(),
        Value::from(over_schedule),
    );
}

/// `roger-bench scale`.
pub fn scale() {
    // `ROGER_BENCH_SCALE=1000x1,500x10` runs only those (listeners x channels).
    if let Ok(runs) = std::env::var("ROGER_BENCH_SCALE") {
        for run in runs.split(',') {
            let parsed = run
                .split_once('x')
                .and_then(|(l, c)| Some((l.trim().parse().ok()?, c.trim().parse().ok()?)));
            match parsed {
                Some((listeners, channels)) if listeners > 0 && channels > 0 => {
                    scale_run(listeners, channels, 15)
                }
                _ => panic!("ROGER_BENCH_SCALE: {run:?} is not LISTENERSxCHANNELS"),
            }
        }
        return;
    }
    scale_run(500, 1, 15);
    scale_run(1000, 1, 15);
    scale_run(1000, 10, 15);
}

/// `roger-bench storm`.
pub fn storm() {
    storm_run(500, false);
    storm_run(500, true);
}

/// `roger-bench history`, the server's side: CPU per forwarded packet with channel
/// history recording on and off, alternated on the same load (100 listeners in 10
/// channels, each channel's talker talking 2.5 s every 3 s: a small fan-out, where
/// recording weighs most), and the disk an hour of speech takes.
pub fn recording_cost() {
    let (mut on, mut off, mut per_hour) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..6 {
        let record = round % 2 == 0;
        let (us, mb_per_hour) = recording_run(record, 100, 10, 12);
        println!(
            "  round {round}: recording {}: {us:.2} us of server CPU per forwarded packet",
            if record { "on " } else { "off" }
        );
        if record {
            on.push(us);
            per_hour.extend(mb_per_hour);
        } else {
            off.push(us);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (m_on, m_off) = (mean(&on), mean(&off));
    println!(
        "history recording cost: server CPU per forwarded packet {m_off:.2} us off, {m_on:.2} us on \
         ({:+.1} %; 3 runs each, alternated)",
        (m_on / m_off - 1.0) * 100.0
    );
    println!(
        "history storage: {:.1} MB per hour of speech (Opus 24 kb/s as sent, in SQLite)",
        mean(&per_hour)
    );
}

/// One run; returns (server CPU us per forwarded packet, MB per hour of speech stored).
fn recording_run(
    record: bool,
    listeners: usize,
    channels: usize,
    seconds: u64,
) -> (f64, Option<f64>) {
    let toml: String = (0..channels)
        .map(|i| format!("[[channels]]\nid = \"c{i}\"\nrecord = {record}\n"))
        .collect();
    let server = Server::start(&format!("[limits]\nmax_sessions = 5000\n{toml}"));
    let pid = server.pid().expect("server pid");
    let dir = TempDir::new("recording");
    let names: Vec<String> = (0..channels).map(|i| format!("c{i}")).collect();
    let bulk = audience(&server, &dir, listeners, &names.join(","), seconds);
    let probe = probe(&server, &dir, channels, &names.join(","), seconds);
    let cpu0 = proc_cpu_seconds(pid).unwrap_or(f64::NAN);
    let rec0 = thread_cpu_seconds(pid, "roger-history").unwrap_or(f64::NAN);
    let fwd0 = server.metric("roger_rtp_forwarded_total");
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu1 = proc_cpu_seconds(pid).unwrap_or(f64::NAN);
    let rec1 = thread_cpu_seconds(pid, "roger-history").unwrap_or(f64::NAN);
    let fwd1 = server.metric("roger_rtp_forwarded_total");
    if record {
        println!(
            "    the recorder thread: {:.3} us per forwarded packet, {:.2} % of the server's CPU",
            (rec1 - rec0) / (fwd1 - fwd0).max(1.0) * 1e6,
            (rec1 - rec0) / (cpu1 - cpu0) * 100.0
        );
    }
    summary(probe, Duration::from_secs(60));
    summary(bulk, Duration::from_secs(60));
    let us = (cpu1 - cpu0) / (fwd1 - fwd0).max(1.0) * 1e6;
    let speech_s = server.metric("roger_history_frames_total") * 0.020;
    let mut server = server;
    // Stopped, the database is checkpointed and its write-ahead log removed: the file is
    // what the history takes.
    server.terminate(Duration::from_secs(10));
    let mb_per_hour = record.then(|| {
        let bytes = std::fs::metadata(server.dir.join("history.sqlite3")).map_or(0, |m| m.len());
        bytes as f64 / 1e6 / speech_s.max(1.0) * 3600.0
    });
    (us, mb_per_hour)
}
