//! How a worker stops: gracefully first, at once when asked twice, as `docker compose up` does.
//!
//! | what happens | the worker |
//! |---|---|
//! | `--duration` elapses, or the first Ctrl-C / SIGTERM | stops the workload, lets it finish the tasks in hand, prints the summary, writes the profiles, then gives open HTTP requests up to 5 s; an HTTP CPU profile in progress ends early and sends the samples taken so far |
//! | a second Ctrl-C / SIGTERM | stops waiting: for the workload, for open HTTP requests, for profile work of clients that are gone. What is quick is still done: the summary, and the `--cpuprofile` / `--memprofile` files |
//! | a third | exits at once (status 130), writing nothing more; profile files are replaced whole or not at all, so none is left half-written |

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::summary::StopReason;

/// The worker's stop state, shared by the run loop, the HTTP handlers and the signal listener.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled when the worker starts to stop, for any reason.
    stopping: CancellationToken,
    /// Cancelled on the second signal: stop waiting for anything slow.
    forced: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Cancelled when the worker starts to stop; what takes long (a CPU profile over HTTP)
    /// watches it to finish early.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Cancelled when a second signal asks to stop at once.
    pub fn forced(&self) -> &CancellationToken {
        &self.forced
    }

    pub fn is_forced(&self) -> bool {
        self.forced.is_cancelled()
    }

    /// Starts counting SIGINT and SIGTERM (see the module docs) for as long as the runtime
    /// runs. Call it early, from inside the runtime: until then a signal ends the process.
    pub fn listen_for_signals(&self) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            // Registered here, not in the task, so that no signal slips through before it runs.
            match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(interrupt), Ok(terminate)) => {
                    // Detached: it keeps counting until the process exits.
                    drop(tokio::spawn(listen(self.clone(), interrupt, terminate)));
                }
                (Err(err), _) | (_, Err(err)) => tracing::warn!(
                    "cannot listen for Ctrl-C and SIGTERM ({err}); they end the worker without \
                     a summary"
                ),
            }
        }
        #[cfg(not(unix))]
        drop(tokio::spawn(listen(self.clone())));
    }

    /// Resolves when the run should stop and says why: `duration` has elapsed or a signal
    /// arrived.
    pub async fn wait(&self, duration: Duration) -> StopReason {
        tokio::select! {
            () = tokio::time::sleep(duration) => self.begin(StopReason::DurationElapsed),
            () = self.stopping.cancelled() => {}
        }
        self.reason().unwrap_or(StopReason::DurationElapsed)
    }

    fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts stopping for `reason`, unless already stopping.
    fn begin(&self, reason: StopReason) {
        {
            let mut current = self.reason.lock().unwrap_or_else(|e| e.into_inner());
            if current.is_some() {
                return;
            }
            *current = Some(reason);
        }
        self.stopping.cancel();
    }

    /// One more SIGINT or SIGTERM: the first stops gracefully, the second forces, the third
    /// exits.
    fn signal(&self, reason: StopReason) {
        let again = match reason {
            StopReason::Terminated => "SIGTERM",
            _ => "Ctrl-C",
        };
        if !self.stopping.is_cancelled() {
            self.begin(reason);
            tracing::info!(
                "stopping: {reason}; finishing the tasks in hand, then the summary and profiles \
                 (press Ctrl-C again to stop at once)"
            );
        } else if !self.forced.is_cancelled() {
            self.forced.cancel();
            tracing::warn!(
                "{again} again: stopping at once, without waiting for tasks in hand or open HTTP \
                 requests; still printing the summary and writing the profile files \
                 ({again} once more exits without them)"
            );
        } else {
            // Files are replaced whole or not at all, so exiting here leaves none half-written.
            eprintln!("{again} a third time: exiting now");
            std::process::exit(130);
        }
    }
}

/// Counts SIGINT (Ctrl-C) and SIGTERM for as long as the process runs.
#[cfg(unix)]
async fn listen(
    shutdown: Shutdown,
    mut interrupt: tokio::signal::unix::Signal,
    mut terminate: tokio::signal::unix::Signal,
) {
    loop {
        let reason = tokio::select! {
            Some(()) = interrupt.recv() => StopReason::Interrupted,
            Some(()) = terminate.recv() => StopReason::Terminated,
            else => return,
        };
        shutdown.signal(reason);
    }
}

/// Counts Ctrl-C for as long as the process runs.
#[cfg(not(unix))]
async fn listen(shutdown: Shutdown) {
    while tokio::signal::ctrl_c().await.is_ok() {
        shutdown.signal(StopReason::Interrupted);
    }
}
