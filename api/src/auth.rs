//! Zero-trust authentication and authorisation of the API.
//!
//! Tokens are JWT-shaped (`base64url(header).base64url(claims).base64url(signature)`, RFC 7515
//! compact serialisation) and signed with ML-DSA-65 (FIPS 204, pure, empty context string) as
//! in the IETF JOSE ML-DSA draft: the header's `alg` is `"ML-DSA-65"`. The signing key is a
//! dedicated ML-DSA-65 key in `<data_dir>/auth/` (seed file mode 0600), separate from the
//! ledger's checkpoint keys. Every route except `/healthz` needs `Authorization: Bearer`.
//! A token is reusable until it expires; state-changing requests are protected against
//! replay by their `Idempotency-Key` (see [`crate::idempotency`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Utc};
use dunes_ledger::{MlDsaPublicKey, StandaloneKey};
use serde::{Deserialize, Serialize};

use crate::ApiError;

/// The JOSE `alg` of Dunes tokens.
pub const TOKEN_ALG: &str = "ML-DSA-65";
/// File stem of the token signing key in [`token_key_dir`].
pub const TOKEN_KEY_NAME: &str = "token-mldsa65";
/// Default and hard maximum token lifetime.
pub const DEFAULT_MAX_TTL_SECS: i64 = 15 * 60;
/// Clock skew tolerated on `nbf` and `exp`.
pub const LEEWAY_SECS: i64 = 5;
/// Longest token accepted at all (bytes), before any decoding.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// `<data_dir>/auth`: the token signing key lives here, never in `keys/`.
pub fn token_key_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("auth")
}

/// Who may do what. `viewer` ⊂ `analyst` ⊂ `responder` ⊂ `admin`; `auditor` reads
/// (incidents, rules, ledger, export, metrics) and writes nothing; `ingest` only posts
/// envelopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Analyst,
    Responder,
    Admin,
    Auditor,
    Ingest,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Viewer,
        Role::Analyst,
        Role::Responder,
        Role::Admin,
        Role::Auditor,
        Role::Ingest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Responder => "responder",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Ingest => "ingest",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?} (viewer, analyst, responder, admin, auditor, ingest)")
            })
    }
}

/// Who may call a route: the roles allowed on (method, route template).
pub mod access {
    use super::Role::{self, *};
    pub const READ: &[Role] = &[Viewer, Analyst, Responder, Admin, Auditor];
    pub const ANALYST: &[Role] = &[Analyst, Responder, Admin];
    pub const RESPONDER: &[Role] = &[Responder, Admin];
    pub const ADMIN: &[Role] = &[Admin];
    pub const AUDIT: &[Role] = &[Auditor, Admin];
    pub const INGEST: &[Role] = &[Ingest];
    pub const ANY: &[Role] = &[Viewer, Analyst, Responder, Admin, Auditor, Ingest];
}

/// The one place that says which roles may call which route (the role × route matrix).
pub fn allowed_roles(method: &axum::http::Method, route: &str) -> &'static [Role] {
    use axum::http::Method;
    let get = *method == Method::GET || *method == Method::HEAD;
    match (get, route) {
        (
            true,
            "/api/v1/incidents"
            | "/api/v1/incidents/{id}"
            | "/api/v1/incidents/stream"
            | "/api/v1/incidents/{id}/ledger"
            | "/api/v1/notifications"
            | "/api/v1/overview",
        ) => access::READ,
        (true, "/api/v1/session") => access::ANY,
        (false, "/api/v1/incidents/{id}/ack")
        | (false, "/api/v1/incidents/{id}/assign")
        | (false, "/api/v1/incidents/{id}/comment")
        | (false, "/api/v1/incidents/{id}/suppress")
        | (false, "/api/v1/incidents/{id}/resolve")
        | (false, "/api/v1/incidents/{id}/notify")
        | (false, "/api/v1/query") => access::ANALYST,
        (false, "/api/v1/incidents/{id}/escalate" | "/api/v1/incidents/{id}/deescalate") => {
            access::RESPONDER
        }
        // the incident page shows the rule that fired
        (true, "/api/v1/rules" | "/api/v1/rules/{id}") => access::READ,
        (false, "/api/v1/rules/validate" | "/api/v1/rules/reload") => access::ADMIN,
        (false, "/api/v1/ledger/redact") => access::ADMIN,
        // a compliance officer (auditor) registers the digest of the report they produced
        (false, "/api/v1/reports/digest") => access::AUDIT,
        (true, "/api/v1/keys") => access::AUDIT,
        (true, "/api/v1/outputs" | "/api/v1/outputs/webhooks/{name}/dead-letters") => access::AUDIT,
        (true, r) if r.starts_with("/api/v1/ledger/") => access::AUDIT,
        (true, "/metrics") => access::AUDIT,
        (true, "/openapi.json") => access::ANY,
        (false, r) if is_ingest_route(r) => access::INGEST,
        _ => &[],
    }
}

/// Requests with an effect (incident actions, ledger redaction, rule reload)
/// need an `Idempotency-Key` ([`crate::idempotency`]). Ingest (de-duplicated
/// by event id), hunting and rule validation change nothing twice and do not.
pub fn state_changing(method: &axum::http::Method, route: &str) -> bool {
    use axum::http::Method;
    let read = *method == Method::GET || *method == Method::HEAD;
    !read && !is_ingest_route(route) && !matches!(route, "/api/v1/query" | "/api/v1/rules/validate")
}

/// Routes that take events: NDJSON/JSON envelopes and OTLP/HTTP logs and traces.
pub fn is_ingest_route(route: &str) -> bool {
    matches!(route, "/v1/ingest" | "/v1/traces" | "/v1/logs")
        || route == crate::otlp_grpc::TRACES_PATH
        || route == crate::otlp_grpc::LOGS_PATH
}

/// JOSE header of a Dunes token.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    /// Critical extensions are not supported: any is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crit: Option<serde_json::Value>,
}

/// Token claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The actor: recorded with every ledgered action.
    pub sub: String,
    pub role: Role,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

/// Why a token was refused (answered as a bare 401; the reason is logged).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("unsupported alg")]
    WrongAlg,
    #[error("unknown key")]
    WrongKey,
    #[error("token key revoked")]
    RevokedKey,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token lifetime exceeds the maximum")]
    TooLong,
    #[error("token already used")]
    Replayed,
}

/// Key id of a token key: hex of the first 8 bytes of BLAKE3(public key).
pub fn key_id(public_key: &[u8]) -> String {
    hex::encode(&blake3::hash(public_key).as_bytes()[..8])
}

/// Loads (or, on first use, generates) the token signing key of a data dir.
pub fn load_or_generate_key(data_dir: &Path) -> Result<StandaloneKey, ApiError> {
    StandaloneKey::load_or_generate(&token_key_dir(data_dir), TOKEN_KEY_NAME)
        .map_err(|e| ApiError::Internal(format!("token key: {e}")))
}

/// Signs a token for `sub` with `role`, valid from `now` for `ttl_secs`.
pub fn issue(
    key: &StandaloneKey,
    iss: &str,
    sub: &str,
    role: Role,
    now: DateTime<Utc>,
    ttl_secs: i64,
) -> Result<String, ApiError> {
    let iat = now.timestamp();
    let claims = Claims {
        iss: iss.to_string(),
        sub: sub.to_string(),
        role,
        iat,
        nbf: iat,
        exp: iat + ttl_secs,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    sign_claims(key, &claims)
}

/// Signs arbitrary claims (tests craft expired or not-yet-valid tokens with it).
pub fn sign_claims(key: &StandaloneKey, claims: &Claims) -> Result<String, ApiError> {
    let header = Header {
        alg: TOKEN_ALG.into(),
        typ: Some("JWT".into()),
        kid: Some(key_id(key.public_key())),
        crit: None,
    };
    let signing_input = format!("{}.{}", b64_json(&header)?, b64_json(claims)?);
    let sig = key
        .sign(signing_input.as_bytes(), b"")
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(format!("{signing_input}.{}", B64URL.encode(sig)))
}

fn b64_json<T: Serialize>(v: &T) -> Result<String, ApiError> {
    let json = serde_json::to_vec(v).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(B64URL.encode(json))
}

/// Verifies tokens (stateless: a token is valid for any number of requests
/// until it expires).
pub struct TokenVerifier {
    vk: MlDsaPublicKey,
    kid: String,
    max_ttl_secs: i64,
    /// Retired token keys by key id.
    revoked: std::collections::BTreeMap<String, MlDsaPublicKey>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kid", &self.kid)
            .finish()
    }
}

impl TokenVerifier {
    pub fn new(key: &StandaloneKey, max_ttl_secs: i64) -> Self {
        TokenVerifier {
            vk: key.verifying_key(),
            kid: key_id(key.public_key()),
            max_ttl_secs: max_ttl_secs.max(1),
            revoked: Default::default(),
        }
    }

    /// Retired token keys (base64, standard or URL-safe, of raw ML-DSA-65
    /// public keys, as `GET /api/v1/keys` shows the key in use): a token they really signed is
    /// refused as [`TokenError::RevokedKey`]; one naming them with a
    /// signature they did not make is a forgery ([`TokenError::BadSignature`]).
    pub fn with_revoked<'k>(
        mut self,
        keys: impl IntoIterator<Item = &'k String>,
    ) -> Result<Self, String> {
        for b64 in keys {
            let t = b64.trim();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(t)
                .or_else(|_| B64URL.decode(t.trim_end_matches('=')))
                .map_err(|e| format!("revoked token key {b64:?}: not base64: {e}"))?;
            let key = MlDsaPublicKey::decode(&raw)
                .ok_or_else(|| format!("revoked token key {b64:?}: not an ML-DSA-65 public key"))?;
            self.revoked.insert(key_id(&raw), key);
        }
        if self.revoked.contains_key(&self.kid) {
            tracing::error!(kid = %self.kid, "the token key in use is listed in [auth] revoked_token_keys: every token will be refused");
        }
        Ok(self)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Checks structure, `alg`, key, signature and the validity window.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = B64URL
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if header.alg != TOKEN_ALG {
            return Err(TokenError::WrongAlg);
        }
        if header.crit.is_some() || header.typ.as_deref().is_some_and(|t| t != "JWT") {
            return Err(TokenError::Malformed);
        }
        let sig = B64URL.decode(s).map_err(|_| TokenError::Malformed)?;
        let signing_input = &token[..h.len() + 1 + c.len()];
        if let Some(k) = header.kid.as_deref()
            && k != self.kid
        {
            return Err(match self.revoked.get(k) {
                Some(old) if old.verify(signing_input.as_bytes(), b"", &sig) => {
                    TokenError::RevokedKey
                }
                Some(_) => TokenError::BadSignature,
                None => TokenError::WrongKey,
            });
        }
        if !self.vk.verify(signing_input.as_bytes(), b"", &sig) {
            return Err(TokenError::BadSignature);
        }
        let claims: Claims = B64URL
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        let t = now.timestamp();
        if claims.exp <= claims.iat || claims.exp - claims.iat > self.max_ttl_secs {
            return Err(TokenError::TooLong);
        }
        if t + LEEWAY_SECS < claims.nbf || t + LEEWAY_SECS < claims.iat {
            return Err(TokenError::NotYetValid);
        }
        if t >= claims.exp + LEEWAY_SECS {
            return Err(TokenError::Expired);
        }
        if claims.jti.is_empty()
            || claims.sub.is_empty()
            || claims.jti.len() > 128
            || claims
                .jti
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(TokenError::Malformed);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admin_may_redact_ledger_records() {
        let post = axum::http::Method::POST;
        assert_eq!(
            allowed_roles(&post, "/api/v1/ledger/redact"),
            &[Role::Admin]
        );
        for r in [
            Role::Viewer,
            Role::Analyst,
            Role::Responder,
            Role::Auditor,
            Role::Ingest,
        ] {
            assert!(
                !allowed_roles(&post, "/api/v1/ledger/redact").contains(&r),
                "{r}"
            );
        }
    }

    #[test]
    fn token_round_trip_and_refusals() {
        let tmp = tempfile::tempdir().expect("tmp");
        let key = load_or_generate_key(tmp.path()).expect("key");
        let v = TokenVerifier::new(&key, DEFAULT_MAX_TTL_SECS);
        let now = Utc::now();
        let t = issue(&key, "dunes/test", "alice", Role::Analyst, now, 600).expect("issue");
        let c = v.verify(&t, now).expect("valid");
        assert_eq!((c.sub.as_str(), c.role), ("alice", Role::Analyst));
        // reusable until it expires
        assert_eq!(v.verify(&t, now + chrono::Duration::seconds(590)), Ok(c));
        assert_eq!(
            v.verify(&t, now + chrono::Duration::seconds(700)),
            Err(TokenError::Expired)
        );
        assert_eq!(
            v.verify(&t, now - chrono::Duration::seconds(60)),
            Err(TokenError::NotYetValid)
        );
        let long = issue(&key, "dunes/test", "a", Role::Admin, now, 3600).expect("issue");
        assert_eq!(v.verify(&long, now), Err(TokenError::TooLong));
        // Tampered claims.
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let claims = String::from_utf8(B64URL.decode(&parts[1]).expect("b64")).expect("utf8");
        parts[1] = B64URL.encode(claims.replace("analyst", "admin"));
        assert_eq!(
            v.verify(&parts.join("."), now),
            Err(TokenError::BadSignature)
        );
        assert_eq!(v.verify("a.b", now), Err(TokenError::Malformed));
        assert_eq!(v.verify("", now), Err(TokenError::Malformed));
    }

    #[test]
    fn tokens_of_a_revoked_key_are_told_apart_from_forgeries() {
        let tmp = tempfile::tempdir().expect("tmp");
        let old = load_or_generate_key(&tmp.path().join("old")).expect("key");
        let new = load_or_generate_key(&tmp.path().join("new")).expect("key");
        let other = load_or_generate_key(&tmp.path().join("other")).expect("key");
        let b64 =
            |k: &StandaloneKey| base64::engine::general_purpose::STANDARD.encode(k.public_key());
        let v = TokenVerifier::new(&new, DEFAULT_MAX_TTL_SECS)
            .with_revoked(&[b64(&old)])
            .expect("revoked keys");
        let now = Utc::now();
        let by_old = issue(&old, "dunes/test", "bob", Role::Analyst, now, 600).expect("issue");
        assert_eq!(v.verify(&by_old, now), Err(TokenError::RevokedKey));
        // another key claiming the revoked key's id: a forgery, not a use of it
        let claims: Claims = serde_json::from_slice(
            &B64URL
                .decode(by_old.split('.').nth(1).expect("claims"))
                .expect("b64"),
        )
        .expect("claims");
        let forged_sig = other.sign(b"x", b"").expect("sign");
        let mut parts: Vec<String> = by_old.split('.').map(str::to_string).collect();
        parts[2] = B64URL.encode(forged_sig);
        assert_eq!(
            v.verify(&parts.join("."), now),
            Err(TokenError::BadSignature)
        );
        // a key nobody listed: unknown
        let by_other = sign_claims(&other, &claims).expect("sign");
        assert_eq!(v.verify(&by_other, now), Err(TokenError::WrongKey));
        // the key in use still works
        let ok = issue(&new, "dunes/test", "bob", Role::Analyst, now, 600).expect("issue");
        assert!(v.verify(&ok, now).is_ok());
        assert!(
            TokenVerifier::new(&new, 60)
                .with_revoked(&["bm90IGEga2V5".to_string()])
                .is_err()
        );
    }
}
