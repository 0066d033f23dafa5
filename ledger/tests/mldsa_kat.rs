//! ML-DSA-65 known-answer tests against vectors produced by an independent implementation
//! (dilithium-py, see `tests/data/README.md`): KeyGen from seed, deterministic Sign, Verify
//! (including negative cases).

use dunes_ledger::verify_with_context;
use ml_dsa::{EncodedVerifyingKey, ExpandedSigningKey, MlDsa65, VerifyingKey};

#[derive(serde::Deserialize)]
struct File {
    algorithm: String,
    #[serde(rename = "testGroups")]
    groups: Vec<Group>,
}

#[derive(serde::Deserialize)]
struct Group {
    seed: String,
    #[serde(rename = "publicKey")]
    public_key: String,
    tests: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    comment: String,
    msg: String,
    ctx: String,
    sig: String,
    deterministic: bool,
    result: String,
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

#[test]
fn ml_dsa_65_known_answers() {
    let text = include_str!("data/mldsa65_kat.json");
    let f: File = serde_json::from_str(text).expect("json");
    assert_eq!(f.algorithm, "ML-DSA-65");
    let (mut valid, mut invalid, mut siggen) = (0, 0, 0);
    for g in &f.groups {
        let seed: [u8; 32] = unhex(&g.seed).try_into().expect("32-byte seed");
        let sk = ExpandedSigningKey::<MlDsa65>::from_seed(&seed.into());
        let pk = unhex(&g.public_key);
        // KeyGen KAT.
        assert_eq!(
            sk.verifying_key().encode().to_vec(),
            pk,
            "keyGen from seed {}",
            g.seed
        );
        let enc = EncodedVerifyingKey::<MlDsa65>::try_from(pk.as_slice()).expect("pk length");
        let vk = VerifyingKey::<MlDsa65>::decode(&enc);
        for t in &g.tests {
            let (msg, ctx, sig) = (unhex(&t.msg), unhex(&t.ctx), unhex(&t.sig));
            if t.deterministic {
                // SigGen KAT (deterministic variant, rnd = 0^32).
                let ours = sk.sign_deterministic(&msg, &ctx).expect("sign");
                assert_eq!(ours.encode().to_vec(), sig, "sigGen: {}", t.comment);
                siggen += 1;
            }
            let want = t.result == "valid";
            assert_eq!(
                verify_with_context(&vk, &msg, &ctx, &sig),
                want,
                "sigVer: {}",
                t.comment
            );
            if want {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
    }
    assert!(
        valid >= 12 && invalid >= 12 && siggen >= 12,
        "{valid} {invalid} {siggen}"
    );
}
