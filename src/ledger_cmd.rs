//! CLI glue for the audit ledger: `dunes export`, `dunes verify`, `dunes keys ...`,
//! `dunes ledger ...`. All logic lives in `dunes-ledger`.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

use dunes_ledger::{Ledger, LedgerConfig, Published, TrustedCheckpoint, VerifyOptions};

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Rotate the ledger signing key now (recorded in the log, signed by the old key).
    Rotate,
    /// Emergency revocation of a key epoch (recorded in the log; revoking the active key
    /// rotates first). Needs the ledger's write lock: stop `dunes run` first.
    Revoke {
        /// Key epoch to revoke.
        #[arg(long)]
        epoch: u32,
        /// Reason, recorded in the log.
        #[arg(long)]
        reason: String,
    },
    /// List the key epochs recorded in the log.
    List,
}

#[derive(Subcommand, Debug)]
pub enum LedgerCmd {
    /// Merkle proofs (RFC 9162) from the data dir.
    Proof {
        #[command(subcommand)]
        kind: ProofCmd,
    },
    /// Redact (GDPR erasure) the payload of one record; the hash chain and signatures stay
    /// valid and verifiers report the record as redacted. The redaction record is signed by
    /// the active ledger key and names the reason and the requesting subject.
    Redact {
        #[arg(long)]
        index: u64,
        #[arg(long)]
        reason: String,
        /// Who requested the erasure (default: `cli:$USER`).
        #[arg(long)]
        subject: Option<String>,
    },
    /// Retention: prune the oldest whole segments last written more than N days ago,
    /// leaving a signed tombstone so the rest still verifies (docs/ledger-format.md §2.10);
    /// the prune is ledgered as an action record. Needs the write lock: stop `dunes run`
    /// first (which prunes by itself hourly with `[ledger] retention_days`).
    Prune {
        /// Keep records ledgered in the last N days (0 is refused here; at least 183).
        #[arg(long)]
        retention_days: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum CheckpointCmd {
    /// Copy signed checkpoints out of the writer's reach, as trust anchors for
    /// `dunes verify --trusted-checkpoint`. Reads `checkpoints.log` read-only, so it can run
    /// under another account next to `dunes run`.
    #[command(
        after_help = "Examples:\n  dunes checkpoint publish --to-dir /srv/anchors --follow\n  dunes checkpoint publish --stdout --latest\n  dunes checkpoint publish --to-kafka dunes.checkpoints --brokers kafka-1:9092 --follow"
    )]
    Publish {
        /// Write `checkpoint-<tree size>.note` and `latest.note` into this directory.
        #[arg(long, required_unless_present_any = ["stdout", "to_kafka"])]
        to_dir: Option<PathBuf>,
        /// Print each checkpoint as one JSON line `{"tree_size":…,"note":"…"}`.
        #[arg(long, conflicts_with = "to_dir")]
        stdout: bool,
        /// Produce each checkpoint to this Kafka topic (created with one partition if
        /// missing): key = tree size in decimal, value = the signed note, byte for byte the
        /// content of a `checkpoint-<tree size>.note` file. Resumes after the topic's newest
        /// checkpoint and refuses to publish a ledger whose checkpoints.log disagrees with it.
        #[arg(long, value_name = "TOPIC", conflicts_with_all = ["to_dir", "stdout"])]
        to_kafka: Option<String>,
        /// Kafka bootstrap servers for --to-kafka (default: `[kafka] brokers` of the config).
        #[arg(long, requires = "to_kafka")]
        brokers: Option<String>,
        /// Only the newest checkpoint (default: every checkpoint not yet published).
        #[arg(long)]
        latest: bool,
        /// Keep running and publish each new checkpoint as it is written.
        #[arg(long)]
        follow: bool,
        /// Poll interval with --follow, in milliseconds.
        #[arg(long, default_value_t = 250)]
        interval_ms: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProofCmd {
    /// Inclusion proof of a record (default tree size: the latest checkpoint).
    Inclusion {
        #[arg(long)]
        index: u64,
        #[arg(long)]
        tree_size: Option<u64>,
    },
    /// Consistency proof between two tree sizes (default second: the latest checkpoint).
    Consistency {
        #[arg(long)]
        first: u64,
        #[arg(long)]
        second: Option<u64>,
    },
}

/// `dunes verify DIR`: a data dir or an export bundle.
pub fn verify(
    dir: &Path,
    allow_unsigned_tail: bool,
    trusted: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let opts = VerifyOptions {
        allow_unsigned_tail,
        trusted: trusted
            .iter()
            .map(|p| TrustedCheckpoint::load(p))
            .collect::<Result<_, _>>()?,
    };
    let report = dunes_ledger::verify_path_with(dir, &opts)
        .with_context(|| format!("cannot verify {}", dir.display()))?;
    println!("{report}");
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `dunes export`.
pub fn export(
    data_dir: &Path,
    from: Option<u64>,
    to: Option<u64>,
    out: &Path,
    trusted: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let anchor = trusted.map(TrustedCheckpoint::load).transpose()?;
    let s = dunes_ledger::export_with(data_dir, from, to, out, anchor.as_ref())
        .with_context(|| format!("cannot export {}", data_dir.display()))?;
    println!(
        "exported records {}..={} ({} records, {} checkpoints, {} key epochs, {} redacted) to {}\n\
         {} files, manifest signed with key epoch {}; check with: dunes verify {}",
        s.from,
        s.to,
        s.records,
        s.checkpoints,
        s.key_epochs,
        s.redacted,
        s.out.display(),
        s.files,
        s.manifest_key_epoch,
        s.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn open(data_dir: &Path, origin: String) -> anyhow::Result<Ledger> {
    let mut cfg = LedgerConfig::new(data_dir, origin);
    cfg.rotate_every = None;
    Ledger::open(cfg).with_context(|| format!("cannot open the ledger in {}", data_dir.display()))
}

/// `dunes keys ...`.
pub fn keys(data_dir: &Path, origin: String, cmd: KeysCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCmd::Rotate => {
            let mut l = open(data_dir, origin)?;
            let e = l.rotate_key().context("rotation failed")?;
            l.close().context("cannot close the ledger")?;
            println!("rotated: key epoch {e} is active (recorded in the log and checkpointed)");
        }
        KeysCmd::Revoke { epoch, reason } => {
            let mut l = open(data_dir, origin)?;
            let at = l.revoke_key(epoch, &reason).context("revocation failed")?;
            let active = l.key_epoch();
            l.close().context("cannot close the ledger")?;
            println!(
                "revoked key epoch {epoch} by record {at}; active key epoch is {active}. \
                 Verifiers now reject checkpoints signed by epoch {epoch} over trees including record {at}."
            );
        }
        KeysCmd::List => {
            let r = dunes_ledger::verify_dir(data_dir)?;
            for (e, id) in &r.key_ids {
                let ed = r
                    .ed25519_key_ids
                    .get(e)
                    .map(|i| format!(" ed25519 {i}"))
                    .unwrap_or_default();
                let rev = r
                    .revoked
                    .get(e)
                    .map(|i| format!(" revoked-by {i}"))
                    .unwrap_or_default();
                println!("epoch {e} ml-dsa-65 {id}{ed}{rev}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `dunes ledger ...`.
pub fn ledger(data_dir: &Path, origin: String, cmd: LedgerCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        LedgerCmd::Proof { kind } => {
            let json = match kind {
                ProofCmd::Inclusion { index, tree_size } => {
                    let p = dunes_ledger::inclusion_proof(data_dir, index, tree_size)?;
                    anyhow::ensure!(p.verify(), "generated proof does not verify");
                    serde_json::to_string_pretty(&p)?
                }
                ProofCmd::Consistency { first, second } => {
                    let p = dunes_ledger::consistency_proof(data_dir, first, second)?;
                    anyhow::ensure!(p.verify(), "generated proof does not verify");
                    serde_json::to_string_pretty(&p)?
                }
            };
            // `| head` must not panic on a closed pipe.
            let _ = writeln!(std::io::stdout().lock(), "{json}");
        }
        LedgerCmd::Redact {
            index,
            reason,
            subject,
        } => {
            let subject = subject.unwrap_or_else(crate::cli_subject);
            let mut l = open(data_dir, origin)?;
            let r = l
                .redact(index, &reason, &subject)
                .context("redaction failed")?;
            l.close().context("cannot close the ledger")?;
            println!("record {index} redacted (authorised by redaction record {r})");
        }
        LedgerCmd::Prune { retention_days } => {
            anyhow::ensure!(
                retention_days > 0,
                "--retention-days 0 would keep everything: nothing to prune"
            );
            dunes_pipeline::check_retention_days(retention_days).map_err(anyhow::Error::msg)?;
            let now = chrono::Utc::now();
            let cutoff = now - chrono::Duration::days(retention_days as i64);
            let mut l = open(data_dir, origin)?;
            let s = l
                .prune(cutoff.timestamp_micros())
                .context("retention failed")?;
            match &s {
                Some(s) => {
                    let action = dunes_pipeline::retention_action(
                        s,
                        retention_days,
                        &crate::cli_subject(),
                        now,
                    );
                    l.append(
                        dunes_ledger::RecordKind::Action,
                        now.timestamp_micros(),
                        &serde_json::to_vec(&action)?,
                        &[],
                    )
                    .context("cannot ledger the prune")?;
                    l.close().context("cannot close the ledger")?;
                    println!("{}", serde_json::to_string_pretty(s)?);
                }
                None => {
                    l.close().context("cannot close the ledger")?;
                    println!(
                        "nothing to prune: no segment but the active one was last written before {}",
                        cutoff.to_rfc3339()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where `dunes checkpoint publish` writes.
enum Target {
    Dir(PathBuf),
    Stdout,
    Kafka {
        sink: Box<dunes_ingest::kafka::KafkaSink>,
        topic: String,
    },
}

impl Target {
    /// Publish one checkpoint; `false` when stdout was closed (stop quietly).
    async fn publish(&self, cp: &dunes_ledger::Checkpoint) -> anyhow::Result<bool> {
        match self {
            Target::Stdout => {
                let line = serde_json::json!({"tree_size": cp.tree_size, "note": cp.note});
                return Ok(writeln!(std::io::stdout().lock(), "{line}").is_ok());
            }
            Target::Dir(dir) => {
                if let Published::New(p) = dunes_ledger::publish_checkpoint(dir, cp)? {
                    eprintln!("published {}", p.display());
                }
            }
            Target::Kafka { sink, topic } => {
                sink.send_raw(topic, &cp.tree_size.to_string(), cp.note.as_bytes())
                    .await
                    .with_context(|| {
                        format!("cannot publish checkpoint {} to {topic}", cp.tree_size)
                    })?;
                eprintln!("published checkpoint {} to {topic}", cp.tree_size);
            }
        }
        Ok(true)
    }

    /// Tree size of the newest checkpoint already published there, checked against the
    /// ledger's own checkpoints: a topic holding a checkpoint the ledger does not have (a
    /// different note for that size, or a size the ledger never signed) means the ledger was
    /// rolled back or forked, and nothing is published.
    fn resume_after(&self, cps: &[dunes_ledger::Checkpoint]) -> anyhow::Result<Option<u64>> {
        let Target::Kafka { sink, topic } = self else {
            return Ok(None);
        };
        let Some(last) = tokio::task::block_in_place(|| sink.last_message(topic))? else {
            return Ok(None);
        };
        let note = String::from_utf8(last.payload).ok().and_then(|n| {
            dunes_ledger::TrustedCheckpoint::from_note(Path::new(topic), &n)
                .ok()
                .map(|t| (n, t))
        });
        let Some((note, trusted)) = note else {
            anyhow::bail!(
                "the newest message of {topic} (key {:?}) is not a signed checkpoint note",
                last.key
            );
        };
        let size = trusted.checkpoint().tree_size;
        match cps.iter().find(|c| c.tree_size == size) {
            Some(c) if c.note == note => Ok(Some(size)),
            Some(_) => anyhow::bail!(
                "{topic} already holds a different signed checkpoint for tree size {size}: the ledger's history forked (or was rolled back and rewritten); not publishing"
            ),
            None => anyhow::bail!(
                "{topic} holds a checkpoint for tree size {size} that this ledger's checkpoints.log does not have (newest here: {}): rolled back or not the same ledger; not publishing",
                cps.last()
                    .map_or("none".to_string(), |c| c.tree_size.to_string())
            ),
        }
    }
}

/// `dunes checkpoint publish`.
pub async fn checkpoint(
    cfg: &dunes_pipeline::Config,
    cmd: CheckpointCmd,
) -> anyhow::Result<ExitCode> {
    let CheckpointCmd::Publish {
        to_dir,
        stdout,
        to_kafka,
        brokers,
        latest,
        follow,
        interval_ms,
    } = cmd;
    let data_dir = &cfg.data_dir;
    let target = match (to_dir, stdout, to_kafka) {
        (Some(dir), ..) => Target::Dir(dir),
        (None, true, _) => Target::Stdout,
        (None, false, Some(topic)) => {
            let mut kcfg = cfg.kafka.clone();
            if let Some(b) = brokers {
                kcfg.brokers = b;
            }
            let sink = Box::new(dunes_ingest::kafka::KafkaSink::new(
                &kcfg,
                "dunes-checkpoint-publish",
            )?);
            // One partition: the topic is the checkpoints in order.
            sink.create_topics(std::slice::from_ref(&topic), 1).await?;
            Target::Kafka { sink, topic }
        }
        (None, false, None) => anyhow::bail!("give --to-dir, --stdout or --to-kafka"),
    };
    let read = || {
        dunes_ledger::read_checkpoints(data_dir)
            .with_context(|| format!("cannot read the checkpoints of {}", data_dir.display()))
    };
    // Tree size of the newest checkpoint handled so far (published or already there).
    let mut done: Option<u64> = target.resume_after(&read()?)?;
    loop {
        let mut cps = read()?;
        if latest && done.is_none() && cps.len() > 1 {
            cps.drain(..cps.len() - 1);
        }
        let after = done;
        for cp in cps.iter().filter(|c| after.is_none_or(|d| c.tree_size > d)) {
            if !target.publish(cp).await? {
                return Ok(ExitCode::SUCCESS);
            }
            done = Some(cp.tree_size);
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(interval_ms.max(10))).await;
    }
}
