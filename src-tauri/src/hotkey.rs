//! The push-to-talk key: which source has it (an event-driven X11 grab on X11 sessions,
//! the GlobalShortcuts portal on Wayland, the global-shortcut plugin on macOS and
//! Windows), registering it, and what the window is told about it. Every source calls
//! the one PTT path, [`App::ptt_key`].

use crate::HotkeyChanged;
use roger_client::app::keys::{HotkeyInfo, KeySource};
use roger_client::app::App;
use roger_protocol::{ErrorBody, ErrorCode};
use std::sync::Mutex;
use tauri::{AppHandle, Manager};
use tauri_plugin_global_shortcut::GlobalShortcutExt;
use tauri_specta::Event;

/// The hotkey in force now, as the window is told.
pub(crate) struct Hotkey(pub(crate) Mutex<HotkeyInfo>);

/// The push-to-talk key's sources besides the plugin (which Tauri manages itself).
#[derive(Default)]
pub(crate) struct KeySources {
    /// An event-driven grab on an X11 session (the plugin's X11 backend polls every
    /// 50 ms).
    #[cfg(target_os = "linux")]
    x11: Option<roger_client::app::x11key::X11Key>,
    /// The GlobalShortcuts portal on a Wayland session.
    #[cfg(target_os = "linux")]
    portal: Option<roger_client::app::portal::PortalKey>,
}

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

/// Whether a tray icon built here is shown somewhere: on Wayland only through a tray
/// host on the session bus (on X11 the indicator library falls back to the XEmbed tray).
pub(crate) fn tray_shown() -> bool {
    #[cfg(target_os = "linux")]
    if wayland_session() {
        return tauri::async_runtime::block_on(roger_client::app::portal::tray_host());
    }
    true
}

/// Starts the source this session has: on Wayland the portal (an X11 grab through
/// XWayland only sees X11 windows, which Roger's is not), on X11 the grab. `key` is the
/// configured key (the portal's preferred trigger).
#[cfg(target_os = "linux")]
pub(crate) fn start_key_sources(handle: &AppHandle, app: &App, key: &str) -> KeySources {
    let runtime = tauri::async_runtime::handle().inner().clone();
    let mut sources = KeySources::default();
    if wayland_session() {
        let (on_key, on_state) = (app.clone(), handle.clone());
        let started = roger_client::app::portal::PortalKey::start(
            &runtime,
            key,
            move |down| on_key.ptt_key(down, tauri::async_runtime::handle().inner()),
            move |state| {
                let hotkey = on_state.state::<Hotkey>();
                let key = hotkey.0.lock().map(|h| h.key.clone()).ok();
                if let Some(key) = key {
                    show(&on_state, HotkeyInfo::portal(&key, state));
                }
            },
        );
        match started {
            Ok(p) => sources.portal = Some(p),
            Err(e) => tracing::warn!("no portal key: {e}"),
        }
    } else if std::env::var_os("DISPLAY").is_some() {
        let app = app.clone();
        match roger_client::app::x11key::X11Key::start(move |down| {
            app.ptt_key(down, tauri::async_runtime::handle().inner());
        }) {
            Ok(k) => sources.x11 = Some(k),
            Err(e) => {
                tracing::warn!("X11 key grab unavailable ({e}); using the global-shortcut plugin")
            }
        }
    }
    sources
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn start_key_sources(_handle: &AppHandle, _app: &App, _key: &str) -> KeySources {
    KeySources::default()
}

/// Tells the window (and the log) what the key is now.
fn show(handle: &AppHandle, info: HotkeyInfo) {
    tracing::info!(
        key = info.key,
        registered = info.registered,
        source = ?info.source,
        trigger = info.trigger.as_deref().unwrap_or(""),
        error = info.error.as_deref().unwrap_or(""),
        "push-to-talk hotkey"
    );
    if let Ok(mut h) = handle.state::<Hotkey>().0.lock() {
        *h = info.clone();
    }
    let _ = HotkeyChanged(info).emit(handle);
}

/// Registers `key` with the X11 grab or the plugin.
fn grab(handle: &AppHandle, key: &str) -> Result<KeySource, String> {
    #[cfg(target_os = "linux")]
    if let Some(x11) = &handle.state::<KeySources>().x11 {
        return x11.set_key(key).map(|()| KeySource::X11);
    }
    let shortcuts = handle.global_shortcut();
    let _ = shortcuts.unregister_all();
    shortcuts
        .register(key)
        .map(|()| KeySource::Plugin)
        .map_err(|e| e.to_string())
}

/// Who [`grab`] registers with.
fn grab_source(handle: &AppHandle) -> KeySource {
    #[cfg(target_os = "linux")]
    if handle.state::<KeySources>().x11.is_some() {
        return KeySource::X11;
    }
    let _ = handle;
    KeySource::Plugin
}

fn refused(key: &str, e: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::InvalidSettings,
        format!("the push-to-talk key {key:?} cannot be used: {e}"),
    )
}

/// Makes `key` the push-to-talk key (replacing the previous one). On Wayland it becomes
/// the portal's preferred trigger, and where no global key exists the hotkey state says
/// so and this succeeds: the rest of the settings must still save. A key the X11 grab or
/// the plugin refuses is an error and the previous key stays.
pub(crate) fn apply_hotkey(handle: &AppHandle, key: &str) -> Result<(), ErrorBody> {
    #[cfg(target_os = "linux")]
    if let Some(portal) = &handle.state::<KeySources>().portal {
        portal.set_key(key).map_err(|e| refused(key, &e))?;
        show(handle, HotkeyInfo::portal(key, &portal.state()));
        return Ok(());
    }
    if wayland_session() {
        // A Wayland session whose portal client could not even start.
        let why = roger_client::app::keys::NO_GLOBAL_KEY.to_owned();
        show(handle, HotkeyInfo::grabbed(key, KeySource::None, Some(why)));
        return Ok(());
    }
    let previous = handle.state::<Hotkey>().0.lock().map(|h| h.clone()).ok();
    if previous
        .as_ref()
        .is_some_and(|p| p.key == key && p.registered)
    {
        return Ok(());
    }
    match grab(handle, key) {
        Ok(source) => {
            show(handle, HotkeyInfo::grabbed(key, source, None));
            Ok(())
        }
        Err(e) => {
            let error = refused(key, &e);
            // Keep the old one working.
            if let Some(p) = previous.as_ref().filter(|p| p.registered) {
                let _ = grab(handle, &p.key);
                tracing::warn!(error = %error.message, "hotkey refused; keeping {}", p.key);
            } else {
                let source = grab_source(handle);
                show(
                    handle,
                    HotkeyInfo::grabbed(key, source, Some(error.message.clone())),
                );
            }
            Err(error)
        }
    }
}

/// Opens the desktop's own settings for the talk key (the portal's ConfigureShortcuts).
pub(crate) async fn configure(handle: &AppHandle) -> Result<(), ErrorBody> {
    #[cfg(target_os = "linux")]
    if let Some(portal) = &handle.state::<KeySources>().portal {
        return portal
            .configure()
            .await
            .map_err(|e| ErrorBody::new(ErrorCode::InternalError, e));
    }
    let _ = handle;
    Err(ErrorBody::new(
        ErrorCode::InvalidSettings,
        "this desktop has no shortcut settings Roger can open",
    ))
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
