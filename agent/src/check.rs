//! `tributary-agent --check-config`: what the configuration would do on this host,
//! without starting anything. Loading the config already checked its syntax, keys,
//! globs and certificates (errors name file, line, column and key); this adds what
//! only the host can tell: which files each input matches, which of them cannot be
//! read, and whether `data_dir` is writable.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::AgentConfig;
use crate::input::file::preview;

/// The report for people, and whether everything checked out.
pub struct Report {
    pub text: String,
    pub ok: bool,
}

/// How many matched files are listed per input before "and N more".
const LIST_FILES: usize = 5;

pub fn check(config_path: &Path, config: &AgentConfig) -> Report {
    let mut text = String::new();
    let mut ok = true;
    let _ = writeln!(
        text,
        "{}: syntax, keys, globs and certificates are valid",
        config_path.display()
    );
    for (i, f) in config.files.iter().enumerate() {
        let key = format!("inputs[{i}] (file, topic {})", f.topic);
        match preview(&f.include, &f.exclude) {
            Err(e) => {
                ok = false;
                let _ = writeln!(text, "error: {key}: {e}");
            }
            Ok(p) => {
                let _ = writeln!(
                    text,
                    "{key}: {} readable file(s) match now",
                    p.readable.len()
                );
                for path in p.readable.iter().take(LIST_FILES) {
                    let _ = writeln!(text, "  {}", path.display());
                }
                if p.readable.len() > LIST_FILES {
                    let _ = writeln!(text, "  … and {} more", p.readable.len() - LIST_FILES);
                }
                for (path, e) in &p.unreadable {
                    ok = false;
                    let _ = writeln!(text, "error: {key}: cannot read {}: {e}", path.display());
                }
                for (path, e) in &p.unlistable {
                    ok = false;
                    let _ = writeln!(
                        text,
                        "error: {key}: cannot list directory {}: {e}",
                        path.display()
                    );
                }
            }
        }
    }
    for (i, s) in config.syslog.iter().enumerate() {
        let addrs: Vec<String> = s.listen.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            text,
            "inputs[{}] (syslog, topic {}): listens on {}",
            config.files.len() + i,
            s.topic,
            addrs.join(", ")
        );
    }
    match writable(&config.data_dir) {
        Ok(()) => {
            let _ = writeln!(text, "data_dir {} is writable", config.data_dir.display());
        }
        Err(e) => {
            ok = false;
            let _ = writeln!(text, "error: data_dir {}: {e}", config.data_dir.display());
        }
    }
    let addrs: Vec<&str> = config.collectors.iter().map(|c| c.addr.as_str()).collect();
    let _ = writeln!(text, "ships to {} over TLS", addrs.join(", "));
    let _ = writeln!(
        text,
        "{}",
        if ok {
            "configuration is valid"
        } else {
            "configuration has errors"
        }
    );
    Report { text, ok }
}

/// Create `dir` if needed and write, fsync and remove a probe file in it.
fn writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".check-config-{}", std::process::id()));
    let r = std::fs::write(&probe, b"probe").and_then(|()| std::fs::File::open(&probe)?.sync_all());
    let _ = std::fs::remove_file(&probe);
    r
}
