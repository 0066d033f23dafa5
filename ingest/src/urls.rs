//! URL extraction, host normalisation and host classification.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use regex::Regex;

/// `scheme://…` (any scheme of 2–16 chars) or `file:/…` with a single slash.
static URL_RE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b(?:[a-z][a-z0-9+.-]{1,15}://|file:/)[^\s"'<>`{}|^]*"#).ok()
});

/// A URL found in text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundUrl {
    /// The URL text (trailing punctuation trimmed).
    pub url: String,
    /// Lower-case scheme.
    pub scheme: String,
    /// Normalised host, `None` when the URL has no host (`file:///etc/passwd`).
    pub host: Option<String>,
}

/// Extracts URLs from `text` and normalises their hosts.
pub fn extract(text: &str, out: &mut Vec<FoundUrl>) {
    if !text.contains(":/") {
        return;
    }
    let Some(re) = URL_RE.as_ref() else { return };
    for m in re.find_iter(text) {
        let mut u = m.as_str();
        while let Some(c) = u.chars().last() {
            if matches!(c, '.' | ',' | ';' | ':' | '!' | '?' | ')' | ']' | '\\') {
                u = &u[..u.len() - c.len_utf8()];
            } else {
                break;
            }
        }
        let Some(colon) = u.find(':') else { continue };
        let scheme = u[..colon].to_ascii_lowercase();
        let rest = &u[colon + 1..];
        let b = rest.as_bytes();
        let host = if b.len() >= 2 && matches!(b[0], b'/' | b'\\') && matches!(b[1], b'/' | b'\\') {
            let after = &rest[2..];
            let authority_end = after.find(['/', '?', '#', '\\']).unwrap_or(after.len());
            normalize_host(&after[..authority_end])
        } else {
            None
        };
        out.push(FoundUrl {
            url: u.to_owned(),
            scheme,
            host,
        });
    }
}

/// Normalises a URL authority to a host: strips userinfo, brackets and port,
/// lower-cases, percent-decodes, parses IPv4 in any notation (decimal, hex,
/// octal, short forms) to dotted quad and IPv6 to its compressed form.
/// Returns `None` for an empty host.
pub fn normalize_host(authority: &str) -> Option<String> {
    let hostport = match authority.rfind('@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    let mut host: String = if let Some(rest) = hostport.strip_prefix('[') {
        let end = rest.find(']').unwrap_or(rest.len());
        rest[..end].to_owned()
    } else {
        match hostport.rfind(':') {
            Some(i) => hostport[..i].to_owned(),
            None => hostport.to_owned(),
        }
    };
    if host.contains('%') && !host.contains(':') {
        host = crate::text::percent_decode_once(&host);
    }
    host.make_ascii_lowercase();
    if host.ends_with('.') && host.len() > 1 {
        host.pop();
    }
    if host.is_empty() {
        return None;
    }
    if host.contains(':') {
        // IPv6, possibly with a zone id (`fe80::1%25eth0`).
        let no_zone = host.split('%').next().unwrap_or(&host);
        if let Ok(a) = no_zone.parse::<Ipv6Addr>() {
            return Some(a.to_string());
        }
        return Some(host);
    }
    if let Some(v4) = parse_ipv4(&host) {
        return Some(v4.to_string());
    }
    Some(host)
}

fn parse_ipv4_part(p: &str) -> Option<u64> {
    if p.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() > 20 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// WHATWG-style IPv4 parsing: 1–4 parts, each decimal, `0x` hex or `0` octal;
/// the last part fills the remaining bytes (`127.1`, `2130706433`).
pub fn parse_ipv4(host: &str) -> Option<Ipv4Addr> {
    let h = host.strip_suffix('.').unwrap_or(host);
    let parts: Vec<&str> = h.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        nums.push(parse_ipv4_part(p)?);
    }
    let (last, init) = nums.split_last()?;
    if init.iter().any(|&n| n > 255) {
        return None;
    }
    let rem_bytes = 4 - init.len() as u32;
    if *last >= 1u64 << (8 * rem_bytes) {
        return None;
    }
    let mut v: u64 = 0;
    for (i, &n) in init.iter().enumerate() {
        v |= n << (8 * (3 - i as u32));
    }
    v |= last;
    u32::try_from(v).ok().map(Ipv4Addr::from)
}

/// Host class: `loopback`, `private`, `link_local`, `metadata`,
/// `unspecified`, `internal_name` or `public`.
pub fn host_class(host: &str) -> &'static str {
    if let Ok(a) = host.parse::<Ipv4Addr>() {
        return v4_class(a);
    }
    if let Ok(a) = host.parse::<Ipv6Addr>() {
        return v6_class(a);
    }
    name_class(host)
}

fn v4_class(a: Ipv4Addr) -> &'static str {
    let o = a.octets();
    if o == [169, 254, 169, 254] || o == [100, 100, 100, 200] || o == [169, 254, 170, 2] {
        "metadata"
    } else if o[0] == 127 {
        "loopback"
    } else if o[0] == 0 {
        "unspecified"
    } else if o[0] == 10
        || (o[0] == 172 && (16..32).contains(&o[1]))
        || (o[0] == 192 && o[1] == 168)
        || (o[0] == 100 && (64..128).contains(&o[1]))
    {
        "private"
    } else if o[0] == 169 && o[1] == 254 {
        "link_local"
    } else {
        "public"
    }
}

fn v6_class(a: Ipv6Addr) -> &'static str {
    if let Some(v4) = a.to_ipv4_mapped() {
        return v4_class(v4);
    }
    let s = a.segments();
    if a == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        "metadata"
    } else if a.is_loopback() {
        "loopback"
    } else if a.is_unspecified() {
        "unspecified"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "link_local"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "private"
    } else {
        "public"
    }
}

fn name_class(h: &str) -> &'static str {
    if h == "metadata"
        || h.starts_with("metadata.")
        || h == "instance-data"
        || h.starts_with("instance-data.")
    {
        "metadata"
    } else if h == "localhost"
        || h.ends_with(".localhost")
        || h.ends_with(".internal")
        || h.ends_with(".local")
        || h.ends_with(".localdomain")
        || h == "internal"
        || !h.contains('.')
    {
        "internal_name"
    } else {
        "public"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> FoundUrl {
        let mut v = Vec::new();
        extract(text, &mut v);
        assert_eq!(v.len(), 1, "{text}: {v:?}");
        v.remove(0)
    }

    #[test]
    fn host_normalisation_table() {
        let table: &[(&str, &str, &str)] = &[
            ("http://2130706433/", "127.0.0.1", "loopback"),
            ("http://0x7f000001/", "127.0.0.1", "loopback"),
            ("http://0x7f.0.0.1/", "127.0.0.1", "loopback"),
            ("http://0177.0.0.1/", "127.0.0.1", "loopback"),
            ("http://127.1/", "127.0.0.1", "loopback"),
            ("http://127.0.1:8080/x", "127.0.0.1", "loopback"),
            ("http://0/", "0.0.0.0", "unspecified"),
            ("http://0.0.0.0:2375/", "0.0.0.0", "unspecified"),
            ("http://10.0.0.5/", "10.0.0.5", "private"),
            ("http://172.20.1.1/", "172.20.1.1", "private"),
            ("http://192.168.1.10/", "192.168.1.10", "private"),
            (
                "http://169.254.169.254/latest/meta-data/",
                "169.254.169.254",
                "metadata",
            ),
            ("http://0xa9fea9fe/", "169.254.169.254", "metadata"),
            ("http://2852039166/", "169.254.169.254", "metadata"),
            ("http://169.254.10.1/", "169.254.10.1", "link_local"),
            (
                "http://100.100.100.200/latest",
                "100.100.100.200",
                "metadata",
            ),
            ("http://[::1]:2375/", "::1", "loopback"),
            ("http://[::]/", "::", "unspecified"),
            ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1", "loopback"),
            ("http://[::ffff:7f00:1]/", "::ffff:127.0.0.1", "loopback"),
            ("http://[fe80::1%25eth0]/", "fe80::1", "link_local"),
            ("http://[FD12:3456::1]/", "fd12:3456::1", "private"),
            ("http://[fd00:ec2::254]/", "fd00:ec2::254", "metadata"),
            ("http://[2001:db8::1]/", "2001:db8::1", "public"),
            (
                "http://metadata.google.internal/computeMetadata/v1/",
                "metadata.google.internal",
                "metadata",
            ),
            (
                "http://metadata.azure.com/",
                "metadata.azure.com",
                "metadata",
            ),
            (
                "http://user:pw@LocalHost:8931/mcp",
                "localhost",
                "internal_name",
            ),
            ("http://ci.internal/", "ci.internal", "internal_name"),
            ("http://printer.local/", "printer.local", "internal_name"),
            ("http://intranet/", "intranet", "internal_name"),
            ("https://Evil.Example.com./x", "evil.example.com", "public"),
            ("https://8.8.8.8/", "8.8.8.8", "public"),
            ("http://%31%32%37.0.0.1/", "127.0.0.1", "loopback"),
            ("gopher://127.0.0.1:6379/_SET", "127.0.0.1", "loopback"),
            ("dict://localhost:11211/stat", "localhost", "internal_name"),
            ("http://1.2.3.4.5/", "1.2.3.4.5", "public"),
            ("http://256.1.1.1/", "256.1.1.1", "public"),
        ];
        for (url, host, class) in table {
            let f = one(url);
            assert_eq!(f.host.as_deref(), Some(*host), "{url}");
            assert_eq!(host_class(host), *class, "{url}");
        }
    }

    #[test]
    fn extraction_and_schemes() {
        let mut v = Vec::new();
        extract(
            "see https://a.example.com/x?y=1, then file:///etc/passwd and FTP://files.example.org/a.txt. \
             ldap://10.0.0.1/o=x wss://ws.example.com/s file:/etc/shadow (http://b.example.com/)",
            &mut v,
        );
        let urls: Vec<&str> = v.iter().map(|f| f.url.as_str()).collect();
        assert_eq!(
            urls,
            vec![
                "https://a.example.com/x?y=1",
                "file:///etc/passwd",
                "FTP://files.example.org/a.txt",
                "ldap://10.0.0.1/o=x",
                "wss://ws.example.com/s",
                "file:/etc/shadow",
                "http://b.example.com/"
            ]
        );
        let schemes: Vec<&str> = v.iter().map(|f| f.scheme.as_str()).collect();
        assert_eq!(
            schemes,
            vec!["https", "file", "ftp", "ldap", "wss", "file", "http"]
        );
        assert_eq!(v[1].host, None);
        assert_eq!(v[5].host, None);
        assert_eq!(v[2].host.as_deref(), Some("files.example.org"));
    }

    #[test]
    fn no_urls_in_plain_text() {
        let mut v = Vec::new();
        extract("just a path /etc/passwd and C:/Windows and a: b", &mut v);
        assert!(v.is_empty(), "{v:?}");
    }
}
