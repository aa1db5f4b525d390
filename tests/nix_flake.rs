//! Checks of the Nix flake that run without a modern Nix (CI has only Debian's Nix 2.8):
//!
//! - every `.nix` file parses (`nix-instantiate --parse`) and starts with a comment saying what
//!   it does;
//! - `deadnix --fail` finds no dead code, and the flake's formatter (nixpkgs-fmt, the same
//!   program and version as `nix fmt`) has nothing to change;
//! - `flake.lock` locks exactly the inputs of `flake.nix`: every input locked with rev, narHash
//!   and lastModified, `original` equal to the input URL, `follows` respected, no stray or
//!   missing nodes (`flake.nix`'s inputs are read by evaluating it with nix-instantiate);
//! - docker-compose.yml, the Nix demo and the NixOS module use the same files under
//!   prometheus/ and grafana/ that tests/monitoring_config.rs exercises, and those files exist.
//!
//! `nix flake check` runs everything else (builds, the demo and VM tests); inside its sandbox
//! these tests are filtered out (see nix/checks.nix). The checkers return lists of problems, and
//! `lock_checker_catches_broken_locks` feeds them broken locks to show each check can fail.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

const INSTALL_NIX: &str = "apt-get install -y --no-install-recommends nix-bin";
const INSTALL_DEADNIX: &str = "cargo install --locked deadnix@1.3.1";
const INSTALL_NIXPKGS_FMT: &str = "cargo install --locked nixpkgs-fmt@1.3.0";

/// The bad worker's problems and their environment variable, as CONTRACTS.md spells them
/// (`worker-bad --problems LIST`, env `LAB_PROBLEMS`; `all` and `none` besides).
const PROBLEMS: &[&str] = &[
    "leak",
    "capacity",
    "churn",
    "blocking",
    "contention",
    "backlog",
];
const PROBLEMS_ENV: &str = "LAB_PROBLEMS";

/// nixpkgs-fmt's version in the nixpkgs the flake pins, which `nix fmt` runs; formatting
/// differs between versions, so CI must run the same one.
const NIXPKGS_FMT_VERSION: &str = "1.3.0";

/// promtool's rule unit tests: test data for the cargo tests, loaded by no runner.
const RULE_TESTS_DIR: &str = "prometheus/tests";

/// Directories never searched for Nix files (build outputs, state, VCS).
const SKIP_DIRS: &[&str] = &[
    ".git",
    "target",
    "data",
    "node_modules",
    ".direnv",
    "pprof",
    "lab-out",
];

// ------------------------------------------------------------------------------------------
// helpers

fn root() -> PathBuf {
    support::repo_root()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(tool: &Path, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", tool.display()))
}

/// Every `.nix` file of the repository, relative to its root, sorted.
fn nix_files() -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.expect("directory entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                if !SKIP_DIRS.contains(&name.as_str()) && !name.starts_with("result") {
                    walk(&path, base, out);
                }
            } else if kind.is_file() && name.ends_with(".nix") {
                let rel = path.strip_prefix(base).expect("under the root");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut files = Vec::new();
    walk(&root(), &root(), &mut files);
    files.sort();
    files
}

/// Evaluates a Nix expression (no store needed: `--store dummy://`) and returns its JSON.
fn nix_eval_json(nix_instantiate: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--store", "dummy://", "--eval", "--strict", "--json"];
    all.extend_from_slice(args);
    let out = run(nix_instantiate, &all);
    assert!(
        out.status.success(),
        "nix-instantiate {all:?} failed:\n{}",
        output_text(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "nix-instantiate {all:?} printed no JSON ({e}):\n{}",
            output_text(&out)
        )
    })
}

/// A scratch directory under the system temp dir, unique to this process and test.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("profiling-lab-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

fn assert_no_problems(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what}:\n  - {}",
        problems.join("\n  - ")
    );
}

// ------------------------------------------------------------------------------------------
// flake.lock

/// The `original` attribute Nix records for a flake URL of the forms this flake uses:
/// `github:OWNER/REPO` and `github:OWNER/REPO/REF` (plus `?dir=`-free, `?ref=`-free forms).
fn original_of_url(url: &str) -> Result<Value, String> {
    let rest = url
        .strip_prefix("github:")
        .ok_or_else(|| format!("{url}: only github: inputs are expected in this flake"))?;
    if rest.contains('?') {
        return Err(format!(
            "{url}: query parameters are not expected in this flake"
        ));
    }
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [owner, repo] => Ok(json!({"type": "github", "owner": owner, "repo": repo})),
        [owner, repo, reference] => {
            Ok(json!({"type": "github", "owner": owner, "repo": repo, "ref": reference}))
        }
        _ => Err(format!("{url}: expected github:OWNER/REPO[/REF]")),
    }
}

fn is_hex40(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `sha256-` and 44 base64 characters (a 32-byte digest, one `=` of padding).
fn is_sri_sha256(s: &str) -> bool {
    let Some(b64) = s.strip_prefix("sha256-") else {
        return false;
    };
    b64.len() == 44
        && b64.ends_with('=')
        && !b64[..43].contains('=')
        && b64[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Problems with one locked github node: rev, narHash, lastModified, and `locked` agreeing
/// with `original`.
fn locked_node_problems(name: &str, node: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(locked) = node.get("locked") else {
        return vec![format!("node {name}: no `locked`")];
    };
    let original = node.get("original").cloned().unwrap_or(Value::Null);
    if locked["type"] != "github" {
        problems.push(format!(
            "node {name}: locked.type is {}, expected \"github\"",
            locked["type"]
        ));
    }
    for key in ["owner", "repo"] {
        if locked[key] != original[key] {
            problems.push(format!(
                "node {name}: locked.{key} {} differs from original.{key} {}",
                locked[key], original[key]
            ));
        }
    }
    match locked["rev"].as_str() {
        Some(rev) if is_hex40(rev) => {}
        other => problems.push(format!(
            "node {name}: locked.rev {other:?} is not 40 lowercase hex digits"
        )),
    }
    match locked["narHash"].as_str() {
        Some(hash) if is_sri_sha256(hash) => {}
        other => problems.push(format!(
            "node {name}: locked.narHash {other:?} is not sha256- + 44 base64"
        )),
    }
    // After 2017 (Nix flakes did not exist before) and not in the future.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    match locked["lastModified"].as_u64() {
        Some(t) if (1_500_000_000..=now).contains(&t) => {}
        other => problems.push(format!(
            "node {name}: locked.lastModified {other:?} is not a plausible timestamp"
        )),
    }
    problems
}

/// Resolves a lock-file input reference (a node name, or a `follows` path from the root) to a
/// node name.
fn resolve_input(lock: &Value, reference: &Value) -> Result<String, String> {
    match reference {
        Value::String(node) => Ok(node.clone()),
        Value::Array(path) => {
            let root = lock["root"].as_str().ok_or("no root node name")?;
            let mut node = root.to_owned();
            for step in path {
                let step = step
                    .as_str()
                    .ok_or_else(|| format!("follows path {reference} has a non-string"))?;
                let next = lock["nodes"][node.as_str()]["inputs"]
                    .get(step)
                    .ok_or_else(|| {
                        format!("follows path {reference}: node {node} has no input {step}")
                    })?;
                node = resolve_input(lock, next)?;
            }
            Ok(node)
        }
        other => Err(format!(
            "input reference {other} is neither a node name nor a follows path"
        )),
    }
}

/// Everything wrong with `lock` as the lock file of a flake whose `inputs` attribute evaluates
/// to `inputs`.
fn lock_problems(inputs: &Value, lock: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if lock["version"] != 7 {
        problems.push(format!("lock version is {}, expected 7", lock["version"]));
    }
    let Some(root_name) = lock["root"].as_str() else {
        return vec!["lock has no root node name".to_owned()];
    };
    let Some(nodes) = lock["nodes"].as_object() else {
        return vec!["lock has no nodes".to_owned()];
    };
    let Some(inputs) = inputs.as_object() else {
        return vec!["flake.nix's inputs are not an attribute set".to_owned()];
    };
    let root_inputs = lock["nodes"][root_name]["inputs"]
        .as_object()
        .cloned()
        .unwrap_or_default();

    let declared: BTreeSet<&String> = inputs.keys().collect();
    let locked: BTreeSet<&String> = root_inputs.keys().collect();
    if declared != locked {
        problems.push(format!(
            "root inputs {locked:?} differ from flake.nix's inputs {declared:?}"
        ));
    }

    for (name, spec) in inputs {
        let Some(reference) = root_inputs.get(name) else {
            continue;
        };
        if let Some(follows) = spec.get("follows").and_then(Value::as_str) {
            let expected: Vec<&str> = follows.split('/').collect();
            if reference != &json!(expected) {
                problems.push(format!(
                    "input {name} follows {follows}, but the lock has {reference}"
                ));
            }
            continue;
        }
        let node_name = match resolve_input(lock, reference) {
            Ok(n) => n,
            Err(e) => {
                problems.push(format!("input {name}: {e}"));
                continue;
            }
        };
        let Some(node) = nodes.get(&node_name) else {
            problems.push(format!("input {name}: node {node_name} is missing"));
            continue;
        };
        match spec.get("url").and_then(Value::as_str).map(original_of_url) {
            Some(Ok(original)) => {
                if node["original"] != original {
                    problems.push(format!(
                        "input {name}: original {} differs from its URL's {original}",
                        node["original"]
                    ));
                }
            }
            Some(Err(e)) => problems.push(format!("input {name}: {e}")),
            None => problems.push(format!("input {name}: no url in flake.nix")),
        }
        if spec.get("flake") == Some(&Value::Bool(false))
            && node.get("flake") != Some(&Value::Bool(false))
        {
            problems.push(format!(
                "input {name} is `flake = false` but its node lacks \"flake\": false"
            ));
        }
        // Inputs of this input that flake.nix makes follow something.
        let node_inputs = node
            .get("inputs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(overrides) = spec.get("inputs").and_then(Value::as_object) {
            for (sub, sub_spec) in overrides {
                if let Some(follows) = sub_spec.get("follows").and_then(Value::as_str) {
                    let expected: Vec<&str> = follows.split('/').collect();
                    if node_inputs.get(sub) != Some(&json!(expected)) {
                        problems.push(format!(
                            "input {name}.inputs.{sub} follows {follows}, but node {node_name} has {:?}",
                            node_inputs.get(sub)
                        ));
                    }
                }
            }
        }
    }

    // Every node is reachable from the root, every reference resolves, and every node but the
    // root is locked.
    let mut reachable = BTreeSet::from([root_name.to_owned()]);
    let mut queue = vec![root_name.to_owned()];
    while let Some(name) = queue.pop() {
        let Some(node) = nodes.get(&name) else {
            problems.push(format!("node {name} is referenced but missing"));
            continue;
        };
        if name != root_name {
            problems.extend(locked_node_problems(&name, node));
        }
        for (input, reference) in node
            .get("inputs")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            match resolve_input(lock, reference) {
                Ok(target) if !nodes.contains_key(&target) => {
                    problems.push(format!(
                        "node {name}: input {input} points at missing node {target}"
                    ));
                }
                Ok(target) => {
                    if reachable.insert(target.clone()) {
                        queue.push(target);
                    }
                }
                Err(e) => problems.push(format!("node {name}: input {input}: {e}")),
            }
        }
    }
    for name in nodes.keys() {
        if !reachable.contains(name) {
            problems.push(format!(
                "node {name} is not reachable from the root (stray)"
            ));
        }
    }
    problems
}

// ------------------------------------------------------------------------------------------
// docker-compose.yml (read as text: the repository has no YAML parser, and the file is ours)

/// The bind mounts `- ./HOST:CONTAINER[:MODE]` of docker-compose.yml, host path without `./`.
fn compose_bind_mounts(compose: &str) -> BTreeMap<String, String> {
    compose
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- ./"))
        .filter_map(|mount| {
            let mut parts = mount.split(':');
            Some((
                parts.next()?.trim_end_matches('/').to_owned(),
                parts.next()?.to_owned(),
            ))
        })
        .collect()
}

/// The lines of one service of a Compose file: from `  NAME:` under `services:` to the next
/// line indented two spaces or less.
fn compose_service<'a>(compose: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("  {name}:");
    let mut lines = compose.lines().skip_while(|line| *line != header);
    let Some(first) = lines.next() else {
        return Vec::new();
    };
    std::iter::once(first)
        .chain(lines.take_while(|line| line.trim().is_empty() || line.starts_with("   ")))
        .collect()
}

/// The value of `KEY: value` or `- KEY=value` / `--KEY=value` forms in docker-compose.yml.
fn compose_values(compose: &str, key: &str) -> Vec<String> {
    compose
        .lines()
        .map(str::trim)
        .filter_map(|line| {
            let line = line.strip_prefix("- ").unwrap_or(line);
            line.strip_prefix(&format!("{key}: "))
                .or_else(|| line.strip_prefix(&format!("{key}=")))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .collect()
}

/// The repository files tests/monitoring_config.rs checks: its `const X: &str = "..."` paths
/// under prometheus/ and grafana/.
fn monitoring_test_paths() -> Vec<String> {
    read("tests/monitoring_config.rs")
        .lines()
        .filter(|line| line.trim_start().starts_with("const ") && line.contains(": &str = \""))
        .filter_map(|line| line.split('"').nth(1).map(str::to_owned))
        .filter(|path| path.starts_with("prometheus/") || path.starts_with("grafana/"))
        .collect()
}

/// Whether `path` is `dir` or lies under it.
fn is_within(path: &str, dir: &str) -> bool {
    path == dir || path.starts_with(&format!("{dir}/"))
}

// ------------------------------------------------------------------------------------------
// tests

#[test]
fn every_nix_file_parses_and_says_what_it_does() {
    let files = nix_files();
    for expected in [
        "flake.nix",
        "nix/lab.nix",
        "nix/demo.nix",
        "nix/nixos-module.nix",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} not found among {files:?}"
        );
    }
    let undocumented: Vec<&String> = files
        .iter()
        .filter(|f| !read(f).trim_start().starts_with('#'))
        .collect();
    assert!(
        undocumented.is_empty(),
        "these .nix files do not start with a comment: {undocumented:?}"
    );

    let Some(nix_instantiate) = support::require_tool("nix-instantiate", INSTALL_NIX) else {
        return;
    };
    let mut problems = Vec::new();
    for file in &files {
        let out = run(&nix_instantiate, &["--store", "dummy://", "--parse", file]);
        if !out.status.success() {
            problems.push(format!("{file}:\n{}", output_text(&out)));
        }
    }
    assert_no_problems("nix-instantiate --parse failed", problems);

    // The same command rejects broken Nix, so a pass above means something.
    let dir = scratch_dir("nix-parse");
    let broken = dir.join("broken.nix");
    std::fs::write(&broken, "{ a = 1; b = ; }\n").expect("writing a scratch file");
    let out = run(
        &nix_instantiate,
        &[
            "--store",
            "dummy://",
            "--parse",
            broken.to_str().expect("utf-8"),
        ],
    );
    assert!(
        !out.status.success(),
        "nix-instantiate --parse accepted broken Nix"
    );
}

#[test]
fn nix_code_has_no_dead_code() {
    let Some(deadnix) = support::require_tool("deadnix", INSTALL_DEADNIX) else {
        return;
    };
    let files = nix_files();
    let mut args = vec!["--fail"];
    args.extend(files.iter().map(String::as_str));
    let out = run(&deadnix, &args);
    assert!(
        out.status.success(),
        "deadnix --fail found dead code:\n{}",
        output_text(&out)
    );

    let dir = scratch_dir("deadnix");
    let dead = dir.join("dead.nix");
    std::fs::write(&dead, "let unused = 1; in { x = 2; }\n").expect("writing a scratch file");
    let out = run(&deadnix, &["--fail", dead.to_str().expect("utf-8")]);
    assert!(
        !out.status.success(),
        "deadnix --fail missed an unused let binding"
    );
}

#[test]
fn nix_code_is_formatted_by_the_flakes_formatter() {
    // The flake's `formatter` is nixpkgs-fmt; CI checks with the same program.
    let lint = read("nix/nix-lint.nix");
    assert!(
        lint.contains("formatter = pkgs.writeShellApplication")
            && lint.contains("exec nixpkgs-fmt"),
        "nix/nix-lint.nix no longer makes nixpkgs-fmt the flake's formatter; update this test and .ci/run"
    );

    let Some(nixpkgs_fmt) = support::require_tool("nixpkgs-fmt", INSTALL_NIXPKGS_FMT) else {
        return;
    };
    let version = output_text(&run(&nixpkgs_fmt, &["--version"]));
    assert!(
        version
            .split_whitespace()
            .any(|word| word == NIXPKGS_FMT_VERSION),
        "nixpkgs-fmt --version says {version:?}, but `nix fmt` runs {NIXPKGS_FMT_VERSION}; install that one"
    );

    let files = nix_files();
    let mut args = vec!["--check"];
    args.extend(files.iter().map(String::as_str));
    let out = run(&nixpkgs_fmt, &args);
    assert!(
        out.status.success(),
        "nixpkgs-fmt would reformat (run `nix fmt` or `nixpkgs-fmt .`):\n{}",
        output_text(&out)
    );

    let dir = scratch_dir("nixpkgs-fmt");
    let ugly = dir.join("ugly.nix");
    std::fs::write(&ugly, "{a=1;\n    b  =2;}\n").expect("writing a scratch file");
    let out = run(&nixpkgs_fmt, &["--check", ugly.to_str().expect("utf-8")]);
    assert!(
        !out.status.success(),
        "nixpkgs-fmt --check accepted unformatted Nix"
    );
}

#[test]
fn flake_lock_matches_flake_inputs() {
    let lock: Value = serde_json::from_str(&read("flake.lock")).expect("flake.lock is JSON");
    let Some(nix_instantiate) = support::require_tool("nix-instantiate", INSTALL_NIX) else {
        return;
    };
    let inputs = nix_eval_json(&nix_instantiate, &["-E", "(import ./flake.nix).inputs"]);

    // The pins this project settled on: nixpkgs from the 26.05 release branch.
    assert_eq!(
        inputs["nixpkgs"]["url"], "github:NixOS/nixpkgs/nixos-26.05",
        "nixpkgs input"
    );
    assert_eq!(
        inputs["flake-parts"]["inputs"]["nixpkgs-lib"]["follows"], "nixpkgs",
        "flake-parts should reuse nixpkgs' lib"
    );
    assert_no_problems(
        "flake.lock does not match flake.nix",
        lock_problems(&inputs, &lock),
    );
}

#[test]
fn lock_checker_catches_broken_locks() {
    // A copy of this flake's inputs and lock shapes, so this runs without Nix.
    let inputs = json!({
        "nixpkgs": {"url": "github:NixOS/nixpkgs/nixos-26.05"},
        "parts": {"url": "github:hercules-ci/flake-parts", "inputs": {"nixpkgs-lib": {"follows": "nixpkgs"}}},
    });
    let node = |owner: &str, repo: &str, reference: Option<&str>| {
        let mut original = json!({"type": "github", "owner": owner, "repo": repo});
        if let Some(r) = reference {
            original["ref"] = json!(r);
        }
        json!({
            "locked": {
                "type": "github", "owner": owner, "repo": repo,
                "rev": "8eeec934ae0dbeca3d7868c059568a65c08b2fc3",
                "narHash": "sha256-lDebytrYdd47IBLwvNOD+6AGeoqZ78CIKlp70hzW280=",
                "lastModified": 1_784_011_430u64,
            },
            "original": original,
        })
    };
    let mut parts = node("hercules-ci", "flake-parts", None);
    parts["inputs"] = json!({"nixpkgs-lib": ["nixpkgs"]});
    let good = json!({
        "nodes": {
            "nixpkgs": node("NixOS", "nixpkgs", Some("nixos-26.05")),
            "parts": parts,
            "root": {"inputs": {"nixpkgs": "nixpkgs", "parts": "parts"}},
        },
        "root": "root",
        "version": 7,
    });
    assert_no_problems("the well-formed lock", lock_problems(&inputs, &good));

    type Breakage = fn(&mut Value);
    let breakages: &[(&str, Breakage)] = &[
        ("short rev", |l| {
            l["nodes"]["nixpkgs"]["locked"]["rev"] = json!("8eeec934")
        }),
        ("hex narHash", |l| {
            l["nodes"]["nixpkgs"]["locked"]["narHash"] = json!("sha256:abc")
        }),
        ("no lastModified", |l| {
            l["nodes"]["nixpkgs"]["locked"]
                .as_object_mut()
                .unwrap()
                .remove("lastModified");
        }),
        ("wrong ref", |l| {
            l["nodes"]["nixpkgs"]["original"]["ref"] = json!("nixos-25.11")
        }),
        ("follows ignored", |l| {
            l["nodes"]["parts"]["inputs"]["nixpkgs-lib"] = json!("nixpkgs_2")
        }),
        ("missing node", |l| {
            l["nodes"].as_object_mut().unwrap().remove("parts");
        }),
        ("stray node", |l| {
            l["nodes"]["old"] = l["nodes"]["nixpkgs"].clone()
        }),
        ("extra root input", |l| {
            l["nodes"]["root"]["inputs"]["old"] = json!("nixpkgs")
        }),
        ("locked elsewhere", |l| {
            l["nodes"]["nixpkgs"]["locked"]["owner"] = json!("someone")
        }),
        ("old lock version", |l| l["version"] = json!(6)),
    ];
    for (what, breakage) in breakages {
        let mut lock = good.clone();
        breakage(&mut lock);
        assert!(
            !lock_problems(&inputs, &lock).is_empty(),
            "the lock checker missed: {what}"
        );
    }
}

#[test]
fn docker_compose_nix_and_cargo_tests_share_the_monitoring_configs() {
    // The files the cargo tests exercise (promtool, structure checks) exist.
    let tested = monitoring_test_paths();
    for expected in [
        "prometheus/prometheus.yml",
        "grafana/dashboards/worker-performance.json",
    ] {
        assert!(
            tested.iter().any(|p| p == expected),
            "tests/monitoring_config.rs no longer checks {expected}"
        );
    }
    for path in &tested {
        assert!(
            root().join(path).exists(),
            "{path} (checked by tests/monitoring_config.rs) does not exist"
        );
    }

    // docker-compose.yml mounts them (directories, so that rule files and dashboards resolve).
    let compose = read("docker-compose.yml");
    let mounts = compose_bind_mounts(&compose);
    for path in &tested {
        assert!(
            mounts.keys().any(|host| is_within(path, host)),
            "docker-compose.yml mounts none of the directories holding {path}: {mounts:?}"
        );
    }
    for host in mounts.keys() {
        assert!(
            root().join(host).exists(),
            "docker-compose.yml mounts ./{host}, which does not exist"
        );
    }
    let container = |host: &str| {
        mounts
            .get(host)
            .cloned()
            .unwrap_or_else(|| panic!("docker-compose.yml does not mount ./{host}"))
    };
    assert_eq!(
        compose_values(&compose, "--config.file"),
        vec![format!("{}/prometheus.yml", container("prometheus"))],
        "Prometheus must read the mounted prometheus/prometheus.yml"
    );
    assert_eq!(
        compose_values(&compose, "LAB_DASHBOARDS_DIR"),
        vec![container("grafana/dashboards")]
    );
    assert_eq!(
        compose_values(&compose, "GF_PATHS_PROVISIONING"),
        vec![container("grafana/provisioning")]
    );

    // Nothing under nix/ but nix/lab.nix names a config path of its own, and the demo and the
    // NixOS module take theirs from it.
    for file in nix_files()
        .iter()
        .filter(|f| f.starts_with("nix/") && f.as_str() != "nix/lab.nix")
    {
        let text = read(file);
        for literal in [
            "../prometheus",
            "../grafana",
            "\"prometheus/",
            "\"grafana/",
            "prometheus.yml\"",
            ".json\"",
        ] {
            assert!(
                !text.contains(literal),
                "{file} names a config path itself ({literal}); use nix/lab.nix"
            );
        }
    }
    let demo = read("nix/demo.nix");
    for key in [
        "prometheusConfig",
        "grafanaProvisioningDir",
        "dashboardsDir",
        "dashboard",
    ] {
        assert!(
            demo.contains(&format!("lab.configFiles.{key}")),
            "nix/demo.nix does not use lab.configFiles.{key}"
        );
    }
    let module = read("nix/nixos-module.nix");
    for key in ["rulesDir", "dashboardsDir"] {
        assert!(
            module.contains(&format!("lab.configFiles.{key}")),
            "nix/nixos-module.nix does not use lab.configFiles.{key}"
        );
    }

    // Evaluated, nix/lab.nix's paths exist, cover every tested file, and agree with Docker's
    // settings.
    let Some(nix_instantiate) = support::require_tool("nix-instantiate", INSTALL_NIX) else {
        return;
    };
    let lab = nix_eval_json(&nix_instantiate, &["nix/lab.nix"]);
    let config_files: Vec<String> = lab["configFiles"]
        .as_object()
        .expect("configFiles")
        .values()
        .map(|v| v.as_str().expect("a path string").to_owned())
        .collect();
    for path in &config_files {
        assert!(
            root().join(path).exists(),
            "nix/lab.nix names {path}, which does not exist"
        );
    }
    let config_dirs: Vec<&str> = lab["configDirs"]
        .as_array()
        .expect("configDirs")
        .iter()
        .map(|v| v.as_str().expect("a directory name"))
        .collect();
    for path in &tested {
        // Everything the cargo tests check is in the store copy the Nix runners read...
        assert!(
            config_dirs.iter().any(|dir| is_within(path, dir)),
            "{path} is checked by the cargo tests but outside nix/lab.nix's configDirs {config_dirs:?}"
        );
        // ... and every config among them is used (all but promtool's rule tests: test data).
        if !is_within(path, RULE_TESTS_DIR) {
            assert!(
                config_files
                    .iter()
                    .any(|nix_path| is_within(path, nix_path)),
                "{path} is checked by the cargo tests but not used by the Nix runners ({config_files:?})"
            );
        }
    }
    let demo_args: Vec<&str> = lab["demoArgs"]
        .as_array()
        .expect("demoArgs")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let demo_args_json = demo_args
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        compose.matches(&demo_args_json).count(),
        2,
        "both workers in docker-compose.yml should run the demo settings {demo_args:?}"
    );
    assert_eq!(
        compose_values(&compose, "--storage.tsdb.retention.time"),
        vec![lab["retention"].as_str().expect("retention").to_owned()]
    );
    assert_eq!(
        compose_values(&compose, "--web.listen-address"),
        vec![format!(
            "{}:{}",
            lab["host"].as_str().unwrap(),
            lab["ports"]["prometheus"]
        )]
    );
    assert_eq!(
        compose_values(&compose, "GF_SERVER_HTTP_PORT"),
        vec![lab["ports"]["grafana"].to_string()]
    );
    assert_eq!(
        compose_values(&compose, "PROMETHEUS_URL"),
        vec![format!(
            "http://{}:{}",
            lab["host"].as_str().unwrap(),
            lab["ports"]["prometheus"]
        )]
    );
}

#[test]
fn every_runner_passes_the_problems_to_the_bad_worker_only() {
    // docker-compose.yml: the bad worker's service declares LAB_PROBLEMS without a value
    // (Compose passes the user's through, or leaves it unset); nothing else mentions it.
    let compose = read("docker-compose.yml");
    let bad = compose_service(&compose, "worker-bad");
    assert!(
        bad.iter()
            .any(|line| line.trim() == format!("{PROBLEMS_ENV}:")),
        "docker-compose.yml's worker-bad should declare `{PROBLEMS_ENV}:` (no value) under environment:\n{}",
        bad.join("\n")
    );
    for service in ["worker-optimized", "prometheus", "grafana"] {
        let lines = compose_service(&compose, service);
        assert!(
            !lines.is_empty(),
            "docker-compose.yml has no service {service}"
        );
        assert!(
            !lines.iter().any(|line| line.contains(PROBLEMS_ENV)),
            "docker-compose.yml's {service} must not get {PROBLEMS_ENV}"
        );
    }
    // The cargo override's environment is shared by both workers: it must not set it.
    assert!(
        !read("docker/compose.cargo.yml").contains(PROBLEMS_ENV),
        "docker/compose.cargo.yml sets {PROBLEMS_ENV} for both workers; only worker-bad may get it"
    );

    // The Nix demo drops the variable from the optimized worker's environment; the NixOS
    // module types its option by nix/lab.nix's list and adds --problems to the bad worker only.
    let demo = read("nix/demo.nix");
    assert!(
        demo.contains(
            r#"(kind == "optimized") [ "${pkgs.coreutils}/bin/env" "-u" lab.problemsEnv ]"#
        ),
        "nix/demo.nix no longer starts the optimized worker with `env -u` {PROBLEMS_ENV}"
    );
    let module = read("nix/nixos-module.nix");
    for expected in [
        "types.listOf (types.enum lab.problems)",
        r#"(lib.optionals (kind == "bad") problemsArgs)"#,
    ] {
        assert!(
            module.contains(expected),
            "nix/nixos-module.nix does not contain `{expected}`"
        );
    }

    // nix/lab.nix's list and variable are the contract's.
    let Some(nix_instantiate) = support::require_tool("nix-instantiate", INSTALL_NIX) else {
        return;
    };
    let lab = nix_eval_json(&nix_instantiate, &["nix/lab.nix"]);
    assert_eq!(lab["problems"], json!(PROBLEMS), "nix/lab.nix's problems");
    assert_eq!(
        lab["problemsEnv"], PROBLEMS_ENV,
        "nix/lab.nix's problemsEnv"
    );
}

#[test]
fn the_demos_grafana_writes_only_under_the_data_dir() {
    // Grafana resolves relative [paths] against its home, which the Nix demo has in the
    // read-only store: data, logs and plugins must all be given as writable paths, as
    // `lab demo` writes them into its grafana.ini.
    let demo = read("nix/demo.nix");
    for variable in ["GF_PATHS_DATA", "GF_PATHS_LOGS", "GF_PATHS_PLUGINS"] {
        assert!(
            demo.contains(&format!("{variable}=\"$data")),
            "nix/demo.nix's Grafana start script does not set {variable} under the demo's data dir"
        );
    }
}
