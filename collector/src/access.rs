//! `topics.allow`: which topics each writer may write to.
//!
//! ```yaml
//! topics:
//!   allow:
//!     "web-*": [web, "app-*"]     # agents whose certificate names web-…
//!     etl: [imports]              # the API token named etl (HTTP or Kafka Produce)
//!     "*": [misc]                 # everyone
//! ```
//! A writer is known by its certificate identity (agents with mutual TLS), else by
//! the host its HELLO claims (agents without), or by its token name (HTTP and Kafka
//! producers with `api.auth`; without, the name is empty and only `*` matches). It
//! may write to the topics of every pattern that matches it. Without `allow`, any
//! writer may write to any topic (within `auto_create` and `max_topics`).

use std::collections::BTreeMap;

/// The compiled `topics.allow`.
#[derive(Debug, Clone, Default)]
pub struct TopicAcl {
    /// `None`: no `allow` key, everything is allowed.
    rules: Option<Vec<(glob::Pattern, Vec<glob::Pattern>)>>,
}

impl TopicAcl {
    /// Compile `allow`; the error names the pattern that is not a glob.
    pub fn new(allow: Option<&BTreeMap<String, Vec<String>>>) -> Result<TopicAcl, String> {
        let Some(allow) = allow else {
            return Ok(TopicAcl { rules: None });
        };
        let pattern = |s: &str| {
            glob::Pattern::new(s).map_err(|e| format!("`{s}` is not a glob pattern: {e}"))
        };
        let mut rules = Vec::with_capacity(allow.len());
        for (who, topics) in allow {
            let topics = topics
                .iter()
                .map(|t| pattern(t))
                .collect::<Result<Vec<_>, _>>()?;
            rules.push((pattern(who)?, topics));
        }
        Ok(TopicAcl { rules: Some(rules) })
    }

    /// Whether `writer` may write to `topic`.
    pub fn allows(&self, writer: &str, topic: &str) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        rules
            .iter()
            .filter(|(who, _)| who.matches(writer))
            .any(|(_, topics)| topics.iter().any(|t| t.matches(topic)))
    }

    /// The refusal, said once for every front door.
    pub fn refusal(writer: &str, topic: &str) -> String {
        let who = if writer.is_empty() {
            "an anonymous writer".to_owned()
        } else {
            format!("`{writer}`")
        };
        format!("{who} may not write to topic `{topic}` (topics.allow in collector.yaml)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_get_the_topics_of_every_pattern_that_matches_them() {
        let mut m = BTreeMap::new();
        m.insert(
            "web-*".to_owned(),
            vec!["web".to_owned(), "app-*".to_owned()],
        );
        m.insert("etl".to_owned(), vec!["imports".to_owned()]);
        m.insert("*".to_owned(), vec!["misc".to_owned()]);
        let acl = TopicAcl::new(Some(&m)).unwrap();
        assert!(acl.allows("web-01", "web"));
        assert!(acl.allows("web-01", "app-api"));
        assert!(acl.allows("web-01", "misc"));
        assert!(!acl.allows("web-01", "imports"));
        assert!(acl.allows("etl", "imports"));
        assert!(!acl.allows("db-01", "web"));
        assert!(acl.allows("", "misc"));
        assert!(!acl.allows("", "web"));
        assert!(TopicAcl::new(None).unwrap().allows("anyone", "anything"));
        m.insert("[".to_owned(), vec![]);
        assert!(TopicAcl::new(Some(&m)).unwrap_err().contains("`[`"));
        assert!(TopicAcl::refusal("", "web").contains("anonymous"));
    }
}
