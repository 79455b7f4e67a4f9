//! What each source is doing, for `/healthz`: its state, the partitions it was
//! assigned, its lag, and the problems it has now, each under a scope (the
//! cluster, or one topic-partition) so that one healing does not hide another.
//! Sources write it; the API reads it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// Every source's health (registered when it starts).
#[derive(Default)]
pub struct SourcesHealth {
    list: Mutex<Vec<Arc<SourceHealth>>>,
}

impl SourcesHealth {
    pub fn register(&self, name: &str, group: &str, topics: &[String]) -> Arc<SourceHealth> {
        let h = Arc::new(SourceHealth {
            name: name.to_owned(),
            group: group.to_owned(),
            topics: topics.to_vec(),
            inner: Mutex::new(Inner::default()),
        });
        lock(&self.list).push(h.clone());
        h
    }

    /// Every source as JSON, and whether any is degraded.
    pub fn report(&self) -> (Vec<Value>, bool) {
        let list = lock(&self.list).clone();
        let mut degraded = false;
        let out = list
            .iter()
            .map(|s| {
                let (v, d) = s.report();
                degraded |= d;
                v
            })
            .collect();
        (out, degraded)
    }

    /// `name: problem` of every degraded source.
    pub fn problems(&self) -> Vec<String> {
        let list = lock(&self.list).clone();
        let mut out = Vec::new();
        for s in &list {
            let inner = lock(&s.inner);
            for e in inner.errors.values() {
                out.push(format!("{} (group {}): {e}", s.name, s.group));
            }
        }
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    #[default]
    Starting,
    /// Joining the group (or waiting for its assignment).
    Joining,
    Consuming,
    Stopped,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Joining => "joining",
            State::Consuming => "consuming",
            State::Stopped => "stopped",
        }
    }
}

#[derive(Default)]
struct Inner {
    state: State,
    /// Problems now, by scope (`cluster`, `TOPIC/PARTITION`).
    errors: BTreeMap<String, String>,
    assigned: Vec<String>,
    lag: Option<i64>,
    generation: Option<i32>,
}

/// One source's health.
pub struct SourceHealth {
    pub name: String,
    pub group: String,
    pub topics: Vec<String>,
    inner: Mutex<Inner>,
}

/// The scope of problems that are not about one partition.
pub const CLUSTER: &str = "cluster";
/// The start of the scope of a problem with a whole topic (`topic NAME`).
pub const TOPIC: &str = "topic ";

impl SourceHealth {
    pub fn set_state(&self, state: State) {
        lock(&self.inner).state = state;
    }

    pub fn set_assignment(&self, generation: i32, parts: &[(String, i32)]) {
        let mut i = lock(&self.inner);
        i.generation = Some(generation);
        i.assigned = parts.iter().map(|(t, p)| format!("{t}/{p}")).collect();
        // Problems of partitions no longer ours are not ours either.
        let keep: Vec<String> = i.assigned.clone();
        i.errors
            .retain(|k, _| k == CLUSTER || k.starts_with(TOPIC) || keep.contains(k));
    }

    pub fn set_lag(&self, lag: Option<i64>) {
        lock(&self.inner).lag = lag;
    }

    /// Record a problem under `scope` (replacing the one there).
    pub fn problem(&self, scope: &str, error: String) {
        lock(&self.inner).errors.insert(scope.to_owned(), error);
    }

    /// The problem under `scope` is over.
    pub fn healed(&self, scope: &str) {
        let mut i = lock(&self.inner);
        if i.errors.remove(scope).is_some() {
            tracing::info!(source = %self.name, group = %self.group, scope, "Kafka source recovered");
        }
    }

    pub fn is_degraded(&self) -> bool {
        !lock(&self.inner).errors.is_empty()
    }

    fn report(&self) -> (Value, bool) {
        let i = lock(&self.inner);
        let degraded = !i.errors.is_empty();
        let status = if degraded { "degraded" } else { "ok" };
        let errors: Vec<String> = i
            .errors
            .iter()
            .map(|(scope, e)| {
                if scope == CLUSTER || scope.starts_with(TOPIC) {
                    e.clone()
                } else {
                    format!("{scope}: {e}")
                }
            })
            .collect();
        (
            json!({
                "source": self.name,
                "kind": "kafka",
                "group": self.group,
                "topics": self.topics,
                "status": status,
                "state": i.state.name(),
                "generation": i.generation,
                "assigned": i.assigned,
                "lag": i.lag,
                "error": (!errors.is_empty()).then(|| errors.join("; ")),
            }),
            degraded,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_heal_by_scope() {
        let all = SourcesHealth::default();
        let s = all.register("sources[0]", "g", &["app".into()]);
        assert!(!all.report().1);
        s.problem(CLUSTER, "Kafka broker k1:9092: connect: refused".into());
        s.problem("app/1", "zstd".into());
        let (v, degraded) = all.report();
        assert!(degraded);
        let err = v[0]["error"].as_str().unwrap();
        assert!(
            err.contains("k1:9092") && err.contains("app/1: zstd"),
            "{err}"
        );
        s.healed(CLUSTER);
        assert!(s.is_degraded(), "the partition's problem remains");
        // A new assignment without app/1 drops its problem.
        s.set_assignment(3, &[("app".into(), 0)]);
        assert!(!s.is_degraded());
        assert_eq!(all.report().0[0]["assigned"], json!(["app/0"]));
        assert!(all.problems().is_empty());
    }
}
