//! The goroutine profile's analogue: every live task of the [task registry](crate::tasks), by
//! the function it runs and the line that spawned it.
//!
//! Served as Go serves goroutines at `/debug/pprof/goroutine`: a pprof profile of task counts
//! (`debug=0`, sample type `goroutine/count`, labels `kind` and `state`), Go's grouped text
//! starting `goroutine profile: total N` (`debug=1`), or every task as `goroutine N [state]:`
//! with its function and its "created by" line (`debug=2`). `?seconds=N` returns the change over
//! N seconds (Go's delta profile): which tasks appeared, and where.
//!
//! It reads the registry, never tokio's task dumps, so it cannot wedge the runtime (see
//! [`crate::tasks`]). One profile is made at a time: a request that finds another one running
//! waits up to [`WAIT_FOR_TURN`], then gets 409 with a message saying so. Profiles are made on a
//! thread of their own, in the task profile's observer scope ([`super::background`]); each
//! response says in a `Server-Timing` header how long it waited for its turn and how long it
//! took to make (`wait;dur=...,render;dur=...`, in milliseconds).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::panic::Location;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use pprof::protos;

use crate::http::{ApiError, Params};
use crate::observer::Observer;
use crate::pprof::OneAtATime;
use crate::pprof::background::Background;
use crate::pprof::encode::{self, StringTable};
use crate::server::AppState;
use crate::tasks::{self, TaskInfo, TaskKind, TaskState};

/// The endpoint's path.
pub const PATH: &str = "/debug/pprof/goroutine";

pub use super::WAIT_FOR_TURN;

/// Longest `?seconds=N` delta.
pub const MAX_SECONDS: u64 = super::MAX_SECONDS;

/// How the tasks are rendered, as Go's `?debug=` selects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskFormat {
    /// gzipped pprof profile, sample type `goroutine/count`.
    Profile,
    /// One entry per group of tasks running the same function from the same spawn site.
    Grouped,
    /// One entry per task.
    EveryTask,
}

/// One profile at a time: each is cheap, but a crowd of them on 100k tasks is not, and the
/// registry's locks are shared with the workload's spawns.
static TURN: OneAtATime = OneAtATime::new();

/// The thread task profiles are made on.
static RENDERER: Background = Background::new("task-profile", Observer::TaskProfile);

/// The header saying how long a task profile waited for its turn and took to make.
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// `GET /debug/pprof/goroutine?debug=0|1|2` or `?seconds=N`.
pub async fn handler(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(PATH, query.as_deref(), &["debug", "seconds"])?;
    let format = match params.integer("debug", 0..=2, 0, "")? {
        0 => TaskFormat::Profile,
        1 => TaskFormat::Grouped,
        _ => TaskFormat::EveryTask,
    };
    let seconds = match params.has("seconds") {
        true if params.has("debug") => {
            return Err(ApiError::bad_request(format!(
                "query parameters \"seconds\" and \"debug\" cannot be combined for {PATH}: a delta \
                 profile (?seconds=N) is a pprof profile; drop one of them"
            )));
        }
        true => Some(params.integer("seconds", 1..=MAX_SECONDS, 30, " of seconds")?),
        false => None,
    };
    if seconds.is_some() {
        super::refuse_when_stopping(&state.stopping)?;
    }
    let arrived = Instant::now();
    let _turn = TURN.turn("task profile").await?;
    let wait = arrived.elapsed();
    let rendering = Instant::now();
    let (body, render) = match seconds {
        None => (
            RENDERER.run(move || render(format)).await?,
            rendering.elapsed(),
        ),
        Some(seconds) => {
            let before = RENDERER.run(|| Ok(Counts::now())).await?;
            let first = rendering.elapsed();
            let start = Instant::now();
            super::sample_for(Duration::from_secs(seconds), &state.stopping).await;
            // Stopped early: the delta covers the seconds that passed, not those asked for.
            let seconds = start.elapsed().as_secs().clamp(1, seconds);
            let second = Instant::now();
            let body = RENDERER
                .run(move || delta_profile(&before, &Counts::now(), seconds))
                .await?;
            (body, first + second.elapsed())
        }
    };
    let timing = (
        SERVER_TIMING,
        HeaderValue::from_str(&format!(
            "wait;dur={:.1}, render;dur={:.1}",
            wait.as_secs_f64() * 1e3,
            render.as_secs_f64() * 1e3
        ))
        .expect("digits, letters and punctuation"),
    );
    Ok(match format {
        TaskFormat::Profile => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"goroutine.pb.gz\"".to_owned(),
                ),
            ],
            [timing],
            body,
        )
            .into_response(),
        _ => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            [timing],
            body,
        )
            .into_response(),
    })
}

/// Renders the live tasks in `format`. Synchronous: run it off the runtime's threads.
pub fn render(format: TaskFormat) -> Result<Vec<u8>, ApiError> {
    let tasks = tasks::snapshot();
    match format {
        TaskFormat::Profile => profile(&group(&tasks), None),
        TaskFormat::Grouped => Ok(grouped_text(&group(&tasks)).into_bytes()),
        TaskFormat::EveryTask => Ok(every_task_text(tasks).into_bytes()),
    }
}

/// What tasks are grouped by: the same function, spawned from the same line, of the same kind,
/// in the same state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    kind: TaskKind,
    future: &'static str,
    spawned_at: &'static Location<'static>,
    state: TaskState,
}

impl Key {
    fn of(task: &TaskInfo) -> Key {
        Key {
            kind: task.kind,
            future: task.future,
            spawned_at: task.spawned_at,
            state: task.state,
        }
    }

    fn function(&self) -> &'static str {
        tasks::function_name(self.future)
    }

    /// Sorts groups by kind, then function and spawn site, so profiles of two workers line up.
    fn order(&self) -> impl Ord + '_ {
        (
            self.kind,
            self.function(),
            self.spawned_at.file(),
            self.spawned_at.line(),
            self.spawned_at.column(),
            self.state,
        )
    }
}

struct Group {
    key: Key,
    count: i64,
    youngest: Duration,
    oldest: Duration,
    fewest_polls: u64,
    most_polls: u64,
}

fn group(tasks: &[TaskInfo]) -> Vec<Group> {
    let mut groups: HashMap<Key, Group> = HashMap::new();
    for task in tasks {
        let key = Key::of(task);
        let group = groups.entry(key).or_insert(Group {
            key,
            count: 0,
            youngest: task.age,
            oldest: task.age,
            fewest_polls: task.polls,
            most_polls: task.polls,
        });
        group.count += 1;
        group.youngest = group.youngest.min(task.age);
        group.oldest = group.oldest.max(task.age);
        group.fewest_polls = group.fewest_polls.min(task.polls);
        group.most_polls = group.most_polls.max(task.polls);
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    // Largest first, as Go orders its goroutine profile.
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.key.order().cmp(&b.key.order()))
    });
    groups
}

/// Task counts per group at one moment, for a delta profile.
struct Counts(HashMap<Key, i64>);

impl Counts {
    fn now() -> Counts {
        let mut counts = HashMap::new();
        for task in tasks::snapshot() {
            *counts.entry(Key::of(&task)).or_insert(0) += 1;
        }
        Counts(counts)
    }
}

fn delta_profile(before: &Counts, after: &Counts, seconds: u64) -> Result<Vec<u8>, ApiError> {
    let mut groups: Vec<Group> = after
        .0
        .keys()
        .chain(before.0.keys())
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .filter_map(|key| {
            let change =
                after.0.get(key).copied().unwrap_or(0) - before.0.get(key).copied().unwrap_or(0);
            (change != 0).then_some(Group {
                key: *key,
                count: change,
                youngest: Duration::ZERO,
                oldest: Duration::ZERO,
                fewest_polls: 0,
                most_polls: 0,
            })
        })
        .collect();
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.key.order().cmp(&b.key.order()))
    });
    profile(&groups, Some(Duration::from_secs(seconds)))
}

/// The pprof profile: per group one sample of two frames, the task's function on top of the line
/// that spawned it, so `-top` ranks functions and `-traces`/`-peek` show where each was spawned.
fn profile(groups: &[Group], delta: Option<Duration>) -> Result<Vec<u8>, ApiError> {
    let mut strings = StringTable::default();
    let mut profile = protos::Profile {
        sample_type: vec![strings.value_type("goroutine", "count")],
        period_type: Some(strings.value_type("goroutine", "count")).into(),
        period: 1,
        time_nanos: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
        duration_nanos: delta.map_or(0, |d| d.as_nanos() as i64),
        ..Default::default()
    };
    if delta.is_some() {
        profile.comment.push(strings.intern(
            "delta profile: tasks alive at the end minus tasks alive at the start, per stack",
        ));
    }
    let mut functions: HashMap<String, u64> = HashMap::new();
    let mut locations: HashMap<(u64, i64), u64> = HashMap::new();
    let mut location = |profile: &mut protos::Profile,
                        strings: &mut StringTable,
                        name: &str,
                        system_name: &str,
                        file: &str,
                        line: i64| {
        let function_id = match functions.get(system_name) {
            Some(&id) => id,
            None => {
                let id = profile.function.len() as u64 + 1;
                profile.function.push(protos::Function {
                    id,
                    name: strings.intern(name),
                    system_name: strings.intern(system_name),
                    filename: strings.intern(file),
                    ..Default::default()
                });
                functions.insert(system_name.to_owned(), id);
                id
            }
        };
        *locations.entry((function_id, line)).or_insert_with(|| {
            let id = profile.location.len() as u64 + 1;
            profile.location.push(protos::Location {
                id,
                line: vec![protos::Line {
                    function_id,
                    line,
                    ..Default::default()
                }],
                ..Default::default()
            });
            id
        })
    };
    let kind_key = strings.intern("kind");
    let state_key = strings.intern("state");
    for group in groups {
        let site = group.key.spawned_at;
        // Go's pprof strips `<...>` from a function whose system name equals its name; the raw
        // type name (with `::{{closure}}`) differs from the cleaned one, so generics survive.
        // Where the task's function is defined is not known (only its type name is), so its
        // frame has no file: the spawn site's file belongs to the "created by" frame below.
        let leaf = location(
            &mut profile,
            &mut strings,
            group.key.function(),
            group.key.future,
            "",
            0,
        );
        let creator = created_by(site);
        let root = location(
            &mut profile,
            &mut strings,
            &creator,
            &format!("{creator} ({} task)", group.key.kind),
            site.file(),
            i64::from(site.line()),
        );
        let label = |key, value: &str, strings: &mut StringTable| protos::Label {
            key,
            str: strings.intern(value),
            ..Default::default()
        };
        profile.sample.push(protos::Sample {
            location_id: vec![leaf, root],
            value: vec![group.count],
            label: vec![
                label(kind_key, group.key.kind.label(), &mut strings),
                label(state_key, group.key.state.label(), &mut strings),
            ],
            ..Default::default()
        });
    }
    profile.string_table = strings.into_strings();
    encode::gzip_profile(&profile).map_err(|e| ApiError::internal("task profile", e))
}

/// Go's "created by" line, with the spawn site in place of the spawning function.
fn created_by(site: &Location<'_>) -> String {
    format!(
        "created by {}:{}:{}",
        site.file(),
        site.line(),
        site.column()
    )
}

fn total(groups: &[Group]) -> i64 {
    groups.iter().map(|g| g.count).sum()
}

/// Go's `debug=1` layout: a header with the total, then per group its count, labels and frames.
/// Go lists return addresses after `@`; a task has none, so the line names the kind and state.
fn grouped_text(groups: &[Group]) -> String {
    let mut out = String::with_capacity(256 * groups.len() + 64);
    let _ = writeln!(out, "goroutine profile: total {}", total(groups));
    for group in groups {
        let key = &group.key;
        let _ = write!(
            out,
            "{} @ {} {}, age {} to {}, polled ",
            group.count,
            key.kind,
            key.state.label(),
            Age(group.youngest),
            Age(group.oldest),
        );
        let _ = if group.fewest_polls == group.most_polls {
            writeln!(out, "{}", Times(group.most_polls))
        } else {
            writeln!(out, "{} to {} times", group.fewest_polls, group.most_polls)
        };
        let _ = writeln!(
            out,
            "# labels: {{\"kind\":\"{}\", \"state\":\"{}\"}}",
            key.kind,
            key.state.label()
        );
        let _ = writeln!(out, "#\t{}", key.function());
        let _ = writeln!(out, "#\t{}", created_by(key.spawned_at));
        out.push('\n');
    }
    out
}

/// Go's `debug=2` layout: every task, oldest first, with its function and where it was created.
/// As in Go, a task idle for a minute or more says for how long.
///
/// Written straight into one buffer, with no allocation per task: with 100,000 tasks this is
/// the largest profile the lab makes (about 20 MB), and observer allocations bypass jemalloc's
/// thread cache (see [`crate::alloc`]), so each one costs a locked trip to the arena.
fn every_task_text(mut tasks: Vec<TaskInfo>) -> String {
    tasks.sort_unstable_by_key(|t| t.id);
    let mut out = String::with_capacity(200 * tasks.len());
    for task in &tasks {
        let minutes = task.idle_for.as_secs() / 60;
        let site = task.spawned_at;
        let _ = write!(out, "goroutine {} [{}", task.id, task.state.label());
        let _ = match (task.state, minutes) {
            (TaskState::Idle, 1) => write!(out, ", 1 minute"),
            (TaskState::Idle, m) if m > 1 => write!(out, ", {m} minutes"),
            _ => Ok(()),
        };
        let _ = write!(
            out,
            "]:\n{}(...)\n\t{} task, age {}, polled {}\ncreated by {}:{}:{}\n\t{}:{}\n\n",
            task.function(),
            task.kind,
            Age(task.age),
            Times(task.polls),
            site.file(),
            site.line(),
            site.column(),
            site.file(),
            site.line(),
        );
    }
    out
}

/// `1 time`, `3 times`.
struct Times(u64);

impl std::fmt::Display for Times {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            1 => f.write_str("1 time"),
            n => write!(f, "{n} times"),
        }
    }
}

/// A task's age for a person: `850ms`, `12.3s`, `4m12s`.
struct Age(Duration);

impl std::fmt::Display for Age {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        let secs = d.as_secs_f64();
        if secs < 1.0 {
            write!(f, "{}ms", d.as_millis())
        } else if secs < 60.0 {
            write!(f, "{secs:.1}s")
        } else {
            let whole = d.as_secs();
            write!(f, "{}m{:02}s", whole / 60, whole % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_durations() {
        assert_eq!(Age(Duration::from_millis(850)).to_string(), "850ms");
        assert_eq!(Age(Duration::from_millis(12_340)).to_string(), "12.3s");
        assert_eq!(Age(Duration::from_secs(252)).to_string(), "4m12s");
        assert_eq!(Times(1).to_string(), "1 time");
        assert_eq!(Times(3).to_string(), "3 times");
    }

    #[test]
    fn every_format_names_a_registered_task_and_its_spawn_site() {
        async fn parked(rx: tokio::sync::oneshot::Receiver<()>) {
            let _ = rx.await;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (_tx, rx) = tokio::sync::oneshot::channel();
        let entered = rt.enter();
        let line = line!() + 1;
        let handle = tasks::spawn(TaskKind::Observer, parked(rx));
        drop(entered);
        rt.block_on(tokio::task::yield_now());
        let site = format!("created by {}:{line}:", file!());
        let grouped = String::from_utf8(render(TaskFormat::Grouped).unwrap()).unwrap();
        assert!(
            grouped.starts_with("goroutine profile: total "),
            "{grouped}"
        );
        assert!(grouped.contains("#\tprofiling_lab::pprof::tasks::tests::every_format_names_a_registered_task_and_its_spawn_site::parked\n"), "{grouped}");
        assert!(grouped.contains(&site), "{grouped}");
        let every = String::from_utf8(render(TaskFormat::EveryTask).unwrap()).unwrap();
        assert!(
            every.contains(" [idle]:\nprofiling_lab::pprof::tasks::tests::"),
            "{every}"
        );
        assert!(every.contains(&site), "{every}");
        let profile = encode::gunzip_profile(&render(TaskFormat::Profile).unwrap()).unwrap();
        assert!(profile.string_table.iter().any(|s| s.starts_with(&site)));
        handle.abort();
    }
}
