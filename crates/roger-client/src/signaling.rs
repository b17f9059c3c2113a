//! The signaling client: one WebSocket, request/response correlation with timeouts,
//! notifications, and application-level ping.
//!
//! [`Signaling::connect`] opens the socket and returns a handle plus a stream of
//! [`SignalingEvent`]s (notifications, and the socket's end). Requests are correlated by
//! id; one that gets no answer in time fails with `SIGNALING_TIMEOUT`, one in flight when
//! the socket dies fails with `SIGNALING_CLOSED`.

use futures_util::{SinkExt, StreamExt};
use roger_protocol::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Default time a request may wait for its response.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for the TCP + WebSocket handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TLS client configuration trusting the system's roots plus, if given, the CA
/// certificates in `extra_ca_pem` (a self-hosted server with its own CA).
pub fn tls_config(extra_ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, ErrorBody> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |why: String| ErrorBody::new(ErrorCode::CertificateInvalid, why);
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A broken system certificate is skipped, not fatal.
        let _ = roots.add(cert);
    }
    if let Some(pem) = extra_ca_pem {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("the extra CA is not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(bad("the extra CA file holds no certificate".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| bad(format!("the extra CA is not a usable certificate: {e}")))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ErrorBody::new(ErrorCode::InternalError, format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificate complaint inside a connect error, if that is what it is.
fn certificate_problem(e: &tokio_tungstenite::tungstenite::Error) -> Option<String> {
    use tokio_tungstenite::tungstenite::error::{Error as WsError, TlsError};
    let rustls_error = match e {
        WsError::Tls(TlsError::Rustls(r)) => Some((**r).clone()),
        WsError::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned(),
        _ => None,
    }?;
    match rustls_error {
        rustls::Error::InvalidCertificate(why) => Some(format!("{why:?}")),
        rustls::Error::NoCertificatesPresented => Some("no certificate presented".into()),
        _ => None,
    }
}

/// What the socket reports besides responses.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalingEvent {
    /// A server push.
    Notification(Notification),
    /// The socket is gone (`None`: closed by the peer; `Some`: why it failed).
    Closed(Option<ErrorBody>),
}

type Pending = Arc<Mutex<HashMap<RequestId, oneshot::Sender<Result<Response, ErrorBody>>>>>;

/// A connected signaling socket. Cloning shares the socket.
#[derive(Clone)]
pub struct Signaling {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    request_timeout: Duration,
    abort: Arc<Mutex<Option<oneshot::Sender<ErrorBody>>>>,
    local_addr: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for Signaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signaling").finish_non_exhaustive()
    }
}

impl Signaling {
    /// Opens a WebSocket to `url` (`ws://host:port/ws` or `wss://...`), verifying a
    /// `wss://` server against the system's trusted roots.
    pub async fn connect(
        url: &str,
        request_timeout: Duration,
    ) -> Result<(Signaling, mpsc::UnboundedReceiver<SignalingEvent>), ErrorBody> {
        Self::connect_with(url, request_timeout, None).await
    }

    /// Like [`Signaling::connect`] with a TLS configuration of its own (see
    /// [`tls_config`]); `None` uses the system's trusted roots.
    pub async fn connect_with(
        url: &str,
        request_timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<(Signaling, mpsc::UnboundedReceiver<SignalingEvent>), ErrorBody> {
        let unreachable = |why: String| {
            ErrorBody::new(
                ErrorCode::SignalingUnreachable,
                format!("cannot reach {url}: {why}"),
            )
        };
        let tls = match tls {
            Some(t) => t,
            None => tls_config(None)?,
        };
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            url,
            None,
            true,
            Some(tokio_tungstenite::Connector::Rustls(tls)),
        );
        let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| match certificate_problem(&e) {
                Some(why) => ErrorBody::new(
                    ErrorCode::CertificateInvalid,
                    format!("{url}: the server's certificate is not trusted: {why}"),
                ),
                None => unreachable(e.to_string()),
            })?;
        let local_addr = match ws.get_ref() {
            tokio_tungstenite::MaybeTlsStream::Plain(s) => s.local_addr().ok(),
            _ => None,
        };
        let (abort_tx, mut abort_rx) = oneshot::channel::<ErrorBody>();
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (events, events_rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();

        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let close = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || close {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        let reader_pending = pending.clone();
        tokio::spawn(async move {
            let reason = loop {
                let next = tokio::select! {
                    next = stream.next() => next,
                    why = &mut abort_rx => match why {
                        Ok(why) => break Some(why),
                        // The handle was dropped: keep reading until the socket ends.
                        Err(_) => stream.next().await,
                    },
                };
                match next {
                    Some(Ok(Message::Text(text))) => match decode_server(&text) {
                        Ok(ServerMessage::Response(r)) => {
                            let waiter = reader_pending.lock().expect("pending lock").remove(&r.id);
                            if let Some(tx) = waiter {
                                let _ = tx.send(match r.outcome {
                                    Outcome::Ok(resp) => Ok(resp),
                                    Outcome::Err(e) => Err(e),
                                });
                            } else {
                                tracing::debug!(
                                    id = r.id,
                                    "response for no pending request (timed out?)"
                                );
                            }
                        }
                        Ok(ServerMessage::Notification(n)) => {
                            let _ = events.send(SignalingEvent::Notification(n));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "undecodable frame from server ignored")
                        }
                    },
                    Some(Ok(Message::Close(frame))) => {
                        break frame.map(|f| {
                            ErrorBody::new(
                                ErrorCode::SignalingClosed,
                                format!(
                                    "server closed the connection ({}: {})",
                                    u16::from(f.code),
                                    f.reason
                                ),
                            )
                        });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        break Some(ErrorBody::new(
                            ErrorCode::SignalingClosed,
                            format!("connection lost: {e}"),
                        ))
                    }
                    None => break None,
                }
            };
            // Fail everything still waiting: nobody will answer it now.
            let waiters: Vec<_> = reader_pending
                .lock()
                .expect("pending lock")
                .drain()
                .collect();
            for (_, tx) in waiters {
                let _ = tx.send(Err(ErrorBody::new(
                    ErrorCode::SignalingClosed,
                    "the connection closed before the server answered",
                )));
            }
            let _ = events.send(SignalingEvent::Closed(reason));
        });

        Ok((
            Signaling {
                out,
                pending,
                next_id: Arc::new(AtomicU64::new(1)),
                request_timeout,
                abort: Arc::new(Mutex::new(Some(abort_tx))),
                local_addr,
            },
            events_rx,
        ))
    }

    /// Sends a request and waits for its response (or `SIGNALING_TIMEOUT`).
    pub async fn request(&self, request: Request) -> Result<Response, ErrorBody> {
        self.request_with_timeout(request, self.request_timeout)
            .await
    }

    /// Like [`Signaling::request`] with its own timeout.
    pub async fn request_with_timeout(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, ErrorBody> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let method = request.method();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let text = ClientMessage { id, request }.to_json();
        if self.out.send(Message::text(text)).is_err() {
            self.pending.lock().expect("pending lock").remove(&id);
            return Err(ErrorBody::new(
                ErrorCode::SignalingClosed,
                "the connection is closed",
            ));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ErrorBody::new(
                ErrorCode::SignalingClosed,
                "the connection is closed",
            )),
            Err(_) => {
                self.pending.lock().expect("pending lock").remove(&id);
                Err(ErrorBody::new(
                    ErrorCode::SignalingTimeout,
                    format!("no answer to {method} within {timeout:?}"),
                ))
            }
        }
    }

    /// Sends a raw text frame (tests use this to send what a broken client would).
    pub fn send_raw(&self, text: String) -> bool {
        self.out.send(Message::text(text)).is_ok()
    }

    /// Closes the socket cleanly.
    pub fn close(&self) {
        let _ = self.out.send(Message::Close(None));
    }

    /// Declares the socket dead (a ping went unanswered): stops reading, fails every
    /// pending request, reports `Closed(why)`, and closes the socket.
    pub fn abort(&self, why: ErrorBody) {
        if let Some(tx) = self.abort.lock().expect("abort lock").take() {
            let _ = tx.send(why);
        }
        self.close();
    }

    /// The socket's local address (to notice when a network change takes it away).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.local_addr
    }

    /// Whether the socket's writer is still running.
    pub fn is_open(&self) -> bool {
        !self.out.is_closed()
    }
}
