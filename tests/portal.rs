//! A stand-in XDG desktop portal serving `org.freedesktop.portal.GlobalShortcuts`
//! (version 2, as the XDG spec defines it) on a private session bus, for the desktop
//! app's `ashpd` client. [`StandInPortal`] records what the app asks and plays the
//! desktop's side: presses, a changed trigger, a closed session, the portal going away.
//! Requests answer as xdg-desktop-portal does: the method returns the request handle and
//! `org.freedesktop.portal.Request.Response` follows from that path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zbus::message::Header;
use zbus::names::BusName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{fdo, interface, Connection, ObjectServer};

/// The portal's well-known bus name.
pub const PORTAL_NAME: &str = "org.freedesktop.portal.Desktop";
/// The portal's object path.
pub const PORTAL_PATH: &str = "/org/freedesktop/portal/desktop";

/// A shortcut as the portal describes it: (id, {description, trigger_description}).
type ShortcutEntry = (String, HashMap<String, Value<'static>>);

/// A session a client created: its object path and the client's unique bus name.
#[derive(Clone)]
struct SessionRef {
    path: OwnedObjectPath,
    owner: String,
}

/// What the portal has seen and assigned, shared by its D-Bus objects and the test.
#[derive(Default)]
struct State {
    /// Every shortcut of every BindShortcuts call: id, description, preferred trigger.
    bound: Vec<(String, String, String)>,
    /// The shortcuts now bound: id, description, trigger description.
    shortcuts: Vec<(String, String, String)>,
    configured: usize,
    sessions_closed: usize,
    /// Sessions not closed yet.
    live: Vec<OwnedObjectPath>,
    /// The last session created, while it is open.
    session: Option<SessionRef>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The string `key` of a vardict, if there and a string.
fn option_str(options: &HashMap<String, OwnedValue>, key: &str) -> Option<String> {
    options
        .get(key)
        .and_then(|v| v.downcast_ref::<&str>().ok())
        .map(str::to_owned)
}

/// `/org/freedesktop/portal/desktop/KIND/SENDER/TOKEN` for the caller of `header`, with
/// the caller's unique name; TOKEN is option `token_key` of `options`.
fn handle(
    header: &Header<'_>,
    kind: &str,
    options: &HashMap<String, OwnedValue>,
    token_key: &str,
) -> fdo::Result<(OwnedObjectPath, String)> {
    let owner = header
        .sender()
        .ok_or_else(|| fdo::Error::Failed("a call without a sender".to_owned()))?
        .as_str()
        .to_owned();
    let token = option_str(options, token_key)
        .ok_or_else(|| fdo::Error::InvalidArgs(format!("no {token_key} in the options")))?;
    let sender = owner.trim_start_matches(':').replace('.', "_");
    let path = OwnedObjectPath::try_from(format!("{PORTAL_PATH}/{kind}/{sender}/{token}"))
        .map_err(|e| fdo::Error::InvalidArgs(format!("bad {token_key} {token:?}: {e}")))?;
    Ok((path, owner))
}

fn entry(id: &str, description: &str, trigger: &str) -> ShortcutEntry {
    let info = [
        ("description", description),
        ("trigger_description", trigger),
    ]
    .map(|(key, value)| (key.to_owned(), Value::from(value.to_owned())));
    (id.to_owned(), HashMap::from(info))
}

/// Emits `Request.Response(0, results)` from `request` to `owner`, just after the
/// method's reply has gone (as a real portal answers after its dialog).
fn respond_later(
    conn: &Connection,
    owner: String,
    request: OwnedObjectPath,
    results: HashMap<&'static str, Value<'static>>,
) {
    let conn = conn.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let body = (0u32, results);
        let sent = conn
            .emit_signal(
                Some(owner.as_str()),
                &request,
                "org.freedesktop.portal.Request",
                "Response",
                &body,
            )
            .await;
        if let Err(e) = sent {
            eprintln!("stand-in portal: Response on {request} failed: {e}");
        }
    });
}

/// `org.freedesktop.portal.GlobalShortcuts` at [`PORTAL_PATH`].
struct GlobalShortcutsIface {
    state: Arc<Mutex<State>>,
}

impl GlobalShortcutsIface {
    fn check_session(&self, session: &OwnedObjectPath) -> fdo::Result<()> {
        if lock(&self.state).live.contains(session) {
            Ok(())
        } else {
            Err(fdo::Error::InvalidArgs(format!(
                "no open session {session}"
            )))
        }
    }
}

#[interface(name = "org.freedesktop.portal.GlobalShortcuts")]
impl GlobalShortcutsIface {
    #[zbus(property(emits_changed_signal = "const"), name = "version")]
    fn version(&self) -> u32 {
        2
    }

    async fn create_session(
        &self,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> fdo::Result<OwnedObjectPath> {
        let (request, owner) = handle(&header, "request", &options, "handle_token")?;
        let (path, _) = handle(&header, "session", &options, "session_handle_token")?;
        let session = SessionIface {
            state: self.state.clone(),
            path: path.clone(),
        };
        server.at(&path, session).await?;
        {
            let mut state = lock(&self.state);
            state.live.push(path.clone());
            state.session = Some(SessionRef {
                path: path.clone(),
                owner: owner.clone(),
            });
        }
        // As xdg-desktop-portal does: the handle as a string (ashpd takes `s` or `o`).
        let results = HashMap::from([("session_handle", Value::from(path.as_str().to_owned()))]);
        respond_later(conn, owner, request.clone(), results);
        Ok(request)
    }

    async fn bind_shortcuts(
        &self,
        session_handle: OwnedObjectPath,
        shortcuts: Vec<(String, HashMap<String, OwnedValue>)>,
        parent_window: String,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> fdo::Result<OwnedObjectPath> {
        let _ = parent_window; // No dialog to parent.
        self.check_session(&session_handle)?;
        let (request, owner) = handle(&header, "request", &options, "handle_token")?;
        let mut assigned = Vec::new();
        {
            let mut state = lock(&self.state);
            for (id, info) in &shortcuts {
                let description = option_str(info, "description").unwrap_or_default();
                // The stand-in "desktop" assigns the preferred trigger as it is.
                let trigger = option_str(info, "preferred_trigger").unwrap_or_default();
                assigned.push(entry(id, &description, &trigger));
                let row = (id.clone(), description, trigger);
                state.bound.push(row.clone());
                state.shortcuts.retain(|(known, _, _)| known != id);
                state.shortcuts.push(row);
            }
        }
        let results = HashMap::from([("shortcuts", Value::from(assigned))]);
        respond_later(conn, owner, request.clone(), results);
        Ok(request)
    }

    async fn list_shortcuts(
        &self,
        session_handle: OwnedObjectPath,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> fdo::Result<OwnedObjectPath> {
        self.check_session(&session_handle)?;
        let (request, owner) = handle(&header, "request", &options, "handle_token")?;
        let all: Vec<ShortcutEntry> = lock(&self.state)
            .shortcuts
            .iter()
            .map(|(id, d, t)| entry(id, d, t))
            .collect();
        let results = HashMap::from([("shortcuts", Value::from(all))]);
        respond_later(conn, owner, request.clone(), results);
        Ok(request)
    }

    async fn configure_shortcuts(
        &self,
        session_handle: OwnedObjectPath,
        parent_window: String,
        options: HashMap<String, OwnedValue>,
    ) -> fdo::Result<()> {
        let _ = (parent_window, options); // No dialog: the call is only counted.
        self.check_session(&session_handle)?;
        lock(&self.state).configured += 1;
        Ok(())
    }
}

/// `org.freedesktop.portal.Session` at a session's path.
struct SessionIface {
    state: Arc<Mutex<State>>,
    path: OwnedObjectPath,
}

#[interface(name = "org.freedesktop.portal.Session")]
impl SessionIface {
    #[zbus(property(emits_changed_signal = "const"), name = "version")]
    fn version(&self) -> u32 {
        1
    }

    /// The client ends the session (no `Closed` follows, as with xdg-desktop-portal).
    async fn close(&self, #[zbus(object_server)] server: &ObjectServer) -> fdo::Result<()> {
        {
            let mut state = lock(&self.state);
            state.sessions_closed += 1;
            state.live.retain(|p| *p != self.path);
            if state.session.as_ref().is_some_and(|s| s.path == self.path) {
                state.session = None;
            }
        }
        server.remove::<Self, _>(&self.path).await?;
        Ok(())
    }

    /// The desktop closed the session.
    #[zbus(signal)]
    async fn closed(
        emitter: &SignalEmitter<'_>,
        details: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<()>;
}

/// The stand-in portal, on the bus until [`StandInPortal::stop`] (or dropped with its
/// runtime).
pub struct StandInPortal {
    connection: Connection,
    state: Arc<Mutex<State>>,
}

impl StandInPortal {
    /// Connects to the bus at `address` (e.g. `unix:path=/tmp/x/bus`), serves the
    /// interface at [`PORTAL_PATH`] and takes the name [`PORTAL_NAME`].
    pub async fn start(address: &str) -> StandInPortal {
        let state = Arc::new(Mutex::new(State::default()));
        let iface = GlobalShortcutsIface {
            state: state.clone(),
        };
        let connection = zbus::connection::Builder::address(address)
            .expect("a D-Bus address for the stand-in portal")
            .serve_at(PORTAL_PATH, iface)
            .expect("serve GlobalShortcuts")
            .name(PORTAL_NAME)
            .expect("the portal's bus name")
            .build()
            .await
            .expect("the stand-in portal on the bus (is the name taken?)");
        StandInPortal { connection, state }
    }

    /// Every shortcut of every BindShortcuts call so far, in order: (shortcut id,
    /// description, preferred trigger or "").
    pub fn bound(&self) -> Vec<(String, String, String)> {
        lock(&self.state).bound.clone()
    }

    /// Waits up to `within` for the first BindShortcuts and returns [`Self::bound`];
    /// panics when none came.
    pub async fn wait_bound(&self, within: Duration) -> Vec<(String, String, String)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let bound = self.bound();
            if !bound.is_empty() {
                return bound;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the app bound no shortcut through the portal within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last session created, still open (panics naming `what` when there is none).
    fn session(&self, what: &str) -> SessionRef {
        lock(&self.state)
            .session
            .clone()
            .unwrap_or_else(|| panic!("{what}: the app has no open portal session"))
    }

    /// Emits GlobalShortcuts' signal `member` to `owner`.
    async fn emit<B>(&self, owner: &str, member: &str, body: &B)
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let iface = "org.freedesktop.portal.GlobalShortcuts";
        self.connection
            .emit_signal(Some(owner), PORTAL_PATH, iface, member, body)
            .await
            .unwrap_or_else(|e| panic!("emit {member}: {e}"));
    }

    /// Emits `Activated` (`down`) or `Deactivated` for shortcut `id` on the last created
    /// session, to its owner, stamped now (ms since the epoch).
    pub async fn press(&self, id: &str, down: bool) {
        let session = self.session("press");
        let member = if down { "Activated" } else { "Deactivated" };
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let body = (session.path, id, ms, HashMap::<&str, Value<'_>>::new());
        self.emit(&session.owner, member, &body).await;
    }

    /// Sets the trigger description of bound shortcut `id` (as the user would in the
    /// desktop's settings) and emits `ShortcutsChanged` with all bound shortcuts on the
    /// last session.
    pub async fn change_trigger(&self, id: &str, trigger: &str) {
        let session = self.session("change_trigger");
        let all: Vec<ShortcutEntry> = {
            let mut state = lock(&self.state);
            let shortcut = state.shortcuts.iter_mut().find(|(known, _, _)| known == id);
            let shortcut = shortcut.unwrap_or_else(|| panic!("change_trigger: {id} is not bound"));
            shortcut.2 = trigger.to_owned();
            state
                .shortcuts
                .iter()
                .map(|(id, d, t)| entry(id, d, t))
                .collect()
        };
        self.emit(&session.owner, "ShortcutsChanged", &(session.path, all))
            .await;
    }

    /// The desktop closes the last session: its object goes and `Closed` is emitted.
    pub async fn close_session(&self) {
        let session = self.session("close_session");
        {
            let mut state = lock(&self.state);
            state.live.retain(|p| *p != session.path);
            state.session = None;
        }
        let server = self.connection.object_server();
        let _ = server.remove::<SessionIface, _>(&session.path).await;
        let owner =
            BusName::try_from(session.owner.as_str()).expect("the session owner's bus name");
        let emitter = SignalEmitter::new(&self.connection, &session.path)
            .expect("the session path")
            .set_destination(owner);
        SessionIface::closed(&emitter, HashMap::new())
            .await
            .unwrap_or_else(|e| panic!("emit Closed: {e}"));
    }

    /// Number of ConfigureShortcuts calls.
    pub fn configured(&self) -> usize {
        lock(&self.state).configured
    }

    /// Number of sessions the app closed (Session.Close).
    pub fn sessions_closed(&self) -> usize {
        lock(&self.state).sessions_closed
    }

    /// Releases the well-known name and drops off the bus (the portal "goes away").
    pub async fn stop(self) {
        let _ = self.connection.release_name(PORTAL_NAME).await;
        let _ = self.connection.close().await;
    }
}
