//! Speech quality through the whole device path (`roger-bench quality`): three voices,
//! each 5.5 s of speech in a 10 s transmission on loopback through a private PulseAudio,
//! scored with wideband PESQ (ITU-T P.862.2) against the speech itself, beside the same
//! speech through Opus alone at the same bitrate (the best any path can do), with the
//! playout's counters and how many voiced 100 ms windows the speaker's recording holds at
//! one lag. Then the same with 5 % of the server's media to the clients dropped at random
//! (nftables on loopback; needs root and `nft`), then with 20 ms of jitter on top (each
//! of those packets held 20 +- 20 ms through a netfilter queue, `jitter.rs`; needs
//! `iptables`), and last with the jitter alone.
//!
//! `ROGER_BENCH_RUNS=N` repeats each pass N times.

use roger_e2e::audio::{read, voices};
use roger_e2e::jitter::Jitter;
use roger_e2e::netns::nft;
use roger_e2e::pulse::Pulse;
use roger_e2e::quality::{pesq_wb, speech_through_devices};
use roger_e2e::stall::{Kind, StallWitness};
use roger_e2e::{have, Server, TempDir};
use std::time::Duration;

/// The server's media ports in this bench: the lossy pass drops from these.
const MEDIA_PORTS: &str = "47000-47099";
/// The jittery pass: each packet held this much, plus or minus this much.
const JITTER: Duration = Duration::from_millis(20);

pub fn run() {
    let runs: usize = std::env::var("ROGER_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let Some(pulse) = Pulse::start() else { return };
    let server = Server::start(&format!("[media]\nport_range = \"{MEDIA_PORTS}\"\n"));
    let dir = TempDir::new("quality");
    println!("\n== quality: speech through the device path, clean loopback ==");
    pass(&pulse, &server, &dir, runs, "c");
    if !have("nft") {
        println!("(no lossy pass: nft is not installed)");
        return;
    }
    let (lo, hi) = MEDIA_PORTS.split_once('-').unwrap_or(("0", "0"));
    let rule = format!(
        "table inet roger_quality {{\n chain in {{\n type filter hook input priority 0; \
         policy accept;\n iifname \"lo\" udp sport {lo}-{hi} numgen random mod 100 < 5 drop\n }}\n}}\n"
    );
    if let Err(e) = nft(None, &rule) {
        println!("(no lossy pass: nft refused the rule (it needs root): {e})");
        return;
    }
    println!("\n== quality: the same with 5 % random loss from the server to the clients ==");
    pass(&pulse, &server, &dir, runs, "l");
    // And 20 ms of jitter on top: each packet from the server to the clients held
    // 20 +- 20 ms (uniform; netem's `delay 20ms 20ms`), so packets overtake each other.
    let (lo_port, hi_port) = (lo.parse().unwrap_or(0), hi.parse().unwrap_or(0));
    let jitter = Jitter::start(lo_port, hi_port, JITTER, JITTER);
    match &jitter {
        Ok(jitter) => {
            println!(
                "\n== quality: 5 % random loss and 20 ms of jitter (each packet held 20 +- 20 ms) =="
            );
            let before = jitter.held();
            pass(&pulse, &server, &dir, runs, "j");
            held_check(jitter, before);
        }
        Err(e) => println!("(no jittery passes: {e})"),
    }
    if let Err(e) = nft(None, "delete table inet roger_quality") {
        println!("(could not remove the loss rule: {e}; nft delete table inet roger_quality)");
    }
    if let Ok(jitter) = jitter {
        println!("\n== quality: 20 ms of jitter alone (each packet held 20 +- 20 ms), no loss ==");
        let before = jitter.held();
        pass(&pulse, &server, &dir, runs, "s");
        held_check(&jitter, before);
    }
}

/// Says how many packets the jitter held in a pass, and loudly when the figures above
/// are not a jittery path's (nothing held, or the holding thread died and the queue's
/// bypass let packets through undelayed).
fn held_check(jitter: &Jitter, before: u64) {
    let held = jitter.held() - before;
    println!("  ({held} packets held 20 +- 20 ms in this pass)");
    if held == 0 || !jitter.alive() {
        println!("  !! the jitter was not applied: these figures are NOT a jittery path's");
    }
}

fn pass(pulse: &Pulse, server: &Server, dir: &TempDir, runs: usize, tag: &str) {
    let witness = StallWitness::start();
    for round in 0..runs {
        for (i, voice) in voices().iter().enumerate() {
            let name = voice.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
            let run = speech_through_devices(pulse, server, voice, &format!("{tag}{round}{i}"));
            let (from, to) = run.speaking;
            let (machine, busy) = (
                witness.worst_between(from, to, Kind::Machine),
                witness.worst_between(from, to, Kind::Busy),
            );
            let source = read(voice);
            let path = pesq_wb(&dir.0, &source, &run.heard);
            let alone = pesq_wb(&dir.0, &source, &run.opus_alone);
            let at_lag = run.windows.iter().filter(|w| w.corr >= 0.9).count();
            let p = &run.playout;
            println!(
                "  {name}: PESQ-WB path {} | Opus alone {} ; windows at one lag >= 0.9: {at_lag}/{} ; \
                 underruns {} concealed {} fec {} stretched {} compressed {} dropped {} ; \
                 jitter max {} ms ; \
                 device max gap {} ms ; capture dropped {} ; machine stall {:.1} ms, \
                 ordinary thread held {:.1} ms",
                path.map_or("-".into(), |v| format!("{v:.2}")),
                alone.map_or("-".into(), |v| format!("{v:.2}")),
                run.windows.len(),
                p["underruns"],
                p["concealed"],
                p["fec"],
                p["stretched"],
                p["compressed"],
                p["dropped"],
                p["jitter_max_ms"],
                p["device_max_gap_ms"],
                run.capture
                    .as_ref()
                    .map_or("-".into(), |c| c["dropped_samples"].to_string()),
                machine.as_secs_f64() * 1e3,
                busy.as_secs_f64() * 1e3,
            );
        }
    }
}
