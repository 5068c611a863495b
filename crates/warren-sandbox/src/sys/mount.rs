//! Mounts the runner makes in its own (the host's) mount namespace: shared read-only images
//! through loop devices, and shared tmpfs directories. Unlike [`super::child`], these run in the
//! ordinary runner process and may allocate.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::check;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    size_limit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>` (Linux 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", path.display()),
        )
    })
}

/// Attaches `image` read-only to a free loop device that detaches itself once nothing uses it
/// (its last mount gone and the returned descriptor closed).
fn attach_loop(image: &File) -> io::Result<(OwnedFd, libc::c_long)> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    // Another process may take the device between GET_FREE and CONFIGURE: then ask again.
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let number =
            check(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) } as libc::c_long)?;
        let device = OpenOptions::new()
            .read(true)
            .open(format!("/dev/loop{number}"))?;
        let config = LoopConfig {
            fd: image.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                device: 0,
                inode: 0,
                rdevice: 0,
                offset: 0,
                size_limit: 0,
                number: 0,
                encrypt_type: 0,
                encrypt_key_size: 0,
                flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
                file_name: [0; 64],
                crypt_name: [0; 64],
                encrypt_key: [0; 32],
                init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: `config` is a fully initialised loop_config that outlives the call; the
        // kernel only reads it.
        let ret = unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        };
        match check(ret as libc::c_long) {
            Ok(_) => return Ok((device.into(), number)),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::WouldBlock,
        "every free loop device was taken by someone else first",
    ))
}

/// Mounts the squashfs image `image` read-only (nosuid, nodev) at `target` through a loop
/// device, and returns the loop device open: [`detach_loop`] on it once unmounted detaches it
/// at once. Otherwise it detaches itself when both the mount and the descriptor are gone.
pub fn mount_squashfs(image: &Path, target: &Path) -> io::Result<OwnedFd> {
    let file = File::open(image)?;
    let (device, number) = attach_loop(&file)?;
    let device_path = c_path(Path::new(&format!("/dev/loop{number}")))?;
    let target = c_path(target)?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    check(unsafe {
        libc::mount(
            device_path.as_ptr(),
            target.as_ptr(),
            c"squashfs".as_ptr(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        )
    } as libc::c_long)?;
    Ok(device)
}

/// Detaches the loop device open as `device` from its file: at once when nothing else has it
/// open (its mount is gone), or else as soon as the last user closes it. A device already
/// detached is not an error.
pub fn detach_loop(device: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: LOOP_CLR_FD takes no argument; `device` is an open descriptor for the call.
    match check(unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CLR_FD) } as libc::c_long) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Mounts a tmpfs of `size` bytes (and a proportional inode count) with `mode` at `target`.
pub fn mount_tmpfs(target: &Path, size: u64, mode: u32) -> io::Result<()> {
    let inodes = (size / 4096).clamp(1024, 1 << 20);
    let data = CString::new(format!("size={size},nr_inodes={inodes},mode={mode:o}"))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let target = c_path(target)?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    check(unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    } as libc::c_long)?;
    Ok(())
}

/// Detaches the mount at `target` (lazily: users still inside keep it until they leave).
/// Nothing mounted there is not an error.
pub fn unmount(target: &Path) -> io::Result<()> {
    let target = c_path(target)?;
    // SAFETY: `target` is a valid NUL-terminated string that outlives the call.
    match check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } as libc::c_long) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        Err(e) => Err(e),
    }
}

// The layouts must match the kernel's exactly.
const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);
