//! The push-to-talk key on Wayland: the XDG desktop portal's GlobalShortcuts interface
//! (through `ashpd`). Wayland gives no app a global key grab; the portal lets the desktop
//! own the key and tells the app when it goes down (`Activated`) and up (`Deactivated`).
//!
//! [`PortalKey::start`] creates a portal session and binds one shortcut, "Push to talk",
//! with the configured key as the preferred trigger. The trigger the desktop actually
//! assigned is reported ([`PortalState::Bound`]) and followed (`ShortcutsChanged`). When
//! the portal goes away or restarts (its bus name changes owner) or closes the session,
//! a held key is released and the session is created again as soon as a portal is
//! there. Without a GlobalShortcuts portal the state says so
//! ([`PortalState::Unavailable`]): the shell must tell the user, not pretend.

use super::keys;
use ashpd::desktop::global_shortcuts::{
    BindShortcutsOptions, ConfigureShortcutsOptions, GlobalShortcuts, NewShortcut, Shortcut,
};
use ashpd::desktop::{CreateSessionOptions, Session};
use ashpd::zbus;
use futures_util::{Stream, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// The shortcut's id in the portal session.
pub const SHORTCUT_ID: &str = "push-to-talk";
/// Its description, shown by the desktop.
pub const SHORTCUT_DESCRIPTION: &str = "Push to talk";
/// The portal's well-known bus name.
const PORTAL: &str = "org.freedesktop.portal.Desktop";
/// How long creating a session may take (no dialog is involved in that step).
const CREATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the portal key stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortalState {
    /// Asking the portal (creating the session, binding the shortcut).
    Starting,
    /// No GlobalShortcuts portal to use here, and why.
    Unavailable(String),
    /// "Push to talk" is bound.
    Bound {
        /// The trigger the desktop assigned, as it describes it ("" when none yet).
        trigger: String,
        /// The desktop offers its own shortcut settings (`ConfigureShortcuts`, v2).
        configurable: bool,
    },
}

enum Command {
    SetKey(String),
    Configure(oneshot::Sender<Result<(), String>>),
}

/// The push-to-talk key through the GlobalShortcuts portal. Dropping it ends the
/// portal session.
pub struct PortalKey {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<PortalState>,
}

type OnKey = Arc<dyn Fn(bool) + Send + Sync>;
type OnState = Arc<dyn Fn(&PortalState) + Send + Sync>;

impl PortalKey {
    /// Starts the portal session on `runtime` with `accelerator` (`F8`) as the preferred
    /// trigger. `on_key` gets presses (`true`) and releases (`false`); `on_state` every
    /// change of [`PortalState`]. Fails only when `accelerator` is not a key.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        accelerator: &str,
        on_key: impl Fn(bool) + Send + Sync + 'static,
        on_state: impl Fn(&PortalState) + Send + Sync + 'static,
    ) -> Result<PortalKey, String> {
        let trigger = keys::parse(accelerator)?.xdg_trigger();
        let (commands, rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(PortalState::Starting);
        let mut run = Run {
            trigger,
            on_key: Arc::new(on_key),
            on_state: Arc::new(on_state),
            state: state_tx,
            commands: rx,
            down: false,
        };
        runtime.spawn(async move { run.run().await });
        Ok(PortalKey { commands, state })
    }

    /// Where it stands now.
    pub fn state(&self) -> PortalState {
        self.state.borrow().clone()
    }

    /// Makes `accelerator` the preferred trigger: the session is created again with it
    /// (the desktop may keep the trigger the user chose there).
    pub fn set_key(&self, accelerator: &str) -> Result<(), String> {
        let trigger = keys::parse(accelerator)?.xdg_trigger();
        self.commands
            .send(Command::SetKey(trigger))
            .map_err(|_| "the portal key has stopped".to_owned())
    }

    /// Opens the desktop's own settings for the shortcut (portal version 2).
    pub async fn configure(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Configure(tx))
            .map_err(|_| "the portal key has stopped".to_owned())?;
        rx.await
            .map_err(|_| "the portal session ended".to_owned())?
    }
}

/// How one portal session ended.
enum Ended {
    /// No portal to use: wait until one appears.
    Unavailable(String),
    /// The portal restarted or closed the session, or the key changed: start again.
    Again(&'static str),
    /// The [`PortalKey`] was dropped.
    Stop,
}

/// The task behind a [`PortalKey`].
struct Run {
    trigger: String,
    on_key: OnKey,
    on_state: OnState,
    state: watch::Sender<PortalState>,
    commands: mpsc::UnboundedReceiver<Command>,
    down: bool,
}

impl Run {
    async fn run(&mut self) {
        let conn = match zbus::Connection::session().await {
            Ok(c) => c,
            Err(e) => {
                self.set(
                    PortalState::Unavailable(format!("no D-Bus session bus ({e})")),
                    "",
                );
                return;
            }
        };
        let owners = match zbus::fdo::DBusProxy::new(&conn).await {
            Ok(dbus) => {
                dbus.receive_name_owner_changed_with_args(&[(0, PORTAL)])
                    .await
            }
            Err(e) => Err(e),
        };
        let mut owners = match owners {
            Ok(o) => o,
            Err(e) => {
                self.set(
                    PortalState::Unavailable(format!("the session bus refused ({e})")),
                    "",
                );
                return;
            }
        };
        loop {
            self.set(PortalState::Starting, "creating a portal session");
            match self.session(&conn, &mut owners).await {
                Ended::Stop => break,
                Ended::Again(why) => {
                    self.release(why);
                    // A restarting portal: give it a moment to take its name.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ended::Unavailable(why) => {
                    self.release("no portal");
                    self.set(PortalState::Unavailable(why), "");
                    // Wait for a portal to (re)appear, taking key changes meanwhile.
                    loop {
                        tokio::select! {
                            change = owners.next() => match change {
                                Some(c) if c.args().is_ok_and(|a| a.new_owner().is_some()) => break,
                                Some(_) => {}
                                None => return,
                            },
                            cmd = self.commands.recv() => match cmd {
                                Some(Command::SetKey(t)) => self.trigger = t,
                                Some(Command::Configure(tx)) => {
                                    let _ = tx.send(Err("no GlobalShortcuts portal".to_owned()));
                                }
                                None => return,
                            },
                        }
                    }
                }
            }
        }
        self.release("stopped");
    }

    /// One portal session: create, bind, then follow it until it ends.
    async fn session(
        &mut self,
        conn: &zbus::Connection,
        owners: &mut (impl Stream<Item = zbus::fdo::NameOwnerChanged> + Unpin),
    ) -> Ended {
        let unavailable = |what: &str, e: ashpd::Error| {
            Ended::Unavailable(match e {
                ashpd::Error::PortalNotFound(_) => {
                    "the desktop portal has no GlobalShortcuts interface".to_owned()
                }
                e => format!("{what}: {e}"),
            })
        };
        let portal = match GlobalShortcuts::with_connection(conn.clone()).await {
            Ok(p) => p,
            Err(e) => return unavailable("no desktop portal", e),
        };
        let streams = async {
            Ok::<_, ashpd::Error>((
                portal.receive_activated().await?,
                portal.receive_deactivated().await?,
                portal.receive_shortcuts_changed().await?,
            ))
        };
        let (mut activated, mut deactivated, mut changed) = match streams.await {
            Ok(s) => s,
            Err(e) => return unavailable("the portal's signals", e),
        };
        let session = match tokio::time::timeout(
            CREATE_TIMEOUT,
            portal.create_session(CreateSessionOptions::default()),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return unavailable("no GlobalShortcuts session", e),
            Err(_) => {
                return Ended::Unavailable(
                    "the GlobalShortcuts portal did not answer in 10 s".to_owned(),
                )
            }
        };
        let mut closed = match session.receive_closed().await {
            Ok(c) => c,
            Err(e) => return unavailable("the portal session", e),
        };
        let shortcut = NewShortcut::new(SHORTCUT_ID, SHORTCUT_DESCRIPTION)
            .preferred_trigger(Some(self.trigger.as_str()));
        // Binding may show the desktop's dialog: no timeout, but a portal that goes
        // away meanwhile ends the wait.
        let shortcuts = [shortcut];
        let bind =
            portal.bind_shortcuts(&session, &shortcuts, None, BindShortcutsOptions::default());
        let bound = tokio::select! {
            r = bind => r.and_then(|request| request.response()),
            _ = owners.next() => return Ended::Again("the portal restarted while binding"),
        };
        let trigger = match bound {
            Ok(b) => trigger_of(b.shortcuts()),
            Err(ashpd::Error::Response(e)) => {
                close(&session).await;
                return Ended::Unavailable(format!("the desktop did not bind the talk key ({e})"));
            }
            Err(e) => return unavailable("binding the talk key failed", e),
        };
        let configurable = portal.version() >= 2;
        self.set(
            PortalState::Bound {
                trigger,
                configurable,
            },
            "bound",
        );
        loop {
            tokio::select! {
                a = activated.next() => match a {
                    Some(a) if a.shortcut_id() == SHORTCUT_ID => self.key(true),
                    Some(_) => {}
                    None => return Ended::Again("the bus connection ended"),
                },
                d = deactivated.next() => match d {
                    Some(d) if d.shortcut_id() == SHORTCUT_ID => self.key(false),
                    Some(_) => {}
                    None => return Ended::Again("the bus connection ended"),
                },
                c = changed.next() => match c {
                    Some(c) if c.shortcuts().iter().any(|s| s.id() == SHORTCUT_ID) => {
                        let trigger = trigger_of(c.shortcuts());
                        self.set(PortalState::Bound { trigger, configurable }, "the desktop changed the trigger");
                    }
                    Some(_) => {}
                    None => return Ended::Again("the bus connection ended"),
                },
                _ = closed.next() => return Ended::Again("the portal closed the session"),
                _ = owners.next() => return Ended::Again("the portal restarted"),
                cmd = self.commands.recv() => match cmd {
                    Some(Command::SetKey(t)) => {
                        if t != self.trigger {
                            self.trigger = t;
                            close(&session).await;
                            return Ended::Again("a new preferred key");
                        }
                    }
                    Some(Command::Configure(tx)) => {
                        let r = portal
                            .configure_shortcuts(&session, None, ConfigureShortcutsOptions::default())
                            .await
                            .map_err(|e| format!("the desktop's shortcut settings did not open: {e}"));
                        let _ = tx.send(r);
                    }
                    None => {
                        close(&session).await;
                        return Ended::Stop;
                    }
                },
            }
        }
    }

    /// A press or release from the portal (a repeated press is one press).
    fn key(&mut self, down: bool) {
        if self.down != down {
            self.down = down;
            (self.on_key)(down);
        }
    }

    /// The key is let go when the session it came from ends.
    fn release(&mut self, why: &str) {
        if self.down {
            tracing::info!("portal key released: {why}");
            self.key(false);
        }
    }

    /// The one place the state changes (logged old -> new).
    fn set(&self, new: PortalState, why: &str) {
        let old = self.state.send_replace(new.clone());
        if old != new {
            tracing::info!(?old, ?new, why, "GlobalShortcuts portal");
            (self.on_state)(&new);
        }
    }
}

/// The trigger the desktop gave "Push to talk" among `shortcuts` ("" if none).
fn trigger_of(shortcuts: &[Shortcut]) -> String {
    shortcuts
        .iter()
        .find(|s| s.id() == SHORTCUT_ID)
        .map(|s| s.trigger_description().to_owned())
        .unwrap_or_default()
}

async fn close(session: &Session<GlobalShortcuts>) {
    let _ = session.close().await;
}

/// Whether the session bus has a tray host (a `StatusNotifierWatcher`). On Wayland a
/// tray icon is shown only through one; without it the icon exists nowhere, and a
/// window "closed to the tray" could not be brought back.
pub async fn tray_host() -> bool {
    let Ok(conn) = zbus::Connection::session().await else {
        return false;
    };
    let Ok(dbus) = zbus::fdo::DBusProxy::new(&conn).await else {
        return false;
    };
    match zbus::names::BusName::try_from("org.kde.StatusNotifierWatcher") {
        Ok(name) => dbus.name_has_owner(name).await.unwrap_or(false),
        Err(_) => false,
    }
}
