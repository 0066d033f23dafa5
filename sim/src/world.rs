//! The simulated estate: MCP servers (with their tools, resources, prompts),
//! principals and clients. Built once from the seed; small (tens to hundreds
//! of entries), independent of the number of sessions generated.

use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

use crate::fakes::{self, R, chance, hex, idx, pick};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cap {
    ReadFile,
    WriteFile,
    ListDir,
    Search,
    FetchUrl,
    HttpPost,
    SendEmail,
    ListInbox,
    RunQuery,
    DescribeTable,
    RunShell,
    CreateNote,
    PostMessage,
    CreateTicket,
    Forecast,
    Translate,
    /// MAML hub: submit a document, fetch one, run a workflow.
    SubmitMaml,
    GetMaml,
    RunWorkflow,
}

impl Cap {
    pub(crate) fn synonyms(self) -> &'static [&'static str] {
        match self {
            Cap::ReadFile => &[
                "read_file",
                "cat",
                "get_file",
                "open_document",
                "fs_read",
                "read_text_file",
                "file_read",
                "load_file",
            ],
            Cap::WriteFile => &[
                "write_file",
                "save_file",
                "fs_write",
                "put_file",
                "create_file",
                "write_text",
            ],
            Cap::ListDir => &[
                "list_dir",
                "ls",
                "list_directory",
                "fs_list",
                "browse_folder",
                "list_files",
            ],
            Cap::Search => &[
                "search_docs",
                "search",
                "find_documents",
                "kb_search",
                "query_docs",
                "grep_docs",
            ],
            Cap::FetchUrl => &[
                "fetch_url",
                "http_get",
                "browse",
                "download",
                "web_fetch",
                "get_page",
                "read_url",
            ],
            Cap::HttpPost => &[
                "http_post",
                "webhook_send",
                "upload",
                "post_json",
                "send_request",
                "api_call",
            ],
            Cap::SendEmail => &[
                "send_email",
                "mail_send",
                "notify_email",
                "email_send",
                "compose_mail",
            ],
            Cap::ListInbox => &[
                "list_emails",
                "inbox_list",
                "get_messages",
                "read_inbox",
                "fetch_mail",
            ],
            Cap::RunQuery => &["run_query", "sql_query", "execute_sql", "db_query", "query"],
            Cap::DescribeTable => &["describe_table", "get_schema", "table_info", "list_columns"],
            Cap::RunShell => &[
                "run_shell",
                "exec",
                "bash",
                "run_command",
                "shell_exec",
                "terminal",
            ],
            Cap::CreateNote => &["create_note", "add_note", "note_write", "save_memo"],
            Cap::PostMessage => &["post_message", "slack_post", "chat_send", "send_message"],
            Cap::CreateTicket => &["create_ticket", "jira_create", "open_issue", "file_bug"],
            Cap::Forecast => &[
                "get_forecast",
                "weather_lookup",
                "forecast",
                "current_weather",
            ],
            Cap::Translate => &["translate_text", "translate", "localize", "deepl_translate"],
            Cap::SubmitMaml => &[
                "submit_document",
                "maml_submit",
                "publish_maml",
                "register_document",
            ],
            Cap::GetMaml => &["get_document", "maml_get", "fetch_workflow", "load_maml"],
            Cap::RunWorkflow => &[
                "run_workflow",
                "maml_execute",
                "execute_workflow",
                "start_run",
            ],
        }
    }

    /// Argument key alternatives, one list per positional slot.
    fn key_slots(self) -> &'static [&'static [&'static str]] {
        match self {
            Cap::ReadFile => &[&["path", "file_path", "filename", "uri"]],
            Cap::WriteFile => &[
                &["path", "file_path", "target"],
                &["content", "text", "data"],
            ],
            Cap::ListDir => &[&["path", "dir", "directory", "folder"]],
            Cap::Search => &[&["query", "q", "text"], &["limit", "top_k", "max_results"]],
            Cap::FetchUrl => &[&["url", "uri", "href"]],
            Cap::HttpPost => &[&["url", "endpoint", "target"], &["body", "payload", "data"]],
            Cap::SendEmail => &[
                &["to", "recipient"],
                &["subject"],
                &["body", "text", "message"],
            ],
            Cap::ListInbox => &[&["folder", "mailbox"], &["limit", "count"]],
            Cap::RunQuery => &[&["sql", "query", "statement"]],
            Cap::DescribeTable => &[&["table", "table_name"]],
            Cap::RunShell => &[&["command", "cmd", "script"]],
            Cap::CreateNote => &[&["title"], &["body", "content", "text"]],
            Cap::PostMessage => &[&["channel", "room"], &["text", "message"]],
            Cap::CreateTicket => &[
                &["project"],
                &["summary", "title"],
                &["description", "details"],
            ],
            Cap::Forecast => &[&["city", "location", "place"]],
            Cap::Translate => &[&["text", "source_text"], &["target_lang", "to"]],
            Cap::SubmitMaml => &[&["document", "maml", "content"]],
            Cap::GetMaml => &[&["id", "doc_id", "urn"]],
            Cap::RunWorkflow => &[&["id", "workflow_id", "doc_id"]],
        }
    }

    fn describe(self, r: &mut R) -> String {
        let opts: &[&str] = match self {
            Cap::ReadFile => &[
                "Read a file and return its text.",
                "Returns the contents of a file inside the allowed roots.",
                "Open a document by path.",
                "Read UTF-8 text from the workspace.",
            ],
            Cap::WriteFile => &[
                "Write text to a file, replacing it.",
                "Create or overwrite a file in the workspace.",
                "Save content to a path.",
            ],
            Cap::ListDir => &[
                "List the entries of a directory.",
                "Show files and folders under a path.",
                "Directory listing (name, size, mtime).",
            ],
            Cap::Search => &[
                "Full-text search over the knowledge base.",
                "Search indexed documents.",
                "Find documents matching a query.",
            ],
            Cap::FetchUrl => &[
                "Fetch a URL and return the page as text.",
                "HTTP GET a web page and convert it to markdown.",
                "Download a resource from the web.",
            ],
            Cap::HttpPost => &[
                "POST a JSON or text body to a URL.",
                "Send data to a webhook endpoint.",
                "Upload a payload to an HTTP endpoint.",
            ],
            Cap::SendEmail => &[
                "Send an email from the user's account.",
                "Compose and send a message.",
                "Email someone.",
            ],
            Cap::ListInbox => &[
                "List recent messages in a mailbox folder.",
                "Return the latest emails.",
                "Read the inbox.",
            ],
            Cap::RunQuery => &[
                "Run a read-only SQL query.",
                "Execute SQL against the analytics warehouse.",
                "Query the database.",
            ],
            Cap::DescribeTable => &[
                "Describe the columns of a table.",
                "Return a table's schema.",
                "Column names and types for a table.",
            ],
            Cap::RunShell => &[
                "Run a shell command in the build sandbox.",
                "Execute a command and return stdout/stderr.",
                "Run a command in the dev container.",
            ],
            Cap::CreateNote => &[
                "Create a note.",
                "Save a short memo.",
                "Add a note to the notebook.",
            ],
            Cap::PostMessage => &[
                "Post a message to a chat channel.",
                "Send a chat message.",
                "Post to a team room.",
            ],
            Cap::CreateTicket => &[
                "Create an issue in the tracker.",
                "Open a ticket.",
                "File a bug report.",
            ],
            Cap::Forecast => &[
                "Weather forecast for a city.",
                "Current conditions and 3-day forecast.",
                "Look up the weather.",
            ],
            Cap::Translate => &[
                "Translate text to another language.",
                "Machine translation.",
                "Translate a snippet.",
            ],
            Cap::SubmitMaml => &[
                "Submit a MAML document (workflow, prompt, dataset) to the hub.",
                "Register a .maml.md document for other agents.",
            ],
            Cap::GetMaml => &[
                "Fetch a MAML document by its urn:uuid id.",
                "Return a stored MAML document with its history.",
            ],
            Cap::RunWorkflow => &[
                "Run a registered MAML workflow on the gateway.",
                "Execute the code blocks of a MAML workflow.",
            ],
        };
        pick(r, opts).to_string()
    }

    pub(crate) fn is_egress(self) -> bool {
        matches!(
            self,
            Cap::FetchUrl | Cap::HttpPost | Cap::SendEmail | Cap::PostMessage
        )
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Tool {
    pub cap: Cap,
    pub name: String,
    pub desc: String,
    pub keys: Vec<&'static str>,
    pub optional_from: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Files,
    Web,
    Mail,
    Db,
    Notes,
    Devbox,
    Docs,
    ThirdParty,
    Chat,
    /// A MAML document hub (only with `SimConfig::maml`).
    Maml,
}

const KINDS_ALWAYS: &[Kind] = &[
    Kind::Files,
    Kind::Web,
    Kind::Mail,
    Kind::Db,
    Kind::Notes,
    Kind::Devbox,
    Kind::Docs,
    Kind::ThirdParty,
    Kind::Chat,
];

#[derive(Clone, Debug)]
pub(crate) struct Server {
    pub id: String,
    pub kind: Kind,
    pub host: String,
    pub localhost: bool,
    pub name: String,
    pub version: String,
    pub env: &'static str,
    pub aud: String,
    pub scopes: String,
    pub gateway: String,
    pub stdio_ok: bool,
    pub schema_style: u8,
    pub tools: Vec<Tool>,
    pub res_scheme: String,
    pub res_count: usize,
    pub prompts: Vec<(&'static str, &'static str)>,
    pub list_changed: bool,
    pub instructions: Option<String>,
}

impl Server {
    pub(crate) fn tool(&self, cap: Cap) -> Option<&Tool> {
        self.tools.iter().find(|t| t.cap == cap)
    }
    pub(crate) fn has(&self, cap: Cap) -> bool {
        self.tool(cap).is_some()
    }
    pub(crate) fn resource_uri(&self, i: usize) -> (String, String) {
        const DEPTS: &[&str] = &[
            "eng", "finance", "hr", "legal", "security", "it", "sales", "ops", "design", "support",
        ];
        const TYPES: &[&str] = &[
            "policy", "runbook", "faq", "minutes", "guide", "spec", "report", "howto",
        ];
        let d = DEPTS[(i * 7 + 3) % DEPTS.len()];
        let t = TYPES[(i * 5 + 1) % TYPES.len()];
        (
            format!("{}{d}/{t}-{i:03}.md", self.res_scheme),
            format!("{d}/{t}-{i:03}"),
        )
    }

    pub(crate) fn tool_def(
        &self,
        t: &Tool,
        desc_override: Option<&str>,
        extra_param: Option<&str>,
    ) -> Value {
        let mut props = serde_json::Map::new();
        let mut required = Vec::new();
        let mut keys: Vec<&str> = t.keys.clone();
        if let Some(p) = extra_param {
            keys.push(p);
        }
        for (i, k) in keys.iter().enumerate() {
            let is_int = matches!(*k, "limit" | "top_k" | "max_results" | "count");
            let ty = if is_int { "integer" } else { "string" };
            let mut p = serde_json::Map::new();
            match self.schema_style {
                0 => {
                    p.insert("title".into(), json!(title_case(k)));
                    p.insert("type".into(), json!(ty));
                    if is_int {
                        p.insert("default".into(), json!(10));
                    }
                }
                1 => {
                    p.insert("type".into(), json!(ty));
                    p.insert(
                        "description".into(),
                        json!(format!("The {}", k.replace('_', " "))),
                    );
                }
                _ => {
                    p.insert("type".into(), json!(ty));
                }
            }
            props.insert((*k).to_string(), Value::Object(p));
            if i < t.optional_from && !is_int {
                required.push(json!(k));
            }
        }
        let mut schema = serde_json::Map::new();
        schema.insert("type".into(), json!("object"));
        schema.insert("properties".into(), Value::Object(props));
        schema.insert("required".into(), Value::Array(required));
        match self.schema_style {
            0 => {
                schema.insert("title".into(), json!(format!("{}Arguments", t.name)));
            }
            1 => {
                schema.insert("additionalProperties".into(), json!(false));
                schema.insert(
                    "$schema".into(),
                    json!("http://json-schema.org/draft-07/schema#"),
                );
            }
            _ => {}
        }
        let mut def = serde_json::Map::new();
        def.insert("name".into(), json!(t.name));
        def.insert(
            "description".into(),
            json!(desc_override.unwrap_or(&t.desc)),
        );
        def.insert("inputSchema".into(), Value::Object(schema));
        if self.schema_style == 2 {
            let ro = !t.cap.is_egress()
                && !matches!(
                    t.cap,
                    Cap::WriteFile | Cap::RunShell | Cap::CreateNote | Cap::CreateTicket
                );
            def.insert(
                "annotations".into(),
                json!({"readOnlyHint": ro, "openWorldHint": t.cap.is_egress()}),
            );
        }
        Value::Object(def)
    }

    pub(crate) fn tools_json(&self) -> Vec<Value> {
        self.tools
            .iter()
            .map(|t| self.tool_def(t, None, None))
            .collect()
    }
}

fn title_case(k: &str) -> String {
    k.split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Clone, Debug)]
pub(crate) struct Client {
    pub name: &'static str,
    pub version: String,
    pub ua: String,
    pub string_ids: bool,
    pub zero_based: bool,
    pub caps: Value,
    pub browser_origin: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct Principal {
    pub sub: String,
    pub email: String,
    pub ip: String,
    pub client: usize,
    pub favs: Vec<usize>,
    pub windows: bool,
    pub user: String,
}

pub(crate) struct World {
    pub corp: &'static str,
    pub iss: String,
    pub servers: Vec<Server>,
    pub principals: Vec<Principal>,
    pub clients: Vec<Client>,
    /// The MAML hub's documents (empty without a hub).
    pub maml_docs: Vec<crate::maml::Doc>,
}

const CLIENT_POOL: &[(&str, &[&str], &str)] = &[
    (
        "claude-code",
        &["2.0.14", "2.1.7", "2.2.0"],
        "claude-code/{v} (external, cli)",
    ),
    (
        "cursor-vscode",
        &["1.7.2", "2.0.1"],
        "Cursor/{v} (darwin arm64)",
    ),
    ("continue", &["1.3.4", "1.4.0"], "continue-vscode/{v}"),
    (
        "mcp-inspector",
        &["0.16.8", "0.18.0"],
        "node-fetch/1.0 mcp-inspector/{v}",
    ),
    ("windsurf", &["1.12.3"], "Windsurf/{v} node"),
    ("zed", &["0.211.4", "0.214.1"], "Zed/{v} (linux; x86_64)"),
    ("goose", &["1.9.0", "1.11.2"], "goose/{v} reqwest/0.12"),
    ("cline", &["3.31.0", "3.34.1"], "Cline/{v} axios/1.12.2"),
    (
        "Visual Studio Code",
        &["1.104.2", "1.106.0"],
        "vscode/{v} copilot-chat",
    ),
    (
        "openai-agents",
        &["0.4.2"],
        "python-httpx/0.28.1 openai-agents/{v}",
    ),
    ("langchain-mcp-adapters", &["0.1.11"], "python-httpx/0.28.1"),
    ("mcp-remote", &["0.1.29"], "mcp-remote/{v} node/22.11.0"),
    (
        "custom-agent",
        &["0.3.0", "1.0.0-rc2"],
        "Go-http-client/2.0",
    ),
];

pub(crate) fn build(seed: u64, sessions: u64) -> World {
    let mut r = crate::sub_rng(seed, &[0xB0B]);
    let corp = pick(
        &mut r,
        &[
            "acme.test",
            "initech.example",
            "globex.example",
            "umbrella.test",
            "hooli.example",
            "contoso.example",
            "northwind.test",
            "vandelay.example",
        ],
    );
    let stem = corp.split('.').next().unwrap_or("corp");
    let iss = match r.random_range(0..5) {
        0 => format!("https://idp.{corp}"),
        1 => format!("https://login.{corp}/oauth2/default"),
        2 => format!("https://{stem}.okta.com"),
        3 => format!("https://auth.{corp}/realms/staff"),
        _ => format!(
            "https://login.microsoftonline.com/{}-{}-4{}-a{}-{}/v2.0",
            hex(&mut r, 8),
            hex(&mut r, 4),
            hex(&mut r, 3),
            hex(&mut r, 3),
            hex(&mut r, 12)
        ),
    };

    // Clients.
    let clients: Vec<Client> = CLIENT_POOL
        .iter()
        .map(|(name, versions, ua)| {
            let v = pick(&mut r, versions).to_string();
            let browser_origin = match *name {
                "mcp-inspector" => Some(format!(
                    "http://localhost:{}",
                    pick(&mut r, &["6274", "6275", "5173"])
                )),
                "Visual Studio Code" => Some(format!("vscode-webview://{}", hex(&mut r, 26))),
                _ => None,
            };
            let caps = match r.random_range(0..4) {
                0 => json!({}),
                1 => json!({"roots": {"listChanged": true}}),
                2 => json!({"roots": {"listChanged": true}, "sampling": {}}),
                _ => json!({"elicitation": {}, "roots": {"listChanged": false}}),
            };
            Client {
                name,
                ua: ua.replace("{v}", &v),
                version: v,
                string_ids: chance(&mut r, 0.2),
                zero_based: chance(&mut r, 0.25),
                caps,
                browser_origin,
            }
        })
        .collect();

    // Servers: every kind at least once, then extras.
    let mut kinds: Vec<Kind> = KINDS_ALWAYS.to_vec();
    kinds.push(Kind::Notes);
    let extra = 3 + (sessions as usize / 400).min(14);
    for _ in 0..extra {
        kinds.push(KINDS_ALWAYS[idx(&mut r, KINDS_ALWAYS.len())]);
    }
    let mut used_ids = std::collections::BTreeSet::new();
    let mut used_ports = std::collections::BTreeSet::new();
    let mut servers = Vec::new();
    for (n, kind) in kinds.into_iter().enumerate() {
        let s = make_server(&mut r, kind, n, corp, &mut used_ids, &mut used_ports);
        servers.push(s);
    }

    // Principals.
    let np = (sessions as usize / 6).clamp(14, 600);
    let mut principals = Vec::with_capacity(np);
    let mut used_subs = std::collections::BTreeSet::new();
    let mut k = 0usize;
    while principals.len() < np {
        k += 1;
        let f = pick(&mut r, fakes::FIRST);
        let l = pick(&mut r, fakes::LAST);
        let (user, email) = match r.random_range(0..5) {
            0 => (f.to_string(), format!("{f}@{corp}")),
            1 | 2 => (format!("{f}.{l}"), format!("{f}.{l}@{corp}")),
            3 => (format!("{}{l}", &f[..1]), format!("{}{l}@{corp}", &f[..1])),
            _ => {
                let svc = format!(
                    "svc-{}-{k}",
                    pick(&mut r, &["ci", "etl", "reporting", "backup", "triage"])
                );
                (svc.clone(), format!("{svc}@{corp}"))
            }
        };
        if !used_subs.insert(email.clone()) {
            continue;
        }
        let sub = match r.random_range(0..10) {
            0..=5 => email.clone(),
            6 | 7 => format!("00u{}", fakes::alnum(&mut r, 17)),
            8 => format!("auth0|{}", hex(&mut r, 24)),
            _ => format!(
                "{}-{}-{}-{}-{}",
                hex(&mut r, 8),
                hex(&mut r, 4),
                hex(&mut r, 4),
                hex(&mut r, 4),
                hex(&mut r, 12)
            ),
        };
        let ip = match r.random_range(0..4) {
            0 | 1 => format!(
                "10.{}.{}.{}",
                r.random_range(0..64),
                r.random_range(0..255),
                r.random_range(2..254)
            ),
            2 => format!(
                "172.{}.{}.{}",
                r.random_range(16..32),
                r.random_range(0..255),
                r.random_range(2..254)
            ),
            _ => format!(
                "192.168.{}.{}",
                r.random_range(0..255),
                r.random_range(2..254)
            ),
        };
        let mut all: Vec<usize> = (0..servers.len()).collect();
        all.shuffle(&mut r);
        let nf = r.random_range(2..5).min(all.len());
        let favs = all[..nf].to_vec();
        principals.push(Principal {
            sub,
            email,
            ip,
            client: idx(&mut r, clients.len()),
            favs,
            windows: chance(&mut r, 0.2),
            user,
        });
    }

    World {
        corp,
        iss,
        servers,
        principals,
        clients,
        maml_docs: Vec::new(),
    }
}

/// Adds a MAML hub to the estate (its own RNG stream, so the rest of the
/// world is the same with or without it) and makes it a favourite of a
/// share of the principals.
pub(crate) fn add_maml_hub(w: &mut World, seed: u64) {
    let mut r = crate::sub_rng(seed, &[0x3A31]);
    let mut used_ids: std::collections::BTreeSet<String> =
        w.servers.iter().map(|s| s.id.clone()).collect();
    let mut used_ports = std::collections::BTreeSet::new();
    let n = w.servers.len();
    let mut hub = make_server(
        &mut r,
        Kind::Maml,
        n,
        w.corp,
        &mut used_ids,
        &mut used_ports,
    );
    hub.res_scheme = "maml://hub/".into();
    w.servers.push(hub);
    w.maml_docs = crate::maml::pool(seed);
    for p in &mut w.principals {
        if chance(&mut r, 0.35) {
            p.favs.push(n);
        }
    }
}

fn make_server(
    r: &mut R,
    kind: Kind,
    n: usize,
    corp: &str,
    used_ids: &mut std::collections::BTreeSet<String>,
    used_ports: &mut std::collections::BTreeSet<u16>,
) -> Server {
    let (words, names, caps, opt_caps): (&[&str], &[&str], &[Cap], &[Cap]) = match kind {
        Kind::Files => (
            &["files", "fs", "storage", "share"],
            &[
                "filesystem",
                "fs-server",
                "files-mcp",
                "secure-filesystem-server",
            ],
            &[Cap::ReadFile, Cap::WriteFile, Cap::ListDir, Cap::HttpPost],
            &[Cap::Search],
        ),
        Kind::Web => (
            &["web", "browser", "fetch", "http"],
            &["fetch", "web-tools", "browser-bridge", "httpkit"],
            &[Cap::FetchUrl, Cap::HttpPost],
            &[Cap::Search],
        ),
        Kind::Mail => (
            &["mail", "email", "inbox", "smtp"],
            &["mailer", "gmail-bridge", "outlook-mcp", "postbox"],
            &[Cap::ListInbox, Cap::SendEmail],
            &[Cap::Search],
        ),
        Kind::Db => (
            &["db", "warehouse", "sql", "analytics"],
            &["postgres-mcp", "sqlite-explorer", "warehouse", "dbhub"],
            &[Cap::RunQuery, Cap::DescribeTable],
            &[Cap::ListDir],
        ),
        Kind::Notes => (
            &["notes", "memo", "scratch", "local"],
            &[
                "notes-local",
                "obsidian-bridge",
                "memo-server",
                "scratchpad",
            ],
            &[Cap::CreateNote, Cap::Search, Cap::ReadFile],
            &[Cap::ListDir],
        ),
        Kind::Devbox => (
            &["devbox", "build", "sandbox", "shell"],
            &[
                "devbox",
                "desktop-commander",
                "sandbox-runner",
                "buildkite-shell",
            ],
            &[Cap::RunShell, Cap::ReadFile, Cap::ListDir, Cap::HttpPost],
            &[Cap::WriteFile],
        ),
        Kind::Docs => (
            &["docs", "wiki", "kb", "handbook"],
            &["handbook", "confluence-mcp", "kb-server", "docsearch"],
            &[Cap::Search, Cap::ReadFile, Cap::ListDir],
            &[Cap::CreateTicket],
        ),
        Kind::ThirdParty => (
            &["weather", "translate", "travel", "widgets"],
            &["weather-pro", "polyglot", "tripkit", "widgetbox"],
            &[Cap::Forecast, Cap::Translate],
            &[Cap::FetchUrl],
        ),
        Kind::Chat => (
            &["chat", "slack", "teams", "tickets"],
            &["slack-mcp", "teams-bridge", "chatops", "jira-bridge"],
            &[Cap::PostMessage, Cap::CreateTicket],
            &[Cap::Search],
        ),
        Kind::Maml => (
            &["maml", "agents", "orchestrator", "workflows"],
            &[
                "maml-gateway",
                "maml-hub",
                "agent-orchestrator",
                "workflow-hub",
            ],
            &[Cap::SubmitMaml, Cap::GetMaml, Cap::RunWorkflow],
            &[],
        ),
    };
    let word = pick(r, words);
    let env: &'static str = match kind {
        Kind::ThirdParty => "thirdparty",
        Kind::Notes => "dev",
        Kind::Devbox => "build",
        _ => pick(r, &["prod", "prod", "staging", "prod"]),
    };
    let localhost = kind == Kind::Notes;
    let mut port = 0u16;
    if localhost {
        loop {
            port = r.random_range(3001..9990);
            if port != 8931 && used_ports.insert(port) {
                break;
            }
        }
    }
    let region = pick(r, &["eu-1", "us-2", "ap-1", "core", "edge", "int"]);
    let mut id;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let num = n + attempt;
        id = if localhost {
            format!("{word}@{}-laptop-{num}", pick(r, &["dev", "ws", "mbp"]))
        } else {
            match r.random_range(0..4) {
                0 => format!("{word}@{env}-{num}"),
                1 => format!("https://mcp.{corp}/{word}{num}"),
                2 => format!("{word}-{num}.{region}"),
                _ => format!("{word}@{region}-{num}"),
            }
        };
        if used_ids.insert(id.clone()) {
            break;
        }
    }
    let host = if localhost {
        if chance(r, 0.6) {
            format!("localhost:{port}")
        } else {
            format!("127.0.0.1:{port}")
        }
    } else if kind == Kind::ThirdParty {
        format!(
            "mcp.{word}{}.{}",
            pick(r, &["", "hub", "cloud", "api"]),
            pick(r, &["io", "dev", "app", "ai"])
        )
    } else {
        match r.random_range(0..3) {
            0 => format!("{word}.{corp}"),
            1 => format!("mcp-{word}.internal.{corp}"),
            _ => format!("{word}-{n}.svc.{corp}"),
        }
    };
    let mut tools: Vec<Tool> = Vec::new();
    let mut all_caps: Vec<Cap> = caps.to_vec();
    for c in opt_caps {
        if chance(r, 0.5) {
            all_caps.push(*c);
        }
    }
    for cap in all_caps {
        let name = pick(r, cap.synonyms()).to_string();
        if tools.iter().any(|t| t.name == name) {
            continue;
        }
        let slots = cap.key_slots();
        let keys: Vec<&'static str> = slots.iter().map(|alts| pick(r, alts)).collect();
        let optional_from = match cap {
            Cap::Search | Cap::ListInbox => 1,
            _ => keys.len(),
        };
        tools.push(Tool {
            cap,
            name,
            desc: cap.describe(r),
            keys,
            optional_from,
        });
    }
    let res_count = match kind {
        Kind::Docs => r.random_range(70..220),
        Kind::Files | Kind::Notes => r.random_range(5..40),
        _ => 0,
    };
    let res_scheme = match kind {
        Kind::Docs => pick(
            r,
            &[
                "kb://",
                "wiki://space/",
                "confluence://pages/",
                "docs://handbook/",
            ],
        )
        .to_string(),
        Kind::Notes => "note://".to_string(),
        _ => format!("file:///srv/{word}/"),
    };
    let prompts = match r.random_range(0..4) {
        0 => vec![],
        1 => vec![("summarize_topic", "Summarize a topic for a busy reader")],
        2 => vec![
            ("draft_reply", "Draft a polite reply"),
            ("explain_term", "Explain an internal term"),
        ],
        _ => vec![
            ("weekly_digest", "Build a weekly digest"),
            ("triage", "Triage an incoming request"),
            ("outline", "Outline a document"),
        ],
    };
    let gateway = match r.random_range(0..4) {
        0 => "gw-edge-2".to_string(),
        1 => "mcp-gw-eu".to_string(),
        2 => format!("envoy-mcp-{}", r.random_range(1..4)),
        _ => "agentgateway-01".to_string(),
    };
    let instructions = if chance(r, 0.3) {
        Some(format!(
            "Use these tools for {word} tasks. Prefer small requests."
        ))
    } else {
        None
    };
    Server {
        id,
        kind,
        localhost,
        aud: if chance(r, 0.7) {
            format!("https://{host}/mcp")
        } else {
            format!("api://{word}-{n}")
        },
        scopes: format!(
            "{word}:read{}",
            if chance(r, 0.5) {
                format!(" {word}:write")
            } else {
                String::new()
            }
        ),
        host,
        name: pick(r, names).to_string(),
        version: format!(
            "{}.{}.{}",
            r.random_range(0..3),
            r.random_range(0..20),
            r.random_range(0..12)
        ),
        env,
        gateway,
        stdio_ok: matches!(kind, Kind::Files | Kind::Devbox | Kind::Notes | Kind::Db),
        schema_style: r.random_range(0..3),
        tools,
        res_scheme,
        res_count,
        prompts,
        list_changed: chance(r, 0.5),
        instructions,
    }
}
