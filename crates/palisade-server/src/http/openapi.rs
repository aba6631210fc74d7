//! The admin API's OpenAPI 3.1 document, served at
//! `GET /api/v1/openapi.json` without authentication (it holds no data).
//!
//! Paths and operations come from [`OPERATIONS`]; request and response
//! schemas are generated from the `palisade-api` types themselves
//! (`schemars`, which follows their serde attributes), so the document
//! cannot describe a body the server would parse differently. Each
//! operation also states the permission it needs, from
//! [`super::access::route_permission`], the same table that authorizes it.
//! The server's tests check that every operation here is routed and has a
//! permission.
use super::access::{route_permission, Need};
use axum::http::header;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use palisade_api::access as acc;
use palisade_api::admin as adm;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// One operation: method, path, summary, the request body's schema, the
/// success status and the response body's schema.
pub(crate) struct Operation {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    summary: &'static str,
    request: Option<fn(&mut SchemaGenerator) -> Schema>,
    status: u16,
    response: Option<fn(&mut SchemaGenerator) -> Schema>,
    query: &'static [(&'static str, &'static str, &'static str)],
}

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

macro_rules! op {
    ($m:literal, $p:literal, $s:literal, $req:ty, $st:literal, $resp:ty) => {
        op!(
            $m,
            $p,
            $s,
            Some(schema::<$req>),
            $st,
            Some(schema::<$resp>),
            &[]
        )
    };
    ($m:literal, $p:literal, $s:literal, -, $st:literal, $resp:ty) => {
        op!($m, $p, $s, None, $st, Some(schema::<$resp>), &[])
    };
    ($m:literal, $p:literal, $s:literal, -, $st:literal, $resp:ty, $q:expr) => {
        op!($m, $p, $s, None, $st, Some(schema::<$resp>), $q)
    };
    ($m:literal, $p:literal, $s:literal, $req:expr, $st:literal, $resp:expr, $q:expr) => {
        Operation {
            method: $m,
            path: $p,
            summary: $s,
            request: $req,
            status: $st,
            response: $resp,
            query: $q,
        }
    };
}

/// Every admin API operation.
pub(crate) const OPERATIONS: &[Operation] = &[
    op!("GET", "/api/v1/health", "Liveness and database reachability", -, 200, adm::Health),
    op!("GET", "/api/v1/whoami", "The caller's admin name and organization", -, 200, adm::WhoAmI),
    op!("GET", "/api/v1/me", "The caller's account: second factor, recovery codes, session", -, 200, acc::Me),
    op!("POST", "/api/v1/me/totp", "Begin TOTP enrollment (secret, otpauth URI, QR code)", -, 200, acc::TotpEnrollment),
    op!(
        "POST",
        "/api/v1/me/totp/confirm",
        "Confirm TOTP enrollment with a code; returns recovery codes",
        acc::ConfirmTotp,
        200,
        acc::RecoveryCodes
    ),
    op!("GET", "/api/v1/files/{sha256}", "A file's story: states, where seen, decision per computer", -, 200, adm::FileDetails),
    op!(
        "PUT",
        "/api/v1/files/{sha256}/state",
        "Approve, ban or unapprove a file (globally, per policy or computer)",
        adm::SetFileState,
        200,
        adm::FileDetails
    ),
    op!("GET", "/api/v1/events", "A page of events, oldest first; with wait_ms, a long poll", -, 200, adm::EventPage,
        &[("after", "integer", "events after this id"), ("limit", "integer", "at most this many (1-1000, default 100)"),
          ("wait_ms", "integer", "wait up to this long for new events"), ("computer", "string", "only this computer's"),
          ("kind", "string", "blocked, would_block, approved or allowed")]),
    op!("GET", "/api/v1/computers", "Computers, their policy, levels and agent status", -, 200, Vec<adm::ComputerInfo>),
    op!(
        "PUT",
        "/api/v1/computers/{name}/policy",
        "Move a computer to another policy",
        adm::MoveComputer,
        200,
        adm::ComputerInfo
    ),
    op!("POST", "/api/v1/computers/{name}/revoke", "Revoke a computer's certificate", -, 200, adm::ComputerInfo),
    op!("GET", "/api/v1/policies", "Policies and their levels", -, 200, Vec<adm::PolicyInfo>),
    op!(
        "POST",
        "/api/v1/policies",
        "Create a policy",
        adm::CreatePolicy,
        201,
        adm::PolicyInfo
    ),
    op!(
        "PUT",
        "/api/v1/policies/{name}/levels",
        "Set a policy's enforcement levels",
        adm::SetLevels,
        200,
        adm::PolicyInfo
    ),
    op!(
        "POST",
        "/api/v1/enrollment-tokens",
        "Create a one-time agent enrollment token",
        adm::CreateEnrollToken,
        201,
        adm::EnrollTokenCreated
    ),
    op!("GET", "/api/v1/enrollment-tokens", "Enrollment tokens that may still enroll a computer", -, 200, Vec<adm::EnrollTokenInfo>),
    op!(
        "DELETE",
        "/api/v1/enrollment-tokens/{id}",
        "Revoke an enrollment token",
        None,
        204,
        None,
        &[]
    ),
    op!("GET", "/api/v1/publishers", "Publishers (package origins) and their states", -, 200, Vec<adm::PublisherInfo>),
    op!(
        "PUT",
        "/api/v1/publishers/{name}/state",
        "Approve or ban a publisher",
        adm::SetPublisherState,
        200,
        adm::PublisherInfo
    ),
    op!(
        "PUT",
        "/api/v1/publishers/{name}/trust",
        "Trust a publisher as an updater",
        adm::SetPublisherTrust,
        200,
        adm::PublisherInfo
    ),
    op!(
        "POST",
        "/api/v1/reputation",
        "Import file reputation scores",
        adm::ReputationBatch,
        200,
        adm::ReputationImported
    ),
    op!("GET", "/api/v1/rules", "Custom rules", -, 200, Vec<adm::RuleRecord>),
    op!(
        "POST",
        "/api/v1/rules",
        "Create a rule",
        adm::CreateRule,
        201,
        adm::RuleRecord
    ),
    op!(
        "DELETE",
        "/api/v1/rules/{id}",
        "Delete a rule",
        None,
        204,
        None,
        &[]
    ),
    op!("GET", "/api/v1/bundles", "Built-in rule bundles", -, 200, Vec<adm::BundleInfo>),
    op!(
        "PUT",
        "/api/v1/bundles/{name}",
        "Enable or disable a bundle",
        adm::SetBundle,
        200,
        adm::BundleInfo
    ),
    op!("GET", "/api/v1/requests", "Approval requests, newest first, a page at a time", -, 200, Vec<adm::ApprovalRequestInfo>,
        &[("status", "string", "pending, granted or denied"),
          ("before", "integer", "requests with an id below this (the last id of the previous page)"),
          ("limit", "integer", "at most this many (1-1000, default 1000)")]),
    op!(
        "POST",
        "/api/v1/requests/{id}/grant",
        "Grant an approval request",
        adm::DecideRequest,
        200,
        adm::ApprovalRequestInfo
    ),
    op!(
        "POST",
        "/api/v1/requests/{id}/deny",
        "Deny an approval request",
        adm::DecideRequest,
        200,
        adm::ApprovalRequestInfo
    ),
    op!("GET", "/api/v1/admins", "Admins and their grants", -, 200, Vec<acc::AdminInfo>),
    op!(
        "POST",
        "/api/v1/admins",
        "Add an admin",
        acc::AddAdmin,
        201,
        acc::AdminInfo
    ),
    op!(
        "POST",
        "/api/v1/admins/{name}/grants",
        "Grant a role (organization or one policy)",
        acc::GrantRef,
        200,
        acc::AdminInfo
    ),
    op!(
        "POST",
        "/api/v1/admins/{name}/revoke",
        "Revoke a grant; ends the admin's sessions and tokens",
        acc::GrantRef,
        200,
        acc::AdminInfo
    ),
    op!("POST", "/api/v1/admins/{name}/disable", "Disable an admin; ends their sessions and tokens", -, 200, acc::AdminInfo),
    op!("POST", "/api/v1/admins/{name}/enable", "Enable an admin", -, 200, acc::AdminInfo),
    op!("POST", "/api/v1/admins/{name}/invite", "A one-time link to set the admin's password", -, 201, acc::Invitation),
    op!("GET", "/api/v1/roles", "Built-in and custom roles", -, 200, Vec<acc::RoleInfo>),
    op!(
        "POST",
        "/api/v1/roles",
        "Create a custom role",
        acc::RoleInfo,
        201,
        acc::RoleInfo
    ),
    op!("GET", "/api/v1/tokens", "The caller's API tokens", -, 200, Vec<acc::TokenInfo>),
    op!(
        "POST",
        "/api/v1/tokens",
        "Create an API token (for the caller or another admin)",
        acc::CreateToken,
        201,
        acc::TokenCreated
    ),
    op!(
        "DELETE",
        "/api/v1/tokens/{id}",
        "Revoke an API token",
        None,
        204,
        None,
        &[]
    ),
    op!("GET", "/api/v1/settings", "Conditional-access settings", -, 200, acc::AccessSettings),
    op!(
        "PUT",
        "/api/v1/settings",
        "Set conditional-access settings",
        acc::AccessSettings,
        200,
        acc::AccessSettings
    ),
    op!("GET", "/api/v1/audit", "Audit records, oldest first", -, 200, acc::AuditPage,
        &[("after", "integer", "records after this sequence number"), ("limit", "integer", "at most this many (default 100, at most 1000)")]),
];

/// The document (built once).
pub(crate) fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    // OpenAPI 3.1 schemas are JSON Schema 2020-12.
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    let mut g = settings.into_generator();
    let error = g.subschema_for::<palisade_api::ErrorBody>();
    let mut paths: Map<String, Value> = Map::new();
    for op in OPERATIONS {
        let method = Method::from_bytes(op.method.as_bytes()).unwrap_or(Method::GET);
        let need = route_permission(&method, op.path);
        let (security, permission) = match need {
            None => (json!([]), "none (public)".to_owned()),
            Some(Need::Org(p)) => (auth(), format!("`{p}` on the organization")),
            Some(Need::Policy(p)) => (auth(), format!("`{p}` on the policy concerned")),
            Some(Need::Reach(p)) => (
                auth(),
                format!(
                    "`{p}` on the organization, or on some policies (the answer is then \
                     limited to their computers)"
                ),
            ),
            Some(Need::Signed) => (auth(), "any active admin".to_owned()),
            Some(Need::Enroll) => (
                auth(),
                "any active admin, even before a required second factor".to_owned(),
            ),
        };
        let mut parameters: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true,
                       "schema": {"type": if name == "id" { "integer" } else { "string" }}})
            })
            .collect();
        parameters.extend(op.query.iter().map(|(name, ty, description)| {
            json!({"name": name, "in": "query", "required": false,
                   "description": description, "schema": {"type": ty}})
        }));
        let mut responses = Map::new();
        let ok = match op.response {
            Some(f) => json!({"description": "success",
                              "content": {"application/json": {"schema": f(&mut g)}}}),
            None => json!({"description": "success, no content"}),
        };
        responses.insert(op.status.to_string(), ok);
        responses.insert(
            "default".into(),
            json!({"description": "an error: 400/422 malformed (with the field), 401 unauthenticated, \
                   403 refused (with the reason), 404 not found in the caller's organization",
                   "content": {"application/json": {"schema": error.clone()}}}),
        );
        let mut operation = json!({
            "summary": op.summary,
            "description": format!("Permission: {permission}."),
            "operationId": operation_id(op),
            "tags": [tag(op.path)],
            "parameters": parameters,
            "responses": responses,
            "security": security,
        });
        if let Some(f) = op.request {
            operation["requestBody"] = json!({"required": true,
                "content": {"application/json": {"schema": f(&mut g)}}});
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method.to_ascii_lowercase()] = operation;
    }
    let schemas: Map<String, Value> = g.take_definitions(true).into_iter().collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Palisade admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every call is authorized from the caller's grants at that moment \
                (Cedar policies over live grants). Authenticate with an API token \
                (`Authorization: Bearer plta...`) or a console session (cookie \
                `__Host-palisade_session`, plus `X-CSRF-Token` on changes).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "__Host-palisade_session"},
            },
        },
    })
}

fn auth() -> Value {
    json!([{"token": []}, {"session": []}])
}

fn tag(path: &str) -> &str {
    path.trim_start_matches("/api/v1/")
        .split('/')
        .next()
        .unwrap_or("api")
}

fn operation_id(op: &Operation) -> String {
    let mut id = op.method.to_ascii_lowercase();
    for seg in op.path.trim_start_matches("/api/v1/").split('/') {
        id.push('_');
        id.push_str(&seg.trim_matches(|c| c == '{' || c == '}').replace('-', "_"));
    }
    id
}

/// `GET /api/v1/openapi.json`.
pub(crate) async fn serve() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document().to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_but_health_has_a_permission() {
        for op in OPERATIONS {
            let method = Method::from_bytes(op.method.as_bytes()).expect("method");
            let need = route_permission(&method, op.path);
            assert_eq!(
                need.is_none(),
                op.path == "/api/v1/health",
                "{} {}",
                op.method,
                op.path
            );
        }
    }

    #[test]
    fn the_document_references_only_defined_schemas() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for (i, _) in text.match_indices("#/components/schemas/") {
            let rest = &text[i + "#/components/schemas/".len()..];
            let name: String = rest.chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "undefined schema {name}");
        }
        assert!(schemas.contains_key("FileDetails"));
        assert!(schemas.contains_key("Sha256"));
    }
}
