//! Names the agent, the collector and its clients must spell the same way: topic
//! names (which are also directory names in the store) and syslog severities
//! (written by the syslog input, matched by queries).

/// Whether `name` is a valid topic name: `[A-Za-z0-9._-]{1,249}`, not `.` or `..`
/// (Kafka's rule). Such a name is always a single, safe path component.
pub fn valid_topic_name(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Syslog severities, most severe first (RFC 5424 numbering), as syslog(3) and
/// `logger -p` spell them.
pub const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// The name of severity `s` (`unknown` above 7).
pub fn severity_name(s: u8) -> &'static str {
    SEVERITIES.get(usize::from(s)).copied().unwrap_or("unknown")
}

/// The severity number of a name (case-insensitive, with the usual aliases such as
/// `error` and `warn`) or of a digit 0-7.
pub fn severity_level(s: &str) -> Option<u8> {
    const ALIASES: [(&str, u8); 6] = [
        ("emergency", 0),
        ("panic", 0),
        ("critical", 2),
        ("error", 3),
        ("warn", 4),
        ("informational", 6),
    ];
    let s = s.trim();
    if let Some(i) = SEVERITIES.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return u8::try_from(i).ok();
    }
    if let Some((_, l)) = ALIASES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
        return Some(*l);
    }
    s.parse::<u8>().ok().filter(|n| *n < 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in [
            "a",
            "app",
            "A-b_c.d",
            "..a",
            "a..",
            "...",
            "0",
            &"x".repeat(249),
        ] {
            assert!(valid_topic_name(ok), "{ok:?} refused");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "/a",
            "a\\b",
            "a b",
            "é",
            "日本",
            "a\0",
            "a:b",
            &"x".repeat(250),
        ] {
            assert!(!valid_topic_name(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn severities_round_trip_and_aliases_resolve() {
        for s in 0..8u8 {
            assert_eq!(severity_level(severity_name(s)), Some(s));
            assert_eq!(severity_level(&s.to_string()), Some(s));
        }
        assert_eq!(severity_name(8), "unknown");
        assert_eq!(severity_level("ERROR"), Some(3));
        assert_eq!(severity_level(" warn "), Some(4));
        assert_eq!(severity_level("panic"), Some(0));
        assert_eq!(severity_level("informational"), Some(6));
        assert_eq!(severity_level("8"), None);
        assert_eq!(severity_level("loud"), None);
    }
}
