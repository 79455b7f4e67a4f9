//! The HTTP API in process: a real store and router on 127.0.0.1:0, records
//! appended through `Storage`, retention run by hand. Covers the offset lookup by
//! timestamp, 416 after retention, and damaged data as a JSON 500.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tributary_collector::client::ApiClient;
use tributary_collector::config::{CollectorConfig, CollectorConfigFile};
use tributary_collector::metrics::Metrics;
use tributary_collector::storage::Storage;
use tributary_common::record::{self, BlockWriter};

const T: Duration = Duration::from_secs(10);
/// 2020-09-13T12:26:40Z
const OLD: i64 = 1_600_000_000_000;

fn config(dir: &Path, check_interval: &str) -> CollectorConfig {
    let certs = tributary_collector::setup::certs::generate(&dir.join("certs"), &[]).unwrap();
    let yaml = format!(
        "data_dir: {data}\n\
         ingest:\n  listen: 127.0.0.1:0\n  tls: {{cert: {cert}, key: {key}}}\n\
         api: {{listen: 127.0.0.1:0}}\n\
         topics:\n  default: {{partitions: 1, segment_age: 1s, retention: {{max_age: 1h}}}}\n\
         retention: {{check_interval_ms: {check_interval}}}\n",
        data = dir.join("data").display(),
        cert = certs.collector_cert.display(),
        key = certs.collector_key.display(),
    );
    let file: CollectorConfigFile = tributary_common::config::parse_yaml("test", &yaml).unwrap();
    file.resolve("test").unwrap()
}

/// One block of records stamped `stamps`, from a syslog-like source.
fn payload(stamps: &[i64]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut b = BlockWriter::begin(&mut buf, "web-01", "syslog+udp://10.0.0.1", 0, b"");
    for (i, &ts) in stamps.iter().enumerate() {
        b.push(
            &mut buf,
            0,
            ts,
            0,
            b"",
            format!("line {i} at {ts}").as_bytes(),
        );
    }
    b.finish(&mut buf);
    buf
}

/// Append records stamped `stamps`, arriving when the newest of them was made.
async fn append(storage: &Storage, topic: &str, stamps: &[i64]) {
    let p = payload(stamps);
    let summary = record::summarize(&p).unwrap();
    let arrival = stamps.iter().copied().max().unwrap();
    let a = storage.append_at(topic, p, summary, arrival).await.unwrap();
    storage.make_durable(&a).await.unwrap();
}

struct Api {
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
    client: ApiClient,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start() -> Api {
        Api::start_with("1h").await
    }

    async fn start_with(check_interval: &str) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), check_interval);
        let storage = Arc::new(Storage::open(Arc::new(config)).unwrap());
        let metrics = Arc::new(Metrics::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = tributary_collector::api::router(storage.reader(), metrics.clone());
        let shutdown = CancellationToken::new();
        tokio::spawn(tributary_collector::api::server::serve(
            listener,
            router,
            Default::default(),
            None,
            metrics.clone(),
            shutdown.clone(),
        ));
        let client = ApiClient::new(&format!("http://{addr}")).unwrap();
        Api {
            storage,
            metrics,
            client,
            shutdown,
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.client.get_text(path, T).await.unwrap();
        let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        (status, v)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_by_timestamp() {
    let api = Api::start().await;
    // Offsets 0-1 at OLD, 2-4 ten seconds later with one record out of order, 5 later.
    append(&api.storage, "app", &[OLD, OLD + 5]).await;
    append(&api.storage, "app", &[OLD + 10_000, OLD + 3, OLD + 12_000]).await;
    append(&api.storage, "app", &[OLD + 60_000]).await;
    let path = |t: &str| format!("/v1/topics/app/partitions/0/offset?timestamp={t}");

    let (s, v) = api.get(&path(&OLD.to_string())).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["offset"], 0);
    assert_eq!(v["timestamp"], "2020-09-13T12:26:40.000Z");
    // RFC 3339, with a zone offset; the record at OLD + 3 is older than OLD + 5
    // but comes after a record that new, so it is never the answer.
    let (s, v) = api.get(&path("2020-09-13T14:26:40.003%2B02:00")).await;
    assert_eq!((s, v["offset"].clone()), (200, 1.into()), "{v}");
    let (_, v) = api.get(&path("2020-09-13T12:26:40.006Z")).await;
    assert_eq!(v["offset"], 2);
    assert_eq!(v["timestamp"], "2020-09-13T12:26:50.000Z");
    let (_, v) = api.get(&path(&(OLD + 11_000).to_string())).await;
    assert_eq!(v["offset"], 4);
    // Newer than everything: the end offset, no timestamp.
    let (s, v) = api.get(&path("2030-01-01T00:00:00Z")).await;
    assert_eq!(s, 200);
    assert_eq!(v["offset"], 6);
    assert!(v["timestamp"].is_null(), "{v}");

    for bad in [
        "/v1/topics/app/partitions/0/offset",
        "/v1/topics/app/partitions/0/offset?timestamp=",
        "/v1/topics/app/partitions/0/offset?timestamp=yesterday",
        "/v1/topics/app/partitions/x/offset?timestamp=0",
    ] {
        let (s, v) = api.get(bad).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(v["error"].is_string(), "{bad}: {v}");
    }
    let (s, v) = api
        .get("/v1/topics/nope/partitions/0/offset?timestamp=0")
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = api
        .get("/v1/topics/app/partitions/3/offset?timestamp=0")
        .await;
    assert_eq!(s, 404, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_below_the_start_are_416_after_retention() {
    let api = Api::start().await;
    let now = tributary_common::timefmt::now_ms();
    // Three old segments (segment_age 1s rolls on each), then a recent one.
    for k in 0..3 {
        append(
            &api.storage,
            "app",
            &[OLD + k * 10_000, OLD + k * 10_000 + 1],
        )
        .await;
    }
    append(&api.storage, "app", &[now, now]).await;
    let (_, v) = api.get("/v1/topics").await;
    assert_eq!(v[0]["partitions"][0]["start_offset"], 0);

    let s = api.storage.clone();
    let deleted = tokio::task::spawn_blocking(move || {
        tributary_collector::retention::enforce(&s, tributary_common::timefmt::now_ms())
    })
    .await
    .unwrap();
    tributary_collector::retention::account(&api.storage, &api.metrics, &deleted);
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].topic, "app");
    assert_eq!(deleted[0].deleted.segments, 3);
    assert_eq!(deleted[0].deleted.start_offset, 6);

    let (_, v) = api.get("/v1/topics").await;
    assert_eq!(v[0]["partitions"][0]["start_offset"], 6);
    assert_eq!(v[0]["partitions"][0]["end_offset"], 8);
    let (s, v) = api
        .get("/v1/topics/app/partitions/0/records?offset=0")
        .await;
    assert_eq!(s, 416, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("6..8"), "{msg}");
    let (s, v) = api
        .get("/v1/topics/app/partitions/0/records?offset=earliest")
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["records"][0]["offset"], 6);
    // A lookup older than everything kept answers the first offset kept.
    let (_, v) = api
        .get("/v1/topics/app/partitions/0/offset?timestamp=0")
        .await;
    assert_eq!(v["offset"], 6);
    let (_, metrics) = api.client.get_text("/metrics", T).await.unwrap();
    assert!(
        metrics.contains("tributary_retention_deleted_segments_total 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_data_is_a_json_500_naming_file_and_byte() {
    let api = Api::start().await;
    append(&api.storage, "app", &[OLD, OLD]).await;
    append(&api.storage, "app", &[OLD + 10_000]).await;
    let p = api.storage.store().topic("app").unwrap().partitions()[0].clone();
    let log = p.dir().join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&log).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x20;
    std::fs::write(&log, bytes).unwrap();
    let (s, v) = api
        .get("/v1/topics/app/partitions/0/records?offset=0")
        .await;
    assert_eq!(s, 500, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("00000000000000000000.log")
            && msg.contains("at byte 0")
            && msg.contains("offsets 0..2"),
        "{msg}"
    );
    // The rest of the partition still reads.
    let (s, v) = api
        .get("/v1/topics/app/partitions/0/records?offset=2")
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["records"][0]["offset"], 2);
    let (s, v) = api
        .get(&format!(
            "/v1/topics/app/partitions/0/offset?timestamp={OLD}"
        ))
        .await;
    assert_eq!(s, 500, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_task_deletes_on_its_interval() {
    let api = Api::start_with("50ms").await;
    let now = tributary_common::timefmt::now_ms();
    append(&api.storage, "app", &[OLD]).await;
    append(&api.storage, "app", &[OLD + 10_000]).await;
    append(&api.storage, "app", &[now]).await;
    tokio::spawn(tributary_collector::retention::run(
        api.storage.clone(),
        api.metrics.clone(),
        api.shutdown.clone(),
    ));
    let p = api.storage.store().topic("app").unwrap().partitions()[0].clone();
    let deadline = tokio::time::Instant::now() + T;
    while p.start_offset() != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, v) = api
        .get("/v1/topics/app/partitions/0/records?offset=1")
        .await;
    assert_eq!(s, 416, "{v}");
    assert!(v["error"].as_str().unwrap().contains("2..3"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histogram_over_http_adds_up_to_the_query() {
    let api = Api::start().await;
    let stamps: Vec<i64> = (0..500).map(|i| OLD + i * 7_000).collect();
    append(&api.storage, "app", &stamps).await;
    let range = format!("topic=app&since={}&until={}", OLD, OLD + 3_600_000);
    let (s, h) = api.get(&format!("/v1/histogram?{range}&buckets=12")).await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["interval_ms"], 300_000);
    assert_eq!(h["complete"], true);
    let buckets = h["buckets"].as_array().unwrap();
    let sum: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    let (_, q) = api.get(&format!("/v1/query?{range}&limit=10000")).await;
    assert_eq!(sum, q["records"].as_array().unwrap().len() as u64);
    assert_eq!(sum, 500);
    assert_eq!(h["total"], 500);
    assert_eq!(buckets[0]["start"], "2020-09-13T12:25:00.000Z");
    assert_eq!(buckets[0]["by_severity"]["none"], buckets[0]["count"]);
    for bad in [
        "topic=app&buckets=0",
        "topic=app&buckets=x",
        "buckets=5",
        "topic=app&since=2h&until=3h",
    ] {
        let (s, v) = api.get(&format!("/v1/histogram?{bad}")).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(v["error"].is_string());
    }
    let (s, _) = api.get("/v1/histogram?topic=nope").await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_from_a_cursor_and_long_polls() {
    let api = Api::start().await;
    append(&api.storage, "app", &[OLD, OLD + 1]).await;
    // No cursor: from now on; nothing new yet.
    let (s, v) = api.get("/v1/tail?topic=app").await;
    assert_eq!(s, 200, "{v}");
    assert!(v["records"].as_array().unwrap().is_empty());
    let cursor = v["cursor"].as_str().unwrap().to_owned();
    append(&api.storage, "app", &[OLD + 2, OLD + 3, OLD + 4]).await;
    let (_, v) = api
        .get(&format!("/v1/tail?topic=app&cursor={cursor}"))
        .await;
    let msgs: Vec<&str> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(msgs.len(), 3, "{v}");
    let cursor = v["cursor"].as_str().unwrap().to_owned();
    // Filters apply; the cursor moves past what did not match.
    append(&api.storage, "app", &[OLD + 5, OLD + 6]).await;
    let (_, v) = api
        .get(&format!(
            "/v1/tail?topic=app&cursor={cursor}&contains=line%201"
        ))
        .await;
    assert_eq!(v["records"].as_array().unwrap().len(), 1, "{v}");
    let cursor = v["cursor"].as_str().unwrap().to_owned();
    // A long poll answers as soon as a record arrives.
    let started = std::time::Instant::now();
    let waiting = {
        let client = api.client.clone();
        let path = format!("/v1/tail?topic=app&cursor={cursor}&wait_ms=10000");
        tokio::spawn(async move { client.get_text(&path, T).await.unwrap() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    append(&api.storage, "app", &[OLD + 7]).await;
    let (s, body) = waiting.await.unwrap();
    assert_eq!(s, 200);
    assert!(body.contains("line 0 at"), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let (s, _) = api.get("/v1/tail?topic=app&cursor=garbage").await;
    assert_eq!(s, 400);
}
