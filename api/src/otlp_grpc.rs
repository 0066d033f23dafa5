//! OTLP/gRPC: the collector's `TraceService` and `LogsService` (`opentelemetry-proto`'s
//! generated tonic servers) mounted on the API router, so gRPC exporters reach the same
//! listener (HTTP/2 cleartext) through the same token, role, rate and body checks as
//! `POST /v1/traces` and `/v1/logs`. The answer comes once the envelopes are ledgered.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::{ApiError, AppState};

/// The gRPC method paths (also the routes the auth middleware knows as ingest routes).
pub const TRACES_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// See [`TRACES_PATH`].
pub const LOGS_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

#[derive(Clone)]
pub(crate) struct Otlp {
    st: AppState,
}

/// The two services, decoding messages up to `max_bytes`.
pub(crate) fn services(
    st: AppState,
    max_bytes: usize,
) -> (TraceServiceServer<Otlp>, LogsServiceServer<Otlp>) {
    let o = Otlp { st };
    (
        TraceServiceServer::new(o.clone()).max_decoding_message_size(max_bytes),
        LogsServiceServer::new(o).max_decoding_message_size(max_bytes),
    )
}

fn status(e: ApiError) -> tonic::Status {
    match e {
        ApiError::IngestDisabled => tonic::Status::unimplemented(e.to_string()),
        ApiError::Unavailable => tonic::Status::unavailable(e.to_string()),
        other => tonic::Status::internal(other.to_string()),
    }
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mapped = dunes_ingest::otlp::map_traces(req.get_ref(), &crate::uuid_like());
        let (rejected, msg) = crate::otlp_hand_over(&self.st, mapped)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(dunes_ingest::otlp::trace_response(
            rejected, &msg,
        )))
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let mapped = dunes_ingest::otlp::map_logs(req.get_ref(), &crate::uuid_like());
        let (rejected, msg) = crate::otlp_hand_over(&self.st, mapped)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(dunes_ingest::otlp::logs_response(
            rejected, &msg,
        )))
    }
}
