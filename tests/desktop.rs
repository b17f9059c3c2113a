//! The real desktop app under a virtual display (TESTING.md): Xvfb, tauri-driver with
//! WebKitWebDriver, and a WebDriver session (fantoccini) on the app's window.
//!
//! [`Desktop::start`] returns `None` with a printed reason when a piece is missing
//! locally; under `CI=true` it panics instead (CI installs everything).

use crate::{bin, free_port, have, skip_or_panic, TempDir};
use fantoccini::{Client, Locator};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A home for one run of the app: XDG config/data/cache dirs, with its settings saved
/// (when given) where the app reads them.
pub struct AppHome(pub TempDir);

impl AppHome {
    /// A fresh home; `settings` (JSON of `roger_client::app::Settings`) saved if given.
    pub fn new(tag: &str, settings: Option<&serde_json::Value>) -> AppHome {
        let home = TempDir::new(tag);
        if let Some(settings) = settings {
            let config = home.join("config/dev.roger.desktop");
            std::fs::create_dir_all(&config).expect("config dir");
            std::fs::write(
                config.join("settings.json"),
                serde_json::to_string_pretty(settings).expect("settings"),
            )
            .expect("settings.json");
        }
        AppHome(home)
    }

    /// A path inside.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Points `cmd` (the app, or the driver that starts it) at this home and `display`.
    pub fn apply<'c>(&self, cmd: &'c mut Command, display: &Display) -> &'c mut Command {
        display
            .apply(cmd)
            .env("XDG_CONFIG_HOME", self.join("config"))
            .env("XDG_DATA_HOME", self.join("data"))
            .env("XDG_CACHE_HOME", self.join("cache"))
            .env("RUST_LOG", "info,webrtc=warn,pulseaudio=off")
            // No session bus: a Roger already running on this desktop would otherwise
            // take the launch over (single instance).
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
    }
}

/// The `tauri-driver` binary: on PATH or in cargo's bin dir.
pub fn tauri_driver() -> Option<PathBuf> {
    if have("tauri-driver") {
        return Some(PathBuf::from("tauri-driver"));
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let p = home.join("bin/tauri-driver");
    p.exists().then_some(p)
}

/// A virtual display: X (Xvfb), or Wayland (a headless sway, no XWayland).
pub struct Display {
    child: Child,
    /// `:N` on X; on Wayland the compositor's socket (an absolute path, which
    /// `WAYLAND_DISPLAY` accepts, so the app's `XDG_RUNTIME_DIR` can be the sound
    /// server's).
    pub name: String,
    /// Wayland: the compositor's runtime dir.
    wayland: Option<TempDir>,
}

impl Display {
    /// Starts Xvfb on a free display number.
    pub fn start() -> Display {
        for _ in 0..20 {
            let n = 100 + (std::process::id() as u16 % 300) + (free_port() % 200);
            if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
                continue;
            }
            let name = format!(":{n}");
            let mut child = Command::new("Xvfb")
                .args([
                    name.as_str(),
                    "-screen",
                    "0",
                    "1280x800x24",
                    "-nolisten",
                    "tcp",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn Xvfb");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
                    return Display {
                        child,
                        name,
                        wayland: None,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Not up (another display took the number?): try the next one.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("Xvfb did not start");
    }

    /// Starts a headless Wayland compositor (sway, TESTING.md). sway will not run as
    /// root, so it runs as the user `wtest` (created if missing). `None` (skipped) when
    /// sway or grim is missing outside CI.
    pub fn sway() -> Option<Display> {
        for p in ["sway", "grim", "runuser"] {
            if !have(p) {
                skip_or_panic(&format!(
                    "{p} is not installed (scripts/install-deps.sh installs it)"
                ));
                return None;
            }
        }
        let user = "wtest";
        let known = Command::new("id")
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !known {
            let made = Command::new("useradd")
                .args(["-m", user])
                .status()
                .is_ok_and(|s| s.success());
            if !made {
                skip_or_panic("no unprivileged user for sway (useradd failed: not root?)");
                return None;
            }
        }
        let dir = TempDir::new("wayland");
        let runtime = dir.join("run");
        std::fs::create_dir_all(&runtime).expect("runtime dir");
        let chown = Command::new("chown")
            .args([user, runtime.to_str().expect("path")])
            .status()
            .is_ok_and(|s| s.success());
        assert!(chown, "chown the Wayland runtime dir");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700));
        }
        let config = dir.join("sway.cfg");
        std::fs::write(&config, "output HEADLESS-1 resolution 1280x800\n").expect("config");
        // Readable by the compositor's user.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755));
            let _ = std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644));
        }
        let mut child = Command::new("runuser")
            .args(["-u", user, "--", "env"])
            .arg(format!("XDG_RUNTIME_DIR={}", runtime.display()))
            .args([
                "WLR_BACKENDS=headless",
                "WLR_LIBINPUT_NO_DEVICES=1",
                "WLR_RENDERER=pixman",
                "sway",
                "-c",
            ])
            .arg(&config)
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sway.log")).expect("log"))
            .spawn()
            .expect("spawn sway");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let socket = std::fs::read_dir(&runtime).ok().and_then(|entries| {
                entries.flatten().map(|e| e.path()).find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("wayland-") && !n.ends_with(".lock"))
                })
            });
            if let Some(socket) = socket {
                return Some(Display {
                    child,
                    name: socket.display().to_string(),
                    wayland: Some(dir),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(dir.join("sway.log")).unwrap_or_default();
        panic!("sway did not start:\n{log}");
    }

    /// Whether this is a Wayland display.
    pub fn is_wayland(&self) -> bool {
        self.wayland.is_some()
    }

    /// Points `cmd` at this display (and nothing else: no fallback to another one).
    pub fn apply<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        if self.is_wayland() {
            cmd.env("WAYLAND_DISPLAY", &self.name)
                .env("GDK_BACKEND", "wayland")
                .env("XDG_SESSION_TYPE", "wayland")
                .env_remove("DISPLAY")
        } else {
            cmd.env("DISPLAY", &self.name)
                .env_remove("WAYLAND_DISPLAY")
                .env_remove("XDG_SESSION_TYPE")
        }
    }

    /// `xdotool ARGS` on this display.
    pub fn xdotool(&self, args: &[&str]) {
        assert!(!self.is_wayland(), "xdotool needs an X display");
        let ok = Command::new("xdotool")
            .args(args)
            .env("DISPLAY", &self.name)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "xdotool {args:?} failed");
    }

    /// A screenshot of the whole screen (ImageMagick `import`).
    pub fn screenshot(&self, out: &Path) {
        if self.is_wayland() {
            let ok = Command::new("grim")
                .arg(out)
                .env("WAYLAND_DISPLAY", &self.name)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "grim failed");
            return;
        }
        let _ = Command::new("import")
            .args(["-window", "root"])
            .arg(out)
            .env("DISPLAY", &self.name)
            .status();
    }
    /// A screenshot of the app's window (the largest window named "Roger"), taken from
    /// the X server (`import`, cropped): reading the window itself fails under Xvfb, and
    /// WebKitWebDriver's screenshot waits for the page's next repaint, which an idle
    /// page may not do for minutes. Returns whether a window was found (else the whole
    /// screen is saved).
    pub fn screenshot_window(&self, path: &Path) -> bool {
        if self.is_wayland() {
            // The app's window is the only one: sway tiles it over the whole output.
            self.screenshot(path);
            return true;
        }
        // The window's area of the screen (reading the window itself fails under Xvfb);
        // of the windows named Roger, the largest (the others are 16x16 helpers).
        let ids = Command::new("xdotool")
            .args(["search", "--name", "^Roger$"])
            .env("DISPLAY", &self.name)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let geometry = ids
            .lines()
            .filter_map(|id| {
                let out = Command::new("xdotool")
                    .args(["getwindowgeometry", "--shell", id])
                    .env("DISPLAY", &self.name)
                    .output()
                    .ok()?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let get = |k: &str| -> Option<u32> {
                    text.lines()
                        .find_map(|l| l.strip_prefix(&format!("{k}=")))?
                        .parse()
                        .ok()
                };
                Some((get("WIDTH")?, get("HEIGHT")?, get("X")?, get("Y")?))
            })
            .max_by_key(|(w, h, _, _)| w * h)
            .map(|(w, h, x, y)| format!("{w}x{h}+{x}+{y}"));
        let found = geometry.is_some();
        let mut cmd = Command::new("import");
        cmd.args(["-window", "root"]);
        if let Some(g) = geometry {
            cmd.args(["-crop", &g, "+repage"]);
        }
        let _ = cmd.arg(path).env("DISPLAY", &self.name).status();
        found
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where tests put screenshots: `target/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&d).expect("screenshot dir");
    d
}

/// The app under WebDriver: the display, tauri-driver, the session.
pub struct Desktop {
    /// The virtual display.
    pub display: Display,
    driver: Child,
    /// The WebDriver session on the app's window.
    pub client: Client,
    /// The app's XDG config/data homes.
    pub home: AppHome,
}

impl Desktop {
    /// The app binary (`target/<profile>/roger`).
    pub fn app_binary() -> PathBuf {
        bin("roger")
    }

    /// Starts the app with `settings` (JSON of `roger_client::app::Settings`) already
    /// saved, and `env` (e.g. the private PulseAudio). `None` (skipped) when a piece is
    /// missing outside CI.
    pub async fn start(settings: serde_json::Value, env: &[(String, String)]) -> Option<Desktop> {
        if !have("Xvfb") {
            skip_or_panic("Xvfb is not installed (scripts/install-deps.sh installs it)");
            return None;
        }
        Self::start_on(Display::start(), settings, env).await
    }

    /// [`Desktop::start`] on `display` (X or Wayland).
    pub async fn start_on(
        display: Display,
        settings: serde_json::Value,
        env: &[(String, String)],
    ) -> Option<Desktop> {
        for p in ["xdotool", "WebKitWebDriver", "import"] {
            if !have(p) {
                skip_or_panic(&format!(
                    "{p} is not installed (scripts/install-deps.sh installs it)"
                ));
                return None;
            }
        }
        let Some(driver_bin) = tauri_driver() else {
            skip_or_panic("tauri-driver is not installed (scripts/install-deps.sh installs it)");
            return None;
        };
        let home = AppHome::new("desktop", Some(&settings));
        let port = free_port();
        let native = free_port();
        let mut driver = Command::new(driver_bin);
        driver.args([
            "--port",
            &port.to_string(),
            "--native-port",
            &native.to_string(),
        ]);
        // No credential store unless the test brings its own (SecretService): the app
        // must never write a test token into the developer's keyring.
        if !env.iter().any(|(k, _)| k == "DBUS_SESSION_BUS_ADDRESS") {
            driver.env("ROGER_NO_KEYRING", "1");
        }
        let driver = home
            .apply(&mut driver, &display)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::fs::File::create(home.join("driver.log")).expect("log"))
            .stderr(std::fs::File::create(home.join("app.log")).expect("log"))
            .spawn()
            .expect("spawn tauri-driver");
        let url = format!("http://127.0.0.1:{port}");
        // fantoccini's rustls finds two crypto providers in this build: pick ring, as the
        // rest of Roger does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "tauri:options".into(),
            json!({ "application": Self::app_binary() }),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match fantoccini::ClientBuilder::rustls()
                .expect("rustls")
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session: {e}"),
            }
        };
        Some(Desktop {
            display,
            driver,
            client,
            home,
        })
    }

    /// The app's log so far (stderr of the app, through the driver).
    pub fn app_log(&self) -> String {
        std::fs::read_to_string(self.home.join("app.log")).unwrap_or_default()
    }

    /// The `data-testid` element's attribute.
    pub async fn attr(&self, testid: &str, name: &str) -> Option<String> {
        let el = self
            .client
            .find(Locator::Css(&format!("[data-testid='{testid}']")))
            .await
            .ok()?;
        el.attr(name).await.ok().flatten()
    }

    /// The `data-testid` element's text ("" when absent).
    pub async fn text(&self, testid: &str) -> String {
        match self
            .client
            .find(Locator::Css(&format!("[data-testid='{testid}']")))
            .await
        {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Scrolls the `data-testid` element into the middle of the window (for a screenshot
    /// of a part below the fold).
    pub async fn scroll_to(&self, testid: &str) {
        let script = format!(
            "document.querySelector(\"[data-testid='{testid}']\")?.scrollIntoView({{block: 'center'}})"
        );
        if let Err(e) = self.client.execute(&script, vec![]).await {
            println!("could not scroll to {testid}: {e}");
        }
    }

    /// Clicks the `data-testid` element.
    pub async fn click(&self, testid: &str) {
        let el = self
            .client
            .find(Locator::Css(&format!("[data-testid='{testid}']")))
            .await
            .unwrap_or_else(|e| panic!("no {testid}: {e}"));
        el.click()
            .await
            .unwrap_or_else(|e| panic!("click {testid}: {e}"));
    }

    /// Waits until `check` holds (polling every 100 ms), or panics with `what`, the app's
    /// log tail and a screenshot.
    pub async fn wait_until<F, Fut>(&self, within: Duration, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        loop {
            let t = Instant::now();
            let ok = check().await;
            if t.elapsed() > Duration::from_secs(1) {
                eprintln!("slow check for {what}: {:?}", t.elapsed());
            }
            if ok {
                return;
            }
            if Instant::now() > deadline {
                let shot = screenshot_dir().join("failure.png");
                self.display.screenshot(&shot);
                let log = self.app_log();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!(
                    "timed out waiting for {what} (dot {:?}, text {:?}); screenshot {}; app log tail:\n{tail}",
                    self.attr("status-dot", "data-color").await,
                    self.text("status-text").await,
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a screenshot of the app's window as `name`.png (see
    /// [`Display::screenshot_window`]).
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let path = screenshot_dir().join(format!("{name}.png"));
        self.display.screenshot_window(&path);
        path
    }

    /// Ends the session; dropping stops the driver.
    pub async fn stop(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: a killed driver leaves WebKitWebDriver (and the app)
        // holding its port and our pipes.
        let _ = Command::new("kill")
            .args(["-TERM", &self.driver.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.driver.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Keep the app's log beside the screenshots (the home dir goes away).
        let _ = std::fs::copy(self.home.join("app.log"), screenshot_dir().join("app.log"));
    }
}

/// A private D-Bus session bus (`dbus-daemon`) without service activation: nothing
/// starts by itself on it, so a test decides which services (a Secret Service, a
/// stand-in portal) exist.
pub struct SessionBus {
    child: Child,
    /// Its address, for `DBUS_SESSION_BUS_ADDRESS`.
    pub address: String,
    _home: TempDir,
}

impl SessionBus {
    /// Starts the bus (`dbus-daemon` must be installed).
    pub fn start() -> SessionBus {
        let home = TempDir::new("bus");
        // Without service activation: the standard session bus would, for example,
        // start a second gnome-keyring (locked) when a client asks for the Secret
        // Service before the test's own has taken the name.
        let config = home.join("bus.conf");
        std::fs::write(
            &config,
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
        )
        .expect("bus config");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("bus address");
        SessionBus {
            child,
            address: line.trim().to_owned(),
            _home: home,
        }
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Secret Service (the OS credential store on Linux) of the test's own: a private
/// D-Bus session bus with `gnome-keyring-daemon` on it (TESTING.md). `None` (skipped)
/// when a piece is missing outside CI.
pub struct SecretService {
    /// Kept for its lifetime: the bus stops when this drops.
    _bus: SessionBus,
    keyring: Child,
    address: String,
    home: TempDir,
}

impl SecretService {
    /// Starts the bus and the keyring daemon (its login keyring unlocked).
    pub fn start() -> Option<SecretService> {
        for p in ["dbus-daemon", "gnome-keyring-daemon", "secret-tool"] {
            if !have(p) {
                skip_or_panic(&format!(
                    "{p} is not installed (scripts/install-deps.sh installs it)"
                ));
                return None;
            }
        }
        let home = TempDir::new("secrets");
        let runtime = home.join("run");
        std::fs::create_dir_all(&runtime).expect("runtime dir");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700));
        }
        let bus = SessionBus::start();
        let address = bus.address.clone();
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("HOME", &home.0)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_RUNTIME_DIR", &runtime)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(home.join("keyring.log")).expect("log"))
            .spawn()
            .expect("gnome-keyring-daemon");
        {
            use std::io::Write;
            let mut stdin = keyring.stdin.take().expect("stdin");
            stdin.write_all(b"test-keyring-password").expect("unlock");
        }
        let s = SecretService {
            _bus: bus,
            keyring,
            address,
            home,
        };
        // Ready when a secret can be stored and read back.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stored = s
                .secret_tool(&["store", "--label=probe", "probe", "1"], Some("x"))
                .0;
            if stored && s.lookup(&["probe", "1"]).as_deref() == Some("x") {
                return Some(s);
            }
            assert!(
                Instant::now() < deadline,
                "the Secret Service did not come up; gnome-keyring-daemon said:\n{}",
                std::fs::read_to_string(s.home.join("keyring.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The environment that puts a process on this bus.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("DBUS_SESSION_BUS_ADDRESS".into(), self.address.clone())]
    }

    fn secret_tool(&self, args: &[&str], input: Option<&str>) -> (bool, String) {
        let mut child = Command::new("secret-tool")
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("HOME", &self.home.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("secret-tool");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            if let Some(i) = input {
                let _ = stdin.write_all(i.as_bytes());
            }
        }
        let out = child.wait_with_output().expect("secret-tool");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// The secret stored under these attribute pairs (`["service", "roger", ...]`).
    pub fn lookup(&self, attributes: &[&str]) -> Option<String> {
        let mut args = vec!["lookup"];
        args.extend_from_slice(attributes);
        let (ok, out) = self.secret_tool(&args, None);
        (ok && !out.is_empty()).then_some(out)
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        let _ = self.keyring.kill();
        let _ = self.keyring.wait();
    }
}
