//! Tokens: the join token workers present on the queue port and the bearer token API clients
//! present, each generated on first start into the data directory (mode 0600).

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A token file could not be read or made.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct TokenError {
    path: PathBuf,
    source: std::io::Error,
}

/// Reads the token in `path`, generating a random one there when the file does not exist.
pub fn load_or_create(path: &Path) -> Result<String, TokenError> {
    let err = |source| TokenError {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(text.trim().to_string()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        Err(_) => {}
    }
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(err)?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    file.write_all(format!("{token}\n").as_bytes())
        .map_err(err)?;
    Ok(token)
}
