//! The TypeScript bindings in ui/src/bindings.ts are generated from the Rust commands
//! and events; this fails when they drift (`make bindings` regenerates them).

use std::path::Path;

#[test]
fn typescript_bindings_match_the_rust_types() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/src/bindings.ts");
    let fresh = std::env::temp_dir().join(format!("roger-bindings-{}.ts", std::process::id()));
    roger_desktop::specta_builder()
        .export(roger_desktop::typescript(), &fresh)
        .expect("export the bindings");
    let generated = std::fs::read_to_string(&fresh).expect("generated bindings");
    let _ = std::fs::remove_file(&fresh);
    if std::env::var_os("UPDATE_BINDINGS").is_some() {
        std::fs::write(&committed, &generated).expect("write ui/src/bindings.ts");
        return;
    }
    let current = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        current == generated,
        "ui/src/bindings.ts is stale: run `make bindings` and commit it"
    );
}

/// `ErrorCode::ALL` (which the presentation tests walk: every code has a message and an
/// action) lists every code: the TypeScript union is derived from the enum itself.
#[test]
fn error_code_all_lists_every_code_of_the_enum() {
    let bindings = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/src/bindings.ts"),
    )
    .expect("ui/src/bindings.ts");
    // The union's members, one per line after their doc comments; the last ends in `;`.
    let start = bindings
        .find("export type ErrorCode_Serialize =")
        .expect("the ErrorCode union in the bindings");
    let mut in_ts = Vec::new();
    for line in bindings[start..].lines().skip(1) {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('"') {
            in_ts.push(rest.split('"').next().unwrap_or_default());
            if line.ends_with(';') {
                break;
            }
        }
    }
    let mut in_rust: Vec<&str> = roger_client::protocol::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    in_ts.sort_unstable();
    in_rust.sort_unstable();
    assert_eq!(in_ts, in_rust);
}
