//! The report a worker prints when it stops: memory, tasks and, for a leaking worker, the leak.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::alloc::AllocCounts;
use crate::kind::WorkerKind;
use crate::memory::MemoryStats;
use crate::pool::{RunTotals, Slowest};

/// Why the run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    DurationElapsed,
    /// `--max-tasks` were produced and handled: the run ended by itself.
    MaxTasksDone,
    Interrupted,
    Terminated,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::DurationElapsed => "--duration elapsed",
            StopReason::MaxTasksDone => "--max-tasks handled",
            StopReason::Interrupted => "interrupted (Ctrl-C)",
            StopReason::Terminated => "terminated (SIGTERM)",
        })
    }
}

/// Everything the exit summary reports.
#[derive(Debug, Clone)]
pub struct Summary {
    pub kind: WorkerKind,
    /// Where the worker served its endpoints, for the commands the summary suggests.
    pub listen: SocketAddr,
    pub elapsed: Duration,
    pub reason: StopReason,
    /// `None` when a second signal stopped the worker before its tasks in hand were done.
    pub totals: Option<RunTotals>,
    pub processed: u64,
    pub errors: u64,
    /// Live tokio tasks just before the workload started, and after it stopped.
    pub live_tasks_start: usize,
    pub live_tasks_end: usize,
    /// Helper tasks (`tasks::TaskKind::Helper`) still alive after the workload stopped: the
    /// ones that outlived their work. HTTP connections and the pool's own tasks are not counted.
    pub helpers_left: usize,
    pub memory: MemoryStats,
    pub process_allocs: AllocCounts,
    pub task_allocs: AllocCounts,
    pub slowest: Option<Slowest>,
}

impl Summary {
    /// Helper tasks that outlived the work: the workload has stopped and joined what it meant
    /// to join, so every helper still alive was left behind.
    pub fn leaked_tasks(&self) -> usize {
        self.helpers_left
    }

    pub fn leaking(&self) -> bool {
        self.leaked_tasks() > 0
    }

    /// Allocation calls per processed task, made while handling it.
    pub fn allocations_per_task(&self) -> f64 {
        per(self.task_allocs.allocations, self.processed)
    }

    pub fn bytes_per_task(&self) -> f64 {
        per(self.task_allocs.bytes, self.processed)
    }

    /// The worker's address as a client would reach it.
    pub fn reachable_at(&self) -> SocketAddr {
        reachable(self.listen)
    }
}

/// `listen` as a client reaches it: a worker listening on every interface (0.0.0.0 or [::])
/// is reached on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

fn per(total: u64, tasks: u64) -> f64 {
    if tasks == 0 {
        0.0
    } else {
        total as f64 / tasks as f64
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "=== worker-{} summary: stopped after {secs:.1}s ({}) ===",
            self.kind, self.reason
        )?;
        let error_pct = 100.0 * per(self.errors, self.processed);
        let queue = match &self.totals {
            Some(totals) => format!("{} left in queue", totals.tasks_abandoned),
            None => "queue not counted (stopped at once)".to_owned(),
        };
        writeln!(
            f,
            "tasks processed      {} ({:.1}/s), {} failed validation ({error_pct:.1}%), {queue}",
            self.processed,
            self.processed as f64 / secs.max(1e-9),
            self.errors,
        )?;
        writeln!(
            f,
            "live tokio tasks     {} at exit, {} at start",
            self.live_tasks_end, self.live_tasks_start
        )?;
        if self.leaking() {
            writeln!(
                f,
                "  LEAK: {} helper tasks outlived their work: they have no exit path and are still waiting.\n        \
                 See them: go tool pprof -top http://{}/debug/pprof/goroutine",
                self.leaked_tasks(),
                self.reachable_at()
            )?;
        }
        writeln!(
            f,
            "allocated            {} (worker_allocated_memory_bytes: the workload's live heap)",
            bytes(self.memory.allocated)
        )?;
        writeln!(
            f,
            "total allocated      {} in {} allocations",
            bytes(self.process_allocs.bytes),
            self.process_allocs.allocations
        )?;
        writeln!(
            f,
            "  per task           {:.2} allocations, {} (while handling tasks)",
            self.allocations_per_task(),
            bytes(self.bytes_per_task() as u64)
        )?;
        writeln!(
            f,
            "resident             {} (worker_resident_memory_bytes: the workload's heap pages)",
            bytes(self.memory.resident)
        )?;
        writeln!(
            f,
            "allocator purges     {} (worker_gc_runs_total: Rust has no GC; these rise with churn)",
            self.memory.purges
        )?;
        if let Some(slowest) = self.slowest {
            writeln!(
                f,
                "slowest task         #{} {} in {:.3} ms",
                slowest.task,
                slowest.operation,
                slowest.elapsed.as_secs_f64() * 1e3
            )?;
        }
        Ok(())
    }
}

/// Bytes in binary units, e.g. `12.3 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn suggested_urls_use_an_address_a_client_can_reach() {
        let at = |addr: &str| reachable(addr.parse().unwrap()).to_string();
        assert_eq!(at("0.0.0.0:9090"), "127.0.0.1:9090");
        assert_eq!(at("[::]:9091"), "[::1]:9091");
        assert_eq!(at("10.1.2.3:9090"), "10.1.2.3:9090");
    }
}
