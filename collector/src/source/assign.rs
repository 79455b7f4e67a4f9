//! The consumer group protocol's payloads (pure: no I/O): subscriptions and
//! assignments in the encoding of Kafka's own consumers (a big-endian `i16`
//! version, then `ConsumerProtocolSubscription` / `ConsumerProtocolAssignment`),
//! and the `range` assignor the group leader runs.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// The assignor this source offers (Kafka's `RangeAssignor`).
pub const RANGE: &str = "range";
/// The newest version of the consumer protocol's messages the crate decodes.
const NEWEST: i16 = 3;

/// Our subscription: `topics`, version 0.
pub fn subscription(topics: &[String]) -> Bytes {
    let s = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|t| StrBytes::from_string(t.clone()))
            .collect(),
    );
    prefixed(&s, 0)
}

fn prefixed<M: Encodable>(m: &M, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    // Encoding a message built here cannot fail (no field exceeds its limits).
    if m.encode(&mut buf, version).is_err() {
        buf.truncate(2);
    }
    buf.freeze()
}

fn read_version(b: &mut Bytes, what: &str) -> Result<i16, String> {
    if b.remaining() < 2 {
        return Err(format!("a {what} of {} bytes", b.remaining()));
    }
    let v = b.get_i16();
    if v < 0 {
        return Err(format!("a {what} of version {v}"));
    }
    // Later versions only add fields at the end: read what this crate knows.
    Ok(v.min(NEWEST))
}

/// The topics a member subscribed to (from its JoinGroup metadata).
pub fn parse_subscription(bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut b = Bytes::copy_from_slice(bytes);
    let v = read_version(&mut b, "subscription")?;
    let s = ConsumerProtocolSubscription::decode(&mut b, v)
        .map_err(|e| format!("a malformed subscription: {e}"))?;
    Ok(s.topics.iter().map(|t| t.as_str().to_owned()).collect())
}

/// An assignment: partitions by topic, version 0.
pub fn assignment(parts: &BTreeMap<String, Vec<i32>>) -> Bytes {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        parts
            .iter()
            .map(|(t, ps)| {
                TopicPartition::default()
                    .with_topic(TopicName(StrBytes::from_string(t.clone())))
                    .with_partitions(ps.clone())
            })
            .collect(),
    );
    prefixed(&a, 0)
}

/// The (topic, partition) pairs of an assignment (empty bytes: nothing).
pub fn parse_assignment(bytes: &[u8]) -> Result<Vec<(String, i32)>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut b = Bytes::copy_from_slice(bytes);
    let v = read_version(&mut b, "assignment")?;
    let a = ConsumerProtocolAssignment::decode(&mut b, v)
        .map_err(|e| format!("a malformed assignment: {e}"))?;
    let mut out = Vec::new();
    for t in &a.assigned_partitions {
        for p in &t.partitions {
            out.push((t.topic.0.as_str().to_owned(), *p));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A member of the group as the leader sees it.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance: Option<String>,
    pub topics: Vec<String>,
}

/// Kafka's member order for assignors: static members by instance id first,
/// then dynamic members by member id.
fn order(a: &Member, b: &Member) -> std::cmp::Ordering {
    match (&a.instance, &b.instance) {
        (Some(x), Some(y)) => x.cmp(y).then_with(|| a.id.cmp(&b.id)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.id.cmp(&b.id),
    }
}

/// The range assignment: per topic, its partitions in order cut into as many
/// contiguous ranges as members subscribe to it, the first members taking one
/// more when they do not divide evenly. `partitions`: count per topic (topics
/// missing from it are not assigned). Every member gets an entry.
pub fn range(
    members: &[Member],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<i32>>> = members
        .iter()
        .map(|m| (m.id.clone(), BTreeMap::new()))
        .collect();
    for (topic, &n) in partitions {
        let mut subscribed: Vec<&Member> = members
            .iter()
            .filter(|m| m.topics.contains(topic))
            .collect();
        if subscribed.is_empty() || n <= 0 {
            continue;
        }
        subscribed.sort_by(|a, b| order(a, b));
        let count = subscribed.len() as i32;
        let (per, extra) = (n / count, n % count);
        for (i, m) in subscribed.iter().enumerate() {
            let i = i as i32;
            let start = per * i + i.min(extra);
            let len = per + i32::from(i < extra);
            if len > 0
                && let Some(slot) = out.get_mut(&m.id)
            {
                slot.insert(topic.clone(), (start..start + len).collect());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, instance: Option<&str>, topics: &[&str]) -> Member {
        Member {
            id: id.into(),
            instance: instance.map(Into::into),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn range_cuts_each_topic_into_contiguous_ranges() {
        let members = [
            member("m-b", None, &["app", "web"]),
            member("m-a", None, &["app"]),
            member("m-c", None, &["app", "web"]),
        ];
        let parts = BTreeMap::from([
            ("app".to_string(), 7),
            ("web".to_string(), 3),
            ("none".to_string(), 2),
        ]);
        let a = range(&members, &parts);
        assert_eq!(a["m-a"]["app"], vec![0, 1, 2]);
        assert_eq!(a["m-b"]["app"], vec![3, 4]);
        assert_eq!(a["m-c"]["app"], vec![5, 6]);
        assert_eq!(a["m-b"]["web"], vec![0, 1]);
        assert_eq!(a["m-c"]["web"], vec![2]);
        assert!(!a["m-a"].contains_key("web"));

        // More members than partitions: the last get nothing, but an entry.
        let many: Vec<Member> = (0..5)
            .map(|i| member(&format!("m{i}"), None, &["t"]))
            .collect();
        let a = range(&many, &BTreeMap::from([("t".to_string(), 2)]));
        assert_eq!(a.len(), 5);
        assert_eq!(a["m0"]["t"], vec![0]);
        assert_eq!(a["m1"]["t"], vec![1]);
        assert!(a["m4"].is_empty());

        // Static members first, by instance id, whatever their member ids.
        let mixed = [
            member("z", Some("inst-b"), &["t"]),
            member("a", None, &["t"]),
            member("y", Some("inst-a"), &["t"]),
        ];
        let a = range(&mixed, &BTreeMap::from([("t".to_string(), 3)]));
        assert_eq!((a["y"]["t"][0], a["z"]["t"][0], a["a"]["t"][0]), (0, 1, 2));

        // Every partition exactly once, for any count of members and partitions.
        for m in 1..6 {
            for n in 0..12 {
                let ms: Vec<Member> = (0..m)
                    .map(|i| member(&format!("m{i}"), None, &["t"]))
                    .collect();
                let a = range(&ms, &BTreeMap::from([("t".to_string(), n)]));
                let mut all: Vec<i32> = a
                    .values()
                    .flat_map(|t| t.get("t").cloned().unwrap_or_default())
                    .collect();
                all.sort();
                assert_eq!(
                    all,
                    (0..n).collect::<Vec<_>>(),
                    "{m} members, {n} partitions"
                );
            }
        }
    }

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let s = subscription(&["app".into(), "web".into()]);
        assert_eq!(&s[..2], &[0, 0], "version 0 first");
        assert_eq!(parse_subscription(&s).unwrap(), vec!["app", "web"]);
        let a = assignment(&BTreeMap::from([
            ("web".to_string(), vec![2]),
            ("app".to_string(), vec![1, 0]),
        ]));
        assert_eq!(
            parse_assignment(&a).unwrap(),
            vec![("app".into(), 0), ("app".into(), 1), ("web".into(), 2)]
        );
        assert!(parse_assignment(&[]).unwrap().is_empty());

        // A later version (what newer consumers send) is read as far as known.
        let v3 = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("x")])
            .with_generation_id(4);
        let mut b = BytesMut::new();
        b.put_i16(5);
        v3.encode(&mut b, 3).unwrap();
        b.put_slice(b"future fields");
        assert_eq!(parse_subscription(&b).unwrap(), vec!["x"]);

        // Malformed: errors, never panics.
        for bad in [&b""[..], &[0], &[0xff, 0xff], &[0, 0, 0, 0, 0, 9, 0]] {
            assert!(parse_subscription(bad).is_err(), "{bad:?}");
        }
        assert!(parse_assignment(&[0, 0, 0, 0, 0, 9]).is_err());
    }
}
