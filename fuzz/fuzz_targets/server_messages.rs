//! The server's message handling: each input is a connection's frames, one per line,
//! fed through the same `handle_text` a WebSocket drives, against one long-lived hub.
//! A line `!` is replaced by a valid `hello` (so the fuzzer reaches what authenticated
//! clients can do) and `!2` by a second user's. Every answer must encode to a message
//! the client decoder accepts; the session is ended after each input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roger_protocol::decode_server;
use roger_server::auth::Authenticator;
use roger_server::config::Config;
use roger_server::hub::{Conn, Hub, Outbound};
use roger_server::limits::TokenBucket;
use roger_server::ws::{handle_text, Flow};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

struct World {
    rt: tokio::runtime::Runtime,
    hub: Arc<Hub>,
    hellos: [String; 2],
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // The default channels (general, echo); media on loopback only.
        let mut config = Config::default();
        config.media.bind = vec!["127.0.0.1:0".into()];
        let auth = Authenticator::new(b"fuzz");
        let hellos = ["alice", "bob"].map(|user| {
            let token = auth.issue(
                user,
                user,
                &["general".into(), "echo".into()],
                Duration::from_secs(3600 * 24 * 365),
            );
            format!(
                "{{\"id\":1,\"method\":\"hello\",\"params\":{{\"protocol_version\":1,\"token\":\"{token}\",\"client\":\"fuzz\"}}}}"
            )
        });
        let hub = rt.block_on(async { Hub::new(Arc::new(config), auth) });
        World { rt, hub, hellos }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let w = world();
    static CONN: AtomicU64 = AtomicU64::new(1);
    w.rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Outbound>(4096);
        let conn = Conn::new(CONN.fetch_add(1, Ordering::Relaxed), tx);
        let mut session = None;
        let config = w.hub.config();
        let mut fanout = TokenBucket::new(
            std::time::Instant::now(),
            config.limits.fanout_per_second,
            config.limits.fanout_burst,
        );
        for line in text.lines().take(64) {
            let line = match line {
                "!" => w.hellos[0].as_str(),
                "!2" => w.hellos[1].as_str(),
                other => other,
            };
            let flow = handle_text(&w.hub, &conn, &mut session, &mut fanout, line).await;
            while let Ok(out) = rx.try_recv() {
                if let Outbound::Message(m) = out {
                    decode_server(&m.to_json()).expect("every answer decodes");
                }
            }
            if flow == Flow::Close {
                session = None;
                break;
            }
        }
        // Let offers in flight finish, then end the session like a closed socket would.
        tokio::time::sleep(Duration::from_millis(1)).await;
        if let Some(sid) = session {
            w.hub.end(&sid, "fuzz input done");
        }
    });
});
