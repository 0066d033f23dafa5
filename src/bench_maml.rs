//! `dunes bench maml`: MAML document processing (the DUNES standard's §7
//! asks for ≥ 1,000 documents/s at p99 ≤ 150 ms).
//!
//! The documents are the ones `dunes simulate --maml` puts on the wire
//! (benign workflows, prompts and datasets of 0.5–2 KB, and the attack
//! variants), taken from the simulated envelopes. Two figures:
//! * per document, one core: `dunes_ingest::maml::analyze` (YAML parse,
//!   schema validation, CommonMark parse, digest, round trip), each call
//!   timed into an HDR histogram;
//! * per envelope: the normaliser over the envelopes that carry MAML, with
//!   and without its `maml_docs` table's cost visible as the difference to
//!   the same envelopes with the documents replaced by plain text of the
//!   same length.

use std::time::Instant;

use anyhow::Context;
use dunes_ingest::{IngestConfig, Normalizer, RawRecord, SourcePos};
use hdrhistogram::Histogram;

fn collect_docs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if dunes_ingest::maml::looks_like_maml(s) => {
            out.push(s.clone())
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_docs(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_docs(x, out)),
        _ => {}
    }
}

fn blank_docs(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) if dunes_ingest::maml::looks_like_maml(s) => {
            *s = "x".repeat(s.len());
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(blank_docs),
        serde_json::Value::Object(o) => o.values_mut().for_each(blank_docs),
        _ => {}
    }
}

fn records(lines: &[String]) -> Vec<RawRecord> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| RawRecord {
            bytes: l.as_bytes().to_vec().into(),
            source: SourcePos::Stdin { line: i as u64 },
            oversize: None,
            refused: None,
        })
        .collect()
}

fn decode_secs(lines: &[String]) -> anyhow::Result<(f64, usize)> {
    let mut n = Normalizer::new(IngestConfig::default());
    let t = Instant::now();
    let mut docs = 0;
    for chunk in lines.chunks(4096) {
        let d = n.decode_batch(records(chunk))?;
        docs += d.maml_docs.num_rows();
    }
    Ok((t.elapsed().as_secs_f64(), docs))
}

pub fn run(sessions: u64, seed: u64, rounds: usize) -> anyhow::Result<()> {
    let cfg = dunes_sim::SimConfig {
        sessions,
        seed,
        maml: true,
        attack_ratio: 0.3,
        ..dunes_sim::SimConfig::default()
    };
    let mut buf = Vec::new();
    dunes_sim::write_ndjson(&cfg, &mut buf).context("cannot simulate")?;
    let text = String::from_utf8(buf).context("simulated traffic is not UTF-8")?;
    let mut docs = Vec::new();
    let mut carrying = Vec::new();
    let mut blanked = Vec::new();
    for line in text.lines() {
        if !line.contains("maml_version") {
            continue;
        }
        let mut v: serde_json::Value = serde_json::from_str(line)?;
        let before = docs.len();
        collect_docs(&v, &mut docs);
        if docs.len() > before {
            carrying.push(line.to_string());
            blank_docs(&mut v);
            blanked.push(v.to_string());
        }
    }
    anyhow::ensure!(
        !docs.is_empty(),
        "the simulated traffic carries no MAML document"
    );
    let bytes: usize = docs.iter().map(String::len).sum();
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut invalid = 0usize;
    let t = Instant::now();
    for _ in 0..rounds.max(1) {
        for d in &docs {
            let t0 = Instant::now();
            let a = dunes_ingest::maml::analyze(d);
            h.record((t0.elapsed().as_nanos() as u64 / 1000).max(1))?;
            invalid += usize::from(!a.valid());
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let n = docs.len() * rounds.max(1);
    println!(
        "maml analyze: {n} documents ({} distinct strings, {:.0} bytes avg, {} invalid per round) in {secs:.3} s on one thread",
        docs.len(),
        bytes as f64 / docs.len() as f64,
        invalid / rounds.max(1)
    );
    println!(
        "  {:.0} documents/s; latency per document p50 {} µs, p99 {} µs, max {} µs",
        n as f64 / secs,
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
    let (with_docs, rows) = decode_secs(&carrying)?;
    let (without, _) = decode_secs(&blanked)?;
    println!(
        "normaliser over the {} envelopes that carry MAML ({rows} maml_docs rows): {:.0} envelopes/s; the same envelopes with the documents blanked: {:.0} envelopes/s",
        carrying.len(),
        carrying.len() as f64 / with_docs,
        blanked.len() as f64 / without
    );
    Ok(())
}
