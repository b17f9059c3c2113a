//! Media on a configured UDP port range (`media.port_range`), so a firewall needs one
//! rule. webrtc-rs binds the addresses it is given, with no range option; so each
//! transport's `:0` addresses are replaced by a port of the range that is free right now
//! (probed by binding it). Another process could take the port between the probe and
//! webrtc's bind: the offer then fails with `INTERNAL_ERROR` and the client's retry
//! gets the next port (a rotating cursor never hands out the same port twice in a row).

use roger_protocol::{ErrorBody, ErrorCode};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// An inclusive range of UDP ports.
#[derive(Debug)]
pub struct PortRange {
    min: u16,
    max: u16,
    next: AtomicU32,
}

impl PortRange {
    /// Parses `"40000-40999"`.
    pub fn parse(s: &str) -> Result<PortRange, String> {
        let bad = || format!("media.port_range {s:?}: write it as MIN-MAX, e.g. \"40000-40999\"");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (min, max): (u16, u16) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if min == 0 || min > max {
            return Err(bad());
        }
        Ok(PortRange {
            min,
            max,
            next: AtomicU32::new(0),
        })
    }

    /// How many ports.
    fn len(&self) -> u32 {
        u32::from(self.max - self.min) + 1
    }

    /// `bind` with every port-0 address given a free port of the range.
    pub fn assign(&self, bind: &[String]) -> Result<Vec<String>, ErrorBody> {
        bind.iter()
            .map(|a| match a.parse::<SocketAddr>() {
                Ok(addr) if addr.port() == 0 => self.free_port(addr).map(|a| a.to_string()),
                _ => Ok(a.clone()),
            })
            .collect()
    }

    fn free_port(&self, mut addr: SocketAddr) -> Result<SocketAddr, ErrorBody> {
        for _ in 0..self.len() {
            let k = self.next.fetch_add(1, Ordering::Relaxed) % self.len();
            addr.set_port(self.min + k as u16);
            if UdpSocket::bind(addr).is_ok() {
                return Ok(addr);
            }
        }
        metrics::counter!("roger_media_ports_exhausted_total").increment(1);
        Err(ErrorBody::new(
            ErrorCode::InternalError,
            format!(
                "no free UDP port in media.port_range {}-{} on {}: the server needs a wider range",
                self.min,
                self.max,
                addr.ip()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_range_skipping_busy_ones() {
        assert!(PortRange::parse("40000").is_err());
        assert!(PortRange::parse("5-4").is_err());
        assert!(PortRange::parse("0-4").is_err());
        // A range of two on loopback: hold one, and the other is handed out every time.
        let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
        let busy = holder.local_addr().unwrap().port();
        let (min, max) = if busy > 1024 {
            (busy - 1, busy)
        } else {
            (busy, busy + 1)
        };
        let range = PortRange::parse(&format!("{min}-{max}")).unwrap();
        let free = if busy == min { max } else { min };
        let Ok(probe) = UdpSocket::bind(("127.0.0.1", free)) else {
            return; // the neighbour port is taken on this machine: nothing to learn
        };
        drop(probe);
        for _ in 0..3 {
            let got = range
                .assign(&["127.0.0.1:0".into(), "127.0.0.1:7".into()])
                .unwrap();
            assert_eq!(got, [format!("127.0.0.1:{free}"), "127.0.0.1:7".into()]);
        }
        // All busy: a clear error.
        let _hold_free = UdpSocket::bind(("127.0.0.1", free)).unwrap();
        let e = range.assign(&["127.0.0.1:0".into()]).unwrap_err();
        assert!(e.message.contains("wider range"), "{e:?}");
    }
}
