//! Webhook destinations: incidents and their lifecycle changes, delivered
//! at least once, in order, per destination.
//!
//! ```text
//! stage (after the ledger sync) ─► route ─► render ─► outbox.ndjson (fsync) ─► worker thread ─► POST
//!                                                        ▲                         │ 2xx: delivered (fsync)
//!                                                        └── retry: backoff+jitter ┘ N failures / too old: dead-letter.ndjson
//! ```
//!
//! A change is queued before the batch's detection state becomes durable,
//! so a crash either re-detects the batch (and the outbox ignores ids it
//! already holds) or finds it queued: nothing is lost, nothing queued twice.
//! The only double send left is a crash between a receiver's 2xx and the
//! fsync of "delivered"; `X-Dunes-Delivery` (the stable change id) lets a
//! receiver drop that one.

pub(crate) mod config;
mod outbox;
mod payload;
mod sign;
#[cfg(test)]
pub(crate) mod tests;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::Value;

pub use config::{WebhookConfig, WebhookFormat};
use outbox::{Outbox, Pending};

use crate::error::{Context, PipelineError, Result};
use crate::sinks::lifecycle::Change;

/// Delivery counters of one destination since start.
#[derive(Default)]
struct Status {
    delivered: u64,
    failed_attempts: u64,
    last_error: Option<String>,
    last_delivered_at: Option<DateTime<Utc>>,
}

struct Destination {
    cfg: WebhookConfig,
    secret: Option<Vec<u8>>,
    routing_key: Option<String>,
    templates: minijinja::Environment<'static>,
    outbox: Mutex<Outbox>,
    /// Signalled on enqueue and on stop.
    wake: Condvar,
    status: Mutex<Status>,
}

/// The configured destinations and their worker threads.
pub(crate) struct Webhooks {
    dests: Vec<Arc<Destination>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn env_secret(var: &str, what: &str, name: &str) -> Result<String> {
    std::env::var(var).map_err(|_| {
        PipelineError::Config(format!(
            "outputs.webhooks[{name}]: environment variable {var} ({what}) is not set"
        ))
    })
}

impl Destination {
    fn open(cfg: &WebhookConfig, data_dir: &Path) -> Result<Destination> {
        cfg.validate().map_err(PipelineError::Config)?;
        let name = &cfg.name;
        let secret = match (&cfg.secret_env, &cfg.secret_file) {
            (Some(var), _) => Some(env_secret(var, "signing secret", name)?.into_bytes()),
            (None, Some(f)) => {
                let s = std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read webhook secret {}", f.display()))?;
                Some(s.trim_end_matches(['\r', '\n']).as_bytes().to_vec())
            }
            (None, None) => None,
        };
        if secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(PipelineError::Config(format!(
                "outputs.webhooks[{name}]: the signing secret must have at least 16 bytes"
            )));
        }
        let routing_key = cfg
            .routing_key_env
            .as_deref()
            .map(|v| env_secret(v, "PagerDuty routing key", name))
            .transpose()?;
        for (k, v) in &cfg.headers {
            if ureq::http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || ureq::http::HeaderValue::from_str(v).is_err()
            {
                return Err(PipelineError::Config(format!(
                    "outputs.webhooks[{name}].headers: {k:?} is not a valid header"
                )));
            }
        }
        let mut templates = minijinja::Environment::new();
        if let Some(t) = &cfg.template {
            templates
                .add_template_owned("body", t.clone())
                .map_err(|e| {
                    PipelineError::Config(format!("outputs.webhooks[{name}].template: {e:#}"))
                })?;
        }
        let outbox = Outbox::open(&data_dir.join("webhooks").join(name))?;
        Ok(Destination {
            cfg: cfg.clone(),
            secret,
            routing_key,
            templates,
            outbox: Mutex::new(outbox),
            wake: Condvar::new(),
            status: Mutex::new(Status::default()),
        })
    }

    fn agent(&self) -> Result<ureq::Agent> {
        let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
        if let Some(ca) = &self.cfg.ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read CA file {}", ca.display()))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
                    certs.push(c.to_owned());
                }
            }
            if certs.is_empty() {
                return Err(PipelineError::Config(format!(
                    "outputs.webhooks[{}].ca_file {}: no PEM certificate",
                    self.cfg.name,
                    ca.display()
                )));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(self.cfg.timeout_ms)))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("dunes/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build();
        Ok(ureq::Agent::new_with_config(config))
    }

    /// Renders and queues the changes this destination routes (one fsync).
    fn enqueue(&self, changes: &[Change<'_>], ocsf: &[Value]) -> Result<usize> {
        let template = match self.cfg.template {
            Some(_) => self.templates.get_template("body").ok(),
            None => None,
        };
        let mut items = Vec::new();
        let mut refused = Vec::new();
        for (c, finding) in changes.iter().zip(ocsf) {
            if !self.cfg.routes(c.kind, c.incident) {
                continue;
            }
            let r = payload::Render {
                change: c,
                ocsf: finding,
            };
            let body = payload::render(
                self.cfg.format,
                &r,
                self.routing_key.as_deref(),
                template.as_ref(),
            );
            let body = match body {
                Ok(b) => b,
                Err(e) => {
                    // Kept (as the generic body) in the dead letters with the reason.
                    refused.push((c.id.clone(), e));
                    payload::render(WebhookFormat::Generic, &r, None, None).unwrap_or_default()
                }
            };
            items.push(Pending {
                id: c.id.clone(),
                event: c.kind,
                incident_id: c.incident.incident_id.clone(),
                queued_at_ms: now_ms(),
                body,
            });
        }
        if items.is_empty() {
            return Ok(0);
        }
        let mut ob = lock(&self.outbox);
        let n = ob.enqueue(items)?;
        for (id, reason) in refused {
            tracing::error!(destination = %self.cfg.name, change = %id, "webhook body not rendered: {reason}");
            ob.dead(&id, 0, &format!("render: {reason}"), now_ms())?;
            metrics::counter!("dunes_webhook_deliveries_total", "destination" => self.cfg.name.clone(), "outcome" => "dead").increment(1);
        }
        metrics::gauge!("dunes_webhook_pending", "destination" => self.cfg.name.clone())
            .set(ob.pending() as f64);
        drop(ob);
        self.wake.notify_all();
        Ok(n)
    }

    /// One POST of `p`.
    fn attempt(&self, agent: &ureq::Agent, p: &Pending) -> Attempt {
        let ts = Utc::now().timestamp();
        let mut req = agent
            .post(&self.cfg.url)
            .header("Content-Type", &self.cfg.content_type)
            .header("X-Dunes-Delivery", &p.id)
            .header("X-Dunes-Event", p.event.event_type())
            .header("X-Dunes-Timestamp", ts.to_string());
        if let Some(s) = &self.secret {
            req = req.header(
                "X-Dunes-Signature",
                sign::signature(s, ts, p.body.as_bytes()),
            );
        }
        for (k, v) in &self.cfg.headers {
            req = req.header(k, v);
        }
        match req.send(p.body.as_bytes()) {
            Err(e) => Attempt::Retry {
                reason: e.to_string(),
                after: None,
            },
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = resp
                    .body_mut()
                    .with_config()
                    .limit(512)
                    .read_to_string()
                    .unwrap_or_default();
                let reason = format!("HTTP {status} {}", text.trim())
                    .trim_end()
                    .to_string();
                match status {
                    200..=299 => Attempt::Delivered(status),
                    408 | 425 | 429 | 500..=599 => Attempt::Retry { reason, after },
                    _ => Attempt::Refused(reason),
                }
            }
        }
    }

    /// Waits until `deadline` (woken early only by stop).
    fn sleep(&self, stop: &AtomicBool, d: Duration) {
        let deadline = Instant::now() + d;
        let mut g = lock(&self.outbox);
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            g = match self.wake.wait_timeout(g, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    fn backoff(&self, attempts: u32, after: Option<Duration>) -> Duration {
        let exp = self
            .cfg
            .backoff_initial_ms
            .saturating_mul(1u64 << attempts.saturating_sub(1).min(30))
            .min(self.cfg.backoff_max_ms);
        // "Equal jitter": half fixed, half random, so retries of many
        // destinations spread out but never come back at once.
        let ms = exp / 2 + rand::rng().random_range(0..=exp / 2);
        let d = Duration::from_millis(ms);
        match after {
            Some(a) => d.max(a).min(Duration::from_millis(self.cfg.backoff_max_ms)),
            None => d,
        }
    }

    /// The worker: delivers the head of the queue until stopped.
    fn run(&self, stop: &AtomicBool) {
        let agent = match self.agent() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(destination = %self.cfg.name, "webhook destination disabled: {e}");
                return;
            }
        };
        let name = self.cfg.name.clone();
        let mut attempts = 0u32;
        let mut head: Option<String> = None;
        loop {
            let p = {
                let mut g = lock(&self.outbox);
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Some(p) = g.front() {
                        break p.clone();
                    }
                    g = match self.wake.wait(g) {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                }
            };
            if head.as_deref() != Some(p.id.as_str()) {
                head = Some(p.id.clone());
                attempts = 0;
            }
            let give_up = |reason: String, attempts: u32| {
                tracing::error!(destination = %name, change = %p.id, attempts, "webhook delivery dead-lettered: {reason}");
                metrics::counter!("dunes_webhook_deliveries_total", "destination" => name.clone(), "outcome" => "dead").increment(1);
                let mut g = lock(&self.outbox);
                let r = g.dead(&p.id, attempts, &reason, now_ms());
                metrics::gauge!("dunes_webhook_pending", "destination" => name.clone())
                    .set(g.pending() as f64);
                r
            };
            let age_ms = now_ms().saturating_sub(p.queued_at_ms);
            let outcome = if age_ms > (self.cfg.max_age_secs as i64).saturating_mul(1000) {
                give_up(
                    format!(
                        "still undelivered after max_age_secs = {}",
                        self.cfg.max_age_secs
                    ),
                    attempts,
                )
            } else {
                match self.attempt(&agent, &p) {
                    Attempt::Delivered(status) => {
                        metrics::counter!("dunes_webhook_deliveries_total", "destination" => name.clone(), "outcome" => "delivered").increment(1);
                        {
                            let mut s = lock(&self.status);
                            s.delivered += 1;
                            s.last_delivered_at = Some(Utc::now());
                        }
                        let mut g = lock(&self.outbox);
                        let r = g.delivered(&p.id, status, now_ms());
                        metrics::gauge!("dunes_webhook_pending", "destination" => name.clone())
                            .set(g.pending() as f64);
                        r
                    }
                    Attempt::Refused(reason) => {
                        attempts += 1;
                        self.failed(&reason);
                        give_up(reason, attempts)
                    }
                    Attempt::Retry { reason, after } => {
                        attempts += 1;
                        self.failed(&reason);
                        if attempts >= self.cfg.max_attempts {
                            give_up(reason, attempts)
                        } else {
                            let d = self.backoff(attempts, after);
                            tracing::warn!(destination = %name, change = %p.id, attempts, retry_in = ?d, "webhook delivery failed: {reason}");
                            self.sleep(stop, d);
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = outcome {
                // The outbox could not record the outcome (disk full, …):
                // the delivery stays queued and is retried (at least once).
                tracing::error!(destination = %name, "webhook outbox write failed: {e}");
                self.sleep(
                    stop,
                    Duration::from_millis(self.cfg.backoff_max_ms.min(5_000)),
                );
            }
        }
    }

    fn failed(&self, reason: &str) {
        metrics::counter!("dunes_webhook_deliveries_total", "destination" => self.cfg.name.clone(), "outcome" => "failed").increment(1);
        let mut s = lock(&self.status);
        s.failed_attempts += 1;
        s.last_error = Some(reason.to_string());
    }

    fn status(&self) -> dunes_api::WebhookStatus {
        let (pending, dead) = {
            let g = lock(&self.outbox);
            (g.pending() as u64, g.dead_total())
        };
        let s = lock(&self.status);
        dunes_api::WebhookStatus {
            name: self.cfg.name.clone(),
            endpoint: self.cfg.endpoint(),
            format: serde_json::to_value(self.cfg.format)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            pending,
            delivered: s.delivered,
            failed_attempts: s.failed_attempts,
            dead_lettered: dead,
            last_error: s.last_error.clone(),
            last_delivered_at: s.last_delivered_at,
        }
    }
}

enum Attempt {
    Delivered(u16),
    /// Worth retrying: no answer, a timeout, 408, 425, 429 or 5xx.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Any other answer: retrying would get the same.
    Refused(String),
}

impl Webhooks {
    /// Opens every destination's outbox and starts its worker (`None`
    /// without destinations).
    pub(crate) fn start(cfgs: &[WebhookConfig], data_dir: &Path) -> Result<Option<Webhooks>> {
        if cfgs.is_empty() {
            return Ok(None);
        }
        let mut names = std::collections::BTreeSet::new();
        let mut dests = Vec::new();
        for c in cfgs {
            if !names.insert(c.name.clone()) {
                return Err(PipelineError::Config(format!(
                    "outputs.webhooks: the name {:?} is used twice",
                    c.name
                )));
            }
            let d = Destination::open(c, data_dir)?;
            d.agent()?;
            dests.push(Arc::new(d));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for d in &dests {
            let name = d.cfg.name.clone();
            let (d, stop) = (d.clone(), stop.clone());
            let t = std::thread::Builder::new()
                .name(format!("webhook-{name}"))
                .spawn(move || d.run(&stop))
                .context("cannot start a webhook worker")?;
            threads.push(t);
            tracing::info!(destination = %name, "webhook destination started");
        }
        Ok(Some(Webhooks {
            dests,
            stop,
            threads,
        }))
    }

    /// Queues the changes for every destination that routes them, durably.
    pub(crate) fn enqueue(&self, changes: &[Change<'_>], ocsf: &[Value]) -> Result<()> {
        for d in &self.dests {
            d.enqueue(changes, ocsf)?;
        }
        Ok(())
    }

    /// Waits up to `limit` for every queue to empty (at shutdown); returns
    /// how many deliveries are still queued (sent after the next start).
    pub(crate) fn drain(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let left: usize = self.dests.iter().map(|d| lock(&d.outbox).pending()).sum();
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn view(&self) -> Arc<dyn dunes_api::OutputsView> {
        Arc::new(View(self.dests.clone()))
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for d in &self.dests {
            // Take the lock so a worker between its check and its wait sees the flag.
            drop(lock(&d.outbox));
            d.wake.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What the API shows (`GET /api/v1/outputs`).
struct View(Vec<Arc<Destination>>);

impl dunes_api::OutputsView for View {
    fn webhooks(&self) -> Vec<dunes_api::WebhookStatus> {
        self.0.iter().map(|d| d.status()).collect()
    }

    fn dead_letters(&self, name: &str, limit: usize) -> Option<Vec<Value>> {
        let d = self.0.iter().find(|d| d.cfg.name == name)?;
        let list = lock(&d.outbox).dead_letters(limit);
        Some(match list {
            Ok(l) => l
                .into_iter()
                .filter_map(|x| serde_json::to_value(x).ok())
                .collect(),
            Err(e) => vec![serde_json::json!({"error": e.to_string()})],
        })
    }
}
