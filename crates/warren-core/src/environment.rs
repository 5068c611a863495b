//! Environments: the named root filesystems a worker offers. `host` is the host's own system
//! directories (read-only), offered by every Warren worker; the others are directory trees and
//! squashfs images (`NAME.sfs`) in the worker's environments directory.
//!
//! One rule for names, used where a task names an environment and where a worker finds one, so a
//! name that reaches a path is always a single, ordinary path component.

/// The environment of the host's own system directories.
pub const HOST: &str = "host";

/// File-name suffix of a squashfs image: environment `NAME` is `NAME.sfs`.
pub const IMAGE_SUFFIX: &str = ".sfs";

/// Longest environment name, in bytes (with [`IMAGE_SUFFIX`] it still fits a file name).
pub const MAX_NAME_LEN: usize = 128;

/// Checks an environment name: 1..=[`MAX_NAME_LEN`] ASCII letters, digits, `.`, `_`, `-`; not
/// starting with `.` or `-` (hidden files, flags), no `..`, not ending in [`IMAGE_SUFFIX`] (that is
/// how an image's file is named, so the mapping between names and files stays one to one).
/// The error says what is wrong, naming the name.
pub fn check_name(name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME_LEN {
        "is longer than 128 bytes"
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        "may hold only letters, digits, `.`, `_` and `-`"
    } else if name.starts_with('.') || name.starts_with('-') {
        "must not start with `.` or `-`"
    } else if name.contains("..") {
        "must not contain `..`"
    } else if name.ends_with(IMAGE_SUFFIX) {
        "must not end in `.sfs` (an image `NAME.sfs` is offered as `NAME`)"
    } else {
        return Ok(());
    };
    let shown: String = name.chars().take(MAX_NAME_LEN + 8).collect();
    Err(format!("environment name `{shown}` {problem}"))
}

/// The environment a file in an environments directory offers: a directory's name, or an image's
/// name without [`IMAGE_SUFFIX`]. `None` for other files (not an environment, nothing to say);
/// `Some(Err)` for a directory or image whose name is not valid.
pub fn name_of_entry(file_name: &str, is_dir: bool) -> Option<Result<&str, String>> {
    let name = if is_dir {
        file_name
    } else {
        file_name.strip_suffix(IMAGE_SUFFIX)?
    };
    Some(check_name(name).map(|()| name))
}

/// Whether a worker offering `offered` can run a task in environment `name`. `None` means a plain
/// Pythia pool, which does not say and is given any; `host` is always offered.
pub fn offered(name: &str, offered: Option<&[String]>) -> bool {
    name == HOST || offered.is_none_or(|list| list.iter().any(|e| e == name))
}

/// Why a task's environment `name` is refused at submission when no known worker offers it:
/// names it and what the workers do offer (`host` included).
pub fn not_offered_message<'a>(
    name: &str,
    all_offered: impl IntoIterator<Item = &'a str>,
) -> String {
    let mut names: Vec<&str> = all_offered.into_iter().chain([HOST]).collect();
    names.sort_unstable();
    names.dedup();
    format!(
        "no worker offers environment `{name}`; offered: {}",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let long = "a".repeat(MAX_NAME_LEN);
        let too_long = "a".repeat(MAX_NAME_LEN + 1);
        for (name, problem) in [
            ("busybox", None),
            ("debian-12_python3.11", None),
            ("A1", None),
            (long.as_str(), None),
            ("", Some("is empty")),
            (too_long.as_str(), Some("longer than 128")),
            ("a/b", Some("letters, digits")),
            ("/abs", Some("letters, digits")),
            ("..", Some("must not start with `.`")),
            (".hidden", Some("must not start with `.`")),
            ("-rf", Some("must not start")),
            ("a..b", Some("must not contain `..`")),
            ("a b", Some("letters, digits")),
            ("caf\u{e9}", Some("letters, digits")),
            ("nul\0", Some("letters, digits")),
            ("img.sfs", Some("must not end in `.sfs`")),
            ("host", None),
        ] {
            let got = check_name(name);
            match problem {
                None => assert_eq!(got, Ok(()), "{name:?}"),
                Some(p) => {
                    let message = got.err().unwrap_or_default();
                    assert!(message.contains(p), "{name:?}: {message}");
                    assert!(message.starts_with("environment name `"), "{message}");
                }
            }
        }
    }

    #[test]
    fn entries_map_to_names() {
        for (file, is_dir, want) in [
            ("busybox", true, Some(Ok("busybox"))),
            ("debian.sfs", false, Some(Ok("debian"))),
            ("notes.txt", false, None),
            ("debian.sfs", true, Some(Err(()))),
            (".debian.build-12", true, Some(Err(()))),
            ("a b.sfs", false, Some(Err(()))),
            (".sfs", false, Some(Err(()))),
        ] {
            let got = name_of_entry(file, is_dir).map(|r| r.map_err(|_| ()));
            assert_eq!(got, want, "{file} (dir: {is_dir})");
        }
    }

    #[test]
    fn host_is_always_offered_and_pools_take_any() {
        let list = ["busybox".to_string()];
        for (name, offer, want) in [
            ("host", Some(&[][..]), true),
            ("busybox", Some(&list[..]), true),
            ("debian", Some(&list[..]), false),
            ("debian", None, true),
        ] {
            assert_eq!(offered(name, offer), want, "{name} in {offer:?}");
        }
        assert_eq!(
            not_offered_message("debian", ["busybox", "alpine", "busybox"]),
            "no worker offers environment `debian`; offered: alpine, busybox, host"
        );
    }
}
