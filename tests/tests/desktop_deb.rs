//! The `.deb` (built by `make deb-debug`, which `make test` runs first) installs with
//! apt, and the installed `/usr/bin/roger` opens its window and renders (screenshot in
//! target/screenshots/deb-installed.png).

use roger_e2e::desktop::{screenshot_dir, AppHome, Display};
use roger_e2e::{have, skip_or_panic};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn the_deb() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/bundle/deb");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The screenshot's standard deviation over all pixels (0 for a blank screen).
fn spread(png: &Path) -> f64 {
    let out = Command::new("identify")
        .args(["-format", "%[fx:standard_deviation]"])
        .arg(png)
        .output()
        .expect("identify");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0)
}

#[test]
fn the_deb_installs_and_the_app_renders() {
    let Some(deb) = the_deb() else {
        skip_or_panic("no .deb in target/debug/bundle/deb (make deb-debug builds it)");
        return;
    };
    if !is_root() {
        skip_or_panic("installing a .deb needs root");
        return;
    }
    for p in ["Xvfb", "xdotool", "import", "identify", "apt-get"] {
        if !have(p) {
            skip_or_panic(&format!("{p} is not installed"));
            return;
        }
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--reinstall"])
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .expect("apt-get");
    assert!(status.success(), "apt-get install {} failed", deb.display());
    assert!(
        Path::new("/usr/bin/roger").exists(),
        "the package has no /usr/bin/roger"
    );
    let desktop_file = Command::new("dpkg")
        .args(["-L", "roger"])
        .output()
        .expect("dpkg -L");
    let files = String::from_utf8_lossy(&desktop_file.stdout).into_owned();
    assert!(
        files.contains(".desktop") && files.contains("icons/hicolor"),
        "the package lacks a menu entry or icons:\n{files}"
    );

    let display = Display::start();
    let home = AppHome::new("deb-app", None);
    let mut cmd = Command::new("/usr/bin/roger");
    let mut app = home
        .apply(&mut cmd, &display)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(home.join("app.log")).expect("log"))
        .spawn()
        .expect("launch /usr/bin/roger");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut found = false;
    while Instant::now() < deadline && !found {
        found = Command::new("xdotool")
            .args(["search", "--name", "^Roger$"])
            .env("DISPLAY", &display.name)
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
        if !found {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(
        found,
        "no Roger window; log:\n{}",
        std::fs::read_to_string(home.join("app.log")).unwrap_or_default()
    );
    // Give WebKit time to paint, then the screen must not be blank.
    let shot = screenshot_dir().join("deb-installed.png");
    let mut rendered = 0.0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1000));
        // The window alone: a blank page inside it must not pass.
        assert!(
            display.screenshot_window(&shot),
            "the Roger window vanished"
        );
        rendered = spread(&shot);
        if rendered > 0.02 {
            break;
        }
    }
    let _ = app.kill();
    let _ = app.wait();
    assert!(
        rendered > 0.02,
        "the window looks blank (pixel spread {rendered}); screenshot {}",
        shot.display()
    );
}
