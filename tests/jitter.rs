//! Network jitter on loopback, without netem (this kernel has none, and nftables cannot
//! delay a packet): an iptables rule hands the chosen UDP packets to a netfilter queue
//! (`NFQUEUE`, through nftables' xtables compatibility; the kernel has no native nft
//! `queue` either), and a thread here holds each one for a random delay before it lets
//! it go. Packets are let go by their own release time, so a packet can overtake the one
//! before it, as they do on a real path with jitter (and under netem's `delay X Y`).
//!
//! The `nfq` crate speaks the queue's netlink protocol; the holding is the only part
//! written here. Needs root (CAP_NET_ADMIN) and `iptables`.

use rand::Rng;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Packets from `sport_range` ("LO:HI") arriving on loopback held `base` ± `spread`
/// (uniform) each, until dropped.
pub struct Jitter {
    rule: Vec<String>,
    stop: Arc<AtomicBool>,
    held: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Queue number used (any free one; nothing else here uses queues).
const QUEUE: u16 = 7;

impl Jitter {
    /// Starts holding loopback UDP packets whose source port is in `lo..=hi`, or says
    /// why it cannot (not root, no iptables, no queue support in the kernel).
    pub fn start(lo: u16, hi: u16, base: Duration, spread: Duration) -> Result<Jitter, String> {
        let mut queue = nfq::Queue::open().map_err(|e| format!("netfilter queue: {e}"))?;
        queue
            .bind(QUEUE)
            .map_err(|e| format!("netfilter queue {QUEUE}: {e}"))?;
        queue.set_nonblocking(true);
        let rule: Vec<String> = [
            "INPUT",
            "-i",
            "lo",
            "-p",
            "udp",
            "--sport",
            &format!("{lo}:{hi}"),
            "-j",
            "NFQUEUE",
            "--queue-num",
            &QUEUE.to_string(),
            "--queue-bypass",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        iptables("-I", &rule)?;
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, held) = (stop.clone(), held.clone());
            std::thread::spawn(move || hold(queue, base, spread, &stop, &held))
        };
        Ok(Jitter {
            rule,
            stop,
            held,
            thread: Some(thread),
        })
    }

    /// Packets held so far.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether the holding thread still runs (if it died, `--queue-bypass` lets packets
    /// through undelayed).
    pub fn alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Jitter {
    fn drop(&mut self) {
        if let Err(e) = iptables("-D", &self.rule) {
            println!("(could not remove the jitter rule: {e})");
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn iptables(op: &str, rule: &[String]) -> Result<(), String> {
    let out = Command::new("iptables")
        .arg(op)
        .args(rule)
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {op}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Takes packets off the queue and lets each go at its own release time.
fn hold(
    mut queue: nfq::Queue,
    base: Duration,
    spread: Duration,
    stop: &AtomicBool,
    held: &AtomicU64,
) {
    let mut rng = rand::rng();
    let (lo, hi) = (
        base.saturating_sub(spread).as_secs_f64(),
        (base + spread).as_secs_f64(),
    );
    // By release time; the sequence number keeps equal times in arrival order.
    let mut waiting: BTreeMap<(Instant, u64), nfq::Message> = BTreeMap::new();
    let mut n = 0u64;
    let mut errors = 0u64;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        loop {
            match queue.recv() {
                Ok(msg) => {
                    let delay = Duration::from_secs_f64(rng.random_range(lo..=hi));
                    // (A message's verdict is Accept unless set otherwise.)
                    n += 1;
                    held.fetch_add(1, Ordering::Relaxed);
                    waiting.insert((Instant::now() + delay, n), msg);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // (The packet, if any, went with the error: the kernel lets it go
                    // at unbind.) Said once, then counted.
                    errors += 1;
                    if errors == 1 {
                        println!("(jitter queue: {e}; further errors counted)");
                    }
                    break;
                }
            }
        }
        let now = Instant::now();
        while let Some(entry) = waiting.first_entry() {
            if !stopping && entry.key().0 > now {
                break;
            }
            if let Err(e) = queue.verdict(entry.remove()) {
                println!("(jitter verdict: {e})");
            }
        }
        if stopping {
            let _ = queue.unbind(QUEUE);
            if errors > 1 {
                println!("(jitter queue: {errors} errors)");
            }
            return;
        }
        std::thread::sleep(Duration::from_micros(250));
    }
}
