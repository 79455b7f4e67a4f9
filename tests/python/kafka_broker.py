"""kafka-python against a Kafka-compatible broker (noida-db), for the tests of
Tributary's Kafka output (tests/tests/kafka_output.rs).

Usage: kafka_broker.py BOOTSTRAP STEP [ARGS...]; prints one JSON value on stdout.

Steps:
  create TOPIC PARTITIONS   CreateTopics through the admin client.
  read TOPIC EXPECTED       every record of TOPIC from the beginning, until
                            EXPECTED are read (or 60 s pass): a list of
                            {partition, offset, key, value, timestamp, headers}.
"""

import json
import sys
import time

DEADLINE = 60  # seconds any step may take


def create(bootstrap, topic, partitions):
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    admin.create_topics([NewTopic(topic, int(partitions), 1)])
    admin.close()
    return {"created": topic}


def text(b):
    return None if b is None else b.decode("utf-8", "replace")


def read(bootstrap, topic, expected):
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    out = []
    until = time.time() + DEADLINE
    while len(out) < int(expected) and time.time() < until:
        for m in consumer:
            out.append(
                {
                    "partition": m.partition,
                    "offset": m.offset,
                    "key": text(m.key),
                    "value": text(m.value),
                    "timestamp": m.timestamp,
                    "headers": {k: text(v) for k, v in m.headers},
                }
            )
    consumer.close()
    return out


def main():
    bootstrap, step, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    result = {"create": create, "read": read}[step](bootstrap, *args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
