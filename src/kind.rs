//! Which worker a process is: its `worker_type` label, binary and default port.

use std::fmt;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerKind {
    Bad,
    Optimized,
    /// The learner's worker: `src/exercise.rs`, which starts as the bad worker's code.
    Exercise,
}

impl WorkerKind {
    /// The two workers the lab always runs side by side (`lab demo`, `lab compare`); the
    /// exercise joins them only when asked for (`lab demo --exercise`, `lab check`).
    pub const ALL: [WorkerKind; 2] = [WorkerKind::Bad, WorkerKind::Optimized];

    /// The `worker_type` label value, as the original lab's guide spells it.
    pub const fn label(self) -> &'static str {
        match self {
            WorkerKind::Bad => "bad",
            WorkerKind::Optimized => "optimized",
            WorkerKind::Exercise => "exercise",
        }
    }

    pub const fn binary(self) -> &'static str {
        match self {
            WorkerKind::Bad => "worker-bad",
            WorkerKind::Optimized => "worker-optimized",
            WorkerKind::Exercise => "worker-exercise",
        }
    }

    /// The guide's ports: the bad worker on 9090, the optimized one on 9091; the exercise on
    /// 9093, since the lab's Prometheus listens on 9092.
    pub const fn default_port(self) -> u16 {
        match self {
            WorkerKind::Bad => 9090,
            WorkerKind::Optimized => 9091,
            WorkerKind::Exercise => 9093,
        }
    }

    pub fn default_listen(self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.default_port()))
    }
}

impl fmt::Display for WorkerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}
