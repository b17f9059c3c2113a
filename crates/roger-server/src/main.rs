//! `roger-server`: the Roger signaling and media server.
//!
//! ```text
//! roger-server [--listen ADDR:PORT] [--config FILE] [--data-dir DIR]
//!              [--cluster redis://HOST:PORT --node-id ID --public-url ws(s)://HOST:PORT/ws
//!               [--relay-bind IP:PORT]]
//! roger-server [--config FILE] [--data-dir DIR] token --user U --channels C1,C2 --ttl 1h
//!              [--count N]
//! roger-server [--data-dir DIR] revoke --user U
//! ```

use anyhow::Context;
use clap::{Parser, Subcommand};
use roger_server::auth::{parse_ttl, Authenticator};
use roger_server::config::{default_data_dir, resolve_secret, Config};
use roger_server::hub::Hub;
use roger_server::revoke::Revocations;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "roger-server", version, about = "Roger push-to-talk server")]
struct Cli {
    /// Address for HTTP and WebSocket signaling (overrides the config file).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// TOML configuration file (optional: defaults run a dev server).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the server keeps state such as the generated dev secret.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// UDP media bind address (repeatable; overrides the config file's media.bind).
    #[arg(long = "media-bind")]
    media_bind: Vec<String>,
    /// Cluster mode: the Redis every node shares (overrides `[cluster] redis`).
    #[arg(long, value_name = "redis://HOST:PORT")]
    cluster: Option<String>,
    /// Cluster mode: this node's unique id (default: the listen address).
    #[arg(long)]
    node_id: Option<String>,
    /// Cluster mode: the URL clients reach this node at (default: from --listen).
    #[arg(long, value_name = "ws(s)://HOST:PORT/ws")]
    public_url: Option<String>,
    /// Cluster mode: UDP address for media from other nodes (default: listen IP, any
    /// port).
    #[arg(long, value_name = "IP:PORT")]
    relay_bind: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a token signed with this server's secret (and nothing else).
    Token {
        /// User id (`sub`).
        #[arg(long)]
        user: String,
        /// Display name (defaults to the user id).
        #[arg(long)]
        name: Option<String>,
        /// Comma-separated channels the token allows (`*` for all).
        #[arg(long, value_delimiter = ',')]
        channels: Vec<String>,
        /// Lifetime: 30s, 15m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: std::time::Duration,
        /// Print this many tokens, one per line, for users `USER-0`, `USER-1`, ...
        /// (load tests: each client needs its own user, as a user has one session).
        #[arg(long)]
        count: Option<usize>,
    },
    /// Void every token issued to a user until now and end their sessions (a running
    /// server on the same data dir acts on it within a second; kept across restarts).
    /// The user signs in again with a token issued after this.
    Revoke {
        /// User id (`sub`).
        #[arg(long)]
        user: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if !cli.media_bind.is_empty() {
        config.media.bind = cli.media_bind.clone();
    }
    if let Some(r) = &cli.cluster {
        config.cluster.redis = r.clone();
    }
    if let Some(n) = &cli.node_id {
        config.cluster.node_id = n.clone();
    }
    if let Some(u) = &cli.public_url {
        config.cluster.public_url = u.clone();
    }
    if let Some(b) = &cli.relay_bind {
        config.cluster.relay_bind = b.clone();
    }
    config.validate()?;
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    let revoked_path = data_dir.join(roger_server::revoke::FILE);
    if let Some(Command::Revoke { user }) = &cli.command {
        let mut list = Revocations::load(&revoked_path)?;
        list.revoke(user, roger_server::auth::unix_now());
        list.save(&revoked_path)?;
        eprintln!(
            "revoked {user}'s tokens issued until now (in {})",
            revoked_path.display()
        );
        return Ok(());
    }
    let (secret, secret_from) = resolve_secret(&config, &data_dir).with_context(|| {
        format!(
            "cannot read or create the JWT secret in {}",
            data_dir.display()
        )
    })?;
    if let Err(why) = roger_server::auth::check_secret(&secret) {
        anyhow::bail!("{why}; it came from {secret_from}");
    }
    let pin = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let (issuer, audience) = (pin(&config.jwt_issuer), pin(&config.jwt_audience));
    let auth = Authenticator::pinned(&secret, issuer.as_deref(), audience.as_deref());

    if let Some(Command::Token {
        user,
        name,
        channels,
        ttl,
        count,
    }) = cli.command
    {
        if channels.is_empty() {
            anyhow::bail!("--channels needs at least one channel (or '*')");
        }
        match count {
            None => {
                let name = name.unwrap_or_else(|| user.clone());
                println!("{}", auth.issue(&user, &name, &channels, ttl));
            }
            Some(n) => {
                use std::io::Write;
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                for i in 0..n {
                    let user = format!("{user}-{i}");
                    let name = name.as_ref().map_or(user.clone(), |n| format!("{n} {i}"));
                    writeln!(out, "{}", auth.issue(&user, &name, &channels, ttl))?;
                }
                out.flush()?;
            }
        }
        return Ok(());
    }

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,webrtc=warn,rtc=warn,rtc_dtls=error,rtc_ice=error".into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    // Every socket is a descriptor: take what the system allows, and fit the caps to it.
    match roger_server::admission::raise_fd_limit() {
        Some(limit) => {
            let (caps, lowered) =
                roger_server::admission::fit_to_fd_limit(config.admission.caps(), limit);
            if lowered {
                tracing::warn!(
                    fd_limit = limit,
                    ?caps,
                    "admission caps lowered to fit the open-file limit (raise it with ulimit -n or LimitNOFILE=)"
                );
                config.admission.set_caps(caps);
            } else {
                tracing::info!(fd_limit = limit, "open-file limit");
            }
        }
        None => tracing::warn!("the open-file limit could not be read or raised"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let revoked = Revocations::load(&revoked_path)
        .context("the revocation list cannot be used; fix or remove it")?;
    runtime.block_on(async move {
        let metrics = roger_server::install_metrics();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => Some(roger_server::tls::CertStore::load(cert, key)?),
            _ => None,
        };
        let metrics_listener = match config.metrics.listen {
            Some(at) => Some(
                tokio::net::TcpListener::bind(at)
                    .await
                    .with_context(|| format!("cannot listen for metrics on {at}"))?,
            ),
            None => None,
        };
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        tracing::info!(%addr, secret = %secret_from, channels = config.channels.len(), "roger-server listening on {scheme}://{addr}/ws");
        // Always handled: SIGHUP's default action would end the server.
        tokio::spawn(reload_on_hangup(tls.clone()));
        // One process: SQLite in the data dir. A cluster: Redis, which every node reads.
        let store: Box<dyn roger_server::history::HistoryStore> = if config.cluster.enabled() {
            Box::new(roger_server::history::RedisStore::open(&config.cluster.redis)?)
        } else {
            let history_path = data_dir.join(roger_server::history::store::FILE);
            Box::new(roger_server::history::SqliteStore::open(&history_path).with_context(
                || format!("cannot open the history database {}", history_path.display()),
            )?)
        };
        let config = Arc::new(config);
        let history = Arc::new(roger_server::history::History::start(
            store,
            config.retentions(),
        ));
        let cluster_settings = config
            .cluster
            .enabled()
            .then(|| cluster_settings(&config, addr, scheme, &secret));
        let hub = Hub::with_history(config, auth, history.clone());
        hub.set_revocations(revoked);
        let _cluster = match cluster_settings {
            Some(s) => {
                let s = s?;
                tracing::info!(node = %s.node_id, url = %s.public_url, "cluster mode");
                Some(roger_server::cluster::Cluster::start(s, &hub).await?)
            }
            None => None,
        };
        let watched = hub.clone();
        tokio::spawn(roger_server::revoke::watch(
            revoked_path,
            std::time::Duration::from_secs(1),
            move |list| watched.set_revocations(list),
        ));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if let Some(l) = metrics_listener {
            tracing::info!(addr = %l.local_addr()?, "metrics on their own address");
            let mut stop = stop_rx.clone();
            tokio::spawn(roger_server::serve_metrics(l, hub.clone(), metrics.clone(), async move {
                let _ = stop.wait_for(|s| *s).await;
            }));
        }
        roger_server::serve(listener, tls, hub, metrics, shutdown_signal()).await?;
        let _ = stop_tx.send(true);
        if let Some(c) = &_cluster {
            // What the drain queued for Redis (leaving the registry) is done before exit.
            c.flush(std::time::Duration::from_secs(2)).await;
        }
        // The drain ended every floor: what was being said is stored before exit.
        history.stop();
        tracing::info!("roger-server stopped");
        Ok(())
    })
}

/// This node's cluster settings, with defaults from the listen address.
fn cluster_settings(
    config: &Config,
    addr: SocketAddr,
    scheme: &str,
    jwt_secret: &[u8],
) -> anyhow::Result<roger_server::cluster::Settings> {
    let c = &config.cluster;
    let relay_bind = if c.relay_bind.is_empty() {
        if addr.ip().is_unspecified() {
            // The other nodes would be told 0.0.0.0: they could not send to it.
            anyhow::bail!(
                "listening on {addr}: give --relay-bind (or [cluster] relay_bind) an address \
                 the other nodes reach, e.g. this node's private IP"
            );
        }
        SocketAddr::new(addr.ip(), 0)
    } else {
        c.relay_bind.parse().context("cluster relay_bind")?
    };
    // The relay secret: configured, else from the environment, else derived from the
    // JWT secret, which every node shares anyway (a token must be valid on any node).
    let secret = if !c.secret.is_empty() {
        c.secret.as_bytes().to_vec()
    } else if let Some(s) = std::env::var("ROGER_CLUSTER_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
    {
        s.into_bytes()
    } else {
        use hmac::Mac;
        let mut m =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(jwt_secret).expect("HMAC takes any key");
        m.update(b"roger cluster relay v1");
        m.finalize().into_bytes().to_vec()
    };
    Ok(roger_server::cluster::Settings {
        redis: c.redis.clone(),
        node_id: if c.node_id.is_empty() {
            addr.to_string()
        } else {
            c.node_id.clone()
        },
        public_url: if c.public_url.is_empty() {
            format!("{scheme}://{addr}/ws")
        } else {
            c.public_url.clone()
        },
        relay_bind,
        secret,
        session_grace: config.session_grace(),
        floor_grace: std::time::Duration::from_millis(config.floor.grace_ms),
    })
}

/// SIGHUP reloads the TLS certificate and key: new handshakes use them, sessions already
/// up are not touched. A bad file keeps the old certificate (and says so).
async fn reload_on_hangup(store: Option<Arc<roger_server::tls::CertStore>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("no SIGHUP handler: the certificate will not be reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            let Some(store) = &store else {
                tracing::info!("SIGHUP: no TLS certificate configured, nothing to reload");
                continue;
            };
            match store.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!("SIGHUP: certificate not reloaded, the old one stays: {e}")
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = store;
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested: draining");
}
