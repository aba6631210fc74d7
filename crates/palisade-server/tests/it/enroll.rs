//! Enrollment and agent authentication.
use crate::both_backends;
use crate::support::*;
use palisade_api::access::AuditPage;
use palisade_api::admin::{EnrollTokenCreated, EnrollTokenInfo};
use palisade_api::agent::AgentConfig;
use palisade_api::EnrollToken;
use palisade_core::{Level, Sha256};
use reqwest::{Method, StatusCode};
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use sha2::Digest;
use std::time::Duration;

both_backends!(
    enrollment,
    agent_authentication,
    client_certificates_are_renewed_by_their_agent,
    bootstrap_is_idempotent,
    enrollment_tokens_are_listed_and_revoked,
    unusable_tokens_are_refused_without_the_write_lock
);

async fn enrollment(backend: Backend) {
    let env = Env::new(backend).await;
    let token = env.admin.enroll_token("default", 1).await;
    let parsed: EnrollToken = token.parse().expect("token parses");

    // A new agent fetches the CA without trusting anything yet, then pins it
    // to the fingerprint in its token.
    let insecure = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let pem = insecure
        .get(env.server.url("/agent/v1/ca"))
        .send()
        .await
        .expect("GET ca")
        .text()
        .await
        .expect("ca text");
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("CA PEM");
    let fp = Sha256::from_bytes(sha2::Sha256::digest(&der).into());
    assert_eq!(fp, parsed.ca_fingerprint);
    assert_eq!(fp, env.server.ca_fingerprint);

    // A malformed CSR is refused, naming the field, without consuming the token.
    let (status, v) = enroll_raw(
        &env.server,
        json!({"token": token, "hostname": "web01", "os": "x", "agent_version": "1", "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}),
    )
    .await;
    let e = expect_error((status, v), StatusCode::BAD_REQUEST);
    assert_eq!(e.field.as_deref(), Some("csr_pem"), "{e:?}");

    let agent = enroll(&env.server, &token, "web01").await;
    assert_eq!(agent.name, "web01");
    let config: AgentConfig = agent.get_ok("/agent/v1/config").await;
    assert_eq!(config.computer, "web01");
    assert_eq!(config.organization, "acme");
    assert_eq!(config.policy, "default");
    assert_eq!(config.levels.connected, Level::Monitor);

    // One-time: the same token again is refused.
    let (status, e) = try_enroll(&env.server, &token, "web02")
        .await
        .err()
        .expect("refused");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(e.error.contains("already been used"), "{e:?}");
    assert_eq!(e.field.as_deref(), Some("token"));

    // A token the service never issued.
    let wrong = EnrollToken {
        secret: rand::random(),
        ca_fingerprint: env.server.ca_fingerprint,
    };
    let (status, e) = try_enroll(&env.server, &wrong.to_string(), "web03")
        .await
        .err()
        .expect("refused");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(e.error.contains("unknown"), "{e:?}");

    // A token for another service's CA.
    let other_ca = EnrollToken {
        secret: parsed.secret,
        ca_fingerprint: Sha256::from_bytes([7; 32]),
    };
    let (status, e) = try_enroll(&env.server, &other_ca.to_string(), "web03")
        .await
        .err()
        .expect("refused");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(e.error.contains("different"), "{e:?}");

    // Not a token at all.
    let (status, e) = try_enroll(&env.server, "hello", "web03")
        .await
        .err()
        .expect("refused");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(e.field.as_deref(), Some("token"));

    // An expired token.
    let expired = palisade_server::create_enroll_token(
        &env.server.db,
        &name("acme"),
        &name("default"),
        1,
        Duration::ZERO,
    )
    .await
    .expect("token");
    let (status, e) = try_enroll(&env.server, &expired.to_string(), "web03")
        .await
        .err()
        .expect("refused");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(e.error.contains("expired"), "{e:?}");

    // A multi-use token; names are made unique per organization.
    let multi = env.admin.enroll_token("default", 2).await;
    let a = enroll(&env.server, &multi, "web01").await;
    let b = enroll(&env.server, &multi, "web01").await;
    assert_eq!((a.name.as_str(), b.name.as_str()), ("web01-2", "web01-3"));
    assert!(try_enroll(&env.server, &multi, "web01").await.is_err());
    let odd = enroll(
        &env.server,
        &env.admin.enroll_token("default", 1).await,
        "Odd Host!",
    )
    .await;
    assert_eq!(odd.name, "Odd-Host-");

    env.server.stop().await;
}

async fn agent_authentication(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let other = env.agent("default", "web02").await;

    // No client certificate: 401.
    let anon = client(&env.server.ca_pem, None);
    for path in [
        "/agent/v1/config",
        "/agent/v1/changes?since=0",
        "/agent/v1/stream",
    ] {
        let (status, v) = answer(anon.get(env.server.url(path)).send().await.expect("get")).await;
        let e = expect_error((status, v), StatusCode::UNAUTHORIZED);
        assert!(e.error.contains("client certificate"), "{e:?}");
    }
    let (status, _) = answer(
        anon.post(env.server.url("/agent/v1/lookup"))
            .json(&json!({"files": []}))
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A certificate from another CA does not get past TLS.
    let (key, _) = key_and_csr();
    let mut params = rcgen::CertificateParams::new(vec!["rogue".to_owned()]).expect("params");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let rogue_cert = params.self_signed(&key).expect("self-signed");
    let rogue = client(
        &env.server.ca_pem,
        Some(&format!("{}\n{}", rogue_cert.pem(), key.serialize_pem())),
    );
    let r = rogue.get(env.server.url("/agent/v1/config")).send().await;
    assert!(
        r.is_err() || r.as_ref().is_ok_and(|r| r.status().is_client_error()),
        "a foreign client certificate was accepted: {r:?}"
    );

    // Enrolled: 200. Revoked: 403 on the next request, other agents unaffected.
    let _: AgentConfig = agent.get_ok("/agent/v1/config").await;
    let (status, v) = env
        .admin
        .call(
            Method::POST,
            &format!("/api/v1/computers/{}/revoke", agent.name),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["revoked"], true);
    for (method, path, body) in [
        (Method::GET, "/agent/v1/config", None),
        (Method::POST, "/agent/v1/lookup", Some(json!({"files": []}))),
        (Method::GET, "/agent/v1/stream", None),
    ] {
        let e = expect_error(agent.call(method, path, body).await, StatusCode::FORBIDDEN);
        assert!(e.error.contains("revoked"), "{e:?}");
    }
    let _: AgentConfig = other.get_ok("/agent/v1/config").await;

    // Admin API: no token, a wrong token.
    let (status, _) = answer(
        anon.get(env.server.url("/api/v1/computers"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = answer(
        anon.get(env.server.url("/api/v1/computers"))
            .bearer_auth("plta1.00")
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Health needs no token.
    let (status, v) = answer(
        anon.get(env.server.url("/api/v1/health"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v["database"],
        if backend == Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
    env.server.stop().await;
}

async fn bootstrap_is_idempotent(backend: Backend) {
    let db = TestDb::new(backend).await;
    let handle = palisade_server::Db::connect(&db.url)
        .await
        .expect("connect");
    let first = palisade_server::bootstrap(&handle, &name("acme"), &name("alice"))
        .await
        .expect("bootstrap");
    assert!(first.org_created);
    let token = first.admin_token.expect("token");
    let again = palisade_server::bootstrap(&handle, &name("acme"), &name("alice"))
        .await
        .expect("bootstrap again");
    assert_eq!(
        again,
        palisade_server::Bootstrap {
            org_created: false,
            admin_token: None
        }
    );
    let second = palisade_server::create_admin_token(&handle, &name("acme"), &name("alice"))
        .await
        .expect("second token");
    assert_ne!(token, second);
    let err = palisade_server::create_admin_token(&handle, &name("nope"), &name("alice"))
        .await
        .expect_err("unknown org");
    assert_eq!(err.kind(), palisade_server::ErrorKind::NotFound);
    palisade_server::set_policy_levels(
        &handle,
        &name("acme"),
        &name("default"),
        palisade_core::Levels {
            connected: Level::Lockdown,
            disconnected: Level::Monitor,
        },
    )
    .await
    .expect("levels");
    let enroll_token = palisade_server::create_enroll_token(
        &handle,
        &name("acme"),
        &name("default"),
        1,
        Duration::from_secs(60),
    )
    .await
    .expect("enroll token");
    let ca = palisade_server::ca_certificate(&handle).await.expect("ca");
    assert_eq!(enroll_token.ca_fingerprint, ca.fingerprint);
    handle.close().await;

    // A server over the same database uses the same CA, and both tokens work.
    let server = TestServer::start(&db).await;
    assert_eq!(server.ca_fingerprint, ca.fingerprint);
    for t in [&token, &second] {
        let admin = Admin::new(&server, t);
        let who: palisade_api::admin::WhoAmI = admin.get_ok("/api/v1/whoami").await;
        assert_eq!(
            (who.admin.as_str(), who.organization.as_str()),
            ("alice", "acme")
        );
    }
    let agent = enroll(&server, &enroll_token.to_string(), "db01").await;
    let config: AgentConfig = agent.get_ok("/agent/v1/config").await;
    assert_eq!(config.levels.connected, Level::Lockdown);
    server.stop().await;
}

/// A leaked enrollment token must stop enrolling before it expires: tokens
/// that may still enroll are listed (never their secret) and revoked by id;
/// the computers one enrolled stay, and the revocation is audited.
async fn enrollment_tokens_are_listed_and_revoked(backend: Backend) {
    let env = Env::new(backend).await;
    let mut made: Vec<EnrollTokenCreated> = Vec::new();
    for uses in [3, 1] {
        made.push(
            env.admin
                .expect(
                    Method::POST,
                    "/api/v1/enrollment-tokens",
                    json!({"policy": "default", "max_uses": uses}),
                    StatusCode::CREATED,
                )
                .await,
        );
    }
    let (leaked, other) = (&made[0], &made[1]);
    let agent = enroll(&env.server, &leaked.token, "web01").await;
    let listed: Vec<EnrollTokenInfo> = env.admin.get_ok("/api/v1/enrollment-tokens").await;
    let seen: Vec<(i64, i64, i64)> = listed
        .iter()
        .map(|t| (t.id, t.max_uses, t.uses_left))
        .collect();
    assert_eq!(seen, vec![(other.id, 1, 1), (leaked.id, 3, 2)]);
    assert!(
        listed
            .iter()
            .all(|t| t.policy == "default" && t.created_by == "alice"),
        "{listed:?}"
    );
    assert!(!serde_json::to_string(&listed)
        .unwrap()
        .contains(&leaked.token));

    let path = format!("/api/v1/enrollment-tokens/{}", leaked.id);
    // Another organization's admin neither sees nor revokes it.
    let stranger = env.org_admin("globex", "gus").await;
    let theirs: Vec<EnrollTokenInfo> = stranger.get_ok("/api/v1/enrollment-tokens").await;
    assert!(theirs.is_empty(), "{theirs:?}");
    let (status, v) = stranger.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = env.admin.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let (status, e) = try_enroll(&env.server, &leaked.token, "web02")
        .await
        .err()
        .expect("a revoked token enrolls nothing");
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{e:?}");
    let listed: Vec<EnrollTokenInfo> = env.admin.get_ok("/api/v1/enrollment-tokens").await;
    assert_eq!(
        listed.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![other.id]
    );
    let _: AgentConfig = agent.get_ok("/agent/v1/config").await;
    // Used up, it is no longer listed.
    enroll(&env.server, &other.token, "web03").await;
    let listed: Vec<EnrollTokenInfo> = env.admin.get_ok("/api/v1/enrollment-tokens").await;
    assert!(listed.is_empty(), "{listed:?}");

    let (status, v) = env.admin.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = env
        .admin
        .call(Method::DELETE, "/api/v1/enrollment-tokens/x", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let page: AuditPage = env.admin.get_ok("/api/v1/audit").await;
    let object = format!("enrollment token {}", leaked.id);
    assert!(
        page.records
            .iter()
            .any(|r| r.object == object && r.outcome == "allowed"),
        "{:#?}",
        page.records
    );
    env.server.stop().await;
}

/// An agent renews its client certificate with the one it has (it expires
/// a year after enrollment; before, nothing renewed it and every agent was
/// cut off on its first anniversary). The new one is valid beside the old
/// until its first use, then alone: an agent that lost the answer keeps
/// the certificate it has. A revoked computer renews nothing.
async fn client_certificates_are_renewed_by_their_agent(backend: Backend) {
    let env = Env::new(backend).await;
    let old = env.agent("default", "web01").await;
    let other = env.agent("default", "web02").await;
    async fn renew(agent: &Agent) -> (StatusCode, serde_json::Value, rcgen::KeyPair) {
        let (key, csr_pem) = key_and_csr();
        let (status, v) = agent
            .call(
                Method::POST,
                "/agent/v1/renew",
                Some(json!({ "csr_pem": csr_pem })),
            )
            .await;
        (status, v, key)
    }
    let (status, v, key) = renew(&old).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let cert = v["certificate_pem"]
        .as_str()
        .expect("certificate")
        .to_owned();
    let new = Agent::new(
        &env.server,
        &format!("{cert}\n{}", key.serialize_pem()),
        old.name.clone(),
        old.id,
    );
    // Both until the new one is used; the name is the computer's.
    let c: AgentConfig = old.get_ok("/agent/v1/config").await;
    assert_eq!(c.computer, "web01");
    let c: AgentConfig = new.get_ok("/agent/v1/config").await;
    assert_eq!(c.computer, "web01");
    let e = expect_error(
        old.call(Method::GET, "/agent/v1/config", None).await,
        StatusCode::FORBIDDEN,
    );
    assert!(e.error.contains("does not belong"), "{e:?}");
    let _: AgentConfig = new.get_ok("/agent/v1/config").await;
    // A renewal whose answer is lost: the certificate in use stays valid.
    let (status, _, _) = renew(&new).await;
    assert_eq!(status, StatusCode::OK);
    let _: AgentConfig = new.get_ok("/agent/v1/config").await;
    // Another computer is not touched; a malformed request names its field.
    let _: AgentConfig = other.get_ok("/agent/v1/config").await;
    let e = expect_error(
        new.call(
            Method::POST,
            "/agent/v1/renew",
            Some(json!({ "csr_pem": "not a CSR" })),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(e.field.as_deref(), Some("csr_pem"), "{e:?}");
    // No certificate, no renewal.
    let anon = client(&env.server.ca_pem, None);
    let (status, _) = answer(
        anon.post(env.server.url("/agent/v1/renew"))
            .json(&json!({ "csr_pem": key_and_csr().1 }))
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Revoked: neither certificate renews or works.
    let (status, v) = env
        .admin
        .call(Method::POST, "/api/v1/computers/web01/revoke", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _, _) = renew(&new).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let e = expect_error(
        new.call(Method::GET, "/agent/v1/config", None).await,
        StatusCode::FORBIDDEN,
    );
    assert!(e.error.contains("revoked"), "{e:?}");
}

/// Regression: enrollment (no authentication) opened a write transaction
/// (on SQLite, the one write lock every writer queues on) before finding
/// out whether the token existed, so a flood of made-up secrets queued all
/// writers behind it. A token that cannot be used is now refused from a
/// read: here answered while another connection holds the write lock
/// (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: the token table locked against
/// updates), which the old code waited for (10 s busy timeout, then 500; on
/// PostgreSQL until the lock went).
async fn unusable_tokens_are_refused_without_the_write_lock(backend: Backend) {
    use sqlx::{Connection, Executor};
    let env = Env::new(backend).await;
    let used = env.admin.enroll_token("default", 1).await;
    enroll(&env.server, &used, "web01").await;
    let fresh = env.admin.enroll_token("default", 1).await;

    enum Holder {
        Sqlite(sqlx::SqliteConnection),
        Postgres(sqlx::PgConnection),
    }
    let holder = match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&env.db.url)
                .await
                .expect("sqlite");
            c.execute("BEGIN IMMEDIATE").await.expect("write lock");
            Holder::Sqlite(c)
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&env.db.url)
                .await
                .expect("postgres");
            c.execute("BEGIN").await.expect("begin");
            c.execute("LOCK TABLE enroll_tokens IN EXCLUSIVE MODE")
                .await
                .expect("lock");
            Holder::Postgres(c)
        }
    };
    let made_up = EnrollToken {
        secret: rand::random(),
        ca_fingerprint: env.server.ca_fingerprint,
    }
    .to_string();
    for (token, says) in [
        (made_up.as_str(), "unknown enrollment token"),
        (used.as_str(), "already been used"),
    ] {
        let t = std::time::Instant::now();
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            try_enroll(&env.server, token, "web02"),
        )
        .await
        .expect("answered while the write lock is held");
        let (status, e) = got.err().expect("refused");
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{e:?}");
        assert!(e.error.contains(says), "{e:?}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
    }
    match holder {
        Holder::Sqlite(mut c) => {
            c.execute("ROLLBACK").await.expect("rollback");
            c.close().await.ok();
        }
        Holder::Postgres(mut c) => {
            c.execute("ROLLBACK").await.expect("rollback");
            c.close().await.ok();
        }
    }
    // A usable token still enrolls.
    assert_eq!(enroll(&env.server, &fresh, "web02").await.name, "web02");
    env.server.stop().await;
}
