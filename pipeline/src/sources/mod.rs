//! Where records come from. Every source implements [`Source`]: it hands
//! the driver [`Input`] — records plus the acknowledgement ([`Ack`]) that
//! completes them once their batch is durable — and ends on its own
//! ([`file`](mod@file): files and stdin) or when asked to stop ([`http`]: request
//! bodies from the API; [`kafka`]: consumer batches and their offsets).
//! [`Sources`] polls them all, in turn.

pub(crate) mod file;
pub(crate) mod http;
pub(crate) mod kafka;

use std::future::poll_fn;
use std::task::{Context, Poll};

use dunes_ingest::RawRecord;
use dunes_ingest::kafka::KafkaBatch;
use tokio::sync::oneshot;

/// What completes a batch once it is durable (the acknowledgement flows
/// back from the sinks to the source).
pub(crate) enum Ack {
    /// A file or stdin chunk: nothing to answer.
    File,
    /// An HTTP ingest request, answered with its counts.
    Http(oneshot::Sender<dunes_api::IngestAck>),
    /// A Kafka batch (its records taken out): outputs delivered, then its
    /// offsets committed.
    Kafka(KafkaBatch),
}

impl Ack {
    /// Whether records with this acknowledgement may share a batch with
    /// others (file chunks are gathered up to `[ingest] batch_size`; an HTTP
    /// request or a Kafka batch is one batch, so one reply or one commit
    /// covers exactly its records).
    pub(crate) fn coalesces(&self) -> bool {
        matches!(self, Ack::File)
    }
}

/// Records from a source and what completes them.
pub(crate) struct Input {
    pub(crate) records: Vec<RawRecord>,
    pub(crate) ack: Ack,
}

/// A source of records.
pub(crate) trait Source: Send {
    /// For logs and errors: the path, `-` for stdin, `http`, `kafka`.
    fn name(&self) -> &str;
    /// Whether the source ends on its own (files and stdin); the others run
    /// until [`Source::request_stop`].
    fn finite(&self) -> bool;
    /// The next input; `Ready(None)` once the source has ended, `Err` when
    /// it failed (it is not polled again). Cancel-safe.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Input, String>>>;
    /// Stop taking new records; what was already taken still arrives
    /// before `Ready(None)`.
    fn request_stop(&mut self);
}

/// What [`Sources::next`] yields.
pub(crate) enum SourceEvent {
    Input(Input),
    /// A source ended (`error`: it failed).
    Ended {
        name: String,
        finite: bool,
        error: Option<String>,
    },
}

/// The open sources of a running pipeline.
#[derive(Default)]
pub(crate) struct Sources {
    open: Vec<Box<dyn Source>>,
    /// Polled first next time, so that no source starves the others.
    turn: usize,
}

impl Sources {
    pub(crate) fn add(&mut self, source: Box<dyn Source>) {
        self.open.push(source);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Open sources that end on their own.
    pub(crate) fn finite_open(&self) -> usize {
        self.open.iter().filter(|s| s.finite()).count()
    }

    /// Whether a source that runs until stopped is open.
    pub(crate) fn live_open(&self) -> bool {
        self.open.iter().any(|s| !s.finite())
    }

    pub(crate) fn request_stop(&mut self) {
        for s in &mut self.open {
            s.request_stop();
        }
    }

    /// The next input or end of any open source; pending for ever when none
    /// is open. Cancel-safe, for `select!`.
    pub(crate) async fn next(&mut self) -> SourceEvent {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<SourceEvent> {
        let n = self.open.len();
        for k in 0..n {
            let i = (self.turn + k) % n;
            let ended = match self.open[i].poll_next(cx) {
                Poll::Pending => continue,
                Poll::Ready(Some(Ok(input))) => {
                    self.turn = (i + 1) % n;
                    return Poll::Ready(SourceEvent::Input(input));
                }
                Poll::Ready(Some(Err(e))) => Some(e),
                Poll::Ready(None) => None,
            };
            let source = self.open.remove(i);
            self.turn = if self.open.is_empty() {
                0
            } else {
                i % self.open.len()
            };
            return Poll::Ready(SourceEvent::Ended {
                name: source.name().to_string(),
                finite: source.finite(),
                error: ended,
            });
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    type Feed = Result<Vec<RawRecord>, String>;

    /// A source fed by a test through a channel.
    struct Chan {
        name: &'static str,
        finite: bool,
        rx: Option<mpsc::Receiver<Feed>>,
    }

    impl Source for Chan {
        fn name(&self) -> &str {
            self.name
        }
        fn finite(&self) -> bool {
            self.finite
        }
        fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Input, String>>> {
            let Some(rx) = &mut self.rx else {
                return Poll::Ready(None);
            };
            rx.poll_recv(cx).map(|r| {
                r.map(|r| {
                    r.map(|records| Input {
                        records,
                        ack: Ack::File,
                    })
                })
            })
        }
        fn request_stop(&mut self) {
            self.rx = None;
        }
    }

    fn rec(n: usize) -> Vec<RawRecord> {
        (0..n)
            .map(|i| RawRecord::file_line(format!("{{\"n\":{i}}}").into_bytes(), "t", i as u64 + 1))
            .collect()
    }

    fn chan(name: &'static str, finite: bool) -> (Box<dyn Source>, mpsc::Sender<Feed>) {
        let (tx, rx) = mpsc::channel(8);
        let s = Chan {
            name,
            finite,
            rx: Some(rx),
        };
        (Box::new(s), tx)
    }

    fn input_len(e: SourceEvent) -> usize {
        match e {
            SourceEvent::Input(i) => i.records.len(),
            SourceEvent::Ended { name, .. } => panic!("{name} ended, input expected"),
        }
    }

    #[tokio::test]
    async fn sources_take_turns_and_report_their_end() {
        let mut all = Sources::default();
        let (a, a_tx) = chan("a", true);
        let (b, b_tx) = chan("b", false);
        all.add(a);
        all.add(b);
        assert_eq!((all.finite_open(), all.live_open()), (1, true));
        for _ in 0..3 {
            a_tx.send(Ok(rec(1))).await.unwrap();
            b_tx.send(Ok(rec(2))).await.unwrap();
        }
        // both have input waiting: they alternate instead of `a` first
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(input_len(all.next().await));
        }
        assert_eq!(got, [1, 2, 1, 2, 1, 2]);

        // a failing source is reported once and dropped
        a_tx.send(Err("disk on fire".into())).await.unwrap();
        match all.next().await {
            SourceEvent::Ended {
                name,
                finite,
                error,
            } => assert_eq!(
                (name.as_str(), finite, error.as_deref()),
                ("a", true, Some("disk on fire"))
            ),
            SourceEvent::Input(_) => panic!("the end of a expected"),
        }
        assert_eq!((all.finite_open(), all.live_open()), (0, true));

        // stopping ends the live one
        b_tx.send(Ok(rec(3))).await.unwrap();
        assert_eq!(input_len(all.next().await), 3);
        all.request_stop();
        match all.next().await {
            SourceEvent::Ended { name, error, .. } => {
                assert_eq!((name.as_str(), error), ("b", None))
            }
            SourceEvent::Input(_) => panic!("the end of b expected"),
        }
        assert!(all.is_empty());
        // nothing open: pending, not a busy loop of ends
        let idle = tokio::time::timeout(std::time::Duration::from_millis(20), all.next()).await;
        assert!(idle.is_err());
    }
}
