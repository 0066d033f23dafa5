//! Arrow schemas of the normalised `events` and `tool_defs` tables
//! (see `docs/schema.md`).

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

pub(crate) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

pub(crate) fn list_utf8() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

/// `Map<Utf8, Utf8>` exactly as `arrow::array::MapBuilder` builds it by default
/// (`entries` struct of non-null `keys` and nullable `values`, unsorted keys).
pub(crate) fn map_utf8() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

static EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let u = |n: &str| Field::new(n, DataType::Utf8, true);
    let l = |n: &str| Field::new(n, list_utf8(), true);
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("msg_index", DataType::Int32, false),
        Field::new("ts", ts_type(), false),
        Field::new("server_id", DataType::Utf8, false),
        Field::new("direction", DataType::Utf8, false),
        u("transport"),
        u("session_id"),
        u("gateway_id"),
        u("server_name"),
        u("server_version"),
        u("client_name"),
        u("client_version"),
        u("http_method"),
        Field::new("http_status", DataType::Int32, true),
        u("src_ip"),
        u("user_agent"),
        u("origin"),
        u("host"),
        u("hdr_protocol_version"),
        u("hdr_mcp_method"),
        u("hdr_mcp_name"),
        u("auth_sub"),
        u("auth_iss"),
        u("auth_aud"),
        u("auth_client_id"),
        u("auth_scopes"),
        Field::new("auth_exp", DataType::Int64, true),
        u("token_fp"),
        Field::new("aud_ok", DataType::Boolean, true),
        u("principal"),
        Field::new("labels", map_utf8(), true),
        u("extra"),
        Field::new("msg_kind", DataType::Utf8, false),
        u("jsonrpc_id"),
        u("method"),
        u("protocol_version"),
        u("req_protocol_version"),
        u("tool_name"),
        u("resource_uri"),
        u("prompt_name"),
        Field::new("args_bytes", DataType::Int64, true),
        u("args_sha256"),
        l("args_keys"),
        u("args_preview"),
        u("args_text"),
        u("args_decoded"),
        Field::new("args_max_len", DataType::Int64, true),
        Field::new("args_max_entropy", DataType::Float64, true),
        l("args_urls"),
        l("args_url_hosts"),
        l("args_host_classes"),
        l("args_url_schemes"),
        l("args_secret_types"),
        Field::new("is_error", DataType::Boolean, true),
        Field::new("error_code", DataType::Int64, true),
        u("error_message"),
        Field::new("result_bytes", DataType::Int64, true),
        u("result_preview"),
        u("result_text"),
        l("result_secret_types"),
        l("content_types"),
        Field::new("tools_listed", DataType::Int32, true),
        Field::new("latency_ms", DataType::Float64, true),
        Field::new("header_mismatch", DataType::Boolean, true),
        Field::new("raw_bytes", DataType::Int64, false),
    ]))
});

static TOOL_DEFS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("ts", ts_type(), false),
        Field::new("server_id", DataType::Utf8, false),
        Field::new("session_id", DataType::Utf8, true),
        Field::new("principal", DataType::Utf8, true),
        Field::new("tool_name", DataType::Utf8, false),
        Field::new("def_sha256", DataType::Utf8, false),
        Field::new("desc_sha256", DataType::Utf8, false),
        Field::new("schema_sha256", DataType::Utf8, false),
        Field::new("desc_len", DataType::Int64, false),
        Field::new("desc_preview", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
        Field::new("desc_invisible_chars", DataType::Int32, false),
        Field::new("input_schema", DataType::Utf8, true),
    ]))
});

static MAML_DOCS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let u = |n: &str| Field::new(n, DataType::Utf8, true);
    let l = |n: &str| Field::new(n, list_utf8(), true);
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("msg_index", DataType::Int32, false),
        Field::new("ts", ts_type(), false),
        Field::new("server_id", DataType::Utf8, false),
        u("session_id"),
        u("principal"),
        Field::new("direction", DataType::Utf8, false),
        u("method"),
        u("tool_name"),
        u("resource_uri"),
        Field::new("location", DataType::Utf8, false),
        u("maml_version"),
        u("doc_id"),
        u("doc_type"),
        u("origin"),
        Field::new("valid", DataType::Boolean, false),
        u("errors"),
        l("perm_read"),
        l("perm_write"),
        l("perm_execute"),
        l("perm_foreign"),
        Field::new("code_blocks", DataType::Int32, false),
        l("code_langs"),
        u("code_text"),
        u("intent_text"),
        l("sections"),
        u("sig_method"),
        Field::new("sig_status", DataType::Utf8, false),
        Field::new("digest", DataType::Utf8, false),
        Field::new("roundtrip_ok", DataType::Boolean, false),
        u("roundtrip_issue"),
        Field::new("doc_bytes", DataType::Int64, false),
    ]))
});

/// Schema of the `maml_docs` table (one row per MAML document found in a
/// message's arguments, result or resource contents).
pub fn maml_docs_schema() -> SchemaRef {
    MAML_DOCS.clone()
}

static EMPTY_MAML_DOCS: LazyLock<arrow::record_batch::RecordBatch> =
    LazyLock::new(|| arrow::record_batch::RecordBatch::new_empty(maml_docs_schema()));

/// An empty `maml_docs` batch.
pub fn empty_maml_docs() -> &'static arrow::record_batch::RecordBatch {
    &EMPTY_MAML_DOCS
}

/// Schema of the `events` table (one row per JSON-RPC message).
pub fn events_schema() -> SchemaRef {
    EVENTS.clone()
}

/// Schema of the `tool_defs` table (one row per tool in a `tools/list` result).
pub fn tool_defs_schema() -> SchemaRef {
    TOOL_DEFS.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_schema_snapshot() {
        let s = events_schema();
        let fields: Vec<String> = s
            .fields()
            .iter()
            .map(|f| {
                format!(
                    "{}: {}{}",
                    f.name(),
                    f.data_type(),
                    if f.is_nullable() { "" } else { " NOT NULL" }
                )
            })
            .collect();
        insta::assert_yaml_snapshot!(fields);
    }

    fn names_and_types(s: &SchemaRef) -> Vec<String> {
        s.fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect()
    }

    #[test]
    fn maml_docs_schema_snapshot() {
        insta::assert_yaml_snapshot!(names_and_types(&maml_docs_schema()));
    }

    #[test]
    fn tool_defs_schema_snapshot() {
        insta::assert_yaml_snapshot!(names_and_types(&tool_defs_schema()));
    }
}
