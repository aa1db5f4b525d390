//! `lab check`: grades the learner's worker (src/exercise.rs) lesson by lesson, by the same
//! metrics and counts the dashboard and profiles show.
//!
//! It builds the three workers from the learner's tree, runs them side by side on one fixed
//! workload ([`workload`]), checks that the learner's worker did all the work right
//! ([`honesty`]), then asks each lesson's grader. A lesson is a row in [`LESSONS`] and a module
//! of its own.

pub mod backlog;
pub mod blocking;
pub mod build;
pub mod capacity;
pub mod churn;
pub mod contention;
pub mod honesty;
pub mod leak;
pub mod runs;
pub mod workload;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::kind::WorkerKind;
use crate::lab::exercise::Tree;
use crate::lab::exercise::generate::LESSON_IDS;
use crate::lab::stack::DataDirArg;
use crate::lab::stack::config::HOST;
use crate::lab::stack::layout::{DataDir, Service};

use self::runs::Run;
use self::workload::{Expected, Workload};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Lessons to grade: leak, capacity, churn, blocking, contention, backlog [default: all]
    #[arg(value_name = "LESSON")]
    lessons: Vec<String>,
    /// Print the result as JSON (for scripts and teachers)
    #[arg(long)]
    json: bool,
    /// The lab's source tree [default: the directory holding Cargo.toml, from the current one up]
    #[arg(long, value_name = "DIR")]
    tree: Option<PathBuf>,
    /// The port your worker serves on, for the profile commands the hints print [default: the
    /// --exercise-port of a `lab demo --exercise` running with --data-dir, else 9093]
    #[arg(long, value_name = "PORT", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u16).range(1..=65535))]
    exercise_port: Option<u16>,
    #[command(flatten)]
    data: DataDirArg,
}

/// The address the graders' hint commands name: the exercise worker's default one.
/// [`run`] replaces it with the address of the learner's worker when that is elsewhere.
pub const DEFAULT_EXERCISE_ADDR: &str = "127.0.0.1:9093";

/// Where the learner's worker listens: `--exercise-port`, else the port of the exercise worker
/// a running `lab demo --exercise` started, else the default. A demo state that cannot be read
/// only costs the hints their port, so it falls back to the default rather than fail the check.
fn exercise_addr(args: &CheckArgs) -> String {
    let port = args.exercise_port.or_else(|| {
        let demo = DataDir::resolve(&args.data.data_dir)
            .and_then(|dir| dir.running_demo())
            .ok()
            .flatten()?;
        demo.has(Service::WorkerExercise)
            .then_some(demo.ports.exercise)
    });
    match port {
        Some(port) => format!("{HOST}:{port}"),
        None => DEFAULT_EXERCISE_ADDR.to_owned(),
    }
}

impl Hint {
    /// This hint with its command pointed at the worker on `addr`.
    fn at(mut self, addr: &str) -> Hint {
        self.command = self.command.replace(DEFAULT_EXERCISE_ADDR, addr);
        self
    }
}

/// A lesson `lab check` grades.
pub struct Lesson {
    pub number: u8,
    pub id: &'static str,
    pub title: &'static str,
    /// What the lesson asks of the learner, in one line.
    pub asks: &'static str,
    pub grade: fn(&Runs) -> Grade,
}

/// The graded lessons, in the order a learner takes them.
pub const LESSONS: &[Lesson] = &[
    Lesson {
        number: 1,
        id: "leak",
        title: "Task leaks",
        asks: "no task outlives its work: live tasks stay flat, round after round",
        grade: leak::grade,
    },
    Lesson {
        number: 2,
        id: "capacity",
        title: "Capacity",
        asks: "buffers sized once and kept: nothing grows while a task runs",
        grade: capacity::grade,
    },
    Lesson {
        number: 3,
        id: "churn",
        title: "Allocation churn",
        asks: "no allocation in the hot path: no clones, formatted strings or label lookups per task",
        grade: churn::grade,
    },
    Lesson {
        number: 4,
        id: "blocking",
        title: "Blocking the runtime",
        asks: "no long CPU-bound step on a runtime thread: the seal runs where it blocks no task",
        grade: blocking::grade,
    },
    Lesson {
        number: 5,
        id: "contention",
        title: "Lock contention",
        asks: "no lock held across the work: workers rarely wait for one another",
        grade: contention::grade,
    },
    Lesson {
        number: 6,
        id: "backlog",
        title: "Overload without backpressure",
        asks: "a bounded queue: overload is shed and counted, not piled up",
        grade: backlog::grade,
    },
];

/// What the graders read: the three runs of one workload and the reference's results.
pub struct Runs {
    pub workload: Workload,
    pub expected: Expected,
    pub exercise: Run,
    pub bad: Run,
    pub optimized: Run,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Fixed,
    /// Better, not there: one of two leaks fixed, allocations halved...
    Partial,
    NotYet,
}

impl Status {
    fn text(self) -> &'static str {
        match self {
            Status::Fixed => "fixed",
            Status::Partial => "partly fixed",
            Status::NotYet => "not yet",
        }
    }
}

/// Where to look when a lesson is not fixed yet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hint {
    /// The metric to watch (on the dashboard, or in Prometheus).
    pub metric: String,
    /// The profile command that points at what remains: graders name the exercise worker at
    /// [`DEFAULT_EXERCISE_ADDR`], and the report names the address it actually serves on
    /// (`lab demo --exercise --exercise-port`, or `lab check --exercise-port`).
    pub command: String,
}

impl Hint {
    /// `metric` to watch, and the exercise worker's allocation profile (lessons 2 and 3).
    fn allocs(metric: &str) -> Hint {
        Hint {
            metric: metric.to_owned(),
            command: format!(
                "go tool pprof -top http://{DEFAULT_EXERCISE_ADDR}/debug/pprof/allocs"
            ),
        }
    }
}

/// How sure a grade from the allocator's own counts is (lessons 2 and 3).
fn exact_allocator_counts(runs: &Runs) -> String {
    format!(
        "high: exact allocator counts over all {} tasks, independent of the machine's speed",
        runs.workload.tasks
    )
}

/// One lesson's grade.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grade {
    pub status: Status,
    pub measured: String,
    pub unit: &'static str,
    pub exercise: f64,
    pub bad: f64,
    pub optimized: f64,
    pub detail: String,
    pub confidence: String,
    pub hint: Hint,
}

#[derive(Serialize)]
struct LessonReport<'a> {
    number: u8,
    id: &'a str,
    title: &'a str,
    passed: bool,
    #[serde(flatten)]
    grade: Grade,
}

#[derive(Serialize)]
struct Report<'a> {
    passed: bool,
    workload: Workload,
    /// Why the learner's worker could not be graded; empty when it could.
    problems: Vec<String>,
    lessons: Vec<LessonReport<'a>>,
}

/// Runs `lab check`: exit 0 when every requested lesson is fixed; 1 when one is not, when the
/// worker's results cannot be graded, or (with the reason on stderr) when the check cannot run:
/// an unknown lesson, code that does not compile. clap's own errors exit with 2.
impl Runs {
    /// One per-task figure of the learner's, the bad and the optimized worker, in that order.
    fn per_task(&self, figure: impl Fn(&Run) -> f64) -> (f64, f64, f64) {
        (
            figure(&self.exercise),
            figure(&self.bad),
            figure(&self.optimized),
        )
    }
}

impl Status {
    /// Fixed at or below `threshold`; partly fixed below half of the bad worker's figure.
    fn from_figure(exercise: f64, threshold: f64, bad: f64) -> Status {
        if exercise <= threshold {
            Status::Fixed
        } else if exercise < bad * 0.5 {
            Status::Partial
        } else {
            Status::NotYet
        }
    }
}

pub fn run(args: CheckArgs) -> Result<ExitCode, String> {
    let lessons = select(&args.lessons)?;
    let tree = Tree::locate(args.tree.as_deref())?;
    if !tree.exercise().is_file() {
        return Err(format!(
            "{} does not exist: put the exercise in place with `lab exercise start`",
            tree.exercise().display()
        ));
    }
    let bin_dir = build::build(&tree.root)?;
    let workload = Workload::DEFAULT;
    eprintln!(
        "running worker-exercise, worker-bad and worker-optimized on {} tasks (seed {})...",
        workload.tasks, workload.seed
    );
    let mut results = runs::run_all(&bin_dir, &build::WORKERS, &workload)?.into_iter();
    let mut next = || results.next().unwrap_or_else(|| Err("not run".to_owned()));
    let (exercise, bad, optimized) = (next(), next(), next());
    let bad = bad.map_err(|e| format!("the lab's own bad worker failed: {e}"))?;
    let optimized = optimized.map_err(|e| format!("the lab's own optimized worker failed: {e}"))?;
    for (kind, run) in [(WorkerKind::Bad, &bad), (WorkerKind::Optimized, &optimized)] {
        let problems = honesty::problems(run, &optimized, run.elapsed, &workload);
        if !problems.is_empty() {
            return Err(format!(
                "the lab's own {kind} worker does not pass the honesty checks (is src/bad.rs or \
                 src/optimized.rs changed?): {}",
                problems.join("; ")
            ));
        }
    }
    let (problems, graded) = match exercise {
        Ok(exercise) => {
            let slowest = bad.elapsed.max(optimized.elapsed);
            let problems = honesty::problems(&exercise, &optimized, slowest, &workload);
            let expected = workload::expected(&workload, &exercise.ledger.rejected_ids);
            let runs = Runs {
                workload,
                expected,
                exercise,
                bad,
                optimized,
            };
            let addr = exercise_addr(&args);
            let graded: Vec<(&Lesson, Grade)> = lessons
                .iter()
                .map(|l| {
                    let mut grade = (l.grade)(&runs);
                    grade.hint = grade.hint.at(&addr);
                    (*l, grade)
                })
                .collect();
            (problems, graded)
        }
        Err(problem) => (vec![problem], Vec::new()),
    };
    let report = Report {
        passed: problems.is_empty()
            && graded.len() == lessons.len()
            && graded.iter().all(|(_, g)| g.status == Status::Fixed),
        workload,
        lessons: graded
            .into_iter()
            .map(|(lesson, grade)| LessonReport {
                number: lesson.number,
                id: lesson.id,
                title: lesson.title,
                passed: problems.is_empty() && grade.status == Status::Fixed,
                grade,
            })
            .collect(),
        problems,
    };
    let mut out = std::io::stdout().lock();
    let text = if args.json {
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? + "\n"
    } else {
        render(&report)
    };
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The lessons named, or all; an unknown name is an error listing the graded ones.
fn select(names: &[String]) -> Result<Vec<&'static Lesson>, String> {
    if names.is_empty() {
        return Ok(LESSONS.iter().collect());
    }
    let graded: Vec<&str> = LESSONS.iter().map(|l| l.id).collect();
    names
        .iter()
        .map(|name| {
            if let Some(lesson) = LESSONS.iter().find(|l| l.id == name.as_str()) {
                return Ok(lesson);
            }
            let known = LESSON_IDS.iter().any(|l| l.id == name.as_str());
            Err(if known {
                format!(
                    "lesson `{name}` is not graded yet; `lab check` grades: {}",
                    graded.join(", ")
                )
            } else {
                format!("unknown lesson `{name}`; allowed: {}", graded.join(", "))
            })
        })
        .collect()
}

fn render(report: &Report) -> String {
    let mut text = String::new();
    if !report.problems.is_empty() {
        text.push_str("Your worker cannot be graded yet:\n");
        for problem in &report.problems {
            text.push_str(&format!("  - {problem}\n"));
        }
        text.push('\n');
    }
    for lesson in &report.lessons {
        let grade = &lesson.grade;
        let status = if report.problems.is_empty() {
            grade.status.text()
        } else {
            "not graded"
        };
        text.push_str(&format!(
            "Lesson {} ({}), {}: {status}\n  {}: you {} {unit}, bad {} {unit}, optimized {} {unit}\n  {}\n  confidence {}\n",
            lesson.number,
            lesson.id,
            lesson.title,
            grade.measured,
            figure(grade.exercise),
            figure(grade.bad),
            figure(grade.optimized),
            grade.detail,
            grade.confidence,
            unit = grade.unit,
        ));
        if grade.status != Status::Fixed {
            text.push_str(&format!(
                "  hint: watch {}\n        profile: {}\n",
                grade.hint.metric, grade.hint.command
            ));
        }
        text.push('\n');
    }
    let passed = report.lessons.iter().filter(|l| l.passed).count();
    text.push_str(&format!(
        "{passed} of {} lessons fixed{}\n",
        report.lessons.len(),
        if report.passed {
            "."
        } else {
            "; `lab exercise diff` shows your change so far."
        }
    ));
    text
}

fn figure(value: f64) -> String {
    if value.fract() == 0.0 || value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        check: CheckArgs,
    }

    fn args(flags: &[&str]) -> CheckArgs {
        Cli::try_parse_from(std::iter::once("check").chain(flags.iter().copied()))
            .unwrap()
            .check
    }

    #[test]
    fn hints_name_the_port_the_learners_worker_serves_on() {
        let empty = tempfile::tempdir().unwrap();
        let dir = empty.path().to_str().unwrap();
        // No demo running there, no flag: the default port.
        assert_eq!(
            exercise_addr(&args(&["--data-dir", dir])),
            DEFAULT_EXERCISE_ADDR
        );
        let addr = exercise_addr(&args(&["--data-dir", dir, "--exercise-port", "19093"]));
        assert_eq!(addr, "127.0.0.1:19093");
        let hint = Hint::allocs("worker_allocations_total").at(&addr);
        assert_eq!(
            hint.command,
            "go tool pprof -top http://127.0.0.1:19093/debug/pprof/allocs"
        );
        assert!(
            Cli::try_parse_from(["check", "--exercise-port", "0"]).is_err(),
            "port 0 is refused"
        );
    }
}
