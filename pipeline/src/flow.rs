//! Overlapped stages: a decode thread (contract check, normalisation,
//! de-duplication) works on batch N+1 while the driver task runs detection,
//! the ledger and the sinks on batch N. Batches keep their order; at most
//! `[ingest] batches_in_flight` are between the two (bounded channels, no
//! unbounded queue), and each carries what to do once it is durable ([`Ack`]).

use std::sync::Mutex;

use dunes_ingest::RawRecord;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::error::{PipelineError, Result};
use crate::sinks::kafka::publish_findings;
use crate::sources::Ack;
use crate::sources::kafka::KafkaIo;
use crate::stage::{BatchOutcome, Decoded, Decoder, Pipeline};

/// Fewest batches submitted and not yet durable: one decoding, one waiting
/// for (or in) detection.
const MIN_IN_FLIGHT: usize = 2;

type DecodeResult = (Result<Decoded>, Ack);

/// A decoded batch and its rule plans, when they were started early.
pub(crate) type Next = (DecodeResult, Option<dunes_detect::BatchPlans>);

pub(crate) struct Stages {
    pub(crate) pipeline: Pipeline,
    pub(crate) kafka: Option<KafkaIo>,
    to_decoder: Option<mpsc::Sender<(Vec<RawRecord>, Ack)>>,
    /// Decoded batches, in submission order.
    decoded: mpsc::Receiver<DecodeResult>,
    /// When each batch in flight was handed over, oldest first.
    pub(crate) in_flight: std::collections::VecDeque<std::time::Instant>,
    decoder_thread: Option<std::thread::JoinHandle<()>>,
    latency: Option<std::sync::Arc<Mutex<Histogram<u64>>>>,
    /// Batches submitted and not yet durable, at most.
    limit: usize,
    /// The next decoded batch, taken early so its rule plans run on the
    /// worker threads while the batch before it finishes.
    ahead: Option<Next>,
}

impl Stages {
    /// Moves the pipeline's decoder to a thread of its own.
    pub(crate) fn start(
        mut pipeline: Pipeline,
        kafka: Option<KafkaIo>,
        latency: Option<std::sync::Arc<Mutex<Histogram<u64>>>>,
        in_flight: usize,
    ) -> Result<Stages> {
        let limit = in_flight.max(MIN_IN_FLIGHT);
        if let Some(k) = &kafka {
            pipeline.send_to_kafka(k.sink.clone());
        }
        let mut decoder: Decoder = pipeline
            .take_decoder()
            .ok_or_else(|| PipelineError::Stopped("the decoder was already taken".into()))?;
        let (to_decoder, mut inbox) = mpsc::channel::<(Vec<RawRecord>, Ack)>(limit);
        let (outbox, decoded) = mpsc::channel::<DecodeResult>(limit);
        let decoder_thread = std::thread::Builder::new()
            .name("dunes-decode".into())
            .spawn(move || {
                while let Some((records, ack)) = inbox.blocking_recv() {
                    let out = decoder.decode(records);
                    if outbox.blocking_send((out, ack)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| PipelineError::Io {
                what: "cannot start the decode thread".into(),
                source: e,
            })?;
        Ok(Stages {
            pipeline,
            kafka,
            to_decoder: Some(to_decoder),
            decoded,
            in_flight: std::collections::VecDeque::with_capacity(limit),
            decoder_thread: Some(decoder_thread),
            latency,
            limit,
            ahead: None,
        })
    }

    /// Hands a batch to the decode thread; first completes the oldest batch
    /// when the limit of batches in flight is reached (backpressure).
    pub(crate) async fn submit(&mut self, records: Vec<RawRecord>, ack: Ack) -> Result<()> {
        if records.is_empty() {
            if let Ack::Http(reply) = ack {
                let _ = reply.send(BatchOutcome::default().ack());
            }
            return Ok(());
        }
        while self.in_flight.len() >= self.limit {
            self.complete_next().await?;
        }
        let tx = self
            .to_decoder
            .as_ref()
            .ok_or_else(|| PipelineError::Stopped("the decode thread was stopped".into()))?;
        tx.send((records, ack))
            .await
            .map_err(|_| PipelineError::Stopped("the decode thread stopped".into()))?;
        self.in_flight.push_back(std::time::Instant::now());
        Ok(())
    }

    /// Waits for the oldest batch in flight and completes it.
    pub(crate) async fn complete_next(&mut self) -> Result<()> {
        match self.next_decoded().await {
            Some(d) => self.complete(d).await,
            None => Err(PipelineError::Stopped("the decode thread stopped".into())),
        }
    }

    /// The oldest decoded batch in flight (`None`: the decode thread
    /// stopped). Cancel-safe, for `select!`.
    pub(crate) async fn next_decoded(&mut self) -> Option<Next> {
        match self.ahead.take() {
            Some(next) => Some(next),
            None => self.decoded.recv().await.map(|d| (d, None)),
        }
    }

    /// Completes every batch in flight (before a reload, at the end of the
    /// sources, on shutdown).
    pub(crate) async fn drain(&mut self) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.complete_next().await?;
        }
        Ok(())
    }

    /// Detection, ledger, sinks for one decoded batch, then its [`Ack`].
    /// When the next batch is already decoded, its rule plans are started
    /// first, so they run on the worker threads while this batch's states,
    /// incidents and ledger records are made.
    pub(crate) async fn complete(&mut self, ((decoded, ack), plans): Next) -> Result<()> {
        if self.ahead.is_none()
            && let Ok(next) = self.decoded.try_recv()
        {
            let plans = match &next.0 {
                Ok(d) => self.pipeline.start_plans(d),
                Err(_) => None,
            };
            self.ahead = Some((next, plans));
        }
        let submitted = self.in_flight.pop_front();
        let out = match decoded {
            Ok(d) => self.pipeline.finish_started(d, plans).await,
            Err(e) => Err(e),
        };
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                if let (Ack::Kafka(_), Some(k)) = (&ack, &self.kafka) {
                    k.abandon();
                }
                return Err(e);
            }
        };
        match ack {
            Ack::File => {}
            Ack::Http(reply) => {
                let _ = reply.send(out.ack());
            }
            Ack::Kafka(batch) => {
                let Some(k) = &self.kafka else {
                    return Err(PipelineError::Stopped("a Kafka batch without Kafka".into()));
                };
                // a Kafka record arrived when the broker stamped it
                let oldest_ms = k.commit(&batch, self.latency.as_deref())?;
                if let Some(ms) = oldest_ms {
                    self.pipeline.note_ingest_lag(ms as f64 / 1000.0);
                }
                return Ok(());
            }
        }
        if let Some(t) = submitted {
            self.pipeline.note_ingest_lag(t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Sends the OCSF findings raised since the last batch (analyst actions,
    /// the self-monitor's incidents) to Kafka now; they otherwise go out with
    /// the next batch, which an idle input or a shutdown never brings.
    pub(crate) async fn publish_between_batches(&mut self) -> Result<()> {
        let findings = self.pipeline.take_findings_between_batches();
        match &self.kafka {
            Some(k) => publish_findings(&k.sink, &findings).await,
            None => Ok(()),
        }
    }

    /// Drains, stops the decode thread and hands the pipeline back.
    pub(crate) async fn stop(mut self) -> Result<(Pipeline, Option<KafkaIo>)> {
        self.drain().await?;
        self.publish_between_batches().await?;
        self.to_decoder = None;
        if let Some(t) = self.decoder_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        Ok((self.pipeline, self.kafka))
    }
}
