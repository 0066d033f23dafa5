//! Session stitching on stateless MCP traffic (revision 2026-07-28, `dunes simulate
//! --stateless`): the derived sessions must match the sessions the generator made for at
//! least 99 % of the events. `STITCH_DEBUG=1` lists the split and merged sessions.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray};
use dunes_ingest::{IngestConfig, Normalizer, RawRecord, SourcePos};

/// (events stitched as the generator made them, all events, the derived sessions).
fn stitch(sessions: u64, seed: u64, standard: bool) -> (usize, usize, usize) {
    let mut sim = dunes_sim::Simulator::new(dunes_sim::SimConfig {
        sessions,
        seed,
        stateless: true,
        standard,
        ..dunes_sim::SimConfig::default()
    });
    let mut truth: HashMap<String, String> = HashMap::new();
    let mut n = Normalizer::new(IngestConfig::default());
    // event id → derived session (first row of each envelope)
    let mut derived: HashMap<String, String> = HashMap::new();
    let mut batch = Vec::new();
    let mut flush = |batch: &mut Vec<RawRecord>, derived: &mut HashMap<String, String>| {
        let d = n.decode_batch(std::mem::take(batch)).expect("decode");
        assert!(d.rejected.is_empty(), "{:?}", d.rejected.first());
        let ids = d.events.column_by_name("event_id").expect("event_id");
        let ss = d.events.column_by_name("session_id").expect("session_id");
        let (ids, ss) = (ids.as_string::<i32>(), ss.as_string::<i32>());
        for i in 0..d.events.num_rows() {
            assert!(
                ss.is_valid(i),
                "a stateless message without a derived session"
            );
            derived
                .entry(ids.value(i).to_string())
                .or_insert_with(|| ss.value(i).to_string());
        }
    };
    let mut line = 0u64;
    let mut texts: HashMap<String, String> = HashMap::new();
    while let Some(text) = sim.next() {
        let line_truth = sim.truth_session().expect("truth").to_string();
        let id = dunes_ingest::event_id_of(text.as_bytes()).expect("event id");
        assert!(
            !text.contains("\"session_id\""),
            "stateless traffic has no session id"
        );
        if std::env::var("STITCH_DEBUG").is_ok() {
            texts.insert(id.clone(), text.clone());
        }
        truth.insert(id, line_truth);
        line += 1;
        batch.push(RawRecord {
            bytes: text.into_bytes().into(),
            source: SourcePos::Stdin { line },
            oversize: None,
            refused: None,
        });
        if batch.len() == 4096 {
            flush(&mut batch, &mut derived);
        }
    }
    flush(&mut batch, &mut derived);
    assert_eq!(derived.len(), truth.len());
    // Each derived session stands for the generated session most of its events come from;
    // each generated session is represented by its largest derived fragment. An event is
    // stitched right when both hold.
    let mut pairs: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (id, d) in &derived {
        *pairs.entry((d.as_str(), truth[id].as_str())).or_default() += 1;
    }
    let mut best_truth: HashMap<&str, (&str, usize)> = HashMap::new();
    let mut best_frag: HashMap<&str, (&str, usize)> = HashMap::new();
    for (&(d, t), &c) in &pairs {
        let b = best_truth.entry(d).or_insert((t, 0));
        if c > b.1 {
            *b = (t, c);
        }
        let f = best_frag.entry(t).or_insert((d, 0));
        if c > f.1 {
            *f = (d, c);
        }
    }
    let right = pairs
        .iter()
        .filter(|&(&(d, t), _)| best_truth[d].0 == t && best_frag[t].0 == d)
        .map(|(_, c)| c)
        .sum();
    let n_derived = best_truth.len();
    {
        let labels = dunes_sim::generate_labels(&dunes_sim::SimConfig {
            sessions,
            seed,
            stateless: true,
            standard,
            ..dunes_sim::SimConfig::default()
        });
        let mut frags: BTreeMap<&str, Vec<(usize, &str)>> = BTreeMap::new();
        for (&(d, t), &c) in &pairs {
            frags.entry(t).or_default().push((c, d));
        }
        let mut by_derived: BTreeMap<&str, Vec<(usize, &str)>> = BTreeMap::new();
        for (&(d, t), &c) in &pairs {
            by_derived.entry(d).or_default().push((c, t));
        }
        // Events stitched wrong, by the generated session's scenario.
        let mut wrong: BTreeMap<String, usize> = BTreeMap::new();
        for (&(d, t), &c) in &pairs {
            if !(best_truth[d].0 == t && best_frag[t].0 == d) {
                let l = labels
                    .get(t)
                    .map_or("?".to_string(), |l| l.as_str().to_string());
                *wrong.entry(l).or_default() += c;
            }
        }
        eprintln!("wrong by scenario: {wrong:?}");
        if std::env::var("STITCH_DEBUG").is_ok() {
            for (t, f) in &frags {
                if f.len() > 1 {
                    for (id, dd) in &derived {
                        if truth[id] == *t && f.iter().any(|(c, d)| *c == 1 && d == dd) {
                            eprintln!("  single: {}", &texts[id][..texts[id].len().min(600)]);
                        }
                    }
                    eprintln!("split {t} {:?}: {f:?}", labels.get(*t).map(|l| l.as_str()));
                }
            }
            for (d, f) in &by_derived {
                if f.len() > 1 {
                    let f: Vec<_> = f
                        .iter()
                        .map(|(c, t)| (c, labels.get(*t).map(|l| l.as_str())))
                        .collect();
                    eprintln!("merged {d}: {f:?}");
                }
            }
        }
    }
    (right, derived.len(), n_derived)
}

#[test]
fn stitched_sessions_match_the_generated_ones() {
    // The simulator's estate (three seeds), then the DUNES-standard situations, whose
    // `principal_flood` runs 7–9 concurrent sessions of one principal, client and token:
    // where those carry no trace context nothing tells them apart (docs/schema.md).
    for (sessions, seed, standard, floor) in [
        (600, 11, false, 0.99),
        (600, 2024, false, 0.99),
        (600, 3, false, 0.99),
        (600, 5150, true, 0.92),
    ] {
        let (right, all, derived) = stitch(sessions, seed, standard);
        let share = right as f64 / all as f64;
        eprintln!(
            "seed {seed}: {right}/{all} events stitched as generated ({:.3} %), {derived} derived sessions for {sessions}",
            100.0 * share
        );
        assert!(share >= floor, "seed {seed}: only {:.3} %", 100.0 * share);
    }
}
