//! The HTML report: the table, what it shows and every chart in one file with no external
//! assets (charts are inline SVG, styles inline), so it can be mailed, attached to a CI run or
//! opened offline.

use std::fmt::Write as _;

use super::charts::{BAD_COLOR, OPTIMIZED_COLOR};
use super::report::{Metric, Report};
use super::table;

/// A chart to embed: its title and SVG document.
pub struct Figure<'a> {
    pub title: &'a str,
    pub svg: &'a str,
}

/// The whole page. `files` lists what else `--out` holds, as (relative path, what it is).
pub fn render(report: &Report, figures: &[Figure<'_>], files: &[(String, String)]) -> String {
    let hex = |c: plotters::style::RGBColor| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
    let mut out =
        String::with_capacity(64 * 1024 + figures.iter().map(|f| f.svg.len()).sum::<usize>());
    let s = &report.settings;
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>lab compare: worker-bad vs worker-optimized</title>
<style>
body {{ font-family: sans-serif; max-width: 980px; margin: 1em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; }}
th, td {{ padding: 0.25em 0.9em; border-bottom: 1px solid #ddd; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
th.bad {{ color: {bad}; }} th.optimized {{ color: {optimized}; }}
figure {{ margin: 1.5em 0; }} figure svg {{ max-width: 100%; height: auto; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; }}
code {{ background: #f0f0f0; padding: 0 0.2em; }}
.failed {{ color: {bad}; font-weight: bold; }} .ok {{ color: #2a7d2a; }}
</style>
</head>
<body>
<h1>worker-bad vs worker-optimized</h1>
<p>{elapsed:.1} s after {warmup} s of warm-up, {samples} samples of <code>/metrics</code> per
worker, one every {interval} s.
Both workers ran with <code>{flags}</code>.</p>
<h2>Side by side</h2>
<table>
<thead><tr><th></th><th class="bad">bad</th><th class="optimized">optimized</th><th>bad/optimized</th><th>JSON key</th></tr></thead>
<tbody>
"#,
        bad = hex(BAD_COLOR),
        optimized = hex(OPTIMIZED_COLOR),
        elapsed = report.elapsed_seconds,
        samples = report.samples_per_worker,
        interval = table::trim_float(s.interval_seconds),
        warmup = table::trim_float(s.warmup_seconds),
        flags = escape(&s.worker_flags()),
    );
    for metric in Metric::ALL {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><code>{}</code></td></tr>",
            escape(metric.label()),
            escape(&table::value(metric, report.bad.get(metric))),
            escape(&table::value(metric, report.optimized.get(metric))),
            escape(&table::ratio(report.ratio.get(metric))),
            metric.key(),
        );
    }
    out.push_str("</tbody>\n</table>\n<h2>What this shows</h2>\n<ul>\n");
    for finding in table::findings(report) {
        let _ = writeln!(out, "<li>{}</li>", code_spans(&escape(&finding)));
    }
    out.push_str("</ul>\n");
    if !report.thresholds.is_empty() {
        out.push_str("<h2>Thresholds (<code>--fail-if</code>)</h2>\n<ul>\n");
        for t in &report.thresholds {
            let (class, verdict) = if t.failed {
                ("failed", "FAILED")
            } else {
                ("ok", "ok")
            };
            let value = t
                .value
                .map_or_else(|| "no value".to_owned(), table::trim_float);
            let _ = writeln!(
                out,
                "<li><span class=\"{class}\">{verdict}</span> <code>{}</code> (value: {})</li>",
                escape(&t.expression),
                escape(&value)
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h2>Over time</h2>\n");
    for figure in figures {
        // The chart draws its own title; the label is for screen readers.
        let _ = writeln!(
            out,
            "<figure aria-label=\"{}\">\n{}\n</figure>",
            escape(figure.title),
            figure.svg
        );
    }
    out.push_str("<h2>Exit summaries</h2>\n");
    for summary in [&report.exit_summaries.bad, &report.exit_summaries.optimized] {
        let _ = writeln!(out, "<pre>{}</pre>", escape(summary));
    }
    if !files.is_empty() {
        out.push_str("<h2>Files</h2>\n<ul>\n");
        for (path, what) in files {
            let _ = writeln!(
                out,
                "<li><a href=\"{0}\"><code>{0}</code></a>: {1}</li>",
                escape(path),
                code_spans(&escape(what))
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Turns `backticked` spans of (already escaped) text into `<code>` elements.
fn code_spans(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_code_spans() {
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        assert_eq!(code_spans("run `lab x` now"), "run <code>lab x</code> now");
    }
}
