//! Prometheus and Grafana as `lab demo` runs them: where their binaries are, what to tell a
//! learner who has not installed them, and their command lines, chosen as in the Nix demo
//! (nix/demo.nix) so that both demos behave alike.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::config::{Configs, HOST, Ports};
use super::layout::DataDir;
use crate::lab::procs;

/// How to install Prometheus, for the message shown when it is missing.
pub const PROMETHEUS_INSTALL: &str = "Debian/Ubuntu: `sudo apt-get install -y \
--no-install-recommends prometheus` (then `sudo systemctl disable --now prometheus`: the \
package's own service takes port 9090, the bad worker's); macOS: `brew install prometheus`; \
others: https://prometheus.io/download/";

/// How to install Grafana (Debian has no package; Grafana Labs publishes one).
pub const GRAFANA_INSTALL: &str = "Debian/Ubuntu: add Grafana's APT repository \
(https://apt.grafana.com, see https://grafana.com/docs/grafana/latest/setup-grafana/installation/) \
and `sudo apt-get install grafana`; macOS: `brew install grafana`; others: \
https://grafana.com/grafana/download (a tarball works: pass --grafana-bin DIR/bin/grafana)";

/// The `prometheus` on PATH, unless one was named with `--prometheus-bin`.
pub fn find_prometheus(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| procs::find_on_path("prometheus"))
}

/// A Grafana installation: its server binary and its home (with `conf/defaults.ini` and
/// `public/`, which Grafana needs and cannot find by itself when started from elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrafanaInstall {
    pub binary: PathBuf,
    pub homepath: PathBuf,
}

/// Finds Grafana: `--grafana-bin`, else `grafana` (Grafana 10 and later) or `grafana-server`
/// (older, and the name Debian packages still ship) on PATH. `Ok(None)` when there is none.
/// An installation whose home cannot be found is an error: guessing would start a Grafana that
/// fails later with a less helpful message.
pub fn find_grafana(
    flag: Option<&Path>,
    homepath: Option<&Path>,
) -> Result<Option<GrafanaInstall>, String> {
    let Some(binary) = flag
        .map(Path::to_path_buf)
        .or_else(|| procs::find_on_path("grafana"))
        .or_else(|| procs::find_on_path("grafana-server"))
    else {
        return Ok(None);
    };
    let homepath = match homepath {
        Some(dir) => dir.to_path_buf(),
        None => grafana_homepath(&binary).ok_or_else(|| {
            format!(
                "found Grafana at {}, but not its home directory (the one with conf/defaults.ini \
                 and public/): pass it with --grafana-homepath, or skip Grafana with --no-grafana",
                binary.display()
            )
        })?,
    };
    Ok(Some(GrafanaInstall { binary, homepath }))
}

/// Whether `dir` is a Grafana home.
pub fn is_grafana_home(dir: &Path) -> bool {
    dir.join("conf").join("defaults.ini").is_file()
}

/// Where Grafana's home is for a binary: beside its `bin/` (the tarball), in `share/grafana`
/// of its prefix (Debian and RPM packages, Homebrew, Nix), or in the usual system places.
pub fn grafana_homepath(binary: &Path) -> Option<PathBuf> {
    // Follow symlinks: Homebrew's /opt/homebrew/bin/grafana points into its Cellar.
    let real = std::fs::canonicalize(binary).unwrap_or_else(|_| binary.to_path_buf());
    let prefix = real.parent().and_then(Path::parent);
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(prefix) = prefix {
        candidates.push(prefix.to_path_buf());
        candidates.push(prefix.join("share").join("grafana"));
    }
    for dir in [
        "/usr/share/grafana",
        "/usr/local/share/grafana",
        "/opt/homebrew/share/grafana",
    ] {
        candidates.push(PathBuf::from(dir));
    }
    candidates.into_iter().find(|dir| is_grafana_home(dir))
}

/// Prometheus with the rendered config, its samples in the data dir, on loopback, with the
/// retention asked for and the lifecycle API on (`curl -X POST .../-/reload` after editing the
/// rules, as in the guide).
pub fn prometheus_command(
    binary: &Path,
    configs: &Configs,
    data: &DataDir,
    ports: &Ports,
    retention: &str,
) -> Command {
    let mut command = Command::new(binary);
    command
        .arg(format!(
            "--config.file={}",
            configs.prometheus_config.display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            data.prometheus_data().display()
        ))
        .arg(format!("--storage.tsdb.retention.time={retention}"))
        .arg(format!("--web.listen-address={HOST}:{}", ports.prometheus))
        .arg("--web.enable-lifecycle");
    command
}

/// Grafana with the rendered ini (port, admin/admin, provisioning and data paths) and the
/// environment its provisioning files expand.
pub fn grafana_command(install: &GrafanaInstall, configs: &Configs) -> Command {
    let mut command = Command::new(&install.binary);
    // `grafana-server` is the old entry point; newer Grafana has one binary with subcommands.
    if install
        .binary
        .file_name()
        .is_none_or(|n| n != "grafana-server")
    {
        command.arg("server");
    }
    command
        .arg("--homepath")
        .arg(&install.homepath)
        .arg("--config")
        .arg(&configs.grafana_ini)
        .envs(configs.grafana_env.iter().map(|(k, v)| (k, v)));
    command
}

/// Checks a Prometheus duration (`--storage.tsdb.retention.time`): units y, w, d, h, m, s, ms,
/// each at most once, largest first, e.g. `30d`, `12h`, `1w2d`. Used as a clap value parser.
pub fn parse_retention(value: &str) -> Result<String, String> {
    const UNITS: [&str; 7] = ["y", "w", "d", "h", "m", "s", "ms"];
    let wrong = || {
        format!(
            "{value:?} is not a Prometheus duration; expected a number and a unit such as \
             15d, 12h or 1w2d (units y, w, d, h, m, s, ms)"
        )
    };
    let mut rest = value;
    let mut next_unit = 0;
    let mut total_nonzero = false;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(wrong());
        }
        let (number, tail) = rest.split_at(digits);
        total_nonzero |= !number.trim_start_matches('0').is_empty();
        // "ms" before "m", which is its prefix.
        let unit = UNITS[next_unit..]
            .iter()
            .enumerate()
            .filter(|(_, u)| tail.starts_with(**u))
            .max_by_key(|(_, u)| u.len())
            .ok_or_else(wrong)?;
        next_unit += unit.0 + 1;
        rest = &tail[unit.1.len()..];
    }
    if value.is_empty() {
        return Err(wrong());
    }
    if !total_nonzero {
        return Err(format!("{value:?} keeps nothing; use at least 1m"));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_accepts_prometheus_durations_only() {
        for ok in ["30d", "15d", "1w2d", "12h", "1y", "90m", "500ms", "1h30m"] {
            assert_eq!(parse_retention(ok).unwrap(), ok);
        }
        for bad in [
            "", "30", "d", "forever", "1d1w", "1.5d", "-1d", "30 d", "0d", "1dd",
        ] {
            assert!(parse_retention(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn grafana_home_is_found_beside_or_under_the_prefix() {
        let root = std::env::temp_dir().join(format!("lab-grafana-home-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let binary = root.join("bin").join("grafana");
        std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
        std::fs::write(&binary, "").unwrap();
        let shared = root.join("share").join("grafana");
        std::fs::create_dir_all(shared.join("conf")).unwrap();
        std::fs::write(shared.join("conf").join("defaults.ini"), "").unwrap();
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap();
        assert_eq!(
            grafana_homepath(&binary).map(|p| canonical(&p)),
            Some(canonical(&shared))
        );
        // The tarball layout wins: bin/ beside conf/.
        std::fs::create_dir_all(root.join("conf")).unwrap();
        std::fs::write(root.join("conf").join("defaults.ini"), "").unwrap();
        assert_eq!(
            grafana_homepath(&binary).map(|p| canonical(&p)),
            Some(canonical(&root))
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
