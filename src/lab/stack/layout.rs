//! What `lab demo` leaves in its data dir, and how `lab stop`, `logs`, `grafana` and `clean`
//! find a running demo from another terminal.
//!
//! ```text
//! DATA/.lab-data-dir          marker: this directory is the lab's (`lab clean` deletes only such)
//! DATA/lab-demo.json          state of the running demo: its pid, ports, services (gone at exit)
//! DATA/lab-demo.lock          locked (fcntl) by the running demo for its whole life: the kernel
//!                             releases it when the demo ends, however it ends, and tells any
//!                             other process the holder's pid, with or without lab-demo.json
//! DATA/config/prometheus/     prometheus.yml for the ports in use, rules/
//! DATA/config/grafana/        grafana.ini, grafana.env, provisioning/, dashboards/
//! DATA/logs/SERVICE.log       each service's output; worker-*.summary.txt at exit
//! DATA/prometheus/            Prometheus' samples (kept between runs)
//! DATA/grafana/               Grafana's database (kept between runs)
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::Ports;
use crate::kind::WorkerKind;
use crate::lab::procs;

/// The services of the stack, by the names the logs and messages use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    WorkerBad,
    WorkerOptimized,
    Prometheus,
    Grafana,
    /// The learner's worker (`lab exercise`); not in [`Service::ALL`]: the demo runs it only
    /// when asked to.
    WorkerExercise,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::WorkerBad,
        Service::WorkerOptimized,
        Service::Prometheus,
        Service::Grafana,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::WorkerBad => "worker-bad",
            Service::WorkerOptimized => "worker-optimized",
            Service::Prometheus => "prometheus",
            Service::Grafana => "grafana",
            Service::WorkerExercise => "worker-exercise",
        }
    }

    pub fn worker(kind: WorkerKind) -> Service {
        match kind {
            WorkerKind::Bad => Service::WorkerBad,
            WorkerKind::Optimized => Service::WorkerOptimized,
            WorkerKind::Exercise => Service::WorkerExercise,
        }
    }

    /// The `lab demo` flag that sets this service's port.
    pub fn port_flag(self) -> &'static str {
        match self {
            Service::WorkerBad => "--bad-port",
            Service::WorkerOptimized => "--optimized-port",
            Service::Prometheus => "--prometheus-port",
            Service::Grafana => "--grafana-port",
            Service::WorkerExercise => "--exercise-port",
        }
    }

    pub fn port(self, ports: &Ports) -> u16 {
        match self {
            Service::WorkerBad => ports.bad,
            Service::WorkerOptimized => ports.optimized,
            Service::Prometheus => ports.prometheus,
            Service::Grafana => ports.grafana,
            Service::WorkerExercise => ports.exercise,
        }
    }
}

/// A service the demo started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    pub service: Service,
    pub pid: u32,
    pub url: String,
}

/// `lab-demo.json`: written when the demo starts, updated as services come up, removed when it
/// has stopped everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoState {
    /// The `lab demo` process: `lab stop` sends it SIGTERM.
    pub pid: u32,
    pub data_dir: PathBuf,
    pub ports: Ports,
    pub services: Vec<ServiceState>,
    /// Every service healthy and, with Prometheus, every target UP.
    pub ready: bool,
}

impl DemoState {
    pub fn has(&self, service: Service) -> bool {
        self.services.iter().any(|s| s.service == service)
    }
}

const MARKER: &str = ".lab-data-dir";
const MARKER_TEXT: &str = "This directory holds what `lab demo` stores: configs, logs, Prometheus' \
samples and Grafana's database.\n`lab clean` deletes it (and only directories with this file).\n";

/// The data dir of a demo, as an absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// `path` made absolute against the current directory (the services run elsewhere, and the
    /// messages should name a path that works from any terminal).
    pub fn resolve(path: &Path) -> Result<DataDir, String> {
        let root = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| format!("cannot read the current directory: {e}"))?
                .join(path)
        };
        // Drop `.` components so the paths shown are tidy; `..` is kept (symlinks).
        let root = root
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        Ok(DataDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// ` --data-dir DIR` for the commands the lab suggests (`lab stop`, `lab logs`, ...), or
    /// nothing when this is the default `./data` of the current directory.
    pub fn flag(&self) -> String {
        if DataDir::resolve(Path::new("data")).is_ok_and(|default| default == *self) {
            return String::new();
        }
        let path = self.root.display().to_string();
        let plain = path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c));
        if plain {
            format!(" --data-dir {path}")
        } else {
            format!(" --data-dir '{}'", path.replace('\'', r"'\''"))
        }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.root.join("config")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn log_file(&self, service: Service) -> PathBuf {
        self.logs_dir().join(format!("{}.log", service.name()))
    }

    pub fn summary_file(&self, kind: WorkerKind) -> PathBuf {
        self.logs_dir()
            .join(format!("{}.summary.txt", kind.binary()))
    }

    pub fn prometheus_data(&self) -> PathBuf {
        self.root.join("prometheus")
    }

    pub fn grafana_data(&self) -> PathBuf {
        self.root.join("grafana")
    }

    pub fn state_file(&self) -> PathBuf {
        self.root.join("lab-demo.json")
    }

    /// Whether `lab demo` made this directory.
    pub fn is_labs(&self) -> bool {
        self.root.join(MARKER).is_file()
    }

    /// Creates the directory, or checks that an existing one is the lab's or empty: `lab demo
    /// --data-dir ~` must not scatter files into a home directory that `lab clean` would then
    /// delete.
    pub fn prepare(&self) -> Result<(), String> {
        let shown = self.root.display();
        match std::fs::read_dir(&self.root) {
            Ok(mut entries) => {
                if !self.is_labs() && entries.next().is_some() {
                    return Err(format!(
                        "{shown} exists and was not made by `lab demo` (it has no {MARKER} file); \
                         choose another directory with --data-dir, or empty it yourself \
                         (the Nix demo also keeps its state in ./data)"
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(format!(
                    "{shown} is a file, not a directory: choose another --data-dir"
                ));
            }
            Err(e) => return Err(format!("cannot read {shown}: {e}")),
        }
        for dir in [self.root.clone(), self.logs_dir(), self.config_dir()] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(self.root.join(MARKER), MARKER_TEXT)
            .map_err(|e| format!("cannot write in {shown}: {e}"))
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lab-demo.lock")
    }

    /// Takes the demo's lock for as long as the returned file is open (the demo's whole life);
    /// fails, naming the holder, when another demo has it.
    pub fn lock(&self) -> Result<std::fs::File, String> {
        let path = self.lock_file();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        if !procs::try_lock(&file) {
            let holder =
                procs::lock_holder(&file).map_or_else(String::new, |pid| format!(" (pid {pid})"));
            return Err(format!(
                "a `lab demo`{holder} is already running with {}: stop it with `lab stop{}`, or \
                 use another --data-dir",
                self.root.display(),
                self.flag()
            ));
        }
        Ok(file)
    }

    /// The pid of the demo holding this data dir's lock, if one does.
    pub fn lock_holder(&self) -> Option<u32> {
        let file = std::fs::File::open(self.lock_file()).ok()?;
        procs::lock_holder(&file)
    }

    /// The state file's contents, if there is one.
    pub fn read_state(&self) -> Result<Option<DemoState>, String> {
        let path = self.state_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                format!(
                    "{} is damaged ({e}); a running `lab demo` is found by its lock instead",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// The demo running with this data dir, if any. A state file whose process is gone (the
    /// demo was killed with SIGKILL, or the machine restarted) is stale and ignored, as is one
    /// whose pid now belongs to another program. A demo whose state file is missing or
    /// damaged still holds its lock: that is an error naming its pid (its ports are unknown),
    /// never "no demo".
    pub fn running_demo(&self) -> Result<Option<DemoState>, String> {
        let state = self.read_state();
        if let Ok(Some(state)) = &state {
            let ours = procs::command_line(state.pid)
                .is_none_or(|args| args.iter().any(|arg| arg == "demo"));
            if procs::process_alive(state.pid) && ours {
                return Ok(Some(state.clone()));
            }
        }
        if let Some(pid) = self.lock_holder() {
            let why = match state {
                Err(e) => e,
                Ok(_) => format!("{} is missing", self.state_file().display()),
            };
            return Err(format!(
                "a `lab demo` (pid {pid}) holds {} but {why}: its ports and services are unknown; \
                 `lab stop{}` stops it",
                self.lock_file().display(),
                self.flag()
            ));
        }
        // No demo holds the lock: a damaged or stale state file belongs to no running demo.
        Ok(None)
    }

    /// Writes the state file atomically (readers never see half a file).
    pub fn write_state(&self, state: &DemoState) -> Result<(), String> {
        let path = self.state_file();
        let partial = path.with_extension("json.partial");
        let text = serde_json::to_string_pretty(state).map_err(|e| e.to_string())?;
        std::fs::write(&partial, text + "\n")
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    pub fn remove_state(&self) {
        let _ = std::fs::remove_file(self.state_file());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> DataDir {
        let dir = std::env::temp_dir().join(format!("lab-layout-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        DataDir::resolve(&dir).unwrap()
    }

    #[test]
    fn refuses_a_foreign_directory_but_reuses_its_own() {
        let data = scratch("foreign");
        std::fs::create_dir_all(data.root()).unwrap();
        std::fs::write(data.root().join("notes.txt"), "mine").unwrap();
        let err = data.prepare().unwrap_err();
        assert!(
            err.contains("not made by `lab demo`") && err.contains("--data-dir"),
            "{err}"
        );
        std::fs::remove_file(data.root().join("notes.txt")).unwrap();
        data.prepare().unwrap();
        assert!(data.is_labs());
        data.prepare().unwrap();
        std::fs::remove_dir_all(data.root()).unwrap();
    }

    #[test]
    fn a_stale_state_file_is_not_a_running_demo() {
        let data = scratch("stale");
        data.prepare().unwrap();
        let mut state = DemoState {
            pid: std::process::id(),
            data_dir: data.root().to_path_buf(),
            ports: Ports::default(),
            services: vec![],
            ready: false,
        };
        data.write_state(&state).unwrap();
        assert_eq!(data.read_state().unwrap(), Some(state.clone()));
        // This test process is alive but is not a `lab demo`.
        assert_eq!(data.running_demo().unwrap(), None);
        state.pid = u32::MAX - 1;
        data.write_state(&state).unwrap();
        assert_eq!(data.running_demo().unwrap(), None);
        std::fs::remove_dir_all(data.root()).unwrap();
    }

    #[test]
    fn resolves_relative_paths_against_the_current_directory() {
        let data = DataDir::resolve(Path::new("./data")).unwrap();
        assert!(data.root().is_absolute());
        assert!(data.root().ends_with("data"));
        assert!(!data.root().to_string_lossy().contains("/./"));
    }
}
