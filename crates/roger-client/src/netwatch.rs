//! Network changes, from if-watch, debounced, as recovery events.
//!
//! An address added or removed on a usable (non-loopback) interface is a
//! `NetworkChanged` (with whether the signaling socket's address went away); usable
//! addresses appearing after there were none is `NetworkUp`. The burst of `Up` events
//! if-watch reports at start-up is the initial snapshot, not a change.

use crate::recovery::Event;
use futures_util::StreamExt;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Weak;
use std::time::Duration;

/// What the watcher needs from its owner (the manager implements it).
pub(crate) trait NetSink: Send + Sync {
    /// Reports a debounced network event.
    fn network_event(&self, ev: Event);
    /// The signaling socket's local address.
    fn signaling_local_addr(&self) -> Option<SocketAddr>;
}

fn usable(ip: &IpAddr) -> bool {
    !ip.is_loopback()
        && !ip.is_unspecified()
        && !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// Runs until the manager is gone. Changes closer together than `debounce` are one
/// change (a roam adds one address and removes another within milliseconds).
pub(crate) async fn watch(sink: Weak<dyn NetSink>, debounce: Duration) {
    let mut watcher = match if_watch::tokio::IfWatcher::new() {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch network interfaces; relying on ICE timeouts");
            return;
        }
    };
    let mut addrs: HashSet<IpAddr> = HashSet::new();
    let mut lost: HashSet<IpAddr> = HashSet::new();
    let mut had_usable = false;
    let mut initial = true;
    let mut pending: Option<tokio::time::Instant> = Some(tokio::time::Instant::now() + debounce);
    loop {
        let flush = async {
            match pending {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = watcher.next() => {
                match ev {
                    Some(Ok(if_watch::IfEvent::Up(net))) => {
                        addrs.insert(net.addr());
                    }
                    Some(Ok(if_watch::IfEvent::Down(net))) => {
                        addrs.remove(&net.addr());
                        lost.insert(net.addr());
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "interface watch error"),
                    None => return,
                }
                pending = Some(tokio::time::Instant::now() + debounce);
            }
            _ = flush => {
                pending = None;
                let Some(sink) = sink.upgrade() else { return };
                let has_usable = addrs.iter().any(usable);
                if initial {
                    initial = false;
                    had_usable = has_usable;
                    lost.clear();
                    continue;
                }
                let signaling_ip = sink.signaling_local_addr().map(|a| a.ip());
                let signaling_address_lost = signaling_ip
                    .is_some_and(|ip| lost.contains(&ip) && !addrs.contains(&ip));
                lost.clear();
                let event = if has_usable && !had_usable {
                    Event::NetworkUp
                } else {
                    Event::NetworkChanged { signaling_address_lost }
                };
                tracing::info!(?event, addresses = addrs.len(), "network change");
                had_usable = has_usable;
                sink.network_event(event);
            }
        }
    }
}
