//! # roger-e2e: end-to-end tests across real processes
//!
//! Helpers shared by the scenario files in `tests/` (one scenario per file):
//! - [`Server`]: a real `roger-server` process on a free loopback port with its own data
//!   dir and a known secret; stopped (and its files removed) on drop.
//! - [`Bot`]: a real `roger-bot --json` process whose stdout lines are collected.
//! - [`RawClient`]: a bare WebSocket speaking the protocol, for sending what a broken or
//!   hostile client would.
//! - [`audio`]: lag search and correlation between a reference and a recording.
//! - [`scenario`]: the fault tests' lab, server and bots on either side of the fault.
//!
//! The binaries must be built first (`make test` does `cargo build --bins`).

pub mod audio;
pub mod cluster;
pub mod desktop;
pub mod jitter;
pub mod netns;
pub mod portal;
pub mod producer;
pub mod pulse;
pub mod quality;
pub mod scenario;
pub mod stall;

use futures_util::{SinkExt, StreamExt};
use roger_protocol::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The secret every test server signs with.
pub const TEST_SECRET: &str = "roger-e2e-test-secret-32-bytes-long";

/// Path of a workspace binary (`roger-server`, `roger-bot`) next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // A test runs from target/<profile>/deps/; roger-bench from target/<profile>/.
    let here = exe.parent().expect("exe dir");
    let path = [
        here.join(name),
        here.parent().map(|p| p.join(name)).unwrap_or_default(),
    ]
    .into_iter()
    .find(|p| p.exists())
    .unwrap_or_else(|| here.join(name));
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --bins)",
        path.display()
    );
    path
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether this runs under `CI=true` (as root, with every tool installed): tests that
/// would skip elsewhere must run.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A test that cannot run here skips with a printed reason, except under `CI=true`,
/// where it panics (CI installs everything).
pub fn skip_or_panic(why: &str) {
    if under_ci() {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// The speech fixture (3 s, 48 kHz mono).
pub fn speech_wav() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/speech.wav")
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `roger-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("roger-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    /// A path inside.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free TCP port on loopback (the listener is dropped; the race is acceptable here).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `roger-server`.
pub struct Server {
    child: Option<Child>,
    /// Its HTTP address, as the test reaches it.
    pub addr: SocketAddr,
    /// Its data dir and config.
    pub dir: TempDir,
    /// Its stderr log.
    pub log: PathBuf,
    authenticator: roger_server::auth::Authenticator,
    ns: Option<String>,
    listen: SocketAddr,
    media_bind: String,
    rust_log: String,
    /// More command-line arguments (a cluster node's).
    args: Vec<String>,
}

impl Server {
    /// Starts a server with the default config plus `extra_toml` (top-level keys and
    /// tables appended to a config that sets the secret).
    pub fn start(extra_toml: &str) -> Server {
        let dir = TempDir::new("server");
        Self::start_in(dir, free_port(), extra_toml)
    }

    /// Starts a server in `dir` on `port` (used to restart on the same port).
    pub fn start_in(dir: TempDir, port: u16, extra_toml: &str) -> Server {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        Self::launch(dir, None, addr, addr, "127.0.0.1:0", extra_toml)
    }

    /// Starts a server listening on `port` whose `/healthz` and `/metrics` the test
    /// reaches at `probe`: a `[metrics] listen` address given in `extra_toml` (a
    /// `wss://` server, or one that keeps its metrics off the public address).
    pub fn start_probed(port: u16, probe: SocketAddr, extra_toml: &str) -> Server {
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let dir = TempDir::new("server");
        Self::launch(dir, None, listen, probe, "127.0.0.1:0", extra_toml)
    }

    /// Starts a server inside the lab's server namespace, listening on every address
    /// there, with media on the link the client namespace reaches.
    pub fn start_in_lab(lab: &netns::Lab, extra_toml: &str) -> Server {
        let port = free_port();
        let listen: SocketAddr = format!("0.0.0.0:{port}").parse().expect("addr");
        let health: SocketAddr = format!("{}:{port}", netns::SERVER_MGMT_IP)
            .parse()
            .expect("addr");
        let media = format!("{}:0", netns::SERVER_IP);
        Self::launch(
            TempDir::new("server"),
            Some(lab.server_ns.clone()),
            listen,
            health,
            &media,
            extra_toml,
        )
    }

    fn launch(
        dir: TempDir,
        ns: Option<String>,
        listen: SocketAddr,
        addr: SocketAddr,
        media_bind: &str,
        extra_toml: &str,
    ) -> Server {
        write_config(&dir, extra_toml);
        let mut server = Server {
            child: None,
            addr,
            log: dir.join("server.log"),
            dir,
            authenticator: roger_server::auth::Authenticator::new(TEST_SECRET.as_bytes()),
            ns,
            listen,
            media_bind: media_bind.to_owned(),
            rust_log: "info,rtc_dtls=error,rtc_ice=error".to_owned(),
            args: Vec::new(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.log = self.dir.join(&format!("server-{n}.log"));
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("roger-server"));
                c
            }
            None => Command::new(bin("roger-server")),
        };
        let child = cmd
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--config")
            .arg(self.dir.join("roger.toml"))
            .arg("--data-dir")
            .arg(&self.dir.0)
            .arg("--media-bind")
            .arg(&self.media_bind)
            .args(&self.args)
            .env("RUST_LOG", &self.rust_log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).expect("log file"))
            .spawn()
            .expect("spawn roger-server");
        self.child = Some(child);
        self.wait_healthy(Duration::from_secs(10));
    }

    /// Starts a cluster node on loopback: `--cluster redis --node-id id --public-url`.
    pub fn start_node(redis: &str, id: &str, extra_toml: &str) -> Server {
        let dir = TempDir::new("node");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        write_config(&dir, extra_toml);
        let mut server = Server {
            child: None,
            addr,
            log: dir.join("server.log"),
            dir,
            authenticator: roger_server::auth::Authenticator::new(TEST_SECRET.as_bytes()),
            ns: None,
            listen: addr,
            media_bind: "127.0.0.1:0".to_owned(),
            rust_log: "info,rtc_dtls=error,rtc_ice=error".to_owned(),
            args: vec![
                "--cluster".into(),
                redis.into(),
                "--node-id".into(),
                id.into(),
                "--public-url".into(),
                format!("ws://{addr}/ws"),
            ],
        };
        server.spawn();
        server
    }

    /// Restarts the server with `RUST_LOG=rust_log` (tests that inspect logs).
    pub fn relaunch_with_log(&mut self, rust_log: &str) {
        self.kill9();
        self.rust_log = rust_log.to_owned();
        self.spawn();
    }

    /// The signaling URL on `ip` (the address another namespace reaches).
    pub fn url_at(&self, ip: &str) -> String {
        format!("ws://{ip}:{}/ws", self.addr.port())
    }

    fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if http_get(self.addr, "/healthz").is_ok_and(|b| b.contains("ok")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "roger-server did not become healthy; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// `ws://127.0.0.1:PORT/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A valid token for `user` allowing `channels`.
    pub fn token(&self, user: &str, channels: &[&str]) -> String {
        let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
        self.authenticator
            .issue(user, user, &channels, Duration::from_secs(3600))
    }

    /// Signs arbitrary claims with the server's secret.
    pub fn sign(&self, claims: &roger_server::auth::Claims) -> String {
        self.authenticator.sign(claims)
    }

    /// The Prometheus text at `/metrics`.
    pub fn metrics(&self) -> String {
        http_get(self.addr, "/metrics").expect("GET /metrics")
    }

    /// The value of a metric line that starts with `name` (first match), or 0.
    pub fn metric(&self, name: &str) -> f64 {
        metric_value(&self.metrics(), name)
    }

    /// Sends SIGTERM and waits for the process to exit (up to `within`).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The value of the first metric line starting with `name` (`name{...} v` or `name v`).
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(name)
                && l[name.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c == ' ' || c == '{')
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A minimal HTTP/1.0 GET (no client library needed for a few endpoints): the body of a
/// 200 answer, else an error carrying the whole answer.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let (status, body) = http_fetch(addr, path, None)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    if status == 200 {
        Ok(body)
    } else {
        Err(std::io::Error::other(format!(
            "bad response: {status} {body}"
        )))
    }
}

/// A minimal HTTP/1.0 GET, with `Authorization: Bearer <bearer>` when given: the status
/// and the body's bytes.
pub fn http_fetch(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    Ok((status, answer[split + 4..].to_vec()))
}

/// A running `roger-bot --json`.
pub struct Bot {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    started: Instant,
}

impl Bot {
    /// Spawns `roger-bot --server URL --token TOKEN --json ARGS...`.
    pub fn spawn(server: &Server, token: &str, args: &[&str]) -> Bot {
        Self::spawn_with(None, &server.url(), token, args)
    }

    /// Spawns a bot inside namespace `ns` (if any) against `url`.
    pub fn spawn_with(ns: Option<&str>, url: &str, token: &str, args: &[&str]) -> Bot {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("roger-bot"));
                c
            }
            None => Command::new(bin("roger-bot")),
        };
        cmd.arg("--server")
            .arg(url)
            .arg("--token")
            .arg(token)
            .arg("--json")
            .args(args);
        Self::spawn_command(cmd)
    }

    /// Spawns a bot that knows several servers (a cluster's nodes), first one first.
    pub fn spawn_multi(urls: &[String], token: &str, args: &[&str]) -> Bot {
        let mut cmd = Command::new(bin("roger-bot"));
        for u in urls {
            cmd.arg("--server").arg(u);
        }
        cmd.arg("--token").arg(token).arg("--json").args(args);
        Self::spawn_command(cmd)
    }

    /// Runs a prepared `roger-bot` command line (e.g. under `nice`), reading its JSON
    /// lines and stderr.
    pub fn spawn_command(mut cmd: Command) -> Bot {
        let mut child = cmd
            .env(
                "RUST_LOG",
                std::env::var("ROGER_E2E_BOT_LOG")
                    .unwrap_or_else(|_| "warn,rtc_dtls=error,rtc_ice=error".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn roger-bot");
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        let stderr: Arc<Mutex<String>> = Arc::default();
        let out = child.stdout.take().expect("stdout");
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => l.lock().expect("lines").push(v),
                    Err(_) => panic!("roger-bot printed a non-JSON line with --json: {line}"),
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        let e = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = e.lock().expect("stderr");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Bot {
            child,
            lines,
            stderr,
            started: Instant::now(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lines printed so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().expect("lines").clone()
    }

    /// What it printed on stderr.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// Waits for a line matching `pred` (panics after `within`).
    pub fn wait_for(&self, within: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_after(0, within, what, pred)
    }

    /// Like [`Bot::wait_for`], among the lines from line `after` on (those printed
    /// after an earlier count of [`Bot::lines`]).
    pub fn wait_for_after(
        &self,
        after: usize,
        within: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.find_after(after, within, pred).unwrap_or_else(|| {
            panic!(
                "roger-bot never printed {what} within {within:?} (running {:?}); lines: {:#?}\nstderr: {}",
                self.started.elapsed(),
                self.lines(),
                self.stderr()
            )
        })
    }

    /// The first line from line `after` on that `pred` accepts, waiting up to `within`
    /// for it (`None` if none came).
    pub fn find_after(
        &self,
        after: usize,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = self.lines().into_iter().skip(after).find(|v| pred(v)) {
                return Some(v);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the `event` line.
    pub fn wait_event(&self, within: Duration, event: &str) -> Value {
        self.wait_for(within, event, |v| v["event"] == event)
    }

    /// Waits for exit (panics after `within`); returns whether it succeeded.
    pub fn wait(mut self, within: Duration) -> (bool, Vec<Value>, String) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(50));
                return (status.success(), self.lines(), self.stderr());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "roger-bot did not exit within {within:?}; lines: {:#?}\nstderr: {}",
                    self.lines(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The part of `message` that looks like Rust's `Debug` output of a value (a type name
/// wrapping something, `ChannelId("echo")`, `Some(..)`, a path with `::`), if any.
pub fn rust_debug_in(message: &str) -> Option<String> {
    if let Some(i) = message.find("::") {
        return Some(message[i.saturating_sub(10)..].chars().take(30).collect());
    }
    // An identifier glued to an opening bracket: `ChannelId(`, `Some(`, `Member {`.
    let chars: Vec<char> = message.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c != '(' && c != '{' {
            continue;
        }
        let end = if c == '{' && i > 0 && chars[i - 1] == ' ' {
            i - 1
        } else {
            i
        };
        let start = chars[..end]
            .iter()
            .rposition(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
            .map_or(0, |p| p + 1);
        let ident: String = chars[start..end].iter().collect();
        let camel = ident.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && ident.chars().skip(1).any(|c| c.is_ascii_uppercase())
            && ident.chars().any(|c| c.is_ascii_lowercase());
        let type_like = ident.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && ident.chars().any(|c| c.is_ascii_lowercase());
        if camel || (c == '{' && type_like) || matches!(ident.as_str(), "Some" | "Ok" | "Err") {
            return Some(chars[start..(i + 1).min(chars.len())].iter().collect());
        }
    }
    None
}

/// A bare protocol client over one WebSocket.
pub struct RawClient {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
    /// Notifications seen while waiting for responses.
    pub notifications: Vec<Notification>,
}

impl RawClient {
    /// Connects to `server`.
    pub async fn connect(server: &Server) -> RawClient {
        let (ws, _) = tokio_tungstenite::connect_async(server.url())
            .await
            .expect("websocket connect");
        RawClient {
            ws,
            next_id: 1,
            notifications: Vec::new(),
        }
    }

    /// Sends a request; false if the socket is gone (a server that closed it).
    pub async fn try_send(&mut self, request: Request) -> bool {
        let id = self.next_id;
        self.next_id += 1;
        let msg = ClientMessage { id, request };
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(msg.to_json()))
            .await
            .is_ok()
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .expect("send");
    }

    /// Sends any WebSocket frame (binary, ping, ...); false if the socket is gone.
    pub async fn send_frame(&mut self, frame: tokio_tungstenite::tungstenite::Message) -> bool {
        self.ws.send(frame).await.is_ok()
    }

    /// Sends a request; returns its id.
    pub async fn send(&mut self, request: Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_text(ClientMessage { id, request }.to_json())
            .await;
        id
    }

    /// The next server message (panics after 5 s or on close).
    pub async fn recv(&mut self) -> ServerMessage {
        self.try_recv(Duration::from_secs(5))
            .await
            .expect("a server message within 5 s")
    }

    /// The next server message, or `None` on timeout or close.
    pub async fn try_recv(&mut self, within: Duration) -> Option<ServerMessage> {
        loop {
            let frame = tokio::time::timeout(within, self.ws.next())
                .await
                .ok()??
                .ok()?;
            if let tokio_tungstenite::tungstenite::Message::Text(t) = frame {
                let message = decode_server(&t).expect("server frames decode");
                // Every error a server sends is for people: no Rust in it.
                let error = match &message {
                    ServerMessage::Response(r) => match &r.outcome {
                        Outcome::Err(e) => Some(e),
                        Outcome::Ok(_) => None,
                    },
                    ServerMessage::Notification(Notification::Error(e)) => Some(e),
                    ServerMessage::Notification(_) => None,
                };
                if let Some(e) = error {
                    assert!(
                        rust_debug_in(&e.message).is_none(),
                        "an error message shows Rust's debug form: {e:?}"
                    );
                }
                return Some(message);
            }
            if let tokio_tungstenite::tungstenite::Message::Close(_) = frame {
                return None;
            }
        }
    }

    /// Reads until the server closes the socket (keeping the notifications on the way):
    /// the close frame's code, or `None` if it closed without one or not within `within`.
    pub async fn close_code(&mut self, within: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match frame {
                tokio_tungstenite::tungstenite::Message::Close(c) => {
                    return c.map(|c| u16::from(c.code));
                }
                tokio_tungstenite::tungstenite::Message::Text(t) => {
                    if let Ok(ServerMessage::Notification(n)) = decode_server(&t) {
                        self.notifications.push(n);
                    }
                }
                _ => {}
            }
        }
    }

    /// Sends a request and returns its outcome, keeping notifications that arrive first.
    pub async fn call(&mut self, request: Request) -> Result<Response, ErrorBody> {
        let id = self.send(request).await;
        self.response_to(id).await
    }

    /// Waits for the response to `id`.
    pub async fn response_to(&mut self, id: u64) -> Result<Response, ErrorBody> {
        loop {
            match self.recv().await {
                ServerMessage::Response(r) if r.id == id => {
                    return match r.outcome {
                        Outcome::Ok(v) => Ok(v),
                        Outcome::Err(e) => Err(e),
                    }
                }
                ServerMessage::Response(_) => {}
                ServerMessage::Notification(n) => self.notifications.push(n),
            }
        }
    }

    /// The next notification (after any already stored).
    pub async fn next_notification(&mut self) -> Notification {
        if !self.notifications.is_empty() {
            return self.notifications.remove(0);
        }
        loop {
            if let ServerMessage::Notification(n) = self.recv().await {
                return n;
            }
        }
    }

    /// `hello` with `token`.
    pub async fn hello(&mut self, token: &str) -> Result<Response, ErrorBody> {
        self.call(Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: token.to_owned(),
            client: "raw-test".into(),
        })
        .await
    }
}

/// A TCP forwarder in front of the server's signaling port, so a test can cut the
/// WebSocket alone while media (UDP) keeps flowing. Runs on its own runtime thread.
pub struct TcpProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<ProxiedConn>>>,
}

/// A connection through a [`TcpProxy`].
struct ProxiedConn {
    task: tokio::task::AbortHandle,
    /// Set: what the server sends on this connection is dropped, not forwarded.
    swallow: Arc<std::sync::atomic::AtomicBool>,
}

impl TcpProxy {
    /// Forwards `127.0.0.1:<free port>` to `target`, on a thread of its own (so it works
    /// from sync and async tests alike; it ends with the test process).
    pub fn start(target: SocketAddr) -> TcpProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let conns: Arc<Mutex<Vec<ProxiedConn>>> = Arc::default();
        let c = conns.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("proxy bind");
                tx.send(listener.local_addr().expect("proxy addr"))
                    .expect("proxy addr sent");
                while let Ok((inbound, _)) = listener.accept().await {
                    let swallow = Arc::new(AtomicBool::new(false));
                    let drop_replies = swallow.clone();
                    let task = tokio::spawn(async move {
                        let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                            return;
                        };
                        let (mut client_rx, mut client_tx) = inbound.into_split();
                        let (mut server_rx, mut server_tx) = outbound.into_split();
                        let up = tokio::io::copy(&mut client_rx, &mut server_tx);
                        let down = async {
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                let n = server_rx.read(&mut buf).await?;
                                if n == 0 {
                                    return Ok::<(), std::io::Error>(());
                                }
                                if !drop_replies.load(Ordering::SeqCst) {
                                    client_tx.write_all(&buf[..n]).await?;
                                }
                            }
                        };
                        tokio::select! {
                            _ = up => {}
                            _ = down => {}
                        }
                    });
                    c.lock().expect("conns").push(ProxiedConn {
                        task: task.abort_handle(),
                        swallow,
                    });
                }
            });
        });
        let addr = rx.recv().expect("proxy started");
        TcpProxy { addr, conns }
    }

    /// `ws://PROXY/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Drops every connection going through (new ones are still accepted); returns how
    /// many were still open.
    pub fn cut(&self) -> usize {
        let mut conns = self.conns.lock().expect("conns");
        conns.retain(|c| !c.task.is_finished());
        let n = conns.len();
        for c in conns.drain(..) {
            c.task.abort();
        }
        n
    }

    /// From now on, what the server sends on the connections going through is dropped
    /// (requests still reach it; their answers never come back). New connections are
    /// not affected.
    pub fn swallow_replies(&self) {
        for c in self.conns.lock().expect("conns").iter() {
            c.swallow.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// An in-process client (real roger-client, real sockets) that counts what it hears.
pub struct TestClient {
    /// The manager.
    pub mgr: roger_client::ConnectionManager,
    /// Frames played, per RTP timestamp arrival time.
    pub heard: Arc<Mutex<Vec<(Instant, u32)>>>,
    /// Every status with when it was published.
    pub statuses: Arc<Mutex<Vec<(Instant, roger_client::Status)>>>,
    /// Every event.
    pub events: Arc<Mutex<Vec<(Instant, roger_client::ClientEvent)>>>,
}

struct HeardSink(Arc<Mutex<Vec<(Instant, u32)>>>);

impl roger_client::AudioSink for HeardSink {
    fn play(&mut self, _: &ChannelId, ts: u32, _: &[i16]) {
        self.0.lock().expect("heard").push((Instant::now(), ts));
    }
}

impl TestClient {
    /// Connects to `server` as `user`, allowed `channels`, and waits for `Connected`.
    pub async fn connect_as(server: &Server, user: &str, channels: &[&str]) -> TestClient {
        Self::connect(client_config(&server.url(), &server.token(user, channels))).await
    }

    /// Connects with `config` and waits for `Connected`.
    pub async fn connect(config: roger_client::ClientConfig) -> TestClient {
        let heard: Arc<Mutex<Vec<(Instant, u32)>>> = Arc::default();
        let statuses: Arc<Mutex<Vec<(Instant, roger_client::Status)>>> = Arc::default();
        let events: Arc<Mutex<Vec<(Instant, roger_client::ClientEvent)>>> = Arc::default();
        let (mgr, mut rx) =
            roger_client::ConnectionManager::start(config, Box::new(HeardSink(heard.clone())));
        let (s, e) = (statuses.clone(), events.clone());
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if let roger_client::ClientEvent::Status { status } = &ev {
                    s.lock()
                        .expect("statuses")
                        .push((Instant::now(), status.clone()));
                }
                e.lock().expect("events").push((Instant::now(), ev));
            }
        });
        let c = TestClient {
            mgr,
            heard,
            statuses,
            events,
        };
        c.wait_status(Duration::from_secs(15), "Connected", |s| {
            matches!(s, roger_client::Status::Connected)
        })
        .await;
        c
    }

    /// Waits until the status satisfies `pred` (panics after `within`).
    pub async fn wait_status(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&roger_client::Status) -> bool,
    ) -> Instant {
        let mut rx = self.mgr.status();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if pred(&rx.borrow_and_update()) {
                return Instant::now();
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!(
                    "status never became {what} within {within:?}; history: {:#?}",
                    self.statuses.lock().expect("statuses")
                ),
            }
        }
    }

    /// Waits for an event after `after` that satisfies `pred` (panics after `within`,
    /// listing the events since `after`).
    pub async fn wait_event(
        &self,
        within: Duration,
        after: Instant,
        what: &str,
        pred: impl Fn(&roger_client::ClientEvent) -> bool,
    ) {
        let deadline = Instant::now() + within;
        loop {
            let timed_out = Instant::now() >= deadline;
            {
                let events = self.events.lock().expect("events");
                let since = || events.iter().filter(|(at, _)| *at > after).map(|(_, e)| e);
                if since().any(&pred) {
                    return;
                }
                if timed_out {
                    let seen: Vec<_> = since().collect();
                    panic!("no {what} within {within:?}; events since: {seen:#?}");
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Frames heard so far.
    pub fn frames(&self) -> usize {
        self.heard.lock().expect("heard").len()
    }

    /// Frames heard after `since`.
    pub fn frames_since(&self, since: Instant) -> usize {
        self.heard
            .lock()
            .expect("heard")
            .iter()
            .filter(|(at, _)| *at >= since)
            .count()
    }

    /// The longest gap between consecutive frames heard between `from` and `to`.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let heard = self.heard.lock().expect("heard");
        let times: Vec<Instant> = heard
            .iter()
            .map(|(at, _)| *at)
            .filter(|at| *at >= from && *at <= to)
            .collect();
        times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(Duration::MAX)
    }

    /// Talks `seconds` of noise in `channel` (returns when done).
    pub async fn talk(&self, channel: &str, seconds: f64) -> roger_client::FloorOutcome {
        let source = noise_source(seconds);
        self.mgr
            .talk(&ChannelId::from(channel), Box::new(source))
            .await
            .expect("talk")
    }
}

/// A source of `seconds` of noise-like audio (correlation-friendly, unlike a tone).
pub fn noise_source(seconds: f64) -> roger_client::PcmSource {
    let n = (seconds * 48_000.0) as usize;
    let mut x: u32 = 0x1234_5678;
    let pcm: Vec<i16> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as i16) / 6
        })
        .collect();
    roger_client::PcmSource::new(pcm, 1)
}

/// A client config for `url` with a token, bound to loopback.
pub fn client_config(url: &str, token: &str) -> roger_client::ClientConfig {
    let mut c = roger_client::ClientConfig::new(url, token);
    c.media_bind = Some(vec!["127.0.0.1:0".into()]);
    c.watch_network = false;
    c
}

/// The server's config in `dir`: the test secret plus `extra_toml`.
fn write_config(dir: &TempDir, extra_toml: &str) {
    let toml = format!("jwt_secret = \"{TEST_SECRET}\"\n{extra_toml}\n");
    std::fs::write(dir.join("roger.toml"), toml).expect("write config");
}

impl Server {
    /// Replaces the config's extra part with `extra_toml`, for the next (re)start.
    pub fn rewrite_config(&self, extra_toml: &str) {
        write_config(&self.dir, extra_toml);
    }

    /// Kills the process with SIGKILL (no drain) and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts a new process in the same dir, on the same port, with the same config.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.spawn();
    }
}

/// CPU seconds (user + system) a process has used, from /proc (Linux).
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&std::path::Path::new("/proc").join(pid.to_string()))
}

/// CPU seconds (user + system) of `pid`'s thread named `name`, from /proc (Linux).
pub fn thread_cpu_seconds(pid: u32, name: &str) -> Option<f64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .and_then(|t| stat_cpu_seconds(&t.path()))
}

/// utime + stime from `dir/stat` (a process's or a thread's), in seconds.
fn stat_cpu_seconds(dir: &std::path::Path) -> Option<f64> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
}

/// Resident memory of a process in MiB, from /proc (Linux).
pub fn proc_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
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

/// Unix milliseconds now (to line test actions up with bots' `t_ms`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reading a bot's `--json` timeline.
pub mod timeline {
    use serde_json::Value;

    /// `(t_ms, status)` of every status line.
    pub fn statuses(lines: &[Value]) -> Vec<(u64, String)> {
        lines
            .iter()
            .filter(|v| v["event"] == "status")
            .map(|v| {
                (
                    v["t_ms"].as_u64().unwrap_or(0),
                    v["status"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// The first status line after `t_ms` that satisfies `pred`.
    pub fn first_status_after(
        lines: &[Value],
        t_ms: u64,
        pred: impl Fn(&str) -> bool,
    ) -> Option<u64> {
        statuses(lines)
            .into_iter()
            .find(|(t, s)| *t >= t_ms && pred(s))
            .map(|(t, _)| t)
    }

    /// Cumulative `field` (`frames_received`, `frames_sent`) of the last `audio` line at
    /// or before `t_ms`.
    pub fn audio_at(lines: &[Value], field: &str, t_ms: u64) -> u64 {
        lines
            .iter()
            .filter(|v| v["event"] == "audio" && v["t_ms"].as_u64().unwrap_or(0) <= t_ms)
            .filter_map(|v| v[field].as_u64())
            .next_back()
            .unwrap_or(0)
    }

    /// `floor` lines with their state, by, and time.
    pub fn floors(lines: &[Value]) -> Vec<(u64, String, Option<String>)> {
        lines
            .iter()
            .filter(|v| v["event"] == "floor")
            .map(|v| {
                (
                    v["t_ms"].as_u64().unwrap_or(0),
                    v["state"].as_str().unwrap_or("").to_owned(),
                    v["by"].as_str().map(str::to_owned),
                )
            })
            .collect()
    }
}

/// When a `roger-bot duplex` talks: every `every` s from `offset` s, for `seconds` s.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Seconds between transmissions.
    pub every: f64,
    /// Seconds before the first.
    pub offset: f64,
    /// Seconds in all.
    pub seconds: f64,
}

impl Bot {
    /// A `duplex` bot (listens all along, talks the speech fixture per `plan`) in
    /// namespace `ns`, as `user`, with `extra` options.
    pub fn duplex(
        server: &Server,
        ns: &str,
        url: &str,
        user: &str,
        plan: Plan,
        extra: &[&str],
    ) -> Bot {
        let speech = speech_wav();
        let (every, offset, seconds) = (
            plan.every.to_string(),
            plan.offset.to_string(),
            plan.seconds.to_string(),
        );
        let mut args = vec![
            "duplex",
            "--channel",
            "general",
            "--wav",
            speech.to_str().expect("utf-8 path"),
            "--talk-every",
            &every,
            "--offset",
            &offset,
            "--seconds",
            &seconds,
        ];
        args.extend_from_slice(extra);
        Bot::spawn_with(Some(ns), url, &server.token(user, &["general"]), &args)
    }
}

#[cfg(test)]
mod tests {
    use super::rust_debug_in;

    #[test]
    fn rust_debug_output_is_told_from_a_sentence() {
        assert!(rust_debug_in(r#"join ChannelId("echo") first"#).is_some());
        assert!(rust_debug_in("expected welcome, got Some(Pong)").is_some());
        assert!(rust_debug_in("roger_protocol::ChannelId").is_some());
        assert!(rust_debug_in(r#"join "echo" first"#).is_none());
        assert!(rust_debug_in("None of your channels (general) is open. JSON: bad").is_none());
        assert!(rust_debug_in("bad join request: missing field `channel`").is_none());
        assert!(rust_debug_in("got Member { user: x }").is_some());
        assert!(rust_debug_in("ICE (the path) and TURN(relay) failed").is_none());
    }
}
