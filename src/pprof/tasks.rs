//! The goroutine profile's analogue: a dump of every live tokio task and where it is waiting.
//!
//! tokio (with `--cfg tokio_unstable` and the `taskdump` feature) can stop the runtime, poll each
//! idle task once in tracing mode and record the stack of the leaf future it is parked on. Tasks
//! parked at the same place have the same unresolved stack, so they are grouped by it first and
//! only one stack per group is symbolized: that keeps a dump of 100k leaked tasks fast.
//!
//! Served as Go serves goroutines: a pprof profile of task counts per stack (`debug=0`), grouped
//! text (`debug=1`) or every task (`debug=2`).

use std::time::Duration;

use tokio::runtime::Handle;

use crate::http::ApiError;

/// How the dump is rendered, as Go's `?debug=` selects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskFormat {
    /// gzipped pprof profile, sample type `goroutine/count`.
    Profile,
    /// One entry per distinct stack, with its task count.
    Grouped,
    /// One entry per task.
    EveryTask,
}

/// A task that never yields holds its thread, and the dump waits for every thread: give up
/// rather than hang the request.
const DUMP_TIMEOUT: Duration = Duration::from_secs(10);

/// Captures and renders a task dump of `runtime`.
pub async fn render(runtime: &Handle, format: TaskFormat) -> Result<Vec<u8>, ApiError> {
    imp::render(runtime, format).await
}

#[cfg(all(
    tokio_unstable,
    target_os = "linux",
    any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")
))]
mod imp {
    use std::collections::HashMap;
    use std::collections::hash_map::DefaultHasher;
    use std::fmt::Write as _;
    use std::hash::Hasher;

    use axum::http::StatusCode;
    use pprof::protos;
    use tokio::runtime::Handle;
    use tokio::runtime::dump::{Backtrace, Dump};

    use super::{DUMP_TIMEOUT, TaskFormat};
    use crate::http::ApiError;
    use crate::pprof::encode::{self, StringTable};

    pub async fn render(runtime: &Handle, format: TaskFormat) -> Result<Vec<u8>, ApiError> {
        let dump = tokio::time::timeout(DUMP_TIMEOUT, runtime.dump())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the task dump did not finish within {} s: a task is running without \
                         yielding and holds its thread (a CPU profile shows which)",
                        DUMP_TIMEOUT.as_secs()
                    ),
                )
            })?;
        tokio::task::spawn_blocking(move || {
            use crate::observer::{Observer, scope};
            scope(Observer::TaskProfile, || {
                let groups = group(&dump);
                encode::release_symbol_cache();
                match format {
                    TaskFormat::Profile => profile(&groups),
                    TaskFormat::Grouped => Ok(grouped_text(&groups).into_bytes()),
                    TaskFormat::EveryTask => Ok(every_task_text(&groups).into_bytes()),
                }
            })
        })
        .await
        .map_err(|e| ApiError::internal("task dump", e))?
    }

    /// Tasks parked at the same place, and that place.
    struct Group {
        task_ids: Vec<String>,
        /// One stack per leaf future the task polled (more than one under `select!`/`join!`).
        stacks: Vec<Vec<Frame>>,
    }

    /// One return address and the functions inlined at it, innermost first.
    struct Frame {
        address: u64,
        functions: Vec<Function>,
    }

    struct Function {
        raw: String,
        name: String,
        file: String,
        line: u32,
    }

    /// Groups tasks by their unresolved stacks, then symbolizes one stack per group.
    fn group(dump: &Dump) -> Vec<Group> {
        let tasks: Vec<_> = dump.tasks().iter().collect();
        let mut index: HashMap<u64, usize> = HashMap::new();
        let mut members: Vec<(usize, Vec<String>)> = Vec::new();
        for (i, task) in tasks.iter().enumerate() {
            // A trace's Debug form lists raw instruction pointers without resolving them:
            // identical stacks hash alike, for the cost of formatting a few addresses.
            let mut hasher = HashWriter(DefaultHasher::new());
            let _ = write!(hasher, "{:?}", task.trace());
            let slot = *index.entry(hasher.0.finish()).or_insert_with(|| {
                members.push((i, Vec::new()));
                members.len() - 1
            });
            members[slot].1.push(task.id().to_string());
        }
        let mut groups: Vec<Group> = members
            .into_iter()
            .map(|(representative, task_ids)| Group {
                task_ids,
                stacks: tasks[representative]
                    .trace()
                    .resolve_backtraces()
                    .iter()
                    .map(frames)
                    .collect(),
            })
            .collect();
        groups.sort_by_key(|g| std::cmp::Reverse(g.task_ids.len()));
        groups
    }

    /// The frames of one backtrace, without the tracing machinery on top of it.
    fn frames(backtrace: &Backtrace) -> Vec<Frame> {
        let mut frames: Vec<Frame> = backtrace
            .frames()
            .map(|frame| Frame {
                address: frame.ip() as u64,
                functions: frame
                    .symbols()
                    .map(|symbol| {
                        let raw = symbol
                            .name_raw()
                            .map(|raw| String::from_utf8_lossy(raw).into_owned())
                            .unwrap_or_else(|| format!("{:#x}", frame.ip() as usize));
                        Function {
                            name: encode::demangle(&raw),
                            raw,
                            file: symbol
                                .filename()
                                .map(|f| f.display().to_string())
                                .unwrap_or_default(),
                            line: symbol.lineno().unwrap_or(0),
                        }
                    })
                    .collect(),
            })
            .collect();
        let machinery = frames
            .iter()
            .take_while(|frame| frame.functions.iter().all(|f| is_machinery(&f.name)))
            .count();
        frames.drain(..machinery.min(frames.len().saturating_sub(1)));
        frames
    }

    /// Frames of the stack capture itself, not of the task.
    fn is_machinery(name: &str) -> bool {
        name.starts_with("backtrace::")
            || name.starts_with("tokio::runtime::task::trace::")
            || name.starts_with("<backtrace::")
    }

    fn profile(groups: &[Group]) -> Result<Vec<u8>, ApiError> {
        let mut strings = StringTable::default();
        let mut profile = protos::Profile {
            sample_type: vec![strings.value_type("goroutine", "count")],
            period_type: Some(strings.value_type("goroutine", "count")).into(),
            period: 1,
            ..Default::default()
        };
        let mut locations: HashMap<u64, u64> = HashMap::new();
        let mut functions: HashMap<String, u64> = HashMap::new();
        for group in groups {
            // A task waiting on several futures is filed under the first; `?debug=1` shows all.
            let stack = group.stacks.first().map_or(&[][..], Vec::as_slice);
            let mut location_id = Vec::with_capacity(stack.len());
            for frame in stack {
                let id = match locations.get(&frame.address) {
                    Some(&id) => id,
                    None => {
                        let id = profile.location.len() as u64 + 1;
                        let line = frame
                            .functions
                            .iter()
                            .map(|f| protos::Line {
                                function_id: function_id(
                                    &mut profile,
                                    &mut functions,
                                    &mut strings,
                                    f,
                                ),
                                line: i64::from(f.line),
                                ..Default::default()
                            })
                            .collect();
                        profile.location.push(protos::Location {
                            id,
                            address: frame.address,
                            line,
                            ..Default::default()
                        });
                        locations.insert(frame.address, id);
                        id
                    }
                };
                location_id.push(id);
            }
            profile.sample.push(protos::Sample {
                location_id,
                value: vec![group.task_ids.len() as i64],
                ..Default::default()
            });
        }
        profile.string_table = strings.into_strings();
        encode::gzip_profile(&profile).map_err(|e| ApiError::internal("task profile", e))
    }

    fn function_id(
        profile: &mut protos::Profile,
        functions: &mut HashMap<String, u64>,
        strings: &mut StringTable,
        f: &Function,
    ) -> u64 {
        if let Some(&id) = functions.get(&f.raw) {
            return id;
        }
        let id = profile.function.len() as u64 + 1;
        profile.function.push(protos::Function {
            id,
            name: strings.intern(&f.name),
            system_name: strings.intern(&f.raw),
            filename: strings.intern(&f.file),
            ..Default::default()
        });
        functions.insert(f.raw.clone(), id);
        id
    }

    fn total(groups: &[Group]) -> usize {
        groups.iter().map(|g| g.task_ids.len()).sum()
    }

    /// Go's `debug=1` layout: a count and addresses per stack, then one `#` line per function.
    fn grouped_text(groups: &[Group]) -> String {
        let mut out = format!("task profile: total {}\n", total(groups));
        for group in groups {
            let addresses: Vec<String> = group
                .stacks
                .iter()
                .flatten()
                .map(|f| format!("{:#x}", f.address))
                .collect();
            let _ = writeln!(out, "{} @ {}", group.task_ids.len(), addresses.join(" "));
            for (i, stack) in group.stacks.iter().enumerate() {
                if group.stacks.len() > 1 {
                    let _ = writeln!(
                        out,
                        "# future {} of {} the task is waiting on:",
                        i + 1,
                        group.stacks.len()
                    );
                }
                for frame in stack {
                    for f in &frame.functions {
                        let _ = writeln!(
                            out,
                            "#\t{:#x}\t{}\t{}:{}",
                            frame.address, f.name, f.file, f.line
                        );
                    }
                }
            }
            out.push('\n');
        }
        out
    }

    /// Go's `debug=2` layout: every task with its stack, innermost first.
    fn every_task_text(groups: &[Group]) -> String {
        let mut out = String::new();
        for group in groups {
            let mut stack_text = String::new();
            for (i, stack) in group.stacks.iter().enumerate() {
                if i > 0 {
                    stack_text.push_str("... and, polled by the same task:\n");
                }
                for f in stack.iter().flat_map(|frame| &frame.functions) {
                    let _ = writeln!(stack_text, "{}()\n\t{}:{}", f.name, f.file, f.line);
                }
            }
            for id in &group.task_ids {
                let _ = writeln!(out, "task {id} [idle]:\n{stack_text}");
            }
        }
        out
    }

    /// Feeds formatted text straight into a hasher, so grouping allocates nothing per task.
    struct HashWriter(DefaultHasher);

    impl std::fmt::Write for HashWriter {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
}

#[cfg(not(all(
    tokio_unstable,
    target_os = "linux",
    any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")
)))]
mod imp {
    use axum::http::StatusCode;
    use tokio::runtime::Handle;

    use super::TaskFormat;
    use crate::http::ApiError;

    pub async fn render(_runtime: &Handle, _format: TaskFormat) -> Result<Vec<u8>, ApiError> {
        Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "task dumps need Linux on x86, x86_64 or aarch64 and a build with --cfg tokio_unstable \
             (.cargo/config.toml sets it); worker_active_goroutines still counts live tasks",
        ))
    }
}
