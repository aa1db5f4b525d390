//! The workload both workers run: a deterministic stream of tasks and what each one computes.
//!
//! A task is small (`TaskSpec` is `Copy`); its payload of `--data-size` integers is generated from
//! the task's seed when it is processed, so the bad and the optimized worker can be handed the
//! same stream and must return the same digest for every task. How they hold the payload and
//! the intermediate results is where they differ (`bad.rs`, `optimized.rs`); what they compute is
//! defined here, once.

use std::fmt;

/// The kinds of work a task asks for; the `operation` label of the task metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Sum, minimum and maximum of the payload.
    Stats,
    /// The payload sorted: its median and a position-weighted checksum.
    Sort,
    /// Values bucketed modulo [`BUCKETS`]: how many buckets are used and the fullest one.
    Dedup,
    /// The payload rendered as comma-separated decimal text, hashed.
    Render,
}

impl Operation {
    pub const ALL: [Operation; 4] = [
        Operation::Stats,
        Operation::Sort,
        Operation::Dedup,
        Operation::Render,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Operation::Stats => "stats",
            Operation::Sort => "sort",
            Operation::Dedup => "dedup",
            Operation::Render => "render",
        }
    }

    /// Position in [`Operation::ALL`], for arrays indexed by operation.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Number of buckets of the `dedup` operation.
pub const BUCKETS: usize = 1024;

/// Payload values lie in `-VALUE_RANGE..=VALUE_RANGE`, so their text is at most 8 bytes.
pub const VALUE_RANGE: i64 = 1_000_000;

/// A value that never occurs in a valid payload; a task carrying it fails validation.
pub const CORRUPT: i64 = i64::MIN;

/// About one task in a hundred carries a corrupt value, so `worker_task_errors_total` moves.
const CORRUPT_PERCENT: u64 = 1;

/// One unit of work. Cheap to copy: the payload is generated on demand from `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSpec {
    pub id: u64,
    pub operation: Operation,
    pub seed: u64,
    /// Position of the corrupt value, if this task is one that fails validation.
    pub corrupt_at: Option<usize>,
}

impl TaskSpec {
    /// A task built from its parts; the generator and the property tests both go through here.
    pub fn new(id: u64, seed: u64, data_size: usize) -> TaskSpec {
        let mut rng = SplitMix64(seed);
        let operation = Operation::ALL[(rng.next() % Operation::ALL.len() as u64) as usize];
        let corrupt_at = (rng.next() % 100 < CORRUPT_PERCENT && data_size > 0)
            .then(|| (rng.next() % data_size as u64) as usize);
        TaskSpec {
            id,
            operation,
            seed,
            corrupt_at,
        }
    }

    /// Whether this task's result is sealed ([`seal`]): one task in [`SEAL_EVERY`], by id.
    pub fn sealed(&self) -> bool {
        self.id % SEAL_EVERY == SEAL_EVERY - 1
    }

    /// The payload, element by element, without allocating: each worker decides where to put it.
    pub fn values(&self, data_size: usize) -> Values {
        Values {
            rng: SplitMix64(self.seed ^ 0x9e37_79b9_7f4a_7c15),
            index: 0,
            len: data_size,
            corrupt_at: self.corrupt_at,
        }
    }
}

/// Iterator over a task's payload.
#[derive(Debug, Clone)]
pub struct Values {
    rng: SplitMix64,
    index: usize,
    len: usize,
    corrupt_at: Option<usize>,
}

impl Iterator for Values {
    type Item = i64;

    fn next(&mut self) -> Option<i64> {
        if self.index == self.len {
            return None;
        }
        let raw = self.rng.next();
        let value = if self.corrupt_at == Some(self.index) {
            CORRUPT
        } else {
            (raw % (2 * VALUE_RANGE as u64 + 1)) as i64 - VALUE_RANGE
        };
        self.index += 1;
        Some(value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len - self.index;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Values {}

/// The deterministic stream of tasks one run processes; the same `seed` gives the same stream.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: SplitMix64,
    next_id: u64,
    data_size: usize,
}

impl Generator {
    pub fn new(seed: u64, data_size: usize) -> Generator {
        Generator {
            rng: SplitMix64(seed),
            next_id: 0,
            data_size,
        }
    }

    pub fn next_task(&mut self) -> TaskSpec {
        let id = self.next_id;
        self.next_id += 1;
        TaskSpec::new(id, self.rng.next(), self.data_size)
    }
}

/// Why a task failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskError {
    /// The payload holds [`CORRUPT`] at this position.
    CorruptValue { index: usize },
    /// There is nothing to compute on (`--data-size` is at least 1, so only tests see this).
    EmptyPayload,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::CorruptValue { index } => write!(f, "corrupt value at index {index}"),
            TaskError::EmptyPayload => f.write_str("empty payload"),
        }
    }
}

impl std::error::Error for TaskError {}

/// The check every task passes before any work is done on it.
pub fn validate(payload: &[i64]) -> Result<(), TaskError> {
    if payload.is_empty() {
        return Err(TaskError::EmptyPayload);
    }
    match payload.iter().position(|&v| v == CORRUPT) {
        Some(index) => Err(TaskError::CorruptValue { index }),
        None => Ok(()),
    }
}

/// The `dedup` bucket of a value.
pub fn bucket(value: i64) -> usize {
    value.rem_euclid(BUCKETS as i64) as usize
}

/// Folds values into a digest; both workers combine their results through it.
pub fn mix(parts: &[u64]) -> u64 {
    parts.iter().fold(0x243f_6a88_85a3_08d3, |acc, &part| {
        let mut z = (acc ^ part).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// One task in this many has its result sealed.
pub const SEAL_EVERY: u64 = 10;

/// Rounds of [`seal`] per payload value: a few milliseconds of CPU for the demo's 10 000
/// values in a release build. An unoptimized build runs the loop tens of times slower; it does
/// fewer rounds so that tests at high rates stay affordable, and its stalls are still longer.
/// A digest is the same in both workers of one build, not across builds.
pub const SEAL_ROUNDS_PER_VALUE: u64 = if cfg!(debug_assertions) { 40 } else { 100 };

/// Seals a result: a deliberately slow, iterated hash of the digest, the way a password hash,
/// a signature or a compression pass is slow, with work in proportion to the payload. Pure CPU
/// for milliseconds with no await point: lesson 4's "blocking" step, which each worker runs on
/// a different kind of thread.
#[inline(never)]
pub fn seal(digest: u64, data_size: usize) -> u64 {
    let rounds = data_size as u64 * SEAL_ROUNDS_PER_VALUE;
    (0..rounds).fold(digest, |acc, round| mix(&[acc, round]))
}

/// 64-bit FNV-1a, fed incrementally so text can be hashed as it is produced or all at once.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(pub u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The position-weighted checksum of a sorted payload.
pub fn weighted_checksum(sorted: impl Iterator<Item = i64>) -> u64 {
    sorted.zip(1u64..).fold(0u64, |acc, (v, weight)| {
        acc.wrapping_add((v as u64).wrapping_mul(weight))
    })
}

/// SplitMix64: tiny, fast and good enough to make payloads look random.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_deterministic_and_mixes_operations() {
        let a: Vec<_> = {
            let mut g = Generator::new(7, 100);
            (0..2000).map(|_| g.next_task()).collect()
        };
        let mut g = Generator::new(7, 100);
        let b: Vec<_> = (0..2000).map(|_| g.next_task()).collect();
        assert_eq!(a, b);
        for op in Operation::ALL {
            assert!(
                a.iter().filter(|t| t.operation == op).count() > 50,
                "{op} underrepresented"
            );
        }
        let corrupt = a.iter().filter(|t| t.corrupt_at.is_some()).count();
        assert!(
            (2..=25).contains(&corrupt),
            "{corrupt} corrupt tasks in 400"
        );
    }

    #[test]
    fn payload_values_stay_in_range_except_the_corrupt_one() {
        let mut g = Generator::new(1, 64);
        for _ in 0..500 {
            let task = g.next_task();
            for (i, v) in task.values(64).enumerate() {
                if task.corrupt_at == Some(i) {
                    assert_eq!(v, CORRUPT);
                } else {
                    assert!((-VALUE_RANGE..=VALUE_RANGE).contains(&v));
                }
            }
            let payload: Vec<i64> = task.values(64).collect();
            assert_eq!(validate(&payload).is_err(), task.corrupt_at.is_some());
        }
    }

    #[test]
    #[ignore = "prints the seal's cost in this build"]
    fn seal_cost() {
        let started = std::time::Instant::now();
        let sealed = seal(1, 10_000);
        eprintln!("seal of 10000 values: {:?} ({sealed})", started.elapsed());
    }

    #[test]
    fn buckets_cover_negative_values() {
        assert_eq!(bucket(-1), BUCKETS - 1);
        assert_eq!(bucket(BUCKETS as i64), 0);
    }
}
