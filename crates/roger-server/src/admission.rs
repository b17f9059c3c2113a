//! Admission before authentication: caps on open connections and on connections that
//! have not authenticated yet (TLS handshake, HTTP request, WebSocket before `hello`),
//! in total and per source address.
//!
//! Every accepted TCP connection gets a [`Ticket`] at once, before any byte is read;
//! a connection over a cap is closed without reading anything. The ticket lives as long
//! as the connection's socket (it travels with the stream through hyper's upgrade into
//! the WebSocket), and [`Ticket::authenticated`] moves it out of the "pending" count when
//! `hello` or `resume` succeeds. Counts and gauges change incrementally under one small
//! lock: no scan of anything per connection.

use crate::sync::lock;
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The caps. See `[admission]` in `docs/server.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Open connections in total.
    pub connections: usize,
    /// Open connections from one source address.
    pub connections_per_address: usize,
    /// Connections not yet authenticated (TLS handshake, HTTP, WebSocket before hello).
    pub pending: usize,
    /// Not-yet-authenticated connections from one source address.
    pub pending_per_address: usize,
}

/// Why a connection was refused at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too many open connections.
    Connections,
    /// Too many open connections from this address.
    ConnectionsPerAddress,
    /// Too many connections still authenticating.
    Pending,
    /// Too many connections still authenticating from this address.
    PendingPerAddress,
}

impl Refused {
    /// The `reason` label of `roger_admission_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Connections => "connections",
            Refused::ConnectionsPerAddress => "connections_per_address",
            Refused::Pending => "pending",
            Refused::PendingPerAddress => "pending_per_address",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    pending: usize,
    /// (open, pending) per source address; an address leaves the map at (0, 0).
    per_address: HashMap<IpAddr, (usize, usize)>,
}

/// The door: counts connections and hands out [`Ticket`]s.
#[derive(Debug)]
pub struct Admission {
    caps: Caps,
    counts: Mutex<Counts>,
}

impl Admission {
    /// A door with these caps.
    pub fn new(caps: Caps) -> Arc<Admission> {
        Arc::new(Admission {
            caps,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Admits a new connection from `ip`, or says which cap it hit (and counts it).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refused> {
        let mut c = lock(&self.counts);
        let (open, pending) = c.per_address.get(&ip).copied().unwrap_or((0, 0));
        let refused = if c.open >= self.caps.connections {
            Some(Refused::Connections)
        } else if open >= self.caps.connections_per_address {
            Some(Refused::ConnectionsPerAddress)
        } else if c.pending >= self.caps.pending {
            Some(Refused::Pending)
        } else if pending >= self.caps.pending_per_address {
            Some(Refused::PendingPerAddress)
        } else {
            None
        };
        if let Some(why) = refused {
            drop(c);
            metrics::counter!("roger_admission_refused_total", "reason" => why.as_str())
                .increment(1);
            return Err(why);
        }
        c.open += 1;
        c.pending += 1;
        c.per_address.insert(ip, (open + 1, pending + 1));
        publish(&c);
        Ok(Ticket {
            door: self.clone(),
            ip,
            pending: AtomicBool::new(true),
        })
    }

    /// (open, pending) now, in total.
    pub fn counts(&self) -> (usize, usize) {
        let c = lock(&self.counts);
        (c.open, c.pending)
    }

    fn release(&self, ip: IpAddr, open: bool, pending: bool) {
        let mut c = lock(&self.counts);
        c.open -= usize::from(open);
        c.pending -= usize::from(pending);
        if let Some(e) = c.per_address.get_mut(&ip) {
            e.0 -= usize::from(open);
            e.1 -= usize::from(pending);
            if *e == (0, 0) {
                c.per_address.remove(&ip);
            }
        }
        publish(&c);
    }
}

fn publish(c: &Counts) {
    metrics::gauge!("roger_connections_open").set(c.open as f64);
    metrics::gauge!("roger_connections_pending").set(c.pending as f64);
}

/// One admitted connection. Dropping it gives its places back.
#[derive(Debug)]
pub struct Ticket {
    door: Arc<Admission>,
    ip: IpAddr,
    pending: AtomicBool,
}

impl Ticket {
    /// The connection authenticated (`hello` or `resume` succeeded): it no longer counts
    /// as pending. Idempotent.
    pub fn authenticated(&self) {
        if self.pending.swap(false, Ordering::AcqRel) {
            self.door.release(self.ip, false, true);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let pending = self.pending.swap(false, Ordering::AcqRel);
        self.door.release(self.ip, true, pending);
    }
}

/// A stream that holds its connection's [`Ticket`] for as long as it lives (through
/// hyper's upgrade into the WebSocket).
#[derive(Debug)]
pub struct Admitted<S> {
    inner: S,
    /// Held, not read: dropping the stream gives the connection's places back.
    _ticket: Arc<Ticket>,
}

impl<S> Admitted<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, ticket: Arc<Ticket>) -> Self {
        Admitted {
            inner,
            _ticket: ticket,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Admitted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Admitted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises this process's open-file soft limit to its hard limit and returns the soft
/// limit in force (None where the platform has no such limit).
pub fn raise_fd_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// Lowers `caps` so that open connections fit `fd_limit` with room for media sockets and
/// files: at most half the descriptors go to signaling connections. Returns the caps and
/// whether they were lowered.
pub fn fit_to_fd_limit(caps: Caps, fd_limit: u64) -> (Caps, bool) {
    let room = usize::try_from(fd_limit / 2).unwrap_or(usize::MAX).max(16);
    let fitted = Caps {
        connections: caps.connections.min(room),
        connections_per_address: caps.connections_per_address.min(room),
        pending: caps.pending.min(room),
        pending_per_address: caps.pending_per_address.min(room),
    };
    (fitted, fitted != caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(c: usize, ca: usize, p: usize, pa: usize) -> Caps {
        Caps {
            connections: c,
            connections_per_address: ca,
            pending: p,
            pending_per_address: pa,
        }
    }
    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 2));

    #[test]
    fn the_per_address_cap_refuses_one_address_and_not_another() {
        let door = Admission::new(caps(100, 3, 100, 100));
        let held: Vec<_> = (0..3).map(|_| door.admit(A).unwrap()).collect();
        assert_eq!(door.admit(A).unwrap_err(), Refused::ConnectionsPerAddress);
        let b = door.admit(B).unwrap();
        assert_eq!(door.counts(), (4, 4));
        drop(held);
        drop(b);
        assert_eq!(door.counts(), (0, 0));
        assert!(lock(&door.counts).per_address.is_empty());
    }

    #[test]
    fn authenticated_connections_leave_the_pending_count_once() {
        let door = Admission::new(caps(100, 100, 2, 2));
        let a = door.admit(A).unwrap();
        let _b = door.admit(B).unwrap();
        assert_eq!(door.admit(A).unwrap_err(), Refused::Pending);
        a.authenticated();
        a.authenticated();
        assert_eq!(door.counts(), (2, 1));
        let _c = door.admit(A).unwrap();
        drop(a);
        assert_eq!(door.counts(), (2, 2));
    }

    #[test]
    fn the_total_caps_hold_across_addresses() {
        let door = Admission::new(caps(2, 10, 10, 1));
        let _a = door.admit(A).unwrap();
        assert_eq!(door.admit(A).unwrap_err(), Refused::PendingPerAddress);
        let _b = door.admit(B).unwrap();
        assert_eq!(door.admit(B).unwrap_err(), Refused::Connections);
    }

    #[test]
    fn caps_fit_the_descriptor_limit() {
        let want = caps(10_000, 1_000, 1_000, 256);
        assert_eq!(fit_to_fd_limit(want, 1_048_576), (want, false));
        let (fitted, lowered) = fit_to_fd_limit(want, 1024);
        assert!(lowered);
        assert_eq!(fitted, caps(512, 512, 512, 256));
    }
}
