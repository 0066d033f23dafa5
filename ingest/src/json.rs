//! A borrowed JSON tree for the decode path.
//!
//! `serde_json` does the parsing; this module only chooses what the parsed
//! values are stored in. `serde_json::Value` allocates every string and
//! builds a `BTreeMap` per object, which made it the largest single cost of
//! the pipeline. Here strings borrow from the input line, and arrays,
//! objects and strings that held escapes live in an arena ([`Bump`]) that
//! the caller resets between lines: no allocation or free per node, and
//! nothing to drop.
//!
//! Objects keep `serde_json::Map`'s semantics, which the normalised columns
//! depend on: members sorted by the bytes of their key, and a repeated key
//! keeps its last value. (`serde_json_borrow` was measured as fast, but it
//! keeps every copy of a repeated key, looks up the first one, and its
//! objects cannot be rebuilt with owned (escaped) keys.)

use std::borrow::Cow;
use std::fmt;

pub(crate) use bumpalo::Bump;
use bumpalo::collections::Vec as ArenaVec;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

/// An object's members: sorted by key bytes, keys unique.
pub(crate) type Members<'a> = &'a [(&'a str, Json<'a>)];

/// One JSON value. Strings borrow from the parsed text, or from the arena
/// when they held escapes; arrays and objects live in the arena. Cloning
/// is shallow (a copy of a reference or a number).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) enum Json<'a> {
    #[default]
    Null,
    Bool(bool),
    Number(Number),
    Str(&'a str),
    Array(&'a [Json<'a>]),
    /// Members sorted by key bytes, keys unique.
    Object(Members<'a>),
}

/// Parses one JSON text into `arena` (same grammar, limits and error
/// messages as `serde_json::from_str::<serde_json::Value>`).
pub(crate) fn parse<'a>(text: &'a str, arena: &'a Bump) -> Result<Json<'a>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Seed(arena).deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// A top-level JSON text parsed for a known set of member names: the
/// members named in `fields` go to their slot (a repeated name keeps its
/// last value, as in [`Json::Object`]), the others stay as sorted unique
/// members. Same grammar, limits and error messages as [`parse`]; saves
/// sorting the members of the largest object of a line.
pub(crate) enum Top<'a, const N: usize> {
    Object {
        slots: [Option<Json<'a>>; N],
        extra: Members<'a>,
    },
    /// Not an object.
    Other(Json<'a>),
}

pub(crate) fn parse_top<'a, const N: usize>(
    text: &'a str,
    fields: &'static [&'static str; N],
    arena: &'a Bump,
) -> Result<Top<'a, N>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let top = de.deserialize_any(TopVisitor {
        fields,
        seed: Seed(arena),
    })?;
    de.end()?;
    Ok(top)
}

impl<'a> Json<'a> {
    /// The member `key` of an object; `None` for a missing key or a non-object.
    pub(crate) fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(m) => m
                .binary_search_by(|(k, _)| key_cmp(k, key))
                .ok()
                .map(|i| &m[i].1),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&'a str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_array(&self) -> Option<&'a [Json<'a>]> {
        match self {
            Json::Array(a) => Some(a),
            _ => None,
        }
    }

    pub(crate) fn as_object(&self) -> Option<Members<'a>> {
        match self {
            Json::Object(m) => Some(m),
            _ => None,
        }
    }

    pub(crate) fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// The JSON type as named in rejection reasons ("integer" for numbers
    /// without a fraction or exponent that fit 64 bits).
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "boolean",
            Json::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Json::Number(_) => "number",
            Json::Str(_) => "string",
            Json::Array(_) => "array",
            Json::Object(_) => "object",
        }
    }
}

/// Member keys in byte order. Keys of one object mostly differ in their
/// first byte: comparing it first spares a `memcmp` call per comparison
/// (the decode thread's most frequent call).
#[inline]
fn key_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// Canonical JSON: keys sorted by bytes, no whitespace, minimal string
/// escapes, numbers as `serde_json` prints them.
pub(crate) fn write_canonical(v: &Json<'_>, out: &mut Vec<u8>) {
    match v {
        Json::Null => out.extend_from_slice(b"null"),
        Json::Bool(true) => out.extend_from_slice(b"true"),
        Json::Bool(false) => out.extend_from_slice(b"false"),
        Json::Number(n) => write_number(n, out),
        Json::Str(s) => write_json_str(s, out),
        Json::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(x, out);
            }
            out.push(b']');
        }
        Json::Object(m) => write_members(m, out),
    }
}

/// Canonical JSON of an object given by its sorted, unique members.
pub(crate) fn write_members(m: &[(&str, Json<'_>)], out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, x)) in m.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(k, out);
        out.push(b':');
        write_canonical(x, out);
    }
    out.push(b'}');
}

/// Canonical JSON as a `String`.
pub(crate) fn canonical_string(v: &Json<'_>) -> String {
    let mut buf = Vec::with_capacity(128);
    write_canonical(v, &mut buf);
    into_string(buf)
}

/// The canonical text written into `buf`, borrowed. The canonical writers
/// only emit valid UTF-8 (they copy `&str`s and ASCII); a SIMD check (`simdutf8`)
/// is much faster than the lossy conversion, kept as fallback.
pub(crate) fn as_text(buf: &[u8]) -> Cow<'_, str> {
    match simdutf8::basic::from_utf8(buf) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(buf),
    }
}

/// The canonical writers only emit valid UTF-8 (they copy `&str`s and ASCII).
pub(crate) fn into_string(buf: Vec<u8>) -> String {
    String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn write_number(n: &Number, out: &mut Vec<u8>) {
    use std::io::Write;
    // writing to a Vec cannot fail
    let _ = write!(out, "{n}");
}

/// Does any of the eight bytes of `w` need an escape (below 0x20, `"` or
/// `\`)? The usual SWAR tests, exact for "is there any such byte".
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x;
    (below_space | zero_in(quote) | zero_in(backslash)) & HIGH != 0
}

fn write_json_str(s: &str, out: &mut Vec<u8>) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time past the runs that need no escape (most text).
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            if !word_needs_escape(u64::from_le_bytes(w)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let esc: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            0..=0x1f => None,
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        match esc {
            Some(e) => out.extend_from_slice(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

// ------------------------------------------------------------ deserialising

/// The arena values are built in; the seed of every value of a tree.
#[derive(Clone, Copy)]
struct Seed<'a>(&'a Bump);

/// An object key: borrowed from the text, or copied into the arena when
/// it held escapes.
struct KeySeed<'a>(&'a Bump);

impl<'de: 'a, 'a> DeserializeSeed<'de> for KeySeed<'a> {
    type Value = &'a str;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'a str, D::Error> {
        d.deserialize_str(StrVisitor(self.0))
    }
}

struct StrVisitor<'a>(&'a Bump);

impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
    type Value = &'a str;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<&'a str, E> {
        Ok(v)
    }
    fn visit_str<E>(self, v: &str) -> Result<&'a str, E> {
        Ok(self.0.alloc_str(v))
    }
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for Seed<'a> {
    type Value = Json<'a>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json<'a>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Seed<'a> {
    type Value = Json<'a>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json<'a>, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json<'a>, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json<'a>, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json<'a>, E> {
        // serde_json never yields NaN or infinities; map them to null as
        // serde_json::Value does.
        Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'a>, E> {
        Ok(Json::Str(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json<'a>, E> {
        Ok(Json::Str(self.0.alloc_str(v)))
    }
    fn visit_unit<E>(self) -> Result<Json<'a>, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json<'a>, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'a>, A::Error> {
        let room = seq.size_hint().unwrap_or(4).min(4096);
        let mut out = ArenaVec::with_capacity_in(room, self.0);
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Json::Array(out.into_bump_slice()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Json<'a>, A::Error> {
        members(self, map, Some).map(Json::Object)
    }
}

/// An object's members, into the arena, sorted by key bytes; a repeated key
/// keeps its last value (serde_json::Map's semantics). `keep` passes a
/// member on, or takes it and returns `None`.
fn members<'de: 'a, 'a, A: MapAccess<'de>>(
    seed: Seed<'a>,
    mut map: A,
    mut keep: impl FnMut((&'a str, Json<'a>)) -> Option<(&'a str, Json<'a>)>,
) -> Result<Members<'a>, A::Error> {
    // most MCP objects have a few members: start with room for 8
    let mut m = ArenaVec::with_capacity_in(8, seed.0);
    while let Some(k) = map.next_key_seed(KeySeed(seed.0))? {
        let v = map.next_value_seed(seed)?;
        if let Some(kv) = keep((k, v)) {
            m.push(kv);
        }
    }
    // stable: equal keys stay in input order, so the last is the last seen
    if !m.is_sorted_by(|a: &(&str, Json), b| key_cmp(a.0, b.0).is_lt()) {
        m.sort_by(|a, b| key_cmp(a.0, b.0));
        m.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                std::mem::swap(&mut later.1, &mut kept.1);
                true
            } else {
                false
            }
        });
    }
    Ok(m.into_bump_slice())
}

struct TopVisitor<'a, const N: usize> {
    fields: &'static [&'static str; N],
    seed: Seed<'a>,
}

impl<'de: 'a, 'a, const N: usize> Visitor<'de> for TopVisitor<'a, N> {
    type Value = Top<'a, N>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.seed.visit_bool(v).map(Top::Other)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.seed.visit_i64(v).map(Top::Other)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.seed.visit_u64(v).map(Top::Other)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.seed.visit_f64(v).map(Top::Other)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        self.seed.visit_borrowed_str(v).map(Top::Other)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.seed.visit_str(v).map(Top::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.seed.visit_unit().map(Top::Other)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.seed.visit_none().map(Top::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.seed.visit_seq(seq).map(Top::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut slots: [Option<Json<'a>>; N] = std::array::from_fn(|_| None);
        let fields = self.fields;
        let extra = members(self.seed, map, |(k, v)| {
            match fields.iter().position(|n| *n == k) {
                Some(i) => {
                    slots[i] = Some(v);
                    None
                }
                None => Some((k, v)),
            }
        })?;
        Ok(Top::Object { slots, extra })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn canon(text: &str) -> String {
        canonical_string(&parse(text, &Bump::new()).expect("valid json"))
    }

    /// What the decoder did before this type existed: serde_json::Value
    /// (a BTreeMap per object) printed with sorted keys.
    fn reference(text: &str) -> String {
        fn walk(v: &serde_json::Value, out: &mut String) {
            match v {
                serde_json::Value::Array(a) => {
                    out.push('[');
                    for (i, x) in a.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        walk(x, out);
                    }
                    out.push(']');
                }
                serde_json::Value::Object(m) => {
                    out.push('{');
                    for (i, (k, x)) in m.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&serde_json::Value::String(k.clone()).to_string());
                        out.push(':');
                        walk(x, out);
                    }
                    out.push('}');
                }
                other => out.push_str(&other.to_string()),
            }
        }
        let v: serde_json::Value = serde_json::from_str(text).expect("valid json");
        let mut s = String::new();
        walk(&v, &mut s);
        s
    }

    #[test]
    fn objects_sorted_and_last_repeated_key_wins() {
        let t = r#"{"b":[1,2.5,"x\"y\n\u0001",-0,1e5,18446744073709551615,-9223372036854775808],"a":{"d":null,"c":true},"b":0,"\u0061":"esc"}"#;
        assert_eq!(canon(t), r#"{"a":"esc","b":0}"#);
        let t = r#"{"z":[1,2.5,"x\"y\n\u0001",-0,1e5,18446744073709551615,-9223372036854775808,0.1,1.5e300]}"#;
        assert_eq!(canon(t), reference(t));
        assert_eq!(
            canon(r#"{"k":1,"k":2,"j":{"x":[],"x":{}},"k":3}"#),
            r#"{"j":{"x":{}},"k":3}"#
        );
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        let text = r#"{"plain":"abc","esc\u0041":"a\nb"}"#;
        let arena = Bump::new();
        let v = parse(text, &arena).expect("valid");
        let Json::Object(m) = &v else {
            panic!("object expected")
        };
        // Escaped strings are copied into the arena, plain ones borrow the text.
        let in_text = |s: &str| text.as_bytes().as_ptr_range().contains(&s.as_ptr());
        let Json::Str(esc) = m[0].1 else {
            panic!("string expected")
        };
        assert_eq!((m[0].0, esc), ("escA", "a\nb"));
        assert!(!in_text(m[0].0) && !in_text(esc));
        assert!(arena.allocated_bytes() > 0);
        let Json::Str(plain) = m[1].1 else {
            panic!("string expected")
        };
        assert_eq!((m[1].0, plain), ("plain", "abc"));
        assert!(in_text(m[1].0) && in_text(plain));
        assert_eq!(v.get("plain").and_then(Json::as_str), Some("abc"));
        assert_eq!(v.get("missing"), None);
    }

    #[test]
    fn same_errors_as_serde_json_value() {
        for bad in ["{", "[1,]", r#"{"a":1e400}"#, "nul", &"[".repeat(200)] {
            let ours = parse(bad, &Bump::new()).err().map(|e| e.to_string());
            let theirs = serde_json::from_str::<serde_json::Value>(bad)
                .err()
                .map(|e| e.to_string());
            assert!(ours.is_some(), "{bad}");
            assert_eq!(ours, theirs, "{bad}");
            let top = parse_top(bad, &["a"], &Bump::new())
                .err()
                .map(|e| e.to_string());
            assert_eq!(top, theirs, "{bad}");
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            (-1e300f64..1e300).prop_map(serde_json::Value::from),
            "[a-c\"\\\\\n\u{1}é😀]{0,6}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
                prop::collection::vec(("[a-d\"é]{0,3}", inner), 0..5).prop_map(|kv| {
                    // printed by hand below so that keys may repeat
                    serde_json::Value::Array(
                        kv.into_iter()
                            .map(|(k, v)| serde_json::json!({"__k": k, "__v": v}))
                            .collect(),
                    )
                }),
            ]
        })
    }

    /// Prints `v`, turning the `__k`/`__v` arrays into objects whose keys may
    /// repeat (serde_json::Value cannot hold those).
    fn print(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Array(a)
                if !a.is_empty() && a.iter().all(|x| x.get("__k").is_some()) =>
            {
                out.push('{');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&x["__k"].to_string());
                    out.push(':');
                    print(&x["__v"], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    print(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    proptest! {
        /// The member-key order is plain byte order (empty keys, shared
        /// first bytes and non-ASCII keys included).
        #[test]
        fn key_order_is_byte_order(a in "(|[a-c]{0,3}|\\PC{0,4})", b in "(|[a-c]{0,3}|\\PC{0,4})") {
            prop_assert_eq!(key_cmp(&a, &b), a.as_bytes().cmp(b.as_bytes()));
        }

        /// Strings print as `serde_json` prints them, whatever the mix of
        /// plain runs (the eight-byte skip) and bytes that need escapes.
        #[test]
        fn strings_print_as_serde_json_prints_them(s in "[a-z \"\\\\\u{0}-\u{1f}\u{7f}é😀]{0,40}") {
            let mut ours = Vec::new();
            write_json_str(&s, &mut ours);
            prop_assert_eq!(String::from_utf8(ours).expect("utf-8"), serde_json::to_string(&s).expect("string"));
        }

        #[test]
        fn canonical_form_matches_serde_json_value(v in arb_json()) {
            let mut text = String::new();
            print(&v, &mut text);
            prop_assert_eq!(canon(&text), reference(&text));
        }

        /// `parse_top` gives what `parse` gives, split into the named
        /// members and the rest (same values, same repeated-key rule).
        #[test]
        fn parse_top_splits_what_parse_gives(v in arb_json(), wrap in any::<bool>()) {
            static FIELDS: [&str; 3] = ["a", "b", "c"];
            let mut text = String::new();
            print(&v, &mut text);
            if wrap {
                // an object with repeated named members around the value
                text = format!(r#"{{"b":1,"a":{text},"zz":[],"b":{text}}}"#);
            }
            let (a, b) = (Bump::new(), Bump::new());
            let whole = parse(&text, &a).expect("valid");
            match (parse_top(&text, &FIELDS, &b).expect("valid"), whole) {
                (Top::Object { slots, extra }, Json::Object(m)) => {
                    for (slot, name) in slots.iter().zip(FIELDS) {
                        prop_assert_eq!(slot.as_ref(), m.iter().find(|(k, _)| *k == name).map(|(_, v)| v));
                    }
                    let rest: Vec<_> = m.iter().filter(|(k, _)| !FIELDS.contains(k)).cloned().collect();
                    prop_assert_eq!(extra.to_vec(), rest);
                }
                (Top::Other(a), b) => prop_assert_eq!(a, b),
                (Top::Object { .. }, b) => prop_assert!(false, "object vs {:?}", b),
            }
        }
    }
}
