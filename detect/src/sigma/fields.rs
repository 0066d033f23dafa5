//! `logsource: product: mcp`: categories and the Sigma field names Dunes
//! maps to its normalised columns (docs/sigma.md is this table in prose).

use arrow::datatypes::{DataType, SchemaRef};

/// The table a Sigma rule reads and the predicate its category adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    Events,
    ToolDefs,
}

impl Table {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::ToolDefs => "tool_defs",
        }
    }

    pub(crate) fn schema(self) -> SchemaRef {
        match self {
            Table::Events => dunes_ingest::schema::events_schema(),
            Table::ToolDefs => dunes_ingest::schema::tool_defs_schema(),
        }
    }

    /// Columns a keyword (field-less) search looks in.
    pub(crate) fn keyword_columns(self) -> &'static [&'static str] {
        match self {
            Table::Events => &["args_text", "result_text", "error_message"],
            Table::ToolDefs => &["description"],
        }
    }

    /// Columns every converted rule outputs (the evidence base).
    pub(crate) fn base_columns(self) -> &'static [&'static str] {
        match self {
            Table::Events => &[
                "event_id",
                "ts",
                "session_id",
                "server_id",
                "principal",
                "direction",
                "method",
                "tool_name",
            ],
            Table::ToolDefs => &[
                "event_id",
                "ts",
                "session_id",
                "server_id",
                "principal",
                "tool_name",
                "desc_sha256",
                "desc_preview",
            ],
        }
    }
}

/// `(category, table, predicate)`; `None` category = no `category:` key.
pub(crate) const CATEGORIES: &[(Option<&str>, Table, &str)] = &[
    (None, Table::Events, ""),
    (
        Some("tool_call"),
        Table::Events,
        "direction = 'c2s' AND method = 'tools/call'",
    ),
    (
        Some("tool_result"),
        Table::Events,
        "direction = 's2c' AND method = 'tools/call' AND msg_kind IN ('result', 'error')",
    ),
    (Some("tool_definition"), Table::ToolDefs, ""),
    (Some("transport"), Table::Events, "direction = 'c2s'"),
    (
        Some("auth"),
        Table::Events,
        "direction = 'c2s' AND (token_fp IS NOT NULL OR auth_sub IS NOT NULL \
         OR auth_client_id IS NOT NULL OR auth_exp IS NOT NULL OR aud_ok IS NOT NULL)",
    ),
];

/// Sigma field names (OpenTelemetry MCP / GenAI / HTTP conventions where one
/// exists) → column. Every column name is also accepted as itself.
pub(crate) const ALIASES: &[(&str, &str)] = &[
    ("mcp.method.name", "method"),
    ("mcp.session.id", "session_id"),
    ("mcp.protocol.version", "protocol_version"),
    ("mcp.resource.uri", "resource_uri"),
    ("mcp.prompt.name", "prompt_name"),
    ("gen_ai.tool.name", "tool_name"),
    ("gen_ai.tool.call.arguments", "args_text"),
    ("gen_ai.tool.call.result", "result_text"),
    ("gen_ai.tool.description", "description"),
    ("jsonrpc.request.id", "jsonrpc_id"),
    ("rpc.jsonrpc.error_code", "error_code"),
    ("rpc.jsonrpc.error_message", "error_message"),
    ("client.address", "src_ip"),
    ("source.ip", "src_ip"),
    ("user_agent.original", "user_agent"),
    ("http.request.method", "http_method"),
    ("http.response.status_code", "http_status"),
    ("http.request.header.origin", "origin"),
    ("http.request.header.host", "host"),
    ("user.id", "principal"),
    ("enduser.id", "principal"),
    ("server.id", "server_id"),
];

/// List columns whose elements Dunes writes in lower case (hosts, classes,
/// schemes, secret types): an exact, wildcard-free match on them is an
/// `array_has_any` on the lower-cased values.
pub(crate) const LOWERCASE_LISTS: &[&str] = &[
    "args_url_hosts",
    "args_host_classes",
    "args_url_schemes",
    "args_secret_types",
    "result_secret_types",
];

/// What a resolved field is, for the SQL the modifiers produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    List,
    Int,
    Float,
    Bool,
    Timestamp,
}

/// A Sigma field resolved against a table: the SQL expression and its kind.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub(crate) column: String,
    pub(crate) expr: String,
    pub(crate) kind: Kind,
}

/// Resolves a Sigma field name (alias, column, or `labels.<key>`).
pub(crate) fn resolve(table: Table, name: &str) -> Result<Resolved, String> {
    let schema = table.schema();
    if let Some(key) = name.strip_prefix("labels.")
        && table == Table::Events
        && !key.is_empty()
    {
        return Ok(Resolved {
            column: "labels".into(),
            expr: format!("labels[{}]", super::sql_str(key)),
            kind: Kind::Text,
        });
    }
    let column = ALIASES
        .iter()
        .find(|(a, _)| *a == name)
        .map(|(_, c)| *c)
        .unwrap_or(name);
    let field = schema.field_with_name(column).map_err(|_| {
        format!(
            "field {name:?} is not a column of {} nor a documented alias (docs/sigma.md)",
            table.name()
        )
    })?;
    let kind = match field.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Text,
        DataType::List(_) | DataType::LargeList(_) => Kind::List,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => Kind::Int,
        DataType::Float32 | DataType::Float64 => Kind::Float,
        DataType::Boolean => Kind::Bool,
        DataType::Timestamp(_, _) => Kind::Timestamp,
        other => {
            return Err(format!(
                "field {name:?} has type {other} which Sigma cannot match"
            ));
        }
    };
    Ok(Resolved {
        column: column.to_string(),
        expr: column.to_string(),
        kind,
    })
}
