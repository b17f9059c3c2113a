//! The push-to-talk key: which backend has it (an event-driven X11 grab on X11
//! sessions, the global-shortcut plugin elsewhere, none on Wayland yet), registering it,
//! and what the window is told about it.

use crate::{Hotkey, HotkeyInfo};
use roger_client::app::App;
use roger_protocol::ErrorBody;
use tauri::{AppHandle, Manager};
use tauri_plugin_global_shortcut::GlobalShortcutExt;

/// The push-to-talk key on an X11 session: an event-driven grab (the plugin's X11
/// backend polls every 50 ms). `None` elsewhere (Wayland, macOS, Windows), where the
/// global-shortcut plugin has the key.
pub(crate) struct X11Ptt(pub(crate) Option<X11PttKey>);

#[cfg(target_os = "linux")]
type X11PttKey = roger_client::app::x11key::X11Key;
#[cfg(not(target_os = "linux"))]
type X11PttKey = ();

/// Whether this is a Wayland session.
fn wayland_session() -> bool {
    is_wayland(
        std::env::var_os("WAYLAND_DISPLAY").is_some(),
        std::env::var("XDG_SESSION_TYPE").ok().as_deref(),
    )
}

/// A Wayland session: a Wayland display, or a session the login manager calls one.
fn is_wayland(wayland_display: bool, session_type: Option<&str>) -> bool {
    cfg!(target_os = "linux") && (wayland_display || session_type == Some("wayland"))
}

/// Why there is no global push-to-talk key here, if there is none. On Wayland an X11
/// grab (the plugin's, through XWayland) only fires while an X11 window has focus, which
/// Roger's own Wayland window is not: saying "registered" there would be a silent
/// failure.
fn no_global_key() -> Option<&'static str> {
    wayland_session().then_some(
        "this Wayland desktop gives apps no global talk key Roger can use yet (that needs \
         the desktop portal's GlobalShortcuts); hold the button, or log in to an X11 \
         session for a key that works everywhere",
    )
}

/// Starts the X11 key on an X11 session (not under Wayland, where XWayland's grab only
/// sees X11 windows).
#[cfg(target_os = "linux")]
pub(crate) fn start_x11_ptt(app: &App) -> Option<X11PttKey> {
    if wayland_session() || std::env::var_os("DISPLAY").is_none() {
        return None;
    }
    let app = app.clone();
    match roger_client::app::x11key::X11Key::start(move |down| {
        app.ptt_key(down, tauri::async_runtime::handle().inner());
    }) {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::warn!("X11 key grab unavailable ({e}); using the global-shortcut plugin");
            None
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn start_x11_ptt(_app: &App) -> Option<X11PttKey> {
    None
}

/// Registers `key` with whichever backend has the push-to-talk key.
fn register_ptt_key(handle: &AppHandle, key: &str) -> Result<(), String> {
    #[cfg(target_os = "linux")]
    if let Some(x11) = &handle.state::<X11Ptt>().0 {
        return x11.set_key(key);
    }
    let shortcuts = handle.global_shortcut();
    let _ = shortcuts.unregister_all();
    shortcuts.register(key).map_err(|e| e.to_string())
}

/// Registers `key` as the push-to-talk shortcut (replacing the previous one). Where
/// no global key exists (Wayland) it says so in the hotkey state and succeeds: the rest
/// of the settings must still save.
pub(crate) fn apply_hotkey(handle: &AppHandle, key: &str) -> Result<(), ErrorBody> {
    let state = handle.state::<Hotkey>();
    if let Some(why) = no_global_key() {
        tracing::warn!(key, "no global push-to-talk key: {why}");
        if let Ok(mut h) = state.0.lock() {
            *h = HotkeyInfo {
                key: key.to_owned(),
                registered: false,
                error: Some(why.to_owned()),
            };
        }
        return Ok(());
    }
    let previous = state.0.lock().map(|h| h.clone()).ok();
    if previous
        .as_ref()
        .is_some_and(|p| p.key == key && p.registered)
    {
        return Ok(());
    }
    let result = register_ptt_key(handle, key).map_err(|e| {
        ErrorBody::new(
            roger_protocol::ErrorCode::InvalidSettings,
            format!("the push-to-talk key {key:?} cannot be used: {e}"),
        )
    });
    let info = match &result {
        Ok(()) => HotkeyInfo {
            key: key.to_owned(),
            registered: true,
            error: None,
        },
        Err(e) => {
            // Keep the old one working.
            if let Some(p) = previous.as_ref().filter(|p| p.registered) {
                let _ = register_ptt_key(handle, p.key.as_str());
                tracing::warn!(error = %e.message, "hotkey refused; keeping {}", p.key);
                return result;
            }
            HotkeyInfo {
                key: key.to_owned(),
                registered: false,
                error: Some(e.message.clone()),
            }
        }
    };
    let backend = if handle.state::<X11Ptt>().0.is_some() {
        "X11 grab, event-driven"
    } else {
        "global-shortcut plugin"
    };
    tracing::info!(
        key,
        registered = info.registered,
        backend,
        "push-to-talk hotkey"
    );
    if let Ok(mut h) = state.0.lock() {
        *h = info;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::is_wayland;

    #[test]
    fn a_wayland_session_is_recognised_by_either_sign() {
        let linux = cfg!(target_os = "linux");
        assert_eq!(is_wayland(true, None), linux);
        assert_eq!(is_wayland(false, Some("wayland")), linux);
        assert!(!is_wayland(false, Some("x11")));
        assert!(!is_wayland(false, None));
    }
}
