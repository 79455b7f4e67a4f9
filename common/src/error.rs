//! Error reports for people: an error and its causes on one line, each cause said
//! once.
//!
//! Many errors print their cause in their own message *and* return it from
//! [`Error::source`](std::error::Error::source), so walking the chain naively
//! repeats it (`… (os error 98): … (os error 98)`). [`report`] skips a cause whose
//! text the line already holds.

use std::error::Error;
use std::fmt::Write as _;

/// `error: cause: cause …`, every distinct cause once.
pub fn report(e: &(dyn Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            let _ = write!(line, ": {text}");
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:7400: {source}")]
    struct Bind {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("collector")]
    struct Outer {
        #[source]
        inner: Bind,
    }

    #[test]
    fn each_cause_once() {
        let io = std::io::Error::from_raw_os_error(98);
        let e = Outer {
            inner: Bind { source: io },
        };
        let text = report(&e);
        assert_eq!(text.matches("os error 98").count(), 1, "{text}");
        assert!(text.starts_with("collector: cannot listen on 127.0.0.1:7400: "));
    }
}
