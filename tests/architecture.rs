//! ARCHITECTURE.md's invariants on module dependencies, checked on the source: which top-level
//! module may name which (`crate::x`), that only the HTTP edge knows axum, and that the tools
//! (`eval`, `bench`) do not pull the HTTP stack. A new import that breaks a rule fails here
//! with the file and line, before review has to spot it.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the modules it may import. Anything else is a violation.
const ALLOWED: &[(&str, &[&str])] = &[
    ("auth", &[]),
    ("config", &[]),
    ("tokens", &[]),
    // The output guard: pure rules over text and the policy files; the answering path calls it.
    ("guard", &[]),
    ("llm", &["config"]),
    ("retrieval", &["config", "guard", "tokens"]),
    ("prompt", &["config", "llm", "retrieval", "tokens"]),
    // The storage seam: plain data and the traits it is read through live in the domain
    // modules and name `StoreError`; `store` implements those traits over SQL. The four are
    // one layer (see STORAGE_SEAM), which nothing below them imports.
    ("transcript", &["store"]),
    ("learner", &["store", "transcript"]),
    (
        "review",
        &[
            "config",
            "learner",
            "llm",
            "prompt",
            "retrieval",
            "store",
            "transcript",
        ],
    ),
    // `prompt`: the studio's versions and experiments are prompt data the store reads and
    // writes (migration 0011); `prompt` itself names no storage. `guard`: likewise the policy
    // overrides course teams write through the API (migration 0016).
    (
        "store",
        &[
            "config",
            "guard",
            "learner",
            "prompt",
            "review",
            "transcript",
        ],
    ),
    (
        "project",
        &[
            "config",
            "learner",
            "retrieval",
            "store",
            "tokens",
            "transcript",
        ],
    ),
    (
        "chat",
        &[
            "auth",
            "config",
            "guard",
            "learner",
            "llm",
            "project",
            "prompt",
            "retrieval",
            "review",
            "store",
            "tokens",
            "transcript",
        ],
    ),
    (
        "index",
        &["config", "learner", "project", "retrieval", "store"],
    ),
    (
        "eval",
        &[
            "chat",
            "config",
            "guard",
            "index",
            "learner",
            "llm",
            "project",
            "prompt",
            "retrieval",
            "review",
            "store",
            "transcript",
        ],
    ),
    ("bench", &["config", "eval", "index", "retrieval"]),
    // `eval`: the studio runs the shipped prompt evals in-process, and a replay without a
    // model answers with `eval prompts`' deterministic fake.
    (
        "http",
        &[
            "auth",
            "chat",
            "config",
            "eval",
            "guard",
            "learner",
            "llm",
            "project",
            "prompt",
            "retrieval",
            "review",
            "store",
            "tokens",
            "transcript",
        ],
    ),
];

/// Modules that form one layer for the cycle check: the domain data with its seams, and the
/// store that implements them.
const STORAGE_SEAM: &[&str] = &["store", "transcript", "learner", "review"];

/// Modules that assemble everything (start-up, the command line) may import any module.
const ASSEMBLERS: &[&str] = &["startup", "cli"];

/// Where axum (and so the HTTP stack) may be named.
const KNOWS_AXUM: &[&str] = &["http", "startup"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file belongs to: `src/http/ws/mod.rs` → `http`, `src/chat.rs` → `chat`.
fn module_of(path: &Path) -> Option<String> {
    let relative = path.strip_prefix(src()).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line without its `//` comment (doc comments name modules in prose).
fn code_of(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

/// The identifier `text` starts with, if any.
fn leading_ident(text: &str) -> Option<String> {
    let name: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Every top-level module a line names through `crate::`, including `crate::{a::X, b}`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            found.extend(
                group[..end]
                    .split(',')
                    .filter_map(|item| leading_ident(item.trim())),
            );
        } else {
            found.extend(leading_ident(rest));
        }
    }
    found
}

fn sources() -> Vec<(PathBuf, String, String)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let module = module_of(&path)?;
            let text = std::fs::read_to_string(&path).expect("read source");
            Some((path, module, text))
        })
        .collect()
}

#[test]
fn every_module_imports_only_what_architecture_md_allows() {
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(module, deps)| (*module, deps.iter().copied().collect()))
        .collect();
    let mut violations = Vec::new();
    let mut unknown = BTreeSet::new();
    for (path, module, text) in sources() {
        if ASSEMBLERS.contains(&module.as_str()) {
            continue;
        }
        let Some(deps) = allowed.get(module.as_str()) else {
            unknown.insert(module);
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            for dep in crate_paths(code_of(line)) {
                if dep != module && !deps.contains(dep.as_str()) {
                    violations.push(format!(
                        "{}:{}: `{module}` imports `{dep}`",
                        path.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules missing from the dependency table in tests/architecture.rs (and ARCHITECTURE.md): {unknown:?}"
    );
    assert!(
        violations.is_empty(),
        "imports against ARCHITECTURE.md's invariants:\n{}",
        violations.join("\n")
    );
}

#[test]
fn only_the_http_edge_knows_axum() {
    let mut violations = Vec::new();
    for (path, module, text) in sources() {
        if KNOWS_AXUM.contains(&module.as_str()) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if code_of(line).contains("axum::") {
                violations.push(format!("{}:{}", path.display(), n + 1));
            }
        }
    }
    assert!(violations.is_empty(), "axum outside http: {violations:?}");
}

#[test]
fn the_dependency_table_has_no_cycle() {
    // Dependencies point inward: following the allowed imports never leads back (the storage
    // seam counts as one module).
    let node = |m: &'static str| {
        if STORAGE_SEAM.contains(&m) {
            "storage"
        } else {
            m
        }
    };
    let mut allowed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (module, deps) in ALLOWED {
        let entry = allowed.entry(node(module)).or_default();
        for dep in deps.iter().map(|d| node(d)) {
            if dep != node(module) && !entry.contains(&dep) {
                entry.push(dep);
            }
        }
    }
    fn visit<'a>(
        module: &'a str,
        allowed: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
    ) {
        assert!(!path.contains(&module), "cycle: {path:?} -> {module}");
        path.push(module);
        for dep in allowed.get(module).into_iter().flatten() {
            visit(dep, allowed, path);
        }
        path.pop();
    }
    for module in allowed.keys() {
        visit(module, &allowed, &mut Vec::new());
    }
}

#[test]
fn the_checker_sees_grouped_and_nested_imports() {
    assert_eq!(
        crate_paths("use crate::{config::Settings, http::AppState};"),
        ["config", "http"]
    );
    assert_eq!(
        crate_paths("let x = crate::retrieval::chunk::tokenizer();"),
        ["retrieval"]
    );
    assert!(crate_paths(code_of("// see crate::http")).is_empty());
}
