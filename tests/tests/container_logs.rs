//! `format: cri | docker` end to end: container runtime lines written where kubelet
//! puts them arrive as their messages, with pieces of split lines merged, the
//! line's own time, `stream` and the pod's names in fields; `--field` queries over
//! them give exact counts.

use std::time::Duration;

use tributary_e2e::{Env, append_lines};

const T0: i64 = 1_796_000_000_000;

fn rfc3339_nanos(ms: i64, nanos: u32) -> String {
    let s = tributary_common::timefmt::format_ms(ms);
    // 2026-12-05T10:00:00.123Z → 2026-12-05T10:00:00.123456789Z
    format!("{}{:06}Z", s.trim_end_matches('Z'), nanos % 1_000_000)
}

#[test]
fn cri_and_docker_lines_merge_pieces_and_carry_stream_time_and_pod() {
    let env = Env::new();
    let c = env.start_collector("");
    let root = env.path().join("host");
    // CRI, as containerd writes under /var/log/pods/NAMESPACE_POD_UID/CONTAINER/.
    let pod_dir =
        root.join("var/log/pods/prod_web-7d4b9_0f6e4c1a-1111-2222-3333-444455556666/nginx");
    std::fs::create_dir_all(&pod_dir).unwrap();
    let cri = pod_dir.join("0.log");
    let mut lines = Vec::new();
    let mut cri_expected = Vec::new();
    for i in 0..100i64 {
        let stream = if i % 4 == 0 { "stderr" } else { "stdout" };
        let t = rfc3339_nanos(T0 + i, 123_456);
        if i % 10 == 5 {
            // A long line the runtime split in three pieces.
            let parts = [
                format!("long {i} part a;"),
                " part b;".into(),
                " part c".into(),
            ];
            lines.push(format!("{t} {stream} P {}", parts[0]));
            lines.push(format!("{t} {stream} P {}", parts[1]));
            lines.push(format!("{t} {stream} F {}", parts[2]));
            cri_expected.push((parts.concat(), stream, T0 + i));
        } else {
            let m = format!("GET /item/{i} 200 {{\"x\": {i}}}");
            lines.push(format!("{t} {stream} F {m}"));
            cri_expected.push((m, stream, T0 + i));
        }
    }
    append_lines(&cri, lines);

    // Docker's json-file driver, as /var/log/containers/POD_NAMESPACE_CONTAINER-ID.log.
    let cont_dir = root.join("var/log/containers");
    std::fs::create_dir_all(&cont_dir).unwrap();
    let id = "0123456789abcdef".repeat(4);
    let docker = cont_dir.join(format!("api-5f6c7_staging_app-{id}.log"));
    let mut lines = Vec::new();
    let mut docker_expected = Vec::new();
    for i in 0..50i64 {
        let stream = if i % 5 == 0 { "stderr" } else { "stdout" };
        let t = rfc3339_nanos(T0 + 1000 + i, 999);
        if i % 7 == 3 {
            let a = format!("split {i} \"quoted\" ");
            let b = "tail\ttabbed".to_owned();
            for (piece, nl) in [(&a, ""), (&b, "\n")] {
                let log = serde_json::to_string(&format!("{piece}{nl}")).unwrap();
                lines.push(format!(
                    r#"{{"log":{log},"stream":"{stream}","time":"{t}"}}"#
                ));
            }
            docker_expected.push((format!("{a}{b}"), stream, T0 + 1000 + i));
        } else {
            let m = format!("worker {i} ünïcode ok");
            let log = serde_json::to_string(&format!("{m}\n")).unwrap();
            lines.push(format!(
                r#"{{"log":{log},"stream":"{stream}","time":"{t}"}}"#
            ));
            docker_expected.push((m, stream, T0 + 1000 + i));
        }
    }
    // A line that is not Docker's is kept as it is.
    lines.push("garbage, not json".into());
    append_lines(&docker, lines);

    let yaml = format!(
        "host: node-1\ndata_dir: {}\ninputs:\n  - type: file\n    topic: pods\n    include: [\"{}/var/log/pods/*/*/*.log\"]\n    format: cri\n  - type: file\n    topic: pods\n    include: [\"{}/var/log/containers/*.log\"]\n    format: docker\n{}",
        env.path().join("agent-data").display(),
        root.display(),
        root.display(),
        env.output_yaml(&c, "lz4")
    );
    let mut agent = env.start_agent("agent", &yaml);
    let total = (cri_expected.len() + docker_expected.len() + 1) as u64;
    c.wait_for_count("pods", total, Duration::from_secs(60), &agent);
    let recs = c.read_all("pods");
    assert_eq!(recs.len() as u64, total);
    for (want, kind) in [(&cri_expected, "cri"), (&docker_expected, "docker")] {
        for (msg, stream, ms) in want.iter() {
            let r = recs
                .iter()
                .find(|r| &r.message == msg)
                .unwrap_or_else(|| panic!("{kind}: `{msg}` not stored"));
            assert_eq!(r.fields["stream"], *stream, "{kind}: {msg}");
            let t =
                tributary_common::timefmt::parse_ms(r.json["timestamp"].as_str().unwrap()).unwrap();
            assert_eq!(t, *ms, "{kind}: the event time is the line's");
        }
    }
    let web = recs
        .iter()
        .find(|r| r.message.starts_with("GET /item/1 "))
        .unwrap();
    assert_eq!(web.fields["k8s"]["namespace"], "prod");
    assert_eq!(web.fields["k8s"]["pod"], "web-7d4b9");
    assert_eq!(web.fields["k8s"]["container"], "nginx");
    let garbage = recs
        .iter()
        .find(|r| r.message == "garbage, not json")
        .unwrap();
    assert!(garbage.fields.get("stream").is_none());

    let api = format!("127.0.0.1:{}", c.api_port);
    let count = |args: &[&str]| -> usize {
        let mut all = vec![
            "query", "--api", &api, "--topic", "pods", "--limit", "10000",
        ];
        all.extend_from_slice(args);
        let (code, out, err) = tributary_e2e::run("tributary", &all);
        assert_eq!(code, 0, "{err}");
        out.lines().count()
    };
    assert_eq!(count(&["--field", "k8s.namespace=prod"]), 100);
    assert_eq!(count(&["--field", "k8s.container=app"]), 51);
    assert_eq!(
        count(&["--field", "k8s.namespace=prod", "--field", "stream=stderr"]),
        25
    );
    assert_eq!(
        count(&["--field", "k8s.pod=api-5f6c7", "--field", "stream=stderr"]),
        10
    );
    agent.terminate(Duration::from_secs(10));
}
