//! `lab demo`: the whole lab with one command, for people without Nix.
//!
//! In order: check the flags, find the binaries, refuse a data dir or a port that is taken
//! (saying by what, when that can be told), write the configs, start Grafana (the slowest),
//! the two workers and Prometheus, wait until each is healthy and Prometheus has scraped every
//! target, print the URLs, then keep watching: the time until every dashboard panel has data is
//! printed when it is reached, a service that dies stops the demo, and Ctrl-C, SIGTERM or
//! `lab stop` stop everything (SIGTERM to each, a deadline, then SIGKILL) and print the
//! workers' summaries.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::config::{self, Configs, HOST, PanelQuery, Ports};
use super::control::last_lines;
use super::layout::{DataDir, DemoState, Service, ServiceState};
use super::services::{self, GrafanaInstall};
use super::{DemoArgs, prometheus_api};
use crate::client;
use crate::kind::WorkerKind;
use crate::lab::procs::{self, WorkerProcess};
use crate::problems::{Problem, Problems};

/// How long a service may take to stop after SIGTERM before it is killed. The workers need up
/// to 5 s to finish open requests (a CPU profile, say).
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Prometheus replays its write-ahead log at start, which takes a while after a long run.
const PROMETHEUS_START: Duration = Duration::from_secs(120);
/// Grafana's first start migrates its database: the Nix demo allows about two minutes.
const GRAFANA_START: Duration = Duration::from_secs(180);
/// Prometheus scrapes every 2 s: a target not UP after this has a problem worth reporting.
const TARGETS_UP: Duration = Duration::from_secs(30);
/// How long to keep checking that every dashboard panel has data.
const PANELS_DATA: Duration = Duration::from_secs(120);
/// How often to check: each round is about 30 cheap queries.
const PANELS_POLL: Duration = Duration::from_millis(500);

/// Why the demo stopped before it was done.
enum Halt {
    Signal(&'static str),
    Failed(String),
}

impl From<String> for Halt {
    fn from(message: String) -> Halt {
        Halt::Failed(message)
    }
}

pub fn run(args: DemoArgs) -> Result<ExitCode, String> {
    let started = Instant::now();
    let ports = Ports {
        bad: args.bad_port,
        optimized: args.optimized_port,
        prometheus: args.prometheus_port,
        grafana: args.grafana_port,
        exercise: args.exercise_port,
    };
    if let Err(message) = distinct(&ports, args.exercise) {
        // A usage error, reported like clap's own: exit status 2.
        let _ = clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, message + "\n").print();
        return Ok(ExitCode::from(2));
    }
    let data = DataDir::resolve(&args.data.data_dir)?;
    let again = data.flag();
    let plan = Plan::make(&args, &data, &again)?;

    if let Some(state) = data.running_demo()? {
        return Err(format!(
            "a `lab demo` (pid {}) is already running with {}: stop it with `lab stop{again}`, \
             or use another --data-dir",
            state.pid,
            data.root().display()
        ));
    }
    for service in plan.services() {
        check_port(service, &ports, &again)?;
    }
    data.prepare()?;
    // Held until this function returns, after every service has stopped: `lab stop` finds
    // this demo by it even if the state file is deleted or damaged.
    let _lock = data.lock()?;
    let configs = config::write_configs(&data.config_dir(), &data.grafana_data(), &ports)?;
    if plan.services().contains(&Service::WorkerExercise) {
        config::add_exercise_job(&configs, ports.exercise)?;
    }

    say(&format!(
        "data in {} (logs in {})",
        data.root().display(),
        data.logs_dir().display()
    ));
    for note in &plan.notes {
        say(note);
    }

    // From here on, Ctrl-C and SIGTERM arrive on this channel instead of ending the process.
    let signals = procs::termination_signals()?;
    let mut stack = Stack::new(data.clone(), ports, signals);
    stack.save()?;
    let outcome = start(&mut stack, &plan, &configs, started)
        .and_then(|()| watch(&mut stack, &plan, started));
    let reason = match outcome {
        Ok(reason) => reason,
        Err(Halt::Signal(name)) => format!("{name} before the demo was ready"),
        Err(Halt::Failed(message)) => {
            say("stopping everything");
            stack.shutdown();
            return Err(message);
        }
    };
    say(&format!("{reason}: stopping everything"));
    let clean = stack.shutdown();
    say(&format!(
        "stopped after {}",
        humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()))
    ));
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Every service needs its own port, started or not: they all appear in configs and URLs.
fn distinct(ports: &Ports, exercise: bool) -> Result<(), String> {
    let services: Vec<Service> = Service::ALL
        .into_iter()
        .chain(exercise.then_some(Service::WorkerExercise))
        .collect();
    for (i, a) in services.iter().enumerate() {
        for b in &services[i + 1..] {
            if a.port(ports) == b.port(ports) {
                return Err(format!(
                    "{} and {} are both {}: each service needs a port of its own",
                    a.port_flag(),
                    b.port_flag(),
                    a.port(ports)
                ));
            }
        }
    }
    Ok(())
}

/// What will run, decided before anything starts.
struct Plan {
    workers: Vec<(WorkerKind, PathBuf)>,
    worker_args: Vec<String>,
    prometheus: Option<PathBuf>,
    grafana: Option<GrafanaInstall>,
    retention: String,
    /// What is missing and what that means, shown before starting.
    notes: Vec<String>,
    /// The commands to suggest, with `--data-dir` when it is not the default.
    again: String,
    data: DataDir,
}

impl Plan {
    fn make(args: &DemoArgs, data: &DataDir, again: &str) -> Result<Plan, String> {
        let exercise = args.exercise.then_some(WorkerKind::Exercise);
        let workers = WorkerKind::ALL
            .iter()
            .copied()
            .chain(exercise)
            .map(|kind| Ok((kind, procs::sibling_binary(kind.binary())?)))
            .collect::<Result<Vec<_>, String>>()?;
        let mut worker_args = vec![
            "--tasks".to_owned(),
            args.tasks.to_string(),
            "--workers".to_owned(),
            args.workers.to_string(),
            "--duration".to_owned(),
            crate::cli::format_duration(args.duration),
            "--problems".to_owned(),
            args.problems.to_string(),
        ];
        if let Some(burst) = &args.burst {
            worker_args.extend(["--burst".to_owned(), burst.to_string()]);
        }
        if let Some(size) = args.data_size {
            worker_args.extend(["--data-size".to_owned(), size.to_string()]);
        }
        if let Some(rate) = args.rate {
            worker_args.extend(["--rate".to_owned(), rate.to_string()]);
        }

        let mut notes = Vec::new();
        if let Some(note) = load_note(args.problems, args.burst.is_some()) {
            notes.push(note);
        }
        let prometheus_url = format!("http://{HOST}:{}", args.prometheus_port);
        let prometheus = if args.no_prometheus {
            notes.push(format!(
                "Prometheus: not started (--no-prometheus); Grafana's datasource points at \
                 {prometheus_url}, so run your own there to fill the dashboard"
            ));
            None
        } else {
            let found = services::find_prometheus(args.prometheus_bin.as_deref());
            if found.is_none() {
                notes.push(format!(
                    "Prometheus not found (looked for `prometheus` on PATH; or pass \
                     --prometheus-bin). Install it: {}.\n  Without it the workers still run: \
                     their /metrics, /debug/pprof/ and `go tool pprof` work; there are no \
                     stored metrics, alerts or dashboard data.",
                    services::PROMETHEUS_INSTALL
                ));
            }
            found
        };
        let grafana = if args.no_grafana {
            notes.push("Grafana: not started (--no-grafana)".to_owned());
            None
        } else {
            let found = services::find_grafana(
                args.grafana_bin.as_deref(),
                args.grafana_homepath.as_deref(),
            )?;
            if found.is_none() {
                let config = data.config_dir().join("grafana");
                notes.push(format!(
                    "Grafana not found (looked for `grafana` and `grafana-server` on PATH; or \
                     pass --grafana-bin). Install it: {}.\n  Without it everything else works: \
                     Prometheus' graph, targets and alerts pages (their addresses follow once \
                     it runs), the workers' /metrics and /debug/pprof/; only \
                     the dashboard is missing. Its provisioning is ready in {} \
                     (grafana.ini, grafana.env): install Grafana and run `lab demo{again}` again.",
                    services::GRAFANA_INSTALL,
                    config.display()
                ));
            }
            found
        };
        Ok(Plan {
            workers,
            worker_args,
            prometheus,
            grafana,
            retention: args.retention.clone(),
            notes,
            again: again.to_owned(),
            data: data.clone(),
        })
    }

    fn services(&self) -> Vec<Service> {
        let mut services = vec![Service::WorkerBad, Service::WorkerOptimized];
        if self
            .workers
            .iter()
            .any(|(kind, _)| *kind == WorkerKind::Exercise)
        {
            services.push(Service::WorkerExercise);
        }
        if self.prometheus.is_some() {
            services.push(Service::Prometheus);
        }
        if self.grafana.is_some() {
            services.push(Service::Grafana);
        }
        services
    }
}

/// What to add when the problems shown need load the demo's rate does not give: lessons 5 and
/// 6 are problems of a busy worker. At `--rate 200` a task arrives every 5 ms and takes a
/// fraction of one, so two worker tasks rarely want the lock at once and no queue builds up.
fn load_note(problems: Problems, burst: bool) -> Option<String> {
    if burst || !(problems.has(Problem::Contention) || problems.has(Problem::Backlog)) {
        return None;
    }
    Some(format!(
        "lessons 5 (contention) and 6 (backlog) show under load: at this rate the workers are \
         mostly idle, so the lock is contended only now and then (around seals) and no queue \
         builds up. Add bursts, e.g. \
         `--burst {BURST_HINT}` ({BURST_HINT_SAYS}); for lesson 6 the burst must exceed what a \
         worker handles (`lab bench` prints it)"
    ))
}

/// The burst [`load_note`] suggests, and what it means.
const BURST_HINT: &str = "20x:10s/30s";
const BURST_HINT_SAYS: &str = "20 times --rate for 10 s of every 30 s";

/// Refuses a port something already listens on, saying what answers there when it can tell.
fn check_port(service: Service, ports: &Ports, again: &str) -> Result<(), String> {
    let port = service.port(ports);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let error = match TcpListener::bind(addr) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let flag = service.port_flag();
    if error.kind() != std::io::ErrorKind::AddrInUse {
        return Err(format!(
            "cannot use port {port} for {} ({error}); choose another with {flag} PORT",
            service.name()
        ));
    }
    let occupant = match who_answers(port) {
        Some(Occupant::Worker) => format!(
            "a lab worker answers there, so a previous `lab demo` may still be running (stop it \
             with `lab stop{again}`, or `lab stop --data-dir DIR` if it used another data dir)"
        ),
        Some(Occupant::Prometheus) => "a Prometheus answers there (a previous `lab demo`? \
             Debian's prometheus package also starts one on 9090: \
             `sudo systemctl disable --now prometheus`)"
            .to_owned(),
        Some(Occupant::Grafana) => {
            "a Grafana answers there (a previous `lab demo`, or a system service)".to_owned()
        }
        None => "find what holds it with `ss -ltnp` or `lsof -i :PORT`"
            .replace("PORT", &port.to_string()),
    };
    Err(format!(
        "port {port} ({}) is already in use on {HOST}: {occupant}; or choose another port with \
         {flag} PORT",
        service.name()
    ))
}

enum Occupant {
    Worker,
    Prometheus,
    Grafana,
}

/// Asks what listens on `port`, by the health endpoints the lab's services have. Something
/// that does not answer HTTP at all is left unnamed after one try.
fn who_answers(port: u16) -> Option<Occupant> {
    let get = |path: &str| {
        client::get(
            &format!("http://{HOST}:{port}{path}"),
            // Only asked when the port is taken; a busy machine must not hide who holds it
            // (5 s was not enough on a loaded 2-core machine). A program that never answers
            // delays the error by this much, once: /healthz failing ends the probing.
            Duration::from_secs(15),
        )
    };
    let healthz = get("/healthz").ok()?;
    if healthz.status == 200 && healthz.text().trim() == "ok" {
        return Some(Occupant::Worker);
    }
    if get("/-/ready").is_ok_and(|r| r.status == 200) {
        return Some(Occupant::Prometheus);
    }
    if get("/api/health").is_ok_and(|r| r.status == 200 && r.text().contains("database")) {
        return Some(Occupant::Grafana);
    }
    None
}

/// Starts everything in `plan` and waits until it is ready.
fn start(stack: &mut Stack, plan: &Plan, configs: &Configs, started: Instant) -> Result<(), Halt> {
    let data = &plan.data;
    let ports = stack.state.ports;
    // Grafana first: it takes longest, and needs nothing else to start.
    if let Some(install) = &plan.grafana {
        let mut command = services::grafana_command(install, configs);
        procs::isolate(&mut command);
        let child = procs::spawn_logged(&mut command, &data.log_file(Service::Grafana))?;
        say(&format!(
            "grafana starting ({} --homepath {})",
            install.binary.display(),
            install.homepath.display()
        ));
        stack.add_service(Service::Grafana, child, ports.grafana_url())?;
    }
    for (kind, binary) in &plan.workers {
        let service = Service::worker(*kind);
        let mut command = Command::new(binary);
        command
            .arg("--listen")
            .arg(format!("{HOST}:{}", service.port(&ports)))
            .args(&plan.worker_args);
        procs::isolate(&mut command);
        let worker = WorkerProcess::spawn_command(command, *kind, Some(&data.log_file(service)))?;
        say(&format!(
            "{} healthy at {} ({:.1} s)",
            service.name(),
            worker.url(""),
            started.elapsed().as_secs_f64()
        ));
        stack.add_worker(worker)?;
    }
    // Prometheus after the workers, so that its first scrapes find them up.
    if let Some(binary) = &plan.prometheus {
        let mut command =
            services::prometheus_command(binary, configs, data, &ports, &plan.retention);
        procs::isolate(&mut command);
        let child = procs::spawn_logged(&mut command, &data.log_file(Service::Prometheus))?;
        stack.add_service(Service::Prometheus, child, ports.prometheus_url())?;
        stack.wait_service(Service::Prometheus, "/-/ready", PROMETHEUS_START)?;
        say(&format!(
            "prometheus ready at {} ({:.1} s)",
            ports.prometheus_url(),
            started.elapsed().as_secs_f64()
        ));
        wait_targets_up(stack, started)?;
    }
    if plan.grafana.is_some() {
        stack.wait_service(Service::Grafana, "/api/health", GRAFANA_START)?;
        say(&format!(
            "grafana healthy at {} ({:.1} s)",
            ports.grafana_url(),
            started.elapsed().as_secs_f64()
        ));
    }
    stack.state.ready = true;
    stack.save()?;
    let running: Vec<&str> = stack
        .state
        .services
        .iter()
        .map(|s| s.service.name())
        .collect();
    let targets = if plan.prometheus.is_some() {
        ", all Prometheus targets UP"
    } else {
        ""
    };
    // Composed first (it asks Prometheus which pages it serves), printed with the ready line,
    // so whoever waits for "ready" has the addresses too.
    let access = access(&stack.state, plan);
    say(&format!(
        "ready in {:.1} s: {}{targets}",
        started.elapsed().as_secs_f64(),
        running.join(", ")
    ));
    print(&access);
    Ok(())
}

/// Waits until Prometheus reports every target UP, printing each as it comes up.
fn wait_targets_up(stack: &mut Stack, started: Instant) -> Result<(), Halt> {
    let base = stack.state.ports.prometheus_url();
    say("waiting for Prometheus to scrape its targets (every 2 s)");
    let deadline = Instant::now() + TARGETS_UP;
    let mut reported: Vec<String> = Vec::new();
    loop {
        stack.check_signals()?;
        let targets = prometheus_api::targets(&base).unwrap_or_default();
        for target in targets.iter().filter(|t| t.is_up()) {
            if !reported.contains(&target.job) {
                say(&format!(
                    "  target {} UP ({:.1} s)",
                    target.job,
                    started.elapsed().as_secs_f64()
                ));
                reported.push(target.job.clone());
            }
        }
        if !targets.is_empty() && targets.iter().all(|t| t.is_up()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let down: Vec<String> = targets
                .iter()
                .filter(|t| !t.is_up())
                .map(|t| format!("{} {} ({} {})", t.job, t.scrape_url, t.health, t.last_error))
                .collect();
            return Err(Halt::Failed(format!(
                "Prometheus did not scrape every target within {}s: {}; see {base}/targets",
                TARGETS_UP.as_secs(),
                if down.is_empty() {
                    "it lists none".to_owned()
                } else {
                    down.join("; ")
                }
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Prometheus' graph, targets and alerts pages, at the paths the running Prometheus serves:
/// Debian's 2.42 keeps its UI under `/classic/` (`/targets` is 404 there), upstream builds at
/// the root. Each is probed; a page that answers on neither path is named as not answering.
pub fn prometheus_pages(base: &str) -> String {
    let timeout = Duration::from_secs(2);
    let pages: Vec<String> = ["graph", "targets", "alerts"]
        .iter()
        .map(|page| {
            [format!("{base}/{page}"), format!("{base}/classic/{page}")]
                .into_iter()
                .find(|url| crate::client::get(url, timeout).is_ok_and(|r| r.status == 200))
                .map_or_else(
                    || format!("{page}: not answering at {base}/{page}"),
                    |url| format!("{page} {url}"),
                )
        })
        .collect();
    pages.join(", ")
}

/// The guide's "Access the services", with this demo's ports.
fn access(state: &DemoState, plan: &Plan) -> String {
    let ports = state.ports;
    let worker = |port: u16| format!("http://{HOST}:{port}");
    let mut text = String::from("\nAccess the services:\n");
    if state.has(Service::Grafana) {
        text += &format!(
            "  Grafana           {}   (user {}, password {})\n",
            ports.dashboard_url(),
            config::GRAFANA_USER,
            config::GRAFANA_PASSWORD
        );
    } else {
        text += "  Grafana           not running (see above)\n";
    }
    if state.has(Service::Prometheus) {
        text += &format!(
            "  Prometheus        {}\n",
            prometheus_pages(&ports.prometheus_url())
        );
    } else {
        text += "  Prometheus        not running (see above)\n";
    }
    for (name, port) in [
        ("Bad worker", ports.bad),
        ("Optimized worker", ports.optimized),
    ] {
        let base = worker(port);
        text += &format!("  {name:<17} {base}/metrics   {base}/debug/pprof/\n");
    }
    let bad = worker(ports.bad);
    let optimized = worker(ports.optimized);
    text += &format!(
        "\nProfile the workers (go tool pprof, or Google's pprof, reads them directly):\n\
         \x20 go tool pprof '{bad}/debug/pprof/profile?seconds=30'   # CPU, bad worker\n\
         \x20 go tool pprof {bad}/debug/pprof/heap                   # memory in use\n\
         \x20 go tool pprof {bad}/debug/pprof/goroutine              # live tokio tasks: the leak\n\
         \x20 go tool pprof {bad}/debug/pprof/allocs\n\
         \x20 go tool pprof '{optimized}/debug/pprof/profile?seconds=30'   # the same on the optimized worker\n\
         \x20 go tool pprof {optimized}/debug/pprof/heap\n\
         \x20 go tool pprof {optimized}/debug/pprof/goroutine\n"
    );
    let again = &plan.again;
    let dashboard = if state.has(Service::Grafana) {
        format!("Open the dashboard: `lab grafana{again}`")
    } else {
        "No dashboard without Grafana (see above); the graphs: Prometheus' graph page".to_owned()
    };
    text += &format!(
        "\nLogs: `lab logs{again} [SERVICE] [--follow]` (files in {})\n\
         {dashboard}\n\
         Stop: Ctrl-C here, or `lab stop{again}` from another terminal\n",
        plan.data.logs_dir().display()
    );
    text + "\n"
}

/// After ready: waits for a signal, a service that exits, or the workers' --duration to end,
/// and meanwhile reports when every dashboard panel first has data. Returns why it stopped.
fn watch(stack: &mut Stack, plan: &Plan, started: Instant) -> Result<String, Halt> {
    let mut panels = if plan.prometheus.is_some() {
        Some(PanelWatch::new(stack.state.ports.prometheus_url())?)
    } else {
        None
    };
    loop {
        match stack.signals.recv_timeout(Duration::from_millis(250)) {
            Ok(name) => return Ok(name.to_owned()),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Halt::Failed("the signal listener stopped".into()));
            }
        }
        if let Some(ended) = stack.ended()? {
            return ended;
        }
        if let Some(watch) = &mut panels
            && watch.poll(started)
        {
            panels = None;
        }
    }
}

/// Checks, twice a second, which dashboard panels have data yet, and says when all have.
struct PanelWatch {
    base: String,
    pending: Vec<PanelQuery>,
    total: usize,
    last: Instant,
    deadline: Instant,
}

impl PanelWatch {
    fn new(base: String) -> Result<PanelWatch, String> {
        let pending: Vec<PanelQuery> =
            config::panel_queries(config::DASHBOARDS[0].1, config::GRAFANA_RATE_INTERVAL)?
                .into_iter()
                .filter(|q| !q.is_alerts())
                .collect();
        Ok(PanelWatch {
            base,
            total: pending.len(),
            pending,
            last: Instant::now() - PANELS_POLL,
            deadline: Instant::now() + PANELS_DATA,
        })
    }

    /// True when done (every panel has data, or time is up).
    fn poll(&mut self, started: Instant) -> bool {
        if self.last.elapsed() < PANELS_POLL {
            return false;
        }
        self.last = Instant::now();
        let base = &self.base;
        self.pending
            .retain(|query| !has_both_workers(&prometheus_api::query(base, &query.expr)));
        if self.pending.is_empty() {
            say(&format!(
                "every dashboard panel has data for both workers, {:.1} s after start \
                 ({} queries; the alerts panel fills when an alert fires)",
                started.elapsed().as_secs_f64(),
                self.total
            ));
            return true;
        }
        if Instant::now() >= self.deadline {
            let titles: Vec<&str> = self.pending.iter().map(|q| q.panel.as_str()).collect();
            say(&format!(
                "after {}s these dashboard panels still lack data for a worker: {}",
                PANELS_DATA.as_secs(),
                titles.join(", ")
            ));
            return true;
        }
        false
    }
}

/// Whether a query answered with series for both `worker_type` values.
pub(super) fn has_both_workers(result: &Result<Vec<prometheus_api::Sample>, String>) -> bool {
    let Ok(samples) = result else {
        return false;
    };
    WorkerKind::ALL.iter().all(|kind| {
        samples
            .iter()
            .any(|s| s.label("worker_type") == Some(kind.label()))
    })
}

/// Prometheus or Grafana, as started by the demo.
struct RunningService {
    service: Service,
    child: Child,
}

/// Everything the demo started, and its state file. Dropping it stops what is still running,
/// so an error on the way out never leaves a service behind.
struct Stack {
    data: DataDir,
    state: DemoState,
    workers: Vec<WorkerProcess>,
    services: Vec<RunningService>,
    signals: Receiver<&'static str>,
}

impl Stack {
    fn new(data: DataDir, ports: Ports, signals: Receiver<&'static str>) -> Stack {
        let state = DemoState {
            pid: std::process::id(),
            data_dir: data.root().to_path_buf(),
            ports,
            services: Vec::new(),
            ready: false,
        };
        Stack {
            data,
            state,
            workers: Vec::new(),
            services: Vec::new(),
            signals,
        }
    }

    fn save(&self) -> Result<(), String> {
        self.data.write_state(&self.state)
    }

    fn add_service(&mut self, service: Service, child: Child, url: String) -> Result<(), String> {
        self.state.services.push(ServiceState {
            service,
            pid: child.id(),
            url,
        });
        self.services.push(RunningService { service, child });
        self.save()
    }

    fn add_worker(&mut self, worker: WorkerProcess) -> Result<(), String> {
        self.state.services.push(ServiceState {
            service: Service::worker(worker.kind),
            pid: worker.id().unwrap_or_default(),
            url: worker.url(""),
        });
        self.workers.push(worker);
        self.save()
    }

    fn check_signals(&self) -> Result<(), Halt> {
        match self.signals.try_recv() {
            Ok(name) => Err(Halt::Signal(name)),
            Err(_) => Ok(()),
        }
    }

    /// Waits until `service` answers 200 on `path`, or fails with the end of its log.
    fn wait_service(
        &mut self,
        service: Service,
        path: &str,
        timeout: Duration,
    ) -> Result<(), Halt> {
        let url = format!("http://{HOST}:{}{path}", service.port(&self.state.ports));
        let signals = &self.signals;
        let mut signal = None;
        let running = self
            .services
            .iter_mut()
            .find(|s| s.service == service)
            .ok_or_else(|| format!("{} was not started", service.name()))?;
        let result = procs::wait_child_healthy(&url, &mut running.child, timeout, &mut || {
            signal = signals.try_recv().ok();
            signal.is_some()
        });
        if let Some(name) = signal {
            return Err(Halt::Signal(name));
        }
        result.map(|_| ()).map_err(|why| {
            Halt::Failed(format!(
                "{} did not start: {why}\n{}",
                service.name(),
                self.log_tail(service)
            ))
        })
    }

    /// The last lines of a service's log, to show why it failed.
    fn log_tail(&self, service: Service) -> String {
        let path = self.data.log_file(service);
        match last_lines(&path, 15) {
            Ok((lines, _)) if !lines.is_empty() => format!(
                "last lines of {}:\n  {}",
                path.display(),
                lines.join("\n  ")
            ),
            _ => format!("(nothing in {})", path.display()),
        }
    }

    /// A service that exited: a failure, unless both workers finished their --duration.
    fn ended(&mut self) -> Result<Option<Result<String, Halt>>, String> {
        for running in &mut self.services {
            if let Some(status) = running.child.try_wait().map_err(|e| e.to_string())? {
                let service = running.service;
                return Ok(Some(Err(Halt::Failed(format!(
                    "{} exited unexpectedly ({status})\n{}",
                    service.name(),
                    self.log_tail(service)
                )))));
            }
        }
        let mut finished = 0;
        for worker in &mut self.workers {
            if let Some(status) = worker.try_wait()? {
                if !status.success() {
                    let service = Service::worker(worker.kind);
                    return Ok(Some(Err(Halt::Failed(format!(
                        "{} exited unexpectedly ({status})\n{}",
                        service.name(),
                        self.log_tail(service)
                    )))));
                }
                finished += 1;
            }
        }
        // Both run for the same --duration; stop when the first is done, the other follows.
        Ok((finished > 0).then(|| Ok("the workers finished their --duration".to_owned())))
    }

    /// Stops everything: SIGTERM to all at once, then waits until a shared deadline and kills
    /// what is left. Prints how each stopped and the workers' summaries, saves the summaries,
    /// and removes the state file. True when everything stopped cleanly.
    fn shutdown(&mut self) -> bool {
        let workers = std::mem::take(&mut self.workers);
        let mut services = std::mem::take(&mut self.services);
        for running in &services {
            procs::signal_terminate(&running.child);
        }
        for worker in &workers {
            worker.begin_terminate();
        }
        let deadline = Instant::now() + STOP_GRACE;
        let left = || deadline.saturating_duration_since(Instant::now());
        let mut clean = true;
        for running in &mut services {
            let name = running.service.name();
            match procs::finish_within(&mut running.child, left()) {
                Ok((_, false)) => say(&format!("{name} stopped")),
                Ok((_, true)) => {
                    clean = false;
                    say(&format!(
                        "{name} did not stop within {STOP_GRACE:?}: killed"
                    ));
                }
                Err(e) => {
                    clean = false;
                    say(&format!("{name}: {e}"));
                }
            }
        }
        for worker in workers {
            let kind = worker.kind;
            let name = kind.binary();
            match worker.wait_within(left()) {
                Ok(stopped) => {
                    if stopped.killed {
                        clean = false;
                        say(&format!(
                            "{name} did not stop within {STOP_GRACE:?}: killed"
                        ));
                    } else if !stopped.status.success() {
                        clean = false;
                        say(&format!("{name} exited with {}", stopped.status));
                    }
                    if !stopped.output.trim().is_empty() {
                        let path = self.data.summary_file(kind);
                        let saved = match std::fs::write(&path, &stopped.output) {
                            Ok(()) => format!("(saved in {})", path.display()),
                            Err(e) => format!("(cannot save it in {}: {e})", path.display()),
                        };
                        print(&format!("\n{}{saved}\n\n", stopped.output));
                    }
                }
                Err(e) => {
                    clean = false;
                    say(&format!("{name}: {e}"));
                }
            }
        }
        self.data.remove_state();
        clean
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.workers.is_empty() || !self.services.is_empty() {
            self.shutdown();
        }
        self.data.remove_state();
    }
}

/// A progress line. Everything goes to stdout, in order, so a log of the demo reads well.
fn say(message: &str) {
    print(&format!("lab demo: {message}\n"));
}

/// Writes to stdout, ignoring errors: a closed terminal or `lab demo | head` must not stop the
/// demo halfway (`println!` would panic), least of all while it stops its services.
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_note_is_for_lessons_5_and_6_without_a_burst() {
        let only = |problem| Problems::NONE.with(problem);
        for problems in [
            Problems::ALL,
            only(Problem::Contention),
            only(Problem::Backlog),
        ] {
            let note = load_note(problems, false).expect("a note");
            assert!(note.contains("--burst 20x:10s/30s"), "{note}");
            assert_eq!(load_note(problems, true), None, "a burst is already set");
        }
        for problem in [
            Problem::Leak,
            Problem::Capacity,
            Problem::Churn,
            Problem::Blocking,
        ] {
            assert_eq!(load_note(only(problem), false), None, "{}", problem.name());
        }
        // The suggestion is a burst the flag accepts.
        assert!(crate::burst::Burst::parse(BURST_HINT).unwrap().is_some());
    }
}
