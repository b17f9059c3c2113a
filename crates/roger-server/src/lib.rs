//! # roger-server: signaling, auth, channels, floor control and SFU forwarding
//!
//! Map of the crate:
//! - [`config`]: the TOML configuration and its defaults; the dev JWT secret.
//! - [`auth`]: HS256 tokens (`sub`, `name`, `channels`, `exp`), issue and verify.
//! - [`hub`]: sessions, channels and floors behind one lock; notifications; timers
//!   (session grace, floor max talk time and grace); draining.
//! - [`floor`]: the per-channel floor state machine (pure, virtual time).
//! - [`history`]: recording transmissions as they are forwarded; the store; Ogg Opus.
//! - [`media`]: the server's answering PeerConnections, downlink slots and the
//!   per-channel router that forwards only the floor holder's packets.
//! - [`rewrite`]: SSRC/sequence/timestamp rewriting into one stream per listener (pure).
//! - [`ws`]: one WebSocket connection: limits, decoding, dispatch.
//! - [`limits`]: the per-connection token bucket.
//! - [`admission`]: caps on connections before and after authentication.
//! - [`listen`]: the accept loop, TLS, HTTP with a header-read timeout.
//! - [`tls`]: certificates, reloadable.
//! - [`sync`]: the one lock-poison policy.
//!
//! [`serve`] wires it into an axum router: `GET /ws` (signaling), `GET /healthz`,
//! `GET /history/<id>.ogg` (a recorded transmission, for `Authorization: Bearer <token>`),
//! `GET /metrics` (Prometheus text; on its own address or behind a bearer token when
//! configured, see [`serve_metrics`]).

pub mod admission;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod floor;
pub mod history;
pub mod hub;
pub mod limits;
pub mod listen;
pub mod media;
pub mod revoke;
pub mod rewrite;
pub mod sync;
pub mod tls;
pub mod ws;

use admission::Admission;
use axum::extract::{Extension, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hub::Hub;
use listen::{ConnInfo, Endpoint};
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// How long clients are asked to wait before reconnecting after a drain.
pub const DRAIN_RECONNECT_AFTER: Duration = Duration::from_millis(500);

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    metrics: Option<PrometheusHandle>,
    /// When set, `/metrics` wants `Authorization: Bearer <this>`.
    metrics_token: Option<Arc<str>>,
}

/// `GET /healthz`: `ok`, or `degraded` with the reason while this cluster node cannot
/// reach Redis (it still serves its own sessions, so a load balancer should keep it).
async fn healthz(State(state): State<AppState>) -> String {
    if state.hub.cluster_degraded() {
        "degraded: redis unreachable\n".to_owned()
    } else {
        "ok\n".to_owned()
    }
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
        .and_then(|b| {
            // Redis round trips (cluster mode): 100 us .. 250 ms.
            let redis_buckets = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25,
            ];
            b.set_buckets_for_metric(Matcher::Prefix("roger_redis_".into()), &redis_buckets)
        })
        .and_then(|b| b.install_recorder())
        .map_err(|e| tracing::warn!("metrics recorder not installed: {e}"))
        .ok()
}

/// Serves `hub` on `listener` (`wss://` when `tls` is given) until `shutdown` resolves,
/// then drains: clients are told (`server_draining`), floors are revoked, sockets closed,
/// media closed. `/metrics` is on this listener unless the config gives it its own
/// address (`metrics.listen`, served by [`serve_metrics`]).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<tls::CertStore>>,
    hub: Arc<Hub>,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = hub.config().clone();
    let upkeep_handle = metrics.clone();
    let state = AppState {
        hub: hub.clone(),
        metrics,
        metrics_token: config.metrics.bearer_token(),
    };
    let mut app = Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/history/{file}", get(history_ogg))
        .route("/healthz", get(healthz));
    if config.metrics.listen.is_none() {
        app = app.route("/metrics", get(metrics_text));
    }
    let door = Admission::new(config.admission.caps());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let accept = tokio::spawn(listen::accept_loop(
        Endpoint {
            listener,
            tls,
            router: app.with_state(state),
            door: door.clone(),
            header_timeout: config.admission.header_timeout(),
        },
        stop_rx,
    ));
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
    shutdown.await;
    hub.drain(DRAIN_RECONNECT_AFTER);
    let _ = stop_tx.send(true);
    // The drain closes every socket; don't let a stuck one hold shutdown for long.
    let deadline = Instant::now() + Duration::from_secs(3);
    while door.counts().0 > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = accept.await;
    hub.close_all_media().await;
    timers.abort();
    health.abort();
    if let Some(u) = upkeep {
        u.abort();
    }
    Ok(())
}

/// Serves `/metrics` alone on `listener` (plain HTTP, for a private address) until
/// `shutdown` resolves. With a bearer token in the config it is required here too.
pub async fn serve_metrics(
    listener: TcpListener,
    hub: Arc<Hub>,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let config = hub.config().clone();
    let state = AppState {
        metrics_token: config.metrics.bearer_token(),
        hub,
        metrics,
    };
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .with_state(state);
    // A scraper or two: small caps, the same header timeout.
    let door = Admission::new(admission::Caps {
        connections: 64,
        connections_per_address: 16,
        pending: 64,
        pending_per_address: 16,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let accept = tokio::spawn(listen::accept_loop(
        Endpoint {
            listener,
            tls: None,
            router: app,
            door,
            header_timeout: config.admission.header_timeout(),
        },
        stop_rx,
    ));
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = accept.await;
}

async fn ws_upgrade(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    Extension(info): Extension<ConnInfo>,
) -> impl IntoResponse {
    // Frames up to 4x the protocol limit are read and answered with MESSAGE_TOO_LARGE;
    // anything bigger closes the socket (1009) before it is buffered.
    let hard_limit = state.hub.config().limits.max_message_bytes * 4;
    ws.max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| ws::serve_socket(state.hub, socket, info))
}

/// `GET /history/<id>.ogg`: one transmission as an Ogg Opus file, for the bearer of a
/// token that allows its channel. Refusals are the protocol's error bodies, as JSON.
async fn history_ogg(
    State(state): State<AppState>,
    axum::extract::Path(file): axum::extract::Path<String>,
    headers: HeaderMap,
) -> axum::response::Response {
    use roger_protocol::{ErrorBody, ErrorCode};
    let refuse = |status: StatusCode, e: ErrorBody| {
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&e).unwrap_or_default(),
        )
            .into_response()
    };
    let Some(id) = file.strip_suffix(".ogg") else {
        return refuse(
            StatusCode::NOT_FOUND,
            ErrorBody::new(ErrorCode::TransmissionNotFound, "ask for <id>.ogg"),
        );
    };
    let Some(token) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            ErrorBody::new(
                ErrorCode::NotAuthenticated,
                "send Authorization: Bearer <your token>",
            ),
        );
    };
    match state.hub.history_download(token, &id.into()).await {
        Ok(recorded) => {
            metrics::counter!("roger_history_downloads_total").increment(1);
            let file = history::ogg::ogg_opus(&recorded.frames, rand::random());
            (
                StatusCode::OK,
                [
                    (axum::http::header::CONTENT_TYPE, "audio/ogg".to_owned()),
                    (
                        axum::http::header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{id}.ogg\""),
                    ),
                ],
                file,
            )
                .into_response()
        }
        Err(e) => {
            let status = match e.code {
                ErrorCode::TokenExpired | ErrorCode::TokenInvalid => StatusCode::UNAUTHORIZED,
                ErrorCode::ChannelNotAllowed => StatusCode::FORBIDDEN,
                ErrorCode::TransmissionNotFound | ErrorCode::ChannelNotFound => {
                    StatusCode::NOT_FOUND
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            refuse(status, e)
        }
    }
}

async fn metrics_text(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    if let Some(want) = &state.metrics_token {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| auth::constant_time_eq(g.as_bytes(), want.as_bytes())) {
            metrics::counter!("roger_metrics_unauthorized_total").increment(1);
            return (
                StatusCode::UNAUTHORIZED,
                "a bearer token is needed\n".to_string(),
            );
        }
    }
    match &state.metrics {
        Some(h) => {
            metrics::gauge!("roger_sessions").set(state.hub.session_count() as f64);
            (StatusCode::OK, h.render())
        }
        None => (
            StatusCode::OK,
            String::from("# metrics recorder not installed\n"),
        ),
    }
}
