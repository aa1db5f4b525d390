//! `lab compare`: the headless comparison. Both workers run side by side with the same flags;
//! their metrics are sampled through the run; the report shows, per worker and as a ratio, what
//! the dashboard shows over time: the task leak, memory, allocations per task, the GC analogue,
//! throughput, latency and CPU per task.
//!
//! | module | what it does |
//! |---|---|
//! | `session` | starts, samples and stops the two workers |
//! | `sample` | one scrape of `/metrics`; the CSV of all of them |
//! | `stats` | least squares and `histogram_quantile` |
//! | `report` | the figures and their JSON |
//! | `table` | the text report |
//! | `series`, `charts` | each series over time, drawn as SVG and PNG |
//! | `html` | the self-contained HTML report |
//! | `out` | the files `--out` writes |
//! | `gate` | `--fail-if` thresholds |
//! | `progress` | the progress line on stderr |

mod charts;
mod gate;
mod html;
mod out;
mod progress;
mod report;
mod sample;
mod series;
mod session;
mod stats;
mod table;
mod typeset;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use gate::Threshold;
use report::{Report, Settings};

/// Exit status when a `--fail-if` threshold holds: distinct from 1 (the comparison could not
/// run) and 2 (bad arguments), so a CI job can tell a regression from a broken setup.
pub const THRESHOLD_FAILED: u8 = 3;

const AFTER_HELP: &str = "\
Thresholds (--fail-if EXPR, repeatable): SUBJECT.METRIC OP NUMBER, e.g.
  --fail-if 'optimized.allocations_per_task>0'  the fix regressed
  --fail-if 'optimized.live_tasks_slope>1'      the optimized worker leaks
  --fail-if 'ratio.bytes_per_task<10'           the bad worker is no longer much worse
SUBJECT: bad, optimized, ratio (bad / optimized). OP: < <= > >= == !=.
METRIC (unit as in the JSON report): live_tasks_start, live_tasks_end (tasks),
  live_tasks_slope (tasks/min), allocated_bytes_end, allocated_bytes_peak,
  resident_bytes_end, resident_bytes_peak, bytes_per_task (bytes), allocations_per_task,
  gc_rate (purges/s), tasks_processed, throughput (tasks/s), latency_p50, latency_p95,
  latency_p99 (seconds), error_rate (fraction of tasks), cpu_per_task (seconds);
  lessons 4-6, n/a from a worker without their metrics: poll_time_max, poll_time_p99,
  metrics_latency_p99, task_latency_p99 (seconds; blocking), lock_wait_per_task (seconds;
  contention), queue_depth_max, tasks_rejected (tasks), queue_delay_p99 (seconds; overload).
  --fail-if 'ratio.poll_time_p99<10'           the blocking lesson no longer shows
  --fail-if 'optimized.lock_wait_per_task>0'   the contention fix regressed
  --fail-if 'optimized.queue_depth_max>100'    the bounded queue is not bounded
A threshold with no value (no tasks processed, a 0/0 ratio) counts as failed.

Exit status: 0 done (and every threshold passed), 3 a threshold failed, 1 the comparison
could not run, 2 bad arguments.

The guide's benchmark (benchmark.sh, profile-cpu.sh, profile-mem.sh) in one command:
  lab compare --duration 30s --profiles --out results/";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct CompareArgs {
    /// How long to run and sample both workers: 30s, 5m, 1h, ...
    #[arg(long, default_value = "60s", allow_hyphen_values = true,
          value_parser = crate::cli::parse_duration)]
    duration: Duration,

    /// How often to sample /metrics of both workers
    #[arg(long, default_value = "1s", allow_hyphen_values = true, value_parser = parse_interval)]
    interval: Duration,

    /// How long both workers run before the first sample, so start-up costs (buffers sized on
    /// first use) do not count per task
    #[arg(long, default_value = "2s", allow_hyphen_values = true, value_parser = parse_warmup)]
    warmup: Duration,

    /// Tasks produced per second, by each worker
    #[arg(long, default_value_t = 200,
          value_parser = crate::cli::rate_range())]
    rate: u32,

    /// Integers in each task's payload
    #[arg(long, default_value_t = 10_000,
          value_parser = crate::cli::data_size_range())]
    data_size: u64,

    /// Tasks per round (a bad worker leaks one progress reporter per round)
    #[arg(long, default_value_t = 1000,
          value_parser = crate::cli::tasks_range())]
    tasks: u64,

    /// Concurrent worker tasks in each worker
    #[arg(long, default_value_t = 10,
          value_parser = crate::cli::workers_range())]
    workers: u64,

    /// Seed of the task stream; both workers get the same tasks
    #[arg(long, default_value_t = 42, allow_negative_numbers = true,
          value_parser = crate::cli::whole_number(0, u64::MAX))]
    seed: u64,

    /// The bad worker's problems (its --problems): all, none, or a list of leak, capacity,
    /// churn, blocking, contention, backlog; one lesson at a time, e.g. --problems contention.
    /// worker-optimized has every fix whatever this says
    #[arg(long, env = "LAB_PROBLEMS", value_name = "LIST", default_value = "all", value_parser = crate::problems::Problems::parse, allow_hyphen_values = true)]
    problems: crate::problems::Problems,

    /// Bursts of load for both workers (their --burst): FACTORx[:ON/EVERY], e.g. 5x:10s/30s for
    /// lesson 6 (overload), or off
    #[arg(long, env = "LAB_BURST", value_name = "SPEC", default_value = "off", value_parser = crate::burst::Burst::parse, allow_hyphen_values = true)]
    burst: ::std::option::Option<crate::burst::Burst>,

    /// Print the report as JSON on stdout instead of the table
    #[arg(long)]
    json: bool,

    /// Write the raw samples (CSV), the report (JSON, HTML), charts (SVG, PNG) and the workers'
    /// logs into DIR
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// Have each worker write a CPU profile of the whole run and a heap profile at exit
    /// (--cpuprofile, --memprofile) into --out. The profilers' own memory is kept out of the
    /// memory figures (worker_observer_memory_bytes shows it)
    #[arg(long, requires = "out")]
    profiles: bool,

    /// Fail with exit status 3 if EXPR holds (see below); repeatable
    #[arg(long = "fail-if", value_name = "EXPR", value_parser = Threshold::parse)]
    fail_if: Vec<Threshold>,

    /// No progress on stderr
    #[arg(long, short)]
    quiet: bool,
}

/// Shortest and longest sampling interval.
const INTERVALS: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3600));

fn parse_interval(value: &str) -> Result<Duration, String> {
    crate::cli::duration_in(INTERVALS.0, INTERVALS.1, "500ms, 1s or 10s")(value)
}

fn parse_warmup(value: &str) -> Result<Duration, String> {
    crate::cli::duration_in(Duration::ZERO, Duration::from_secs(3600), "0s, 2s or 1m")(value)
}

pub fn run(args: CompareArgs) -> Result<ExitCode, String> {
    if args.interval * 2 > args.duration {
        eprintln!(
            "error: --interval {} is more than half of --duration {}: a slope needs at least three samples",
            humantime::format_duration(args.interval),
            humantime::format_duration(args.duration)
        );
        return Ok(ExitCode::from(2));
    }
    if let Some(dir) = &args.out
        && let Some(code) = crate::lab::output_dir("--out", dir)?
    {
        return Ok(code);
    }
    let settings = Settings {
        warmup_seconds: args.warmup.as_secs_f64(),
        duration_seconds: args.duration.as_secs_f64(),
        interval_seconds: args.interval.as_secs_f64(),
        rate: args.rate,
        data_size: args.data_size,
        tasks: args.tasks,
        workers: args.workers,
        seed: args.seed,
        problems: args.problems.to_string(),
        burst: args.burst.map(|b| b.to_string()),
    };
    let worker_flags: Vec<String> = settings
        .worker_flags()
        .split(' ')
        .map(str::to_owned)
        .collect();
    let run = session::run(&session::Plan {
        warmup: args.warmup,
        duration: args.duration,
        interval: args.interval,
        worker_flags,
        out: args.out.as_deref(),
        profiles: args.profiles,
        quiet: args.quiet,
    })?;

    let mut report = Report::new(settings, &run.bad, &run.optimized, run.summaries);
    report.profiles = run.profiles;
    report.thresholds = args.fail_if.iter().map(|t| t.check(&report)).collect();

    if let Some(dir) = &args.out {
        let page = out::write(dir, &report, &run.bad, &run.optimized)?;
        eprintln!(
            "wrote samples.csv, report.json, charts/ and {} into {}",
            page.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            dir.display()
        );
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", table::render(&report));
        print!("\n{}", table::exit_summaries(&report));
    }

    let failed: Vec<&str> = report
        .thresholds
        .iter()
        .filter(|t| t.failed)
        .map(|t| t.expression.as_str())
        .collect();
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "lab compare: {} of {} thresholds failed: {}",
        failed.len(),
        report.thresholds.len(),
        failed.join(", ")
    );
    Ok(ExitCode::from(THRESHOLD_FAILED))
}

#[cfg(test)]
mod tests {
    use super::report::Metric;
    use super::*;

    #[test]
    fn help_lists_every_metric() {
        for metric in Metric::ALL {
            assert!(AFTER_HELP.contains(metric.key()), "{}", metric.key());
        }
    }

    #[test]
    fn intervals_are_checked() {
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_interval("10ms").unwrap_err().contains("100ms"));
        assert!(parse_interval("soon").unwrap_err().contains("500ms"));
    }
}
