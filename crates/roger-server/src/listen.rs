//! The listener: TCP accept, admission, TLS (reloadable), HTTP/1.1 with a header-read
//! timeout, and the upgrade to WebSocket.
//!
//! The accept loop is ours rather than `axum::serve` because axum's gives no hook at
//! accept time (the admission caps must refuse a socket before anything is read from it)
//! and runs hyper without a timer, which silently disables hyper's header-read timeout.
//! Routing stays axum's; HTTP stays hyper's.

use crate::admission::{Admission, Admitted, Ticket};
use crate::tls::CertStore;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What every request on a connection carries in its extensions: who is calling and the
/// connection's admission ticket (so `hello` can mark it authenticated).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The connection's ticket.
    pub ticket: Arc<Ticket>,
}

/// One listening socket and how to serve it.
pub(crate) struct Endpoint {
    pub listener: TcpListener,
    pub tls: Option<Arc<CertStore>>,
    pub router: Router,
    pub door: Arc<Admission>,
    /// For the TLS handshake and for each request's headers (the first one included).
    pub header_timeout: Duration,
}

/// Accepts until `stop` turns true; each connection runs in its own task and is asked to
/// finish gracefully when `stop` turns true.
pub(crate) async fn accept_loop(ep: Endpoint, mut stop: watch::Receiver<bool>) {
    let ep = Arc::new(ep);
    loop {
        let accepted = tokio::select! {
            r = ep.listener.accept() => r,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, most likely: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ticket = match ep.door.admit(peer.ip()) {
            Ok(t) => Arc::new(t),
            Err(why) => {
                tracing::debug!(%peer, reason = why.as_str(), "connection refused at the door");
                continue; // dropping `tcp` closes it unread
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_connection(
            ep.clone(),
            tcp,
            peer,
            ticket,
            stop.clone(),
        ));
    }
}

async fn serve_connection(
    ep: Arc<Endpoint>,
    tcp: TcpStream,
    peer: SocketAddr,
    ticket: Arc<Ticket>,
    stop: watch::Receiver<bool>,
) {
    let Some(store) = &ep.tls else {
        return serve_http(&ep, Admitted::new(tcp, ticket.clone()), peer, ticket, stop).await;
    };
    match tokio::time::timeout(ep.header_timeout, store.acceptor().accept(tcp)).await {
        Ok(Ok(tls)) => {
            serve_http(&ep, Admitted::new(tls, ticket.clone()), peer, ticket, stop).await
        }
        Ok(Err(e)) => {
            metrics::counter!("roger_tls_handshake_failures_total").increment(1);
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            metrics::counter!("roger_tls_handshake_failures_total").increment(1);
            metrics::counter!("roger_header_timeouts_total", "phase" => "tls").increment(1);
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}

async fn serve_http<S>(
    ep: &Endpoint,
    io: Admitted<S>,
    peer: SocketAddr,
    ticket: Arc<Ticket>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = ConnInfo { peer, ticket };
    let service = tower::ServiceExt::map_request(
        ep.router.clone(),
        move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(info.clone());
            req
        },
    );
    let service = hyper_util::service::TowerToHyperService::new(service);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ep.header_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            metrics::counter!("roger_header_timeouts_total", "phase" => "http").increment(1);
            tracing::debug!(%peer, "no complete request within {:?}: closed", ep.header_timeout);
        } else {
            tracing::trace!(%peer, error = %e, "connection ended with an error");
        }
    }
}
