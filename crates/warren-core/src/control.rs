//! Pythia's task control file (`/task/control`): one command per line, run in order.
//!
//! A line is split into arguments as a shell would, without any expansion: whitespace separates
//! arguments; single quotes keep everything literally; double quotes keep whitespace and allow
//! the escapes `\\`, `\"`, `\'`, `\n`, `\t`, `\r`, `\a`, `\b`, `\f`, `\v`, which also work outside
//! quotes (a backslash before anything else is kept); quoted and unquoted parts next to each
//! other make one argument. A line starting with `!` runs as the unprivileged worker user.
//! Blank lines are skipped.

use std::fmt;

/// Longest line accepted, in bytes (Pythia's limit).
pub const MAX_LINE: usize = 4096;
/// Most arguments on one line (Pythia's limit).
pub const MAX_ARGS: usize = 100;

/// Who runs a control line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlUser {
    /// A plain line: the task's input on stdin, its stdout and stderr are the output, and a
    /// non-zero exit stops the sequence.
    Master,
    /// A line starting with `!`: no input, no output, its exit status ignored.
    Worker,
}

/// One line of a control file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlStep {
    /// 1-based line number in the file.
    pub line: usize,
    /// Who runs it.
    pub user: ControlUser,
    /// The program and its arguments.
    pub argv: Vec<Vec<u8>>,
}

impl ControlStep {
    /// The line as a person would recognise it in messages.
    pub fn display(&self) -> String {
        let words: Vec<String> = self
            .argv
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let bang = if self.user == ControlUser::Worker {
            "!"
        } else {
            ""
        };
        format!("{bang}{}", words.join(" "))
    }
}

/// A control file that cannot be run, naming the line and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "control file line {}: {}", self.line, self.problem)
    }
}

impl std::error::Error for ControlError {}

/// Parses a whole control file.
pub fn parse(text: &[u8]) -> Result<Vec<ControlStep>, ControlError> {
    let mut steps = Vec::new();
    for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let err = |problem: &str| ControlError {
            line,
            problem: problem.to_string(),
        };
        if raw.len() > MAX_LINE {
            return Err(err(&format!("longer than {MAX_LINE} bytes")));
        }
        let (user, rest) = match raw.strip_prefix(b"!") {
            Some(rest) => (ControlUser::Worker, rest),
            None => (ControlUser::Master, raw),
        };
        let argv = split_args(rest).map_err(&err)?;
        if argv.is_empty() {
            if user == ControlUser::Worker {
                return Err(err("`!` without a command"));
            }
            continue;
        }
        if argv.len() > MAX_ARGS {
            return Err(err(&format!("more than {MAX_ARGS} arguments")));
        }
        if argv.iter().any(|a| a.contains(&0)) {
            return Err(err("contains a NUL byte"));
        }
        steps.push(ControlStep { line, user, argv });
    }
    Ok(steps)
}

/// The byte a backslash escape stands for, if `c` makes one.
fn escape(c: u8) -> Option<u8> {
    Some(match c {
        b'a' => 0x07,
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'v' => 0x0b,
        b'\\' | b'\'' | b'"' => c,
        _ => return None,
    })
}

/// Splits one line into arguments (see the module documentation).
pub fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut args = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        match (quote, c) {
            (None, b' ' | b'\t' | b'\r') => {
                if let Some(arg) = current.take() {
                    args.push(arg);
                }
            }
            (Some(q), _) if c == q => quote = None,
            (None, b'"' | b'\'') => {
                quote = Some(c);
                current.get_or_insert_with(Vec::new);
            }
            (Some(b'\''), _) => current.get_or_insert_with(Vec::new).push(c),
            (_, b'\\') => {
                let arg = current.get_or_insert_with(Vec::new);
                match line.get(i + 1).copied().and_then(escape) {
                    Some(byte) => {
                        arg.push(byte);
                        i += 1;
                    }
                    None => arg.push(c),
                }
            }
            _ => current.get_or_insert_with(Vec::new).push(c),
        }
        i += 1;
    }
    if quote.is_some() {
        return Err("unbalanced quotes");
    }
    if let Some(arg) = current {
        args.push(arg);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        match split_args(line.as_bytes()) {
            Ok(args) => args
                .into_iter()
                .map(|a| String::from_utf8_lossy(&a).into_owned())
                .collect(),
            Err(e) => vec![format!("ERR {e}")],
        }
    }

    #[test]
    fn splitting_follows_shell_quoting_without_expansion() {
        for (line, expected) in [
            ("/task/run.sh", vec!["/task/run.sh"]),
            ("  a   b\tc  ", vec!["a", "b", "c"]),
            ("a 'b c' d", vec!["a", "b c", "d"]),
            ("a \"b c\" d", vec!["a", "b c", "d"]),
            ("x'a b'y", vec!["xa by"]),
            ("'' \"\"", vec!["", ""]),
            (r#""say \"hi\"""#, vec![r#"say "hi""#]),
            (r"'no \n escape'", vec![r"no \n escape"]),
            (r"tab\there", vec!["tab\there"]),
            (r"keep\x", vec![r"keep\x"]),
            ("'it''s'", vec!["its"]),
            ("\"it's\"", vec!["it's"]),
            ("$HOME *", vec!["$HOME", "*"]),
            ("a 'b", vec!["ERR unbalanced quotes"]),
            ("\"a", vec!["ERR unbalanced quotes"]),
            ("", vec![]),
        ] {
            assert_eq!(words(line), expected, "{line:?}");
        }
    }

    #[test]
    fn lines_become_steps_for_master_or_worker() {
        let text = b"/task/compile.sh\n\n!/tmp/student arg\n  \n/task/check.sh 'a b'\n";
        let steps = match parse(text) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let summary: Vec<(usize, ControlUser, String)> = steps
            .iter()
            .map(|s| (s.line, s.user, s.display()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, ControlUser::Master, "/task/compile.sh".to_string()),
                (3, ControlUser::Worker, "!/tmp/student arg".to_string()),
                (5, ControlUser::Master, "/task/check.sh a b".to_string()),
            ]
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        let long = vec![b'a'; MAX_LINE + 1];
        let many = vec!["x"; MAX_ARGS + 1].join(" ");
        for (text, line, problem) in [
            (b"ok\n'open\n".to_vec(), 2, "unbalanced quotes".to_string()),
            (b"!\n".to_vec(), 1, "`!` without a command".to_string()),
            (long, 1, format!("longer than {MAX_LINE} bytes")),
            (
                many.into_bytes(),
                1,
                format!("more than {MAX_ARGS} arguments"),
            ),
            (b"a\0b\n".to_vec(), 1, "contains a NUL byte".to_string()),
        ] {
            assert_eq!(parse(&text), Err(ControlError { line, problem }));
        }
    }
}
