//! The invariants of docs/ARCHITECTURE.md, checked against `cargo metadata`.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

use super::workspace;

/// Crates the domain must never reach, directly or through another crate.
const FRAMEWORKS: &[&str] = &[
    "actix", "tokio", "papaya", "slog", "config", "serde", "mio", "hyper",
];

struct Graph {
    /// Package name by package id.
    names: HashMap<String, String>,
    /// Normal (non-dev, non-build) dependencies by package id.
    deps: HashMap<String, Vec<String>>,
}

impl Graph {
    fn load() -> Self {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let output = Command::new(cargo)
            .current_dir(workspace())
            .args(["metadata", "--format-version", "1", "--locked"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
        let names = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_owned(),
                    p["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let deps = metadata["resolve"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|node| {
                let normal = node["deps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| {
                        d["dep_kinds"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|k| k["kind"].is_null())
                    })
                    .map(|d| d["pkg"].as_str().unwrap().to_owned())
                    .collect();
                (node["id"].as_str().unwrap().to_owned(), normal)
            })
            .collect();
        Self { names, deps }
    }

    fn id(&self, name: &str) -> &str {
        self.names
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(id, _)| id.as_str())
            .unwrap()
    }

    /// Names of the direct normal dependencies of `name`.
    fn direct(&self, name: &str) -> BTreeSet<&str> {
        self.deps[self.id(name)]
            .iter()
            .map(|id| self.names[id].as_str())
            .collect()
    }

    /// Names of everything `name` depends on at run time, transitively.
    fn closure(&self, name: &str) -> BTreeSet<&str> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![self.id(name)];
        while let Some(id) = stack.pop() {
            for dep in &self.deps[id] {
                if seen.insert(self.names[dep].as_str()) {
                    stack.push(dep);
                }
            }
        }
        seen
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// "The domain depends on no framework."
#[test]
fn the_domain_depends_on_no_framework() {
    let graph = Graph::load();
    let direct: BTreeSet<String> = graph
        .direct("feed-domain")
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(direct, set(&["thiserror"]));
    let reached = graph.closure("feed-domain");
    let bad: Vec<_> = reached
        .iter()
        .filter(|name| FRAMEWORKS.iter().any(|f| name.starts_with(f)))
        .collect();
    assert!(bad.is_empty(), "feed-domain reaches {bad:?}");
    assert!(
        !reached.iter().any(|n| n.starts_with("feed-")),
        "feed-domain depends on {reached:?}"
    );
}

/// "Dependencies point inward."
#[test]
fn dependencies_point_inward() {
    let graph = Graph::load();
    let ours = |name: &str| -> BTreeSet<String> {
        graph
            .direct(name)
            .into_iter()
            .filter(|d| d.starts_with("feed-"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(ours("feed-memory"), set(&["feed-domain"]));
    assert_eq!(ours("feed-http"), set(&["feed-domain"]));
    assert_eq!(ours("feed-import"), set(&[]));
    assert_eq!(ours("feed-redis"), set(&["feed-domain"]));
    assert_eq!(
        ours("feed-server"),
        set(&[
            "feed-domain",
            "feed-http",
            "feed-import",
            "feed-memory",
            "feed-redis"
        ])
    );
    let reaches = |name: &str, banned: &dyn Fn(&str) -> bool| {
        let bad: Vec<String> = graph
            .closure(name)
            .into_iter()
            .filter(|n| banned(n))
            .map(str::to_owned)
            .collect();
        assert!(bad.is_empty(), "{name} reaches {bad:?}");
    };
    reaches("feed-memory", &|n| {
        n.starts_with("actix") || n.starts_with("tokio") || n == "config"
    });
    reaches("feed-http", &|n| {
        matches!(n, "feed-memory" | "feed-redis" | "feed-import" | "config")
    });
    reaches("feed-import", &|n| {
        n.starts_with("actix") || n.starts_with("tokio") || n == "config"
    });
    reaches("feed-redis", &|n| {
        n.starts_with("actix") || matches!(n, "config" | "feed-memory" | "feed-http")
    });
}

/// "`feed-server` holds no data lifecycle."
#[test]
fn the_server_holds_no_data_lifecycle() {
    let src = workspace().join("crates/feed-server/src");
    let mut modules: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    modules.sort();
    assert_eq!(
        modules,
        [
            "export.rs",
            "import.rs",
            "lib.rs",
            "logging.rs",
            "main.rs",
            "recorder.rs",
            "redis.rs",
            "settings.rs"
        ]
    );
    for module in &modules {
        let text = std::fs::read_to_string(src.join(module)).unwrap();
        for port in ["DataControl for", "Publish<"] {
            assert!(
                !text
                    .lines()
                    .any(|line| line.trim_start().starts_with("impl") && line.contains(port)),
                "crates/feed-server/src/{module} implements {port:?}"
            );
        }
    }
}

/// "The profiler is not in the default build."
#[test]
fn the_profiler_is_not_in_the_default_build() {
    let graph = Graph::load();
    assert!(!graph.closure("feed-server").contains("pprof"));
}
