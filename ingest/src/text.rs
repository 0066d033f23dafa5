//! Text helpers: hashing, entropy, decoding, truncation (canonical JSON is
//! in `json`).

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// Cap for `args_text` / `result_text` (64 KiB).
pub const TEXT_CAP_BYTES: usize = 64 * 1024;
/// Cap for previews, in chars.
pub const PREVIEW_CHARS: usize = 256;

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    // 32 bytes fill the 64 ASCII hex digits exactly (`hex::encode` would
    // build the string char by char).
    let mut out = [0u8; 64];
    let _ = hex::encode_to_slice(Sha256::digest(data), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Shannon entropy in bits per char.
pub fn shannon_entropy(s: &str) -> f64 {
    let mut ascii = [0u32; 128];
    let mut other: Vec<(char, u32)> = Vec::new();
    let mut n = 0u32;
    if s.is_ascii() {
        // One byte per char: count bytes (the same counts, no UTF-8 decoding).
        for &b in s.as_bytes() {
            ascii[usize::from(b)] += 1;
        }
        n = u32::try_from(s.len()).unwrap_or(u32::MAX);
    } else {
        for c in s.chars() {
            n += 1;
            if (c as u32) < 128 {
                ascii[c as usize] += 1;
            } else if let Some(e) = other.iter_mut().find(|e| e.0 == c) {
                e.1 += 1;
            } else {
                other.push((c, 1));
            }
        }
    }
    if n == 0 {
        return 0.0;
    }
    let nf = f64::from(n);
    let mut h = 0.0;
    for &cnt in ascii.iter().chain(other.iter().map(|e| &e.1)) {
        if cnt > 0 {
            let p = f64::from(cnt) / nf;
            h -= p * p.log2();
        }
    }
    h
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a char boundary.
pub fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The first `max` chars of `s`.
pub fn truncate_chars(s: &str, max: usize) -> &str {
    // A char takes at least one byte, so no longer than `max` bytes is no
    // more than `max` chars; `max` ASCII bytes are `max` chars.
    if s.len() <= max {
        return s;
    }
    if s.as_bytes()[..max].is_ascii() {
        return &s[..max];
    }
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One round of percent-decoding (invalid escapes are kept as they are).
pub fn percent_decode_once(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes basic HTML entities: `&amp; &lt; &gt; &quot; &apos; &sol; &bsol;
/// &period; &colon; &nbsp;` and numeric `&#NN;` / `&#xHH;`.
pub fn html_decode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        let tail = &rest[p..];
        // Within the first 12 bytes; found in bytes, so a multi-byte character
        // there cannot be cut (`;` is ASCII: its index is a char boundary).
        let semi = tail.as_bytes()[..tail.len().min(12)]
            .iter()
            .position(|&b| b == b';');
        let decoded = semi.and_then(|e| {
            let ent = &tail[1..e];
            let c = if let Some(num) = ent.strip_prefix('#') {
                if let Some(h) = num.strip_prefix('x').or_else(|| num.strip_prefix('X')) {
                    u32::from_str_radix(h, 16).ok().and_then(char::from_u32)
                } else {
                    num.parse::<u32>().ok().and_then(char::from_u32)
                }
            } else {
                match ent {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    "sol" => Some('/'),
                    "bsol" => Some('\\'),
                    "period" => Some('.'),
                    "colon" => Some(':'),
                    "nbsp" => Some(' '),
                    _ => None,
                }
            };
            c.map(|c| (c, e + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `args_decoded`: up to 3 rounds of percent- and HTML-entity decoding (until
/// nothing changes), then `\` → `/`.
/// Borrowed when nothing changes.
pub fn decode_for_rules(s: &str) -> Cow<'_, str> {
    let mut cur = Cow::Borrowed(s);
    for _ in 0..3 {
        if !cur.contains('%') && !cur.contains('&') {
            break;
        }
        let next = html_decode(&percent_decode_once(&cur));
        if next == *cur {
            break;
        }
        cur = Cow::Owned(next);
    }
    if cur.contains('\\') {
        cur = Cow::Owned(cur.replace('\\', "/"));
    }
    cur
}

/// Zero-width, bidi-control, Unicode tag and similar invisible characters.
pub fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xE0000..=0xE007F | 0xE0100..=0xE01EF)
}

/// First `max` chars of `s`, invisible characters shown as `\u{…}`.
pub fn visible_preview(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 2));
    for c in s.chars().take(max) {
        if is_invisible(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `&` followed by multi-byte characters and no `;` within 12 bytes cut a
    /// character in two (a panic on any argument text such as `Tom &ééééé`;
    /// found by the `gateway` fuzz campaign, `fuzz/findings/`).
    #[test]
    fn html_decode_never_cuts_a_character() {
        assert_eq!(html_decode("&ééééééé"), "&ééééééé");
        assert_eq!(html_decode("a &ŉŉŉŉŉŉ b"), "a &ŉŉŉŉŉŉ b");
        assert_eq!(html_decode("&#x41;é&amp;€&é;"), "Aé&€&é;");
        assert_eq!(decode_for_rules("Tom &éééééé%41"), "Tom &ééééééA");
    }

    #[test]
    fn entropy_values() {
        assert_eq!(shannon_entropy(""), 0.0);
        assert_eq!(shannon_entropy("aaaa"), 0.0);
        assert!((shannon_entropy("abab") - 1.0).abs() < 1e-9);
        assert!((shannon_entropy("abcd") - 2.0).abs() < 1e-9);
        let all: String = (0u8..64).map(|i| (b'0' + i) as char).collect();
        assert!((shannon_entropy(&all) - 6.0).abs() < 1e-9);
        assert!((shannon_entropy("éé€€") - 1.0).abs() < 1e-9);
    }

    /// The entropy as computed before the ASCII fast path: char by char.
    fn entropy_char_by_char(s: &str) -> f64 {
        let mut counts: Vec<(char, u32)> = Vec::new();
        for c in s.chars() {
            match counts.iter_mut().find(|e| e.0 == c) {
                Some(e) => e.1 += 1,
                None => counts.push((c, 1)),
            }
        }
        // the same summation order: ASCII by code, then the others as met
        let (mut ascii, other): (Vec<_>, Vec<_>) = counts.into_iter().partition(|e| e.0.is_ascii());
        ascii.sort();
        let n = f64::from(s.chars().count() as u32);
        let mut h = 0.0;
        for (_, cnt) in ascii.into_iter().chain(other) {
            let p = f64::from(cnt) / n;
            h -= p * p.log2();
        }
        h
    }

    proptest::proptest! {
        /// Bit for bit the same value on ASCII and on other text (rules
        /// compare `args_max_entropy` with thresholds).
        #[test]
        fn entropy_is_the_char_by_char_value(s in "[ -~]{0,80}|[a-dé€\\x00]{0,20}") {
            proptest::prop_assert_eq!(shannon_entropy(&s).to_bits(), entropy_char_by_char(&s).to_bits());
        }
    }

    #[test]
    fn percent_and_html_decoding() {
        assert_eq!(decode_for_rules("%2e%2e%2fetc%2fpasswd"), "../etc/passwd");
        assert_eq!(decode_for_rules("%252e%252e%252f"), "../");
        assert_eq!(decode_for_rules("%25252e"), ".");
        assert_eq!(decode_for_rules("%2525252e"), "%2e"); // only 3 rounds
        assert_eq!(decode_for_rules("..\\..\\windows"), "../../windows");
        assert_eq!(
            decode_for_rules("&#x2e;&#46;&sol;a &amp; b &lt;x&gt;"),
            "../a & b <x>"
        );
        assert_eq!(
            decode_for_rules("100% sure &unknown; %zz %"),
            "100% sure &unknown; %zz %"
        );
        assert_eq!(decode_for_rules("%ff%fe"), "\u{fffd}\u{fffd}");
    }

    #[test]
    fn truncation_on_char_boundaries() {
        assert_eq!(truncate_bytes("héllo", 2), "h");
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("hi", 5), "hi");
        assert_eq!(truncate_chars("hello wörld", 5), "hello");
        assert_eq!(truncate_chars("abcé", 4), "abcé");
        assert_eq!(truncate_chars("abcéf", 4), "abcé");
        assert_eq!(truncate_chars("ab", 0), "");
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn invisible_preview() {
        assert_eq!(
            visible_preview("a\u{200b}b\u{e0041}", 10),
            "a\\u{200b}b\\u{e0041}"
        );
        assert_eq!(visible_preview("abc", 2), "ab");
    }
}
