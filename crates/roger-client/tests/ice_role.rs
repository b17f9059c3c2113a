//! The ICE agent's role must not be moved by a STUN check that fails authentication.
//!
//! Seen in the reconnect storm: a fresh transport's port had just been freed by another
//! PeerConnection, whose peers still sent consent checks (ICE-CONTROLLING) to it. webrtc-rs
//! repaired the "role conflict" before checking USERNAME and MESSAGE-INTEGRITY, so our
//! controlling agent switched to controlled; with the server controlled too, nobody
//! nominated a pair and ICE failed after 7 s. Fixed in third_party/rtc-ice (see its
//! ROGER.md); these tests fail against the upstream crate.

use bytes::BytesMut;
use rtc::ice::agent::agent_config::AgentConfig;
use rtc::ice::attributes::control::{AttrControlled, AttrControlling};
use rtc::ice::attributes::priority::PriorityAttr;
use rtc::ice::candidate::candidate_host::CandidateHostConfig;
use rtc::ice::candidate::CandidateConfig;
use rtc::ice::Agent;
use rtc::sansio::Protocol;
use rtc::shared::{TransportContext, TransportMessage, TransportProtocol};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST};
use rtc::stun::textattrs::Username;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

const LOCAL: &str = "198.18.0.1:40000";
const PEER: &str = "198.18.0.2:50000";
const PEER_UFRAG: &str = "peerufrag";
const PEER_PWD: &str = "peerpasswordpeerpassword";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// An agent with one host candidate on `LOCAL` and the peer's on `PEER`; started (the
/// remote credentials known) as `controlling` when `start` is set.
fn agent(controlling: bool, start: bool) -> Agent {
    let now = Instant::now();
    let config = AgentConfig {
        is_controlling: controlling,
        ..AgentConfig::default()
    };
    let mut agent = Agent::new(
        now,
        Arc::new(config),
        rtc::crypto::default_provider().expect("crypto provider"),
    )
    .expect("agent");
    let host = |a: SocketAddr| {
        CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: a.ip().to_string(),
                port: a.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .expect("candidate")
    };
    agent.add_local_candidate(host(addr(LOCAL))).expect("local");
    agent
        .add_remote_candidate(host(addr(PEER)))
        .expect("remote");
    if start {
        agent
            .start_connectivity_checks(now, controlling, PEER_UFRAG.into(), PEER_PWD.into())
            .expect("start");
    }
    agent
}

/// A Binding request from `from` claiming a role with the tie-breaker that wins any
/// conflict (the largest when controlling, the smallest when controlled), addressed as
/// `username` and signed with `key`.
fn check(agent: &mut Agent, from: &str, controlling: bool, username: String, key: &str) {
    let role: Box<dyn Setter> = if controlling {
        Box::new(AttrControlling(u64::MAX))
    } else {
        Box::new(AttrControlled(0))
    };
    let mut m = Message::new();
    m.build(&[
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(Username::new(
            rtc::stun::attributes::ATTR_USERNAME,
            username,
        )),
        role,
        Box::new(PriorityAttr(1_000)),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            key.to_owned(),
            rtc::crypto::default_provider()
                .expect("crypto provider")
                .crypto(),
        )),
        Box::new(FINGERPRINT),
    ])
    .expect("stun message");
    // An unauthenticated check is refused with an error; only the role matters here.
    let _ = agent.handle_read(TransportMessage {
        now: Instant::now(),
        transport: TransportContext {
            local_addr: addr(LOCAL),
            peer_addr: addr(from),
            transport_protocol: TransportProtocol::UDP,
            ecn: None,
        },
        message: BytesMut::from(&m.raw[..]),
    });
}

fn our_username(agent: &Agent) -> String {
    format!("{}:{PEER_UFRAG}", agent.get_local_credentials().ufrag)
}

/// A check from the real peer, addressed and signed with this agent's credentials.
fn peer_check(agent: &mut Agent, controlling: bool) {
    let username = our_username(agent);
    let key = agent.get_local_credentials().pwd.clone();
    check(agent, PEER, controlling, username, &key);
}

#[test]
fn a_stray_agents_check_does_not_switch_our_role() {
    // A stale peer of whoever had this port before: its own credentials, not ours.
    let mut a = agent(true, true);
    check(
        &mut a,
        "198.18.0.3:50001",
        true,
        "someoneelse:strangerufrag".into(),
        "strangerpasswordstranger",
    );
    assert!(
        a.role(),
        "an unauthenticated check switched us to controlled"
    );
}

#[test]
fn a_check_with_our_username_but_a_bad_signature_does_not_switch_our_role() {
    let mut a = agent(true, true);
    let username = our_username(&a);
    check(&mut a, PEER, true, username, "notthelocalpasswordatall");
    assert!(
        a.role(),
        "a check failing MESSAGE-INTEGRITY switched our role"
    );
}

#[test]
fn a_check_before_the_answer_is_applied_does_not_switch_our_role() {
    // No remote credentials yet: the server's first checks can beat its answer here.
    let mut a = agent(true, false);
    peer_check(&mut a, true);
    assert!(
        a.role(),
        "a check arriving before the answer switched our role"
    );
}

#[test]
fn the_real_peer_still_repairs_a_role_conflict() {
    // RFC 8445 7.3.1.1 still holds for an authenticated check. Both controlling: the
    // larger tie-breaker (the peer's u64::MAX) keeps the role.
    let mut a = agent(true, true);
    peer_check(&mut a, true);
    assert!(
        !a.role(),
        "an authenticated conflicting check must switch us"
    );

    let mut b = agent(false, true);
    peer_check(&mut b, false);
    // Both controlled: the larger tie-breaker (ours, against the peer's 0) switches.
    assert!(
        b.role(),
        "both controlled: the larger tie-breaker must switch"
    );
}
