//! Fuzz targets: the parsers Dunes exposes to attacker-controlled input, each a function
//! of arbitrary bytes that must never panic (a panic, abort or hang is a finding).
//!
//! * coverage-guided campaigns: `fuzz/afl` (outside the workspace, needs `cargo-afl`),
//!   driven by `scripts/fuzz.sh` — see `docs/security.md` for the campaigns run;
//! * every CI run: `fuzz/tests/targets.rs` runs each target over its committed corpus
//!   (`fuzz/corpus/<target>/`, seeds plus what campaigns kept) and random inputs.

use std::path::Path;

/// A fuzz target: name and entry point.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name (the corpus directory and `DUNES_FUZZ_TARGET` value).
pub const TARGETS: &[Target] = &[
    ("envelope", envelope),
    ("ledger_files", ledger_files),
    ("checkpoint_note", checkpoint_note),
    ("maml", maml),
    ("otlp", otlp),
    ("gateway", gateway),
    #[cfg(feature = "full")]
    ("rule", rule),
    #[cfg(feature = "full")]
    ("hunt_sql", hunt_sql),
    #[cfg(feature = "full")]
    ("token", token),
];

/// Up to 256 lines of `data` as stdin records.
pub fn lines(data: &[u8]) -> Vec<dunes_ingest::RawRecord> {
    data.split(|b| *b == b'\n')
        .take(256)
        .enumerate()
        .map(|(i, l)| dunes_ingest::RawRecord {
            bytes: l.to_vec(),
            source: dunes_ingest::SourcePos::Stdin { line: i as u64 + 1 },
            oversize: None,
            refused: None,
        })
        .collect()
}

/// The decoder and normaliser over `records` (at most 256).
fn normalise(mut records: Vec<dunes_ingest::RawRecord>) {
    records.truncate(256);
    let mut n = dunes_ingest::Normalizer::new(dunes_ingest::IngestConfig {
        max_line_bytes: 256 * 1024,
        ..dunes_ingest::IngestConfig::default()
    });
    let _ = n.decode_batch(records);
}

/// The envelope decoder and normaliser: `data` is a batch of NDJSON lines.
pub fn envelope(data: &[u8]) {
    normalise(lines(data));
}

/// OTLP export requests as `POST /v1/traces` and `/v1/logs` take them: the first byte
/// chooses the signal (bit 0: traces / logs) and the encoding (bit 1: OTLP/JSON /
/// protobuf), the rest is the body. The envelopes mapped go on through the normaliser.
/// Oracle: a JSON body that decodes maps to the same records once re-encoded as protobuf.
pub fn otlp(data: &[u8]) {
    use dunes_ingest::otlp::{Encoding, Signal, map_request};
    use prost::Message;
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let (signal, encoding) = otlp_kind(sel);
    let Ok(m) = map_request(signal, encoding, body, "fuzz") else {
        return;
    };
    if encoding == Encoding::Json {
        let pb = match signal {
            Signal::Traces => serde_json::from_slice::<
                opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
            >(body)
            .map(|r| r.encode_to_vec()),
            Signal::Logs => serde_json::from_slice::<
                opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest,
            >(body)
            .map(|r| r.encode_to_vec()),
        }
        .expect("the body decoded once already");
        let again = map_request(signal, Encoding::Protobuf, &pb, "fuzz")
            .expect("its own protobuf encoding decodes");
        let key = |m: &dunes_ingest::otlp::Mapped| {
            m.records
                .iter()
                .map(|r| (r.bytes.clone(), r.refused.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&m), key(&again), "JSON and protobuf map alike");
        assert_eq!(
            (m.ignored, m.refused_items),
            (again.ignored, again.refused_items)
        );
    }
    normalise(m.records);
}

/// Gateway access logs (`--format` / `[ingest] format`): the first byte chooses
/// agentgateway, Tyk or OTLP/JSON lines, the rest is the log; the envelopes adapted go
/// on through the normaliser.
pub fn gateway(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    normalise(dunes_ingest::gateway::adapt_records(
        gateway_format(sel),
        lines(body),
    ));
}

/// The `otlp` target's selector byte: bit 0 traces / logs, bit 1 OTLP/JSON / protobuf.
pub fn otlp_kind(sel: u8) -> (dunes_ingest::otlp::Signal, dunes_ingest::otlp::Encoding) {
    use dunes_ingest::otlp::{Encoding, Signal};
    let signal = if sel & 1 == 0 {
        Signal::Traces
    } else {
        Signal::Logs
    };
    let encoding = if sel & 2 == 0 {
        Encoding::Json
    } else {
        Encoding::Protobuf
    };
    (signal, encoding)
}

/// The `gateway` target's selector byte: agentgateway, Tyk or OTLP/JSON lines.
pub fn gateway_format(sel: u8) -> dunes_ingest::InputFormat {
    use dunes_ingest::InputFormat;
    match sel % 3 {
        0 => InputFormat::Agentgateway,
        1 => InputFormat::Tyk,
        _ => InputFormat::Otlp,
    }
}

/// The MAML document analysis (YAML front matter, schema validation,
/// CommonMark body, digest, round trip) and the prose extraction used for
/// URLs: `data` is one document.
pub fn maml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let d = dunes_ingest::maml::analyze(text);
        assert_eq!(d.valid(), d.errors.is_empty());
        let _ = dunes_ingest::maml::prose(text);
    }
}

/// File names a `ledger_files` input can write, by the entry's name byte: segments
/// `seg-<0..128>`, `checkpoints.log`, the tombstone note and JSONs for P < 64, the files of
/// export and evidence bundles (with a tombstone for P = 20..=64), and public keys of
/// epochs 0..4.
pub fn ledger_file_name(id: u8) -> String {
    match id {
        0..=127 => format!("ledger/seg-{:016x}.dlg", id),
        128 => "ledger/checkpoints.log".into(),
        129 => "ledger/tombstone.note".into(),
        130..=193 => format!("ledger/tombstone-{:016x}.json", id - 130),
        194 => "MANIFEST".into(),
        195 => "history.json".into(),
        196 => "proofs/consistency.json".into(),
        197 => "proofs/tail.json".into(),
        198 => "proofs/anchor.json".into(),
        199 => "checkpoint.note".into(),
        200 => "records.dlr".into(),
        201 => "proofs/inclusion.json".into(),
        202..=205 => format!("keys/ledger-mldsa65-{}.pub", id - 202),
        206..=209 => format!("keys/ledger-ed25519-{}.pub", id - 206),
        210 => "tombstone.note".into(),
        // An evidence bundle's copy of the tombstone JSON, P = 20..=64.
        211..=255 => format!("tombstone-{:016x}.json", id - 191),
    }
}

/// The inverse of [`ledger_file_name`] (for building seeds from real ledgers).
pub fn ledger_file_id(name: &str) -> Option<u8> {
    (0..=255u8).find(|i| ledger_file_name(*i) == name)
}

/// Splits a `ledger_files` input into files: entries `name byte ‖ u16 LE length ‖ bytes`
/// (a short last entry takes what is left).
pub fn split_files(mut data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 3 {
        let id = data[0];
        let len = usize::from(u16::from_le_bytes([data[1], data[2]]));
        let rest = &data[3..];
        let n = len.min(rest.len());
        out.push((id, &rest[..n]));
        data = &rest[n..];
    }
    out
}

/// The inverse of [`split_files`].
pub fn join_files(files: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, b) in files {
        for chunk in b.chunks(usize::from(u16::MAX)) {
            out.push(*id);
            out.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            out.extend_from_slice(chunk);
        }
    }
    out
}

/// The ledger verifier (`dunes verify`) on a data dir or bundle whose files come from
/// `data` ([`split_files`]); a `MANIFEST` makes it a bundle.
pub fn ledger_files(data: &[u8]) {
    let Ok(d) = tempfile::tempdir() else { return };
    let mut wrote = false;
    for (id, bytes) in split_files(data) {
        let p = d.path().join(ledger_file_name(id));
        if let Some(parent) = p.parent()
            && std::fs::create_dir_all(parent).is_ok()
        {
            let mut all = std::fs::read(&p).unwrap_or_default();
            all.extend_from_slice(bytes);
            wrote |= std::fs::write(&p, all).is_ok();
        }
    }
    if !wrote {
        return;
    }
    let _ = std::fs::create_dir_all(d.path().join("ledger"));
    let _ = dunes_ledger::verify_path(d.path());
}

/// A signed checkpoint note as given to `--trusted-checkpoint`.
pub fn checkpoint_note(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = dunes_ledger::TrustedCheckpoint::from_note(Path::new("fuzz.note"), text);
    }
}

#[cfg(feature = "full")]
/// A detection rule file (YAML metadata; the SQL is parsed when planned).
pub fn rule(data: &[u8]) {
    let _ = dunes_detect::LoadedRule::from_bytes(Path::new("fuzz.yaml"), data);
}

#[cfg(feature = "full")]
/// The hunting API's read-only SQL check (the SQL parser on analyst input).
pub fn hunt_sql(data: &[u8]) {
    if let Ok(sql) = std::str::from_utf8(data) {
        let _ = dunes_api::hunt::check_read_only(sql);
    }
}

#[cfg(feature = "full")]
/// A bearer token as presented in `Authorization` (structure, base64, JSON claims,
/// ML-DSA-65 signature, validity window).
pub fn token(data: &[u8]) {
    static VERIFIER: std::sync::OnceLock<Option<dunes_api::TokenVerifier>> =
        std::sync::OnceLock::new();
    let v = VERIFIER.get_or_init(|| {
        let dir = tempfile::tempdir().ok()?;
        let key = dunes_ledger::StandaloneKey::load_or_generate(dir.path(), "fuzz-token").ok()?;
        Some(dunes_api::TokenVerifier::new(&key, 900))
    });
    if let (Some(v), Ok(t)) = (v, std::str::from_utf8(data)) {
        let _ = v.verify(t, chrono::Utc::now());
    }
}
