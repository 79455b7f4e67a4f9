//! Fuzz the JSON scanner (`tributary_common::json`) that the agent's `parse: json`
//! runs on every log line and the collector on every record's fields, against
//! serde_json, the reader everything downstream uses.
//!
//! Checked, beyond "no panic, no hang":
//! - `validate` accepts what `serde_json::from_str::<IgnoredAny>` accepts, except
//!   text nested deeper than serde_json builds values (`MAX_DEPTH`), refused as
//!   "nested too deep"; whatever serde_json builds into a `Value`, it accepts;
//! - `object_members` agrees with `validate` and with `is_object`, and for an
//!   object serde_json builds, the members are its members: each key decodes to a
//!   key of the `Value`, each value's text is that value when its key is the last
//!   of its name, and there are as many distinct names as the `Value` has keys.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_common::json::{self, NotObject};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // Still scanned (the collector checks UTF-8 on its own); no reference.
        let _ = json::validate(data);
        return;
    };
    let skipped = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    let built = serde_json::from_str::<serde_json::Value>(text).ok();
    match json::validate(data) {
        Ok(()) => assert!(skipped, "accepted what serde_json refuses: {text:?}"),
        Err(e) => {
            assert!(built.is_none(), "refused what serde_json builds: {text:?}: {e}");
            assert!(!skipped || e.what == "nested too deep", "{text:?}: {e}");
        }
    }
    let mut members = Vec::new();
    let found = json::object_members(text, |m| members.push(m));
    let valid = json::validate(data).is_ok();
    match found {
        Ok(()) => assert!(valid && json::is_object(data)),
        Err(NotObject::Kind) => assert!(valid && !json::is_object(data)),
        Err(NotObject::Syntax(_)) => assert!(!valid),
    }
    if let (Ok(()), Some(serde_json::Value::Object(obj))) = (found, built) {
        let mut names = std::collections::HashMap::new();
        for (i, m) in members.iter().enumerate() {
            let name: String = serde_json::from_str(m.key).expect("a member's key decodes");
            assert!(obj.contains_key(&name), "{name:?} not in {text:?}");
            names.insert(name, i);
        }
        assert_eq!(names.len(), obj.len(), "{text:?}");
        for (name, i) in names {
            let v: serde_json::Value =
                serde_json::from_str(members[i].value).expect("a member's value decodes");
            assert_eq!(obj[&name], v, "{text:?}");
        }
    }
});
