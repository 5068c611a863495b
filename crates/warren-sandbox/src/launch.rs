//! The launch message: what a prepared child needs to become a particular run (argv, env,
//! input files, rlimits), sent by the parent on the go pipe.
//!
//! The child decodes it without allocating: it maps anonymous memory for the message, reads it in
//! and builds the `argv`/`envp` pointer arrays in space the parent reserved inside the message.
//! All numbers are native-endian `u64` words; strings are NUL-terminated; every offset is from the
//! start of the message and 8-byte aligned where a word is read.
//!
//! Layout: `n_rlimits, (resource, value) * n_rlimits, argc, envc, n_files, program,
//! argv offsets * argc, env offsets * envc, (path, mode, data, len) * n_files, pointer area
//! offset`, then the strings and file contents, then `argc + envc + 2` zeroed words for the
//! pointer arrays.

use std::ffi::CStr;

/// A file or directory to create in the working directory before exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchFile {
    /// Absolute path inside the run.
    pub path: Vec<u8>,
    /// Mode bits; `libc::S_IFDIR` set for a directory.
    pub mode: u32,
    /// Contents (empty for a directory).
    pub contents: Vec<u8>,
}

/// What the parent decides per run, after the child is prepared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Launch {
    /// Resource limits.
    pub rlimits: Vec<(u32, u64)>,
    /// The resolved program path.
    pub program: Vec<u8>,
    /// Arguments, `argv[0]` first.
    pub argv: Vec<Vec<u8>>,
    /// `KEY=VALUE` strings.
    pub env: Vec<Vec<u8>>,
    /// Directories and files, parents before children.
    pub files: Vec<LaunchFile>,
}

fn push_word(out: &mut Vec<u8>, word: u64) {
    out.extend_from_slice(&word.to_ne_bytes());
}

fn set_word(out: &mut [u8], at: usize, word: u64) {
    out[at..at + 8].copy_from_slice(&word.to_ne_bytes());
}

impl Launch {
    /// Encodes the message (without its length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let header_words = 1
            + 2 * self.rlimits.len()
            + 3
            + 1
            + self.argv.len()
            + self.env.len()
            + 4 * self.files.len()
            + 1;
        let mut out = Vec::with_capacity(header_words * 8 + 256);
        push_word(&mut out, self.rlimits.len() as u64);
        for &(resource, value) in &self.rlimits {
            push_word(&mut out, u64::from(resource));
            push_word(&mut out, value);
        }
        push_word(&mut out, self.argv.len() as u64);
        push_word(&mut out, self.env.len() as u64);
        push_word(&mut out, self.files.len() as u64);
        let program_slot = out.len();
        push_word(&mut out, 0);
        let argv_slots = out.len();
        out.resize(out.len() + 8 * self.argv.len(), 0);
        let env_slots = out.len();
        out.resize(out.len() + 8 * self.env.len(), 0);
        let file_slots = out.len();
        out.resize(out.len() + 32 * self.files.len(), 0);
        let pointer_slot = out.len();
        push_word(&mut out, 0);

        let put_string = |out: &mut Vec<u8>, bytes: &[u8]| {
            let at = out.len() as u64;
            out.extend_from_slice(bytes);
            out.push(0);
            at
        };
        let at = put_string(&mut out, &self.program);
        set_word(&mut out, program_slot, at);
        for (i, arg) in self.argv.iter().enumerate() {
            let at = put_string(&mut out, arg);
            set_word(&mut out, argv_slots + 8 * i, at);
        }
        for (i, var) in self.env.iter().enumerate() {
            let at = put_string(&mut out, var);
            set_word(&mut out, env_slots + 8 * i, at);
        }
        for (i, file) in self.files.iter().enumerate() {
            let path = put_string(&mut out, &file.path);
            let data = out.len() as u64;
            out.extend_from_slice(&file.contents);
            let slot = file_slots + 32 * i;
            set_word(&mut out, slot, path);
            set_word(&mut out, slot + 8, u64::from(file.mode));
            set_word(&mut out, slot + 16, data);
            set_word(&mut out, slot + 24, file.contents.len() as u64);
        }
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let pointers = out.len() as u64;
        set_word(&mut out, pointer_slot, pointers);
        out.resize(out.len() + 8 * (self.argv.len() + self.env.len() + 2), 0);
        out
    }
}

/// A decoded message, borrowing the buffer it was read into. Built without allocation.
#[derive(Debug)]
pub struct Decoded<'a> {
    buf: &'a [u8],
    rlimits_at: usize,
    n_rlimits: usize,
    argc: usize,
    envc: usize,
    n_files: usize,
    program: usize,
    argv_at: usize,
    env_at: usize,
    files_at: usize,
    pointers: usize,
}

/// The message does not hold together (never produced by [`Launch::encode`]).
pub const MALFORMED: i32 = libc::EINVAL;

fn word(buf: &[u8], at: usize) -> Result<u64, i32> {
    let bytes = buf.get(at..at + 8).ok_or(MALFORMED)?;
    let mut array = [0u8; 8];
    array.copy_from_slice(bytes);
    Ok(u64::from_ne_bytes(array))
}

fn string(buf: &[u8], at: usize) -> Result<&CStr, i32> {
    CStr::from_bytes_until_nul(buf.get(at..).ok_or(MALFORMED)?).map_err(|_| MALFORMED)
}

impl<'a> Decoded<'a> {
    /// Reads the header.
    pub fn parse(buf: &'a [u8]) -> Result<Decoded<'a>, i32> {
        let n_rlimits = word(buf, 0)? as usize;
        let rlimits_at: usize = 8;
        let mut at = rlimits_at
            .checked_add(n_rlimits.checked_mul(16).ok_or(MALFORMED)?)
            .ok_or(MALFORMED)?;
        let argc = word(buf, at)? as usize;
        let envc = word(buf, at + 8)? as usize;
        let n_files = word(buf, at + 16)? as usize;
        let program = word(buf, at + 24)? as usize;
        at += 32;
        let argv_at = at;
        let env_at = argv_at
            .checked_add(argc.checked_mul(8).ok_or(MALFORMED)?)
            .ok_or(MALFORMED)?;
        let files_at = env_at
            .checked_add(envc.checked_mul(8).ok_or(MALFORMED)?)
            .ok_or(MALFORMED)?;
        let pointer_slot = files_at
            .checked_add(n_files.checked_mul(32).ok_or(MALFORMED)?)
            .ok_or(MALFORMED)?;
        let pointers = word(buf, pointer_slot)? as usize;
        let needed = pointers
            .checked_add((argc + envc + 2).checked_mul(8).ok_or(MALFORMED)?)
            .ok_or(MALFORMED)?;
        if needed > buf.len() || !pointers.is_multiple_of(8) {
            return Err(MALFORMED);
        }
        Ok(Decoded {
            buf,
            rlimits_at,
            n_rlimits,
            argc,
            envc,
            n_files,
            program,
            argv_at,
            env_at,
            files_at,
            pointers,
        })
    }

    /// The `i`th resource limit.
    pub fn rlimit(&self, i: usize) -> Result<(u32, u64), i32> {
        let at = self.rlimits_at + 16 * i;
        Ok((word(self.buf, at)? as u32, word(self.buf, at + 8)?))
    }

    /// How many resource limits.
    pub fn rlimit_count(&self) -> usize {
        self.n_rlimits
    }

    /// How many files.
    pub fn file_count(&self) -> usize {
        self.n_files
    }

    /// The `i`th file: (path, mode, contents).
    pub fn file(&self, i: usize) -> Result<(&'a CStr, u32, &'a [u8]), i32> {
        let at = self.files_at + 32 * i;
        let path = string(self.buf, word(self.buf, at)? as usize)?;
        let mode = word(self.buf, at + 8)? as u32;
        let data = word(self.buf, at + 16)? as usize;
        let len = word(self.buf, at + 24)? as usize;
        let contents = self
            .buf
            .get(data..data.checked_add(len).ok_or(MALFORMED)?)
            .ok_or(MALFORMED)?;
        Ok((path, mode, contents))
    }

    /// The program path.
    pub fn program(&self) -> Result<&'a CStr, i32> {
        string(self.buf, self.program)
    }

    /// Offset of the pointer area and the argument and environment counts, for
    /// [`fill_pointers`].
    pub fn pointer_layout(&self) -> (usize, usize, usize) {
        (self.pointers, self.argc, self.envc)
    }

    /// The offsets of the argument and environment strings, in order (`argv` then `env`).
    pub fn string_offset(&self, i: usize) -> Result<usize, i32> {
        let at = if i < self.argc {
            self.argv_at + 8 * i
        } else {
            self.env_at + 8 * (i - self.argc)
        };
        let offset = word(self.buf, at)? as usize;
        string(self.buf, offset)?; // bounds and termination checked once, here
        Ok(offset)
    }
}

/// Writes the `argv` and `envp` pointer arrays into the pointer area of a message that lives at
/// `base` (the buffer's address). Returns the byte offsets of the two arrays.
pub fn fill_pointers(buf: &mut [u8], base: usize) -> Result<(usize, usize), i32> {
    let decoded = Decoded::parse(buf)?;
    let (area, argc, envc) = decoded.pointer_layout();
    let mut offsets = [0usize; 2];
    offsets[0] = area;
    offsets[1] = area + 8 * (argc + 1);
    let count = argc + envc;
    // Two passes: offsets are read while `decoded` borrows the buffer, then written.
    for i in 0..count {
        let offset = Decoded::parse(buf)?.string_offset(i)?;
        let slot = if i < argc {
            area + 8 * i
        } else {
            area + 8 * (argc + 1) + 8 * (i - argc)
        };
        set_word(buf, slot, (base + offset) as u64);
    }
    set_word(buf, area + 8 * argc, 0);
    set_word(buf, area + 8 * (argc + 1) + 8 * envc, 0);
    Ok((offsets[0], offsets[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Launch {
        Launch {
            rlimits: vec![(4, 0), (7, 4096)],
            program: b"/bin/sh".to_vec(),
            argv: vec![b"sh".to_vec(), b"-c".to_vec(), b"echo hi".to_vec()],
            env: vec![b"PATH=/bin".to_vec()],
            files: vec![
                LaunchFile {
                    path: b"/tmp/d".to_vec(),
                    mode: libc::S_IFDIR | 0o755,
                    contents: Vec::new(),
                },
                LaunchFile {
                    path: b"/tmp/d/f".to_vec(),
                    mode: 0o644,
                    contents: b"data\0with nul".to_vec(),
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let launch = sample();
        let buf = launch.encode();
        let d = Decoded::parse(&buf).map_err(|e| e.to_string());
        let Ok(d) = d else { panic!("parse") };
        assert_eq!((d.rlimit_count(), d.rlimit(1)), (2, Ok((7, 4096))));
        assert_eq!(d.program().map(CStr::to_bytes), Ok(&b"/bin/sh"[..]));
        assert_eq!(d.file_count(), 2);
        let (path, mode, contents) = d.file(1).unwrap_or((c"", 0, b""));
        assert_eq!(
            (path.to_bytes(), mode, contents),
            (&b"/tmp/d/f"[..], 0o644, &b"data\0with nul"[..])
        );
    }

    #[test]
    fn pointers_point_at_the_strings() {
        let mut buf = sample().encode();
        let base = buf.as_ptr() as usize;
        let Ok((argv, envp)) = fill_pointers(&mut buf, base) else {
            panic!("fill")
        };
        let read = |at: usize| word(&buf, at).unwrap_or(0) as usize;
        let text = |ptr: usize| {
            string(&buf, ptr - base)
                .map(|s| s.to_bytes().to_vec())
                .unwrap_or_default()
        };
        assert_eq!(text(read(argv)), b"sh");
        assert_eq!(text(read(argv + 16)), b"echo hi");
        assert_eq!(read(argv + 24), 0);
        assert_eq!(text(read(envp)), b"PATH=/bin");
        assert_eq!(read(envp + 8), 0);
    }

    #[test]
    fn truncated_messages_are_refused() {
        let buf = sample().encode();
        for len in [0, 7, 16, 40, buf.len() - 1] {
            assert!(Decoded::parse(&buf[..len]).is_err(), "length {len}");
        }
    }
}
