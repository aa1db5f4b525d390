//! The exercise's starting code, generated from `src/bad.rs` so that the two never drift apart:
//! the `--problems` switches removed (`switches.rs`: only the bad code stays), the type renamed,
//! and each lesson's comments reduced to its symptom.
//!
//! A learner should get what the dashboard and the profiles show, not the cure. So, inside the
//! lesson sections (from the first `// ---- ` marker on):
//! - a marker keeps the lesson's number and gains its ids (`// ---- Lesson 1a (leak) ---`); the
//!   title after the colon, which names the bug, goes;
//! - a `//` comment block keeps only what follows its `Shows in:`, or goes entirely;
//! - a `///` doc comment stays only on a `pub` item (the contract the grader holds it to).
//!
//! The file's header records a hash of the `bad.rs` it came from, so a test can tell a stale
//! start (bad.rs changed, exercise not regenerated) from a learner's edits.

use crate::task::Fnv1a;

/// What the generated file starts with: the hash line is how a stale start is recognised.
pub const HASH_PREFIX: &str = "//! Generated from src/bad.rs (fnv1a ";

/// Where lessons are told apart: every section marker starts with this, after indentation.
pub const MARKER: &str = "// ---- ";

/// Markers are padded with dashes to this width, indentation included.
const MARKER_WIDTH: usize = 98;

/// A lesson: its number in the docs and bad.rs, its id on the command line and in `--problems`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LessonId {
    pub number: u8,
    pub id: &'static str,
}

/// Every lesson the lab has or will have, numbered as in bad.rs and docs; `--problems` names.
pub const LESSON_IDS: [LessonId; 6] = [
    LessonId {
        number: 1,
        id: "leak",
    },
    LessonId {
        number: 2,
        id: "capacity",
    },
    LessonId {
        number: 3,
        id: "churn",
    },
    LessonId {
        number: 4,
        id: "blocking",
    },
    LessonId {
        number: 5,
        id: "contention",
    },
    LessonId {
        number: 6,
        id: "backlog",
    },
];

/// One `// ---- ` section of the file: its marker line and the lessons it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Index of the marker line in the file's lines.
    pub start: usize,
    /// Index one past the section's last line (the next marker, or the end).
    pub end: usize,
    /// The marker line as it stands in the file, trimmed.
    pub marker: String,
    pub lessons: Vec<&'static str>,
}

/// The 64-bit FNV-1a hash of `text`, as 16 hex digits.
pub fn hash(text: &str) -> String {
    let mut fnv = Fnv1a::default();
    fnv.write(text.as_bytes());
    format!("{:016x}", fnv.0)
}

/// The hash recorded in a generated file's header, if it has one.
pub fn recorded_hash(exercise: &str) -> Option<&str> {
    exercise
        .lines()
        .find_map(|line| line.strip_prefix(HASH_PREFIX))
        .and_then(|rest| rest.split(')').next())
}

/// The exercise's starting code for `bad` (the text of src/bad.rs).
pub fn exercise_start(bad: &str) -> String {
    let stripped = super::switches::strip(bad);
    let lines: Vec<&str> = stripped.lines().collect();
    let body_start = lines
        .iter()
        .position(|line| !line.starts_with("//!"))
        .unwrap_or(lines.len());
    let first_marker = lines
        .iter()
        .position(|line| line.trim_start().starts_with(MARKER))
        .unwrap_or(lines.len());

    let mut out: Vec<String> = header(bad).lines().map(str::to_owned).collect();
    let mut i = body_start;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if i < first_marker {
            out.push(rename(line));
            i += 1;
        } else if trimmed.starts_with(MARKER) {
            let lessons = section_lessons(&lines, i);
            let marker = marker_for(trimmed, &lessons, MARKER_WIDTH - indent.len());
            out.push(format!("{indent}{marker}"));
            i += 1;
        } else if is_plain_comment(trimmed) {
            let end = block_end(&lines, i, is_plain_comment);
            out.extend(symptom(&lines[i..end]).into_iter().map(|l| rename(&l)));
            i = end;
        } else if trimmed.starts_with("///") {
            let end = block_end(&lines, i, |t| t.starts_with("///"));
            let item = lines.get(end).map_or("", |l| l.trim_start());
            if item.starts_with("pub ") {
                out.extend(lines[i..end].iter().map(|l| rename(l)));
            }
            i = end;
        } else {
            out.push(rename(line));
            i += 1;
        }
    }
    // Dropped comments can leave two blank lines in a row; rustfmt would fold them.
    out.dedup_by(|b, a| a.is_empty() && b.is_empty());
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// The sections of a file (the start or a learner's copy), found by their markers.
pub fn sections(text: &str) -> Vec<Section> {
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim_start().starts_with(MARKER))
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| Section {
            start,
            end: starts.get(n + 1).copied().unwrap_or(lines.len()),
            marker: lines[start].trim().to_owned(),
            lessons: section_lessons(&lines, start),
        })
        .collect()
}

fn header(bad: &str) -> String {
    format!(
        "//! Your worker: the bad worker's code, for you to fix lesson by lesson.\n\
         //!\n\
         //! Each section says how its problem shows on the dashboard and in a profile, not how to\n\
         //! fix it: finding that is the exercise. Run it beside the others with `lab demo --exercise`\n\
         //! (`worker_type=\"exercise\"`), grade it with `lab check`, see your changes with\n\
         //! `lab exercise diff`, start a lesson over with `lab exercise reset LESSON`. The path\n\
         //! through the lessons and the hints are in docs/EXERCISES.md.\n\
         //!\n\
         {HASH_PREFIX}{}); `lab exercise reset --all` restores it.\n\n\
         // The strategy's methods are given what the fixes need; the bad code leaves some unused.\n\
         #![allow(unused_variables)]\n",
        hash(bad)
    )
}

/// The names a learner sees are the exercise's, not the bad worker's.
fn rename(line: &str) -> String {
    let line = line
        .replace("The bad worker's strategy.", "Your worker's strategy.")
        .replace(
            "The bad worker with every problem.",
            "Your worker, as it starts: every problem present.",
        )
        .replace("bad::", "exercise::");
    replace_word(
        &replace_word(&line, "Bad", "Exercise"),
        "BadWorker",
        "ExerciseWorker",
    )
}

fn replace_word(line: &str, word: &str, with: &str) -> String {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        out.push_str(&rest[..at]);
        if before.is_some_and(is_ident) || after.is_some_and(is_ident) {
            out.push_str(word);
        } else {
            out.push_str(with);
        }
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

fn is_plain_comment(trimmed: &str) -> bool {
    trimmed.starts_with("//")
        && !trimmed.starts_with("///")
        && !trimmed.starts_with("//!")
        && !trimmed.starts_with(MARKER)
}

fn block_end(lines: &[&str], from: usize, within: impl Fn(&str) -> bool) -> usize {
    (from..lines.len())
        .find(|&i| !within(lines[i].trim_start()))
        .unwrap_or(lines.len())
}

/// What a comment block keeps: from its `Shows in:` to its end, or nothing.
fn symptom(block: &[&str]) -> Vec<String> {
    let Some(at) = block.iter().position(|l| l.contains("Shows in:")) else {
        return Vec::new();
    };
    let first = block[at];
    let indent = &first[..first.len() - first.trim_start().len()];
    let from = &first[first.find("Shows in:").unwrap_or(0)..];
    std::iter::once(format!("{indent}// {from}"))
        .chain(block[at + 1..].iter().map(|l| (*l).to_owned()))
        .collect()
}

/// The lessons a section belongs to: the numbers in its marker's title ("Lesson 1a",
/// "Lessons 2 and 3"), else those its first comment line names ("// Lesson 2: none...").
fn section_lessons(lines: &[&str], marker: usize) -> Vec<&'static str> {
    let title = lines[marker].trim_start().trim_start_matches(MARKER);
    let head = title.split(':').next().unwrap_or("");
    // A generated marker names its lessons: `(capacity, churn)`.
    if let Some((_, ids)) = head.split_once('(')
        && let Some((ids, _)) = ids.split_once(')')
    {
        let named: Vec<&'static str> = ids
            .split(',')
            .filter_map(|id| LESSON_IDS.iter().find(|l| l.id == id.trim()).map(|l| l.id))
            .collect();
        if !named.is_empty() {
            return named;
        }
    }
    let mut found = lesson_numbers(head);
    if found.is_empty()
        && let Some(next) = lines.get(marker + 1)
        && is_plain_comment(next.trim_start())
    {
        let comment = next.trim_start().trim_start_matches("//").trim_start();
        if comment.starts_with("Lesson") {
            found = lesson_numbers(comment.split(':').next().unwrap_or(""));
        }
    }
    found
}

/// Ids of the lessons whose numbers follow "Lesson"/"Lessons" in `text`.
fn lesson_numbers(text: &str) -> Vec<&'static str> {
    let Some(at) = text.find("Lesson") else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for c in text[at..].chars().filter(char::is_ascii_digit) {
        if let Some(lesson) = LESSON_IDS.iter().find(|l| char::from(b'0' + l.number) == c)
            && !ids.contains(&lesson.id)
        {
            ids.push(lesson.id);
        }
    }
    ids
}

/// The exercise's marker: the lesson's number and ids, without the title that names the bug.
fn marker_for(trimmed: &str, lessons: &[&str], width: usize) -> String {
    let title = trimmed
        .trim_start_matches(MARKER)
        .trim_end_matches('-')
        .trim_end();
    let head = title.split(':').next().unwrap_or(title).trim();
    let text = if lessons.is_empty() {
        format!("{MARKER}{head} ")
    } else {
        format!("{MARKER}{head} ({}) ", lessons.join(", "))
    };
    let pad = width.saturating_sub(text.len()).max(3);
    format!("{text}{}", "-".repeat(pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: &str = include_str!("../../bad.rs");
    const EXERCISE: &str = include_str!("../../exercise.rs");

    #[test]
    fn the_start_comes_from_the_current_bad_worker() {
        let recorded = recorded_hash(EXERCISE);
        assert_eq!(
            recorded,
            Some(hash(BAD).as_str()),
            "src/exercise.rs was generated from another src/bad.rs: regenerate it with \
             `cargo run --bin lab -- exercise reset --all --force`"
        );
        // On the lab's own CI the file must be the start exactly; on a learner's branch it is
        // theirs to change (same hash, other code), so only CI insists.
        if std::env::var_os("CI").is_some() {
            assert!(
                EXERCISE == exercise_start(BAD),
                "src/exercise.rs is not the generated start: regenerate it with \
                 `cargo run --bin lab -- exercise reset --all --force`"
            );
        }
    }

    #[test]
    fn the_start_keeps_symptoms_and_drops_cures() {
        let start = exercise_start(BAD);
        assert!(start.contains("pub struct Exercise"));
        assert!(!start.contains("Bad"), "{start}");
        assert!(start.contains("Shows in:"));
        // The explanations of the bugs go.
        for cure in [
            "never exits",
            "no capacity",
            "told only about successes",
            "Lesson 3: a",
        ] {
            assert!(!start.contains(cure), "`{cure}` is still in the start");
        }
        let ids: Vec<Vec<&str>> = sections(&start).into_iter().map(|s| s.lessons).collect();
        assert!(ids.contains(&vec!["leak"]));
        assert!(ids.contains(&vec!["capacity"]));
        assert!(ids.contains(&vec!["churn"]));
        assert!(ids.contains(&vec!["capacity", "churn"]));
    }

    #[test]
    fn renames_whole_words_only() {
        assert_eq!(replace_word("Bad::new(Badge)", "Bad", "X"), "X::new(Badge)");
    }
}
