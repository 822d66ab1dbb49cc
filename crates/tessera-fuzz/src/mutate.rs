//! Mutation strategies: a valid seed, changed the ways hostile input
//! differs from it. Byte-level ([`Mutation`]: flips, inserts, cuts, splices
//! of another seed, numbers and strings replaced by extremes, which works on
//! JSON and TOML alike) and JSON-aware ([`JsonMutation`]: fields added,
//! dropped, retyped). Every strategy shrinks to the seed itself.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

/// Numbers that break code which assumes sane ones: the edges of every
/// integer width, negatives, floats, the protocol's own limits and one past.
pub const EXTREME_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "255",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "-2147483649",
    "9007199254740992",
    "9007199254740993",
    "4611686018427387904",
    "4611686018427387905",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "1e308",
    "1e309",
    "-0",
    "0.5",
    "1e2",
];

/// Strings that break code which assumes sane ones.
pub fn extreme_strings() -> Vec<String> {
    vec![
        String::new(),
        " ".into(),
        "\u{0}".into(),
        "\\u0000".into(),
        "\u{7f}\u{1b}[31m".into(),
        "é日本\u{202e}".into(),
        "../../../etc/passwd".into(),
        "A".repeat(257),
        "x".repeat(70_000),
        "\"".into(),
        "\\".into(),
        "cad".into(),
        "A".into(),
        "(lost majority)".into(),
        "\u{fffd}".into(),
    ]
}

/// Tokens spliced into text: bits of JSON and TOML syntax.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "null",
    "true",
    "[[license]]",
    "[[servers]]",
    "=",
    "\n",
    "#",
    "'''",
    "\"\"\"",
    "[distribution.cad]",
    "{\"a\":",
    "\\u",
    "\u{0}",
];

/// One change to a byte string.
#[derive(Clone, Debug)]
pub enum Mutation {
    FlipBit {
        at: Index,
        bit: u8,
    },
    SetByte {
        at: Index,
        byte: u8,
    },
    Insert {
        at: Index,
        bytes: Vec<u8>,
    },
    InsertToken {
        at: Index,
        token: Index,
    },
    Remove {
        at: Index,
        len: usize,
    },
    Truncate {
        at: Index,
    },
    Duplicate {
        at: Index,
        len: usize,
    },
    /// A piece of another seed put in.
    Splice {
        seed: Index,
        from: Index,
        len: usize,
        at: Index,
    },
    /// The n-th number in the text replaced by an extreme one.
    Number {
        which: Index,
        value: Index,
    },
    /// The n-th quoted string's content replaced by an odd one.
    Text {
        which: Index,
        value: Index,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(at, token)| Mutation::InsertToken { at, token }),
        2 => (any::<Index>(), 1usize..32).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        1 => (any::<Index>(), 1usize..64).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        1 => (any::<Index>(), any::<Index>(), 1usize..256, any::<Index>())
            .prop_map(|(seed, from, len, at)| Mutation::Splice { seed, from, len, at }),
        5 => (any::<Index>(), any::<Index>()).prop_map(|(which, value)| Mutation::Number { which, value }),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(which, value)| Mutation::Text { which, value }),
    ]
}

/// Where the numbers of a text are: runs of digits, with a leading `-`.
fn number_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = if i > 0 && bytes[i - 1] == b'-' {
                i - 1
            } else {
                i
            };
            let mut end = i;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            spans.push((start, end));
            i = end;
        } else {
            i += 1;
        }
    }
    spans
}

/// Where the contents of the double-quoted strings of a text are.
fn string_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            let end = end.min(bytes.len());
            spans.push((start, end));
            i = end + 1;
        } else {
            i += 1;
        }
    }
    spans
}

fn pick<'a, T>(items: &'a [T], index: &Index) -> Option<&'a T> {
    (!items.is_empty()).then(|| index.get(items))
}

fn position(bytes: &[u8], at: &Index) -> usize {
    at.index(bytes.len() + 1)
}

impl Mutation {
    /// Applies the change to `bytes`; `seeds` are the other seeds a splice
    /// may take from.
    pub fn apply(&self, bytes: &mut Vec<u8>, seeds: &[Vec<u8>]) {
        match self {
            Mutation::FlipBit { at, bit } => {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] ^= 1 << bit;
                }
            }
            Mutation::SetByte { at, byte } => {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] = *byte;
                }
            }
            Mutation::Insert { at, bytes: new } => {
                let i = position(bytes, at);
                bytes.splice(i..i, new.iter().copied());
            }
            Mutation::InsertToken { at, token } => {
                let i = position(bytes, at);
                let token = token.get(TOKENS).as_bytes();
                bytes.splice(i..i, token.iter().copied());
            }
            Mutation::Remove { at, len } => {
                let i = position(bytes, at);
                let end = (i + len).min(bytes.len());
                bytes.drain(i..end);
            }
            Mutation::Truncate { at } => {
                let i = position(bytes, at);
                bytes.truncate(i);
            }
            Mutation::Duplicate { at, len } => {
                let i = position(bytes, at);
                let end = (i + len).min(bytes.len());
                let piece: Vec<u8> = bytes[i..end].to_vec();
                bytes.splice(end..end, piece);
            }
            Mutation::Splice {
                seed,
                from,
                len,
                at,
            } => {
                if let Some(other) = pick(seeds, seed) {
                    let start = position(other, from);
                    let end = (start + len).min(other.len());
                    let i = position(bytes, at);
                    bytes.splice(i..i, other[start..end].iter().copied());
                }
            }
            Mutation::Number { which, value } => {
                if let Some(&(start, end)) = pick(&number_spans(bytes), which) {
                    let value = value.get(EXTREME_NUMBERS).as_bytes();
                    bytes.splice(start..end, value.iter().copied());
                }
            }
            Mutation::Text { which, value } => {
                if let Some(&(start, end)) = pick(&string_spans(bytes), which) {
                    let strings = extreme_strings();
                    // Escaped as JSON would, so the result stays a string
                    // of the document more often than not.
                    let escaped =
                        serde_json::to_string(value.get(&strings)).expect("a string serializes");
                    let inner = escaped.as_bytes()[1..escaped.len() - 1].to_vec();
                    bytes.splice(start..end, inner);
                }
            }
        }
    }
}

/// A seed from `seeds`, changed by up to `max_mutations` mutations.
pub fn mutated_bytes(seeds: Vec<Vec<u8>>, max_mutations: usize) -> impl Strategy<Value = Vec<u8>> {
    assert!(!seeds.is_empty(), "a fuzz target needs a seed");
    (
        any::<Index>(),
        proptest::collection::vec(mutation(), 0..=max_mutations),
    )
        .prop_map(move |(seed, mutations)| {
            let mut bytes = seed.get(&seeds).clone();
            for mutation in &mutations {
                mutation.apply(&mut bytes, &seeds);
            }
            bytes
        })
}

/// Text seeds, changed as bytes, read back as text (lossily: a parser of
/// `&str` never sees invalid UTF-8).
pub fn mutated_text(seeds: Vec<String>, max_mutations: usize) -> impl Strategy<Value = String> {
    let seeds = seeds.into_iter().map(String::into_bytes).collect();
    mutated_bytes(seeds, max_mutations)
        .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// One change to a JSON document's structure.
#[derive(Clone, Debug)]
pub enum JsonMutation {
    /// An object gains a field it does not know.
    AddField {
        node: Index,
        name: Index,
        value: Index,
    },
    /// A field or element goes.
    Remove { node: Index },
    /// A value becomes one of another type, or an extreme of its own.
    Replace { node: Index, value: Index },
    /// A value is wrapped in arrays and objects many levels deep.
    Nest { node: Index, depth: usize },
}

const FIELD_NAMES: &[&str] = &[
    "sneaky",
    "force",
    "term",
    "index",
    "seats",
    "count",
    "server_id",
    "",
    "__proto__",
];

/// Values put in place of others.
fn replacement_values() -> Vec<Value> {
    let mut values = vec![
        Value::Null,
        Value::Bool(true),
        Value::Bool(false),
        Value::Array(vec![]),
        Value::Object(Default::default()),
        serde_json::json!(u64::MAX),
        serde_json::json!(i64::MAX),
        serde_json::json!(i64::MIN),
        serde_json::json!(-1),
        serde_json::json!(1u64 << 62),
        serde_json::json!((1u64 << 62) + 1),
        serde_json::json!(1.5),
        serde_json::json!(u32::MAX),
        serde_json::json!(u64::from(u32::MAX) + 1),
    ];
    values.extend(extreme_strings().into_iter().map(Value::String));
    values
}

/// The JSON pointers of every node of `value`, the root included.
fn pointers(value: &Value) -> Vec<String> {
    fn walk(value: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let key = key.replace('~', "~0").replace('/', "~1");
                    walk(child, format!("{at}/{key}"), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out
}

fn parent_and_key(pointer: &str) -> Option<(&str, String)> {
    let (parent, key) = pointer.rsplit_once('/')?;
    Some((parent, key.replace("~1", "/").replace("~0", "~")))
}

impl JsonMutation {
    pub fn apply(&self, document: &mut Value) {
        let all = pointers(document);
        match self {
            JsonMutation::AddField { node, name, value } => {
                let objects: Vec<&String> = all
                    .iter()
                    .filter(|p| document.pointer(p).is_some_and(Value::is_object))
                    .collect();
                if let Some(pointer) = pick(&objects, node) {
                    let pointer = (*pointer).clone();
                    let values = replacement_values();
                    if let Some(Value::Object(map)) = document.pointer_mut(&pointer) {
                        map.insert(
                            name.get(FIELD_NAMES).to_string(),
                            value.get(&values).clone(),
                        );
                    }
                }
            }
            JsonMutation::Remove { node } => {
                let Some(pointer) = pick(&all[1.min(all.len())..], node) else {
                    return;
                };
                let Some((parent, key)) = parent_and_key(pointer) else {
                    return;
                };
                match document.pointer_mut(parent) {
                    Some(Value::Object(map)) => {
                        map.remove(&key);
                    }
                    Some(Value::Array(items)) => {
                        if let Ok(i) = key.parse::<usize>() {
                            if i < items.len() {
                                items.remove(i);
                            }
                        }
                    }
                    _ => {}
                }
            }
            JsonMutation::Replace { node, value } => {
                if let Some(pointer) = pick(&all, node) {
                    let values = replacement_values();
                    if let Some(slot) = document.pointer_mut(pointer) {
                        *slot = value.get(&values).clone();
                    }
                }
            }
            JsonMutation::Nest { node, depth } => {
                if let Some(pointer) = pick(&all, node) {
                    if let Some(slot) = document.pointer_mut(pointer) {
                        let mut nested = slot.take();
                        for level in 0..*depth {
                            nested = if level % 2 == 0 {
                                Value::Array(vec![nested])
                            } else {
                                serde_json::json!({ "a": nested })
                            };
                        }
                        *slot = nested;
                    }
                }
            }
        }
    }
}

fn json_mutation() -> impl Strategy<Value = JsonMutation> {
    prop_oneof![
        2 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(node, name, value)| JsonMutation::AddField { node, name, value }),
        2 => any::<Index>().prop_map(|node| JsonMutation::Remove { node }),
        4 => (any::<Index>(), any::<Index>()).prop_map(|(node, value)| JsonMutation::Replace { node, value }),
        1 => (any::<Index>(), 1usize..200).prop_map(|(node, depth)| JsonMutation::Nest { node, depth }),
    ]
}

/// A JSON seed from `seeds` changed in its structure, then, sometimes, as
/// bytes: structure-aware mutations reach deep into valid shapes, byte
/// mutations reach the parser itself.
pub fn mutated_json(seeds: Vec<Value>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!seeds.is_empty(), "a fuzz target needs a seed");
    let byte_seeds: Vec<Vec<u8>> = seeds
        .iter()
        .map(|seed| serde_json::to_vec(seed).expect("a seed serializes"))
        .collect();
    (
        any::<Index>(),
        proptest::collection::vec(json_mutation(), 0..4),
        proptest::collection::vec(mutation(), 0..3),
    )
        .prop_map(move |(seed, structural, bytewise)| {
            let mut document = seed.get(&seeds).clone();
            for mutation in &structural {
                mutation.apply(&mut document);
            }
            let mut bytes = serde_json::to_vec(&document).expect("a value serializes");
            for mutation in &bytewise {
                mutation.apply(&mut bytes, &byte_seeds);
            }
            bytes
        })
}

/// A JSON seed whose string field `field` holds a text seed: the text is
/// changed as text (a pool file, a license file) and the JSON around it as
/// JSON.
pub fn mutated_json_with_text(
    seeds: Vec<Value>,
    field: &'static str,
    texts: Vec<String>,
) -> impl Strategy<Value = Vec<u8>> {
    (
        any::<Index>(),
        mutated_text(texts, 4),
        proptest::collection::vec(json_mutation(), 0..2),
    )
        .prop_map(move |(seed, text, structural)| {
            let mut document = seed.get(&seeds).clone();
            document[field] = Value::String(text);
            for mutation in &structural {
                mutation.apply(&mut document);
            }
            serde_json::to_vec(&document).expect("a value serializes")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_strings_are_found() {
        let text = br#"{"a": -12, "b": "x\"y", "c": [3]}"#;
        let numbers: Vec<&[u8]> = number_spans(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect();
        assert_eq!(numbers, vec![&b"-12"[..], b"3"]);
        let strings: Vec<&[u8]> = string_spans(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect();
        assert_eq!(strings[..3], [&b"a"[..], b"b", br#"x\"y"#]);
    }

    #[test]
    fn json_mutations_reach_every_node() {
        let value = serde_json::json!({"a": {"b/c": [1, 2]}});
        let all = pointers(&value);
        assert_eq!(all, vec!["", "/a", "/a/b~1c", "/a/b~1c/0", "/a/b~1c/1"]);
        assert!(all.iter().all(|p| value.pointer(p).is_some()));
        assert_eq!(parent_and_key("/a/b~1c"), Some(("/a", "b/c".to_string())));
    }
}
