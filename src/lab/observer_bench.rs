//! `lab bench`'s observer section: does observing the optimized worker change what it shows?
//!
//! It runs a real `worker-optimized` process at default settings and measures, from the outside,
//! what a learner would see:
//!
//! - the lesson's memory and allocation metrics before and after a CPU profile (30 s by
//!   default), a heap, an allocs and a task profile (goal: they move by under 64 KiB), and
//!   whether the heap profile taken afterwards holds any profiler frame (goal: none);
//! - allocations per task in the lesson counters while `/metrics` is scraped ten times a second
//!   (goal: 0, the optimized worker's lesson), and the scrapes' own allocations, which the
//!   observer metrics show instead.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::metric_value;
use crate::kind::WorkerKind;
use crate::lab::procs::{self, WorkerProcess};
use crate::pprof::encode;
use crate::summary::bytes;

/// Frames that belong to an observer; none may appear in a heap profile. Matched at the start
/// of a frame's name, so std's `std::sys::backtrace::...` thread entry is not taken for the
/// backtrace crate.
pub const PROFILER_FRAMES: &[&str] = &[
    "pprof::",
    "backtrace::",
    "gimli::",
    "addr2line::",
    "jemalloc_pprof::",
    "pprof_util::",
    "prometheus::",
    "inferno::",
    "profiling_lab::observer::",
    "profiling_lab::pprof::",
    "profiling_lab::metrics::",
];

/// What observing the optimized worker changed.
#[derive(Debug, Clone, Serialize)]
pub struct ObserverEffect {
    pub cpu_profile_seconds: u64,
    /// Lesson metrics after minus before the profiles.
    pub allocated_memory_delta_bytes: f64,
    pub resident_memory_delta_bytes: f64,
    pub allocations_delta: f64,
    pub allocated_bytes_delta: f64,
    pub tasks_during_profiles: f64,
    /// Bytes of heap-profile samples whose stack holds a profiler frame.
    pub profiler_bytes_in_heap_profile: i64,
    /// Observer memory after the profiles, by observer.
    pub observer_memory_bytes: Vec<(String, f64)>,
    /// Scrapes of the steady-state window.
    pub scrapes: u64,
    pub tasks_during_scrapes: f64,
    pub lesson_allocations_per_task: f64,
    pub lesson_bytes_per_task: f64,
    /// Observer allocations per scrape, by observer (metrics, http, ...).
    pub observer_allocations_per_scrape: Vec<(String, f64)>,
    pub observer_bytes_per_scrape: Vec<(String, f64)>,
}

/// Every observer's label, as `/metrics` names them.
fn observers() -> impl Iterator<Item = &'static str> {
    crate::observer::Observer::ALL
        .into_iter()
        .map(|o| o.label())
}

/// Runs the measurement against `worker-optimized` found next to this program.
pub fn measure(cpu_profile_seconds: u64) -> Result<ObserverEffect, String> {
    let binary = procs::sibling_binary(WorkerKind::Optimized.binary())?;
    measure_binary(&binary, cpu_profile_seconds)
}

fn measure_binary(binary: &Path, cpu_profile_seconds: u64) -> Result<ObserverEffect, String> {
    let args: Vec<String> = ["--duration", "30m"].map(str::to_owned).to_vec();
    let listen = "127.0.0.1:0".parse().expect("a socket address");
    let worker = WorkerProcess::spawn(binary, WorkerKind::Optimized, listen, &args, None)?;
    let get = |path: &str| -> Result<crate::client::Response, String> {
        let response = worker.get(path, Duration::from_secs(cpu_profile_seconds + 120))?;
        if response.status != 200 {
            return Err(format!(
                "{path}: {} {}",
                response.status,
                response.text().trim()
            ));
        }
        Ok(response)
    };
    let scrape = || get("/metrics").map(|r| r.text());
    let value = |text: &str, name: &str| metric_value(text, name).unwrap_or(0.0);
    let observer = |text: &str, name: &str, observer: &str| -> f64 {
        let prefix = format!("{name}{{");
        let label = format!("observer=\"{observer}\"");
        text.lines()
            .find(|l| l.starts_with(&prefix) && l.contains(&label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };

    // Warm up: the pool's buffers reach their steady size.
    std::thread::sleep(Duration::from_secs(5));

    // Steady state with scrapes, ten a second for ten seconds.
    let first = scrape()?;
    let start = Instant::now();
    let mut scrapes = 0u64;
    while start.elapsed() < Duration::from_secs(10) {
        scrape()?;
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let last = scrape()?;
    scrapes += 1;
    let tasks_during_scrapes = value(&last, "worker_tasks_processed_total")
        - value(&first, "worker_tasks_processed_total");
    let per_task =
        |name: &str| (value(&last, name) - value(&first, name)) / tasks_during_scrapes.max(1.0);
    let per_scrape = |name: &str| -> Vec<(String, f64)> {
        observers()
            .map(|o| {
                let delta = observer(&last, name, o) - observer(&first, name, o);
                (o.to_owned(), delta / scrapes as f64)
            })
            .collect()
    };
    let lesson_allocations_per_task = per_task("worker_allocations_total");
    let lesson_bytes_per_task = per_task("worker_total_allocations_bytes");
    let observer_allocations_per_scrape = per_scrape("worker_observer_allocations_total");
    let observer_bytes_per_scrape = per_scrape("worker_observer_allocated_bytes_total");

    // Profiles.
    let before = scrape()?;
    get(&format!(
        "/debug/pprof/profile?seconds={cpu_profile_seconds}"
    ))?;
    get("/debug/pprof/heap")?;
    get("/debug/pprof/allocs")?;
    get("/debug/pprof/goroutine")?;
    // Freed pages go back to the OS about a second after they are unused (dirty_decay_ms).
    std::thread::sleep(Duration::from_secs(2));
    let after = scrape()?;
    let heap = get("/debug/pprof/heap")?;
    let profiler_bytes_in_heap_profile = profiler_bytes(&heap.body)?;
    let delta = |name: &str| value(&after, name) - value(&before, name);
    let effect = ObserverEffect {
        cpu_profile_seconds,
        allocated_memory_delta_bytes: delta("worker_allocated_memory_bytes"),
        resident_memory_delta_bytes: delta("worker_resident_memory_bytes"),
        allocations_delta: delta("worker_allocations_total"),
        allocated_bytes_delta: delta("worker_total_allocations_bytes"),
        tasks_during_profiles: delta("worker_tasks_processed_total"),
        profiler_bytes_in_heap_profile,
        observer_memory_bytes: observers()
            .map(|o| {
                (
                    o.to_owned(),
                    observer(&after, "worker_observer_memory_bytes", o),
                )
            })
            .collect(),
        scrapes,
        tasks_during_scrapes,
        lesson_allocations_per_task,
        lesson_bytes_per_task,
        observer_allocations_per_scrape,
        observer_bytes_per_scrape,
    };
    worker.terminate()?;
    Ok(effect)
}

/// Bytes (`inuse_space`) of the samples of a gzipped heap profile that have a profiler frame.
fn profiler_bytes(gzipped: &[u8]) -> Result<i64, String> {
    let profile = encode::gunzip_profile(gzipped)?;
    let index = profile
        .sample_type
        .iter()
        .position(|t| {
            profile
                .string_table
                .get(t.ty as usize)
                .is_some_and(|s| s == "inuse_space")
        })
        .ok_or("the heap profile has no inuse_space")?;
    let names = crate::pprof::symbolize::frame_names(&profile);
    Ok(profile
        .sample
        .iter()
        .zip(&names)
        .filter(|(_, stack)| stack.iter().any(|name| is_profiler_frame(name)))
        .map(|(s, _)| s.value.get(index).copied().unwrap_or(0))
        .sum())
}

/// Whether a frame's function belongs to an observer. Matched at the start of the name (after
/// `<` and `&` of a trait impl), not anywhere in it: every thread's stack holds std's
/// `std::sys::backtrace::__rust_begin_short_backtrace`, which is not the backtrace crate, and
/// matching it counted every sample as the profiler's.
fn is_profiler_frame(name: &str) -> bool {
    let name = name.trim_start_matches(['<', '&']);
    PROFILER_FRAMES.iter().any(|p| name.starts_with(p))
}

/// The section of `lab bench`'s table.
pub fn table(e: &ObserverEffect) -> String {
    let mut out = String::new();
    let signed = |v: f64| {
        let sign = if v < 0.0 { "-" } else { "+" };
        format!("{sign}{}", bytes(v.abs() as u64))
    };
    let _ = writeln!(
        out,
        "observer effect on worker-optimized (goals: lesson metrics move by under 64 KiB, no profiler frame in the heap profile, 0 allocations per task with scrapes)"
    );
    let _ = writeln!(
        out,
        "  after a {} s CPU profile, heap, allocs and task profiles ({:.0} tasks ran):",
        e.cpu_profile_seconds, e.tasks_during_profiles
    );
    let _ = writeln!(
        out,
        "    worker_allocated_memory_bytes   {}",
        signed(e.allocated_memory_delta_bytes)
    );
    let _ = writeln!(
        out,
        "    worker_resident_memory_bytes    {}",
        signed(e.resident_memory_delta_bytes)
    );
    let _ = writeln!(
        out,
        "    worker_allocations_total        {:+.0} ({} allocated)",
        e.allocations_delta,
        bytes(e.allocated_bytes_delta.max(0.0) as u64)
    );
    let _ = writeln!(
        out,
        "    profiler frames in heap profile {}",
        bytes(e.profiler_bytes_in_heap_profile.max(0) as u64)
    );
    let shown: Vec<String> = e
        .observer_memory_bytes
        .iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(o, v)| format!("{o} {}", bytes(*v as u64)))
        .collect();
    let _ = writeln!(
        out,
        "    observers' live memory          {}",
        if shown.is_empty() {
            "none".to_owned()
        } else {
            shown.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "  {} scrapes of /metrics over 10 s ({:.0} tasks ran):",
        e.scrapes, e.tasks_during_scrapes
    );
    let _ = writeln!(
        out,
        "    lesson allocations per task     {:.3} ({:.1} B)",
        e.lesson_allocations_per_task, e.lesson_bytes_per_task
    );
    for ((observer, allocations), (_, bytes_per)) in e
        .observer_allocations_per_scrape
        .iter()
        .zip(&e.observer_bytes_per_scrape)
    {
        if *allocations > 0.0 {
            let _ = writeln!(
                out,
                "    {:<31} {:.0} allocations, {} per scrape",
                format!("observer {observer}"),
                allocations,
                bytes(*bytes_per as u64)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiler_frames_are_crate_paths_not_substrings() {
        assert!(is_profiler_frame(
            "prometheus::registry::RegistryCore::register"
        ));
        assert!(is_profiler_frame(
            "<profiling_lab::metrics::ProcessCollector as core::default::Default>::default"
        ));
        assert!(!is_profiler_frame(
            "std::sys::backtrace::__rust_begin_short_backtrace"
        ));
        assert!(!is_profiler_frame(
            "profiling_lab::optimized::Scratch::reserve"
        ));
    }
}
