//! The rooms of `src/` keep their floors: each imports only rooms below it, so sources and
//! sinks never see the engine, and the records in `call.rs` depend on nothing. A new import
//! that climbs a floor fails here with the room and the line.

mod support;

/// Lowest floor first; rooms on one floor do not import each other.
const FLOORS: &[&[&str]] = &[
    &["call", "private_files", "phonetics"],
    &["audio", "model_store"],
    &["asr"],
    &["detect"],
    &["sources", "sinks", "render"],
    &["engine", "relay"],
    &["server"],
    &["score", "config"],
    &["cli"],
];

fn floor(room: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&room))
}

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_room_imports_a_room_above_it() {
    let src = support::repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut climbs = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let room = rel.split(['/', '.']).next().unwrap().to_owned();
        if room == "lib" || room == "main" {
            continue;
        }
        let here = floor(&room).unwrap_or_else(|| panic!("src/{rel}: room {room} has no floor"));
        for (n, line) in std::fs::read_to_string(&path).unwrap().lines().enumerate() {
            // Doc comments may name any room; code may not import upwards.
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (i, _) in line.match_indices("crate::") {
                let target: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if target == room {
                    continue;
                }
                match floor(&target) {
                    Some(there) if there < here => {}
                    _ => climbs.push(format!("src/{rel}:{}: {room} uses crate::{target}", n + 1)),
                }
            }
        }
    }
    assert!(
        climbs.is_empty(),
        "imports that climb a floor:\n{}",
        climbs.join("\n")
    );
}
