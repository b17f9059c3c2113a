//! # roger-server: signaling, auth, channels, floor control and SFU forwarding
//!
//! Map of the crate:
//! - [`config`]: the TOML configuration and its defaults; the dev JWT secret.
//! - [`auth`]: HS256 tokens (`sub`, `name`, `channels`, `exp`), issue and verify.
//! - [`hub`]: sessions, channels and floors behind one lock; notifications; timers
//!   (session grace, floor max talk time and grace); draining.
//! - [`floor`]: the per-channel floor state machine (pure, virtual time).
//! - [`media`]: the server's answering PeerConnections, downlink slots and the
//!   per-channel router that forwards only the floor holder's packets.
//! - [`rewrite`]: SSRC/sequence/timestamp rewriting into one stream per listener (pure).
//! - [`ws`]: one WebSocket connection: limits, decoding, dispatch.
//! - [`limits`]: the per-connection token bucket.
//!
//! [`serve`] wires it into an axum router: `GET /ws` (signaling), `GET /healthz`,
//! `GET /metrics` (Prometheus text).

pub mod auth;
pub mod config;
pub mod floor;
pub mod hub;
pub mod limits;
pub mod media;
pub mod rewrite;
pub mod tls;
pub mod ws;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use hub::Hub;
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tls::PeerAddr;

/// How long clients are asked to wait before reconnecting after a drain.
pub const DRAIN_RECONNECT_AFTER: Duration = Duration::from_millis(500);

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    metrics: Option<PrometheusHandle>,
}

/// Installs the Prometheus recorder (once per process) and returns its handle.
/// Histograms are summarised by the handle's upkeep, which [`serve`] runs every few
/// seconds (otherwise samples pile up between scrapes).
pub fn install_metrics() -> Option<PrometheusHandle> {
    use metrics_exporter_prometheus::Matcher;
    // Forwarding delay in seconds: 100 us .. 100 ms, as a Prometheus histogram.
    let forward_buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    ];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("roger_forward_delay_seconds".into()),
            &forward_buckets,
        )
        .and_then(|b| b.install_recorder())
        .map_err(|e| tracing::warn!("metrics recorder not installed: {e}"))
        .ok()
}

/// Serves `hub` on `listener` (a plain [`tokio::net::TcpListener`] or a
/// [`tls::TlsListener`]) until `shutdown` resolves, then drains: clients are told
/// (`server_draining`), floors are revoked, sockets closed, media closed.
pub async fn serve<L>(
    listener: L,
    hub: Arc<Hub>,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
    for<'a> PeerAddr: Connected<IncomingStream<'a, L>>,
{
    let upkeep_handle = metrics.clone();
    let state = AppState {
        hub: hub.clone(),
        metrics,
    };
    let app = Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    let timers = tokio::spawn(hub.clone().run_timers());
    let health = tokio::spawn(hub.clone().run_health(Duration::from_secs(2)));
    let upkeep = upkeep_handle.map(|handle| {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                handle.run_upkeep();
            }
        })
    });
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_hub = hub.clone();
    let graceful = async move {
        shutdown.await;
        drain_hub.drain(DRAIN_RECONNECT_AFTER);
        let _ = drained_tx.send(());
    };
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<PeerAddr>(),
    )
    .with_graceful_shutdown(graceful);
    // Open sockets are closed by the drain; don't let a stuck one hold shutdown forever.
    let result = tokio::select! {
        r = server => r,
        _ = async {
            let _ = drained_rx.await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        } => Ok(()),
    };
    hub.close_all_media().await;
    timers.abort();
    health.abort();
    if let Some(u) = upkeep {
        u.abort();
    }
    result
}

async fn ws_upgrade(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
) -> impl IntoResponse {
    // Frames up to 4x the protocol limit are read and answered with MESSAGE_TOO_LARGE;
    // anything bigger closes the socket (1009) before it is buffered.
    let hard_limit = state.hub.config().limits.max_message_bytes * 4;
    ws.max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| ws::serve_socket(state.hub, socket, peer))
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    match &state.metrics {
        Some(h) => {
            metrics::gauge!("roger_sessions").set(state.hub.session_count() as f64);
            h.render()
        }
        None => String::from("# metrics recorder not installed\n"),
    }
}
