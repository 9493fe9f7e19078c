//! The SFU must never be able to derive media keys (DESIGN §2, §4.4): its dependency
//! closure may not contain openmls, the sframe crate, or our key-holding crates.

use std::collections::{BTreeSet, HashMap};

const FORBIDDEN: &[&str] = &["openmls", "sframe", "sotto-media", "sotto-client"];

/// Names of every package `root` depends on (normal and build dependencies,
/// transitively), per `cargo metadata`.
fn closure(meta: &serde_json::Value, root: &str) -> BTreeSet<String> {
    let packages = meta["packages"].as_array().expect("packages");
    let name_of: HashMap<&str, &str> = packages
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("id"),
                p["name"].as_str().expect("name"),
            )
        })
        .collect();
    let nodes = meta["resolve"]["nodes"].as_array().expect("resolve");
    let by_id: HashMap<&str, &serde_json::Value> = nodes
        .iter()
        .map(|n| (n["id"].as_str().expect("id"), n))
        .collect();
    let root_id = packages
        .iter()
        .find(|p| p["name"] == root)
        .and_then(|p| p["id"].as_str())
        .expect("root package");
    let mut seen = BTreeSet::new();
    let mut stack = vec![root_id];
    while let Some(id) = stack.pop() {
        for dep in by_id[id]["deps"].as_array().expect("deps") {
            let kinds = dep["dep_kinds"].as_array().expect("kinds");
            let runtime = kinds
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            let dep_id = dep["pkg"].as_str().expect("pkg");
            if runtime && seen.insert(name_of[dep_id].to_owned()) {
                stack.push(dep_id);
            }
        }
    }
    seen
}

fn metadata() -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("metadata json")
}

fn forbidden_in(deps: &BTreeSet<String>) -> Vec<&String> {
    deps.iter()
        .filter(|d| {
            FORBIDDEN
                .iter()
                .any(|f| d.as_str() == *f || d.starts_with(&format!("{f}_")))
        })
        .collect()
}

#[test]
fn sfu_dependency_closure_has_no_key_material_crates() {
    let meta = metadata();
    let sfu = closure(&meta, "sotto-sfu");
    assert!(
        sfu.contains("sotto-wire"),
        "the check sees the SFU's real dependencies"
    );
    assert!(
        forbidden_in(&sfu).is_empty(),
        "sotto-sfu can reach {:?}",
        forbidden_in(&sfu)
    );
    // The same check does find them where they are, so it cannot pass vacuously.
    let client = closure(&meta, "sotto-client");
    assert!(
        forbidden_in(&client)
            .iter()
            .any(|d| d.as_str() == "openmls")
    );
    assert!(forbidden_in(&client).iter().any(|d| d.as_str() == "sframe"));
}
