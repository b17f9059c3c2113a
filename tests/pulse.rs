//! A private PulseAudio server with a virtual microphone and speaker (the TESTING.md
//! recipe): null sink `spk` (the speaker), null sink `micfeed` whose monitor is
//! remapped into the source `vmic` (the microphone). Feed the mic with
//! [`Pulse::play_into_mic`], record the speaker with [`Pulse::record_speaker`].
//! Processes that should use it get [`Pulse::env`].

use crate::{bin, have, skip_or_panic, Bot, Server, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running private PulseAudio.
pub struct Pulse {
    dir: TempDir,
    daemon: Child,
    keepers: Vec<Child>,
    env: Vec<(String, String)>,
}

impl Pulse {
    /// Starts one, or returns `None` with a printed reason when PulseAudio is not
    /// installed (never under `CI=true`: there it panics).
    pub fn start() -> Option<Pulse> {
        Self::start_with("")
    }

    /// Like [`Pulse::start`], with more module-script lines (e.g. a combine sink).
    pub fn start_with(extra_modules: &str) -> Option<Pulse> {
        if !(have("pulseaudio") && have("pactl") && have("paplay")) {
            skip_or_panic(
                "pulseaudio/pactl/paplay not installed (scripts/install-deps.sh installs them)",
            );
            return None;
        }
        let dir = TempDir::new("pulse");
        let xdg = dir.join("xdg");
        let home = dir.join("home");
        std::fs::create_dir_all(xdg.join("pulse")).expect("xdg dir");
        std::fs::create_dir_all(&home).expect("home dir");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700));
        }
        let socket = xdg.join("pulse/native");
        std::fs::write(dir.join("client.conf"), "autospawn = no\n").expect("client.conf");
        std::fs::write(
            dir.join("ci.pa"),
            format!(
                "load-module module-native-protocol-unix auth-anonymous=1 socket={}\n\
                 load-module module-null-sink sink_name=spk rate=48000 channels=2\n\
                 load-module module-null-sink sink_name=micfeed rate=48000 channels=1\n\
                 load-module module-remap-source source_name=vmic master=micfeed.monitor\n\
                 set-default-sink spk\n\
                 set-default-source vmic\n\
                 {extra_modules}\n",
                socket.display()
            ),
        )
        .expect("ci.pa");
        let env: Vec<(String, String)> = [
            ("XDG_RUNTIME_DIR", xdg.display().to_string()),
            (
                "PULSE_RUNTIME_PATH",
                xdg.join("pulse").display().to_string(),
            ),
            ("PULSE_SERVER", format!("unix:{}", socket.display())),
            ("PULSE_COOKIE", home.join("cookie").display().to_string()),
            ("PULSE_STATE_PATH", home.join("state").display().to_string()),
            (
                "PULSE_CLIENTCONFIG",
                dir.join("client.conf").display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let daemon = Command::new("pulseaudio")
            .args(["-n", "-F"])
            .arg(dir.join("ci.pa"))
            .args([
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--system=no",
            ])
            .arg(format!(
                "--log-target=file:{}",
                dir.join("pulse.log").display()
            ))
            .env("HOME", &home)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pulseaudio");
        let mut pulse = Pulse {
            dir,
            daemon,
            keepers: Vec::new(),
            env,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pulse
            .command("pactl")
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                Instant::now() < deadline,
                "pulseaudio did not start: {}",
                std::fs::read_to_string(pulse.dir.join("pulse.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Null sinks render in 2 s blocks until someone reads them with low latency.
        for monitor in ["micfeed.monitor", "spk.monitor"] {
            let keeper = pulse
                .command("pacat")
                .args(["--record", "--raw", "--latency-msec=10", "-d", monitor])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("pacat");
            pulse.keepers.push(keeper);
        }
        std::thread::sleep(Duration::from_millis(2100));
        Some(pulse)
    }

    /// Environment variables that point a process at this server.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// `program` with this server's environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// `roger-bot --server URL --token TOKEN --json ARGS...` on this sound server, as
    /// `user` with a token for `channels`.
    pub fn bot(&self, server: &Server, user: &str, channels: &[&str], args: &[&str]) -> Bot {
        let mut cmd = self.command(bin("roger-bot"));
        cmd.arg("--server")
            .arg(server.url())
            .arg("--token")
            .arg(server.token(user, channels))
            .arg("--json")
            .args(args);
        Bot::spawn_command(cmd)
    }

    /// `pactl ARGS`; panics on failure; returns stdout.
    pub fn pactl(&self, args: &[&str]) -> String {
        let out = self.command("pactl").args(args).output().expect("pactl");
        assert!(
            out.status.success(),
            "pactl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts playing `wav` into the virtual microphone.
    pub fn play_into_mic(&self, wav: &Path) -> Child {
        self.command("paplay")
            .args(["-d", "micfeed"])
            .arg(wav)
            .spawn()
            .expect("paplay")
    }

    /// Starts recording the virtual speaker into `out` (stop with [`stop_recording`]).
    pub fn record_speaker(&self, out: &Path) -> Child {
        self.command("parecord")
            .args([
                "--latency-msec=20",
                "--rate=48000",
                "--channels=1",
                "-d",
                "spk.monitor",
                "--file-format=wav",
            ])
            .arg(out)
            .spawn()
            .expect("parecord")
    }

    /// A path in this server's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Stops a recorder cleanly (SIGINT, so the WAV header is written).
pub fn stop_recording(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

/// Reads a WAV (any channel count) as mono i16 at its own rate.
pub fn read_mono(path: &Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(path).expect("wav");
    let ch = usize::from(r.spec().channels.max(1));
    let s: Vec<i16> = r.samples::<i16>().map(|x| x.expect("sample")).collect();
    s.chunks(ch)
        .map(|c| (c.iter().map(|&v| i32::from(v)).sum::<i32>() / ch as i32) as i16)
        .collect()
}

impl Drop for Pulse {
    fn drop(&mut self) {
        for k in &mut self.keepers {
            let _ = k.kill();
            let _ = k.wait();
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}
