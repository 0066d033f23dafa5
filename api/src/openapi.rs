//! `/openapi.json`: the OpenAPI 3.1 description, generated from the handlers' annotations.

use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Dunes SOC API",
        description = "Incidents, lifecycle, hunting SQL, rules, ledger proofs and ingest. Every route except /healthz requires an ML-DSA-65 signed bearer token (`dunes token issue`)."
    ),
    paths(
        crate::healthz,
        crate::list_incidents,
        crate::get_incident,
        crate::ack,
        crate::assign,
        crate::escalate,
        crate::resolve,
        crate::notify,
        crate::comment,
        crate::deescalate,
        crate::suppress,
        crate::list_notifications,
        crate::report_digest,
        crate::query,
        crate::list_rules,
        crate::get_rule,
        crate::validate_rule,
        crate::reload_rules,
        crate::keys,
        crate::outputs_status,
        crate::webhook_dead_letters,
        crate::metrics_text,
        crate::checkpoint,
        crate::ledger_routes::inclusion,
        crate::ledger_routes::consistency,
        crate::ledger_routes::export,
        crate::ledger_routes::redact,
        crate::ingest,
        crate::otlp_traces,
        crate::otlp_logs,
    ),
    components(schemas(
        crate::ActionBody,
        crate::QueryBody,
        crate::WebhookStatus,
        crate::DigestBody
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT (alg ML-DSA-65)")
                    .build(),
            ),
        );
    }
}

pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
