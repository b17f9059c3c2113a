//! What a client written from `docs/protocol.md` with another WebRTC stack meets on the
//! wire: a talker whose stack marks every RTP packet is heard with the marker on the
//! first packet of each transmission only; an offer with Opus under another payload type
//! and without in-band FEC is answered in the offer's own terms, and one without Opus has
//! its m-line rejected.

use roger_client::protocol::{Direction, Request, Response};
use roger_client::transport::Transport;
use roger_e2e::producer::{Producer, RawListener};
use roger_e2e::{RawClient, Server};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_talker_marking_every_packet_is_marked_once_per_transmission_downstream() {
    let server = Server::start("");
    let url = server.url();
    let bob = RawListener::connect(&url, &server.token("bob", &["general"]), "general").await;
    let mallory =
        Producer::connect(&url, &server.token("mallory", &["general"]), &["general"]).await;
    let general = || "general".into();
    for (spurt, first_seq) in [(0, 1u16), (1, 1001)] {
        let granted = mallory
            .sig
            .request(Request::FloorRequest { channel: general() })
            .await
            .unwrap();
        assert!(
            matches!(granted, Response::FloorGranted { .. }),
            "spurt {spurt}: {granted:?}"
        );
        mallory
            .stream_marked(first_seq, 50, 1, Duration::from_millis(20), true)
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        mallory
            .sig
            .request(Request::FloorRelease { channel: general() })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let packets = bob.packets.lock().unwrap().clone();
    let marked: Vec<usize> = packets
        .iter()
        .enumerate()
        .filter(|(_, (_, m))| *m)
        .map(|(i, _)| i)
        .collect();
    println!(
        "bob received {} packets, marked at {marked:?}",
        packets.len()
    );
    assert!(packets.len() >= 95, "bob received {} of 100", packets.len());
    assert_eq!(marked.len(), 2, "one marker per transmission: {marked:?}");
    assert_eq!(marked[0], 0, "the first packet of the first transmission");
    assert!(
        (45..=55).contains(&marked[1]),
        "the second transmission's first: {marked:?}"
    );
    mallory.close().await;
    bob.close().await;
}

/// The answer to an offer, and the `m=audio` line and fmtp of the first audio section.
fn audio_terms(sdp: &str) -> (String, Vec<String>) {
    let m = sdp
        .lines()
        .find(|l| l.starts_with("m=audio"))
        .expect("an audio m-line")
        .to_owned();
    let attrs = sdp
        .lines()
        .filter(|l| l.starts_with("a=rtpmap:") || l.starts_with("a=fmtp:"))
        .map(str::to_owned)
        .collect();
    (m, attrs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_under_another_payload_type_and_without_fec_is_answered_in_its_own_terms() {
    let server = Server::start("");
    let mut raw = RawClient::connect(&server).await;
    raw.hello(&server.token("olga", &["general"]))
        .await
        .unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let settings = roger_e2e::producer::loopback_settings();
    let send = Transport::new(Direction::Send, &settings, tx)
        .await
        .unwrap();
    send.add_send_track().await.unwrap();
    let ours = send.pc().create_offer(None).await.unwrap().sdp;
    let (m, attrs) = audio_terms(&ours);
    println!("our offer: {m} {attrs:?}");
    // Another stack's terms: Opus as payload type 96, no in-band FEC.
    let theirs: String = ours
        .lines()
        .map(|l| {
            if l.starts_with("m=audio") {
                l.replace(" 111", " 96")
            } else if l.starts_with("a=rtpmap:111") {
                l.replace("a=rtpmap:111", "a=rtpmap:96")
            } else if l.starts_with("a=fmtp:111") {
                "a=fmtp:96 minptime=10".to_owned()
            } else {
                l.to_owned()
            }
        })
        .map(|l| l + "\r\n")
        .collect();
    let answer = raw
        .call(Request::TransportOffer {
            direction: Direction::Send,
            negotiation_id: 1,
            sdp: theirs,
            ice_restart: false,
        })
        .await
        .expect("answered");
    let Response::TransportAnswer {
        sdp,
        negotiation_id,
        direction,
    } = answer
    else {
        panic!("{answer:?}");
    };
    assert_eq!((negotiation_id, direction), (1, Direction::Send));
    let (m, attrs) = audio_terms(&sdp);
    println!("answer: {m} {attrs:?}");
    assert!(
        m.ends_with(" 96"),
        "answered with the offer's payload type: {m}"
    );
    assert!(
        attrs
            .iter()
            .any(|a| a.starts_with("a=rtpmap:96 opus/48000/2")),
        "{attrs:?}"
    );
    // The format parameters are the offer's: no FEC asked for, none promised.
    assert!(
        attrs.iter().any(|a| a == "a=fmtp:96 minptime=10"),
        "{attrs:?}"
    );

    // Without Opus at all (G.711 only, from a new PeerConnection), the server cannot
    // take the stream.
    let (tx, _rx2) = tokio::sync::mpsc::unbounded_channel();
    let send2 = Transport::new(Direction::Send, &settings, tx)
        .await
        .unwrap();
    send2.add_send_track().await.unwrap();
    let fresh = send2.pc().create_offer(None).await.unwrap().sdp;
    let g711: String = fresh
        .lines()
        .filter(|l| !l.starts_with("a=fmtp:111"))
        .map(|l| {
            if l.starts_with("m=audio") {
                l.replace(" 111", " 0")
            } else if l.starts_with("a=rtpmap:111") {
                "a=rtpmap:0 PCMU/8000".to_owned()
            } else {
                l.to_owned()
            }
        })
        .map(|l| l + "\r\n")
        .collect();
    let r = raw
        .call(Request::TransportOffer {
            direction: Direction::Send,
            negotiation_id: 1,
            sdp: g711,
            ice_restart: false,
        })
        .await;
    let Ok(Response::TransportAnswer { sdp, .. }) = &r else {
        panic!("{r:?}");
    };
    let (m, _) = audio_terms(sdp);
    println!("G.711 answer: {m}");
    assert!(m.starts_with("m=audio 0 "), "the m-line is rejected: {m}");
    send2.close().await;
    send.close().await;
}
