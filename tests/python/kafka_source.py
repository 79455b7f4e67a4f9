"""kafka-python against a Kafka-compatible broker (noida-db, or a collector's
own Kafka listener), for the tests of the collector's Kafka source
(tests/tests/kafka_source.rs).

Usage: kafka_source.py BOOTSTRAP STEP [ARGS...]; prints one JSON value on stdout.

Steps:
  create TOPIC PARTITIONS     CreateTopics through the admin client.
  agent TOPIC ROUND COUNT TS  COUNT records as Tributary agents write them
                              (output.kafka): key HOST:SOURCE_ID_HEX, value =
                              message, timestamp, headers host, source, fields,
                              partial, tributary.source_id, tributary.offset; from
                              six sources on three hosts, each record produced
                              twice in a row (an agent resending after a crash).
                              Message "agent N", timestamp TS + N, for N from
                              ROUND*COUNT on.
  plain TOPIC ROUND COUNT TS  COUNT records from another producer: no Tributary
                              headers; some with a host header, some with a key.
                              Message "plain N",
                              timestamp TS + N.
  malformed TOPIC COUNT       COUNT records with broken tributary.* headers.
  partitions TOPIC            TOPIC's partitions as a producer sees them (a
                              broker that creates topics when producers ask for
                              them creates it): {"partitions": [...]}.
  groups GROUP TOPIC          The group's committed offsets of TOPIC: {partition:
                              offset}.
  stream TOPIC RATE STOP      Records "stream N" (N from 0) at RATE a second,
                              from an idempotent producer, until the file STOP
                              exists (at most 50 s): even N from another
                              producer (trace and n headers, a key on every
                              fourth), odd N with the agents' headers (host,
                              source, seq, tributary.source_id/offset; each
                              once); timestamp = the time it was produced.
                              Prints {"produced": COUNT, "seconds": S}.

Timestamps must be recent: noida-db applies a 7-day retention by record time.
Every step ends within 60 s (the harness kills it at 120 s).
"""

import json
import sys
import time

DEADLINE = 60  # seconds any step may take
HOSTS = ["web-01", "web-02", "db-01"]


def producer(bootstrap, **kw):
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        request_timeout_ms=20000,
        **kw,
    )


def create(bootstrap, topic, partitions):
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    admin.create_topics([NewTopic(topic, int(partitions), 1)])
    admin.close()
    return {"created": topic}


def agent_record(n, base_ts):
    """Record n of the agents' sources: (key, value, headers, ts)."""
    s = n % 6
    host = HOSTS[s % 3]
    source_id = 1000 + s
    source = "/var/log/app%d.log" % s
    # Source offsets grow with n within a source.
    offset = (n // 6) * 100 + 7
    headers = [
        ("host", host.encode()),
        ("source", source.encode()),
        ("env", b"prod"),
        ("seq", str(n).encode()),
    ]
    if n % 5 == 0:
        headers.append(("partial", b"1"))
    headers.append(("tributary.source_id", str(source_id).encode()))
    headers.append(("tributary.offset", str(offset).encode()))
    key = ("%s:%016x" % (host, source_id)).encode()
    return key, ("agent %d" % n).encode(), headers, base_ts + n


def agent(bootstrap, topic, round_, count, base_ts):
    p = producer(bootstrap, compression_type="lz4")
    start = int(round_) * int(count)
    futures = []
    for n in range(start, start + int(count)):
        key, value, headers, ts = agent_record(n, int(base_ts))
        # Twice, as an agent resending after a crash does.
        for _ in range(2):
            futures.append(p.send(topic, key=key, value=value, headers=headers, timestamp_ms=ts))
    p.flush(timeout=DEADLINE)
    for f in futures:
        f.get(timeout=DEADLINE)
    p.close()
    return {"produced": len(futures)}


def plain(bootstrap, topic, round_, count, base_ts):
    p = producer(bootstrap, compression_type="gzip")
    start = int(round_) * int(count)
    futures = []
    for n in range(start, start + int(count)):
        headers = [("trace", ("t%d" % n).encode()), ("n", str(n).encode())]
        if n % 3 == 0:
            headers.append(("host", b"edge-7"))
        key = ("k%d" % n).encode() if n % 2 == 0 else None
        value = ("plain %d" % n).encode()
        futures.append(
            p.send(topic, key=key, value=value, headers=headers, timestamp_ms=int(base_ts) + n)
        )
    p.flush(timeout=DEADLINE)
    for f in futures:
        f.get(timeout=DEADLINE)
    p.close()
    return {"produced": len(futures)}


def malformed(bootstrap, topic, count):
    p = producer(bootstrap)
    futures = []
    for n in range(int(count)):
        headers = [
            ("host", b"web-01"),
            ("source", b"/var/log/bad.log"),
            ("tributary.source_id", b"12"),
            ("tributary.offset", b"not-a-number"),
        ]
        futures.append(p.send(topic, value=("bad %d" % n).encode(), headers=headers))
    p.flush(timeout=DEADLINE)
    for f in futures:
        f.get(timeout=DEADLINE)
    p.close()
    return {"produced": len(futures)}


def groups(bootstrap, group, topic):
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    offsets = admin.list_group_offsets(group).get(group, {})
    admin.close()
    return {str(tp.partition): meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def partitions(bootstrap, topic):
    p = producer(bootstrap)
    found = p.partitions_for(topic)
    p.close()
    return {"partitions": sorted(found or [])}


STREAM_SECONDS = 50  # the longest a stream step runs without its STOP file


def stream(bootstrap, topic, rate, stop_file):
    import os

    p = producer(
        bootstrap,
        compression_type="lz4",
        enable_idempotence=True,
        client_id="stream",
    )
    rate = float(rate)
    futures = []
    n = 0
    started = time.time()
    while not os.path.exists(stop_file) and time.time() - started < STREAM_SECONDS:
        due = int((time.time() - started) * rate) + 1
        while n < due:
            ts = int(time.time() * 1000)
            value = ("stream %d" % n).encode()
            if n % 2 == 0:
                headers = [("trace", ("t%d" % n).encode()), ("n", str(n).encode())]
                key = ("k%d" % n).encode() if n % 4 == 0 else None
            else:
                s = (n // 2) % 6
                host = HOSTS[s % 3]
                source_id = 2000 + s
                headers = [
                    ("host", host.encode()),
                    ("source", ("/var/log/stream%d.log" % s).encode()),
                    ("seq", str(n).encode()),
                    ("tributary.source_id", str(source_id).encode()),
                    ("tributary.offset", str(n * 10 + 1).encode()),
                ]
                key = ("%s:%016x" % (host, source_id)).encode()
            futures.append(p.send(topic, key=key, value=value, headers=headers, timestamp_ms=ts))
            n += 1
        time.sleep(0.005)
    p.flush(timeout=DEADLINE)
    for f in futures:
        f.get(timeout=DEADLINE)
    p.close()
    return {"produced": n, "seconds": round(time.time() - started, 1)}


def main():
    bootstrap, step, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    steps = {"create": create, "agent": agent, "plain": plain, "malformed": malformed, "groups": groups,
             "partitions": partitions, "stream": stream}
    started = time.time()
    result = steps[step](bootstrap, *args)
    if time.time() - started > DEADLINE:
        raise SystemExit("step %s took longer than %d s" % (step, DEADLINE))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
