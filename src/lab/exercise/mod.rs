//! `lab exercise`: puts the learner's worker in place (`start`), restores it whole or lesson by
//! lesson (`reset`), shows the learner's change (`diff`) and which lessons it touches (`status`).
//!
//! The learner's worker is `src/exercise.rs`, built as `worker-exercise`. Its start is generated
//! from the tree's own `src/bad.rs` ([`generate`]), so it is always the bad worker being
//! compared against. Every write replaces the file whole (temp file, then rename) or not at all.

pub mod generate;
mod switches;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use self::generate::{LESSON_IDS, Section};

#[derive(Debug, Args)]
pub struct ExerciseArgs {
    #[command(subcommand)]
    command: ExerciseCommand,
    /// The lab's source tree [default: the directory holding Cargo.toml, from the current one up]
    #[arg(long, global = true, value_name = "DIR")]
    tree: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ExerciseCommand {
    /// Put the exercise in place (src/exercise.rs) and say what to do next
    Start {
        /// Replace an exercise that has changes (they are lost)
        #[arg(long)]
        force: bool,
    },
    /// Restore one lesson's sections of src/exercise.rs, or the whole file with --all
    Reset {
        /// Lessons to restore: leak, capacity, churn, blocking, contention, backlog
        #[arg(value_name = "LESSON", required_unless_present = "all")]
        lessons: Vec<String>,
        /// Restore the whole file
        #[arg(long, conflicts_with = "lessons")]
        all: bool,
        /// With --all: replace a file that has changes (they are lost)
        #[arg(long)]
        force: bool,
    },
    /// Show your change against the start, as a unified diff
    Diff,
    /// Which lessons' sections you have changed
    Status,
}

/// The lab's source tree: where src/bad.rs and src/exercise.rs are.
#[derive(Debug, Clone)]
pub struct Tree {
    pub root: PathBuf,
}

impl Tree {
    /// `given`, or the first directory from the current one up that holds the lab's Cargo.toml.
    pub fn locate(given: Option<&Path>) -> Result<Tree, String> {
        if let Some(dir) = given {
            return Tree::at(dir).ok_or_else(|| {
                format!(
                    "--tree {}: not the profiling-lab source tree (no Cargo.toml naming \
                     profiling-lab, or no src/bad.rs)",
                    dir.display()
                )
            });
        }
        let cwd = std::env::current_dir()
            .map_err(|e| format!("cannot read the current directory: {e}"))?;
        cwd.ancestors().find_map(Tree::at).ok_or_else(|| {
            format!(
                "{} is not inside the profiling-lab source tree: run lab from your checkout (the \
                 directory with Cargo.toml and src/bad.rs), or pass --tree DIR",
                cwd.display()
            )
        })
    }

    fn at(dir: &Path) -> Option<Tree> {
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).ok()?;
        (manifest.contains("name = \"profiling-lab\"") && dir.join("src/bad.rs").is_file()).then(
            || Tree {
                root: dir.to_path_buf(),
            },
        )
    }

    pub fn exercise(&self) -> PathBuf {
        self.root.join("src/exercise.rs")
    }

    /// The exercise's start, generated from this tree's src/bad.rs.
    pub fn start(&self) -> Result<String, String> {
        let bad = self.root.join("src/bad.rs");
        let text =
            fs::read_to_string(&bad).map_err(|e| format!("cannot read {}: {e}", bad.display()))?;
        Ok(generate::exercise_start(&text))
    }

    /// The learner's file, or `None` when there is none yet.
    pub fn current(&self) -> Result<Option<String>, String> {
        match fs::read_to_string(self.exercise()) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", self.exercise().display())),
        }
    }

    /// Replaces src/exercise.rs whole: a temp file beside it, flushed, then renamed over it.
    pub fn write_exercise(&self, text: &str) -> Result<(), String> {
        let path = self.exercise();
        let dir = path.parent().unwrap_or(Path::new("."));
        let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
        file.write_all(text.as_bytes()).map_err(fail)?;
        file.as_file().sync_all().map_err(fail)?;
        file.persist(&path).map_err(|e| fail(e.error))?;
        Ok(())
    }
}

/// Runs `lab exercise ...`.
pub fn run(args: ExerciseArgs) -> Result<ExitCode, String> {
    let tree = Tree::locate(args.tree.as_deref())?;
    match args.command {
        ExerciseCommand::Start { force } => start(&tree, force),
        ExerciseCommand::Reset {
            lessons,
            all,
            force,
        } => {
            if all {
                reset_all(&tree, force)
            } else {
                reset_lessons(&tree, &lessons)
            }
        }
        ExerciseCommand::Diff => diff(&tree),
        ExerciseCommand::Status => status(&tree),
    }
}

fn start(tree: &Tree, force: bool) -> Result<ExitCode, String> {
    let start = tree.start()?;
    let path = tree.exercise();
    match tree.current()? {
        Some(current) if current == start => {
            println!("The exercise is in place and unchanged: {}", path.display());
        }
        Some(current) if !force => {
            return Err(format!(
                "{} already has changes ({} lines differ from the start): keep going (see them \
                 with `lab exercise diff`, grade them with `lab check`), or start over with \
                 `lab exercise start --force` (your changes are lost)",
                path.display(),
                changed_lines(&start, &current)
            ));
        }
        _ => {
            tree.write_exercise(&start)?;
            println!("The exercise is in place: {}", path.display());
        }
    }
    println!(
        "\nIt is the bad worker's code, with each problem's comments cut down to how it shows.\n\
         Lessons, in order (docs/EXERCISES.md has the path and the hints):\n"
    );
    for lesson in crate::lab::check::LESSONS {
        println!("  {}. {:<9} {}", lesson.number, lesson.id, lesson.asks);
    }
    println!(
        "\nNext:\n  \
         lab demo --exercise          run it beside worker-bad and worker-optimized (worker_type=\"exercise\")\n  \
         lab check leak               grade a lesson (or all: lab check)\n  \
         lab exercise diff            your change so far\n  \
         lab exercise reset leak      start a lesson over"
    );
    Ok(ExitCode::SUCCESS)
}

fn reset_all(tree: &Tree, force: bool) -> Result<ExitCode, String> {
    let start = tree.start()?;
    let path = tree.exercise();
    if let Some(current) = tree.current()?
        && current != start
        && !force
    {
        return Err(format!(
            "{} has changes ({} lines differ from the start); `lab exercise reset --all --force` \
             discards them (see them first with `lab exercise diff`)",
            path.display(),
            changed_lines(&start, &current)
        ));
    }
    tree.write_exercise(&start)?;
    println!("{} restored to the start", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Checks lesson names against the lessons the exercise has sections for.
pub fn known_lessons<'a>(
    names: &'a [String],
    sections: &[Section],
) -> Result<Vec<&'a str>, String> {
    let allowed: Vec<&str> = LESSON_IDS
        .iter()
        .map(|l| l.id)
        .filter(|id| sections.iter().any(|s| s.lessons.contains(id)))
        .collect();
    names
        .iter()
        .map(|name| {
            allowed
                .iter()
                .find(|id| **id == name.as_str())
                .map(|_| name.as_str())
                .ok_or_else(|| {
                    format!(
                        "unknown lesson `{name}`; the exercise has: {}",
                        allowed.join(", ")
                    )
                })
        })
        .collect()
}

fn reset_lessons(tree: &Tree, names: &[String]) -> Result<ExitCode, String> {
    let start = tree.start()?;
    let start_sections = generate::sections(&start);
    let lessons = known_lessons(names, &start_sections)?;
    let path = tree.exercise();
    let Some(current) = tree.current()? else {
        tree.write_exercise(&start)?;
        println!(
            "{} was missing: the whole start is in place",
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let restored = restore_sections(&start, &current, &lessons).map_err(|marker| {
        format!(
            "cannot find the section marker `{marker}` in {}: restore the whole file with \
             `lab exercise reset --all --force` (see your changes first with `lab exercise diff`)",
            path.display()
        )
    })?;
    tree.write_exercise(&restored.text)?;
    println!(
        "restored {} in {} ({} lines of your changes discarded): {}",
        lessons.join(", "),
        path.display(),
        changed_lines(&current, &restored.text),
        restored.markers.join("; ")
    );
    Ok(ExitCode::SUCCESS)
}

/// A file with some sections put back as they start.
pub struct Restored {
    pub text: String,
    /// Markers of the sections restored.
    pub markers: Vec<String>,
}

/// `current` with every section of `lessons` replaced by the start's; `Err(marker)` when
/// `current` lacks a section's marker line.
pub fn restore_sections(start: &str, current: &str, lessons: &[&str]) -> Result<Restored, String> {
    let start_lines: Vec<&str> = start.lines().collect();
    let mut lines: Vec<String> = current.lines().map(str::to_owned).collect();
    let mut markers = Vec::new();
    for section in generate::sections(start) {
        if !section.lessons.iter().any(|l| lessons.contains(l)) {
            continue;
        }
        let text = lines.join("\n");
        let Some(found) = generate::sections(&text)
            .into_iter()
            .find(|s| s.marker == section.marker)
        else {
            return Err(section.marker);
        };
        lines.splice(
            found.start..found.end,
            start_lines[section.start..section.end]
                .iter()
                .map(|l| (*l).to_owned()),
        );
        markers.push(section.marker);
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Ok(Restored { text, markers })
}

fn diff(tree: &Tree) -> Result<ExitCode, String> {
    let start = tree.start()?;
    let Some(current) = tree.current()? else {
        return Err(format!(
            "{} does not exist: put the exercise in place with `lab exercise start`",
            tree.exercise().display()
        ));
    };
    if current == start {
        println!("no changes: {} is the start", tree.exercise().display());
    } else {
        print!("{}", unified_diff(&start, &current));
    }
    Ok(ExitCode::SUCCESS)
}

/// The learner's change as a unified diff, `a/` the start and `b/` their file.
pub fn unified_diff(start: &str, current: &str) -> String {
    similar::TextDiff::from_lines(start, current)
        .unified_diff()
        .context_radius(3)
        .header("a/src/exercise.rs (start)", "b/src/exercise.rs")
        .to_string()
}

fn changed_lines(a: &str, b: &str) -> usize {
    similar::TextDiff::from_lines(a, b)
        .iter_all_changes()
        .filter(|c| c.tag() != similar::ChangeTag::Equal)
        .count()
}

fn status(tree: &Tree) -> Result<ExitCode, String> {
    let start = tree.start()?;
    let Some(current) = tree.current()? else {
        println!("no exercise yet: `lab exercise start` puts it in place");
        return Ok(ExitCode::SUCCESS);
    };
    let ours = generate::sections(&current);
    let start_lines: Vec<&str> = start.lines().collect();
    let current_lines: Vec<&str> = current.lines().collect();
    println!("{}", tree.exercise().display());
    for section in generate::sections(&start) {
        let state = match ours.iter().find(|s| s.marker == section.marker) {
            None => "marker gone (lab exercise reset --all --force restores it)",
            Some(s) if current_lines[s.start..s.end] == start_lines[section.start..section.end] => {
                "as at the start"
            }
            Some(_) => "changed",
        };
        println!(
            "  {:<60} {state}",
            section.marker.trim_end_matches(['-', ' '])
        );
    }
    println!("grade it with `lab check`, see the change with `lab exercise diff`");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: &str = include_str!("../../bad.rs");

    #[test]
    fn resetting_a_lesson_restores_its_sections_only() {
        let start = generate::exercise_start(BAD);
        let edited = start
            .replace(
                "pool::spawn_helper(progress_reporter",
                "drop(progress_reporter",
            )
            .replace(
                "let mut payload = Vec::new();",
                "let mut payload = Vec::with_capacity(data_size);",
            );
        assert_ne!(edited, start);
        let restored = restore_sections(&start, &edited, &["leak"]).unwrap();
        assert!(
            restored
                .text
                .contains("pool::spawn_helper(progress_reporter")
        );
        assert!(restored.text.contains("Vec::with_capacity(data_size);"));
        let all = restore_sections(&start, &edited, &["capacity", "leak"]).unwrap();
        assert_eq!(all.text, start);
    }

    #[test]
    fn a_lost_marker_is_named() {
        let start = generate::exercise_start(BAD);
        let marker = generate::sections(&start)
            .into_iter()
            .find(|s| s.lessons == ["churn"])
            .unwrap()
            .marker;
        let edited = start.replace(&marker, "// gone");
        assert_eq!(
            restore_sections(&start, &edited, &["churn"]).err(),
            Some(marker)
        );
    }

    #[test]
    fn unknown_lessons_list_the_known_ones() {
        let sections = generate::sections(&generate::exercise_start(BAD));
        let err = known_lessons(&["leaks".to_owned()], &sections).unwrap_err();
        assert!(
            err.contains("`leaks`") && err.contains("leak, capacity, churn"),
            "{err}"
        );
    }
}
