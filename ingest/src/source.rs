//! Line-oriented input: files, stdin and HTTP bodies.

use std::fs::File;
use std::io::{BufRead, BufReader, StdinLock};
use std::path::Path;
use std::sync::Arc;

use crate::{IngestError, RawRecord, SourcePos};

/// Where a [`LineReader`] reads from (for [`SourcePos`]).
#[derive(Clone, Debug)]
pub enum LineSource {
    /// A file; positions are `path:line`.
    File(Arc<str>),
    /// Standard input; positions are `stdin:line`.
    Stdin,
}

/// Splits a byte stream into [`RawRecord`]s, one per line (1-based line
/// numbers). At most `max_line_bytes + 1` bytes of a line are kept in memory;
/// the rest is skipped and `oversize` records the full length. `\n` and
/// `\r\n` endings are handled, a final line without newline is returned,
/// blank (whitespace-only) lines are skipped, and invalid UTF-8 is passed on
/// as bytes (validation rejects it).
pub struct LineReader<R: BufRead> {
    inner: R,
    source: LineSource,
    max_line_bytes: usize,
    line: u64,
    done: bool,
}

impl<R: BufRead> LineReader<R> {
    /// Wraps a reader.
    pub fn new(inner: R, source: LineSource, max_line_bytes: usize) -> Self {
        LineReader {
            inner,
            source,
            max_line_bytes,
            line: 0,
            done: false,
        }
    }

    /// The number of lines read so far.
    pub fn lines_read(&self) -> u64 {
        self.line
    }

    fn pos(&self) -> SourcePos {
        match &self.source {
            LineSource::File(p) => SourcePos::File {
                path: p.clone(),
                line: self.line,
            },
            LineSource::Stdin => SourcePos::Stdin { line: self.line },
        }
    }

    /// Reads one line: `Ok(None)` at end of input.
    fn read_line(&mut self) -> Result<Option<(Vec<u8>, usize)>, IngestError> {
        let keep = self.max_line_bytes.saturating_add(1);
        let mut buf = Vec::new();
        let mut total = 0usize;
        let mut any = false;
        let mut last: Option<u8> = None;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(IngestError::io(format!("read {}", self.describe()), e)),
            };
            if chunk.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (part, consumed, eol) = match memchr_nl(chunk) {
                Some(i) => (&chunk[..i], i + 1, true),
                None => (chunk, chunk.len(), false),
            };
            total = total.saturating_add(part.len());
            if let Some(&l) = part.last() {
                last = Some(l);
            }
            if buf.len() < keep {
                let room = keep - buf.len();
                buf.extend_from_slice(&part[..part.len().min(room)]);
            }
            self.inner.consume(consumed);
            if eol {
                break;
            }
        }
        if last == Some(b'\r') {
            if buf.len() == total {
                buf.pop();
            }
            total -= 1;
        }
        Ok(Some((buf, total)))
    }

    fn describe(&self) -> String {
        match &self.source {
            LineSource::File(p) => p.to_string(),
            LineSource::Stdin => "stdin".into(),
        }
    }
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', b)
}

impl<R: BufRead> Iterator for LineReader<R> {
    type Item = Result<RawRecord, IngestError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let (bytes, total) = match self.read_line() {
                Ok(Some(x)) => x,
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            self.line += 1;
            if total <= self.max_line_bytes && bytes.iter().all(u8::is_ascii_whitespace) {
                continue; // blank lines are skipped, not rejected
            }
            let oversize = (total > self.max_line_bytes).then_some(total);
            return Some(Ok(RawRecord {
                bytes,
                source: self.pos(),
                oversize,
                refused: None,
            }));
        }
        None
    }
}

/// Opens an NDJSON file.
pub fn open_file(
    path: impl AsRef<Path>,
    max_line_bytes: usize,
) -> Result<LineReader<BufReader<File>>, IngestError> {
    let p = path.as_ref();
    let f = File::open(p).map_err(|e| IngestError::io(format!("open {}", p.display()), e))?;
    Ok(LineReader::new(
        BufReader::with_capacity(256 * 1024, f),
        LineSource::File(p.display().to_string().into()),
        max_line_bytes,
    ))
}

/// Reads NDJSON from standard input.
pub fn stdin_reader(max_line_bytes: usize) -> LineReader<StdinLock<'static>> {
    LineReader::new(std::io::stdin().lock(), LineSource::Stdin, max_line_bytes)
}

/// Splits an HTTP ingest body into records: a JSON array (each element
/// re-serialised as one record) or NDJSON (one record per non-blank line).
/// Records larger than `max_line_bytes` are passed on with `oversize` set.
pub fn split_http_body(
    body: &[u8],
    request_id: &str,
    max_line_bytes: usize,
) -> Result<Vec<RawRecord>, IngestError> {
    let request_id: Arc<str> = request_id.into();
    let pos = |index: u64| SourcePos::Http {
        request_id: request_id.clone(),
        index,
    };
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Ok(Vec::new());
    };
    let mk = |bytes: Vec<u8>, index: u64| {
        let len = bytes.len();
        let (bytes, oversize) = if len > max_line_bytes {
            let mut b = bytes;
            b.truncate(max_line_bytes.saturating_add(1));
            (b, Some(len))
        } else {
            (bytes, None)
        };
        RawRecord {
            bytes,
            source: pos(index),
            oversize,
            refused: None,
        }
    };
    if body[start] == b'[' {
        // Each element keeps the exact bytes it was sent with (what the
        // ledger hashes is what was received), not a re-serialisation.
        let elems: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body)
            .map_err(|e| IngestError::HttpBody(format!("not a JSON array: {e}")))?;
        let mut out = Vec::with_capacity(elems.len());
        for (i, e) in elems.iter().enumerate() {
            out.push(mk(e.get().as_bytes().to_vec(), i as u64));
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.push(mk(line.to_vec(), i as u64));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8], max: usize) -> Vec<RawRecord> {
        LineReader::new(input, LineSource::File("t.ndjson".into()), max)
            .collect::<Result<Vec<_>, _>>()
            .expect("read")
    }

    #[test]
    fn lines_crlf_blank_final_and_oversize() {
        let recs = read(b"a\r\n\n  \r\nbb\n0123456789ABC\n\xff\xfe\nlast", 10);
        let got: Vec<(String, Option<usize>, String)> = recs
            .iter()
            .map(|r| {
                (
                    String::from_utf8_lossy(&r.bytes).into_owned(),
                    r.oversize,
                    r.source.to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), None, "t.ndjson:1".into()),
                ("bb".into(), None, "t.ndjson:4".into()),
                ("0123456789A".into(), Some(13), "t.ndjson:5".into()),
                ("\u{fffd}\u{fffd}".into(), None, "t.ndjson:6".into()),
                ("last".into(), None, "t.ndjson:7".into()),
            ]
        );
    }

    #[test]
    fn long_lines_across_buffer_boundaries() {
        let mut input = vec![b'x'; 100_000];
        input.push(b'\n');
        input.extend_from_slice(b"ok\n");
        let r = std::io::BufReader::with_capacity(16, &input[..]);
        let recs: Vec<RawRecord> = LineReader::new(r, LineSource::Stdin, 1000)
            .collect::<Result<Vec<_>, _>>()
            .expect("read");
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].oversize, Some(100_000));
        assert_eq!(recs[0].bytes.len(), 1001);
        assert_eq!(recs[1].bytes, b"ok");
        assert_eq!(recs[1].source.to_string(), "stdin:2");
    }

    #[test]
    fn http_bodies() {
        let arr = split_http_body(b" [ {\"a\": 1}, {\"b\":[2]} ]", "r1", 100).expect("array");
        assert_eq!(arr.len(), 2);
        assert_eq!(arr[1].bytes, b"{\"b\":[2]}");
        assert!(matches!(&arr[1].source, SourcePos::Http { index: 1, .. }));
        let nd = split_http_body(b"{\"a\":1}\r\n\n{\"b\":2}", "r2", 100).expect("ndjson");
        assert_eq!(nd.len(), 2);
        assert_eq!(nd[0].bytes, b"{\"a\":1}");
        let big = split_http_body(b"[\"0123456789\"]", "r3", 5).expect("big");
        assert_eq!(big[0].oversize, Some(12));
        assert!(split_http_body(b"[1,", "r4", 100).is_err());
        assert!(split_http_body(b"  ", "r5", 100).expect("empty").is_empty());
    }

    #[test]
    fn http_array_elements_keep_their_original_bytes() {
        // Spacing, key order, escapes and number spelling as sent: the
        // ledger must hash what was received.
        let body = b"[ {\"b\" : 1.50, \"a\":\"\\u00e9\"} ,\n{ \"z\":[ 1 ,2 ] } ]";
        let arr = split_http_body(body, "r6", 1000).expect("array");
        assert_eq!(arr.len(), 2);
        assert_eq!(arr[0].bytes, b"{\"b\" : 1.50, \"a\":\"\\u00e9\"}");
        assert_eq!(arr[1].bytes, b"{ \"z\":[ 1 ,2 ] }");
    }
}
