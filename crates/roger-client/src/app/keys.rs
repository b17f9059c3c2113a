//! Push-to-talk key names: the accelerators Settings and the global-shortcut plugin write
//! (`F8`, `Ctrl+Shift+Space`, `KeyA`, `Digit1`), parsed once for every key source: the
//! X11 grab wants a keysym and modifier mask, the GlobalShortcuts portal wants a trigger
//! in the XDG shortcuts format (`CTRL+SHIFT+space`).

/// A parsed accelerator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accelerator {
    /// The X keysym of the key.
    pub keysym: u32,
    /// Its xkb keysym name (`F8`, `space`, `a`, `Return`).
    pub name: String,
    /// Modifiers held with it.
    pub ctrl: bool,
    pub shift: bool,
    pub alt: bool,
    pub logo: bool,
}

impl Accelerator {
    /// The trigger in the XDG shortcuts specification's format, as the GlobalShortcuts
    /// portal's `preferred_trigger` takes it: modifiers `CTRL`, `ALT`, `SHIFT`, `LOGO`
    /// and the xkb keysym name, joined by `+` (`CTRL+SHIFT+space`, `F8`).
    pub fn xdg_trigger(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        for (on, name) in [
            (self.ctrl, "CTRL"),
            (self.alt, "ALT"),
            (self.shift, "SHIFT"),
            (self.logo, "LOGO"),
        ] {
            if on {
                parts.push(name);
            }
        }
        parts.push(&self.name);
        parts.join("+")
    }
}

/// `Ctrl+Shift+Space` -> the key and its modifiers, or why not.
pub fn parse(accelerator: &str) -> Result<Accelerator, String> {
    let bad = || format!("no such key or modifier in {accelerator:?}");
    let parts: Vec<&str> = accelerator.split('+').map(str::trim).collect();
    let (key, modifiers) = parts.split_last().ok_or_else(bad)?;
    let (keysym, name) = keysym(key).ok_or_else(bad)?;
    let mut a = Accelerator {
        keysym,
        name,
        ctrl: false,
        shift: false,
        alt: false,
        logo: false,
    };
    for m in modifiers {
        match m.to_ascii_lowercase().as_str() {
            "ctrl" | "control" | "cmdorctrl" | "commandorcontrol" => a.ctrl = true,
            "shift" => a.shift = true,
            "alt" | "option" => a.alt = true,
            "super" | "meta" | "cmd" | "command" => a.logo = true,
            _ => return Err(bad()),
        }
    }
    Ok(a)
}

/// A key's keysym and xkb name.
fn keysym(key: &str) -> Option<(u32, String)> {
    let k = key.to_ascii_lowercase();
    let k = k
        .strip_prefix("key")
        .filter(|r| r.len() == 1)
        .or_else(|| k.strip_prefix("digit").filter(|r| r.len() == 1))
        .unwrap_or(&k);
    if let Some(n) = k.strip_prefix('f').and_then(|n| n.parse::<u32>().ok()) {
        return (1..=24)
            .contains(&n)
            .then(|| (0xffbe + n - 1, format!("F{n}")));
    }
    if let Some(n) = k.strip_prefix("numpad").and_then(|n| n.parse::<u32>().ok()) {
        return (n <= 9).then(|| (0xffb0 + n, format!("KP_{n}")));
    }
    if k.len() == 1 {
        let c = k.as_bytes()[0];
        if c.is_ascii_alphanumeric() {
            return Some((u32::from(c), k.to_owned()));
        }
    }
    let (sym, name) = match k {
        "space" => (0x20, "space"),
        "enter" | "return" => (0xff0d, "Return"),
        "tab" => (0xff09, "Tab"),
        "escape" | "esc" => (0xff1b, "Escape"),
        "backspace" => (0xff08, "BackSpace"),
        "delete" => (0xffff, "Delete"),
        "insert" => (0xff63, "Insert"),
        "home" => (0xff50, "Home"),
        "end" => (0xff57, "End"),
        "pageup" => (0xff55, "Prior"),
        "pagedown" => (0xff56, "Next"),
        "left" | "arrowleft" => (0xff51, "Left"),
        "up" | "arrowup" => (0xff52, "Up"),
        "right" | "arrowright" => (0xff53, "Right"),
        "down" | "arrowdown" => (0xff54, "Down"),
        "pause" => (0xff13, "Pause"),
        "scrolllock" => (0xff14, "Scroll_Lock"),
        "backquote" | "`" => (0x60, "grave"),
        "minus" | "-" => (0x2d, "minus"),
        "equal" | "=" => (0x3d, "equal"),
        "bracketleft" | "[" => (0x5b, "bracketleft"),
        "bracketright" | "]" => (0x5d, "bracketright"),
        "backslash" | "\\" => (0x5c, "backslash"),
        "semicolon" | ";" => (0x3b, "semicolon"),
        "quote" | "'" => (0x27, "apostrophe"),
        "comma" | "," => (0x2c, "comma"),
        "period" | "." => (0x2e, "period"),
        "slash" | "/" => (0x2f, "slash"),
        _ => return None,
    };
    Some((sym, name.to_owned()))
}

/// Which source delivers the push-to-talk key outside the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// An event-driven grab on the X11 display.
    X11,
    /// The desktop's GlobalShortcuts portal (Wayland).
    Portal,
    /// The global-shortcut plugin (macOS, Windows).
    Plugin,
    /// None: this desktop gives apps no global key.
    None,
}

/// The push-to-talk key and whether it works outside the window, for the window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct HotkeyInfo {
    /// The key asked for (`F8`).
    pub key: String,
    /// It works system-wide now.
    pub registered: bool,
    /// Why not, if not (and not still being asked for).
    pub error: Option<String>,
    /// Who delivers it.
    pub source: KeySource,
    /// The trigger the desktop assigned, as it describes it (the portal only).
    pub trigger: Option<String>,
    /// The desktop's own shortcut settings can be opened from Settings.
    pub configurable: bool,
}

/// Said where no global key exists: what works instead.
pub const NO_GLOBAL_KEY: &str = "this desktop gives apps no global talk key. Hold the \
     on-screen button, or Space while Roger's window is focused; an X11 session has a key \
     that works everywhere";

impl HotkeyInfo {
    /// `key` before any source has it (not registered, nothing wrong yet).
    pub fn pending(key: &str, source: KeySource) -> HotkeyInfo {
        HotkeyInfo {
            registered: false,
            ..HotkeyInfo::grabbed(key, source, None)
        }
    }

    /// A key the X11 grab or the plugin has (`error`: why not).
    pub fn grabbed(key: &str, source: KeySource, error: Option<String>) -> HotkeyInfo {
        HotkeyInfo {
            key: key.to_owned(),
            registered: error.is_none(),
            error,
            source,
            trigger: None,
            configurable: false,
        }
    }

    /// `key` through the GlobalShortcuts portal, as `state` has it.
    #[cfg(target_os = "linux")]
    pub fn portal(key: &str, state: &super::portal::PortalState) -> HotkeyInfo {
        use super::portal::PortalState;
        let mut info = HotkeyInfo::pending(key, KeySource::Portal);
        match state {
            PortalState::Starting => {}
            PortalState::Unavailable(why) => {
                info.source = KeySource::None;
                info.error = Some(format!("{NO_GLOBAL_KEY} ({why})"));
            }
            PortalState::Bound {
                trigger,
                configurable,
            } => {
                info.registered = !trigger.is_empty();
                info.configurable = *configurable;
                if trigger.is_empty() {
                    info.error = Some(
                        "the desktop has not assigned a key to \"Push to talk\" yet: set one \
                         in its keyboard shortcut settings"
                            .to_owned(),
                    );
                } else {
                    info.trigger = Some(trigger.clone());
                }
            }
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accelerators_parse_to_keysyms_and_modifiers() {
        let f8 = parse("F8").unwrap();
        assert_eq!(
            (f8.keysym, f8.ctrl || f8.shift || f8.alt || f8.logo),
            (0xffc5, false)
        );
        let a = parse("Ctrl+Shift+Space").unwrap();
        assert_eq!(
            (a.keysym, a.ctrl, a.shift, a.alt),
            (0x20, true, true, false)
        );
        let q = parse("Alt+KeyQ").unwrap();
        assert_eq!((q.keysym, q.alt), (u32::from(b'q'), true));
        let one = parse("Super+Digit1").unwrap();
        assert_eq!((one.keysym, one.logo), (u32::from(b'1'), true));
        assert_eq!(parse("F24").unwrap().keysym, 0xffd5);
        assert!(parse("F25").is_err());
        assert!(parse("Hyper+F8").is_err());
        assert!(parse("").is_err());
        assert!(parse("Ctrl+Nonsense").is_err());
    }

    #[test]
    fn triggers_are_written_as_the_xdg_shortcuts_spec_says() {
        let t = |a: &str| parse(a).unwrap().xdg_trigger();
        assert_eq!(t("F8"), "F8");
        assert_eq!(t("Ctrl+Shift+Space"), "CTRL+SHIFT+space");
        assert_eq!(t("Alt+KeyQ"), "ALT+q");
        assert_eq!(t("Super+Digit1"), "LOGO+1");
        assert_eq!(t("Shift+Enter"), "SHIFT+Return");
        assert_eq!(t("Numpad0"), "KP_0");
        assert_eq!(t("Ctrl+Backquote"), "CTRL+grave");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_window_is_told_what_the_portal_did() {
        use crate::app::portal::PortalState;
        // Before any source has the key it is not registered (the shell's "already
        // registered, nothing to do" check depends on it).
        assert!(!HotkeyInfo::pending("F8", KeySource::X11).registered);
        let asking = HotkeyInfo::portal("F8", &PortalState::Starting);
        assert_eq!((asking.registered, asking.error.is_none()), (false, true));
        let bound = HotkeyInfo::portal(
            "F8",
            &PortalState::Bound {
                trigger: "Ctrl+F9".into(),
                configurable: true,
            },
        );
        assert!(bound.registered && bound.configurable);
        assert_eq!(bound.trigger.as_deref(), Some("Ctrl+F9"));
        assert_eq!(bound.source, KeySource::Portal);
        let unassigned = HotkeyInfo::portal(
            "F8",
            &PortalState::Bound {
                trigger: String::new(),
                configurable: false,
            },
        );
        assert!(!unassigned.registered);
        assert!(unassigned.error.unwrap().contains("not assigned"));
        let none = HotkeyInfo::portal("F8", &PortalState::Unavailable("no portal".into()));
        assert_eq!(none.source, KeySource::None);
        assert!(none.error.unwrap().contains("no global talk key"));
    }
}
