//! The spawner: a small single-threaded process, forked from the runner while it is still
//! small, that clones runs on the runner's behalf.
//!
//! Cloning a run copies the page tables of the process that clones it and leaves every page of
//! that process copy-on-write until the run has executed its program. From a large
//! multi-threaded service (coordinator, worker, async runtime and SQLite in one process), each
//! clone then costs the service's own threads page copies and TLB-shootdown interrupts on every
//! CPU they run on. The spawner has one thread and little memory, so a clone from it costs what
//! it costs from a small program, and the service's memory is never shared copy-on-write.
//!
//! Runs are cloned with `CLONE_PARENT`: they are children of the runner, not of the spawner, so
//! the runner waits for them, signals them and reads their pidfds exactly as for runs it cloned
//! itself. Only the clone moves. The runner sends the child's plan and the descriptors the
//! child keeps (go pipe, report pipe, stdio) in one message; the spawner
//! answers with the pid and a pidfd, and closes its copies at once.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::child::child_main;
use crate::plan::{ChildPlan, Step, MAX_V1_JOINS};
use crate::sys;
use crate::sys::child::SeccompProgram;
use crate::sys::process::Spawned;

/// Longest request the spawner takes: a plan is a few kilobytes (paths, the generated `/etc`
/// files and the seccomp filter); the input files travel in the launch message instead.
const MAX_REQUEST: usize = 256 << 10;

/// Descriptors a request carries, in this order: go pipe, report pipe, stdin, stdout, stderr.
const PLAN_FDS: usize = 5;

/// A handle on a spawner process. Clones share it; the process ends when the last is dropped
/// (or when the runner's thread that started it exits).
#[derive(Clone)]
pub struct Spawner {
    inner: Arc<Inner>,
}

struct Inner {
    /// One request and its answer at a time; taken when the handle is dropped.
    socket: Mutex<Option<OwnedFd>>,
    pid: libc::pid_t,
    /// Set once the spawner stopped answering: runs are then cloned directly.
    gone: AtomicBool,
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawner")
            .field("pid", &self.inner.pid)
            .field("gone", &self.inner.gone.load(Ordering::Relaxed))
            .finish()
    }
}

/// Why a clone through the spawner did not happen.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// The spawner cannot be reached (it ended or was killed, or its answer made no sense):
    /// clone directly instead.
    Unreachable,
    /// The spawner tried and the kernel refused (the same error a direct clone would give).
    Refused(io::Error),
}

impl Spawner {
    /// Forks the spawner process. Start it early, while this process is small and before it
    /// starts other threads: the spawner is a copy of this process at this moment, and every
    /// clone it makes copies its page tables. It dies with the thread that calls this (it gets
    /// SIGKILL when that thread exits), so call it from the main thread.
    pub fn start() -> io::Result<Spawner> {
        let (ours, theirs) = sys::process::seqpacket_pair()?;
        let runner = std::process::id();
        match sys::process::fork()? {
            None => {
                drop(ours);
                serve(theirs, runner)
            }
            Some(pid) => Ok(Spawner {
                inner: Arc::new(Inner {
                    socket: Mutex::new(Some(ours)),
                    pid,
                    gone: AtomicBool::new(false),
                }),
            }),
        }
    }

    /// The spawner's process id.
    pub fn pid(&self) -> u32 {
        self.inner.pid as u32
    }

    /// Whether the spawner still answers (it stops when it is killed; runs are then cloned by
    /// the runner itself).
    pub fn is_alive(&self) -> bool {
        !self.inner.gone.load(Ordering::Relaxed)
    }

    /// Clones a run as `sys::process::spawn` would, from the spawner, as a child of this
    /// process.
    pub(crate) fn spawn(
        &self,
        namespaces: libc::c_int,
        plan: &ChildPlan,
    ) -> Result<Spawned, SpawnError> {
        if !self.is_alive() {
            return Err(SpawnError::Unreachable);
        }
        let mut message = Vec::with_capacity(8 << 10);
        encode_request(&mut message, namespaces, plan);
        if message.len() > MAX_REQUEST {
            return Err(SpawnError::Refused(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the run's plan is {} bytes, more than the {MAX_REQUEST} the spawner takes",
                    message.len()
                ),
            )));
        }
        let mut fds: Vec<RawFd> = vec![plan.go_fd, plan.error_fd];
        fds.extend_from_slice(&plan.stdio);
        let unreachable = || {
            self.inner.gone.store(true, Ordering::Relaxed);
            SpawnError::Unreachable
        };
        let guard = self
            .inner
            .socket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let socket = guard.as_ref().ok_or_else(unreachable)?;
        sys::process::send_with_fds(socket.as_fd(), &message, &fds).map_err(|_| unreachable())?;
        let mut reply = [0u8; REPLY_LEN];
        let (len, mut passed) =
            sys::process::recv_with_fds(socket.as_fd(), &mut reply).map_err(|_| unreachable())?;
        drop(guard);
        if len == 0 {
            return Err(unreachable()); // the spawner ended
        }
        match decode_reply(&reply[..len]) {
            Some(Reply::Refused(errno)) => {
                Err(SpawnError::Refused(io::Error::from_raw_os_error(errno)))
            }
            Some(Reply::Spawned { pid }) if passed.len() == 1 => {
                let pidfd = passed.remove(0);
                Ok(Spawned { pid, pidfd })
            }
            _ => Err(unreachable()), // an answer that makes no sense
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the socket ends the spawner's loop; then reap it.
        drop(
            self.socket
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take(),
        );
        let _ = sys::process::wait_pid(self.pid);
    }
}

/// The spawner's loop: one request, one clone, one answer, until the runner closes the socket.
fn serve(socket: OwnedFd, runner: u32) -> ! {
    // Die with the runner's thread; a runner gone before this took effect is noticed here.
    if sys::child::kill_with_parent().is_err() || std::os::unix::process::parent_id() != runner {
        sys::child::exit(1);
    }
    // Terminal and stop signals are the runner's to handle; the spawner ends with it.
    for signal in [
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGPIPE,
    ] {
        let _ = sys::process::ignore_signal(signal);
    }
    // Nothing of the runner's but the socket and the standard streams stays open here.
    if sys::child::close_all_except(&[0, 1, 2, socket.as_raw_fd()]).is_err() {
        sys::child::exit(1);
    }
    sys::child::set_name(c"warren-spawner");
    let mut buffer = vec![0u8; MAX_REQUEST];
    loop {
        let (len, fds) = match sys::process::recv_with_fds(socket.as_fd(), &mut buffer) {
            Ok((0, _)) => sys::child::exit(0),
            Ok(received) => received,
            // A request cut short: refuse it and go on.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => (0, Vec::new()),
            Err(_) => sys::child::exit(1),
        };
        let mut reply = Vec::with_capacity(REPLY_LEN);
        // The spawner's copies of the run's descriptors close when `fds` drops, right after
        // the clone: the run's pipes must have no other holder.
        let sent = match answer(&buffer[..len], &fds) {
            Ok(spawned) => {
                encode_reply(&mut reply, &Reply::Spawned { pid: spawned.pid });
                sys::process::send_with_fds(socket.as_fd(), &reply, &[spawned.pidfd.as_raw_fd()])
            }
            Err(errno) => {
                encode_reply(&mut reply, &Reply::Refused(errno));
                sys::process::send_with_fds(socket.as_fd(), &reply, &[])
            }
        };
        drop(fds);
        if sent.is_err() {
            sys::child::exit(1);
        }
    }
}

/// Clones the run a request describes; the errno to answer on failure.
fn answer(request: &[u8], fds: &[OwnedFd]) -> Result<Spawned, i32> {
    let (namespaces, mut plan) = decode_request(request).map_err(|_| libc::EINVAL)?;
    if fds.len() != PLAN_FDS {
        return Err(libc::EINVAL);
    }
    plan.go_fd = fds[0].as_raw_fd();
    plan.error_fd = fds[1].as_raw_fd();
    plan.stdio = [fds[2].as_raw_fd(), fds[3].as_raw_fd(), fds[4].as_raw_fd()];
    sys::process::spawn(namespaces, true, child_main, &plan)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// The spawner's answer.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// Cloned; the pidfd is attached.
    Spawned { pid: libc::pid_t },
    /// Not cloned, with this errno.
    Refused(i32),
}

const REPLY_LEN: usize = 8;

fn encode_reply(out: &mut Vec<u8>, reply: &Reply) {
    let (errno, pid) = match reply {
        Reply::Spawned { pid } => (0, *pid),
        Reply::Refused(errno) => (*errno, 0),
    };
    out.extend_from_slice(&errno.to_le_bytes());
    out.extend_from_slice(&pid.to_le_bytes());
}

fn decode_reply(bytes: &[u8]) -> Option<Reply> {
    let mut r = Reader { bytes };
    let errno = r.u32().ok()? as i32;
    let pid = r.u32().ok()? as libc::pid_t;
    if !r.bytes.is_empty() {
        return None;
    }
    Some(match errno {
        0 if pid > 0 => Reply::Spawned { pid },
        0 => return None,
        errno => Reply::Refused(errno),
    })
}

/// What was wrong with a request (the spawner answers EINVAL).
#[derive(Debug, PartialEq, Eq)]
struct Malformed(&'static str);

/// Encodes a request: the namespaces and the plan without its descriptors (they travel as
/// SCM_RIGHTS in [`PLAN_FDS`] order).
fn encode_request(out: &mut Vec<u8>, namespaces: libc::c_int, plan: &ChildPlan) {
    let mut w = Writer { out };
    w.u32(namespaces as u32);
    w.bytes(plan.new_root.as_bytes());
    w.u32(plan.steps.len() as u32);
    for step in &plan.steps {
        match step {
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => {
                w.u8(0);
                w.opt(source.as_ref());
                w.bytes(target.as_bytes());
                w.opt(fstype.as_ref());
                w.u64(*flags);
                w.opt(data.as_ref());
            }
            Step::ReadOnly(target) => {
                w.u8(1);
                w.bytes(target.as_bytes());
            }
            Step::Mkdir(path, mode) => {
                w.u8(2);
                w.bytes(path.as_bytes());
                w.u32(*mode);
            }
            Step::Device { path, major, minor } => {
                w.u8(3);
                w.bytes(path.as_bytes());
                w.u32(*major);
                w.u32(*minor);
            }
            Step::Symlink { target, link } => {
                w.u8(4);
                w.bytes(target.as_bytes());
                w.bytes(link.as_bytes());
            }
            Step::File {
                path,
                contents,
                mode,
            } => {
                w.u8(5);
                w.bytes(path.as_bytes());
                w.bytes(contents);
                w.u32(*mode);
            }
        }
    }
    w.bytes(&plan.hostname);
    w.u32(plan.uid);
    w.u32(plan.extra_gid);
    w.u32(plan.umask);
    w.u64(plan.disk);
    w.u32(plan.last_capability);
    w.u32(plan.seccomp.len() as u32);
    for program in &plan.seccomp {
        let instructions = program.instructions();
        w.u32(instructions.len() as u32);
        for i in instructions {
            w.out.extend_from_slice(&i.code.to_le_bytes());
            w.u8(i.jt);
            w.u8(i.jf);
            w.u32(i.k);
        }
    }
    w.u32(plan.v1_mounts.len() as u32);
    for mount in &plan.v1_mounts {
        w.bytes(mount.as_bytes());
    }
    w.bytes(plan.v1_tasks.as_bytes());
    w.opt(plan.v2_mount.as_ref());
    w.bytes(plan.v2_group.as_bytes());
}

/// Decodes a request; the plan's descriptors are -1 until the caller sets them.
fn decode_request(bytes: &[u8]) -> Result<(libc::c_int, ChildPlan), Malformed> {
    let mut r = Reader { bytes };
    let namespaces = r.u32()? as libc::c_int;
    let new_root = r.cstring()?;
    let count = r.count(2)?;
    let mut steps = Vec::with_capacity(count);
    for _ in 0..count {
        steps.push(match r.u8()? {
            0 => Step::Mount {
                source: r.opt_cstring()?,
                target: r.cstring()?,
                fstype: r.opt_cstring()?,
                flags: r.u64()? as libc::c_ulong,
                data: r.opt_cstring()?,
            },
            1 => Step::ReadOnly(r.cstring()?),
            2 => Step::Mkdir(r.cstring()?, r.u32()?),
            3 => Step::Device {
                path: r.cstring()?,
                major: r.u32()?,
                minor: r.u32()?,
            },
            4 => Step::Symlink {
                target: r.cstring()?,
                link: r.cstring()?,
            },
            5 => Step::File {
                path: r.cstring()?,
                contents: r.bytes()?.to_vec(),
                mode: r.u32()?,
            },
            _ => return Err(Malformed("unknown filesystem step")),
        });
    }
    let hostname = r.bytes()?.to_vec();
    let uid = r.u32()?;
    let extra_gid = r.u32()?;
    let umask = r.u32()?;
    let disk = r.u64()?;
    let last_capability = r.u32()?;
    let programs = r.count(4)?;
    let mut seccomp = Vec::with_capacity(programs);
    for _ in 0..programs {
        let len = r.count(8)?;
        let mut instructions = Vec::with_capacity(len);
        for _ in 0..len {
            let code = u16::from_le_bytes([r.u8()?, r.u8()?]);
            instructions.push(libc::sock_filter {
                code,
                jt: r.u8()?,
                jf: r.u8()?,
                k: r.u32()?,
            });
        }
        seccomp.push(SeccompProgram::new(instructions));
    }
    let joins = r.count(4)?;
    if joins > MAX_V1_JOINS {
        return Err(Malformed("too many cgroup hierarchies"));
    }
    let mut v1_mounts = Vec::with_capacity(joins);
    for _ in 0..joins {
        v1_mounts.push(r.cstring()?);
    }
    let v1_tasks = r.cstring()?;
    let v2_mount = r.opt_cstring()?;
    let v2_group = r.cstring()?;
    if !r.bytes.is_empty() {
        return Err(Malformed("bytes after the plan"));
    }
    Ok((
        namespaces,
        ChildPlan {
            new_root,
            steps,
            hostname,
            go_fd: -1,
            error_fd: -1,
            stdio: [-1; 3],
            uid,
            extra_gid,
            umask,
            disk,
            last_capability,
            seccomp,
            v1_mounts,
            v1_tasks,
            v2_mount,
            v2_group,
        },
    ))
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.out.extend_from_slice(v);
    }
    fn opt(&mut self, v: Option<&CString>) {
        match v {
            Some(s) => {
                self.u8(1);
                self.bytes(s.as_bytes());
            }
            None => self.u8(0),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.bytes.len() < n {
            return Err(Malformed("request cut short"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        let lo = self.u32()? as u64;
        let hi = self.u32()? as u64;
        Ok(lo | hi << 32)
    }
    /// A count of items at least `min_size` bytes each, checked against what is left, so a
    /// corrupt count cannot make the decoder reserve memory the request does not have.
    fn count(&mut self, min_size: usize) -> Result<usize, Malformed> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.bytes.len() {
            return Err(Malformed("count larger than the request"));
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn cstring(&mut self) -> Result<CString, Malformed> {
        CString::new(self.bytes()?.to_vec()).map_err(|_| Malformed("NUL inside a string"))
    }
    fn opt_cstring(&mut self) -> Result<Option<CString>, Malformed> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.cstring()?)),
            _ => Err(Malformed("bad option tag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> ChildPlan {
        ChildPlan {
            new_root: c"/run/warren/root".to_owned(),
            steps: vec![
                Step::Mount {
                    source: Some(c"/usr".to_owned()),
                    target: c"/run/warren/root/usr".to_owned(),
                    fstype: None,
                    flags: (libc::MS_BIND | libc::MS_REC) as libc::c_ulong,
                    data: None,
                },
                Step::Mount {
                    source: Some(c"proc".to_owned()),
                    target: c"/run/warren/root/proc".to_owned(),
                    fstype: Some(c"proc".to_owned()),
                    flags: 0,
                    data: Some(c"hidepid=2".to_owned()),
                },
                Step::ReadOnly(c"/run/warren/root/usr".to_owned()),
                Step::Mkdir(c"/run/warren/root/dev".to_owned(), 0o755),
                Step::Device {
                    path: c"/run/warren/root/dev/null".to_owned(),
                    major: 1,
                    minor: 3,
                },
                Step::Symlink {
                    target: c"usr/bin".to_owned(),
                    link: c"/run/warren/root/bin".to_owned(),
                },
                Step::File {
                    path: c"/run/warren/root/etc/passwd".to_owned(),
                    contents: b"root:x:0:0::/:/bin/sh\n\0binary".to_vec(),
                    mode: 0o644,
                },
            ],
            hostname: b"warren".to_vec(),
            go_fd: 7,
            error_fd: 8,
            stdio: [9, 10, 11],
            uid: 200_001,
            extra_gid: 200_002,
            umask: 0o077,
            disk: 64 << 20,
            last_capability: 40,
            seccomp: vec![
                SeccompProgram::new(vec![
                    libc::sock_filter {
                        code: 0x20,
                        jt: 0,
                        jf: 0,
                        k: 4,
                    },
                    libc::sock_filter {
                        code: 0x15,
                        jt: 1,
                        jf: 2,
                        k: 0xc000_003e,
                    },
                ]),
                SeccompProgram::new(Vec::new()),
            ],
            v1_mounts: vec![
                c"/sys/fs/cgroup/memory".to_owned(),
                c"/sys/fs/cgroup/pids".to_owned(),
            ],
            v1_tasks: c"warren/run-1.2-3/tasks".to_owned(),
            v2_mount: Some(c"/sys/fs/cgroup/unified".to_owned()),
            v2_group: c"warren/run-1.2-3".to_owned(),
        }
    }

    #[test]
    fn a_request_decodes_to_the_plan_it_was_made_from_without_its_descriptors() {
        let sent = plan();
        let mut bytes = Vec::new();
        encode_request(&mut bytes, 0x2002_0000, &sent);
        let Ok((namespaces, got)) = decode_request(&bytes) else {
            panic!("the request does not decode");
        };
        assert_eq!(namespaces, 0x2002_0000);
        let expected = ChildPlan {
            go_fd: -1,
            error_fd: -1,
            stdio: [-1; 3],
            ..sent
        };
        assert_eq!(format!("{got:?}"), format!("{expected:?}"));
    }

    #[test]
    fn every_truncated_or_extended_request_is_refused_without_panicking() {
        let mut bytes = Vec::new();
        encode_request(&mut bytes, 0, &plan());
        for len in 0..bytes.len() {
            assert!(decode_request(&bytes[..len]).is_err(), "prefix of {len}");
        }
        bytes.push(0);
        assert_eq!(
            decode_request(&bytes).err(),
            Some(Malformed("bytes after the plan"))
        );
    }

    #[test]
    fn a_corrupt_count_is_refused_before_anything_is_reserved() {
        let mut bytes = Vec::new();
        encode_request(&mut bytes, 0, &plan());
        // The step count follows the namespaces (4) and the root (4 + 16).
        bytes[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_request(&bytes).err(),
            Some(Malformed("count larger than the request"))
        );
    }

    #[test]
    fn more_hierarchies_than_a_run_can_join_are_refused() {
        let mut sent = plan();
        sent.v1_mounts = vec![c"/x".to_owned(); MAX_V1_JOINS + 1];
        let mut bytes = Vec::new();
        encode_request(&mut bytes, 0, &sent);
        assert_eq!(
            decode_request(&bytes).err(),
            Some(Malformed("too many cgroup hierarchies"))
        );
    }

    #[test]
    fn replies_round_trip_and_nonsense_is_rejected() {
        for reply in [Reply::Spawned { pid: 4242 }, Reply::Refused(libc::ENOMEM)] {
            let mut bytes = Vec::new();
            encode_reply(&mut bytes, &reply);
            assert_eq!(bytes.len(), REPLY_LEN);
            assert_eq!(decode_reply(&bytes), Some(reply));
        }
        assert_eq!(decode_reply(&[0; REPLY_LEN]), None); // pid 0 is not a child
        assert_eq!(decode_reply(&[0; 3]), None);
    }
}
