//! dunes-sim: deterministic MCP traffic generator (benign + attack scenarios)
//! in the log-envelope form of `docs/contract/mcp-log-envelope.md`.
//!
//! * [`Simulator`] is an iterator of envelope lines (no trailing newline) in
//!   global `ts` order. Sessions are planned lazily in *units* (one labelled
//!   session plus, for history-dependent attacks, its earlier benign context
//!   sessions); a session's lines are generated only when its start time is
//!   reached and are merged with a binary heap, so memory is bounded by the
//!   number of concurrently active (and about-to-start) sessions, not by the
//!   total.
//! * Output is a pure function of [`SimConfig`]: ChaCha8 RNGs derived from the
//!   seed with BLAKE3, no hash-map iteration, no wall clock.
//! * [`generate_labels`] runs only the planner (no message generation), so it
//!   is cheap: O(sessions) time and memory for the returned map itself.

mod fakes;
mod maml;
mod otlp;
pub use otlp::{OTLP_RECORDS_PER_REQUEST, otlp_lines, otlp_logs_request};
mod session;
mod stateless;
pub use stateless::STATELESS_REVISION;
mod world;

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt;
use std::io::Write;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use session::{Role, Spec, Transport};
use world::{Cap, Kind, World};

/// The 15 labels of the sample corpus.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    Benign,
    ToolPoisoning,
    RugPull,
    ToolShadowing,
    ResultInjectionEgress,
    Exfiltration,
    PathTraversalCmdInjection,
    Ssrf,
    SecretsInArgs,
    TokenMisuse,
    SessionHijack,
    CallFlood,
    DnsRebinding,
    HeaderMismatch,
    ReconAnomaly,
    MamlInvalid,
    MamlInjection,
    MamlPrivilege,
    MamlTamper,
    MamlRugPull,
    SessionExpiredReuse,
    AuthDowngrade,
    PrincipalFlood,
    RequestReplay,
    ProtocolDowngrade,
    ServerDegraded,
}

impl Scenario {
    pub const ALL: [Scenario; 26] = [
        Scenario::Benign,
        Scenario::ToolPoisoning,
        Scenario::RugPull,
        Scenario::ToolShadowing,
        Scenario::ResultInjectionEgress,
        Scenario::Exfiltration,
        Scenario::PathTraversalCmdInjection,
        Scenario::Ssrf,
        Scenario::SecretsInArgs,
        Scenario::TokenMisuse,
        Scenario::SessionHijack,
        Scenario::CallFlood,
        Scenario::DnsRebinding,
        Scenario::HeaderMismatch,
        Scenario::ReconAnomaly,
        Scenario::MamlInvalid,
        Scenario::MamlInjection,
        Scenario::MamlPrivilege,
        Scenario::MamlTamper,
        Scenario::MamlRugPull,
        Scenario::SessionExpiredReuse,
        Scenario::AuthDowngrade,
        Scenario::PrincipalFlood,
        Scenario::RequestReplay,
        Scenario::ProtocolDowngrade,
        Scenario::ServerDegraded,
    ];

    /// Session, replay, rate, downgrade and degradation situations of the
    /// DUNES standard (§2.2, §4.1, §5.1, §10.1), generated with
    /// `SimConfig::standard` or when named in `scenarios`.
    pub const STANDARD: [Scenario; 6] = [
        Scenario::SessionExpiredReuse,
        Scenario::AuthDowngrade,
        Scenario::PrincipalFlood,
        Scenario::RequestReplay,
        Scenario::ProtocolDowngrade,
        Scenario::ServerDegraded,
    ];

    /// The MAML attacks (generated with `SimConfig::maml`, on the MAML hub).
    pub const MAML: [Scenario; 5] = [
        Scenario::MamlInvalid,
        Scenario::MamlInjection,
        Scenario::MamlPrivilege,
        Scenario::MamlTamper,
        Scenario::MamlRugPull,
    ];

    /// The 14 attack scenarios (everything but `Benign`).
    pub const ATTACKS: [Scenario; 14] = [
        Scenario::ToolPoisoning,
        Scenario::RugPull,
        Scenario::ToolShadowing,
        Scenario::ResultInjectionEgress,
        Scenario::Exfiltration,
        Scenario::PathTraversalCmdInjection,
        Scenario::Ssrf,
        Scenario::SecretsInArgs,
        Scenario::TokenMisuse,
        Scenario::SessionHijack,
        Scenario::CallFlood,
        Scenario::DnsRebinding,
        Scenario::HeaderMismatch,
        Scenario::ReconAnomaly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Benign => "benign",
            Scenario::ToolPoisoning => "tool_poisoning",
            Scenario::RugPull => "rug_pull",
            Scenario::ToolShadowing => "tool_shadowing",
            Scenario::ResultInjectionEgress => "result_injection_egress",
            Scenario::Exfiltration => "exfiltration",
            Scenario::PathTraversalCmdInjection => "path_traversal_cmd_injection",
            Scenario::Ssrf => "ssrf",
            Scenario::SecretsInArgs => "secrets_in_args",
            Scenario::TokenMisuse => "token_misuse",
            Scenario::SessionHijack => "session_hijack",
            Scenario::CallFlood => "call_flood",
            Scenario::DnsRebinding => "dns_rebinding",
            Scenario::HeaderMismatch => "header_mismatch",
            Scenario::ReconAnomaly => "recon_anomaly",
            Scenario::MamlInvalid => "maml_invalid",
            Scenario::MamlInjection => "maml_injection",
            Scenario::MamlPrivilege => "maml_privilege",
            Scenario::MamlTamper => "maml_tamper",
            Scenario::MamlRugPull => "maml_rug_pull",
            Scenario::SessionExpiredReuse => "session_expired_reuse",
            Scenario::AuthDowngrade => "auth_downgrade",
            Scenario::PrincipalFlood => "principal_flood",
            Scenario::RequestReplay => "request_replay",
            Scenario::ProtocolDowngrade => "protocol_downgrade",
            Scenario::ServerDegraded => "server_degraded",
        }
    }

    /// Number of variants implemented for the scenario (see the report /
    /// module docs); the planner draws one uniformly.
    fn variants(self) -> u32 {
        match self {
            Scenario::ToolPoisoning | Scenario::ToolShadowing | Scenario::Exfiltration => 3,
            Scenario::RugPull => 2,
            Scenario::SecretsInArgs | Scenario::DnsRebinding => 4,
            Scenario::TokenMisuse
            | Scenario::SessionHijack
            | Scenario::CallFlood
            | Scenario::HeaderMismatch => 3,
            Scenario::MamlInvalid => 4,
            Scenario::MamlInjection | Scenario::MamlPrivilege | Scenario::MamlTamper => 3,
            Scenario::SessionExpiredReuse
            | Scenario::PrincipalFlood
            | Scenario::RequestReplay
            | Scenario::ServerDegraded => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("unknown scenario {0:?}")]
    UnknownScenario(String),
    #[error("invalid config: {0}")]
    Config(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl FromStr for Scenario {
    type Err = SimError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Scenario::ALL
            .iter()
            .copied()
            .find(|x| x.as_str() == norm)
            .ok_or_else(|| SimError::UnknownScenario(s.to_string()))
    }
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Total sessions emitted, context sessions included.
    pub sessions: u64,
    pub seed: u64,
    /// Time of the first unit; sessions spread after it (context sessions
    /// may start a little earlier than the attack they belong to, never before `start`).
    pub start: DateTime<Utc>,
    /// Target fraction of sessions labelled as an attack (0.0..=1.0).
    pub attack_ratio: f64,
    /// Restrict attacks to these scenarios (`Benign` entries are ignored;
    /// `None` = all 14 attacks, plus the 5 MAML attacks with `maml`).
    pub scenarios: Option<Vec<Scenario>>,
    /// Add a MAML document hub to the estate: benign MAML traffic and the
    /// MAML attacks (also on when `scenarios` names a MAML attack).
    pub maml: bool,
    /// Add the [`Scenario::STANDARD`] situations to the attacks.
    pub standard: bool,
    /// Speak the stateless revision 2026-07-28 (no initialize, no session ids; see
    /// `stateless.rs`); [`Simulator::truth_session`] tells each line's generated session.
    pub stateless: bool,
}

impl SimConfig {
    fn with_maml(&self) -> bool {
        self.maml
            || self
                .scenarios
                .iter()
                .flatten()
                .any(|s| Scenario::MAML.contains(s))
    }
}

fn build_world(cfg: &SimConfig) -> World {
    let mut w = world::build(cfg.seed, cfg.sessions);
    if cfg.with_maml() {
        world::add_maml_hub(&mut w, cfg.seed);
    }
    w
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            sessions: 100,
            seed: 20261120,
            // 2026-11-20T08:00:00Z
            start: Utc
                .timestamp_opt(1_795_161_600, 0)
                .single()
                .unwrap_or_default(),
            attack_ratio: 0.3,
            scenarios: None,
            maml: false,
            standard: false,
            stateless: false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub lines: u64,
    pub sessions: u64,
    /// Sessions per label.
    pub by_scenario: BTreeMap<Scenario, u64>,
}

/// Derives an independent ChaCha8 RNG from the seed and a path of integers.
pub(crate) fn sub_rng(seed: u64, parts: &[u64]) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new();
    h.update(b"dunes-sim/v1");
    h.update(&seed.to_le_bytes());
    for p in parts {
        h.update(&p.to_le_bytes());
    }
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}

// ------------------------------------------------------------------ planner

struct Planner {
    seed: u64,
    total: u64,
    ratio: f64,
    attacks_allowed: Vec<Scenario>,
    cycle: Vec<Scenario>,
    cycle_pos: usize,
    planned: u64,
    attacks: u64,
    unit: u64,
    next_anchor: i64,
    gap_mean: i64,
    r: ChaCha8Rng,
}

impl Planner {
    fn new(cfg: &SimConfig) -> Self {
        let maml: &[Scenario] = if cfg.with_maml() {
            &Scenario::MAML
        } else {
            &[]
        };
        let standard: &[Scenario] = if cfg.standard {
            &Scenario::STANDARD
        } else {
            &[]
        };
        let attacks_allowed: Vec<Scenario> = match &cfg.scenarios {
            None => Scenario::ATTACKS
                .iter()
                .chain(maml)
                .chain(standard)
                .copied()
                .collect(),
            Some(v) => {
                let mut out: Vec<Scenario> = Vec::new();
                for s in Scenario::ATTACKS
                    .into_iter()
                    .chain(Scenario::MAML)
                    .chain(Scenario::STANDARD)
                {
                    if v.contains(&s) {
                        out.push(s);
                    }
                }
                out
            }
        };
        // ~6 hours for small runs; at least 1.5 s between units for large.
        let gap_mean = (6 * 3_600_000 / cfg.sessions.max(1) as i64).clamp(1_500, 600_000);
        Planner {
            seed: cfg.seed,
            total: cfg.sessions,
            ratio: if cfg.attack_ratio.is_finite() {
                cfg.attack_ratio.clamp(0.0, 1.0)
            } else {
                0.0
            },
            attacks_allowed,
            cycle: Vec::new(),
            cycle_pos: 0,
            planned: 0,
            attacks: 0,
            unit: 0,
            next_anchor: cfg.start.timestamp_millis(),
            gap_mean,
            r: sub_rng(cfg.seed, &[0x91A7]),
        }
    }

    fn done(&self) -> bool {
        self.planned >= self.total
    }

    fn next_scenario(&mut self) -> Option<Scenario> {
        if self.attacks_allowed.is_empty() {
            return None;
        }
        if self.cycle_pos >= self.cycle.len() {
            self.cycle = self.attacks_allowed.clone();
            self.cycle.shuffle(&mut self.r);
            self.cycle_pos = 0;
        }
        self.cycle.get(self.cycle_pos).copied()
    }

    /// Plans the next unit (1..=4 sessions). Every session starts at or
    /// after the unit's anchor, and anchors are non-decreasing.
    fn next_unit(&mut self, w: &World) -> Vec<Spec> {
        let unit = self.unit;
        self.unit += 1;
        let anchor = self.next_anchor;
        let mut r = sub_rng(self.seed, &[0x0417, unit]);
        let remaining = self.total - self.planned;
        let dither: f64 = self.r.random();
        let want_attack = (self.attacks as f64) + dither < self.ratio * (self.planned + 1) as f64;
        let mut specs = Vec::new();
        if want_attack && let Some(sc) = self.next_scenario() {
            specs = plan_attack(w, &mut r, self.seed, unit, anchor, sc, remaining);
            if !specs.is_empty() {
                self.cycle_pos += 1;
                self.attacks += 1;
            }
        }
        if specs.is_empty() {
            specs.push(plan_benign(w, &mut r, self.seed, unit, anchor));
        }
        self.planned += specs.len() as u64;
        let gap = self.r.random_range(0..=2 * self.gap_mean) * specs.len() as i64;
        self.next_anchor = anchor + gap.max(1);
        specs
    }
}

fn session_id(seed: u64, unit: u64, k: u64, transport: Transport) -> String {
    let mut r = sub_rng(seed, &[0x5E55, unit, k]);
    let b: [u8; 16] = r.random();
    let h = ::hex::encode(b);
    if transport == Transport::Stdio {
        return format!("stdio-{}-{}", &h[..8], &h[8..20]);
    }
    match b[15] % 4 {
        0 | 1 => h,
        2 => format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ),
        _ => format!("mcp-session-{}", fakes::b64url_of(&b)),
    }
}

fn pick_transport(r: &mut ChaCha8Rng, s: &world::Server, need_http: bool) -> Transport {
    let x: f64 = r.random();
    if !need_http && s.stdio_ok && !s.localhost && x < 0.3 {
        Transport::Stdio
    } else if x > 0.88 {
        Transport::Sse
    } else {
        Transport::StreamableHttp
    }
}

#[allow(clippy::too_many_arguments)]
fn mk_spec(
    seed: u64,
    unit: u64,
    k: u64,
    start_ms: i64,
    label: Scenario,
    role: Role,
    server: usize,
    principal: usize,
    transport: Transport,
    r: &mut ChaCha8Rng,
) -> Spec {
    Spec {
        start_ms,
        session_id: session_id(seed, unit, k, transport),
        label,
        role,
        server,
        other_server: server,
        principal,
        transport,
        seed: r.random(),
        shared: 0,
        token_fp: fakes::hex(r, 16),
        variant: 0,
        focus_tool: None,
        proto: None,
    }
}

fn plan_benign(w: &World, r: &mut ChaCha8Rng, seed: u64, unit: u64, anchor: i64) -> Spec {
    let np = w.principals.len().max(1);
    let principal = r.random_range(0..np);
    let p = &w.principals[principal];
    let server = if r.random::<f64>() < 0.8 && !p.favs.is_empty() {
        p.favs[r.random_range(0..p.favs.len())]
    } else {
        r.random_range(0..w.servers.len().max(1))
    };
    let t = w
        .servers
        .get(server)
        .map_or(Transport::StreamableHttp, |s| pick_transport(r, s, false));
    let start = anchor + r.random_range(0..60_000);
    mk_spec(
        seed,
        unit,
        0,
        start,
        Scenario::Benign,
        Role::Benign,
        server,
        principal,
        t,
        r,
    )
}

fn eligible(sc: Scenario, s: &world::Server) -> bool {
    let any = |caps: &[Cap]| caps.iter().any(|c| s.has(*c));
    let egress = any(&[
        Cap::HttpPost,
        Cap::SendEmail,
        Cap::FetchUrl,
        Cap::PostMessage,
    ]);
    match sc {
        Scenario::Benign | Scenario::ToolPoisoning | Scenario::CallFlood => !s.tools.is_empty(),
        Scenario::RugPull | Scenario::SecretsInArgs => !s.tools.is_empty() && !s.localhost,
        Scenario::ToolShadowing => matches!(
            s.kind,
            Kind::ThirdParty | Kind::Chat | Kind::Web | Kind::Notes
        ),
        Scenario::ResultInjectionEgress => {
            egress && any(&[Cap::FetchUrl, Cap::ListInbox, Cap::ReadFile, Cap::Search])
        }
        Scenario::Exfiltration => egress && any(&[Cap::ReadFile, Cap::RunShell]),
        Scenario::PathTraversalCmdInjection => {
            any(&[Cap::ReadFile, Cap::ListDir, Cap::RunShell, Cap::RunQuery])
        }
        Scenario::Ssrf => any(&[Cap::FetchUrl, Cap::HttpPost]),
        Scenario::TokenMisuse
        | Scenario::SessionHijack
        | Scenario::SessionExpiredReuse
        | Scenario::AuthDowngrade
        | Scenario::RequestReplay
        | Scenario::ProtocolDowngrade => !s.localhost && !s.tools.is_empty(),
        Scenario::PrincipalFlood | Scenario::ServerDegraded => !s.tools.is_empty(),
        Scenario::DnsRebinding => s.localhost,
        Scenario::HeaderMismatch => s.tools.len() >= 2 && !s.localhost,
        Scenario::ReconAnomaly => s.kind == Kind::Docs && s.res_count >= 60,
        Scenario::MamlInvalid
        | Scenario::MamlInjection
        | Scenario::MamlPrivilege
        | Scenario::MamlTamper
        | Scenario::MamlRugPull => s.kind == Kind::Maml,
    }
}

fn plan_attack(
    w: &World,
    r: &mut ChaCha8Rng,
    seed: u64,
    unit: u64,
    anchor: i64,
    sc: Scenario,
    remaining: u64,
) -> Vec<Spec> {
    let np = w.principals.len().max(1);
    let principal = r.random_range(0..np);
    let p = &w.principals[principal];
    let cands: Vec<usize> = (0..w.servers.len())
        .filter(|&i| eligible(sc, &w.servers[i]))
        .collect();
    if cands.is_empty() {
        return Vec::new();
    }
    let fav: Vec<usize> = cands
        .iter()
        .copied()
        .filter(|i| p.favs.contains(i))
        .collect();
    let server = if !fav.is_empty() && r.random::<f64>() < 0.6 {
        fav[r.random_range(0..fav.len())]
    } else {
        cands[r.random_range(0..cands.len())]
    };
    let variant = r.random_range(0..sc.variants());
    let history = matches!(
        sc,
        Scenario::RugPull
            | Scenario::ToolShadowing
            | Scenario::ReconAnomaly
            | Scenario::AuthDowngrade
            | Scenario::ProtocolDowngrade
    ) || (sc == Scenario::TokenMisuse && variant == 1);
    let need_http = history
        || matches!(
            sc,
            Scenario::TokenMisuse
                | Scenario::SessionHijack
                | Scenario::DnsRebinding
                | Scenario::HeaderMismatch
                | Scenario::SessionExpiredReuse
                | Scenario::RequestReplay
                | Scenario::PrincipalFlood
        );
    let mut n_ctx: u64 = match sc {
        Scenario::RugPull | Scenario::ReconAnomaly => r.random_range(1..=3),
        Scenario::ToolShadowing | Scenario::AuthDowngrade => r.random_range(1..=2),
        Scenario::ProtocolDowngrade => 1,
        Scenario::TokenMisuse if variant == 1 => 1,
        _ => 0,
    };
    if 1 + n_ctx > remaining {
        if history {
            n_ctx = remaining.saturating_sub(1);
            if n_ctx == 0 {
                return Vec::new();
            }
        } else {
            n_ctx = 0;
        }
    }
    // Context server: the attacked server itself (rug pull, recon) or the
    // other server of the pair (shadowing victim, token first use).
    let other = match sc {
        Scenario::ToolShadowing => {
            let v: Vec<usize> = (0..w.servers.len())
                .filter(|&i| {
                    i != server
                        && !w.servers[i].localhost
                        && w.servers[i]
                            .tools
                            .iter()
                            .any(|t| t.cap.is_egress() || t.cap == Cap::ReadFile)
                })
                .collect();
            match v.get(if v.is_empty() {
                0
            } else {
                r.random_range(0..v.len())
            }) {
                Some(&i) => i,
                None => return Vec::new(),
            }
        }
        Scenario::TokenMisuse => {
            let v: Vec<usize> = (0..w.servers.len())
                .filter(|&i| i != server && !w.servers[i].localhost)
                .collect();
            match v.get(if v.is_empty() {
                0
            } else {
                r.random_range(0..v.len())
            }) {
                Some(&i) => i,
                None => return Vec::new(),
            }
        }
        _ => server,
    };
    let focus = {
        let s = &w.servers[other];
        (!s.tools.is_empty()).then(|| r.random_range(0..s.tools.len()))
    };
    let shared: u64 = r.random();
    let mut specs = Vec::new();
    let mut t = anchor + r.random_range(0..30_000);
    let token = fakes::hex(r, 16);
    for k in 0..n_ctx {
        let ctx_server = other;
        let tr = pick_transport(r, &w.servers[ctx_server], true);
        let mut s = mk_spec(
            seed,
            unit,
            k + 1,
            t,
            Scenario::Benign,
            Role::Context,
            ctx_server,
            principal,
            tr,
            r,
        );
        s.focus_tool = focus;
        if sc == Scenario::TokenMisuse {
            s.token_fp = token.clone();
        }
        if sc == Scenario::ProtocolDowngrade {
            // the server first answers a modern client as asked
            s.proto = Some("2025-11-25");
        }
        specs.push(s);
        t += r.random_range(10 * 60_000..40 * 60_000);
    }
    if n_ctx > 0 {
        t += r.random_range(60_000..20 * 60_000);
    }
    let tr = pick_transport(r, &w.servers[server], need_http);
    let mut main = mk_spec(seed, unit, 0, t, sc, Role::Attack, server, principal, tr, r);
    main.other_server = other;
    main.variant = variant;
    main.shared = shared;
    main.focus_tool = focus;
    if sc == Scenario::TokenMisuse && variant == 1 {
        main.token_fp = token;
    }
    if sc == Scenario::ProtocolDowngrade {
        main.proto = Some("2025-11-25");
    }
    if sc == Scenario::PrincipalFlood {
        // one principal, many short sessions at once (each under the
        // per-session flood limit, together over the per-principal one)
        let n = r.random_range(7..=9).min(remaining.max(1));
        for k in 1..n {
            let tr = pick_transport(r, &w.servers[server], true);
            let start = t + r.random_range(0..40_000);
            let mut s = mk_spec(
                seed,
                unit,
                k + 10,
                start,
                sc,
                Role::Attack,
                server,
                principal,
                tr,
                r,
            );
            s.variant = variant;
            s.focus_tool = focus;
            s.token_fp = main.token_fp.clone();
            specs.push(s);
        }
    }
    specs.push(main);
    specs
}

// ------------------------------------------------------------------ merge

struct Pending(Spec, u64);

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.0.start_ms, self.1).cmp(&(o.0.start_ms, o.1))
    }
}

struct Active {
    ts: i64,
    ord: u64,
    events: VecDeque<(i64, String)>,
    session: std::sync::Arc<str>,
}
impl PartialEq for Active {
    fn eq(&self, o: &Self) -> bool {
        (self.ts, self.ord) == (o.ts, o.ord)
    }
}
impl Eq for Active {}
impl PartialOrd for Active {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Active {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.ts, self.ord).cmp(&(o.ts, o.ord))
    }
}

/// Streaming generator: an iterator of envelope lines in global `ts` order.
pub struct Simulator {
    cfg: SimConfig,
    world: World,
    planner: Planner,
    pending: BinaryHeap<Reverse<Pending>>,
    active: BinaryHeap<Reverse<Active>>,
    seq: u64,
    emitted: u64,
    id_prefix: String,
    stats: SimStats,
    peak_active: usize,
    peak_pending: usize,
    last_session: Option<std::sync::Arc<str>>,
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Self {
        let world = build_world(&cfg);
        let planner = Planner::new(&cfg);
        let mut r = sub_rng(cfg.seed, &[0x1D]);
        let id_prefix = format!(
            "{}-{}",
            fakes::pick(&mut r, &["gw", "evt", "mcpgw", "log"]),
            fakes::hex(&mut r, 6)
        );
        Simulator {
            cfg,
            world,
            planner,
            pending: BinaryHeap::new(),
            active: BinaryHeap::new(),
            seq: 0,
            emitted: 0,
            id_prefix,
            stats: SimStats::default(),
            peak_active: 0,
            peak_pending: 0,
            last_session: None,
        }
    }

    /// The generated session of the line last returned: the ground truth session stitching
    /// is measured against when the traffic is stateless.
    pub fn truth_session(&self) -> Option<&str> {
        self.last_session.as_deref()
    }

    /// session_id → label for the whole run (re-runs the planner only).
    pub fn labels(&self) -> BTreeMap<String, Scenario> {
        generate_labels(&self.cfg)
    }

    /// Lines emitted / sessions started so far (complete once exhausted).
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// Largest number of simultaneously buffered sessions seen so far
    /// (`active`, `pending`): the memory bound of the stream.
    pub fn peak_buffered(&self) -> (usize, usize) {
        (self.peak_active, self.peak_pending)
    }

    fn activate(&mut self, mut spec: Spec) {
        if self.cfg.stateless {
            stateless::adapt(&mut spec);
        }
        let mut events = session::generate(&self.world, &spec);
        if self.cfg.stateless {
            events = stateless::convert(events, spec.seed);
        }
        let events: VecDeque<(i64, String)> = events.into();
        self.stats.sessions += 1;
        *self.stats.by_scenario.entry(spec.label).or_insert(0) += 1;
        let ord = self.seq;
        self.seq += 1;
        if let Some(&(ts, _)) = events.front() {
            let session = spec.session_id.as_str().into();
            self.active.push(Reverse(Active {
                ts,
                ord,
                events,
                session,
            }));
            self.peak_active = self.peak_active.max(self.active.len());
        }
    }
}

fn fmt_ts(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

impl Iterator for Simulator {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            let t_active = self.active.peek().map_or(i64::MAX, |a| a.0.ts);
            let t_pending = self.pending.peek().map_or(i64::MAX, |p| p.0.0.start_ms);
            let t = t_active.min(t_pending);
            if !self.planner.done() && self.planner.next_anchor <= t {
                for s in self.planner.next_unit(&self.world) {
                    let o = self.seq;
                    self.seq += 1;
                    self.pending.push(Reverse(Pending(s, o)));
                }
                self.peak_pending = self.peak_pending.max(self.pending.len());
                continue;
            }
            if t == i64::MAX {
                return None;
            }
            if t_pending <= t_active {
                if let Some(Reverse(Pending(spec, _))) = self.pending.pop() {
                    self.activate(spec);
                }
                continue;
            }
            let Reverse(mut a) = self.active.pop()?;
            let (ts, body) = a.events.pop_front()?;
            self.last_session = Some(a.session.clone());
            if let Some(&(nts, _)) = a.events.front() {
                a.ts = nts;
                self.active.push(Reverse(a));
            }
            let line = format!(
                "{{\"ts\":\"{}\",\"event_id\":\"{}-{:09}\",{body}",
                fmt_ts(ts),
                self.id_prefix,
                self.emitted
            );
            self.emitted += 1;
            self.stats.lines += 1;
            return Some(line);
        }
    }
}

/// session_id → label for every session of the run. Cheap: runs only the
/// planner (server/principal/scenario choice), never builds a message.
pub fn generate_labels(cfg: &SimConfig) -> BTreeMap<String, Scenario> {
    let world = build_world(cfg);
    let mut p = Planner::new(cfg);
    let mut out = BTreeMap::new();
    while !p.done() {
        for s in p.next_unit(&world) {
            out.insert(s.session_id, s.label);
        }
    }
    out
}

/// Labels in the sample's file format (`mcp-sample.labels.json`): one JSON
/// object, one `"session_id": "label"` pair per line, one-space indent.
pub fn labels_json(labels: &BTreeMap<String, Scenario>) -> Result<String, SimError> {
    let mut s = String::from("{\n");
    let n = labels.len();
    for (i, (k, v)) in labels.iter().enumerate() {
        s.push(' ');
        s.push_str(&serde_json::to_string(k)?);
        s.push_str(": ");
        s.push_str(&serde_json::to_string(v.as_str())?);
        if i + 1 < n {
            s.push(',');
        }
        s.push('\n');
    }
    s.push('}');
    Ok(s)
}

/// Writes labels (see [`labels_json`]) for `cfg`.
pub fn write_labels(cfg: &SimConfig, mut out: impl Write) -> Result<(), SimError> {
    out.write_all(labels_json(&generate_labels(cfg))?.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Streams the whole run as OTLP/JSON log exports, one request per line (see
/// [`otlp_lines`]); the stats count envelopes.
pub fn write_otlp(cfg: &SimConfig, out: impl Write) -> Result<SimStats, SimError> {
    check(cfg)?;
    let mut out = std::io::BufWriter::new(out);
    let mut sim = Simulator::new(cfg.clone());
    for line in otlp_lines(sim.by_ref()) {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(sim.stats)
}

fn check(cfg: &SimConfig) -> Result<(), SimError> {
    if !(0.0..=1.0).contains(&cfg.attack_ratio) {
        return Err(SimError::Config(format!(
            "attack_ratio {} not in 0..=1",
            cfg.attack_ratio
        )));
    }
    Ok(())
}

/// Streams the whole run as NDJSON (one line per envelope, `\n`-terminated).
pub fn write_ndjson(cfg: &SimConfig, out: impl Write) -> Result<SimStats, SimError> {
    check(cfg)?;
    let mut out = std::io::BufWriter::new(out);
    let mut sim = Simulator::new(cfg.clone());
    for line in sim.by_ref() {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(sim.stats)
}
