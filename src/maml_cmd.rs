//! `dunes maml`: inspect MAML documents as the pipeline sees them, and sign
//! them for `[[ingest.maml_keys]]` (see `docs/maml.md`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;
use dunes_ingest::maml;
use dunes_pipeline::{Config, MAML_SIGNATURE_CONTEXT, MamlKeys};

#[derive(clap::Subcommand)]
pub enum MamlCmd {
    /// Analyse documents (validation, digest, round trip, signature with the
    /// configured keys): one JSON line each; non-zero exit if any is invalid,
    /// does not round-trip, or has a missing or invalid signature.
    Check { files: Vec<PathBuf> },
    /// Sign a document with an ML-DSA-65 key (created in --key-dir on first
    /// use): prints the base64 signature for `verification.signature`, and
    /// the public key for `[[ingest.maml_keys]]`.
    Sign {
        #[arg(long)]
        key_dir: PathBuf,
        #[arg(long, default_value = "maml")]
        name: String,
        file: PathBuf,
    },
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub fn run(cfg: &Config, cmd: MamlCmd) -> anyhow::Result<bool> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match cmd {
        MamlCmd::Check { files } => {
            let keys = MamlKeys::from_config(&cfg.ingest.maml_keys).map_err(anyhow::Error::msg)?;
            let mut ok = true;
            for f in files {
                let d = maml::analyze_with(&read(&f)?, Some(&keys));
                let bad_sig = matches!(
                    d.sig_status,
                    maml::SigStatus::Missing | maml::SigStatus::Invalid
                );
                ok &= d.valid() && d.roundtrip_issue.is_none() && !bad_sig;
                let line = serde_json::json!({
                    "file": f.display().to_string(),
                    "valid": d.valid(),
                    "errors": d.errors,
                    "maml_version": d.version,
                    "id": d.id,
                    "type": d.doc_type,
                    "origin": d.origin,
                    "digest": d.digest,
                    "sig_method": d.sig_method,
                    "sig_status": d.sig_status.as_str(),
                    "roundtrip_issue": d.roundtrip_issue,
                    "perm_execute": d.perm_execute,
                    "perm_foreign": d.perm_foreign,
                    "code_langs": d.code_langs,
                    "sections": d.sections,
                });
                println!("{line}");
            }
            Ok(ok)
        }
        MamlCmd::Sign {
            key_dir,
            name,
            file,
        } => {
            let text = read(&file)?;
            let content =
                maml::signed_content(&text).context("no parsable front matter: nothing to sign")?;
            let key = dunes_ledger::StandaloneKey::load_or_generate(&key_dir, &name)
                .context("cannot load or create the signing key")?;
            let sig = key
                .sign(content.as_bytes(), MAML_SIGNATURE_CONTEXT)
                .context("cannot sign")?;
            println!("signature: {}", b64(&sig));
            println!("public_key: {}", b64(key.public_key()));
            Ok(true)
        }
    }
}
