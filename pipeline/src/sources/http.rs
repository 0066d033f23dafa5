//! Request bodies of `POST /v1/ingest`: the API server hands each request
//! over through a channel; its reply ([`Ack::Http`]) is sent once its batch
//! is durable. The source ends when the server has stopped.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use dunes_api::{ApiError, AppState, IngestRequest, ServerConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Ack, Input, Source};
use crate::error::{Context as _, PipelineError, Result};

pub(crate) struct HttpSource {
    requests: mpsc::Receiver<IngestRequest>,
    server: Option<JoinHandle<std::result::Result<(), ApiError>>>,
    /// Starts the server's graceful shutdown (it waits for its open
    /// requests, so their batches must still be completed meanwhile).
    stop: Option<oneshot::Sender<()>>,
}

impl HttpSource {
    /// Starts the API server; `requests` receives what `state.ingest` sends.
    pub(crate) async fn start(
        cfg: ServerConfig,
        state: AppState,
        requests: mpsc::Receiver<IngestRequest>,
    ) -> Result<(HttpSource, SocketAddr)> {
        let (bound_tx, bound_rx) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(dunes_api::serve(cfg, state, Some(bound_tx), async move {
            let _ = stopped.await;
        }));
        match bound_rx.await {
            Ok(addr) => Ok((
                HttpSource {
                    requests,
                    server: Some(handle),
                    stop: Some(stop),
                },
                addr,
            )),
            // The server failed before binding: surface its error.
            Err(_) => match handle.await {
                Ok(Err(e)) => Err(e).context("the HTTP server failed to start"),
                Ok(Ok(())) => Err(PipelineError::Stopped(
                    "HTTP server stopped unexpectedly".into(),
                )),
                Err(e) => Err(PipelineError::Stopped(format!(
                    "HTTP server task failed: {e}"
                ))),
            },
        }
    }
}

fn input(req: IngestRequest) -> Input {
    Input {
        records: req.records,
        ack: Ack::Http(req.reply),
    }
}

impl Source for HttpSource {
    fn name(&self) -> &str {
        "http"
    }

    fn finite(&self) -> bool {
        false
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Input, String>>> {
        if let Poll::Ready(Some(req)) = self.requests.poll_recv(cx) {
            return Poll::Ready(Some(Ok(input(req))));
        }
        if let Some(server) = &mut self.server {
            let out = match Pin::new(server).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Ok(()))) => None,
                Poll::Ready(Ok(Err(e))) => Some(format!("HTTP server error: {e}")),
                Poll::Ready(Err(e)) => Some(format!("HTTP server task failed: {e}")),
            };
            self.server = None;
            if let Some(e) = out {
                if self.stop.is_some() {
                    // not asked to stop: the API is gone
                    return Poll::Ready(Some(Err(e)));
                }
                tracing::error!("{e}");
            }
        }
        // The server has returned: the requests it handed over before.
        match self.requests.try_recv() {
            Ok(req) => Poll::Ready(Some(Ok(input(req)))),
            Err(_) => Poll::Ready(None),
        }
    }

    fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
