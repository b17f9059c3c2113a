//! A witness of the machine stopping or being too busy to run what asks to run.
//!
//! - One thread per CPU, pinned to it at the highest real-time priority, asks to wake
//!   every millisecond and notes each wake-up that came [`STALL`] or more late. Nothing
//!   on the machine can hold such a thread up but the machine itself (a virtual CPU the
//!   host did not run, the kernel with interrupts off): a [`Kind::Machine`] stall.
//! - One ordinary thread (no priority, on any CPU, as a program's network threads are)
//!   does the same: held up while the real-time ones were not, every CPU was busy with
//!   other work for that long: a [`Kind::Busy`] stall.
//!
//! When it saw neither, every process ran when it asked to, so a glitch in that time is
//! the software's, not the machine's.
//!
//! Used by the audio tests to tell the two apart. Needs the right to real-time
//! scheduling (root, as in CI); without it the witness says so and sees nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A wake-up this late is a stall.
pub const STALL: Duration = Duration::from_millis(4);

/// Which witness saw a stall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A real-time thread pinned to a CPU: the machine did not run that CPU.
    Machine,
    /// The ordinary thread: no CPU was free for an ordinary thread.
    Busy,
}

/// A stall: when the thread woke, how late, and which witness saw it.
#[derive(Debug, Clone, Copy)]
pub struct Stall {
    pub at: Instant,
    pub late: Duration,
    pub kind: Kind,
}

/// The witness threads (stopped on drop).
pub struct StallWitness {
    stalls: Arc<Mutex<Vec<Stall>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Whether every thread got its CPU and real-time priority.
    pub trusted: bool,
}

impl StallWitness {
    /// Starts one real-time thread per CPU this process may run on, and the ordinary one.
    pub fn start() -> StallWitness {
        let cpus = allowed_cpus();
        let stalls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        // `None`: the ordinary thread.
        let threads = cpus
            .iter()
            .map(|&cpu| Some(cpu))
            .chain([None])
            .map(|cpu| {
                let (stalls, stop, tx) = (stalls.clone(), stop.clone(), tx.clone());
                std::thread::spawn(move || {
                    let kind = match cpu {
                        Some(cpu) => {
                            let _ = tx.send(pin_realtime(cpu));
                            Kind::Machine
                        }
                        None => Kind::Busy,
                    };
                    drop(tx);
                    let mut last = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(1));
                        let now = Instant::now();
                        let late = now
                            .duration_since(last)
                            .saturating_sub(Duration::from_millis(1));
                        if late >= STALL {
                            let stall = Stall {
                                at: now,
                                late,
                                kind,
                            };
                            stalls.lock().expect("stalls").push(stall);
                        }
                        last = now;
                    }
                })
            })
            .collect();
        // (A thread that died before it answered closes its sender: no hang.)
        drop(tx);
        let answers: Vec<bool> = rx.iter().collect();
        let trusted =
            !cpus.is_empty() && answers.len() == cpus.len() && answers.iter().all(|&ok| ok);
        if !trusted {
            println!(
                "(stall witness: not every CPU got a pinned real-time thread; machine stalls \
                 may be missed)"
            );
        }
        StallWitness {
            stalls,
            stop,
            threads,
            trusted,
        }
    }

    /// The longest stall of `kind` since `t` (zero if none).
    pub fn worst(&self, t: Instant, kind: Kind) -> Duration {
        self.worst_between(t, Instant::now(), kind)
    }

    /// The longest stall of `kind` that overlapped `from..to` (zero if none): one that
    /// ended in it, or ended after it having started before its end.
    pub fn worst_between(&self, from: Instant, to: Instant, kind: Kind) -> Duration {
        let stalls = self.stalls.lock().expect("stalls");
        stalls
            .iter()
            .filter(|s| s.kind == kind && s.at >= from && s.at - s.late <= to)
            .map(|s| s.late)
            .max()
            .unwrap_or_default()
    }
}

impl Drop for StallWitness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The CPUs this process may run on (its affinity mask: not always 0..n).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, filled by sched_getaffinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Pins the calling thread to `cpu` at the highest FIFO priority. (The `thread-priority`
/// crate sets the priority; pinning is one libc call it does not make.)
fn pin_realtime(cpu: usize) -> bool {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
        ThreadPriority, ThreadSchedulePolicy,
    };
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    let fifo = ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo);
    let rt = 99u8.try_into().is_ok_and(|p| {
        set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Crossplatform(p), fifo)
            .is_ok()
    });
    pinned && rt
}
