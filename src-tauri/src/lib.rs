//! Roger's desktop shell. Thin on purpose: every command is one call into
//! [`roger_client::app::App`], every core event is forwarded to the webview, and what is
//! left here is what only a desktop has (global hotkey, tray, window, log files).
//!
//! The TypeScript bindings in `ui/src/bindings.ts` are generated from these types by
//! tauri-specta ([`specta_builder`]); `tests/bindings.rs` fails when they drift.

mod hotkey;

use hotkey::{apply_hotkey, start_key_sources, Hotkey};
use roger_client::app::history::HistoryEntry;
use roger_client::app::keys::{HotkeyInfo, KeySource};
use roger_client::app::{
    App, AppEvent, AppState, Diagnostics, LaunchOptions, Notice, Settings, StatusPresentation,
    DEFAULT_HOTKEY,
};
use roger_client::audio::device::DeviceInfo;
use roger_client::event::AudioDirection;
use roger_protocol::ErrorBody;
use serde::Serialize;
use specta::Type;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tauri::menu::{Menu, MenuItem};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Manager, State, WindowEvent};
use tauri_plugin_global_shortcut::ShortcutState;
use tauri_specta::{collect_commands, collect_events, Event};

/// Everything the window shows changed.
#[derive(Debug, Clone, Serialize, Type, Event)]
pub struct StateChanged(pub AppState);

/// A level reading (microphone `tx`, speaker `rx`), for the meters.
#[derive(Debug, Clone, Serialize, Type, Event)]
pub struct LevelChanged {
    /// Which meter.
    pub direction: AudioDirection,
    /// RMS, 0..1.
    pub rms: f32,
    /// Peak, 0..1.
    pub peak: f32,
}

/// Something to show once (a toast).
#[derive(Debug, Clone, Serialize, Type, Event)]
pub struct NoticeShown(pub Notice);

/// The push-to-talk key changed, or what the desktop did with it (the portal assigned
/// or changed the trigger, or went away).
#[derive(Debug, Clone, Serialize, Type, Event)]
pub struct HotkeyChanged(pub HotkeyInfo);

/// A tray icon exists, so closing the window hides it instead of quitting.
static TRAY_OK: AtomicBool = AtomicBool::new(false);

/// The state shown.
#[tauri::command]
#[specta::specta]
fn get_state(app: State<'_, App>) -> AppState {
    app.state()
}

/// The saved settings.
#[tauri::command]
#[specta::specta]
fn get_settings(app: State<'_, App>) -> Settings {
    app.settings()
}

/// Saves settings; a new hotkey is registered first, and nothing is saved if it cannot be.
/// (async: reopening a speaker blocks, and may start tasks, so not on the main thread.)
#[tauri::command]
#[specta::specta]
async fn save_settings(
    handle: AppHandle,
    app: State<'_, App>,
    settings: Settings,
) -> Result<(), ErrorBody> {
    settings.validate()?;
    apply_hotkey(&handle, &settings.hotkey)?;
    app.save_settings(settings)
}

/// The push-to-talk shortcut in use.
#[tauri::command]
#[specta::specta]
fn get_hotkey(hotkey: State<'_, Hotkey>) -> HotkeyInfo {
    hotkey
        .0
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|p| p.into_inner().clone())
}

/// Opens the desktop's own settings for the talk key (Wayland's GlobalShortcuts portal,
/// where it offers them).
#[tauri::command]
#[specta::specta]
async fn configure_hotkey(handle: AppHandle) -> Result<(), ErrorBody> {
    hotkey::configure(&handle).await
}

/// Saves the server, keeps the token in the credential store, and connects.
#[tauri::command]
#[specta::specta]
async fn sign_in(
    app: State<'_, App>,
    server_url: String,
    token: String,
    allow_unencrypted: bool,
) -> Result<(), ErrorBody> {
    app.sign_in(server_url, token, allow_unencrypted).await
}

/// Disconnects and forgets the token (the server address stays).
#[tauri::command]
#[specta::specta]
async fn sign_out(app: State<'_, App>) -> Result<(), ErrorBody> {
    app.sign_out().await
}

/// Disconnects (settings stay).
#[tauri::command]
#[specta::specta]
async fn disconnect(app: State<'_, App>) -> Result<(), ErrorBody> {
    app.disconnect().await;
    Ok(())
}

/// Joins a channel (PTT talks there).
#[tauri::command]
#[specta::specta]
async fn join_channel(app: State<'_, App>, channel: String) -> Result<(), ErrorBody> {
    app.join(channel).await
}

/// Leaves the current channel.
#[tauri::command]
#[specta::specta]
async fn leave_channel(app: State<'_, App>) -> Result<(), ErrorBody> {
    app.leave().await
}

/// PTT pressed (button, Space). Not async on purpose: plain commands run in order on
/// the main thread, so the press is taken before a release sent after it (async commands
/// are separate tasks and could swap). Failures reach the window as notices.
#[tauri::command]
#[specta::specta]
fn ptt_down(app: State<'_, App>) {
    app.ptt_key(true, tauri::async_runtime::handle().inner());
}

/// PTT released (see [`ptt_down`] for why it is not async).
#[tauri::command]
#[specta::specta]
fn ptt_up(app: State<'_, App>) {
    app.ptt_key(false, tauri::async_runtime::handle().inner());
}

/// The banner's Rejoin (async: it may start a new session's tasks).
#[tauri::command]
#[specta::specta]
async fn rejoin(app: State<'_, App>) -> Result<(), ErrorBody> {
    app.rejoin();
    Ok(())
}

/// Hides the banner.
#[tauri::command]
#[specta::specta]
fn dismiss_error(app: State<'_, App>) {
    app.dismiss_error();
}

/// Microphones and speakers.
#[tauri::command]
#[specta::specta]
async fn list_devices(app: State<'_, App>) -> Result<Vec<DeviceInfo>, ErrorBody> {
    app.devices()
}

/// Turns the settings' level meter on or off.
#[tauri::command]
#[specta::specta]
async fn set_meter(app: State<'_, App>, on: bool) -> Result<(), ErrorBody> {
    app.meter(on)
}

/// Microphone test: on talks to the echo channel, off plays it back. Ordered like
/// [`ptt_down`]; failures reach the window as notices.
#[tauri::command]
#[specta::specta]
fn mic_test(app: State<'_, App>, on: bool) {
    let test = app.mic_test(on);
    tauri::async_runtime::spawn(async move {
        if let Err(e) = test.await {
            tracing::info!(error = %e, "microphone test");
        }
    });
}

/// A channel's recent transmissions, newest first, unplayed marked.
#[tauri::command]
#[specta::specta]
async fn channel_history(
    app: State<'_, App>,
    channel: String,
) -> Result<Vec<HistoryEntry>, ErrorBody> {
    app.channel_history(channel).await
}

/// Plays a recorded transmission (live audio first).
#[tauri::command]
#[specta::specta]
async fn play_transmission(app: State<'_, App>, id: String) -> Result<(), ErrorBody> {
    app.play_transmission(id).await
}

/// Stops what is being played back.
#[tauri::command]
#[specta::specta]
fn stop_playback(app: State<'_, App>) {
    app.stop_playback();
}

/// Recovery figures and recent events.
#[tauri::command]
#[specta::specta]
fn diagnostics(app: State<'_, App>) -> Diagnostics {
    app.diagnostics()
}

/// The bindings builder: commands and events, shared by the app and the drift test.
pub fn specta_builder() -> tauri_specta::Builder<tauri::Wry> {
    tauri_specta::Builder::<tauri::Wry>::new()
        .commands(collect_commands![
            channel_history,
            play_transmission,
            stop_playback,
            get_state,
            get_settings,
            save_settings,
            get_hotkey,
            configure_hotkey,
            sign_in,
            sign_out,
            disconnect,
            join_channel,
            leave_channel,
            ptt_down,
            ptt_up,
            rejoin,
            dismiss_error,
            list_devices,
            set_meter,
            mic_test,
            diagnostics,
        ])
        .events(collect_events![
            StateChanged,
            LevelChanged,
            NoticeShown,
            HotkeyChanged
        ])
        // Unix-millisecond timestamps and counters: exact in a JS number up to 2^53.
        .dangerously_cast_bigints_to_number()
}

/// The TypeScript exporter settings used for `ui/src/bindings.ts`.
pub fn typescript() -> specta_typescript::Typescript {
    specta_typescript::Typescript::default().header(
        "// Generated by tauri-specta from src-tauri (make bindings). Do not edit.\n// @ts-nocheck",
    )
}

/// Launch options (`make run` starts the app already configured).
#[derive(Debug, clap::Parser)]
#[command(name = "roger", version, about = "Roger push-to-talk")]
struct Cli {
    /// Server address (`ws://host:port/ws`); saved to the settings.
    #[arg(long)]
    server: Option<String>,
    /// A file holding the sign-in token; saved to the settings.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The channel to join; saved to the settings.
    #[arg(long)]
    channel: Option<String>,
    /// Start hidden in the tray.
    #[arg(long)]
    minimized: bool,
}

/// A 32x32 filled circle in `rgb` (the tray icon), drawn here so every status colour
/// exists without image files.
fn dot_icon(rgb: [u8; 3]) -> tauri::image::Image<'static> {
    const N: u32 = 32;
    let mut rgba = Vec::with_capacity((N * N * 4) as usize);
    let c = (N as f32 - 1.0) / 2.0;
    for y in 0..N {
        for x in 0..N {
            let d = ((x as f32 - c).powi(2) + (y as f32 - c).powi(2)).sqrt();
            let alpha = (14.5 - d).clamp(0.0, 1.0);
            rgba.extend_from_slice(&[rgb[0], rgb[1], rgb[2], (alpha * 255.0) as u8]);
        }
    }
    tauri::image::Image::new_owned(rgba, N, N)
}

fn show_window(app: &AppHandle) {
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.unminimize();
        let _ = w.show();
        let _ = w.set_focus();
    }
}

fn init_logging(dir: &std::path::Path) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,webrtc=warn,webrtc_ice=warn,pulseaudio=off".into());
    let file = std::fs::create_dir_all(dir).ok().and_then(|()| {
        tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("roger")
            .filename_suffix("log")
            .max_log_files(7)
            .build(dir)
            .ok()
    });
    let (writer, guard) = match file {
        Some(f) => {
            // The default queue (128 000 lines) is a 4 MiB array, every slot written when
            // it is made: 4 MiB of the app's memory for a log that writes a few lines a
            // second. Lines beyond the queue are dropped (and counted by the appender).
            let (w, g) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .buffered_lines_limit(4096)
                .finish(f);
            (Some(w), Some(g))
        }
        None => (None, None),
    };
    let file_layer = writer.map(|w| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(w)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(file_layer)
        .try_init();
    guard
}

/// Sets (unless the user already has) the environment WebKitGTK, GTK and JavaScriptCore
/// read at start-up. Each of these was measured with `roger-bench app` (BENCHMARKS.md).
#[cfg(target_os = "linux")]
fn webview_environment() {
    fn default(key: &str, value: &str) {
        if std::env::var_os(key).is_none() {
            std::env::set_var(key, value);
        }
    }
    // WebKitGTK's DMA-BUF renderer costs ~70 MiB more here and fails on some GPUs.
    default("WEBKIT_DISABLE_DMABUF_RENDERER", "1");
    // The page is a few hundred lines of script: the interpreter is fast enough, and
    // without the JIT the web process keeps ~3 MiB less.
    default("JSC_useJIT", "false");
    if !std::path::Path::new("/dev/dri").exists() {
        // No GPU render node, so any OpenGL here is Mesa's software driver, which maps
        // libLLVM (~20 MiB of relocated, private pages in each process that loads it).
        // GTK probes GLX when it opens the display, and WebKit's UI process opens an EGL
        // display to find the DRM device it would hand the web process; neither is used
        // with the DMA-BUF renderer off (the UI process paints the web process's shared
        // memory frames with cairo). The web process still needs the driver for its
        // compositor. Machines with a GPU are left as they are.
        default("GDK_GL", "disable");
        default("WEBKIT_WEB_RENDER_DEVICE_FILE", "/dev/null");
    }
}

/// Where the tray icon lives once built (none on a desktop without a tray).
type TraySlot = std::sync::Arc<Mutex<Option<TrayIcon>>>;

/// Forwards the core's events to the window, and the status's presentation (the same
/// one the window is sent) to the tray.
fn window_emitter(handle: AppHandle, tray: TraySlot) -> roger_client::app::Emit {
    let last_look: Mutex<Option<StatusPresentation>> = Mutex::new(None);
    std::sync::Arc::new(move |event| match event {
        AppEvent::State(state) => {
            let look = &state.presentation;
            let before = last_look
                .lock()
                .map(|mut l| l.replace(look.clone()))
                .unwrap_or_default();
            let new_dot = before.as_ref().map(|b| b.dot) != Some(look.dot);
            let new_tooltip = before.as_ref().map(|b| &b.tooltip) != Some(&look.tooltip);
            if new_dot {
                tracing::info!(
                    status = state.status.name(),
                    "status dot {}",
                    look.dot.name()
                );
            }
            if new_dot || new_tooltip {
                if let Some(t) = tray.lock().ok().and_then(|t| t.clone()) {
                    // Queued, not waited for: the tray's setters block until the main
                    // thread has run them, and this is the thread that sends every state
                    // to the window.
                    let rgb = new_dot.then(|| look.dot.rgb());
                    let tooltip = look.tooltip.clone();
                    let _ = handle.run_on_main_thread(move || {
                        if let Some(rgb) = rgb {
                            let _ = t.set_icon(Some(dot_icon(rgb)));
                        }
                        let _ = t.set_tooltip(Some(tooltip));
                    });
                }
            }
            let _ = StateChanged(*state).emit(&handle);
        }
        AppEvent::Level {
            direction,
            rms,
            peak,
        } => {
            let _ = LevelChanged {
                direction,
                rms,
                peak,
            }
            .emit(&handle);
        }
        AppEvent::Notice(n) => {
            let _ = NoticeShown(n).emit(&handle);
        }
    })
}

/// The tray icon (coloured by status) with Show, Rejoin and Quit.
fn build_tray(app: &tauri::App, core: &App) -> tauri::Result<TrayIcon> {
    let show = MenuItem::with_id(app, "show", "Show Roger", true, None::<&str>)?;
    let rejoin = MenuItem::with_id(app, "rejoin", "Rejoin", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit", true, None::<&str>)?;
    let menu = Menu::with_items(app, &[&show, &rejoin, &quit])?;
    let look = core.state().presentation;
    TrayIconBuilder::with_id("status")
        .icon(dot_icon(look.dot.rgb()))
        .tooltip(look.tooltip)
        .menu(&menu)
        .show_menu_on_left_click(false)
        .on_menu_event(|app, event| match event.id.as_ref() {
            "show" => show_window(app),
            "rejoin" => {
                // Menu events come on the main thread; a rejoin may start tasks.
                let core = app.state::<App>().inner().clone();
                tauri::async_runtime::spawn(async move { core.rejoin() });
            }
            "quit" => {
                let core = app.state::<App>().inner().clone();
                let app = app.clone();
                tauri::async_runtime::spawn(async move {
                    core.shutdown().await;
                    app.exit(0);
                });
            }
            _ => {}
        })
        .on_tray_icon_event(|tray, event| {
            if let TrayIconEvent::Click {
                button: MouseButton::Left,
                button_state: MouseButtonState::Up,
                ..
            } = event
            {
                show_window(tray.app_handle());
            }
        })
        .build(app)
}

/// Logs, the core (with the launch options saved), the hotkey, the tray; then connects.
fn setup(app: &mut tauri::App, cli: &Cli, tray_slot: &TraySlot) -> anyhow::Result<()> {
    let handle = app.handle().clone();
    let log_dir = app.path().app_log_dir()?;
    let guard = init_logging(&log_dir);
    app.manage(Mutex::new(guard));
    let config_dir = app.path().app_config_dir()?;
    tracing::info!(config = %config_dir.display(), logs = %log_dir.display(), "Roger starting");
    let core = App::new(
        &config_dir,
        window_emitter(handle.clone(), tray_slot.clone()),
    );
    // Launch options become settings (so the next launch needs none).
    let settings = core
        .apply_launch_options(&LaunchOptions {
            server: cli.server.clone(),
            token_file: cli.token_file.clone(),
            channel: cli.channel.clone(),
        })
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "launch options not applied");
            core.settings()
        });
    app.manage(core.clone());
    let key = if settings.hotkey.is_empty() {
        DEFAULT_HOTKEY.to_owned()
    } else {
        settings.hotkey.clone()
    };
    app.manage(Hotkey(Mutex::new(HotkeyInfo::pending(
        &key,
        KeySource::None,
    ))));
    app.manage(start_key_sources(&handle, &core, &key));
    if let Err(e) = apply_hotkey(&handle, &key) {
        tracing::error!(error = %e.message, "no global push-to-talk key");
    }
    match build_tray(app, &core) {
        Ok(_) if !hotkey::tray_shown() => tracing::warn!(
            "no tray icon: this Wayland desktop has no tray host (StatusNotifierWatcher); \
             closing the window quits"
        ),
        Ok(t) => {
            TRAY_OK.store(true, Ordering::Relaxed);
            if let Ok(mut slot) = tray_slot.lock() {
                *slot = Some(t);
            }
        }
        // No tray on this desktop: the window stays the way back.
        Err(e) => tracing::warn!(error = %e, "no tray icon"),
    }
    if cli.minimized {
        if let Some(w) = app.get_webview_window("main") {
            let _ = w.hide();
        }
    }
    tauri::async_runtime::spawn(async move {
        core.autostart();
    });
    Ok(())
}

/// Runs the app.
pub fn run() -> anyhow::Result<()> {
    use clap::Parser;
    let cli = Cli::parse();
    #[cfg(target_os = "linux")]
    webview_environment();
    let builder = specta_builder();
    let tray_slot = TraySlot::default();
    tauri::Builder::default()
        .plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| {
            show_window(app);
        }))
        .plugin(
            tauri_plugin_global_shortcut::Builder::new()
                .with_handler(|app, _shortcut, event| {
                    let down = event.state() == ShortcutState::Pressed;
                    app.state::<App>()
                        .ptt_key(down, tauri::async_runtime::handle().inner());
                })
                .build(),
        )
        .invoke_handler(builder.invoke_handler())
        .on_window_event(|window, event| {
            // Close to the tray (when there is one): the hotkey keeps working.
            if let WindowEvent::CloseRequested { api, .. } = event {
                if window.label() == "main" && TRAY_OK.load(Ordering::Relaxed) {
                    api.prevent_close();
                    let _ = window.hide();
                }
            }
        })
        .setup(move |app| {
            builder.mount_events(app);
            setup(app, &cli, &tray_slot).map_err(Into::into)
        })
        .build(tauri::generate_context!())
        .map_err(|e| anyhow::anyhow!("the app failed to start: {e}"))?
        .run(|handle, event| {
            // However the app ends (tray Quit, last window closed without a tray, a
            // signal through the event loop): say goodbye and release the floor.
            if let tauri::RunEvent::Exit = event {
                if let Some(core) = handle.try_state::<App>() {
                    tauri::async_runtime::block_on(core.inner().clone().shutdown());
                }
            }
        });
    Ok(())
}
