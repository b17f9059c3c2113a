//! The client's handling of server messages: each input is what a server sends, one
//! frame per line, fed through the client's decoder, notification handler, response
//! bookkeeping and clamps, with every event driving the real recovery machine on virtual
//! time. A hostile or broken server must not be able to make the client panic (overflow
//! checks are on), hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roger_client::manager::fuzzing::Harness;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut client = Harness::new();
    for line in text.lines().take(64) {
        client.feed(line);
    }
});
