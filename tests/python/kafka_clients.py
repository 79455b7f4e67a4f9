"""Real Kafka clients against Tributary's Kafka listener (run by tests/tests/kafka_clients.rs).

Usage: kafka_clients.py BOOTSTRAP STEP [ARGS...]; prints one JSON object on stdout.

Steps:
  group TOPIC GROUP EXPECTED   kafka-python: two consumers in GROUP split TOPIC's
                               partitions and consume EXPECTED records exactly once,
                               committing; then one leaves and the other takes over
                               every partition.
  resume TOPIC GROUP EXPECTED  kafka-python: one consumer in GROUP reads what was
                               committed after (EXPECTED new records), no more.
  times TOPIC                  kafka-python: offsets_for_times, beginning and end
                               offsets of every partition.
  produce TOPIC N              kafka-python: idempotent producers, gzip and lz4, N
                               records each, acks=all.
  groups GROUP                 kafka-python admin: ListGroups, and DescribeGroups of
                               GROUP.
  confluent TOPIC GROUP EXPECTED OUT N
                               confluent-kafka: a consumer group reads EXPECTED
                               records of TOPIC (lz4 fetches), then idempotent
                               producers with acks=all write N records to OUT,
                               lz4 then zstd.
"""

import json
import sys
import threading
import time

DEADLINE = 60  # seconds any step may take


def group(bootstrap, topic, group_id, expected):
    from kafka import KafkaConsumer

    seen = {}
    lock = threading.Lock()
    done = threading.Event()
    ready = threading.Event()
    consumers = []
    assignments = {}

    def run(name):
        c = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            client_id=name,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        consumers.append(c)
        end = time.time() + DEADLINE
        # Until both members hold partitions, records are not counted (and not
        # committed); then each starts its partitions from the beginning.
        while not ready.is_set() and time.time() < end:
            c.poll(timeout_ms=200)
            with lock:
                assignments[name] = sorted(tp.partition for tp in c.assignment())
                if len(assignments) == 2 and all(assignments.values()):
                    ready.set()
        c.seek_to_beginning()
        while not done.is_set() and time.time() < end:
            batch = c.poll(timeout_ms=200)
            for tp, records in batch.items():
                with lock:
                    for r in records:
                        seen.setdefault((r.partition, r.offset), []).append(name)
                    if len(seen) >= expected:
                        done.set()
            if batch:
                c.commit()
        c.commit()

    threads = [threading.Thread(target=run, args=(f"py-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.5)
    for t in threads:
        t.join()
    split = dict(assignments)
    duplicates = sum(1 for v in seen.values() if len(v) > 1)
    by_consumer = {}
    for owners in seen.values():
        for o in owners:
            by_consumer[o] = by_consumer.get(o, 0) + 1
    # One leaves; the other takes over every partition.
    leaver, stayer = consumers[0], consumers[1]
    leaver.close()
    partitions = sorted(stayer.partitions_for_topic(topic))
    end = time.time() + DEADLINE
    takeover = []
    while time.time() < end:
        stayer.poll(timeout_ms=200)
        takeover = sorted(tp.partition for tp in stayer.assignment())
        if takeover == partitions:
            break
    stayer.close()
    return {
        "distinct": len(seen),
        "duplicates": duplicates,
        "by_consumer": by_consumer,
        "split": split,
        "partitions": partitions,
        "takeover": takeover,
    }


def resume(bootstrap, topic, group_id, expected):
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
    )
    seen = {}
    end = time.time() + DEADLINE
    quiet_until = None
    while time.time() < end:
        batch = c.poll(timeout_ms=300)
        for records in batch.values():
            for r in records:
                seen[(r.partition, r.offset)] = seen.get((r.partition, r.offset), 0) + 1
        if batch:
            c.commit()
        if len(seen) >= expected:
            # Anything more than expected would arrive now.
            quiet_until = quiet_until or time.time() + 2
            if time.time() >= quiet_until:
                break
    c.close()
    return {"distinct": len(seen), "duplicates": sum(1 for v in seen.values() if v > 1)}


def times(bootstrap, topic):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap)
    tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
    begin = c.beginning_offsets(tps)
    last = c.end_offsets(tps)
    out = {}
    for tp in tps:
        # The timestamp of the record in the middle, looked up again.
        mid = (begin[tp] + last[tp]) // 2
        c.assign([tp])
        c.seek(tp, mid)
        records = c.poll(timeout_ms=5000).get(tp, [])
        if not records:
            continue
        ts = records[0].timestamp
        found = c.offsets_for_times({tp: ts})[tp]
        beyond = c.offsets_for_times({tp: 4102444800000})[tp]
        out[tp.partition] = {
            "offset": mid,
            "timestamp": ts,
            "found": found.offset if found else None,
            "found_timestamp": found.timestamp if found else None,
            "beyond": beyond.offset if beyond else None,
            "begin": begin[tp],
            "end": last[tp],
        }
    c.close()
    return out


def produce(bootstrap, topic, n):
    from kafka import KafkaProducer

    sent = 0
    for codec in ("gzip", "lz4"):
        p = KafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=f"py-{codec}",
            compression_type=codec,
            enable_idempotence=True,
            acks="all",
        )
        futures = [
            p.send(
                topic,
                key=f"k{i % 5}".encode(),
                value=f"{codec} record {i:05}".encode(),
                headers=[("host", b"py-host"), ("codec", codec.encode())],
            )
            for i in range(n)
        ]
        p.flush(timeout=DEADLINE)
        sent += sum(1 for f in futures if f.succeeded())
        p.close()
    return {"acknowledged": sent}


def confluent(bootstrap, topic, group_id, expected, out, n):
    from confluent_kafka import Consumer, Producer

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    seen = set()
    errors = []
    end = time.time() + DEADLINE
    while len(seen) < expected and time.time() < end:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            errors.append(str(m.error()))
            continue
        seen.add((m.partition(), m.offset()))
        if len(seen) % 500 == 0:
            c.commit(asynchronous=False)
    c.commit(asynchronous=False)
    c.close()
    acked = []
    for codec in ("lz4", "zstd"):
        p = Producer(
            {
                "bootstrap.servers": bootstrap,
                "client.id": "ck",
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": codec,
            }
        )
        for i in range(n):
            p.produce(
                out,
                key=f"k{i}".encode(),
                value=f"confluent {codec} record {i:05}".encode(),
                headers={"host": b"ck-host"},
                on_delivery=lambda err, msg: acked.append(err is None),
            )
            p.poll(0)
        p.flush(DEADLINE)
    return {"consumed": len(seen), "errors": errors[:5], "acknowledged": sum(acked)}


def groups(bootstrap, describe):
    from kafka import KafkaAdminClient

    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    listed = sorted(
        g["group_id"] if isinstance(g, dict) else g[0] for g in a.list_groups()
    )
    described = {
        group: {"state": d.get("group_state"), "members": len(d.get("members") or [])}
        for group, d in a.describe_groups([describe]).items()
    }
    a.close()
    return {"listed": listed, "described": described}


def main():
    bootstrap, step, *args = sys.argv[1:]
    if step == "group":
        result = group(bootstrap, args[0], args[1], int(args[2]))
    elif step == "resume":
        result = resume(bootstrap, args[0], args[1], int(args[2]))
    elif step == "times":
        result = times(bootstrap, args[0])
    elif step == "produce":
        result = produce(bootstrap, args[0], int(args[1]))
    elif step == "groups":
        result = groups(bootstrap, args[0])
    elif step == "confluent":
        result = confluent(bootstrap, args[0], args[1], int(args[2]), args[3], int(args[4]))
    else:
        raise SystemExit(f"unknown step {step}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
