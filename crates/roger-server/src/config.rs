//! Server configuration: a TOML file, every field optional, with defaults that run a
//! useful dev server with no file at all.

use roger_protocol::{ChannelId, ChannelInfo};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration. See `docs/server.md` for an annotated example.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP/WebSocket listen address (`/ws`, `/healthz`, `/metrics`).
    pub listen: SocketAddr,
    /// HS256 secret for tokens. When empty, `ROGER_JWT_SECRET` is used, else a dev secret
    /// generated and kept in the data dir. At least 32 bytes.
    pub jwt_secret: String,
    /// When set, a token must carry this `iss` (and `roger-server token` writes it).
    pub jwt_issuer: String,
    /// When set, a token must carry this `aud` (and `roger-server token` writes it).
    pub jwt_audience: String,
    /// Session timing.
    pub session: SessionConfig,
    /// Floor timing.
    pub floor: FloorConfig,
    /// Abuse limits.
    pub limits: LimitsConfig,
    /// Caps and deadlines before authentication.
    pub admission: AdmissionConfig,
    /// Where `/metrics` is served and who may read it.
    pub metrics: MetricsConfig,
    /// Media (UDP) addresses.
    pub media: MediaConfig,
    /// TURN relay handed to clients (time-limited credentials, TURN REST convention).
    pub turn: TurnConfig,
    /// `wss://`: certificate and key. Without them the server speaks plain `ws://`
    /// (fine on loopback or behind a TLS-terminating reverse proxy).
    pub tls: TlsConfig,
    /// Channel history: what is kept of each transmission, and for how long.
    pub history: HistoryConfig,
    /// Cluster mode (several nodes sharing state in Redis). Off when `redis` is empty.
    pub cluster: ClusterConfig,
    /// Channels. Defaults to `general` and `echo`.
    pub channels: Vec<ChannelConfig>,
}

/// Cluster mode: this node's identity and how it reaches Redis and the other nodes.
/// See `docs/cluster.md`. Every node needs the same JWT secret and channels.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]`. Empty: a single server, all in memory.
    pub redis: String,
    /// This node's id, unique in the cluster (default: the listen address).
    pub node_id: String,
    /// The URL clients use to reach this node, `ws(s)://HOST:PORT/ws` (default: built
    /// from the listen address).
    pub public_url: String,
    /// UDP address for node-to-node media (default: the listen IP, any free port).
    /// Other nodes must reach it.
    pub relay_bind: String,
    /// Shared secret that authenticates node-to-node media. When empty,
    /// `ROGER_CLUSTER_SECRET`, else one derived from the JWT secret (which every node
    /// shares anyway).
    pub secret: String,
}

impl ClusterConfig {
    /// Whether cluster mode is on.
    pub fn enabled(&self) -> bool {
        !self.redis.is_empty()
    }
}

/// Channel history (a privacy setting: recorded speech stays on the server, in the data
/// dir, until it is evicted). Each channel can override these, or turn recording off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Keep at most this many transmissions per channel (the oldest go first).
    pub keep_last: usize,
    /// Keep a transmission at most this long: `30s`, `15m`, `24h`, `7d`.
    pub max_age: String,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            keep_last: 50,
            max_age: "24h".into(),
        }
    }
}

/// Session timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// How long a session survives after its socket drops, for `resume`.
    pub grace_ms: u64,
    /// How often clients ping; a socket silent for 3 intervals is closed.
    pub ping_interval_ms: u64,
}

/// Floor timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FloorConfig {
    /// Longest grant; the floor is revoked after it.
    pub max_talk_ms: u64,
    /// How long a holder whose connection is lost keeps the floor.
    pub grace_ms: u64,
    /// Test hook: answer every floor request this much later (a slow server or path).
    /// Tests use it to check that audio captured before the grant is not lost. Keep 0
    /// in production.
    pub test_grant_delay_ms: u64,
}

/// Abuse limits; each refusal has its own error code.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest text frame answered normally; larger gets `MESSAGE_TOO_LARGE`.
    pub max_message_bytes: usize,
    /// Sustained requests per second per connection.
    pub requests_per_second: u32,
    /// Burst allowance above the sustained rate.
    pub request_burst: u32,
    /// Sessions (connected or in grace) before `SERVER_FULL`.
    pub max_sessions: usize,
    /// Sustained `join`, `leave` and `floor_request` per second per connection: each is
    /// broadcast to every member of a channel, so they have their own, lower limit.
    /// (`floor_release` is never limited: refusing it would keep a floor held.)
    pub fanout_per_second: u32,
    /// Burst allowance for those.
    pub fanout_burst: u32,
}

/// Caps and deadlines for connections, before and after authentication. Every cap is
/// lowered at start to fit the process's open-file limit (logged).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// A connection must finish its TLS handshake, and each HTTP request its headers,
    /// within this long (an idle keep-alive connection is closed after it too).
    pub header_timeout_ms: u64,
    /// After the WebSocket upgrade, `hello` or `resume` must succeed within this long.
    /// Pings and other messages do not extend it.
    pub hello_timeout_ms: u64,
    /// Open connections in total (signaling and HTTP).
    pub max_connections: usize,
    /// Open connections from one source address (an office behind one NAT counts once).
    pub max_connections_per_address: usize,
    /// Connections not yet authenticated (handshake, HTTP, WebSocket before hello).
    pub max_pending: usize,
    /// Connections not yet authenticated from one source address.
    pub max_pending_per_address: usize,
}

impl AdmissionConfig {
    /// The caps.
    pub fn caps(&self) -> crate::admission::Caps {
        crate::admission::Caps {
            connections: self.max_connections,
            connections_per_address: self.max_connections_per_address,
            pending: self.max_pending,
            pending_per_address: self.max_pending_per_address,
        }
    }
    /// Sets the caps (after fitting them to the descriptor limit).
    pub fn set_caps(&mut self, caps: crate::admission::Caps) {
        self.max_connections = caps.connections;
        self.max_connections_per_address = caps.connections_per_address;
        self.max_pending = caps.pending;
        self.max_pending_per_address = caps.pending_per_address;
    }
    /// `header_timeout_ms`.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
    /// `hello_timeout_ms`.
    pub fn hello_timeout(&self) -> Duration {
        Duration::from_millis(self.hello_timeout_ms)
    }
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            header_timeout_ms: 10_000,
            hello_timeout_ms: 5_000,
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            max_pending: 1_000,
            max_pending_per_address: 256,
        }
    }
}

/// `/metrics`: on the signaling address (default), or on its own address, and optionally
/// behind a bearer token. A server terminating TLS on a public address should use one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` here (plain HTTP, meant for a private address) and not on `listen`.
    pub listen: Option<SocketAddr>,
    /// When set, `/metrics` wants `Authorization: Bearer <token>`.
    pub bearer_token: String,
}

impl MetricsConfig {
    /// The token, when set.
    pub fn bearer_token(&self) -> Option<std::sync::Arc<str>> {
        (!self.bearer_token.is_empty()).then(|| self.bearer_token.as_str().into())
    }
}

/// Where media flows.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// UDP bind addresses for transports. `0.0.0.0:0` binds every non-loopback interface
    /// on an ephemeral port; a specific IP binds just that one.
    pub bind: Vec<String>,
    /// Addresses to announce in ICE candidates instead of the bound ones (a server behind
    /// NAT or in a container announces its public address), like mediasoup's
    /// `announcedAddress`.
    pub announced_ips: Vec<String>,
    /// Packets per second one session may send (Opus sends 50, or 100 at 10 ms
    /// frames); more are dropped before they reach any listener, and counted.
    pub max_packets_per_second: u32,
    /// Bytes of payload per second one session may send (40000 = 320 kb/s, far above
    /// any voice bitrate); more are dropped and counted.
    pub max_bytes_per_second: u32,
    /// `"40000-40999"`: transports bind ports of this range (two per session per bind
    /// address), so a firewall needs one rule. Empty: ephemeral ports.
    pub port_range: String,
}

/// A TURN server sharing a secret with this server (coturn `--use-auth-secret
/// --static-auth-secret=...`). Empty `urls` = no TURN.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// `turn:host:3478?transport=udp` (and/or `turns:` / `?transport=tcp`).
    pub urls: Vec<String>,
    /// The shared secret.
    pub secret: String,
    /// Credential lifetime in seconds.
    pub ttl_s: u64,
}

/// TLS certificate chain and private key, PEM files.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (leaf first).
    pub cert: Option<PathBuf>,
    /// Private key.
    pub key: Option<PathBuf>,
}

/// One channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Its name.
    pub id: String,
    /// Shown to users.
    #[serde(default)]
    pub description: String,
    /// Whether transmissions in this channel are recorded into its history. `false`
    /// stores nothing (and nothing can be replayed or downloaded).
    #[serde(default = "yes")]
    pub record: bool,
    /// Overrides `history.keep_last` for this channel.
    #[serde(default)]
    pub keep_last: Option<usize>,
    /// Overrides `history.max_age` for this channel.
    #[serde(default)]
    pub max_age: Option<String>,
}

fn yes() -> bool {
    true
}

impl ChannelConfig {
    /// A recorded channel with the default retention.
    pub fn new(id: &str, description: &str) -> ChannelConfig {
        ChannelConfig {
            id: id.into(),
            description: description.into(),
            record: true,
            keep_last: None,
            max_age: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7070".parse().expect("valid literal address"),
            jwt_secret: String::new(),
            jwt_issuer: String::new(),
            jwt_audience: String::new(),
            session: SessionConfig::default(),
            floor: FloorConfig::default(),
            limits: LimitsConfig::default(),
            admission: AdmissionConfig::default(),
            metrics: MetricsConfig::default(),
            media: MediaConfig::default(),
            turn: TurnConfig::default(),
            tls: TlsConfig::default(),
            history: HistoryConfig::default(),
            cluster: ClusterConfig::default(),
            channels: vec![
                ChannelConfig::new("general", "Everyone"),
                ChannelConfig::new("echo", "Radio check: the echo bot plays you back"),
            ],
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            grace_ms: 30_000,
            ping_interval_ms: 1_000,
        }
    }
}

impl Default for FloorConfig {
    fn default() -> Self {
        FloorConfig {
            max_talk_ms: 60_000,
            grace_ms: 5_000,
            test_grant_delay_ms: 0,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: roger_protocol::DEFAULT_MAX_MESSAGE_BYTES,
            requests_per_second: 20,
            request_burst: 40,
            max_sessions: 2_000,
            fanout_per_second: 5,
            fanout_burst: 20,
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind: vec!["0.0.0.0:0".into()],
            announced_ips: vec![],
            max_packets_per_second: 200,
            max_bytes_per_second: 40_000,
            port_range: String::new(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// The values do not make sense together.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that TOML types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.channels.is_empty() {
            return Err(ConfigError::Invalid(
                "at least one channel is needed".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.channels {
            if c.id.is_empty() || c.id.len() > 64 || !c.id.chars().all(is_channel_char) {
                return Err(ConfigError::Invalid(format!(
                    "channel id {:?}: use 1-64 characters of a-z, 0-9, '-', '_', '.'",
                    c.id
                )));
            }
            if !seen.insert(&c.id) {
                return Err(ConfigError::Invalid(format!("channel {:?} twice", c.id)));
            }
            self.retention(c)
                .map_err(|e| ConfigError::Invalid(format!("channel {:?}: {e}", c.id)))?;
        }
        crate::auth::parse_ttl(&self.history.max_age)
            .map_err(|e| ConfigError::Invalid(format!("history.max_age: {e}")))?;
        if self.session.ping_interval_ms < 100 {
            return Err(ConfigError::Invalid(
                "session.ping_interval_ms >= 100".into(),
            ));
        }
        if self.floor.max_talk_ms == 0
            || self.limits.requests_per_second == 0
            || self.limits.fanout_per_second == 0
        {
            return Err(ConfigError::Invalid(
                "floor.max_talk_ms, limits.requests_per_second and limits.fanout_per_second must be > 0".into(),
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid("tls needs both cert and key".into()));
        }
        if !self.turn.urls.is_empty() && self.turn.secret.is_empty() {
            return Err(ConfigError::Invalid("turn.urls needs turn.secret".into()));
        }
        if self.media.bind.is_empty() {
            return Err(ConfigError::Invalid("media.bind needs an address".into()));
        }
        if !self.media.port_range.is_empty() {
            crate::media::PortRange::parse(&self.media.port_range).map_err(ConfigError::Invalid)?;
        }
        if self.cluster.enabled() {
            let c = &self.cluster;
            if !c.redis.starts_with("redis://") {
                return Err(ConfigError::Invalid(
                    "cluster.redis must be a redis://HOST:PORT URL (TLS to Redis, rediss://, \
                     is not supported yet: reach it over a private network or a TLS tunnel)"
                        .into(),
                ));
            }
            if !(c.public_url.is_empty()
                || c.public_url.starts_with("ws://")
                || c.public_url.starts_with("wss://"))
            {
                return Err(ConfigError::Invalid(
                    "cluster.public_url must be a ws:// or wss:// URL".into(),
                ));
            }
            if !c.relay_bind.is_empty() && c.relay_bind.parse::<SocketAddr>().is_err() {
                return Err(ConfigError::Invalid(
                    "cluster.relay_bind must be IP:PORT".into(),
                ));
            }
        }
        let a = &self.admission;
        if a.header_timeout_ms == 0 || a.hello_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "admission.header_timeout_ms and admission.hello_timeout_ms must be > 0".into(),
            ));
        }
        if a.max_connections == 0
            || a.max_connections_per_address == 0
            || a.max_pending == 0
            || a.max_pending_per_address == 0
        {
            return Err(ConfigError::Invalid(
                "admission.max_* caps must be > 0".into(),
            ));
        }
        Ok(())
    }

    /// Channels as announced to clients.
    pub fn channel_infos(&self) -> Vec<ChannelInfo> {
        self.channels
            .iter()
            .map(|c| ChannelInfo {
                id: ChannelId(c.id.clone()),
                description: c.description.clone(),
            })
            .collect()
    }

    /// How long `channel`'s transmissions are kept, and how many (None: not recorded).
    pub fn retention(
        &self,
        channel: &ChannelConfig,
    ) -> Result<Option<crate::history::Retention>, String> {
        if !channel.record {
            return Ok(None);
        }
        let max_age = channel.max_age.as_deref().unwrap_or(&self.history.max_age);
        Ok(Some(crate::history::Retention {
            keep_last: channel.keep_last.unwrap_or(self.history.keep_last),
            max_age: crate::auth::parse_ttl(max_age).map_err(|e| format!("max_age: {e}"))?,
        }))
    }

    /// The retention of every channel that records (a channel whose settings do not
    /// parse records nothing: [`Config::validate`] refuses such a file first).
    pub fn retentions(&self) -> std::collections::HashMap<ChannelId, crate::history::Retention> {
        self.channels
            .iter()
            .filter_map(|c| {
                let r = self.retention(c).ok().flatten()?;
                Some((ChannelId(c.id.clone()), r))
            })
            .collect()
    }

    /// Session grace as a duration.
    pub fn session_grace(&self) -> Duration {
        Duration::from_millis(self.session.grace_ms)
    }

    /// A socket silent this long is considered dead.
    pub fn socket_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.session.ping_interval_ms * 3)
    }
}

fn is_channel_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
}

/// Where the server keeps its state (the dev secret) when `--data-dir` is not given.
pub fn default_data_dir() -> PathBuf {
    dirs::data_local_dir()
        .map(|d| d.join("roger-server"))
        .unwrap_or_else(|| PathBuf::from("roger-server-data"))
}

/// The JWT secret: from the config, else `ROGER_JWT_SECRET`, else `DATA_DIR/jwt-secret`
/// (created with a random value on first use). Returns the secret and where it came from.
pub fn resolve_secret(config: &Config, data_dir: &Path) -> std::io::Result<(Vec<u8>, String)> {
    if !config.jwt_secret.is_empty() {
        return Ok((config.jwt_secret.as_bytes().to_vec(), "config".into()));
    }
    if let Ok(s) = std::env::var("ROGER_JWT_SECRET") {
        if !s.is_empty() {
            return Ok((s.into_bytes(), "ROGER_JWT_SECRET".into()));
        }
    }
    let path = data_dir.join("jwt-secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => {
            return Ok((s.trim().as_bytes().to_vec(), path.display().to_string()))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    let secret = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    write_private(&path, &secret)?;
    Ok((
        secret.into_bytes(),
        format!("{} (generated)", path.display()),
    ))
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_no_file_and_has_general_and_echo() {
        let c = Config::default();
        c.validate().unwrap();
        let ids: Vec<_> = c.channels.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["general", "echo"]);
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let c: Config = toml::from_str(
            "listen = \"127.0.0.1:9000\"\n[floor]\nmax_talk_ms = 1000\n[[channels]]\nid = \"ops\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.floor.max_talk_ms, 1000);
        assert_eq!(c.floor.grace_ms, 5000);
        assert_eq!(c.channels.len(), 1);
    }

    #[test]
    fn typos_and_bad_channel_names_are_refused() {
        assert!(toml::from_str::<Config>("listn = \"x\"").is_err());
        let mut c = Config::default();
        c.channels[0].id = "Bad Name".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn the_dev_secret_is_generated_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("roger-secret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = Config::default();
        let (a, from_a) = resolve_secret(&c, &dir).unwrap();
        let (b, from_b) = resolve_secret(&c, &dir).unwrap();
        assert_eq!(a, b);
        assert!(from_a.contains("generated"));
        assert!(!from_b.contains("generated"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
