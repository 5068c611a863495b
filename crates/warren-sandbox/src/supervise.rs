//! The parent's side of a run: one `ppoll` loop that moves output, feeds stdin, enforces the
//! time and output limits and samples statistics, woken only by the kernel (readable pipes,
//! the pidfd, the abort eventfd) or by the nearest deadline. Nothing sleeps or polls files on a
//! fixed tick.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use warren_core::limits::Limits;
use warren_core::result::KillCause;
use warren_core::stats::{decimate, StatSample};

use crate::api::{RunEvents, Stream};
use crate::cgroup::RunCgroups;
use crate::plan::Stage;
use crate::sys;

/// Inputs of one supervision.
pub struct Supervision<'a> {
    /// Readable once the run's init (and so its whole PID namespace) has exited.
    pub pidfd: BorrowedFd<'a>,
    /// Read ends of stdout and stderr.
    pub outputs: [OwnedFd; 2],
    /// Write end of stdin with the bytes still to write.
    pub stdin: Option<(OwnedFd, Vec<u8>)>,
    /// Readable when the caller aborts.
    pub abort: Option<BorrowedFd<'a>>,
    /// The run's cgroups, for CPU time and statistics.
    pub cgroups: &'a RunCgroups,
    /// The limits in force.
    pub limits: &'a Limits,
    /// How many CPUs the run can use at once (bounds how fast it can spend CPU time).
    pub parallelism: f64,
    /// Interval between statistics samples.
    pub stats_interval: Duration,
    /// Most points kept.
    pub max_stat_points: usize,
    /// When the launch message was sent.
    pub started: Instant,
    /// Read end of the child's report pipe: 8-byte records `(stage, value)`: a setup failure,
    /// `Executed`, or `ProgramExit` with the program's wait status; end of file once the run's
    /// init is gone.
    pub report: BorrowedFd<'a>,
}

/// What supervision saw.
#[derive(Debug, Default)]
pub struct Supervised {
    /// The first reason the tree was killed.
    pub first_kill: Option<KillCause>,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
    /// Bytes the program wrote that were read (kept or not).
    pub output_bytes: u64,
    /// Statistics, decimated.
    pub stats: Vec<StatSample>,
    /// Most processes seen in a sample.
    pub sampled_peak_pids: u64,
    /// When the tree was seen gone (the program's end reported, or the init's exit).
    pub ended: Option<Instant>,
    /// When the program was executed (time limits count from here).
    pub executed: Option<Instant>,
    /// The child's setup failure report, if it sent one.
    pub setup_failure: Option<(u32, i32)>,
    /// The program's raw wait status, reported by the run's init.
    pub program_status: Option<i32>,
}

/// How long a child may take between launch and exec before it is killed as stuck, beyond its
/// own wall-time limit. Setup normally takes about a millisecond; this only catches a setup that
/// hangs (a mount that blocks), with room for heavily loaded or emulated hosts.
const SETUP_GRACE: Duration = Duration::from_secs(60);

/// Shortest gap between two CPU-time checks.
const MIN_CPU_CHECK: Duration = Duration::from_millis(1);
/// Samples kept before decimating in place, to bound memory on long runs.
const SAMPLE_BUFFER: usize = 10_000;

/// Runs the loop until the tree is gone and every output pipe is drained. The run's init may
/// still be exiting when this returns after it reported the program's end: the caller waits for
/// it (or has it waited for) before removing the cgroups.
pub fn supervise(
    mut s: Supervision<'_>,
    events: &mut dyn RunEvents,
    abort_requested: &dyn Fn() -> bool,
) -> Supervised {
    let mut out = Supervised::default();
    let mut open = [true, true];
    for fd in &s.outputs {
        let _ = sys::set_nonblocking(fd.as_fd());
    }
    if let Some((fd, _)) = &s.stdin {
        let _ = sys::set_nonblocking(fd.as_fd());
    }
    let _ = sys::set_nonblocking(s.report);
    let output_limit = s.limits.output.unwrap_or(u64::MAX);
    // Until the program is executed, only a generous guard against a stuck setup applies; the
    // limits themselves count from exec, so setup never eats into them.
    let mut wall_deadline =
        Some(s.started + s.limits.wall_time.unwrap_or(Duration::ZERO) + SETUP_GRACE);
    let mut report_open = true;
    let cpu_limit_us = s.limits.cpu_time.map(|t| t.as_micros() as u64);
    let mut next_cpu_check =
        cpu_limit_us.map(|limit| s.started + cpu_horizon(limit, 0, s.parallelism));
    let mut next_sample = Some(s.started + s.stats_interval);
    let mut exited = false;
    // Read into its spare capacity: pages the kernel never writes (a run with little or no
    // output) are never touched, where zeroing them cost a page fault each.
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);

    let kill = |cause: KillCause, out: &mut Supervised| {
        if out.first_kill.is_none() {
            out.first_kill = Some(cause);
        }
        let _ = sys::process::pidfd_signal(s.pidfd, libc::SIGKILL);
    };

    loop {
        // The tree is gone when the init has reported the program's end (it kills and reaps
        // everything else first, and exits right after), or when it has exited and its last
        // reports are read.
        let over = exited || out.program_status.is_some();
        let reports_done = out.program_status.is_some() || !report_open;
        if over && reports_done && !open[0] && !open[1] {
            break;
        }
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(5);
        let mut roles: Vec<Role> = Vec::with_capacity(5);
        let mut watch = |fd: BorrowedFd<'_>, events: i16, role: Role| {
            fds.push(libc::pollfd {
                fd: fd.as_raw_fd(),
                events,
                revents: 0,
            });
            roles.push(role);
        };
        if !over {
            watch(s.pidfd, libc::POLLIN, Role::Exit);
        }
        for (i, fd) in s.outputs.iter().enumerate() {
            if open[i] {
                watch(fd.as_fd(), libc::POLLIN, Role::Output(i));
            }
        }
        if let Some((fd, _)) = &s.stdin {
            watch(fd.as_fd(), libc::POLLOUT, Role::Stdin);
        }
        if report_open && out.program_status.is_none() {
            watch(s.report, libc::POLLIN, Role::Report);
        }
        if out.first_kill.is_none() {
            if let Some(fd) = s.abort {
                watch(fd, libc::POLLIN, Role::Abort);
            }
        }
        let now = Instant::now();
        let nearest = if over {
            None
        } else {
            [wall_deadline, next_cpu_check, next_sample]
                .into_iter()
                .flatten()
                .min()
        };
        let timeout = nearest.map(|d| d.saturating_duration_since(now));
        // An abort handle without an eventfd is checked at least every 20 ms.
        let timeout = if s.abort.is_none() && out.first_kill.is_none() && !over {
            Some(timeout.map_or(Duration::from_millis(20), |t| {
                t.min(Duration::from_millis(20))
            }))
        } else {
            timeout
        };
        let _ = sys::poll(&mut fds, timeout);

        for (pfd, role) in fds.iter().zip(&roles) {
            if pfd.revents == 0 {
                continue;
            }
            match *role {
                Role::Exit => {
                    exited = true;
                    out.ended = Some(Instant::now());
                }
                Role::Output(i) => {
                    let stream = if i == 0 {
                        Stream::Stdout
                    } else {
                        Stream::Stderr
                    };
                    match sys::read_into_spare(s.outputs[i].as_fd(), &mut buf) {
                        Ok(0) => open[i] = false,
                        Ok(n) => {
                            out.output_bytes += n as u64;
                            let kept_so_far = (out.stdout.len() + out.stderr.len()) as u64;
                            let room = output_limit.saturating_sub(kept_so_far) as usize;
                            let keep = n.min(room);
                            if keep > 0 {
                                let chunk = &buf[..keep];
                                if i == 0 {
                                    out.stdout.extend_from_slice(chunk)
                                } else {
                                    out.stderr.extend_from_slice(chunk)
                                }
                                events.output(stream, chunk);
                            }
                            if n > room {
                                kill(KillCause::Output, &mut out);
                                // Nothing past the limit is wanted: stop reading at once.
                                open = [false, false];
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => open[i] = false,
                    }
                }
                Role::Stdin => {
                    let mut done = true;
                    if let Some((fd, pending)) = &mut s.stdin {
                        match sys::write_nosigpipe(fd.as_fd(), pending) {
                            Ok(n) => {
                                pending.drain(..n);
                                done = pending.is_empty();
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => done = false,
                            Err(_) => {} // the program closed its stdin: the rest is not wanted
                        }
                    }
                    if done {
                        s.stdin = None; // closing the pipe gives the program end of file
                    }
                }
                Role::Abort => kill(KillCause::Abort, &mut out),
                Role::Report => {
                    let mut records = [0u8; 64];
                    match sys::read(s.report, &mut records) {
                        Ok(0) => report_open = false,
                        Ok(n) => {
                            for record in records[..n].chunks_exact(8) {
                                let stage = u32::from_ne_bytes([
                                    record[0], record[1], record[2], record[3],
                                ]);
                                let value = i32::from_ne_bytes([
                                    record[4], record[5], record[6], record[7],
                                ]);
                                if stage == Stage::Executed as u32 {
                                    let now = Instant::now();
                                    out.executed = Some(now);
                                    wall_deadline = s.limits.wall_time.map(|t| now + t);
                                    // While the program runs, not once it has ended.
                                    s.cgroups.open_usage_files();
                                } else if stage == Stage::ProgramExit as u32 {
                                    out.program_status = Some(value);
                                    out.ended.get_or_insert_with(Instant::now);
                                } else {
                                    out.setup_failure = Some((stage, value));
                                }
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => report_open = false,
                    }
                }
            }
        }
        if exited || out.program_status.is_some() {
            continue;
        }
        if s.abort.is_none() && out.first_kill.is_none() && abort_requested() {
            kill(KillCause::Abort, &mut out);
        }
        let now = Instant::now();
        if wall_deadline.is_some_and(|d| now >= d) {
            wall_deadline = None;
            if out.executed.is_some() {
                kill(KillCause::WallTime, &mut out);
            } else {
                // Stuck before exec: the sandbox failed, not the program.
                out.setup_failure
                    .get_or_insert((crate::plan::Stage::SetupTimeout as u32, libc::ETIMEDOUT));
                let _ = sys::process::pidfd_signal(s.pidfd, libc::SIGKILL);
            }
        }
        if let (Some(check_at), Some(limit)) = (next_cpu_check, cpu_limit_us) {
            if now >= check_at {
                let used = s.cgroups.cpu_total_usec().unwrap_or(0);
                if used >= limit {
                    kill(KillCause::CpuTime, &mut out);
                    next_cpu_check = None;
                } else {
                    next_cpu_check = Some(now + cpu_horizon(limit, used, s.parallelism));
                }
            }
        }
        if next_sample.is_some_and(|t| now >= t) {
            let sample = sample(s.cgroups, s.started, now);
            out.sampled_peak_pids = out.sampled_peak_pids.max(sample.pids);
            events.stats(&sample);
            out.stats.push(sample);
            if out.stats.len() >= SAMPLE_BUFFER {
                out.stats = decimate(&out.stats, SAMPLE_BUFFER / 2);
            }
            next_sample = Some(now + s.stats_interval);
        }
    }
    out.stats = decimate(&out.stats, s.max_stat_points);
    out
}

#[derive(Clone, Copy)]
enum Role {
    Exit,
    Output(usize),
    Stdin,
    Abort,
    Report,
}

/// The earliest moment the run could have used up its CPU time: the remaining budget spent at
/// full speed on every CPU it may use. Checking then, and again as the budget shrinks, enforces
/// the limit to within [`MIN_CPU_CHECK`] times the parallelism, with no fixed tick.
pub fn cpu_horizon(limit_us: u64, used_us: u64, parallelism: f64) -> Duration {
    let remaining = limit_us.saturating_sub(used_us) as f64;
    Duration::from_micros((remaining / parallelism.max(1.0)) as u64).max(MIN_CPU_CHECK)
}

fn sample(cgroups: &RunCgroups, started: Instant, now: Instant) -> StatSample {
    let reading = cgroups.read();
    let (cpu_user, cpu_sys) = reading.cpu_usec.unwrap_or((0, 0));
    let (io_read, io_write) = reading.io.unwrap_or((0, 0));
    StatSample {
        t_ms: now.saturating_duration_since(started).as_millis() as u64,
        memory_bytes: reading.memory.unwrap_or(0),
        cpu_ms: (cpu_user + cpu_sys) / 1000,
        pids: reading.pids.unwrap_or(0),
        io_read_bytes: io_read,
        io_write_bytes: io_write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_checks_tighten_as_the_budget_shrinks() {
        assert_eq!(cpu_horizon(1_000_000, 0, 1.0), Duration::from_secs(1));
        assert_eq!(cpu_horizon(1_000_000, 0, 2.0), Duration::from_millis(500));
        assert_eq!(cpu_horizon(1_000_000, 999_900, 1.0), MIN_CPU_CHECK);
        assert_eq!(cpu_horizon(1_000_000, 2_000_000, 4.0), MIN_CPU_CHECK);
    }
}
