//! The desktop app: time from launch to a connected dot, and memory (PSS summed over the
//! app and its WebKit processes) idle and while talking. Under Xvfb with a private
//! PulseAudio, against a local server.
//!
//! "Connected" is the moment the app logs its dot turning green: the same state event
//! the window renders from (the window itself may still be loading its page then; the
//! page reads the state when it is ready).

use roger_e2e::desktop::{AppHome, Display};
use roger_e2e::pulse::Pulse;
use roger_e2e::{bin, have, skip_or_panic, Server};
use serde_json::json;
use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LAUNCHES: usize = 5;

/// PSS in MiB of `pid` and all its descendants, and each process's (name, MiB).
fn tree_pss_mib(pid: u32) -> (f64, Vec<(String, f64)>) {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            if let Some(rest) = stat.rsplit_once(')') {
                if let Some(pp) = rest
                    .1
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                {
                    parent.insert(p, pp);
                }
            }
        }
    }
    let in_tree = |mut p: u32| loop {
        if p == pid {
            return true;
        }
        match parent.get(&p) {
            Some(&pp) if pp != 0 && pp != p => p = pp,
            _ => return false,
        }
    };
    let mut kib = 0.0;
    let mut each = Vec::new();
    for &p in parent.keys() {
        if in_tree(p) {
            let rollup =
                std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
            let k = rollup
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            let name = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            each.push((name.trim().to_owned(), k / 1024.0));
            kib += k;
        }
    }
    (kib / 1024.0, each)
}

struct Launched {
    child: Child,
    green: mpsc::Receiver<Instant>,
    _home: AppHome,
}

fn launch(server: &Server, pulse: &Pulse, display: &Display, token: &str) -> (Instant, Launched) {
    let settings = json!({
        "server_url": server.url(), "token": token, "channel": "general", "hotkey": "F8",
    });
    let home = AppHome::new("bench-app", Some(&settings));
    let started = Instant::now();
    let mut cmd = pulse.command(bin("roger"));
    let mut child = home
        .apply(&mut cmd, display)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("launch the app");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, green) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("status dot") && line.contains("green") {
                let _ = tx.send(Instant::now());
            }
        }
    });
    (
        started,
        Launched {
            child,
            green,
            _home: home,
        },
    )
}

fn stop(mut l: Launched) {
    let _ = Command::new("kill")
        .args(["-TERM", &l.child.id().to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(300));
    let _ = l.child.kill();
    let _ = l.child.wait();
}

pub fn run() {
    for p in ["Xvfb", "xdotool"] {
        if !have(p) {
            skip_or_panic(&format!("{p} is not installed"));
            return;
        }
    }
    let Some(pulse) = Pulse::start() else { return };
    let server = Server::start("");
    let display = Display::start();
    let token = server.token("alice", &["general", "echo"]);
    println!(
        "roger-bench app: {LAUNCHES} launches of {}",
        bin("roger").display()
    );
    let mut times = Vec::new();
    for _ in 0..LAUNCHES {
        let (started, l) = launch(&server, &pulse, &display, &token);
        match l.green.recv_timeout(Duration::from_secs(20)) {
            Ok(at) => times.push(at.duration_since(started).as_secs_f64() * 1000.0),
            Err(_) => println!("  a launch did not connect within 20 s"),
        }
        stop(l);
    }
    times.sort_by(f64::total_cmp);
    if !times.is_empty() {
        println!(
            "  launch -> connected dot: min {:.0} ms, median {:.0} ms, max {:.0} ms (target <= 2000)",
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }

    let (_, l) = launch(&server, &pulse, &display, &token);
    if l.green.recv_timeout(Duration::from_secs(20)).is_err() {
        println!("  the memory run did not connect");
        stop(l);
        return;
    }
    std::thread::sleep(Duration::from_secs(5));
    let (idle, parts) = tree_pss_mib(l.child.id());
    let parts: Vec<String> = parts.iter().map(|(n, m)| format!("{n} {m:.0}")).collect();
    println!("  idle, by process (MiB): {}", parts.join(", "));
    let listener = pulse.bot(
        &server,
        "bob",
        &["general"],
        &["listen", "--channel", "general", "--seconds", "30"],
    );
    let feed = pulse.play_into_mic(&roger_e2e::speech_wav());
    let key = |action: &str| {
        let _ = Command::new("xdotool")
            .args([action, "F8"])
            .env("DISPLAY", &display.name)
            .status();
    };
    key("keydown");
    std::thread::sleep(Duration::from_secs(3));
    let (talking, _) = tree_pss_mib(l.child.id());
    key("keyup");
    drop(feed);
    drop(listener);
    println!("  memory (PSS, app + WebKit processes): idle {idle:.0} MiB, talking {talking:.0} MiB (target <= 200)");
    stop(l);
}
