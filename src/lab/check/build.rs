//! Builds the three workers from the learner's tree, with the profile the `lab` binary was built
//! with, and says plainly when the learner's code does not compile.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kind::WorkerKind;

/// The workers `lab check` runs.
pub const WORKERS: [WorkerKind; 3] = [WorkerKind::Exercise, WorkerKind::Bad, WorkerKind::Optimized];

/// `debug` or `release`: what this `lab` binary is, so the check reuses the same build.
pub const fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Builds the workers in `tree`; returns the directory holding their binaries.
pub fn build(tree: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command.current_dir(tree).arg("build").arg("--quiet");
    if profile() == "release" {
        command.arg("--release");
    }
    for kind in WORKERS {
        command.arg("--bin").arg(kind.binary());
    }
    eprintln!(
        "building {} ({} profile)...",
        WORKERS.map(|k| k.binary()).join(", "),
        profile()
    );
    let output = command.output().map_err(|e| {
        format!(
            "cannot run `{} build`: {e} (is cargo installed and on PATH?)",
            cargo.to_string_lossy()
        )
    })?;
    if !output.status.success() {
        return Err(format!(
            "your worker does not build; cargo says:\n\n{}\nfix src/exercise.rs (or start a \
             lesson over with `lab exercise reset LESSON`) and run `lab check` again",
            String::from_utf8_lossy(&output.stderr).trim_end()
        ));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                tree.join(dir)
            }
        })
        .unwrap_or_else(|| tree.join("target"));
    Ok(target.join(profile()))
}
