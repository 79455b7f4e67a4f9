//! A validating JSON scanner that builds nothing: it checks a text is one JSON
//! value (RFC 8259, nesting at most [`MAX_DEPTH`] deep, as serde_json allows) and,
//! for an object, finds where each top-level member's key and value start and
//! end. The agent's `parse: json` writes a line's fields back from those slices,
//! and the collector checks record fields with it, in one pass and no allocation.
//!
//! It accepts exactly what `serde_json::from_str::<IgnoredAny>` accepts (a
//! property test holds it to that), so escapes are checked for shape, not for
//! surrogate pairing, except that nesting is bounded as when serde_json builds
//! a value (what is stored can be read back).

use std::fmt;

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 127;

/// Why a text is not JSON: what was wrong and where (a byte offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntaxError {
    pub what: &'static str,
    pub at: usize,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.what, self.at + 1)
    }
}

/// One top-level member of an object, as it is in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// The key's JSON text, quotes included (valid to write back as it is).
    pub key: &'a str,
    /// Whether the key has escapes (its name is then not `key` without quotes).
    pub escaped: bool,
    /// The value's JSON text, without the whitespace around it.
    pub value: &'a str,
}

impl<'a> Member<'a> {
    /// The key's name when it has no escapes.
    pub fn plain_key(&self) -> Option<&'a str> {
        (!self.escaped).then(|| &self.key[1..self.key.len() - 1])
    }
}

/// What [`object_members`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotObject {
    /// Valid JSON of another kind.
    Kind,
    Syntax(SyntaxError),
}

/// Whether `b` is one valid JSON value, with whitespace around it allowed.
pub fn validate(b: &[u8]) -> Result<(), SyntaxError> {
    let mut s = Scanner { b, i: 0 };
    s.ws();
    s.value(0)?;
    s.end()
}

/// Whether `b` is valid JSON whose value is an object.
pub fn is_object(b: &[u8]) -> bool {
    b.trim_ascii_start().first() == Some(&b'{') && validate(b).is_ok()
}

/// The top-level members of `text` in order (duplicates included), given to
/// `each` as they are found; `Ok` when `text` is a valid JSON object.
pub fn object_members<'a>(
    text: &'a str,
    mut each: impl FnMut(Member<'a>),
) -> Result<(), NotObject> {
    let b = text.as_bytes();
    let mut s = Scanner { b, i: 0 };
    s.ws();
    if s.peek() != Some(b'{') {
        return match s.value(0).and_then(|()| s.end()) {
            Ok(()) => Err(NotObject::Kind),
            Err(e) => Err(NotObject::Syntax(e)),
        };
    }
    s.i += 1;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
        return s.end().map_err(NotObject::Syntax);
    }
    loop {
        let (key, escaped) = s.key().map_err(NotObject::Syntax)?;
        s.ws();
        let start = s.i;
        s.value(1).map_err(NotObject::Syntax)?;
        each(Member {
            key: &text[key.0..key.1],
            escaped,
            value: &text[start..s.i],
        });
        if s.after_member(b'}').map_err(NotObject::Syntax)? {
            return s.end().map_err(NotObject::Syntax);
        }
    }
}

/// Whether one of the eight bytes in `w` is `"`, `\` or a control character. It
/// may also say so for a byte after one that is (a borrow), never for none.
fn has_special(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\'))) | control) != 0
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn err<T>(&self, what: &'static str) -> Result<T, SyntaxError> {
        Err(SyntaxError { what, at: self.i })
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn end(&mut self) -> Result<(), SyntaxError> {
        self.ws();
        if self.i < self.b.len() {
            return self.err("trailing characters");
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<(), SyntaxError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(_) => self.err("expected a value"),
            None => self.err("unexpected end while expecting a value"),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), SyntaxError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            self.err("expected a value")
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<(), SyntaxError> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.err("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        Ok(())
    }

    /// A string starting at `"`; whether it has escapes.
    fn string(&mut self) -> Result<bool, SyntaxError> {
        self.i += 1;
        let mut escaped = false;
        loop {
            // The common case first: plain text up to the next byte that matters,
            // eight bytes at a time while none of them does.
            while let Some(w) = self.b.get(self.i..self.i + 8) {
                let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
                if has_special(w) {
                    break;
                }
                self.i += 8;
            }
            while let Some(&c) = self.b.get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            for _ in 0..4 {
                                if !self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                                    return self.err("invalid \\u escape");
                                }
                                self.i += 1;
                            }
                        }
                        None => return self.err("unterminated string"),
                        Some(_) => return self.err("invalid escape"),
                    }
                }
                Some(_) => return self.err("control character in string"),
                None => return self.err("unterminated string"),
            }
        }
    }

    /// An object's key and the `:` after it: the key's text span and escapes.
    fn key(&mut self) -> Result<((usize, usize), bool), SyntaxError> {
        if self.peek() != Some(b'"') {
            return self.err("expected a key");
        }
        let start = self.i;
        let escaped = self.string()?;
        let span = (start, self.i);
        self.ws();
        if self.peek() != Some(b':') {
            return self.err("expected ':'");
        }
        self.i += 1;
        Ok((span, escaped))
    }

    /// After a member or element: `,` (then more follow) or `close` (done).
    fn after_member(&mut self, close: u8) -> Result<bool, SyntaxError> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                self.ws();
                Ok(false)
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(true)
            }
            Some(_) if close == b'}' => self.err("expected ',' or '}'"),
            Some(_) => self.err("expected ',' or ']'"),
            None => self.err("unexpected end"),
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), SyntaxError> {
        if depth > MAX_DEPTH {
            return self.err("nested too deep");
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.key()?;
            self.ws();
            self.value(depth)?;
            if self.after_member(b'}')? {
                return Ok(());
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), SyntaxError> {
        if depth > MAX_DEPTH {
            return self.err("nested too deep");
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.value(depth)?;
            if self.after_member(b']')? {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde_ok(s: &str) -> bool {
        serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
    }

    #[test]
    fn members_are_found_as_written() {
        let text = r#" { "a" : [1, {"b": "}"}] ,	"k\"q":"v\n" , "n":-1.5e+3,"t":true,"z":null} "#;
        let mut m = Vec::new();
        object_members(text, |x| m.push(x)).unwrap();
        let got: Vec<_> = m.iter().map(|m| (m.key, m.escaped, m.value)).collect();
        assert_eq!(
            got,
            [
                (r#""a""#, false, r#"[1, {"b": "}"}]"#),
                (r#""k\"q""#, true, r#""v\n""#),
                (r#""n""#, false, "-1.5e+3"),
                (r#""t""#, false, "true"),
                (r#""z""#, false, "null"),
            ]
        );
        assert_eq!(m[0].plain_key(), Some("a"));
        assert_eq!(m[1].plain_key(), None);
        assert_eq!(object_members("{}", |_| panic!("no members")), Ok(()));
        assert_eq!(object_members("[1]", |_| {}), Err(NotObject::Kind));
        let Err(NotObject::Syntax(e)) = object_members(r#"{"a":1,}"#, |_| {}) else {
            panic!("a trailing comma is an error")
        };
        assert_eq!(e.to_string(), "expected a key at column 8");
    }

    #[test]
    fn nesting_is_bounded_like_serde_json() {
        // As deep as serde_json builds values (IgnoredAny alone has no limit).
        for depth in [127, 128, 129, 10_000] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let built = serde_json::from_str::<serde_json::Value>(&text).is_ok();
            assert_eq!(validate(text.as_bytes()).is_ok(), built, "{depth}");
        }
        assert!(is_object(br#" {"a":{"b":[]}}"#));
        assert!(!is_object(b"[]"));
        assert!(!is_object(b"{\"a\":}"));
    }

    /// Text made of JSON's own pieces, so that most of it is nearly valid.
    fn jsonish() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "{", "}", "[", "]", "\"", "\\", "\\u00e9", "\\ud800", "\\x", ":", ",", " ", "\n", "\t",
            "0", "-", "1.5", "e", "E+", ".", "01", "true", "fals", "null", "\"k\"", "a", "é",
            "\u{1}", "\"\\n\"",
        ]);
        prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn accepts_exactly_what_serde_json_accepts(text in jsonish()) {
            prop_assert_eq!(validate(text.as_bytes()).is_ok(), serde_ok(&text), "{}", text);
            let mut m = Vec::new();
            match object_members(&text, |x| m.push(x)) {
                Ok(()) => {
                    let v: serde_json::Value = match serde_json::from_str(&text) {
                        Ok(v) => v,
                        // Lone surrogates: valid to skip, not to decode.
                        Err(_) => return Ok(()),
                    };
                    let obj = v.as_object().expect("an object");
                    for member in &m {
                        let key: String = serde_json::from_str(member.key).expect("key");
                        prop_assert!(obj.contains_key(&key));
                    }
                    // Without escaped keys, the last member of a name is its value.
                    if let Some(member) = m.last().filter(|_| m.iter().all(|x| !x.escaped)) {
                        let value: serde_json::Value = serde_json::from_str(member.value).expect("value");
                        prop_assert_eq!(&obj[member.plain_key().unwrap()], &value);
                    }
                }
                Err(NotObject::Kind) => {
                    let opens = text.trim_start().starts_with('{');
                    prop_assert!(serde_ok(&text) && !opens, "{}", text);
                }
                Err(NotObject::Syntax(_)) => prop_assert!(!serde_ok(&text)),
            }
        }

        #[test]
        fn objects_from_serde_json_round_trip(v in prop::collection::btree_map(
            "[a-z\"\\\\é\u{1}]{0,8}",
            (any::<i64>(), any::<Option<bool>>(), prop::collection::vec(".{0,8}", 0..4)),
            0..8,
        )) {
            let text = serde_json::to_string(&v).expect("encode");
            let mut n = 0;
            prop_assert!(object_members(&text, |_| n += 1).is_ok(), "{}", text);
            prop_assert_eq!(n, v.len());
        }
    }
}
