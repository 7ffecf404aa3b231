//! The crate graph keeps its layers: a crate that gains a forbidden dependency fails here,
//! each offending edge named. Read from `cargo metadata` (the workspace's own manifests).
//!
//! `cargo test --workspace --test deps -- --nocapture` also prints the graph of Hearth's
//! crates.

use std::collections::BTreeSet;

use serde_json::Value;

/// `(crate, what it must not depend on, why)`. `*` is every other crate of the workspace.
const FORBIDDEN: &[(&str, &[&str], &str)] = &[
    (
        "hearth-core",
        &["*"],
        "the pure logic does no I/O and knows nothing of the other crates",
    ),
    (
        "hearth-devices",
        &["hearth-cluster"],
        "device adapters know nothing of Raft",
    ),
    (
        "hearth-store",
        &["hearth-node"],
        "storage sits below the node",
    ),
    (
        "hearth",
        &[
            "hearth-store",
            "hearth-cluster",
            "hearth-devices",
            "openraft",
        ],
        "the binary reaches a node only through hearth-node (and hearth-proto, hearth-core)",
    ),
];

/// One dependency edge of a workspace crate: (from, to, kind: normal, dev or build).
type Edge = (String, String, String);

/// Every declared dependency of every workspace package in `cargo metadata` output.
fn edges(metadata: &Value) -> (BTreeSet<String>, Vec<Edge>) {
    let packages = metadata["packages"].as_array().expect("metadata packages");
    let members: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    let mut out = Vec::new();
    for p in packages {
        let from = p["name"].as_str().expect("a package name");
        for d in p["dependencies"].as_array().expect("dependencies") {
            // The package's own name, even where a manifest renames it.
            let to = d["name"].as_str().expect("a dependency name");
            let kind = d["kind"].as_str().unwrap_or("normal");
            out.push((from.to_string(), to.to_string(), kind.to_string()));
        }
    }
    (members, out)
}

/// The edges [`FORBIDDEN`] rules out, as `from -> to (kind): why`.
fn forbidden_edges(metadata: &Value) -> Vec<String> {
    let (members, all) = edges(metadata);
    let mut bad = Vec::new();
    for (from, to, kind) in &all {
        for (krate, banned, why) in FORBIDDEN {
            if from != krate {
                continue;
            }
            let hit = banned
                .iter()
                .any(|b| b == to || (*b == "*" && members.contains(to) && to != from));
            if hit {
                bad.push(format!("{from} -> {to} ({kind}): {why}"));
            }
        }
    }
    bad
}

fn metadata() -> Value {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .args(["--manifest-path", manifest])
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn no_crate_depends_on_what_its_layer_forbids() {
    let m = metadata();
    let (members, all) = edges(&m);
    for name in ["hearth-core", "hearth-devices", "hearth-store", "hearth"] {
        assert!(
            members.contains(name),
            "{name} is not in the workspace any more"
        );
    }
    eprintln!("Hearth's crates and their dependencies on each other (and openraft):");
    for from in &members {
        let to: Vec<String> = all
            .iter()
            .filter(|(f, t, _)| f == from && (members.contains(t) || t == "openraft"))
            .map(|(_, t, k)| {
                if k == "normal" {
                    t.clone()
                } else {
                    format!("{t} ({k})")
                }
            })
            .collect();
        eprintln!("  {from} -> {}", to.join(", "));
    }
    let bad = forbidden_edges(&m);
    assert!(
        bad.is_empty(),
        "forbidden dependencies:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn each_offending_edge_is_named() {
    let dep = |name: &str, kind: Option<&str>| serde_json::json!({ "name": name, "kind": kind });
    let m = serde_json::json!({ "packages": [
        { "name": "hearth-core", "dependencies": [dep("serde", None), dep("hearth-store", Some("dev"))] },
        { "name": "hearth-store", "dependencies": [dep("hearth-core", None), dep("hearth-node", None)] },
        { "name": "hearth-devices", "dependencies": [dep("hearth-core", None), dep("hearth-cluster", None)] },
        { "name": "hearth-cluster", "dependencies": [dep("openraft", None)] },
        { "name": "hearth-node", "dependencies": [dep("hearth-store", None)] },
        { "name": "hearth", "dependencies": [
            dep("hearth-node", None), dep("openraft", None), dep("hearth-cluster", Some("build")),
        ] },
    ]});
    let bad = forbidden_edges(&m);
    let names: Vec<&str> = bad
        .iter()
        .map(|b| b.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "hearth-core -> hearth-store (dev)",
            "hearth-store -> hearth-node (normal)",
            "hearth-devices -> hearth-cluster (normal)",
            "hearth -> openraft (normal)",
            "hearth -> hearth-cluster (build)",
        ],
        "{bad:#?}"
    );
    // hearth-core on a crate outside the workspace is fine; so are the allowed edges.
    let ok = serde_json::json!({ "packages": [
        { "name": "hearth-core", "dependencies": [dep("sha2", None)] },
        { "name": "hearth", "dependencies": [dep("hearth-node", None), dep("hearth-core", None)] },
        { "name": "hearth-node", "dependencies": [dep("hearth-devices", None), dep("openraft", None)] },
        { "name": "hearth-devices", "dependencies": [dep("hearth-core", None)] },
    ]});
    assert_eq!(forbidden_edges(&ok), Vec::<String>::new());
}
