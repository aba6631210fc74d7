//! The OpenAPI document: served, and every operation in it is a real,
//! protected route.
use crate::support::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[tokio::test]
async fn every_documented_operation_is_routed_and_protected() {
    let env = Env::new(Backend::Sqlite).await;
    let client = client(&env.server.ca_pem, None);
    let doc: Value = client
        .get(env.server.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    // The copy in docs/ is the served document (regenerate with
    // PALISADE_UPDATE_OPENAPI=1).
    let copy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let pretty = serde_json::to_string_pretty(&doc).expect("JSON") + "\n";
    if std::env::var_os("PALISADE_UPDATE_OPENAPI").is_some() {
        std::fs::write(&copy, &pretty).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(&copy).unwrap_or_default();
    assert!(
        committed == pretty,
        "docs/openapi.json differs from the served document: rerun this test with PALISADE_UPDATE_OPENAPI=1"
    );
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 30, "{} paths", paths.len());
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            operations += 1;
            assert!(op["responses"].is_object(), "{method} {path}");
            let concrete = path
                .replace("{sha256}", &"ab".repeat(32))
                .replace("{name}", "x")
                .replace("{id}", "999999");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let (status, body) = answer(
                client
                    .request(method.clone(), env.server.url(&concrete))
                    .send()
                    .await
                    .expect("request"),
            )
            .await;
            let want = if path == "/api/v1/health" {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            };
            assert_eq!(status, want, "{method} {path}: {body}");
            // And with a token, the route answers (never 404 "no such
            // endpoint" or 405).
            let (status, body) = env.admin.call(method.clone(), &concrete, None).await;
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED
                    && !body["error"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("no such endpoint"),
                "{method} {path}: {status} {body}"
            );
        }
    }
    assert!(operations >= 40, "{operations} operations");
}
