//! Flamegraphs (SVG, drawn by inferno) of CPU and allocation profiles, with the runtime's
//! frames trimmed from the root end.
//!
//! Every task's stack starts with some forty frames of the thread's start, tokio's scheduler
//! and `std`'s panic guards before the first line of the program. In a flamegraph those are
//! forty rows of towers a learner must scroll past before `bad::process`; Go's flamegraphs
//! start at the goroutine's function. Trimming them from the root, up to the first frame that
//! is neither `std`, `core`, `alloc` nor `tokio`, leaves the task's own function at the bottom.

use std::collections::HashMap;

use pprof::flamegraph::{self, Options};
use pprof::protos::Profile;

use crate::pprof::symbolize;

/// Crates and symbols of the thread start and the async runtime, by name prefix.
const RUNTIME_FRAMES: &[&str] = &[
    "std::",
    "core::",
    "alloc::",
    "tokio::",
    "tokio_util::",
    "futures_util::",
    // tokio's `tracing` feature (for tokio-console) wraps every spawned future in a span.
    "tracing::instrument::",
    // The task registry's and tokio-metrics' wrappers around every task (`tasks::track`).
    "profiling_lab::tasks::Tracked",
    "profiling_lab::observer::Observed",
    "tokio_metrics::",
    "__clone",
    "clone3",
    "start_thread",
    "_start",
    "__libc_start",
    "main",
    "thread_start",
    // std's panic guard around every thread's and task's entry point.
    "__rust_try",
    "__rust_begin_short_backtrace",
];

/// Whether `name` belongs to the runtime (thread start, `std`, `core`, `alloc`, tokio); for `<T as Trait>::f`, the
/// type's path decides unless it has none (a generic `F`), then the trait's.
pub fn is_runtime_frame(name: &str) -> bool {
    let path = strip_refs(name);
    let path = match path.split_once(" as ") {
        Some((ty, rest)) if !ty.contains("::") => rest,
        Some((ty, _)) => ty,
        None => path,
    };
    let path = strip_refs(path);
    RUNTIME_FRAMES.iter().any(|prefix| path.starts_with(prefix))
}

/// `<&mut dyn core::ops::Fn...` -> `core::ops::Fn...`.
fn strip_refs(name: &str) -> &str {
    name.trim_start_matches(['<', '&'])
        .trim_start_matches("mut ")
        .trim_start_matches("dyn ")
}

/// Drops runtime frames from the root end of `stack` (root first), keeping at least the leaf.
pub fn trim_root<'a>(stack: &'a [&'a str]) -> &'a [&'a str] {
    let runtime = stack.iter().take_while(|n| is_runtime_frame(n)).count();
    &stack[runtime.min(stack.len().saturating_sub(1))..]
}

/// Draws `profile`'s sample value `value_index` as a flamegraph titled `title`, values named
/// `count_name` ("samples", "bytes"). Returns `None` when there is nothing to draw.
pub fn draw(
    profile: &Profile,
    value_index: usize,
    title: String,
    count_name: &str,
) -> Result<Option<Vec<u8>>, String> {
    let names = symbolize::frame_names(profile);
    let mut folded: HashMap<String, i64> = HashMap::new();
    for (sample, stack) in profile.sample.iter().zip(&names) {
        let value = sample.value.get(value_index).copied().unwrap_or(0);
        if value <= 0 || stack.is_empty() {
            continue;
        }
        // inferno separates frames with ';'; a frame's own ';' would split it.
        let line = trim_root(stack)
            .iter()
            .map(|n| n.replace(';', ":"))
            .collect::<Vec<_>>()
            .join(";");
        *folded.entry(line).or_default() += value;
    }
    if folded.is_empty() {
        return Ok(None);
    }
    let mut lines: Vec<String> = folded
        .into_iter()
        .map(|(stack, value)| format!("{stack} {value}"))
        .collect();
    lines.sort();
    let mut options = Options::default();
    options.title = title;
    options.subtitle = Some(
        "Thread start and tokio runtime frames below the first program frame are trimmed".into(),
    );
    options.count_name = count_name.to_owned();
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg)
        .map_err(|e| format!("drawing the flamegraph: {e}"))?;
    Ok(Some(svg))
}

/// A flame graph with no frames: `title`, and `note` saying why nothing was drawn. A dashboard
/// link to a worker that did nothing worth drawing (the optimized worker's allocations) opens
/// this instead of an error: an empty graph is that worker's lesson.
pub fn empty(title: &str, note: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"1200\" height=\"120\" xmlns=\"http://www.w3.org/2000/svg\">\n\
         <rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#eeeeee\"/>\n\
         <text x=\"600\" y=\"30\" text-anchor=\"middle\" font-family=\"Verdana\" font-size=\"17\">{}</text>\n\
         <text x=\"600\" y=\"70\" text-anchor=\"middle\" font-family=\"Verdana\" font-size=\"12\">{}</text>\n\
         </svg>\n",
        xml_escape(title),
        xml_escape(note)
    )
    .into_bytes()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_graph_is_svg_with_its_title_and_note_escaped() {
        let svg = String::from_utf8(empty("a <b> & c", "nothing \"sampled\"")).unwrap();
        assert!(
            svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        assert!(svg.contains("a &lt;b&gt; &amp; c"), "{svg}");
        assert!(svg.contains("nothing &quot;sampled&quot;"), "{svg}");
    }

    #[test]
    fn runtime_frames_are_trimmed_from_the_root_only() {
        let stack = [
            "start_thread",
            "std::sys::pal::unix::thread::Thread::new::thread_start",
            "tokio::runtime::task::harness::Harness<T,S>::poll",
            "<core::pin::Pin<P> as core::future::future::Future>::poll",
            "profiling_lab::pool::work::{{closure}}",
            "<tokio::sync::mpsc::Receiver<T>>::recv",
            "profiling_lab::bad::process",
            "alloc::vec::Vec<T,A>::push",
        ];
        assert_eq!(
            trim_root(&stack),
            &stack[4..],
            "the task's function is the new root"
        );
        let idle = ["start_thread", "tokio::runtime::park", "epoll_wait"];
        assert_eq!(trim_root(&idle), &["epoll_wait"]);
        let all_runtime = ["start_thread", "std::thread::park"];
        assert_eq!(trim_root(&all_runtime), &["std::thread::park"]);
        assert!(is_runtime_frame(
            "<F as core::future::into_future::IntoFuture>::into_future"
        ));
        assert!(is_runtime_frame(
            "<&dyn core::ops::function::Fn<(), Output = i32> as core::ops::function::FnOnce<()>>::call_once"
        ));
        assert!(!is_runtime_frame(
            "<profiling_lab::bad::Bad as profiling_lab::pool::Strategy>::handle"
        ));
    }
}
