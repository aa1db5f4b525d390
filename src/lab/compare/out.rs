//! `--out DIR`: what a comparison leaves behind. The raw samples (CSV), the report (JSON and a
//! self-contained HTML page), one chart per series (SVG and PNG), the workers' logs and, with
//! `--profiles`, their CPU and heap profiles.

use std::path::{Path, PathBuf};

use super::charts;
use super::html::{self, Figure};
use super::report::Report;
use super::sample::{self, Sample};
use super::series;
use crate::kind::WorkerKind;

/// Writes everything into `dir` (which exists); returns the HTML report's path.
pub fn write(
    dir: &Path,
    report: &Report,
    bad: &[Sample],
    optimized: &[Sample],
) -> Result<PathBuf, String> {
    let runs = [(WorkerKind::Bad, bad), (WorkerKind::Optimized, optimized)];
    let mut files: Vec<(String, String)> = Vec::new();

    let columns: Vec<String> = sample::csv_columns()
        .map(|(column, metric)| format!("{column} ({metric})"))
        .collect();
    save(dir, "samples.csv", sample::csv(&runs).as_bytes())?;
    files.push((
        "samples.csv".into(),
        format!(
            "every sample, one row per sample per worker: worker, t_seconds, {}",
            columns.join(", ")
        ),
    ));
    save(dir, "report.json", report.to_json().as_bytes())?;
    files.push((
        "report.json".into(),
        "this report for machines (`lab compare --json` prints the same)".into(),
    ));

    let charts_dir = dir.join("charts");
    std::fs::create_dir_all(&charts_dir)
        .map_err(|e| format!("cannot create {}: {e}", charts_dir.display()))?;
    let charts = series::charts(&runs);
    let mut svgs = Vec::with_capacity(charts.len());
    for chart in &charts {
        let svg = charts::svg(chart)?;
        save(&charts_dir, &format!("{}.svg", chart.name), svg.as_bytes())?;
        save(
            &charts_dir,
            &format!("{}.png", chart.name),
            &charts::png(chart)?,
        )?;
        svgs.push(svg);
    }
    files.push((
        "charts/".into(),
        format!(
            "{} charts, each as SVG and PNG: {}",
            charts.len(),
            charts.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
        ),
    ));
    for kind in WorkerKind::ALL {
        files.push((format!("{kind}.log"), format!("what worker-{kind} logged")));
    }
    for profile in &report.profiles {
        let name = Path::new(&profile.path).file_name().map_or_else(
            || profile.path.clone(),
            |n| n.to_string_lossy().into_owned(),
        );
        let what = match profile.kind.as_str() {
            "cpu" => "CPU profile of the whole run",
            _ => "heap profile (live memory) at exit",
        };
        files.push((
            name.clone(),
            format!(
                "worker-{}'s {what}: `go tool pprof -top {name}`",
                profile.worker
            ),
        ));
    }

    let figures: Vec<Figure<'_>> = charts
        .iter()
        .zip(&svgs)
        .map(|(chart, svg)| Figure {
            title: chart.title,
            svg,
        })
        .collect();
    let page = html::render(report, &figures, &files);
    save(dir, "report.html", page.as_bytes())?;
    Ok(dir.join("report.html"))
}

fn save(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
