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
    #[cfg(feature = "full")]
    ("api_query", api_query),
];

/// Up to 256 lines of `data` as stdin records.
pub fn lines(data: &[u8]) -> Vec<dunes_ingest::RawRecord> {
    data.split(|b| *b == b'\n')
        .take(256)
        .enumerate()
        .map(|(i, l)| dunes_ingest::RawRecord {
            bytes: l.to_vec().into(),
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

/// The API routes that read a query string (`axum::extract::Query`), by selector byte.
#[cfg(feature = "full")]
pub const QUERY_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/incidents"),
    ("GET", "/api/v1/incidents/stream"),
    ("GET", "/api/v1/outputs/webhooks/main/dead-letters"),
    ("POST", "/v1/ingest"),
    ("GET", "/api/v1/ledger/export"),
    ("GET", "/api/v1/ledger/proof/inclusion"),
    ("GET", "/api/v1/ledger/proof/consistency"),
];

#[cfg(feature = "full")]
struct ApiFixture {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    key: dunes_ledger::StandaloneKey,
    /// When issued (Unix seconds), admin (every read route) and ingest (`POST
    /// /v1/ingest` only) tokens: renewed well before they expire, as one AFL process
    /// runs for the whole campaign.
    tokens: std::cell::RefCell<(i64, String, String)>,
}

#[cfg(feature = "full")]
const TOKEN_TTL_SECS: i64 = 900;

#[cfg(feature = "full")]
fn api_tokens(key: &dunes_ledger::StandaloneKey) -> Option<(i64, String, String)> {
    let now = chrono::Utc::now();
    let token =
        |role| dunes_api::auth::issue(key, "dunes/fuzz", "fuzzer", role, now, TOKEN_TTL_SECS).ok();
    Some((
        now.timestamp(),
        token(dunes_api::Role::Admin)?,
        token(dunes_api::Role::Ingest)?,
    ))
}

#[cfg(feature = "full")]
fn api_fixture() -> Option<ApiFixture> {
    use std::sync::Arc;
    let dir = tempfile::tempdir().ok()?;
    // A small real ledger (20 records, one checkpoint) for the proof and export routes.
    let mut cfg = dunes_ledger::LedgerConfig::new(dir.path(), "dunes/fuzz");
    cfg.rotate_every = None;
    let mut l = dunes_ledger::Ledger::open(cfg).ok()?;
    for i in 0..20 {
        l.append(dunes_ledger::RecordKind::Event, i, b"{}", &[])
            .ok()?;
        if i == 6 {
            l.checkpoint().ok()?;
        }
    }
    l.close().ok()?;
    let auth = dunes_api::AuthConfig {
        // thousands of requests per second from one token: no 429 in the way
        per_token_rps: u32::MAX,
        per_token_burst: u32::MAX,
        per_ip_rps: u32::MAX,
        per_ip_burst: u32::MAX,
        ..Default::default()
    };
    let auth = dunes_api::AuthState::open(dir.path(), auth).ok()?;
    let key = dunes_api::auth::load_or_generate_key(dir.path()).ok()?;
    let tokens = std::cell::RefCell::new(api_tokens(&key)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let mut state = dunes_api::AppState::new(
        Arc::new(dunes_detect::IncidentStore::new()),
        dir.path().to_path_buf(),
        Arc::new(auth),
    );
    // An ingest queue that acknowledges every batch, so `format` is parsed and used.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<dunes_api::IngestRequest>(16);
    rt.spawn(async move {
        while let Some(req) = rx.recv().await {
            let _ = req.reply.send(dunes_api::IngestAck::default());
        }
    });
    state.ingest = Some(tx);
    Some(ApiFixture {
        app: dunes_api::router(state, 1 << 20),
        _dir: dir,
        rt,
        key,
        tokens,
    })
}

/// The bytes after the selector as the query string of one API route, sent through the
/// real router (authentication, `Query` extraction, the handler): no panic, and never
/// a 500 (a query string the API cannot use is the client's error, 400).
#[cfg(feature = "full")]
pub fn api_query(data: &[u8]) {
    if let Some((route, uri, status)) = api_query_status(data) {
        assert!(status != 500, "{route} {uri}: 500");
        // No route reads a credential from the query: a refused token is the harness's
        // fault, and would leave the campaign fuzzing nothing but the refusal.
        assert!(
            status != 401 && status != 403,
            "harness: token refused ({status}) for {route} {uri}"
        );
    }
}

/// [`api_query`]'s request: the route, the URI sent and the response status (None: the
/// input is empty or the fixture could not be built).
#[cfg(feature = "full")]
pub fn api_query_status(data: &[u8]) -> Option<(&'static str, String, u16)> {
    use tower::ServiceExt as _;
    thread_local! {
        static FIXTURE: Option<ApiFixture> = api_fixture();
    }
    let (&sel, query) = data.split_first()?;
    let (method, path) = QUERY_ROUTES[usize::from(sel) % QUERY_ROUTES.len()];
    // What a client can put on the wire: bytes outside the URI's query set arrive
    // percent-encoded (the fuzzer writes `%XX` itself to reach the rest).
    const ENCODE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'<')
        .add(b'>')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'|')
        .add(b'\\')
        .add(b'^')
        .add(b'[')
        .add(b']');
    let uri = format!("{path}?{}", percent_encoding::percent_encode(query, ENCODE));
    FIXTURE.with(|f| {
        let f = f.as_ref()?;
        let issued = f.tokens.borrow().0;
        if chrono::Utc::now().timestamp() - issued > TOKEN_TTL_SECS / 3 {
            *f.tokens.borrow_mut() = api_tokens(&f.key)?;
        }
        let tokens = f.tokens.borrow();
        let req = axum::http::Request::builder()
            .method(method)
            .uri(&uri)
            .header(
                "authorization",
                format!(
                    "Bearer {}",
                    if method == "POST" {
                        &tokens.2
                    } else {
                        &tokens.1
                    }
                ),
            )
            .header("content-type", "application/x-ndjson")
            .body(axum::body::Body::from("{}\n"))
            .ok()?;
        let status = f.rt.block_on(async {
            let resp = match f.app.clone().oneshot(req).await {
                Ok(resp) => resp,
                Err(e) => match e {},
            };
            let status = resp.status();
            // the live stream's body never ends
            if !path.ends_with("/stream") {
                let _ = axum::body::to_bytes(resp.into_body(), 64 << 20).await;
            }
            status
        });
        Some((path, uri.clone(), status.as_u16()))
    })
}
