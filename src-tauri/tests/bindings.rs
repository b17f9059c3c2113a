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
