//! `multiline` on a file input: which lines start a record and which continue the
//! one before.
//!
//! A [`Multiline`] decides line by line, carrying a small [`State`] through one
//! record. Either a `start_pattern` (a line matching it starts a record, any other
//! continues) or a `preset` for the stack traces of a runtime:
//!
//! - `java`: lines starting with a space or tab (`\tat …`, `\t... 5 more`) and
//!   `Caused by:` / `Suppressed:` lines continue.
//! - `python`: indented lines continue; `Traceback (most recent call last):` continues
//!   the record before it (the message `logging.exception` writes ahead of it);
//!   inside a traceback the exception line (`ValueError: …`) continues it, and after
//!   it blank lines, `During handling of the above exception…`, `The above exception
//!   was the direct cause…` and the next `Traceback` keep chained exceptions in one
//!   record.
//! - `go`: a `panic:` or `fatal error:` line starts a trace that everything of the
//!   goroutine dump continues (blank lines, `goroutine N [...]:`, function lines
//!   ending in `)`, indented file lines, `created by`, `[signal …`, `exit status`).
//! - `ruby`: indented lines continue (`\tfrom app.rb:5:in …`).
//!
//! Blank lines that end a record are dropped from its message.

use std::time::Duration;

use regex::bytes::Regex;

/// How lines group into records.
#[derive(Debug, Clone)]
pub struct Multiline {
    pub rule: Rule,
    /// An unfinished record is sent when no line came for this long.
    pub timeout: Duration,
    /// A record is cut (and marked partial) after this many lines…
    pub max_lines: usize,
    /// …or before it would grow past this many bytes.
    pub max_bytes: usize,
}

#[derive(Debug, Clone)]
pub enum Rule {
    Pattern(Regex),
    Java,
    Python,
    Go,
    Ruby,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Rule::Pattern(a), Rule::Pattern(b)) => a.as_str() == b.as_str(),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl Rule {
    /// The preset named `name`.
    pub fn preset(name: &str) -> Option<Rule> {
        Some(match name {
            "java" => Rule::Java,
            "python" => Rule::Python,
            "go" => Rule::Go,
            "ruby" => Rule::Ruby,
            _ => return None,
        })
    }
}

/// Where a record stands, for the rules that need more than the line itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum State {
    #[default]
    Plain,
    /// Python: inside a traceback's frames.
    Traceback,
    /// Python: after a traceback's exception line.
    AfterException,
    /// Go: inside a panic's goroutine dump.
    GoTrace,
}

fn indented(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

const TRACEBACK: &[u8] = b"Traceback (most recent call last):";

impl Multiline {
    /// The state a record starting with `line` begins in.
    pub fn first(&self, line: &[u8]) -> State {
        match self.rule {
            Rule::Python if line.starts_with(TRACEBACK) => State::Traceback,
            Rule::Go if go_panic(line) => State::GoTrace,
            _ => State::Plain,
        }
    }

    /// Whether `line` continues the record whose state is `st` (updated), or starts
    /// a new one.
    pub fn continues(&self, st: &mut State, line: &[u8]) -> bool {
        match &self.rule {
            Rule::Pattern(re) => !re.is_match(line),
            Rule::Java => {
                indented(line)
                    || line.starts_with(b"Caused by:")
                    || line.starts_with(b"Suppressed:")
            }
            Rule::Ruby => indented(line),
            Rule::Python => python(st, line),
            Rule::Go => {
                if *st == State::GoTrace {
                    go_dump(line)
                } else if indented(line) {
                    true
                } else if go_panic(line) {
                    // A panic is its own record, whatever was logged before it.
                    *st = State::GoTrace;
                    false
                } else {
                    false
                }
            }
        }
    }
}

fn python(st: &mut State, line: &[u8]) -> bool {
    if line.starts_with(TRACEBACK) {
        *st = State::Traceback;
        return true;
    }
    match *st {
        State::Traceback => {
            if !indented(line) && !line.is_empty() {
                // The exception line that ends the frames.
                *st = State::AfterException;
            }
            true
        }
        State::AfterException => {
            line.is_empty()
                || indented(line)
                || line.starts_with(b"During handling of the above exception")
                || line.starts_with(b"The above exception was the direct cause")
        }
        State::Plain | State::GoTrace => indented(line),
    }
}

fn go_panic(line: &[u8]) -> bool {
    line.starts_with(b"panic: ") || line.starts_with(b"fatal error: ")
}

fn go_dump(line: &[u8]) -> bool {
    line.is_empty()
        || indented(line)
        || line.ends_with(b")")
        || line.ends_with(b"]:")
        || [
            &b"goroutine "[..],
            b"created by ",
            b"[signal ",
            b"exit status ",
            b"panic: ",
            b"fatal error: ",
            b"runtime stack:",
            b"...additional frames elided...",
        ]
        .iter()
        .any(|p| line.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Group `text`'s lines into records by `rule`.
    fn group(rule: Rule, text: &str) -> Vec<String> {
        let m = Multiline {
            rule,
            timeout: Duration::from_secs(1),
            max_lines: 500,
            max_bytes: 1 << 20,
        };
        let mut out: Vec<Vec<&str>> = Vec::new();
        let mut st = State::Plain;
        for line in text.lines() {
            if !out.is_empty() && m.continues(&mut st, line.as_bytes()) {
                out.last_mut().unwrap().push(line);
            } else {
                st = m.first(line.as_bytes());
                out.push(vec![line]);
            }
        }
        out.into_iter()
            .map(|r| r.join("\n").trim_end_matches('\n').to_owned())
            .collect()
    }

    #[test]
    fn java_keeps_caused_by_and_more_lines() {
        let text = "2024-01-01 INFO start\n\
Exception in thread \"main\" java.lang.RuntimeException: outer\n\
\tat Main.main(Main.java:5)\n\
Caused by: java.lang.IllegalStateException: inner\n\
\tat Main.inner(Main.java:10)\n\
\t... 1 more\n\
2024-01-01 INFO next\n";
        let r = group(Rule::Java, text);
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r[1].starts_with("Exception in thread") && r[1].ends_with("... 1 more"));
        assert_eq!(r[1].lines().count(), 5);
    }

    #[test]
    fn python_keeps_chained_tracebacks_together() {
        let text = [
            "ERROR boom",
            "Traceback (most recent call last):",
            "  File \"a.py\", line 3, in f",
            "    d['x']",
            "KeyError: 'x'",
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            "Traceback (most recent call last):",
            "  File \"a.py\", line 5, in <module>",
            "    raise ValueError('bad')",
            "ValueError: bad",
            "",
            "INFO after",
            "WARNING other",
        ]
        .join("\n");
        let text = text.as_str();
        let r = group(Rule::Python, text);
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r[0].starts_with("ERROR boom\nTraceback") && r[0].ends_with("ValueError: bad"));
        assert_eq!(r[1], "INFO after");
    }

    #[test]
    fn go_panic_dump_is_one_record() {
        let text = "2024/01/01 serving\n\
panic: runtime error: index out of range [3] with length 2\n\
\n\
goroutine 1 [running]:\n\
main.f(...)\n\
\t/tmp/x.go:8\n\
main.main()\n\
\t/tmp/x.go:12 +0x1d\n\
exit status 2\n\
2024/01/01 restarted\n";
        let r = group(Rule::Go, text);
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r[1].starts_with("panic: ") && r[1].ends_with("exit status 2"));
    }

    #[test]
    fn ruby_and_pattern() {
        let r = group(
            Rule::Ruby,
            "app.rb:2:in 'foo': boom (RuntimeError)\n\tfrom app.rb:5:in '<main>'\nok\n",
        );
        assert_eq!(r.len(), 2);
        let re = Regex::new(r"^\d{4}-").unwrap();
        let r = group(Rule::Pattern(re), "2024-1 a\nb\nc\n2024-2 d\n");
        assert_eq!(r, ["2024-1 a\nb\nc", "2024-2 d"]);
    }
}
