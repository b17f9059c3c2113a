//! The protocol decoder on arbitrary frames: never panics, and whatever it accepts
//! encodes back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roger_protocol::{decode_client, decode_server};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode_client(text) {
        Ok(m) => {
            let again = decode_client(&m.to_json()).expect("a decoded request re-encodes");
            assert_eq!(again, m);
        }
        // A refusal that names a request id must be answerable with that id.
        Err(e) => assert!(!e.error.message.is_empty()),
    }
    if let Ok(m) = decode_server(text) {
        let again = decode_server(&m.to_json()).expect("a decoded server message re-encodes");
        assert_eq!(again, m);
    }
});
