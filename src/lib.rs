//! # profiling-lab
//!
//! A lab for finding and fixing performance bugs in async Rust with metrics and profiles.
//!
//! Two workers run the same workload side by side. `worker-bad` has the three problems of the
//! original Go lab: helper tasks that never exit (task leaks), collections that are never sized
//! or reused (capacity mistakes), and allocation in hot paths. `worker-optimized` fixes each of
//! them, and reaches zero heap allocations per task. Both expose the same Prometheus metrics and
//! pprof-compatible profiles, so the difference shows on a Grafana dashboard and in
//! `go tool pprof`, and the code shows why: read [`bad`] and [`optimized`] side by side.
//!
//! | module | what it holds |
//! |---|---|
//! | [`task`] | the workload: operations, the deterministic task stream, what a task computes |
//! | [`tasks`] | the registry of live tasks: kind, spawn site, state; what the task profile reads |
//! | [`pool`] | the run loop both workers share: producer, queue, worker tasks, shutdown |
//! | [`bad`], [`optimized`] | the problems and their fixes, section by section |
//! | [`problems`], [`burst`] | which problems `worker-bad` has (`--problems`), bursts of load (`--burst`) |
//! | [`lock`] | the instrumented lock lesson 5 contends on (`/debug/pprof/mutex`) |
//! | [`alloc`] | the counting global allocator over jemalloc |
//! | [`memory`] | jemalloc's statistics: allocated, resident, purges |
//! | [`metrics`] | the `/metrics` registry |
//! | [`pprof`] | CPU, heap, allocation and task profiles |
//! | [`server`], [`http`] | the HTTP endpoints and their parameter checks |
//! | [`cli`], [`worker`], [`shutdown`], [`summary`] | flags, the process's life, stopping, the exit report |
//! | [`profile_file`] | `--cpuprofile` and `--memprofile` files, written whole or not at all |
//! | [`client`] | the HTTP client the lab's tools and tests use |
//! | [`lab`] | the `lab` tool: the stack without Nix, headless comparison, profiles, benchmarks |

pub mod alloc;
pub mod bad;
pub mod burst;
pub mod cli;
pub mod client;
pub mod exercise;
pub mod http;
pub mod kind;
pub mod lab;
pub mod lock;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod optimized;
pub mod pool;
pub mod pprof;
pub mod problems;
pub mod profile_file;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod summary;
pub mod task;
pub mod tasks;
pub mod worker;

pub use kind::WorkerKind;
