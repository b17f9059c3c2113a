//! History in a cluster: what alice says through node a is listed and fetched on node b
//! (the store is Redis, which every node reads), and the Redis store keeps, lists,
//! fetches and prunes like the single-node one.

use bytes::Bytes;
use roger_e2e::cluster::{Cluster, Redis};
use roger_e2e::{speech_wav, Bot, TempDir};
use roger_protocol::{ChannelId, Member, Transmission, TransmissionId, UserId};
use roger_server::history::{HistoryStore, Recorded, RedisStore};
use std::time::Duration;

const S: Duration = Duration::from_secs(1);

fn recorded(id: &str, start_ms: u64, frames: usize) -> Recorded {
    Recorded {
        info: Transmission {
            id: TransmissionId(id.into()),
            channel: ChannelId::from("general"),
            by: Member {
                user: UserId("alice".into()),
                name: "Alice".into(),
            },
            start_ms,
            duration_ms: frames as u64 * 20,
            ended: true,
        },
        frames: (0..frames)
            .map(|i| ((i * 960) as u32, Bytes::from(vec![i as u8; 40])))
            .collect(),
    }
}

#[test]
fn the_redis_store_keeps_lists_fetches_and_prunes() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let mut store = RedisStore::open(&redis.url()).expect("open");
    let general = ChannelId::from("general");
    for i in 0..5u64 {
        store
            .put(&recorded(
                &format!("t{i}"),
                1_000 + i * 1_000,
                1 + i as usize,
            ))
            .expect("put");
    }
    let all = store.list(&general, None).expect("list");
    assert_eq!(all.len(), 5);
    assert!(
        all.windows(2).all(|w| w[0].start_ms < w[1].start_ms),
        "oldest first"
    );
    // Ended before 3_000: t0 (1_000..1_020) and t1 (2_000..2_040) are left out.
    assert_eq!(store.list(&general, Some(3_000)).expect("list").len(), 3);
    let t3 = store
        .get(&TransmissionId("t3".into()))
        .expect("get")
        .expect("kept");
    assert_eq!(t3, recorded("t3", 4_000, 4));
    assert_eq!(
        store.get(&TransmissionId("nope".into())).expect("get"),
        None
    );
    assert_eq!(store.channels().expect("channels"), vec![general.clone()]);
    // Older than 2_000 goes, then all but the newest 2.
    assert_eq!(store.prune(&general, 2, 2_000).expect("prune"), 3);
    let ids: Vec<String> = store
        .list(&general, None)
        .expect("list")
        .into_iter()
        .map(|t| t.id.0)
        .collect();
    assert_eq!(ids, ["t3", "t4"]);
    assert_eq!(store.prune(&general, 0, 0).expect("prune"), 2);
    assert!(store.channels().expect("channels").is_empty());
    // Redis away: a clear error, not a panic; back: the store works again.
    let mut redis = redis;
    redis.kill();
    assert!(store.list(&general, None).is_err());
    redis.restart();
    store
        .put(&recorded("t9", 9_000, 2))
        .expect("put after Redis came back");
    assert_eq!(store.list(&general, None).expect("list").len(), 1);
}

#[test]
fn what_is_said_through_one_node_is_in_the_history_on_another() {
    let Some(cl) = Cluster::start(2, "") else {
        return;
    };
    let (a, b) = (&cl.nodes[0], &cl.nodes[1]);
    let speech = speech_wav();
    let alice = Bot::spawn(
        a,
        &a.token("alice", &["general"]),
        &[
            "talk",
            "--channel",
            "general",
            "--wav",
            speech.to_str().unwrap(),
        ],
    );
    let (ok, _, stderr) = alice.wait(20 * S);
    assert!(ok, "alice: {stderr}");
    let dir = TempDir::new("cluster-history");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    // The recorder writes when the transmission ends: give it a moment.
    let mut listed = Vec::new();
    for _ in 0..20 {
        let reader = Bot::spawn(
            b,
            &b.token("bob", &["general"]),
            &[
                "history",
                "--channel",
                "general",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        let (ok, lines, stderr) = reader.wait(20 * S);
        assert!(ok, "history on node b: {stderr}");
        listed = lines
            .into_iter()
            .filter(|v| v["event"] == "transmission")
            .collect();
        if !listed.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["user"], "alice");
    let ms = listed[0]["duration_ms"].as_u64().expect("duration");
    assert!((2_800..=3_200).contains(&ms), "3 s said, {ms} ms kept");
    let wav = out.join(format!("{}.wav", listed[0]["id"].as_str().expect("id")));
    let pcm = roger_e2e::audio::read(&wav);
    let (_, corr) = roger_e2e::audio::best_lag(&roger_e2e::audio::read(&speech), &pcm, 9_600);
    assert!(
        corr >= 0.9,
        "the recording fetched on node b: correlation {corr:.3}"
    );
}
