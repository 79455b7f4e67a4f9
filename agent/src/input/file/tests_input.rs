//! Tests of the whole file input (globs, watcher, rescans, rotation, shutdown) on
//! real files in temporary directories, polling the chunk channel (or
//! `/proc/self/fd`) until the expected state arrives, with a generous deadline.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::tests::*;
use super::*;

struct Running {
    rx: mpsc::Receiver<Chunk>,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), FileInputError>>,
    got: Vec<Rec>,
}

fn settings(include: &[PathBuf]) -> FileInputSettings {
    FileInputSettings {
        topic: "t".into(),
        host: "test-host".into(),
        include: include
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        exclude: Vec::new(),
        read_from_beginning: true,
        fields_json: Arc::from(&b""[..]),
        max_line_bytes: 1 << 20,
        json: None,
        format: None,
        multiline: None,
        rescan_interval: Duration::from_millis(50),
        poll_interval: Duration::from_millis(20),
        chunk_bytes: 64 << 10,
        close_inactive: Duration::from_secs(60),
        resume: Vec::new(),
        marks: Arc::default(),
        stats: Arc::default(),
        guard: Guard::default(),
    }
}

fn start(s: FileInputSettings, capacity: usize) -> Running {
    let input = FileInput::new(s).unwrap();
    let (tx, rx) = mpsc::channel(capacity);
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(input.run(tx, shutdown.clone()));
    Running {
        rx,
        shutdown,
        handle,
        got: Vec::new(),
    }
}

impl Running {
    /// Receive until `done` holds for everything received so far.
    async fn until(&mut self, done: impl Fn(&[Rec]) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done(&self.got) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(c)) => self.got.extend(decode(&c)),
                Ok(None) => panic!("input stopped"),
                Err(_) => panic!(
                    "timed out with {} records, last: {:?}",
                    self.got.len(),
                    self.got.last()
                ),
            }
        }
    }

    /// Receive until `n` records of `path` arrived; return them.
    async fn lines_of(&mut self, path: &Path, n: usize) -> Vec<Rec> {
        let path = path.to_string_lossy().into_owned();
        self.until(|g| g.iter().filter(|r| r.path == path).count() >= n)
            .await;
        self.got
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Whatever arrives within `d`.
    async fn quiet_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Ok(Some(c)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.got.extend(decode(&c));
        }
    }

    async fn stop(self) -> Duration {
        let t = Instant::now();
        self.shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(5), self.handle)
            .await
            .expect("stops promptly")
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
        t.elapsed()
    }
}

/// Whether this process holds `path` open.
fn is_open(path: &Path) -> bool {
    let want = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .any(|l| l == want || l == path)
}

async fn wait_open(path: &Path, open: bool) {
    let deadline = Instant::now() + DEADLINE;
    while is_open(path) != open {
        assert!(
            Instant::now() < deadline,
            "{} open: {}",
            path.display(),
            !open
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Check every record against the file content at its offset.
fn check_offsets(content: &[u8], recs: &[Rec]) {
    for r in recs {
        let at = r.offset as usize;
        assert_eq!(
            &content[at..at + r.msg.len()],
            r.msg.as_slice(),
            "record at {at}"
        );
        if r.flags == 0 {
            let after = &content[at + r.msg.len()..];
            assert!(after.starts_with(b"\n") || after.starts_with(b"\r\n"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_exclude_and_files_created_later() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut s = settings(&[d.join("logs/**/*.log"), d.join("top/*.txt")]);
    s.exclude = vec![
        "skip-*".into(),
        d.join("logs/private/*").to_string_lossy().into(),
    ];
    s.read_from_beginning = false;
    fs::create_dir_all(d.join("logs")).unwrap();
    fs::write(d.join("logs/first.log"), b"old\n").unwrap();
    let mut run = start(s, 16);
    wait_open(&d.join("logs/first.log"), true).await;

    // Created after start: read from 0, including in directories that did not
    // exist yet (top/ is the static prefix of a pattern).
    for sub in ["logs/a/b/c", "logs/private", "top"] {
        fs::create_dir_all(d.join(sub)).unwrap();
    }
    let unmatched = [
        "logs/a/skip-me.log",
        "logs/private/hidden.log",
        "logs/a/b/c/note.txt",
        "top/sub.log",
        "top/x.gz",
    ];
    for u in unmatched {
        fs::write(d.join(u), b"never\n").unwrap();
    }
    let matched = [
        "logs/new.log",
        "logs/a/b/c/deep.log",
        "top/t.txt",
        "logs/private/sub/x.log",
    ];
    fs::create_dir_all(d.join("logs/private/sub")).unwrap();
    for m in matched {
        fs::write(d.join(m), format!("hello {m}\nbye\n")).unwrap();
    }
    append(&d.join("logs/first.log"), b"appended\n");
    for m in matched {
        let recs = run.lines_of(&d.join(m), 2).await;
        assert_eq!(msgs(&recs), vec![format!("hello {m}").as_bytes(), b"bye"]);
        assert_eq!(recs[1].offset, format!("hello {m}\n").len() as u64);
    }
    let first = run.lines_of(&d.join("logs/first.log"), 1).await;
    assert_eq!(msgs(&first), vec![&b"appended"[..]]);
    assert_eq!(first[0].offset, 4);

    run.quiet_for(Duration::from_millis(300)).await;
    assert!(
        run.got.iter().all(|r| r.msg != b"never"),
        "unmatched file read: {:?}",
        run.got.iter().find(|r| r.msg == b"never")
    );
    for u in unmatched {
        assert!(!is_open(&d.join(u)), "{u} opened");
    }
    let elapsed = run.stop().await;
    assert!(
        elapsed < Duration::from_secs(1),
        "stopped after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_from_end_vs_beginning() {
    for beginning in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        fs::write(&p, b"old 1\nold 2\n").unwrap();
        let mut s = settings(&[dir.path().join("*.log")]);
        s.read_from_beginning = beginning;
        let mut run = start(s, 16);
        wait_open(&p, true).await;
        append(&p, b"new\n");
        run.until(|g| g.iter().any(|r| r.msg == b"new")).await;
        run.quiet_for(Duration::from_millis(100)).await;
        let expected: Vec<&[u8]> = if beginning {
            vec![b"old 1", b"old 2", b"new"]
        } else {
            vec![b"new"]
        };
        assert_eq!(msgs(&run.got), expected, "read_from_beginning={beginning}");
        check_offsets(&fs::read(&p).unwrap(), &run.got);
        run.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    fs::write(&p, b"").unwrap();
    let mut run = start(settings(&[dir.path().join("*.log")]), 16);
    wait_open(&p, true).await;
    append(&p, b"a1\na2\n");
    run.lines_of(&p, 2).await;
    append(&p, b"a3 partial");
    append(&p, b" done\r\n");
    let recs = run.lines_of(&p, 3).await;
    assert_eq!(msgs(&recs), vec![&b"a1"[..], b"a2", b"a3 partial done"]);
    check_offsets(&fs::read(&p).unwrap(), &recs);
    let before = recs[0].source_id;

    // copytruncate: the file shrinks, reading restarts at 0 with a new identity.
    fs::write(&p, b"b1\n").unwrap();
    let recs = run.lines_of(&p, 4).await;
    assert_eq!((recs[3].msg.as_slice(), recs[3].offset), (&b"b1"[..], 0));
    assert_ne!(recs[3].source_id, before);
    append(&p, b"b2\n");
    let recs = run.lines_of(&p, 5).await;
    assert_eq!((recs[4].msg.as_slice(), recs[4].offset), (&b"b2"[..], 3));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_generation_is_durable_before_its_records_leave() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    fs::write(&p, b"same first line\nold 2\n").unwrap();
    let (reg_tx, mut reg_rx) = mpsc::unbounded_channel();
    let marks = Arc::new(Marks::with_checkpointer(reg_tx));
    let mut s = settings(&[dir.path().join("*.log")]);
    s.marks = marks.clone();
    let mut run = start(s, 16);
    // Every version is registered before its first records leave.
    let r0 = tokio::time::timeout(DEADLINE, reg_rx.recv())
        .await
        .expect("registration")
        .unwrap();
    assert_eq!((r0.mark.generation, r0.offset), (0, 0));
    assert!(r0.proof.is_some_and(|p| p.offset == 22), "{:?}", r0.proof);
    r0.done.send(()).unwrap();
    let old = run.lines_of(&p, 2).await;

    // copytruncate with the same first line: generation 1 must be registered (and
    // the registration answered) before any of its records is sent.
    fs::write(&p, b"same first line\n").unwrap();
    let r = tokio::time::timeout(DEADLINE, reg_rx.recv())
        .await
        .expect("registration")
        .unwrap();
    assert_eq!(r.mark.generation, 1);
    assert_eq!(r.path.as_ref(), p.to_str().unwrap());
    assert_ne!(r.source_id, old[0].source_id);
    run.quiet_for(Duration::from_millis(300)).await;
    assert_eq!(
        run.got.len(),
        2,
        "nothing of generation 1 before it is durable"
    );
    marks.set_durable(r.source_id);
    r.done.send(()).unwrap();
    let recs = run.lines_of(&p, 3).await;
    assert_eq!((recs[2].source_id, recs[2].offset), (r.source_id, 0));

    // A second truncation, now with other first bytes, is generation 2.
    fs::write(&p, b"other\n").unwrap();
    let r2 = tokio::time::timeout(DEADLINE, reg_rx.recv())
        .await
        .expect("registration")
        .unwrap();
    assert_eq!(r2.mark.generation, 2);
    r2.done.send(()).unwrap();
    let recs = run.lines_of(&p, 4).await;
    assert_eq!(recs[3].msg, b"other");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_closed_file_renamed_out_of_the_globs_is_read_to_its_end() {
    // Idle files are closed only while more than CLOSE_IDLE_ABOVE are open.
    let n = reader::follow::CLOSE_IDLE_ABOVE as usize + 20;
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| dir.path().join(format!("f{i:03}.log")))
        .collect();
    for (i, p) in paths.iter().enumerate() {
        fs::write(p, format!("first of {i}\n")).unwrap();
    }
    let mut s = settings(&[dir.path().join("*.log")]);
    s.close_inactive = Duration::from_millis(200);
    let stats = s.stats.clone();
    let mut run = start(s, 256);
    run.until(|g| g.len() >= n).await;
    let deadline = Instant::now() + DEADLINE;
    let closed = loop {
        if let Some(p) = paths.iter().find(|p| !is_open(p)) {
            break p.clone();
        }
        assert!(Instant::now() < deadline, "no idle file was closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(stats.files_open.load(std::sync::atomic::Ordering::Relaxed) <= n as u64);
    // New lines, then at once a rotation by rename to a name the globs do not match.
    append(&closed, b"written just before rotation\n");
    let rotated = closed.with_extension("log.1");
    fs::rename(&closed, &rotated).unwrap();
    run.until(|g| g.len() > n).await;
    let first = run.got.iter().find(|r| r.path == closed.to_str().unwrap());
    let last = &run.got[n];
    assert_eq!(last.msg, b"written just before rotation");
    // Same file, same source; the path is where it was reopened.
    assert_eq!(Some(last.source_id), first.map(|r| r.source_id));
    assert_eq!(last.path, rotated.to_str().unwrap());
    // It is read to its end and closed again; nothing is read twice.
    wait_open(&rotated, false).await;
    run.quiet_for(Duration::from_millis(300)).await;
    assert_eq!(run.got.len(), n + 1);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_file_is_not_read_twice_and_deleted_file_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.log");
    let b = dir.path().join("b.log");
    let mut run = start(settings(&[dir.path().join("*.log")]), 16);
    fs::write(&a, b"one\ntwo\n").unwrap();
    let recs = run.lines_of(&a, 2).await;
    let id = recs[0].source_id;
    fs::rename(&a, &b).unwrap();
    append(&b, b"three\n");
    run.until(|g| g.len() >= 3).await;
    run.quiet_for(Duration::from_millis(300)).await;
    assert_eq!(msgs(&run.got), vec![&b"one"[..], b"two", b"three"]);
    assert!(run.got.iter().all(|r| r.source_id == id));
    assert_eq!(run.got[2].offset, 8);

    // Deleted while lines are still unread: they are read, then the file is closed.
    append(&b, b"four\nlast, no newline");
    fs::remove_file(&b).unwrap();
    run.until(|g| g.len() >= 5).await;
    assert_eq!(msgs(&run.got[3..]), vec![&b"four"[..], b"last, no newline"]);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let open = fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|e| fs::read_link(e.path()).ok())
            .any(|l| l.to_string_lossy().contains("b.log (deleted)"));
        if !open {
            break;
        }
        assert!(Instant::now() < deadline, "deleted file still open");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_file_is_skipped_without_failing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked.log");
    let ok = dir.path().join("ok.log");
    fs::write(&locked, b"secret\n").unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    if File::open(&locked).is_ok() {
        eprintln!("running as root: permissions are not enforced, skipping");
        return;
    }
    // An unreadable directory under a `**` pattern is skipped too.
    let locked_dir = dir.path().join("private");
    fs::create_dir(&locked_dir).unwrap();
    fs::write(locked_dir.join("inside.log"), b"hidden\n").unwrap();
    fs::set_permissions(&locked_dir, fs::Permissions::from_mode(0o000)).unwrap();
    let mut run = start(settings(&[dir.path().join("**/*.log")]), 16);
    fs::write(&ok, b"fine\n").unwrap();
    run.lines_of(&ok, 1).await;
    // Readable again: it is picked up.
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o644)).unwrap();
    let recs = run.lines_of(&locked, 1).await;
    assert_eq!(msgs(&recs), vec![&b"secret"[..]]);
    assert!(run.got.iter().all(|r| r.msg != b"hidden"));
    fs::set_permissions(&locked_dir, fs::Permissions::from_mode(0o755)).unwrap();
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_lines_arrive_complete_and_in_order_with_backpressure() {
    const LINES: usize = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.log");
    let q = dir.path().join("live.log");
    let pad = "x".repeat(130);
    let mut content = Vec::with_capacity(LINES * 152);
    for i in 0..LINES {
        writeln!(content, "{i:08} {pad} {i:08}").unwrap();
    }
    fs::write(&p, &content).unwrap();
    fs::write(&q, b"").unwrap();
    let mut s = settings(&[dir.path().join("*.log")]);
    s.chunk_bytes = 256 << 10;
    // A tiny channel: readers must wait for the consumer, never drop.
    let mut run = start(s, 1);
    wait_open(&q, true).await;
    // Meanwhile a second file is written line by line.
    let writer = {
        let q = q.clone();
        std::thread::spawn(move || {
            let mut f = OpenOptions::new().append(true).open(&q).unwrap();
            for i in 0..20_000 {
                writeln!(f, "live {i}").unwrap();
            }
        })
    };
    let mut seen = 0usize;
    let mut live = 0usize;
    let deadline = Instant::now() + DEADLINE;
    let path = p.to_string_lossy().into_owned();
    while seen < LINES || live < 20_000 {
        let c = tokio::time::timeout_at(deadline, run.rx.recv())
            .await
            .expect("in time")
            .unwrap();
        for r in decode(&c) {
            if r.path == path {
                let want = format!("{seen:08} {pad} {seen:08}");
                assert_eq!(r.msg, want.as_bytes());
                assert_eq!(r.offset as usize, seen * (want.len() + 1));
                seen += 1;
            } else {
                assert_eq!(r.msg, format!("live {live}").as_bytes());
                live += 1;
            }
        }
    }
    writer.join().unwrap();
    run.quiet_for(Duration::from_millis(100)).await;
    assert!(run.got.is_empty(), "extra records: {:?}", run.got.first());
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt_even_when_blocked_on_a_full_channel() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    fs::write(&p, "line\n".repeat(100_000)).unwrap();
    let mut s = settings(&[dir.path().join("*.log")]);
    s.chunk_bytes = 4096;
    let mut run = start(s, 1);
    run.until(|g| !g.is_empty()).await;
    // Nobody receives any more: the reader is parked on `send`.
    let elapsed = run.stop().await;
    eprintln!("shutdown took {elapsed:?}");
    assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_directory_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let later = dir.path().join("not/yet");
    let mut run = start(settings(&[later.join("*.log")]), 16);
    tokio::time::sleep(Duration::from_millis(120)).await;
    fs::create_dir_all(&later).unwrap();
    fs::write(later.join("x.log"), b"hi\n").unwrap();
    let recs = run.lines_of(&later.join("x.log"), 1).await;
    assert_eq!(msgs(&recs), vec![&b"hi"[..]]);
    run.stop().await;
}

#[test]
fn bad_glob_is_an_error_naming_it() {
    let s = settings(&[PathBuf::from("/var/log/[oops.log")]);
    let err = FileInput::new(s).unwrap_err();
    assert!(err.to_string().contains("[oops.log"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_out_of_the_globs_and_the_agents_own_files_are_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let secret = dir.path().join("secret");
    let state = logs.join("state");
    for d in [&logs, &secret, &state] {
        fs::create_dir_all(d).unwrap();
    }
    append(&logs.join("a.log"), b"a one\na two\n");
    append(&logs.join("data-2026.log"), b"data one\n");
    append(&secret.join("shadow.txt"), b"root:secret\n");
    append(&logs.join("agent.key"), b"PRIVATE KEY\n");
    append(&state.join("checkpoints.log"), b"state\n");
    // A planted link out of the globs, and a link to a file the globs match.
    std::os::unix::fs::symlink("../secret/shadow.txt", logs.join("leak.log")).unwrap();
    std::os::unix::fs::symlink("data-2026.log", logs.join("current.log")).unwrap();
    // A link into the agent's data_dir.
    std::os::unix::fs::symlink("state/checkpoints.log", logs.join("state.log")).unwrap();

    let mut s = settings(&[logs.join("*.log"), logs.join("*.key"), state.join("*.log")]);
    s.guard = Guard {
        follow_symlinks: false,
        files: vec![logs.join("agent.key")],
        dirs: vec![state.clone()],
    };
    let mut run = start(s, 64);
    run.lines_of(&logs.join("a.log"), 2).await;
    // data-2026.log once, under one of its two names.
    run.until(|g| g.iter().any(|r| r.msg == b"data one")).await;
    // Absence can only be shown over time: several rescans (every 50 ms).
    run.quiet_for(Duration::from_millis(500)).await;
    let msgs: Vec<&[u8]> = run.got.iter().map(|r| r.msg.as_slice()).collect();
    assert_eq!(
        msgs.iter().filter(|m| **m == b"data one").count(),
        1,
        "{msgs:?}"
    );
    for never in [&b"root:secret"[..], b"PRIVATE KEY", b"state"] {
        assert!(
            !msgs.contains(&never),
            "{:?} was read",
            String::from_utf8_lossy(never)
        );
    }
    run.stop().await;

    // follow_symlinks: true reads the link whatever its target.
    let mut s = settings(&[logs.join("leak.log")]);
    s.guard.follow_symlinks = true;
    let mut run = start(s, 64);
    run.until(|g| g.iter().any(|r| r.msg == b"root:secret"))
        .await;
    run.stop().await;
}
