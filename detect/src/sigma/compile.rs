//! A Sigma detection (rsigma-parser AST) → one SQL boolean expression over a
//! Dunes table. Sigma semantics: strings match case-insensitively unless
//! `|cased`; a missing (null) field never matches, so every item is wrapped
//! in `coalesce(…, false)` and `not` stays two-valued.

use std::collections::HashMap;

use base64::Engine as _;
use rsigma_parser::{
    ConditionExpr, Detection, DetectionItem, Modifier, Quantifier, SelectorPattern, SigmaString,
    SigmaValue, SpecialChar, StringPart, detection_name_matches,
};

use super::fields::{self, Kind, LOWERCASE_LISTS, Resolved, Table};
use super::sql_str;

/// Why a construct cannot be compiled: `(construct, reason)`.
pub(crate) type Refuse = (String, String);

fn refuse<T>(construct: impl Into<String>, reason: impl Into<String>) -> Result<T, Refuse> {
    Err((construct.into(), reason.into()))
}

/// Compiles the named detections and conditions of one rule.
pub(crate) fn condition(
    table: Table,
    named: &HashMap<String, Detection>,
    conditions: &[ConditionExpr],
) -> Result<String, Refuse> {
    let mut compiled: HashMap<&str, String> = HashMap::new();
    let mut names: Vec<&String> = named.keys().collect();
    names.sort();
    for name in names {
        let sql = detection(table, &named[name.as_str()])
            .map_err(|(c, r)| (format!("detection {name:?}: {c}"), r))?;
        compiled.insert(name, sql);
    }
    if conditions.is_empty() {
        return refuse("condition", "the rule has no condition");
    }
    let parts = conditions
        .iter()
        .map(|c| cond_expr(c, &compiled))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(or(parts))
}

fn cond_expr(c: &ConditionExpr, named: &HashMap<&str, String>) -> Result<String, Refuse> {
    Ok(match c {
        ConditionExpr::And(v) => and(v
            .iter()
            .map(|c| cond_expr(c, named))
            .collect::<Result<_, _>>()?),
        ConditionExpr::Or(v) => or(v
            .iter()
            .map(|c| cond_expr(c, named))
            .collect::<Result<_, _>>()?),
        ConditionExpr::Not(c) => format!("(NOT {})", cond_expr(c, named)?),
        ConditionExpr::Identifier(id) => match named.get(id.as_str()) {
            Some(sql) => sql.clone(),
            None => return refuse(format!("condition {id:?}"), "no detection of that name"),
        },
        ConditionExpr::Selector {
            quantifier,
            pattern,
        } => {
            let mut hits: Vec<(&&str, &String)> = named
                .iter()
                .filter(|(n, _)| match pattern {
                    SelectorPattern::Them => !n.starts_with('_'),
                    SelectorPattern::Pattern(p) => detection_name_matches(p, n),
                })
                .collect();
            hits.sort();
            if hits.is_empty() {
                return refuse(
                    format!("condition \"{c}\""),
                    "the selector matches no detection",
                );
            }
            let exprs: Vec<String> = hits.into_iter().map(|(_, s)| s.clone()).collect();
            match quantifier {
                Quantifier::Any => or(exprs),
                Quantifier::All => and(exprs),
                Quantifier::Count(n) => format!(
                    "(({}) >= {n})",
                    exprs
                        .iter()
                        .map(|e| format!("CASE WHEN {e} THEN 1 ELSE 0 END"))
                        .collect::<Vec<_>>()
                        .join(" + ")
                ),
            }
        }
    })
}

fn and(v: Vec<String>) -> String {
    match v.len() {
        0 => "true".into(),
        1 => v.into_iter().next().unwrap_or_default(),
        _ => format!("({})", v.join(" AND ")),
    }
}

fn or(v: Vec<String>) -> String {
    match v.len() {
        0 => "false".into(),
        1 => v.into_iter().next().unwrap_or_default(),
        _ => format!("({})", v.join(" OR ")),
    }
}

fn detection(table: Table, d: &Detection) -> Result<String, Refuse> {
    match d {
        Detection::AllOf(items) => Ok(and(items
            .iter()
            .map(|i| item(table, i))
            .collect::<Result<_, _>>()?)),
        Detection::AnyOf(ds) => Ok(or(ds
            .iter()
            .map(|d| detection(table, d))
            .collect::<Result<_, _>>()?)),
        Detection::And(ds) => Ok(and(ds
            .iter()
            .map(|d| detection(table, d))
            .collect::<Result<_, _>>()?)),
        Detection::Keywords(values) => keywords(table, values, &[]),
        Detection::ArrayMatch { field, .. } => refuse(
            format!("{field}[…] array block"),
            "Dunes list columns hold strings, not objects; match list members with the field itself",
        ),
        Detection::Conditional { .. } => refuse(
            "element-scoped condition block",
            "array object-scope conditions are not supported",
        ),
    }
}

/// A field-less search: any keyword in any of the table's text columns.
fn keywords(table: Table, values: &[SigmaValue], mods: &[Modifier]) -> Result<String, Refuse> {
    let cols = table.keyword_columns();
    let mut parts = Vec::new();
    for c in cols {
        let r = Resolved {
            column: c.to_string(),
            expr: c.to_string(),
            kind: Kind::Text,
        };
        let mut m = mods.to_vec();
        if !m
            .iter()
            .any(|m| matches!(m, Modifier::StartsWith | Modifier::EndsWith | Modifier::Re))
        {
            m.push(Modifier::Contains);
        }
        parts.push(text_match(&r, values, &m, "keywords")?);
    }
    Ok(or(parts))
}

fn item(table: Table, it: &DetectionItem) -> Result<String, Refuse> {
    let mods = &it.field.modifiers;
    let Some(name) = &it.field.name else {
        return keywords(table, &it.values, mods);
    };
    let construct = || {
        let mut s = name.clone();
        for m in mods {
            s.push('|');
            s.push_str(&modifier_name(*m));
        }
        s
    };
    let r = fields::resolve(table, name).map_err(|reason| (construct(), reason))?;
    let has = |m: Modifier| mods.contains(&m);
    for m in mods {
        match m {
            Modifier::Wide | Modifier::Utf16 | Modifier::Utf16be => {
                return refuse(
                    construct(),
                    "UTF-16 encodings cannot match: Dunes text columns are UTF-8 text",
                );
            }
            Modifier::Expand => {
                return refuse(construct(), "placeholders (|expand) need a Sigma pipeline");
            }
            _ => {}
        }
    }
    let sql = if has(Modifier::Exists) {
        let want = match it.values.as_slice() {
            [SigmaValue::Bool(b)] => *b,
            _ => return refuse(construct(), "|exists takes true or false"),
        };
        format!("({} IS {}NULL)", r.expr, if want { "NOT " } else { "" })
    } else if has(Modifier::FieldRef) {
        let mut parts = Vec::new();
        for v in &it.values {
            let SigmaValue::String(s) = v else {
                return refuse(construct(), "|fieldref takes field names");
            };
            let other = fields::resolve(table, &s.original).map_err(|e| (construct(), e))?;
            let comparable = |k: &Kind| !matches!(k, Kind::List);
            let numeric = |k: &Kind| matches!(k, Kind::Int | Kind::Float);
            if !(comparable(&r.kind) && comparable(&other.kind))
                || (r.kind != other.kind && !(numeric(&r.kind) && numeric(&other.kind)))
            {
                return refuse(
                    construct(),
                    format!(
                        "|fieldref compares two scalar columns of one type; {} and {} differ",
                        r.column, other.column
                    ),
                );
            }
            parts.push(format!("({} = {})", r.expr, other.expr));
        }
        combine(parts, has(Modifier::All))
    } else if let Some(op) = mods.iter().find_map(|m| match m {
        Modifier::Gt => Some(">"),
        Modifier::Gte => Some(">="),
        Modifier::Lt => Some("<"),
        Modifier::Lte => Some("<="),
        _ => None,
    }) {
        if !matches!(r.kind, Kind::Int | Kind::Float) {
            return refuse(construct(), format!("{} is not numeric", r.column));
        }
        let parts = it
            .values
            .iter()
            .map(|v| number(v).map(|n| format!("({} {op} {n})", r.expr)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| (construct(), "comparison needs numbers".to_string()))?;
        combine(parts, has(Modifier::All))
    } else if let Some(part) = mods.iter().find_map(|m| match m {
        Modifier::Minute => Some("minute"),
        Modifier::Hour => Some("hour"),
        Modifier::Day => Some("day"),
        Modifier::Week => Some("week"),
        Modifier::Month => Some("month"),
        Modifier::Year => Some("year"),
        _ => None,
    }) {
        if r.kind != Kind::Timestamp {
            return refuse(construct(), format!("{} is not a timestamp", r.column));
        }
        let parts = it
            .values
            .iter()
            .map(|v| number(v).map(|n| format!("(date_part('{part}', {}) = {n})", r.expr)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                (
                    construct(),
                    "timestamp parts compare with numbers".to_string(),
                )
            })?;
        combine(parts, has(Modifier::All))
    } else if has(Modifier::Cidr) {
        if !matches!(r.kind, Kind::Text | Kind::List) {
            return refuse(construct(), format!("{} holds no addresses", r.column));
        }
        let mut parts = Vec::new();
        for v in &it.values {
            let SigmaValue::String(s) = v else {
                return refuse(construct(), "|cidr takes networks like 10.0.0.0/8");
            };
            if s.original.parse::<ipnet::IpNet>().is_err() {
                return refuse(construct(), format!("{:?} is not a network", s.original));
            }
            parts.push(format!("cidr_match({}, {})", r.expr, sql_str(&s.original)));
        }
        combine(parts, has(Modifier::All))
    } else if has(Modifier::Neq) {
        let eq = value_match(&r, &it.values, &without(mods, Modifier::Neq), &construct())?;
        // `neq` with several values: the field differs from every one.
        format!("(NOT {eq})")
    } else {
        value_match(&r, &it.values, mods, &construct())?
    };
    Ok(format!("coalesce({sql}, false)"))
}

fn without(mods: &[Modifier], m: Modifier) -> Vec<Modifier> {
    mods.iter().copied().filter(|x| *x != m).collect()
}

fn combine(parts: Vec<String>, all: bool) -> String {
    if all { and(parts) } else { or(parts) }
}

fn number(v: &SigmaValue) -> Option<String> {
    match v {
        SigmaValue::Integer(i) => Some(i.to_string()),
        SigmaValue::Float(f) if f.is_finite() => Some(format!("{f:?}")),
        SigmaValue::String(s) => s
            .as_plain()
            .filter(|p| p.parse::<f64>().is_ok_and(f64::is_finite))
            .map(|p| p.trim().to_string()),
        _ => None,
    }
}

fn modifier_name(m: Modifier) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{m:?}").to_lowercase())
}

/// Equality / string matching of a field against Sigma values.
fn value_match(
    r: &Resolved,
    values: &[SigmaValue],
    mods: &[Modifier],
    construct: &str,
) -> Result<String, Refuse> {
    let all = mods.contains(&Modifier::All);
    let mut parts = Vec::new();
    let mut strings = Vec::new();
    for v in values {
        match v {
            SigmaValue::Null => parts.push(format!("({} IS NULL)", r.expr)),
            SigmaValue::Bool(b) => match r.kind {
                Kind::Bool => parts.push(format!("({} = {b})", r.expr)),
                Kind::Text => strings.push(SigmaValue::String(SigmaString::new(&b.to_string()))),
                _ => return refuse(construct, format!("{} is not boolean", r.column)),
            },
            SigmaValue::Integer(_) | SigmaValue::Float(_)
                if matches!(r.kind, Kind::Int | Kind::Float) =>
            {
                let n = number(v).ok_or_else(|| (construct.to_string(), "bad number".into()))?;
                parts.push(format!("({} = {n})", r.expr));
            }
            SigmaValue::Integer(i) => {
                strings.push(SigmaValue::String(SigmaString::new(&i.to_string())))
            }
            SigmaValue::Float(f) => {
                strings.push(SigmaValue::String(SigmaString::new(&f.to_string())))
            }
            SigmaValue::String(s) => match r.kind {
                Kind::Text | Kind::List => strings.push(v.clone()),
                Kind::Int | Kind::Float => match number(v) {
                    Some(n) => parts.push(format!("({} = {n})", r.expr)),
                    None => {
                        return refuse(
                            construct,
                            format!("{} is numeric, {:?} is not a number", r.column, s.original),
                        );
                    }
                },
                Kind::Bool => match s.original.to_ascii_lowercase().as_str() {
                    "true" | "false" => parts.push(format!(
                        "({} = {})",
                        r.expr,
                        s.original.to_ascii_lowercase()
                    )),
                    _ => return refuse(construct, format!("{} is boolean", r.column)),
                },
                Kind::Timestamp => {
                    return refuse(construct, "timestamps match with |minute … |year parts");
                }
            },
        }
    }
    if !strings.is_empty() {
        if !matches!(r.kind, Kind::Text | Kind::List) {
            return refuse(construct, format!("{} is not text", r.column));
        }
        parts.push(text_match(r, &strings, mods, construct)?);
    }
    Ok(combine(parts, all))
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Exact,
    Contains,
    StartsWith,
    EndsWith,
}

/// String values against a text or list column. Case-insensitive unless
/// `|cased`; `*`/`?` wildcards; `|re` (flags `|i|m|s`); value transforms
/// `|base64`, `|base64offset`, `|windash`. Several values are one regex
/// alternation (one scan, literal-prefiltered) unless `|all`.
fn text_match(
    r: &Resolved,
    values: &[SigmaValue],
    mods: &[Modifier],
    construct: &str,
) -> Result<String, Refuse> {
    let has = |m: Modifier| mods.contains(&m);
    let all = has(Modifier::All);
    let list = r.kind == Kind::List;
    if has(Modifier::Re) {
        let mut flags = String::new();
        if has(Modifier::IgnoreCase) {
            flags.push('i');
        }
        if has(Modifier::Multiline) {
            flags.push('m');
        }
        if has(Modifier::DotAll) {
            flags.push('s');
        }
        let mut parts = Vec::new();
        for v in values {
            let SigmaValue::String(s) = v else {
                return refuse(construct, "|re takes regular expressions");
            };
            let pattern = if flags.is_empty() {
                s.original.clone()
            } else {
                format!("(?{flags}){}", s.original)
            };
            if let Err(e) = regex::Regex::new(&pattern) {
                return refuse(construct, format!("regex {:?}: {e}", s.original));
            }
            parts.push(regex_on(r, &pattern));
        }
        return Ok(combine(parts, all));
    }
    let mode = if has(Modifier::Contains) {
        Mode::Contains
    } else if has(Modifier::StartsWith) {
        Mode::StartsWith
    } else if has(Modifier::EndsWith) {
        Mode::EndsWith
    } else {
        Mode::Exact
    };
    let cased = has(Modifier::Cased);
    // Each Sigma value → its variants (transforms), each variant a pattern.
    let mut per_value: Vec<Vec<Vec<StringPart>>> = Vec::new();
    for v in values {
        let SigmaValue::String(s) = v else {
            return refuse(construct, "expected a string value");
        };
        let mut variants = vec![s.parts.clone()];
        if has(Modifier::WindAsh) {
            variants = variants.into_iter().flat_map(|p| windash(&p)).collect();
        }
        if has(Modifier::Base64) || has(Modifier::Base64Offset) {
            let mut out = Vec::new();
            for p in variants {
                let Some(plain) = plain(&p) else {
                    return refuse(construct, "|base64 values cannot hold wildcards");
                };
                if has(Modifier::Base64Offset) {
                    out.extend(
                        base64_offsets(&plain)
                            .into_iter()
                            .map(|s| vec![StringPart::Plain(s)]),
                    );
                } else {
                    let enc = base64::engine::general_purpose::STANDARD.encode(plain.as_bytes());
                    out.push(vec![StringPart::Plain(enc)]);
                }
            }
            variants = out;
        }
        if variants.is_empty() {
            return refuse(
                construct,
                "the value encodes to nothing that can be matched",
            );
        }
        per_value.push(variants);
    }
    let base64 = has(Modifier::Base64) || has(Modifier::Base64Offset);
    // base64 output is case-sensitive by nature.
    let cased = cased || base64;
    let groups: Vec<Vec<Vec<StringPart>>> = if all {
        per_value
    } else {
        vec![per_value.into_iter().flatten().collect()]
    };
    let mut parts = Vec::new();
    for group in groups {
        let exact_plain: Option<Vec<String>> = (mode == Mode::Exact)
            .then(|| group.iter().map(|p| plain(p)).collect::<Option<Vec<_>>>())
            .flatten();
        if let Some(vals) = exact_plain {
            parts.push(exact(r, &vals, cased));
            continue;
        }
        let alts: Vec<String> = group.iter().map(|p| pattern(p, mode, list)).collect();
        let mut flags = String::new();
        if !cased {
            flags.push('i');
        }
        if list {
            flags.push('m');
        } else {
            flags.push('s');
        }
        let alt = if alts.len() == 1 {
            alts.into_iter().next().unwrap_or_default()
        } else {
            format!("(?:{})", alts.join("|"))
        };
        parts.push(regex_on(r, &format!("(?{flags}){alt}")));
    }
    Ok(and(parts))
}

/// An exact, wildcard-free match of one of `vals`.
fn exact(r: &Resolved, vals: &[String], cased: bool) -> String {
    if r.kind == Kind::List {
        let lower = LOWERCASE_LISTS.contains(&r.column.as_str());
        if cased || (lower && vals.iter().all(|v| v.to_lowercase() == *v)) {
            return format!(
                "array_has_any({}, make_array({}))",
                r.expr,
                vals.iter()
                    .map(|v| sql_str(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let alts: Vec<String> = vals.iter().map(|v| regex::escape(v)).collect();
        return regex_on(r, &format!("(?im)^(?:{})$", alts.join("|")));
    }
    let (lhs, vals): (String, Vec<String>) = if cased {
        (r.expr.clone(), vals.to_vec())
    } else {
        (
            format!("lower({})", r.expr),
            vals.iter().map(|v| v.to_lowercase()).collect(),
        )
    };
    if vals.len() == 1 {
        format!("({lhs} = {})", sql_str(&vals[0]))
    } else {
        format!(
            "({lhs} IN ({}))",
            vals.iter()
                .map(|v| sql_str(v))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// `regexp_like` over a text column, or over a list's elements joined by
/// newlines (non-empty lists only).
fn regex_on(r: &Resolved, pattern: &str) -> String {
    if r.kind == Kind::List {
        format!(
            "(cardinality({e}) > 0 AND regexp_like(array_to_string({e}, chr(10)), {p}))",
            e = r.expr,
            p = sql_str(pattern)
        )
    } else {
        format!("regexp_like({}, {})", r.expr, sql_str(pattern))
    }
}

fn plain(parts: &[StringPart]) -> Option<String> {
    let mut s = String::new();
    for p in parts {
        match p {
            StringPart::Plain(t) => s.push_str(t),
            StringPart::Special(_) => return None,
        }
    }
    Some(s)
}

fn pattern(parts: &[StringPart], mode: Mode, list: bool) -> String {
    let (multi, single) = if list {
        ("[^\\n]*", "[^\\n]")
    } else {
        (".*", ".")
    };
    let mut body = String::new();
    for p in parts {
        match p {
            StringPart::Plain(t) => body.push_str(&regex::escape(t)),
            StringPart::Special(SpecialChar::WildcardMulti) => body.push_str(multi),
            StringPart::Special(SpecialChar::WildcardSingle) => body.push_str(single),
        }
    }
    match (mode, list) {
        (Mode::Exact, _) => format!("^{body}$"),
        (Mode::StartsWith, _) => format!("^{body}"),
        (Mode::EndsWith, _) => format!("{body}$"),
        (Mode::Contains, _) => body,
    }
}

/// `-x` → `-x`, `/x`, `–x`, `—x`, `―x` (Sigma `windash`).
fn windash(parts: &[StringPart]) -> Vec<Vec<StringPart>> {
    const DASHES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];
    DASHES
        .iter()
        .map(|d| {
            parts
                .iter()
                .map(|p| match p {
                    StringPart::Plain(t) => StringPart::Plain(t.replace('-', &d.to_string())),
                    other => other.clone(),
                })
                .collect()
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(Vec::new(), |mut acc: Vec<Vec<StringPart>>, v| {
            if !acc.contains(&v) {
                acc.push(v);
            }
            acc
        })
}

/// The three base64 encodings of `s` at byte offsets 0, 1, 2 within a
/// longer encoded text, trimmed to the characters that do not depend on the
/// neighbouring bytes (Sigma `base64offset`, as pySigma computes it).
fn base64_offsets(s: &str) -> Vec<String> {
    const START: [usize; 3] = [0, 2, 3];
    let e = base64::engine::general_purpose::STANDARD;
    (0..3)
        .map(|i| {
            let mut buf = vec![b' '; i];
            buf.extend_from_slice(s.as_bytes());
            let enc = e.encode(&buf);
            let end = match (s.len() + i) % 3 {
                0 => enc.len(),
                1 => enc.len().saturating_sub(3),
                _ => enc.len().saturating_sub(2),
            };
            enc.get(START[i]..end).unwrap_or_default().to_string()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_offsets_match_the_sigma_reference() {
        // Values from the Sigma specification's base64offset example.
        let got = base64_offsets("/bin/bash");
        assert_eq!(got, ["L2Jpbi9iYXNo", "9iaW4vYmFza", "vYmluL2Jhc2"]);
    }
}
