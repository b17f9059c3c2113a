//! The push-to-talk key on X11 without polling: a passive grab of the key on the root
//! window, and a thread blocked on the X connection, so a press or release reaches the
//! PTT path as soon as the X server sends it.
//!
//! Hand-written (on `x11rb`) because the global-shortcut plugin's X11 backend (the
//! `global-hotkey` crate) checks for events every 50 ms: up to 50 ms between the key
//! and the floor request, the largest avoidable delay before the talk-permit tone.
//! Detectable auto-repeat (XKB) keeps a held key from repeating press/release pairs.

use std::sync::{Arc, Mutex};
use x11rb::connection::Connection;
use x11rb::protocol::xkb::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{ConnectionExt as _, GrabMode, Keycode, ModMask, Window};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;

/// The key in force: its keycode and modifiers.
type Grab = (Keycode, ModMask);

/// A push-to-talk key grabbed on an X11 display.
pub struct X11Key {
    conn: Arc<RustConnection>,
    root: Window,
    grab: Arc<Mutex<Option<Grab>>>,
}

/// Lock modifiers a grab must ignore: Caps Lock and Num Lock (Mod2 on every common
/// layout) must not stop the key from working.
fn locks() -> [ModMask; 4] {
    [
        ModMask::from(0u16),
        ModMask::LOCK,
        ModMask::M2,
        ModMask::LOCK | ModMask::M2,
    ]
}

impl X11Key {
    /// Connects to the X display (`$DISPLAY`) and starts the thread that reports the
    /// grabbed key's presses (`true`) and releases (`false`) to `on_key`.
    pub fn start(on_key: impl Fn(bool) + Send + 'static) -> Result<X11Key, String> {
        Self::start_on(None, on_key)
    }

    /// [`X11Key::start`] on the display named `display` (`":99"`), or `$DISPLAY`.
    pub fn start_on(
        display: Option<&str>,
        on_key: impl Fn(bool) + Send + 'static,
    ) -> Result<X11Key, String> {
        let (conn, screen) =
            RustConnection::connect(display).map_err(|e| format!("no X11 display: {e}"))?;
        let conn = Arc::new(conn);
        let root = conn.setup().roots[screen].root;
        // A held key: one press and one release, not a stream of both.
        conn.xkb_use_extension(1, 0)
            .map_err(|e| e.to_string())?
            .reply()
            .map_err(|e| format!("no XKB: {e}"))?;
        conn.xkb_per_client_flags(
            xkb::ID::USE_CORE_KBD.into(),
            xkb::PerClientFlag::DETECTABLE_AUTO_REPEAT,
            xkb::PerClientFlag::DETECTABLE_AUTO_REPEAT,
            Default::default(),
            Default::default(),
            Default::default(),
        )
        .map_err(|e| e.to_string())?
        .reply()
        .map_err(|e| format!("XKB per-client flags: {e}"))?;
        let grab: Arc<Mutex<Option<Grab>>> = Arc::default();
        let (reader, current) = (conn.clone(), grab.clone());
        std::thread::Builder::new()
            .name("roger-x11-key".into())
            .spawn(move || {
                let mut down = false;
                let relevant = |m: u16| m & !(ModMask::LOCK.bits() | ModMask::M2.bits());
                loop {
                    let event = match reader.wait_for_event() {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::warn!("X11 connection lost: the push-to-talk key stops: {e}");
                            return;
                        }
                    };
                    let Some((code, mods)) = *current.lock().unwrap_or_else(|p| p.into_inner())
                    else {
                        continue;
                    };
                    match event {
                        Event::KeyPress(e)
                            if e.detail == code
                                && relevant(e.state.bits()) == mods.bits()
                                && !down =>
                        {
                            down = true;
                            on_key(true);
                        }
                        // A release counts whatever modifiers are held by then.
                        Event::KeyRelease(e) if e.detail == code && down => {
                            down = false;
                            on_key(false);
                        }
                        _ => {}
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(X11Key { conn, root, grab })
    }

    /// Makes `accelerator` (`F8`, `Ctrl+Shift+Space`) the key, replacing the previous
    /// one. A key the display has no keycode for, or that another client has grabbed,
    /// is refused and the previous key stays.
    pub fn set_key(&self, accelerator: &str) -> Result<(), String> {
        let (keysym, mods) = parse(accelerator)?;
        let code = self
            .keycode(keysym)?
            .ok_or_else(|| format!("this keyboard has no {accelerator:?} key"))?;
        for extra in locks() {
            let m = ModMask::from(mods.bits() | extra.bits());
            let grabbed = self
                .conn
                .grab_key(true, self.root, m, code, GrabMode::ASYNC, GrabMode::ASYNC)
                .map_err(|e| e.to_string())?
                .check();
            if let Err(e) = grabbed {
                for undo in locks() {
                    let _ = self.conn.ungrab_key(code, self.root, mods | undo);
                }
                let _ = self.conn.flush();
                return Err(format!(
                    "{accelerator:?} is taken by another application ({e})"
                ));
            }
        }
        let old = self
            .grab
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace((code, mods));
        if let Some((old_code, old_mods)) = old.filter(|o| *o != (code, mods)) {
            for extra in locks() {
                let _ = self.conn.ungrab_key(old_code, self.root, old_mods | extra);
            }
        }
        self.conn.flush().map_err(|e| e.to_string())
    }

    /// The keycode `accelerator`'s key has on this display (tests press it with XTEST).
    pub fn keycode_of(&self, accelerator: &str) -> Result<Option<Keycode>, String> {
        self.keycode(parse(accelerator)?.0)
    }

    fn keycode(&self, keysym: u32) -> Result<Option<Keycode>, String> {
        let setup = self.conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let map = self
            .conn
            .get_keyboard_mapping(min, max - min + 1)
            .map_err(|e| e.to_string())?
            .reply()
            .map_err(|e| e.to_string())?;
        let per = usize::from(map.keysyms_per_keycode.max(1));
        Ok(map
            .keysyms
            .chunks(per)
            .position(|syms| syms.contains(&keysym))
            .map(|i| min + i as u8))
    }
}

impl Drop for X11Key {
    /// Lets the key go (the reader thread then only sees other events, until the
    /// process ends).
    fn drop(&mut self) {
        let grab = self.grab.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((code, mods)) = grab {
            for extra in locks() {
                let _ = self.conn.ungrab_key(code, self.root, mods | extra);
            }
            let _ = self.conn.flush();
        }
    }
}

/// `Ctrl+Shift+Space` -> (keysym, modifiers): [`super::keys::parse`] as the X server
/// wants it.
pub fn parse(accelerator: &str) -> Result<(u32, ModMask), String> {
    let a = super::keys::parse(accelerator)?;
    let mut mods = ModMask::from(0u16);
    for (on, m) in [
        (a.ctrl, ModMask::CONTROL),
        (a.shift, ModMask::SHIFT),
        (a.alt, ModMask::M1),
        (a.logo, ModMask::M4),
    ] {
        if on {
            mods |= m;
        }
    }
    Ok((a.keysym, mods))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accelerators_parse_to_keysyms_and_modifiers() {
        assert_eq!(parse("F8").unwrap(), (0xffc5, ModMask::from(0u16)));
        assert_eq!(
            parse("Ctrl+Shift+Space").unwrap(),
            (0x20, ModMask::CONTROL | ModMask::SHIFT)
        );
        assert_eq!(parse("Alt+KeyQ").unwrap(), (u32::from(b'q'), ModMask::M1));
        assert_eq!(
            parse("Super+Digit1").unwrap(),
            (u32::from(b'1'), ModMask::M4)
        );
        assert_eq!(parse("F24").unwrap().0, 0xffd5);
        assert!(parse("F25").is_err());
        assert!(parse("Hyper+F8").is_err());
        assert!(parse("").is_err());
        assert!(parse("Ctrl+Nonsense").is_err());
    }
}
