//! JSON text to `serde_json::Value` in one pass, noting every object key that appears twice.
//!
//! `serde_json` keeps the last copy of a repeated key, serde's derived structs refuse it, and
//! other languages' parsers keep the first or the last: one body could mean two events. The
//! relay forwards bodies byte for byte, so the receiver's parser decides too; the only safe
//! answer is to refuse a repeated key anywhere in the body. Keys are compared after unescaping
//! (`"i\u0064"` is `"id"`), as every parser compares them.
//!
//! The path of each repeat is built only when one is found: while parsing, the path is a
//! chain of borrowed segments on the stack. Depth stays bounded by serde_json's recursion
//! limit (128), which applies to this visitor as to its own.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::fmt;

/// A key that appeared twice in one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepeatedKey {
    /// Dotted path of the second copy: `data.message.id`, `[2].data.message.id` in an array.
    pub path: String,
    /// The element of a top-level array it is in (a batch item), if the body is an array.
    pub item: Option<usize>,
}

/// Parses `text` like `serde_json::from_str::<Value>` (same syntax errors, last copy wins),
/// and also returns the repeated keys: one for the body, and for a top-level array one for
/// each element (the first found; a repeat is found once its second copy's value is parsed,
/// so a repeat nested in that value is found first).
pub fn parse(text: &str) -> Result<(Value, Vec<RepeatedKey>), serde_json::Error> {
    let repeats = RefCell::new(Vec::new());
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = Seed {
        path: &Path::Root,
        repeats: &repeats,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok((value, repeats.into_inner()))
}

/// Where the value being parsed sits, as a chain back to the root.
enum Path<'p> {
    Root,
    Key(&'p str, &'p Path<'p>),
    Index(usize, &'p Path<'p>),
}

impl Path<'_> {
    /// The index in the top-level array, if the root is an array.
    fn item(&self) -> Option<usize> {
        match self {
            Path::Root => None,
            Path::Index(index, Path::Root) => Some(*index),
            Path::Key(_, parent) | Path::Index(_, parent) => parent.item(),
        }
    }

    fn render(&self, out: &mut String) {
        // A key is shown whole up to this many characters: a path is an error message, and a
        // hostile 1 MiB key should not come back whole.
        const SHOWN: usize = 40;
        match self {
            Path::Root => {}
            Path::Key(key, parent) => {
                parent.render(out);
                if !out.is_empty() {
                    out.push('.');
                }
                if key.chars().count() <= SHOWN {
                    out.push_str(key);
                } else {
                    out.extend(key.chars().take(SHOWN));
                    out.push('…');
                }
            }
            Path::Index(index, parent) => {
                parent.render(out);
                out.push_str(&format!("[{index}]"));
            }
        }
    }
}

struct Seed<'p> {
    path: &'p Path<'p>,
    repeats: &'p RefCell<Vec<RepeatedKey>>,
}

impl Seed<'_> {
    /// Keeps the first repeat found in the body and in each top-level element: that is all a
    /// refusal reports, and a hostile body with thousands of repeats costs no more memory.
    fn note_repeat(&self, key: &str) {
        let at = Path::Key(key, self.path);
        let item = at.item();
        let mut repeats = self.repeats.borrow_mut();
        let already = match repeats.last() {
            Some(last) => item.is_none() || last.item == item,
            None => false,
        };
        if !already {
            let mut path = String::new();
            at.render(&mut path);
            repeats.push(RepeatedKey { path, item });
        }
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        // As serde_json's own `Value` does: JSON text cannot spell a non-finite number.
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut array = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        loop {
            let at = Path::Index(array.len(), self.path);
            let seed = Seed {
                path: &at,
                repeats: self.repeats,
            };
            match seq.next_element_seed(seed)? {
                Some(value) => array.push(value),
                None => return Ok(Value::Array(array)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let at = Path::Key(&key, self.path);
            let value = access.next_value_seed(Seed {
                path: &at,
                repeats: self.repeats,
            })?;
            // One map lookup per key, as serde_json's own `Value` does: a `contains_key`
            // before the value would cost a second one.
            match map.entry(key) {
                Entry::Vacant(entry) => {
                    entry.insert(value);
                }
                Entry::Occupied(mut entry) => {
                    self.note_repeat(entry.key());
                    entry.insert(value);
                }
            }
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repeats(text: &str) -> Vec<(String, Option<usize>)> {
        parse(text)
            .unwrap()
            .1
            .into_iter()
            .map(|r| (r.path, r.item))
            .collect()
    }

    #[test]
    fn values_are_those_serde_json_reads() {
        for text in [
            r#"{"a":[1,-2,3.5,1e300,"x\u00e9",true,null,{}],"b":{"c":[[]]}}"#,
            "[]",
            "\"\\ud83d\\ude00\"",
            "18446744073709551615",
            "-9223372036854775808",
            "0.1",
        ] {
            let expected: Value = serde_json::from_str(text).unwrap();
            assert_eq!(parse(text).unwrap(), (expected, vec![]), "{text}");
        }
    }

    #[test]
    fn syntax_errors_are_serde_jsons() {
        for text in ["{", "[1,]", "{\"a\":1} x", "\"\\ud800\"", "1e400", ""] {
            let ours = parse(text).unwrap_err().to_string();
            let theirs = serde_json::from_str::<Value>(text).unwrap_err().to_string();
            assert_eq!(ours, theirs, "{text}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(
            parse(&deep)
                .unwrap_err()
                .to_string()
                .contains("recursion limit")
        );
    }

    #[test]
    fn repeated_keys_are_found_at_any_depth_with_their_path() {
        assert_eq!(repeats(r#"{"id":"a","id":"b"}"#), [("id".into(), None)]);
        assert_eq!(
            repeats(r#"{"id":"a","i\u0064":"b"}"#),
            [("id".into(), None)],
            "keys compare unescaped"
        );
        assert_eq!(
            repeats(r#"{"data":{"message":{"id":"1","to":"x","id":"2"}}}"#),
            [("data.message.id".into(), None)]
        );
        assert_eq!(
            repeats(r#"{"a":[{"b":1},{"c":[{"d":1,"d":2}]}]}"#),
            [("a[1].c[0].d".into(), None)]
        );
        assert_eq!(
            repeats(r#"{"a":1,"a":2,"c":{"b":1,"b":2}}"#),
            [("a".into(), None)],
            "only the first repeat of a body"
        );
        assert_eq!(
            repeats(r#"{"a":1,"a":{"b":1,"b":2}}"#),
            [("a.b".into(), None)],
            "a repeat inside the second copy is found first"
        );
        assert!(repeats(r#"{"a":{"id":1},"b":{"id":1},"id":1}"#).is_empty());
        assert!(
            repeats(r#"{"Id":1,"id":2,"i d":3}"#).is_empty(),
            "case and spaces matter"
        );
    }

    #[test]
    fn a_top_level_array_reports_the_first_repeat_of_each_element() {
        assert_eq!(
            repeats(r#"[{"a":1},{"b":{"c":1,"c":2},"b":3},{},{"e":[{"f":1,"f":1}]}]"#),
            [("[1].b.c".into(), Some(1)), ("[3].e[0].f".into(), Some(3))]
        );
    }

    #[test]
    fn a_long_key_is_cut_in_the_path() {
        let key = "k".repeat(10_000);
        let found = repeats(&format!(r#"{{"{key}":1,"{key}":2}}"#));
        assert_eq!(found[0].0, format!("{}…", "k".repeat(40)));
    }

    #[test]
    fn thousands_of_repeats_keep_one_report() {
        let body = format!("{{{}\"a\":1}}", "\"a\":1,".repeat(100_000));
        assert_eq!(repeats(&body).len(), 1);
    }
}
