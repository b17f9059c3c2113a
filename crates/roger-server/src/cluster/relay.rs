//! Node-to-node media: the talker's node sends each packet once to every other node with
//! members in the channel, over UDP, authenticated with the cluster secret.
//!
//! A datagram is `"RGR1" | mac[16] | body`, where mac is HMAC-SHA256(secret, body) cut to
//! 16 bytes (RFC 2104 allows truncation to half the hash) and body is
//! `sent_ms u64 | node | channel | session` (each a length byte and UTF-8) followed by
//! `ssrc u32 | seq u16 | timestamp u32 | marker u8 | Opus payload`, all big-endian.
//! A datagram that fails the MAC, is older than [`MAX_AGE_MS`] or does not parse is
//! dropped and counted (`roger_relay_rejected_total`); it never reaches a listener.
//! (SRTP between nodes would also do; it needs a key exchange per pair of nodes, where
//! one shared secret and an HMAC, as TURN's REST credentials use, needs none.)

use hmac::{Hmac, Mac};
use roger_protocol::{ChannelId, SessionId};
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;

const MAGIC: &[u8; 4] = b"RGR1";
const MAC_LEN: usize = 16;
/// A datagram sent longer ago than this is refused (a replayed capture).
pub const MAX_AGE_MS: u64 = 10_000;

/// A relayed RTP packet, as much of it as the receiving node's rewriter needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    /// The sending node.
    pub node: String,
    /// The channel.
    pub channel: ChannelId,
    /// The talker's session.
    pub session: SessionId,
    /// RTP fields of the talker's packet.
    pub ssrc: u32,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP marker.
    pub marker: bool,
    /// The Opus frame.
    pub payload: Vec<u8>,
}

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Not a relay datagram, or cut short.
    #[error("malformed")]
    Malformed,
    /// The MAC does not match: not from a node with the cluster secret.
    #[error("forged")]
    Forged,
    /// Sent too long ago.
    #[error("stale")]
    Stale,
}

impl Rejected {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rejected::Malformed => "malformed",
            Rejected::Forged => "forged",
            Rejected::Stale => "stale",
        }
    }
}

fn mac(secret: &[u8], body: &[u8]) -> [u8; MAC_LEN] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    m.update(body);
    let full = m.finalize().into_bytes();
    let mut out = [0; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(255);
    out.push(n as u8);
    out.extend_from_slice(&b[..n]);
}

/// Encodes `p`, sent at `sent_ms`.
pub fn encode(secret: &[u8], sent_ms: u64, p: &Relayed) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + p.payload.len());
    body.extend_from_slice(&sent_ms.to_be_bytes());
    put_str(&mut body, &p.node);
    put_str(&mut body, p.channel.as_str());
    put_str(&mut body, p.session.as_str());
    body.extend_from_slice(&p.ssrc.to_be_bytes());
    body.extend_from_slice(&p.seq.to_be_bytes());
    body.extend_from_slice(&p.timestamp.to_be_bytes());
    body.push(u8::from(p.marker));
    body.extend_from_slice(&p.payload);
    let mut out = Vec::with_capacity(4 + MAC_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&mac(secret, &body));
    out.extend_from_slice(&body);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Rejected> {
        if self.0.len() < n {
            return Err(Rejected::Malformed);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn str(&mut self) -> Result<String, Rejected> {
        let n = self.take(1)?[0] as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| Rejected::Malformed)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Rejected> {
        self.take(N)?.try_into().map_err(|_| Rejected::Malformed)
    }
}

/// Checks and decodes a datagram received at `now_ms`.
pub fn decode(secret: &[u8], now_ms: u64, datagram: &[u8]) -> Result<Relayed, Rejected> {
    let mut r = Reader(datagram);
    if r.take(4)? != MAGIC {
        return Err(Rejected::Malformed);
    }
    let their_mac: [u8; MAC_LEN] = r.array()?;
    let body = r.0;
    // Compared in constant time (verify_truncated_left), as a MAC should be.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    m.update(body);
    m.verify_truncated_left(&their_mac)
        .map_err(|_| Rejected::Forged)?;
    let sent_ms = u64::from_be_bytes(r.array()?);
    if now_ms.saturating_sub(sent_ms) > MAX_AGE_MS || sent_ms > now_ms + MAX_AGE_MS {
        return Err(Rejected::Stale);
    }
    Ok(Relayed {
        node: r.str()?,
        channel: ChannelId(r.str()?),
        session: SessionId(r.str()?),
        ssrc: u32::from_be_bytes(r.array()?),
        seq: u16::from_be_bytes(r.array()?),
        timestamp: u32::from_be_bytes(r.array()?),
        marker: r.take(1)?[0] != 0,
        payload: r.0.to_vec(),
    })
}

/// This node's relay socket.
pub struct Relay {
    socket: Arc<UdpSocket>,
    secret: Vec<u8>,
    node: String,
}

impl Relay {
    /// Binds `addr` for node `node`.
    pub async fn bind(addr: SocketAddr, node: &str, secret: Vec<u8>) -> std::io::Result<Relay> {
        let socket = UdpSocket::bind(addr).await?;
        Ok(Relay {
            socket: Arc::new(socket),
            secret,
            node: node.to_owned(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends a talker's packet to each of `targets` without waiting (a full socket
    /// buffer drops, as a downlink does).
    pub fn send(
        &self,
        channel: &ChannelId,
        session: &SessionId,
        packet: &rtc::rtp::Packet,
        targets: &[SocketAddr],
    ) {
        let d = encode(
            &self.secret,
            crate::hub::server_time_ms(),
            &Relayed {
                node: self.node.clone(),
                channel: channel.clone(),
                session: session.clone(),
                ssrc: packet.header.ssrc,
                seq: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                marker: packet.header.marker,
                payload: packet.payload.to_vec(),
            },
        );
        for t in targets {
            if self.socket.try_send_to(&d, *t).is_ok() {
                metrics::counter!("roger_relay_packets_sent_total").increment(1);
            } else {
                metrics::counter!("roger_relay_packets_dropped_total").increment(1);
            }
        }
    }

    /// Receives datagrams until the socket fails, handing each good one to `deliver`.
    pub async fn run(self: Arc<Self>, deliver: impl Fn(Relayed)) {
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "relay socket receive failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            match decode(&self.secret, crate::hub::server_time_ms(), &buf[..n]) {
                Ok(p) => {
                    metrics::counter!("roger_relay_packets_received_total").increment(1);
                    deliver(p);
                }
                Err(why) => {
                    metrics::counter!("roger_relay_rejected_total", "why" => why.label())
                        .increment(1);
                    tracing::debug!(%from, %why, "relay datagram dropped");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Relayed {
        Relayed {
            node: "a".into(),
            channel: "general".into(),
            session: "s1".into(),
            ssrc: 7,
            seq: 65_535,
            timestamp: 960,
            marker: true,
            payload: vec![1, 2, 3],
        }
    }

    #[test]
    fn a_datagram_round_trips_with_the_secret() {
        let d = encode(b"secret", 1_000, &sample());
        assert_eq!(decode(b"secret", 1_500, &d), Ok(sample()));
    }

    #[test]
    fn a_wrong_secret_or_a_flipped_bit_is_forged() {
        let d = encode(b"secret", 1_000, &sample());
        assert_eq!(decode(b"other", 1_000, &d), Err(Rejected::Forged));
        let mut bad = d.clone();
        *bad.last_mut().expect("payload") ^= 1;
        assert_eq!(decode(b"secret", 1_000, &bad), Err(Rejected::Forged));
    }

    #[test]
    fn an_old_capture_is_stale_and_junk_is_malformed() {
        let d = encode(b"secret", 1_000, &sample());
        assert_eq!(
            decode(b"secret", 1_000 + MAX_AGE_MS + 1, &d),
            Err(Rejected::Stale)
        );
        assert_eq!(decode(b"secret", 0, b"RGR"), Err(Rejected::Malformed));
        assert_eq!(decode(b"secret", 0, &[0; 64]), Err(Rejected::Malformed));
    }
}
