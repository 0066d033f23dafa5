//! Line-oriented input: files, stdin and HTTP bodies.

use std::fs::File;
use std::io::{Read, StdinLock};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::{IngestError, RawRecord, SourcePos};

/// Where a [`LineReader`] reads from (for [`SourcePos`]).
#[derive(Clone, Debug)]
pub enum LineSource {
    /// A file; positions are `path:line`.
    File(Arc<str>),
    /// Standard input; positions are `stdin:line`.
    Stdin,
}

/// Bytes a line is read into ahead of use (or twice the line limit, if
/// more): records are slices of these buffers, so a line costs neither an
/// allocation nor a copy of its own.
const CHUNK_BYTES: usize = 2 << 20;
/// Idle buffers kept for reuse per reader: enough for the batches a
/// pipeline holds in flight, so reading does not fault in fresh memory.
const POOL_KEEP: usize = 32;

/// Read buffers whose records are all dropped, ready to be filled again
/// (already written once, so the kernel does not zero their pages again).
#[derive(Default)]
struct Pool(Mutex<Vec<Vec<u8>>>);

impl Pool {
    /// A buffer of `len` bytes (a reader's buffers all have its one length).
    fn take(&self, len: usize) -> Vec<u8> {
        let reused = self.0.lock().map(|mut free| free.pop()).unwrap_or(None);
        reused.unwrap_or_else(|| vec![0; len])
    }

    fn put(&self, buf: Vec<u8>) {
        if let Ok(mut free) = self.0.lock()
            && free.len() < POOL_KEEP
        {
            free.push(buf);
        }
    }
}

/// A filled read buffer, shared by the records sliced from it; it goes back
/// to its pool when the last of them is dropped.
struct Chunk {
    buf: Vec<u8>,
    filled: usize,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.filled]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

/// Splits a byte stream into [`RawRecord`]s, one per line (1-based line
/// numbers). At most `max_line_bytes + 1` bytes of a line are kept in memory;
/// the rest is skipped and `oversize` records the full length. `\n` and
/// `\r\n` endings are handled, a final line without newline is returned,
/// blank (whitespace-only) lines are skipped, and invalid UTF-8 is passed on
/// as bytes (validation rejects it). The input is read in large buffers
/// (pooled) and each record is a [`Bytes`] slice of one; a read that returns
/// less than asked for and completes a line (a pipe, a terminal) hands its
/// lines on without waiting for more (that buffer then holds only what the
/// read brought: stdin is read a line per batch, so few are in flight).
pub struct LineReader<R: Read> {
    inner: R,
    source: LineSource,
    max_line_bytes: usize,
    line: u64,
    done: bool,
    pool: Arc<Pool>,
    chunk_bytes: usize,
    /// What was read; `data[pos..]` is not handed out yet.
    data: Bytes,
    pos: usize,
    eof: bool,
}

impl<R: Read> LineReader<R> {
    /// Wraps a reader.
    pub fn new(inner: R, source: LineSource, max_line_bytes: usize) -> Self {
        Self::with_chunk_bytes(inner, source, max_line_bytes, CHUNK_BYTES)
    }

    /// [`LineReader::new`] with read buffers of `chunk_bytes` (raised to
    /// twice the kept part of a line when smaller).
    fn with_chunk_bytes(
        inner: R,
        source: LineSource,
        max_line_bytes: usize,
        chunk_bytes: usize,
    ) -> Self {
        let keep = max_line_bytes.saturating_add(1);
        LineReader {
            inner,
            source,
            max_line_bytes,
            line: 0,
            done: false,
            pool: Arc::default(),
            chunk_bytes: chunk_bytes.max(keep.saturating_mul(2)),
            data: Bytes::new(),
            pos: 0,
            eof: false,
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

    /// Moves the unread part (`data[pos..]`, no newline in it) to the start
    /// of a fresh buffer and reads behind it: until the buffer is full, the
    /// input ends, or a short read brought a newline.
    fn refill(&mut self) -> Result<(), IngestError> {
        let mut buf = self.pool.take(self.chunk_bytes);
        let tail = &self.data[self.pos..];
        buf[..tail.len()].copy_from_slice(tail);
        let mut filled = tail.len();
        while filled < buf.len() {
            let want = buf.len() - filled;
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    let newline = memchr_nl(&buf[filled..filled + n]).is_some();
                    filled += n;
                    if newline && n < want {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.pool.put(buf);
                    return Err(IngestError::io(format!("read {}", self.describe()), e));
                }
            }
        }
        self.data = Bytes::from_owner(Chunk {
            buf,
            filled,
            pool: self.pool.clone(),
        });
        self.pos = 0;
        Ok(())
    }

    /// Reads one line: `Ok(None)` at end of input; else the kept bytes
    /// (without the line ending) and the line's full length.
    fn read_line(&mut self) -> Result<Option<(Bytes, usize)>, IngestError> {
        let keep = self.max_line_bytes.saturating_add(1);
        loop {
            let rest = &self.data[self.pos..];
            if let Some(i) = memchr_nl(rest) {
                let start = self.pos;
                self.pos += i + 1;
                return Ok(Some(self.line_at(start, i, keep)));
            }
            if rest.len() >= keep {
                return self.oversize(keep).map(Some);
            }
            if self.eof {
                if rest.is_empty() {
                    return Ok(None);
                }
                let (start, len) = (self.pos, rest.len());
                self.pos = self.data.len();
                return Ok(Some(self.line_at(start, len, keep)));
            }
            self.refill()?;
        }
    }

    /// The line `data[start..start + len]`: its length without a final
    /// `\r`, and its bytes without it (the first `keep` bytes, `\r` or not,
    /// when the line is longer).
    fn line_at(&self, start: usize, len: usize, keep: usize) -> (Bytes, usize) {
        let total = match self.data[start..start + len].last() {
            Some(b'\r') => len - 1,
            _ => len,
        };
        let kept = if len <= keep { total } else { keep };
        (self.data.slice(start..start + kept), total)
    }

    /// A line longer than `keep` bytes: its first `keep` bytes are kept,
    /// the rest is read and counted up to its newline (or the end).
    fn oversize(&mut self, keep: usize) -> Result<(Bytes, usize), IngestError> {
        let kept = self.data.slice(self.pos..self.pos + keep);
        let mut total = 0usize;
        let mut last = None;
        loop {
            let rest = &self.data[self.pos..];
            if let Some(i) = memchr_nl(rest) {
                total += i;
                last = rest[..i].last().copied().or(last);
                self.pos += i + 1;
                break;
            }
            total += rest.len();
            last = rest.last().copied().or(last);
            self.pos = self.data.len();
            if self.eof {
                break;
            }
            self.refill()?;
        }
        if last == Some(b'\r') {
            total -= 1;
        }
        // the `\r` may have been the byte over the limit
        let kept = if kept.len() > total {
            kept.slice(..total)
        } else {
            kept
        };
        Ok((kept, total))
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

impl<R: Read> Iterator for LineReader<R> {
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
) -> Result<LineReader<File>, IngestError> {
    let p = path.as_ref();
    let f = File::open(p).map_err(|e| IngestError::io(format!("open {}", p.display()), e))?;
    Ok(LineReader::new(
        f,
        LineSource::File(p.display().to_string().into()),
        max_line_bytes,
    ))
}

/// Reads NDJSON from standard input.
pub fn stdin_reader(max_line_bytes: usize) -> LineReader<StdinLock<'static>> {
    LineReader::new(std::io::stdin().lock(), LineSource::Stdin, max_line_bytes)
}

/// Splits an HTTP ingest body into records: a JSON array (each element one
/// record, the exact bytes it was sent with) or NDJSON (one record per
/// non-blank line). Records are slices of `body` (no copies).
/// Records larger than `max_line_bytes` are passed on with `oversize` set.
pub fn split_http_body(
    body: &Bytes,
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
    let mk = |bytes: Bytes, index: u64| {
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
            out.push(mk(body.slice_ref(e.get().as_bytes()), i as u64));
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.push(mk(body.slice_ref(line), i as u64));
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
        assert_eq!(&recs[1].bytes[..], b"ok");
        assert_eq!(recs[1].source.to_string(), "stdin:2");
    }

    /// A reader that hands out at most the next of `sizes` bytes per read
    /// (a pipe, a terminal, a slow disk).
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        call: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let size = self.sizes[self.call % self.sizes.len()];
            self.call += 1;
            let n = size.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// What the reader must return for `input`, line by line: (line number,
    /// bytes kept, full length when over `max`).
    fn model(input: &[u8], max: usize) -> Vec<(u64, Vec<u8>, Option<usize>)> {
        let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop(); // the input ended with a newline
        }
        let keep = max + 1;
        let mut out = Vec::new();
        for (n, l) in lines.into_iter().enumerate() {
            let total = if l.last() == Some(&b'\r') {
                l.len() - 1
            } else {
                l.len()
            };
            let kept = if l.len() <= keep {
                &l[..total]
            } else {
                &l[..keep]
            };
            if total <= max && kept.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.push((n as u64 + 1, kept.to_vec(), (total > max).then_some(total)));
        }
        out
    }

    proptest::proptest! {
        /// Lines cut across read buffers, short reads, `\r\n` split between
        /// two reads, lines over the limit spanning several buffers: the
        /// records are those of a plain split of the whole input.
        #[test]
        fn records_do_not_depend_on_buffers_or_reads(
            input in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'b', b' ', b'\r', b'\n', b'\n', 0xff]),
                0..400,
            ),
            max in 1usize..24,
            chunk in 1usize..80,
            sizes in proptest::collection::vec(1usize..50, 1..6),
        ) {
            let reader = Trickle { data: input.clone(), at: 0, sizes, call: 0 };
            let got: Vec<(u64, Vec<u8>, Option<usize>)> =
                LineReader::with_chunk_bytes(reader, LineSource::Stdin, max, chunk)
                    .map(|r| {
                        let r = r.expect("read");
                        let SourcePos::Stdin { line } = r.source else { panic!("{:?}", r.source) };
                        (line, r.bytes.to_vec(), r.oversize)
                    })
                    .collect();
            proptest::prop_assert_eq!(got, model(&input, max));
        }
    }

    #[test]
    fn read_buffers_are_reused_once_their_records_are_dropped() {
        let lines: Vec<String> = (0..1000).map(|i| format!("{i:099}")).collect();
        let input = lines.join("\n").into_bytes();
        // buffers of 1,000 bytes: 100 of them for the input
        let mut r = LineReader::with_chunk_bytes(&input[..], LineSource::Stdin, 200, 1000);
        for l in &lines {
            let rec = r.next().expect("a line").expect("read");
            assert_eq!(&rec.bytes[..], l.as_bytes());
        }
        assert!(r.next().is_none());
        // each buffer went back when its last record was dropped; the pool
        // kept a bounded number of them
        let idle = r.pool.0.lock().expect("pool").len();
        assert!((1..=POOL_KEEP).contains(&idle), "{idle} buffers idle");
        // while records are held, their buffers are not filled again
        let held: Vec<RawRecord> =
            LineReader::with_chunk_bytes(&input[..], LineSource::Stdin, 200, 1000)
                .map(|r| r.expect("read"))
                .collect();
        let got: Vec<&[u8]> = held.iter().map(|r| &r.bytes[..]).collect();
        let want: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn http_bodies() {
        let arr = split_http_body(
            &Bytes::from_static(b" [ {\"a\": 1}, {\"b\":[2]} ]"),
            "r1",
            100,
        )
        .expect("array");
        assert_eq!(arr.len(), 2);
        assert_eq!(&arr[1].bytes[..], b"{\"b\":[2]}");
        assert!(matches!(&arr[1].source, SourcePos::Http { index: 1, .. }));
        let nd = split_http_body(&Bytes::from_static(b"{\"a\":1}\r\n\n{\"b\":2}"), "r2", 100)
            .expect("ndjson");
        assert_eq!(nd.len(), 2);
        assert_eq!(&nd[0].bytes[..], b"{\"a\":1}");
        let big = split_http_body(&Bytes::from_static(b"[\"0123456789\"]"), "r3", 5).expect("big");
        assert_eq!(big[0].oversize, Some(12));
        assert!(split_http_body(&Bytes::from_static(b"[1,"), "r4", 100).is_err());
        assert!(
            split_http_body(&Bytes::from_static(b"  "), "r5", 100)
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn http_array_elements_keep_their_original_bytes() {
        // Spacing, key order, escapes and number spelling as sent: the
        // ledger must hash what was received.
        let body = b"[ {\"b\" : 1.50, \"a\":\"\\u00e9\"} ,\n{ \"z\":[ 1 ,2 ] } ]";
        let arr = split_http_body(&Bytes::from_static(body), "r6", 1000).expect("array");
        assert_eq!(arr.len(), 2);
        assert_eq!(&arr[0].bytes[..], b"{\"b\" : 1.50, \"a\":\"\\u00e9\"}");
        assert_eq!(&arr[1].bytes[..], b"{ \"z\":[ 1 ,2 ] }");
    }
}
