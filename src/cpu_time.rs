//! CPU clocks: the CPU time a thread or the whole process has used, as the kernel counts it.
//!
//! Lessons and benchmarks time CPU, not wall time, where a loaded machine's preemptions must not
//! count: the seal's cost on a runtime thread (lesson 4), what each worker uses flat out
//! (`lab bench`). A read is a system call on Linux (the vDSO serves only the wall clocks).

use std::time::Duration;

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`); zero if unreadable.
pub fn thread() -> Duration {
    read(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time the whole process has used, every thread (`CLOCK_PROCESS_CPUTIME_ID`); zero if
/// unreadable.
pub fn process() -> Duration {
    read(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn read(clock: libc::clockid_t) -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; both clock ids are constants Linux knows.
    let read = unsafe { libc::clock_gettime(clock, &mut now) };
    if read != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        now.tv_sec.max(0) as u64,
        now.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}
