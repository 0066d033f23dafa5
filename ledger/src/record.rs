//! Record header encoding and segment frame reading (format: `docs/ledger-format.md`).

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use crate::merkle::{Hash, LEAF_PREFIX};

/// Kind of a ledger record (`u8` on disk).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum RecordKind {
    Event = 1,
    Incident = 2,
    Response = 3,
    Action = 4,
    Key = 5,
    RuleSet = 6,
    Model = 7,
    /// Authorises the redaction (GDPR erasure) of the payloads of the records it refers to.
    Redaction = 8,
    /// Emergency revocation of a key epoch.
    Revocation = 9,
    /// An authenticated API request (who read or changed what).
    Access = 10,
}

impl RecordKind {
    /// All kinds, in on-disk code order.
    pub const ALL: [RecordKind; 10] = [
        RecordKind::Event,
        RecordKind::Incident,
        RecordKind::Response,
        RecordKind::Action,
        RecordKind::Key,
        RecordKind::RuleSet,
        RecordKind::Model,
        RecordKind::Redaction,
        RecordKind::Revocation,
        RecordKind::Access,
    ];

    /// On-disk code.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Decode an on-disk code.
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(usize::from(v).wrapping_sub(1)).copied()
    }

    /// Lowercase name (`"event"`, ..., `"ruleset"`, `"model"`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Event => "event",
            RecordKind::Incident => "incident",
            RecordKind::Response => "response",
            RecordKind::Action => "action",
            RecordKind::Key => "key",
            RecordKind::RuleSet => "ruleset",
            RecordKind::Model => "model",
            RecordKind::Redaction => "redaction",
            RecordKind::Revocation => "revocation",
            RecordKind::Access => "access",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when parsing an unknown record kind name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown record kind {0:?} (expected one of event, incident, response, action, key, ruleset, model, redaction, revocation)"
)]
pub struct ParseRecordKindError(pub String);

impl FromStr for RecordKind {
    type Err = ParseRecordKindError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Self::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| ParseRecordKindError(s.to_string()))
    }
}

impl TryFrom<u8> for RecordKind {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        Self::from_u8(v).ok_or(v)
    }
}

/// Record header format version.
pub const RECORD_VERSION: u8 = 1;
/// Frame magic: ASCII `DLR1`.
pub const FRAME_MAGIC: [u8; 4] = *b"DLR1";
/// Frame prefix: magic (4) + flags (1) + header_len (4).
pub const FRAME_PREFIX_LEN: usize = 9;
/// Frame trailer: the 32-byte record hash.
pub const FRAME_TRAILER_LEN: usize = 32;
/// Frame flag bit 0: the payload has been redacted (removed); the header is unchanged.
pub const FRAME_FLAG_REDACTED: u8 = 0x01;
/// Header size without the origin and refs.
pub const HEADER_FIXED_LEN: usize = 100;
/// Maximum origin length accepted by this implementation (the format allows 65535).
pub const MAX_ORIGIN_LEN: usize = 255;
/// Maximum number of refs per record.
pub const MAX_REFS: usize = 65_536;
/// Maximum payload size per record (64 MiB).
pub const MAX_PAYLOAD_LEN: u64 = 64 * 1024 * 1024;
/// Upper bound on a header this implementation will read.
pub const MAX_HEADER_LEN: usize = HEADER_FIXED_LEN + u16::MAX as usize + 8 * MAX_REFS;

// Header field offsets (before the variable-length origin).
const OFF_VERSION: usize = 0;
const OFF_KIND: usize = 1;
const OFF_EPOCH: usize = 2;
const OFF_INDEX: usize = 6;
const OFF_TS: usize = 14;
const OFF_ORIGIN_LEN: usize = 22;
const OFF_ORIGIN: usize = 24;

/// Total frame length for a record with the given origin, refs count and payload size.
pub fn frame_len(origin_len: usize, refs: usize, payload_len: usize) -> u64 {
    (FRAME_PREFIX_LEN + HEADER_FIXED_LEN + origin_len + 8 * refs + FRAME_TRAILER_LEN) as u64
        + payload_len as u64
}

/// Fields of a header to encode.
pub(crate) struct HeaderFields<'a> {
    pub kind: RecordKind,
    pub key_epoch: u32,
    pub index: u64,
    pub ts_micros: i64,
    pub origin: &'a [u8],
    pub prev_hash: &'a Hash,
    pub payload_hash: &'a Hash,
    pub payload_len: u64,
    pub refs: &'a [u64],
}

/// Encode `0x00 ‖ header` into `out` (cleared first). The leading byte is the Merkle leaf
/// prefix so that `BLAKE3(out)` is the record hash and `out[1..]` the header bytes.
pub(crate) fn encode_prefixed_header(out: &mut Vec<u8>, h: &HeaderFields<'_>) {
    out.clear();
    out.reserve(1 + HEADER_FIXED_LEN + h.origin.len() + 8 * h.refs.len());
    out.push(LEAF_PREFIX);
    out.push(RECORD_VERSION);
    out.push(h.kind.as_u8());
    out.extend_from_slice(&h.key_epoch.to_le_bytes());
    out.extend_from_slice(&h.index.to_le_bytes());
    out.extend_from_slice(&h.ts_micros.to_le_bytes());
    // Callers guarantee origin.len() <= MAX_ORIGIN_LEN.
    out.extend_from_slice(&(h.origin.len() as u16).to_le_bytes());
    out.extend_from_slice(h.origin);
    out.extend_from_slice(h.prev_hash);
    out.extend_from_slice(h.payload_hash);
    out.extend_from_slice(&h.payload_len.to_le_bytes());
    out.extend_from_slice(&(h.refs.len() as u32).to_le_bytes());
    for r in h.refs {
        out.extend_from_slice(&r.to_le_bytes());
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn hash_at(b: &[u8], at: usize) -> Hash {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[at..at + 32]);
    a
}

/// A validated, borrowed view of header bytes.
#[derive(Debug, Clone, Copy)]
pub struct HeaderView<'a> {
    bytes: &'a [u8],
    origin_len: usize,
    kind: RecordKind,
}

impl<'a> HeaderView<'a> {
    /// Parse and structurally validate header bytes (not including the 0x00 prefix).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        if bytes.len() < HEADER_FIXED_LEN {
            return Err(format!(
                "header is {} bytes, shorter than the fixed part ({HEADER_FIXED_LEN})",
                bytes.len()
            ));
        }
        let version = bytes[OFF_VERSION];
        if version != RECORD_VERSION {
            return Err(format!("unsupported record version {version}"));
        }
        let kind = RecordKind::from_u8(bytes[OFF_KIND])
            .ok_or_else(|| format!("unknown record kind code {}", bytes[OFF_KIND]))?;
        let origin_len = usize::from(le_u16(bytes, OFF_ORIGIN_LEN));
        if bytes.len() < HEADER_FIXED_LEN + origin_len {
            return Err("header too short for its origin length".into());
        }
        let origin = &bytes[OFF_ORIGIN..OFF_ORIGIN + origin_len];
        if std::str::from_utf8(origin).is_err() {
            return Err("origin is not valid UTF-8".into());
        }
        let refs_count = le_u32(bytes, OFF_ORIGIN + origin_len + 72) as usize;
        let expected = HEADER_FIXED_LEN + origin_len + 8 * refs_count;
        if bytes.len() != expected {
            return Err(format!(
                "header length {} does not match its contents ({expected} bytes for origin {origin_len} bytes and {refs_count} refs)",
                bytes.len()
            ));
        }
        Ok(Self {
            bytes,
            origin_len,
            kind,
        })
    }

    pub fn kind(&self) -> RecordKind {
        self.kind
    }
    pub fn key_epoch(&self) -> u32 {
        le_u32(self.bytes, OFF_EPOCH)
    }
    pub fn index(&self) -> u64 {
        le_u64(self.bytes, OFF_INDEX)
    }
    pub fn ts_micros(&self) -> i64 {
        le_u64(self.bytes, OFF_TS) as i64
    }
    pub fn origin(&self) -> &'a [u8] {
        &self.bytes[OFF_ORIGIN..OFF_ORIGIN + self.origin_len]
    }
    pub fn prev_hash(&self) -> Hash {
        hash_at(self.bytes, OFF_ORIGIN + self.origin_len)
    }
    pub fn payload_hash(&self) -> Hash {
        hash_at(self.bytes, OFF_ORIGIN + self.origin_len + 32)
    }
    pub fn payload_len(&self) -> u64 {
        le_u64(self.bytes, OFF_ORIGIN + self.origin_len + 64)
    }
    pub fn refs(&self) -> impl Iterator<Item = u64> + 'a {
        let start = OFF_ORIGIN + self.origin_len + 76;
        self.bytes[start..].chunks_exact(8).map(|c| le_u64(c, 0))
    }
}

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The file ends inside the frame (typical torn write).
    Truncated { offset: u64, reason: String },
    /// The frame is complete but malformed or fails its hashes.
    Invalid { offset: u64, reason: String },
    /// Operating-system read error.
    Io(io::Error),
}

/// One successfully read and hash-checked frame.
pub(crate) struct Frame<'a> {
    pub offset: u64,
    /// Length of the frame on disk.
    pub len: u64,
    pub header: HeaderView<'a>,
    /// The payload (empty if redacted).
    pub payload: &'a [u8],
    pub record_hash: Hash,
    /// Frame flag REDACTED: the payload was removed; `payload_hash` was not checked.
    pub redacted: bool,
}

/// Sequential frame reader over one segment's bytes.
pub(crate) struct FrameReader<R: Read> {
    inner: R,
    offset: u64,
    end: u64,
    hdr: Vec<u8>,
    payload: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    /// `end` is the number of bytes available from the reader's current position, which is at
    /// file offset `start`.
    pub fn new(inner: R, start: u64, end: u64) -> Self {
        Self {
            inner,
            offset: start,
            end,
            hdr: Vec::with_capacity(256),
            payload: Vec::new(),
        }
    }

    fn read_exact(&mut self, buf_len: usize, into_payload: bool) -> Result<(), FrameError> {
        let buf = if into_payload {
            &mut self.payload
        } else {
            &mut self.hdr
        };
        let start = buf.len();
        buf.resize(start + buf_len, 0);
        self.inner
            .read_exact(&mut buf[start..])
            .map_err(FrameError::Io)
    }

    /// Read the next frame. `Ok(None)` at a clean end of data.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        let offset = self.offset;
        if offset >= self.end {
            return Ok(None);
        }
        let remaining = self.end - offset;
        let truncated = |reason: String| FrameError::Truncated { offset, reason };
        let invalid = |reason: String| FrameError::Invalid { offset, reason };
        if remaining < FRAME_PREFIX_LEN as u64 {
            return Err(truncated(format!(
                "incomplete frame: only {remaining} bytes left, frame prefix needs {FRAME_PREFIX_LEN}"
            )));
        }
        let mut prefix = [0u8; FRAME_PREFIX_LEN];
        self.inner.read_exact(&mut prefix).map_err(FrameError::Io)?;
        if prefix[..4] != FRAME_MAGIC {
            return Err(invalid(format!(
                "bad frame magic {:02x?} (expected \"DLR1\")",
                &prefix[..4]
            )));
        }
        let flags = prefix[4];
        let redacted = flags == FRAME_FLAG_REDACTED;
        if flags & !FRAME_FLAG_REDACTED != 0 {
            return Err(invalid(format!("unknown frame flags 0x{flags:02x}")));
        }
        let header_len = le_u32(&prefix, 5) as usize;
        if !(HEADER_FIXED_LEN..=MAX_HEADER_LEN).contains(&header_len) {
            return Err(invalid(format!("implausible header length {header_len}")));
        }
        let after_prefix = remaining - FRAME_PREFIX_LEN as u64;
        if after_prefix < header_len as u64 {
            return Err(truncated(format!(
                "incomplete frame: header needs {header_len} bytes, {after_prefix} left"
            )));
        }
        self.hdr.clear();
        self.hdr.push(LEAF_PREFIX);
        self.read_exact(header_len, false)?;
        let payload_len = {
            let view = HeaderView::parse(&self.hdr[1..]).map_err(&invalid)?;
            view.payload_len()
        };
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(invalid(format!("implausible payload length {payload_len}")));
        }
        let stored_len = if redacted { 0 } else { payload_len };
        let need = stored_len + FRAME_TRAILER_LEN as u64;
        let left = after_prefix - header_len as u64;
        if left < need {
            return Err(truncated(format!(
                "incomplete frame: payload and trailer need {need} bytes, {left} left"
            )));
        }
        self.payload.clear();
        self.read_exact(stored_len as usize, true)?;
        let mut trailer = [0u8; FRAME_TRAILER_LEN];
        self.inner
            .read_exact(&mut trailer)
            .map_err(FrameError::Io)?;
        self.offset += FRAME_PREFIX_LEN as u64 + header_len as u64 + need;

        let record_hash = *blake3::hash(&self.hdr).as_bytes();
        if record_hash != trailer {
            return Err(invalid(
                "record hash does not match the frame trailer (header modified or torn write)"
                    .into(),
            ));
        }
        let header = HeaderView::parse(&self.hdr[1..]).map_err(&invalid)?;
        if !redacted && *blake3::hash(&self.payload).as_bytes() != header.payload_hash() {
            return Err(invalid("payload hash mismatch".into()));
        }
        Ok(Some(Frame {
            offset,
            len: self.offset - offset,
            header,
            payload: &self.payload,
            record_hash,
            redacted,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_codes_and_names_round_trip() {
        for k in RecordKind::ALL {
            assert_eq!(RecordKind::from_u8(k.as_u8()), Some(k));
            assert_eq!(k.to_string().parse::<RecordKind>(), Ok(k));
            assert_eq!(k.to_string(), k.to_string().to_lowercase());
        }
        assert_eq!(RecordKind::from_u8(0), None);
        assert_eq!(RecordKind::from_u8(10), Some(RecordKind::Access));
        assert_eq!(RecordKind::from_u8(11), None);
        assert_eq!("RuleSet".parse::<RecordKind>(), Ok(RecordKind::RuleSet));
        assert!("nope".parse::<RecordKind>().is_err());
        assert_eq!(RecordKind::Key as u8, 5);
    }

    #[test]
    fn header_round_trip() {
        let prev = [7u8; 32];
        let ph = [9u8; 32];
        let mut buf = Vec::new();
        encode_prefixed_header(
            &mut buf,
            &HeaderFields {
                kind: RecordKind::Incident,
                key_epoch: 3,
                index: 42,
                ts_micros: -5,
                origin: b"dunes/h",
                prev_hash: &prev,
                payload_hash: &ph,
                payload_len: 1234,
                refs: &[1, 40],
            },
        );
        assert_eq!(buf[0], 0);
        assert_eq!(buf.len(), 1 + HEADER_FIXED_LEN + 7 + 16);
        let v = HeaderView::parse(&buf[1..]).expect("parse");
        assert_eq!(v.kind(), RecordKind::Incident);
        assert_eq!(v.key_epoch(), 3);
        assert_eq!(v.index(), 42);
        assert_eq!(v.ts_micros(), -5);
        assert_eq!(v.origin(), b"dunes/h");
        assert_eq!(v.prev_hash(), prev);
        assert_eq!(v.payload_hash(), ph);
        assert_eq!(v.payload_len(), 1234);
        assert_eq!(v.refs().collect::<Vec<_>>(), vec![1, 40]);
        // Trailing garbage / short headers are rejected.
        let mut longer = buf[1..].to_vec();
        longer.push(0);
        assert!(HeaderView::parse(&longer).is_err());
        assert!(HeaderView::parse(&buf[1..buf.len() - 1]).is_err());
    }
}
