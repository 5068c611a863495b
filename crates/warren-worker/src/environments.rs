//! The environments a worker offers, found in its environments directory: each subdirectory
//! `NAME` is a directory tree, each file `NAME.sfs` a squashfs image; `host` (the host's own
//! system directories) is always offered. A directory and an image with the same name: the
//! directory is used. Entries with names that are not valid environment names are skipped and
//! logged; hidden entries (a build in progress) are skipped silently.

use std::path::{Path, PathBuf};

use serde::Serialize;
use warren_core::environment::{self, HOST, IMAGE_SUFFIX};

/// What an environment is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentKind {
    /// The host's own system directories, read-only.
    Host,
    /// A directory tree, used read-only as `/`.
    Directory,
    /// A squashfs image, mounted read-only as `/`.
    Squashfs,
}

impl std::fmt::Display for EnvironmentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EnvironmentKind::Host => "host",
            EnvironmentKind::Directory => "directory",
            EnvironmentKind::Squashfs => "squashfs",
        })
    }
}

/// One environment a worker offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Environment {
    /// Its name, as tasks give it.
    pub name: String,
    /// What it is made of.
    pub kind: EnvironmentKind,
    /// The directory or image (`/` for the host).
    pub path: PathBuf,
    /// Its size: for a directory the sum of its regular files' sizes (symlinks not followed), for
    /// an image the file's size. `None` when not measured: the host, and a directory found by
    /// [`resolve`] (which does not walk it).
    pub size_bytes: Option<u64>,
}

impl Environment {
    /// The host's own system directories.
    pub fn host() -> Environment {
        Environment {
            name: HOST.to_string(),
            kind: EnvironmentKind::Host,
            path: PathBuf::from("/"),
            size_bytes: None,
        }
    }
}

/// Why environments could not be listed or one could not be found.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// Reading the directory (or measuring an environment in it) failed.
    // The cause is part of the message, not a separate source, so chains print it once.
    #[error("{}: {error}", .path.display())]
    Io {
        /// What was being read.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The name is not a valid environment name.
    #[error("{0}")]
    InvalidName(String),
    /// No environment of that name in the directory.
    #[error("this worker has no environment `{name}` in {dir} (it offers: {offered})", dir = .dir.display())]
    NotFound {
        /// The name asked for.
        name: String,
        /// The environments directory.
        dir: PathBuf,
        /// What it offers, comma-separated.
        offered: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EnvError + '_ {
    move |error| EnvError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// The environments in `dir` (not `host`), sorted by name, with their sizes. Skips (and logs)
/// entries whose names are not valid environment names.
pub fn scan(dir: &Path) -> Result<Vec<Environment>, EnvError> {
    let mut found = entries(dir)?;
    for env in &mut found {
        env.size_bytes = Some(match env.kind {
            EnvironmentKind::Directory => tree_size(&env.path)?,
            _ => std::fs::metadata(&env.path).map_err(io(&env.path))?.len(),
        });
    }
    Ok(found)
}

/// Everything a worker with environments directory `dir` offers: `host` first, then [`scan`].
pub fn list(dir: Option<&Path>) -> Result<Vec<Environment>, EnvError> {
    let mut all = vec![Environment::host()];
    if let Some(dir) = dir {
        all.extend(scan(dir)?);
    }
    Ok(all)
}

/// The names a worker registers with: `host`, then what `dir` holds (sorted). Nothing is
/// measured. A directory that does not exist offers nothing more; one that cannot be read is
/// logged and offers nothing more.
pub fn advertised(dir: Option<&Path>) -> Vec<String> {
    let mut names = vec![HOST.to_string()];
    if let Some(dir) = dir {
        match entries(dir) {
            Ok(found) => names.extend(found.into_iter().map(|e| e.name)),
            Err(EnvError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("environments: {e}"),
        }
    }
    names
}

/// The environment `name` of a worker whose environments directory is `dir`: `host`, the
/// directory `dir/NAME`, or the image `dir/NAME.sfs` (a directory wins). A directory is not
/// measured (`size_bytes` is `None`); an image is.
pub fn resolve(dir: &Path, name: &str) -> Result<Environment, EnvError> {
    environment::check_name(name).map_err(EnvError::InvalidName)?;
    if name == HOST {
        return Ok(Environment::host());
    }
    let tree = dir.join(name);
    if tree.is_dir() {
        return Ok(Environment {
            name: name.to_string(),
            kind: EnvironmentKind::Directory,
            path: tree,
            size_bytes: None,
        });
    }
    let image = dir.join(format!("{name}{IMAGE_SUFFIX}"));
    if let Ok(meta) = std::fs::metadata(&image) {
        if meta.is_file() {
            return Ok(Environment {
                name: name.to_string(),
                kind: EnvironmentKind::Squashfs,
                path: image,
                size_bytes: Some(meta.len()),
            });
        }
    }
    Err(EnvError::NotFound {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        offered: advertised(Some(dir)).join(", "),
    })
}

/// The environments in `dir`, sorted, unmeasured.
fn entries(dir: &Path) -> Result<Vec<Environment>, EnvError> {
    let mut found: Vec<Environment> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
            tracing::warn!(
                "environments: skipping {}: the name is not UTF-8",
                path.display()
            );
            continue;
        };
        if file_name.starts_with('.') {
            continue; // hidden: a build in progress, or not ours
        }
        // Symlinks to an environment elsewhere are followed.
        let Ok(meta) = std::fs::metadata(&path) else {
            tracing::warn!("environments: skipping {}: cannot stat it", path.display());
            continue;
        };
        let kind = if meta.is_dir() {
            EnvironmentKind::Directory
        } else if meta.is_file() {
            EnvironmentKind::Squashfs
        } else {
            continue;
        };
        let name = match environment::name_of_entry(&file_name, meta.is_dir()) {
            None => continue, // a file that is not an image
            Some(Err(problem)) => {
                tracing::warn!("environments: skipping {}: {problem}", path.display());
                continue;
            }
            Some(Ok(name)) => name.to_string(),
        };
        if name == HOST {
            tracing::warn!(
                "environments: skipping {}: `host` is the host's own system directories",
                path.display()
            );
            continue;
        }
        found.push(Environment {
            name,
            kind,
            path,
            size_bytes: None,
        });
    }
    // A directory before an image of the same name; the image is then dropped.
    found.sort_by(|a, b| {
        (a.name.as_str(), a.kind != EnvironmentKind::Directory)
            .cmp(&(b.name.as_str(), b.kind != EnvironmentKind::Directory))
    });
    found.dedup_by(|later, first| {
        let same = later.name == first.name;
        if same {
            tracing::warn!(
                "environments: {} is hidden by the directory {}",
                later.path.display(),
                first.path.display()
            );
        }
        same
    });
    Ok(found)
}

/// The sum of the sizes of the regular files under `dir`, symlinks not followed.
pub fn tree_size(dir: &Path) -> Result<u64, EnvError> {
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let kind = entry.file_type().map_err(io(&dir))?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let path = entry.path();
                total += entry.metadata().map_err(io(&path))?.len();
            }
        }
    }
    Ok(total)
}
