//! `docs/schema/*.json` are generated from the records in `src/call.rs`: this test fails when
//! they drift apart. After a deliberate change, `VISHGUARD_BLESS=1 cargo test --test schema`
//! rewrites them (and the change belongs in the README's records section).

mod support;

#[test]
fn the_documented_schemas_match_the_records() {
    let dir = support::repo().join("docs/schema");
    let bless = std::env::var_os("VISHGUARD_BLESS").is_some();
    for (name, schema) in vishguard::call::json_schemas() {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "docs/schema/{name} is out of step with src/call.rs: run \
             `VISHGUARD_BLESS=1 cargo test --test schema` and say what changed in the README"
        );
        // The schema names the version field and the kinds of event.
        assert!(text.contains("schema_version"));
    }
    let event = std::fs::read_to_string(dir.join("event.json")).unwrap_or_default();
    for kind in ["call_started", "transcript", "alert", "call_ended"] {
        assert!(event.contains(&format!("\"{kind}\"")), "{kind}");
    }
}
