//! Mounts the sandbox keeps in the host's mount namespace and binds into runs:
//!
//! - squashfs images (environments, task filesystems), mounted read-only through a loop device
//!   once and shared by every run that uses them at the same time; unmounted (and the loop
//!   device detached) when the last user lets go, or at shutdown ([`HostMounts::release_images`])
//!   whoever still holds them;
//! - shared scratch directories: a tmpfs of a given size that several runs in turn see as their
//!   `/tmp` (the steps of one task).
//!
//! Mount points live under the state directory, named `run-<runner id>-<sequence>` like run
//! cgroups, so a runner that crashed leaves nothing the next one does not reclaim.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::sys;

/// An image's identity: the same path rebuilt in place is another image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ImageKey {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
}

/// Numbers the mount points of this process: process-wide, since several sandboxes of one
/// process share the runner id in their names.
static MOUNT_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The host mounts of one sandbox.
#[derive(Debug)]
pub(crate) struct HostMounts {
    images_dir: PathBuf,
    scratch_dir: PathBuf,
    runner_id: String,
    images: Mutex<HashMap<ImageKey, Weak<MountedImage>>>,
    /// Set by [`HostMounts::release_images`]: no image is mounted after it.
    closed: AtomicBool,
}

/// A squashfs image mounted read-only; unmounted, and its loop device detached, when the last
/// holder drops it or the sandbox shuts down.
#[derive(Debug)]
pub struct MountedImage {
    mount_point: PathBuf,
    /// The loop device, held open so that it is detached as soon as the image is unmounted;
    /// `None` once released.
    device: Mutex<Option<OwnedFd>>,
}

impl MountedImage {
    /// Where the image's contents are.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Unmounts the image and detaches its loop device; the second call does nothing.
    fn release(&self) {
        let device = self.device.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(device) = device else { return };
        release(&self.mount_point);
        // Still in use (a run's mount namespace holds the image), the device detaches itself
        // when that last user lets go.
        if let Err(e) = sys::mount::detach_loop(device.as_fd()) {
            eprintln!(
                "warren-sandbox: detaching the loop device of {}: {e}",
                self.mount_point.display()
            );
        }
    }
}

impl Drop for MountedImage {
    fn drop(&mut self) {
        self.release();
    }
}

/// A tmpfs directory that the runs given it share as their `/tmp`; removed when dropped.
#[derive(Debug)]
pub(crate) struct SharedScratch {
    mount_point: PathBuf,
}

impl SharedScratch {
    /// The directory on the host.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }
}

impl Drop for SharedScratch {
    fn drop(&mut self) {
        release(&self.mount_point);
    }
}

/// The loop devices (`/dev/loopN`) whose backing file is `file`, as `losetup -j` tells: what
/// is still attached to an image.
pub fn loop_devices_backed_by(file: &Path) -> Vec<PathBuf> {
    let Ok(blocks) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    blocks
        .flatten()
        .filter(|block| {
            std::fs::read_to_string(block.path().join("loop/backing_file"))
                .is_ok_and(|backing| Path::new(backing.trim_end()) == file)
        })
        .map(|block| Path::new("/dev").join(block.file_name()))
        .collect()
}

/// Unmounts `mount_point` and removes the directory, logging what fails (there is no caller to
/// tell: this runs from `Drop`).
fn release(mount_point: &Path) {
    if let Err(e) = sys::mount::unmount(mount_point) {
        eprintln!("warren-sandbox: unmounting {}: {e}", mount_point.display());
        return;
    }
    if let Err(e) = std::fs::remove_dir(mount_point) {
        if e.kind() != std::io::ErrorKind::NotFound {
            eprintln!("warren-sandbox: removing {}: {e}", mount_point.display());
        }
    }
}

/// Makes `dir` (and its parents) accessible to root only: runs reach what is below it through
/// their own bind mounts, never through this path. Returns what `dir` is then.
fn private_dir(dir: &Path) -> std::io::Result<std::fs::Metadata> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() && meta.permissions().mode() & 0o7777 == 0o700 => Ok(meta),
        _ => {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            std::fs::metadata(dir)
        }
    }
}

impl HostMounts {
    /// Mount points go under `state_dir`; nothing is touched until [`HostMounts::prepare`].
    pub fn new(state_dir: &Path, runner_id: &str) -> HostMounts {
        HostMounts {
            images_dir: state_dir.join("images"),
            scratch_dir: state_dir.join("scratch"),
            runner_id: runner_id.to_string(),
            images: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Makes the mount directories and removes what runners that are gone left in them.
    pub fn prepare(&self, runner_is_gone: &dyn Fn(&str) -> bool) -> std::io::Result<()> {
        for dir in [&self.images_dir, &self.scratch_dir] {
            // Every entry is a directory (a mount point).
            if crate::cgroup::links_show_no_subdirectories(&private_dir(dir)?) {
                continue;
            }
            for entry in std::fs::read_dir(dir)?.flatten() {
                let name = entry.file_name();
                if name.to_str().is_some_and(runner_is_gone) {
                    release(&entry.path());
                }
            }
        }
        Ok(())
    }

    fn next_mount_point(&self, under: &Path) -> std::io::Result<PathBuf> {
        let path = under.join(format!(
            "run-{}-{}",
            self.runner_id,
            MOUNT_SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path)?;
        Ok(path)
    }

    /// The image at `image` mounted read-only, shared with every other holder of the same image.
    pub fn image(&self, image: &Path) -> std::io::Result<Arc<MountedImage>> {
        let meta = std::fs::metadata(image)?;
        if !meta.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let key = ImageKey {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            modified_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        };
        // Held while mounting, so two runs wanting the same image mount it once.
        let mut images = self.images.lock().unwrap_or_else(|p| p.into_inner());
        if self.closed.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the sandbox is shutting down"));
        }
        if let Some(mounted) = images.get(&key).and_then(Weak::upgrade) {
            return Ok(mounted);
        }
        images.retain(|_, weak| weak.strong_count() > 0);
        let mount_point = self.next_mount_point(&self.images_dir)?;
        let device = match sys::mount::mount_squashfs(image, &mount_point) {
            Ok(device) => device,
            Err(e) => {
                let _ = std::fs::remove_dir(&mount_point);
                return Err(e);
            }
        };
        let mounted = Arc::new(MountedImage {
            mount_point,
            device: Mutex::new(Some(device)),
        });
        images.insert(key, Arc::downgrade(&mounted));
        Ok(mounted)
    }

    /// A fresh tmpfs of `size` bytes, world-writable with the sticky bit like any `/tmp`.
    pub fn scratch(&self, size: u64) -> std::io::Result<SharedScratch> {
        let mount_point = self.next_mount_point(&self.scratch_dir)?;
        if let Err(e) = sys::mount::mount_tmpfs(&mount_point, size, 0o1777) {
            let _ = std::fs::remove_dir(&mount_point);
            return Err(e);
        }
        Ok(SharedScratch { mount_point })
    }

    /// Unmounts every image still mounted, whoever holds it, detaches their loop devices, and
    /// mounts none from then on; returns how many there were. For the end of service, once the
    /// runs have been stopped: a run still using an image keeps what it has mounted of it (in
    /// its own mount namespace) until it ends, and the loop device goes with that.
    pub fn release_images(&self) -> usize {
        let mut images = self.images.lock().unwrap_or_else(|p| p.into_inner());
        self.closed.store(true, Ordering::SeqCst);
        let live: Vec<Arc<MountedImage>> = images
            .drain()
            .filter_map(|(_, weak)| weak.upgrade())
            .collect();
        for image in &live {
            image.release();
        }
        live.len()
    }

    /// How many images are mounted now.
    pub fn mounted_images(&self) -> usize {
        let images = self.images.lock().unwrap_or_else(|p| p.into_inner());
        images.values().filter(|w| w.strong_count() > 0).count()
    }
}
