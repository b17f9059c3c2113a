use super::*;

fn alice() -> Member {
    Member {
        user: "alice".into(),
        name: "Alice".into(),
    }
}

fn opus(b: u8) -> Bytes {
    // CELT FB 20 ms, one frame.
    Bytes::from(vec![31 << 3, b])
}

fn retention(keep_last: usize, max_age: Duration) -> HashMap<ChannelId, Retention> {
    HashMap::from([(ChannelId::from("general"), Retention { keep_last, max_age })])
}

/// One transmission of `frames` 20 ms frames, talk spurt `spurt`.
fn say(tap: &Tap, spurt: u64, frames: u32) {
    tap.begin(spurt, &alice());
    for k in 0..frames {
        tap.frame(spurt, 5000 + k * 960, &opus(k as u8));
    }
    tap.end(spurt);
}

fn list(h: &History) -> Vec<Transmission> {
    block(h.list(&"general".into(), None)).unwrap()
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn a_transmission_is_kept_with_its_frames_and_timing() {
    let h = History::start(
        Box::new(MemoryStore::default()),
        retention(50, Duration::from_secs(3600)),
    );
    let tap = h.tap(&"general".into()).unwrap();
    // A grant without audio records nothing.
    tap.begin(1, &alice());
    tap.end(1);
    say(&tap, 2, 10);
    let kept = list(&h);
    assert_eq!(kept.len(), 1);
    let t = &kept[0];
    assert_eq!(t.by, alice());
    assert!(t.ended);
    assert_eq!(t.duration_ms, 200);
    let r = block(h.fetch(&t.id)).unwrap();
    assert_eq!(r.frames.len(), 10);
    assert_eq!(r.frames[3], (3 * 960, opus(3)));
    // A channel without a tap is not recorded.
    assert!(h.tap(&"echo".into()).is_none());
}

#[test]
fn a_transmission_in_progress_is_listed_and_fetchable() {
    let h = History::start(
        Box::new(MemoryStore::default()),
        retention(50, Duration::from_secs(3600)),
    );
    let tap = h.tap(&"general".into()).unwrap();
    tap.begin(1, &alice());
    for k in 0..5 {
        tap.frame(1, k * 960, &opus(k as u8));
    }
    let kept = list(&h);
    assert_eq!(kept.len(), 1);
    assert!(!kept[0].ended);
    assert_eq!(kept[0].duration_ms, 100);
    assert_eq!(block(h.fetch(&kept[0].id)).unwrap().frames.len(), 5);
    tap.end(1);
    let kept2 = list(&h);
    assert!(kept2[0].ended);
    assert_eq!(kept2[0].id, kept[0].id);
}

#[test]
fn the_51st_transmission_evicts_the_first_in_memory_and_in_the_database() {
    let dir = std::env::temp_dir().join(format!("roger-history-{}", rand::random::<u64>()));
    let stores: [Box<dyn HistoryStore>; 2] = [
        Box::new(MemoryStore::default()),
        Box::new(SqliteStore::open(&dir.join(store::FILE)).unwrap()),
    ];
    for store in stores {
        let h = History::start(store, retention(50, Duration::from_secs(3600)));
        let tap = h.tap(&"general".into()).unwrap();
        for spurt in 1..=51 {
            // Frames: 1, 2, 3, ... so each transmission is told by its length.
            say(&tap, spurt, spurt as u32);
            // Distinct start times.
            std::thread::sleep(Duration::from_millis(2));
            if spurt == 50 {
                assert_eq!(list(&h).len(), 50);
            }
        }
        let kept = list(&h);
        let durations: Vec<u64> = kept.iter().map(|t| t.duration_ms).collect();
        let want: Vec<u64> = (2..=51).map(|n| n * 20).collect();
        assert_eq!(durations, want, "the first (20 ms) was evicted");
        h.stop();
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_expired_transmission_is_gone() {
    let h = History::start(
        Box::new(MemoryStore::default()),
        retention(50, Duration::from_millis(300)),
    );
    let tap = h.tap(&"general".into()).unwrap();
    say(&tap, 1, 3);
    let kept = list(&h);
    assert_eq!(kept.len(), 1);
    std::thread::sleep(Duration::from_millis(400));
    assert!(list(&h).is_empty());
    let e = block(h.fetch(&kept[0].id)).unwrap_err();
    assert_eq!(e.code, ErrorCode::TransmissionNotFound);
}

#[test]
fn the_database_keeps_history_across_a_restart_and_prunes_like_memory() {
    let dir = std::env::temp_dir().join(format!("roger-history-{}", rand::random::<u64>()));
    let path = dir.join(store::FILE);
    let id = {
        let h = History::start(
            Box::new(SqliteStore::open(&path).unwrap()),
            retention(2, Duration::from_secs(3600)),
        );
        let tap = h.tap(&"general".into()).unwrap();
        say(&tap, 1, 4);
        std::thread::sleep(Duration::from_millis(3));
        // In progress when the server stops: kept as far as it got.
        tap.begin(2, &alice());
        tap.frame(2, 0, &opus(9));
        h.stop();
        // The recorder has stopped: queries say so.
        let e = block(h.list(&"general".into(), None)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InternalError);
        drop(h);
        let mut store = SqliteStore::open(&path).unwrap();
        let kept = store.list(&"general".into(), None).unwrap();
        assert_eq!(kept.len(), 2);
        kept[0].id.clone()
    };
    let h = History::start(
        Box::new(SqliteStore::open(&path).unwrap()),
        retention(2, Duration::from_secs(3600)),
    );
    let r = block(h.fetch(&id)).unwrap();
    assert_eq!(r.info.duration_ms, 80);
    assert_eq!(r.frames.len(), 4);
    assert_eq!(r.frames[2].1, opus(2));
    let tap = h.tap(&"general".into()).unwrap();
    std::thread::sleep(Duration::from_millis(3));
    say(&tap, 1, 1);
    let kept = list(&h);
    assert_eq!(kept.len(), 2);
    assert!(kept.iter().all(|t| t.id != id), "the oldest was evicted");
    // `since`: only what had not ended before it.
    let last = kept.last().unwrap().clone();
    let until = last.start_ms + last.duration_ms;
    let since = block(h.list(&"general".into(), Some(until))).unwrap();
    assert_eq!(since, [last]);
    h.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn frames_round_trip_through_the_blob_and_a_damaged_one_is_an_error() {
    let frames = vec![(0, opus(1)), (960, Bytes::new()), (1920, opus(3))];
    let blob = store::encode_frames(&frames);
    assert_eq!(store::decode_frames(&blob).unwrap(), frames);
    assert!(store::decode_frames(&blob[..blob.len() - 1]).is_err());
    assert!(store::decode_frames(&blob[..3]).is_err());
}

#[test]
fn a_jump_in_the_talkers_clock_is_rebased_to_where_its_arrival_puts_it() {
    let h = History::start(
        Box::new(MemoryStore::default()),
        retention(50, Duration::from_secs(3600)),
    );
    let tap = h.tap(&"general".into()).unwrap();
    tap.begin(1, &alice());
    for k in 0..5u32 {
        tap.frame(1, 1_000 + k * 960, &opus(k as u8));
    }
    // A rebuilt send transport: a new random clock, hours away.
    for k in 0..5u32 {
        tap.frame(1, 3_000_000_000 + k * 960, &opus(10 + k as u8));
    }
    tap.end(1);
    let t = list(&h).remove(0);
    assert_eq!(t.duration_ms, 200, "ten 20 ms frames, not hours");
    let r = block(h.fetch(&t.id)).unwrap();
    let offsets: Vec<u32> = r.frames.iter().map(|f| f.0).collect();
    assert_eq!(offsets, (0..10).map(|k| k * 960).collect::<Vec<_>>());
}

#[test]
fn a_channel_that_no_longer_records_keeps_nothing_said_before() {
    let dir = std::env::temp_dir().join(format!("roger-history-{}", rand::random::<u64>()));
    let path = dir.join(store::FILE);
    {
        let h = History::start(
            Box::new(SqliteStore::open(&path).unwrap()),
            retention(50, Duration::from_secs(3600)),
        );
        say(&h.tap(&"general".into()).unwrap(), 1, 3);
        h.stop();
    }
    // Restarted with general set to record = false (no retention for it).
    let h = History::start(Box::new(SqliteStore::open(&path).unwrap()), HashMap::new());
    assert!(block(h.list(&"general".into(), None)).unwrap().is_empty());
    h.stop();
    let mut store = SqliteStore::open(&path).unwrap();
    assert!(
        store.channels().unwrap().is_empty(),
        "the old rows are gone"
    );
    let _ = std::fs::remove_dir_all(dir);
}
