//! `format: cri | docker` on a file input: the lines container runtimes write.
//!
//! - CRI (containerd, CRI-O; `/var/log/pods/…`): `TIME STREAM TAG MESSAGE`, where
//!   TIME is RFC 3339 with nanoseconds, STREAM `stdout` or `stderr` and TAG `F` for
//!   the last piece of a line or `P` for a piece the runtime split off a long line
//!   (tags may carry more flags after a `:`).
//! - Docker's json-file driver: `{"log":"…\n","stream":"stdout","time":"…"}`, where
//!   a `log` without its trailing newline is a piece of a longer line (Docker splits
//!   at 16 KiB).
//!
//! Pieces are merged by the reader into one line before `multiline` and `parse`.
//! Paths under `/var/log/pods/NAMESPACE_POD_UID/CONTAINER/` or
//! `/var/log/containers/POD_NAMESPACE_CONTAINER-ID.log` name the pod
//! ([`k8s_fields`]).

use std::borrow::Cow;

use serde::Deserialize;

/// Which runtime's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Cri,
    Docker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The record fields that name it.
    pub fn fields(self) -> &'static [u8] {
        match self {
            Stream::Stdout => br#"{"stream":"stdout"}"#,
            Stream::Stderr => br#"{"stream":"stderr"}"#,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn parse(s: &[u8]) -> Option<Stream> {
        match s {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// One runtime line, decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct Piece<'a> {
    pub time_ms: Option<i64>,
    pub stream: Stream,
    /// More pieces of the same line follow.
    pub partial: bool,
    pub message: Cow<'a, [u8]>,
}

impl Format {
    /// Decode one line (without its newline); `Err` says why it is not one.
    pub fn decode<'a>(self, line: &'a [u8]) -> Result<Piece<'a>, &'static str> {
        match self {
            Format::Cri => cri(line),
            Format::Docker => docker(line),
        }
    }
}

fn cri(line: &[u8]) -> Result<Piece<'_>, &'static str> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let (Some(time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("not a CRI log line (TIME STREAM TAG MESSAGE)");
    };
    let message = parts.next().unwrap_or_default();
    let stream =
        Stream::parse(stream).ok_or("not a CRI log line: stream is not stdout or stderr")?;
    let partial = match tag.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err("not a CRI log line: tag is not P or F"),
    };
    let time_ms = std::str::from_utf8(time)
        .ok()
        .and_then(|t| tributary_common::timefmt::parse_ms(t).ok());
    if time_ms.is_none() {
        return Err("not a CRI log line: time is not RFC 3339");
    }
    Ok(Piece {
        time_ms,
        stream,
        partial,
        message: Cow::Borrowed(message),
    })
}

#[derive(Deserialize)]
struct DockerLine<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow, default)]
    stream: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
}

fn docker(line: &[u8]) -> Result<Piece<'_>, &'static str> {
    let d: DockerLine<'_> =
        serde_json::from_slice(line).map_err(|_| "not a Docker json-file line")?;
    let stream = match d.stream.as_deref() {
        Some("stderr") => Stream::Stderr,
        _ => Stream::Stdout,
    };
    let time_ms = d
        .time
        .as_deref()
        .and_then(|t| tributary_common::timefmt::parse_ms(t).ok());
    let (message, partial) = match d.log {
        Cow::Borrowed(s) => match s.strip_suffix('\n') {
            Some(m) => (
                Cow::Borrowed(m.strip_suffix('\r').unwrap_or(m).as_bytes()),
                false,
            ),
            None => (Cow::Borrowed(s.as_bytes()), true),
        },
        Cow::Owned(mut s) => {
            let partial = !s.ends_with('\n');
            if !partial {
                s.pop();
                if s.ends_with('\r') {
                    s.pop();
                }
            }
            (Cow::Owned(s.into_bytes()), partial)
        }
    };
    Ok(Piece {
        time_ms,
        stream,
        partial,
        message,
    })
}

/// The Kubernetes namespace, pod and container a log path names (the reader puts
/// them in `fields.k8s`: `k8s.namespace`, `k8s.pod`, `k8s.container`), for the two
/// layouts kubelet writes; `None` for other paths.
pub fn k8s_fields(path: &str) -> Option<[(&'static str, String); 3]> {
    if let Some(i) = path.find("/var/log/pods/") {
        // NAMESPACE_POD_UID/CONTAINER/N.log: names and namespaces hold no `_`.
        let mut rest = path[i + "/var/log/pods/".len()..].split('/');
        let (pod_dir, container) = (rest.next()?, rest.next()?);
        rest.next()?;
        let mut p = pod_dir.splitn(3, '_');
        let (ns, pod, _uid) = (p.next()?, p.next()?, p.next()?);
        return (!ns.is_empty() && !pod.is_empty() && !container.is_empty()).then(|| {
            [
                ("namespace", ns.to_owned()),
                ("pod", pod.to_owned()),
                ("container", container.to_owned()),
            ]
        });
    }
    if let Some(i) = path.find("/var/log/containers/") {
        // POD_NAMESPACE_CONTAINER-ID.log, ID 64 hex digits.
        let name = path[i + "/var/log/containers/".len()..].strip_suffix(".log")?;
        if name.contains('/') {
            return None;
        }
        let mut p = name.splitn(3, '_');
        let (pod, ns, rest) = (p.next()?, p.next()?, p.next()?);
        let (container, id) = rest.rsplit_once('-')?;
        let hex = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
        return (hex && !pod.is_empty() && !ns.is_empty() && !container.is_empty()).then(|| {
            [
                ("namespace", ns.to_owned()),
                ("pod", pod.to_owned()),
                ("container", container.to_owned()),
            ]
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines() {
        let p = Format::Cri
            .decode(b"2016-10-06T00:17:09.669794202Z stdout P log content 1")
            .unwrap();
        assert!(p.partial);
        assert_eq!(p.stream, Stream::Stdout);
        assert_eq!(p.time_ms, Some(1_475_713_029_669));
        assert_eq!(&*p.message, b"log content 1");
        let p = Format::Cri
            .decode(b"2016-10-06T00:17:10.113242941+02:00 stderr F")
            .unwrap();
        assert!(!p.partial);
        assert_eq!(p.stream, Stream::Stderr);
        assert_eq!(&*p.message, b"");
        let p = Format::Cri
            .decode(b"2016-10-06T00:17:10Z stdout F  two  spaces ")
            .unwrap();
        assert_eq!(&*p.message, b" two  spaces ");
        assert!(Format::Cri.decode(b"hello world").is_err());
        assert!(
            Format::Cri
                .decode(b"2016-10-06T00:17:10Z stdin F x")
                .is_err()
        );
        assert!(Format::Cri.decode(b"yesterday stdout F x").is_err());
    }

    #[test]
    fn docker_lines() {
        let p = Format::Docker
            .decode(br#"{"log":"hello \"world\"\n","stream":"stderr","time":"2019-04-30T06:42:13.123456789Z"}"#)
            .unwrap();
        assert!(!p.partial);
        assert_eq!(p.stream, Stream::Stderr);
        assert_eq!(&*p.message, br#"hello "world""#);
        assert_eq!(p.time_ms, Some(1_556_606_533_123));
        let p = Format::Docker
            .decode(br#"{"log":"first half","stream":"stdout","time":"2019-04-30T06:42:13Z"}"#)
            .unwrap();
        assert!(p.partial);
        assert_eq!(&*p.message, b"first half");
        assert!(Format::Docker.decode(b"plain text").is_err());
    }

    #[test]
    fn kubernetes_paths() {
        let f = k8s_fields(
            "/var/log/pods/prod_web-7d4b9_0f6e4c1a-1111-2222-3333-444455556666/nginx/0.log",
        )
        .unwrap();
        assert_eq!(f[0].1, "prod");
        assert_eq!(f[1].1, "web-7d4b9");
        assert_eq!(f[2].1, "nginx");
        let id = "a".repeat(64);
        let f = k8s_fields(&format!(
            "/host/var/log/containers/web-7d4b9_prod_nginx-{id}.log"
        ))
        .unwrap();
        assert_eq!(
            (f[0].1.as_str(), f[1].1.as_str(), f[2].1.as_str()),
            ("prod", "web-7d4b9", "nginx")
        );
        assert!(k8s_fields("/var/log/containers/foo.log").is_none());
        assert!(k8s_fields("/var/log/syslog").is_none());
    }
}
