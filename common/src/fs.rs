//! Small files replaced whole, durably: checkpoints, consumer groups, topic
//! metadata, deduplication snapshots, spooled batches.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Which step of [`write_atomic`] failed, on which file.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {}", path.display())]
pub struct WriteError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Replace `path` with `bytes` so that after a crash it holds either the old
/// content or all of the new, and the new survives once this returns: write
/// `<path>.tmp`, fsync it, rename it over `path`, fsync the directory. A failed
/// write removes the temporary file; one a crash leaves behind ends in `.tmp` for
/// the owner to sweep at start-up.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let fail = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| WriteError { op, path, source }
    };
    let written = std::fs::File::create(&tmp)
        .map_err(fail("create", &tmp))
        .and_then(|mut f| {
            f.write_all(bytes).map_err(fail("write", &tmp))?;
            f.sync_all().map_err(fail("fsync", &tmp))
        })
        .and_then(|()| std::fs::rename(&tmp, path).map_err(fail("rename", &tmp)));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[test]
    fn a_failed_write_names_the_step_and_file_and_keeps_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old").unwrap();
        // A directory where the temporary file should go: `create` fails.
        std::fs::create_dir_all(dir.path().join("state.json.tmp")).unwrap();
        let e = write_atomic(&path, b"new").unwrap_err();
        assert_eq!(e.op, "create");
        assert!(e.to_string().contains("state.json.tmp"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }
}
