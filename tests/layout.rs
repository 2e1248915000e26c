//! The house rules that a reader relies on, checked on the source tree itself: dependencies
//! between top-level modules point one way (no import circle), no file in `proxy/` is over 600
//! lines, no function is over 120 lines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, bottom first. A module may import only modules of a lower layer.
const LAYERS: &[&[&str]] = &[
    &["config"],
    &["metrics", "route"],
    &["state"],
    &["data"],
    &["release", "shadow"],
    &["fleet"],
    &["control"],
    &["admin"],
    &["app"],
    &["cli"],
];

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 120;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).expect("proxy/ is readable");
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    assert!(files.len() > 20, "the walk found the source tree");
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("source is UTF-8");
            (
                f.strip_prefix(&root).expect("under proxy/").to_path_buf(),
                text,
            )
        })
        .collect()
}

/// The top-level module a file belongs to: `data/handler.rs` -> `data`, `metrics.rs` -> `metrics`.
fn top_module(relative: &Path) -> String {
    let first = relative.components().next().expect("a path");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `crate::NAME` a file refers to, outside comments.
fn crate_refs(text: &str) -> Vec<String> {
    let mut refs = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                refs.push(name);
            }
            rest = after;
        }
    }
    refs
}

#[test]
fn dependencies_between_top_level_modules_point_one_way() {
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    for (file, text) in sources() {
        let from = top_module(&file);
        if from == "lib" || from == "main" {
            continue;
        }
        for to in crate_refs(&text) {
            if to != from {
                edges
                    .entry((from.clone(), to))
                    .or_insert(file.display().to_string());
            }
        }
    }
    let mut wrong = Vec::new();
    for ((from, to), file) in &edges {
        match (layer_of(from), layer_of(to)) {
            (Some(a), Some(b)) if a > b => {}
            (Some(_), Some(_)) => {
                wrong.push(format!("{file}: {from} -> {to} points up or sideways"))
            }
            _ => wrong.push(format!(
                "{file}: {from} -> {to}: a module missing from LAYERS"
            )),
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn no_source_file_is_over_600_lines() {
    let long: Vec<String> = sources()
        .iter()
        .filter(|(_, text)| text.lines().count() > MAX_FILE_LINES)
        .map(|(f, text)| format!("{}: {} lines", f.display(), text.lines().count()))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// Functions and their length in lines, from rustfmt-formatted source: a `fn` line and the first
/// later line that closes a brace at the same indentation.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let head = trimmed
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ")
            .trim_start_matches("const ")
            .trim_start_matches("async ");
        let Some(signature) = head.strip_prefix("fn ") else {
            continue;
        };
        if line.ends_with(';') {
            continue;
        }
        let name: String = signature
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let close = " ".repeat(indent) + "}";
        if let Some(end) = lines[i + 1..]
            .iter()
            .position(|l| l.starts_with(&close) && l.trim() == "}")
        {
            out.push((name, i + 1, end + 2));
        }
    }
    out
}

#[test]
fn function_finder_measures_a_known_function() {
    let text = "fn a() {\n    let x = 1;\n}\n\n    pub async fn b(\n        y: u8,\n    ) {\n        c();\n    }\n";
    assert_eq!(
        functions(text),
        vec![("a".to_string(), 1, 3), ("b".to_string(), 5, 5)]
    );
}

#[test]
fn no_function_is_over_120_lines() {
    let mut long = Vec::new();
    for (file, text) in sources() {
        for (name, line, len) in functions(&text) {
            if len > MAX_FN_LINES {
                long.push(format!("{}:{line} fn {name}: {len} lines", file.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// The Dockerfile builds the dependencies first from a stub of every target the manifests declare
/// (Cargo reads them all, and stops at a declared file that is missing): each `path = "…"` of a
/// `[[bench]]` or `[[example]]` in `Cargo.toml` must be stubbed there. Missed once, for
/// `floor-proxy`, and no build on this machine could notice (base images cannot be pulled here).
#[test]
fn the_dockerfile_stubs_every_target_of_the_manifest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    // Explicit paths, and the benches at their default place (`benches/NAME.rs`).
    let mut section = "";
    let mut paths = Vec::new();
    for line in manifest.lines() {
        if line.starts_with('[') {
            section = line;
        } else if let Some(path) = line
            .strip_prefix("path = \"")
            .and_then(|l| l.strip_suffix('"'))
        {
            paths.push(path.to_string());
        } else if let Some(name) = line
            .strip_prefix("name = \"")
            .and_then(|l| l.strip_suffix('"'))
        {
            if section == "[[bench]]" {
                paths.push(format!("benches/{name}.rs"));
            }
        }
    }
    paths.retain(|p| p.ends_with(".rs"));
    assert!(paths.len() >= 12, "targets read from Cargo.toml: {paths:?}");
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| {
            !dockerfile.contains(&format!("> {p}")) && !dockerfile.contains(&format!("touch {p}"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not stubbed in the Dockerfile: {missing:?}"
    );
}
