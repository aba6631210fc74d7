//! Test fixtures: a fresh database per test (SQLite file or PostgreSQL
//! database), real servers on 127.0.0.1:0, real TLS clients, real
//! enrollment.
use futures_util::StreamExt;
use palisade_api::agent::{EnrollRequest, EnrollResponse, StreamMessage};
use palisade_api::ErrorBody;
use palisade_core::{Name, Sha256};
use palisade_server::{Db, Server, ServerConfig};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::{Connection, Executor};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// Run each named `async fn name(backend: Backend)` against both databases,
/// as `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::Backend::Postgres).await
            }
        }
    )*};
}

pub(crate) fn name(s: &str) -> Name {
    Name::parse(s).expect("valid name")
}

pub(crate) fn hash(n: u64) -> Sha256 {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b[31] = 0x5a;
    Sha256::from_bytes(b)
}

/// A fresh, empty database; dropped (PostgreSQL) or deleted (SQLite) at the end.
pub(crate) struct TestDb {
    pub(crate) url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub(crate) async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                // A directory that does not exist yet: the server creates it.
                let url = format!(
                    "sqlite://{}/state/palisade.db?mode=rwc",
                    dir.path().display()
                );
                TestDb {
                    url,
                    _dir: Some(dir),
                    pg: None,
                }
            }
            Backend::Postgres => {
                let base = std::env::var("PALISADE_TEST_POSTGRES").unwrap_or_else(|_| {
                    panic!(
                        "PALISADE_TEST_POSTGRES is not set: the PostgreSQL variant of this test \
                         needs a server. Run `source scripts/postgres.sh` first (it starts the \
                         local cluster and exports the variable)."
                    )
                });
                let db_name = format!("palisade_it_{}", hex::encode(rand::random::<[u8; 6]>()));
                let mut conn = sqlx::PgConnection::connect(&base)
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to PALISADE_TEST_POSTGRES: {e}"));
                conn.execute(format!("CREATE DATABASE {db_name}").as_str())
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                let (prefix, query) = match base.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (base.as_str(), None),
                };
                let root = prefix.rsplit_once('/').map_or(prefix, |(r, _)| r);
                let url = match query {
                    Some(q) => format!("{root}/{db_name}?{q}"),
                    None => format!("{root}/{db_name}"),
                };
                TestDb {
                    url,
                    _dir: None,
                    pg: Some((base, db_name)),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((base, db_name)) = self.pg.take() {
            // Drop is synchronous and may run inside a runtime: use a thread
            // with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await {
                        let sql = format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)");
                        if let Err(e) = conn.execute(sql.as_str()).await {
                            eprintln!("cannot drop test database {db_name}: {e}");
                        }
                        conn.close().await.ok();
                    }
                });
            })
            .join();
        }
    }
}

/// A running replica.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) ca_pem: String,
    pub(crate) ca_fingerprint: Sha256,
    pub(crate) db: Db,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), palisade_server::Error>>>,
}

impl TestServer {
    pub(crate) async fn start(db: &TestDb) -> TestServer {
        TestServer::start_with(db, |_| {}).await
    }

    /// A replica whose test configuration `tweak` changes first.
    pub(crate) async fn start_with(
        db: &TestDb,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            database: db.url.clone(),
            tls_names: vec!["localhost".into(), "127.0.0.1".into()],
            shutdown_grace_secs: 3,
            db_max_connections: 8,
            ..ServerConfig::default()
        };
        tweak(&mut config);
        let server = Server::bind(config).await.expect("server binds");
        let addr = server.local_addr();
        let ca_pem = server.ca_pem().to_owned();
        let ca_fingerprint = server.ca_fingerprint();
        let db = server.db().clone();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            ca_pem,
            ca_fingerprint,
            db,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{}", self.addr.port(), path)
    }

    /// Stop and wait for `serve` to return; returns how long it took.
    pub(crate) async fn stop(mut self) -> Duration {
        let t = Instant::now();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(15), h)
                .await
                .expect("server stops in time")
                .expect("serve task")
                .expect("serve result");
        }
        t.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A TLS client trusting the service CA, optionally with a client identity
/// (PEM certificate + PKCS#8 key).
pub(crate) fn client(ca_pem: &str, identity_pem: Option<&str>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA pem"));
    if let Some(id) = identity_pem {
        b = b.identity(reqwest::Identity::from_pem(id.as_bytes()).expect("identity pem"));
    }
    b.build().expect("client")
}

/// An answer: status and JSON body (Null when empty).
pub(crate) async fn answer(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.bytes().await.expect("body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, value)
}

pub(crate) fn from_value<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("unexpected body ({e}): {v}"))
}

/// Expect an error answer; returns its body.
#[track_caller]
pub(crate) fn expect_error(got: (StatusCode, Value), status: StatusCode) -> ErrorBody {
    assert_eq!(got.0, status, "body: {}", got.1);
    from_value(got.1)
}

/// An admin API client.
pub(crate) struct Admin {
    pub(crate) client: reqwest::Client,
    pub(crate) token: String,
    base: String,
}

impl Admin {
    pub(crate) fn new(server: &TestServer, token: &str) -> Admin {
        Admin {
            client: client(&server.ca_pem, None),
            token: token.to_owned(),
            base: server.url(""),
        }
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        answer(req.send().await.expect("request")).await
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// GET, expecting 200, decoded.
    pub(crate) async fn get_ok<T: DeserializeOwned>(&self, path: &str) -> T {
        let (status, v) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {v}");
        from_value(v)
    }

    /// A request expecting `want`, decoded.
    pub(crate) async fn expect<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Value,
        want: StatusCode,
    ) -> T {
        let (status, v) = self.call(method.clone(), path, Some(body)).await;
        assert_eq!(status, want, "{method} {path}: {v}");
        from_value(v)
    }

    /// PUT, expecting 200, decoded.
    pub(crate) async fn put_ok<T: DeserializeOwned>(&self, path: &str, body: Value) -> T {
        self.expect(Method::PUT, path, body, StatusCode::OK).await
    }

    /// POST, expecting 200, decoded.
    pub(crate) async fn post_ok<T: DeserializeOwned>(&self, path: &str, body: Value) -> T {
        self.expect(Method::POST, path, body, StatusCode::OK).await
    }

    /// Create a rule, expecting 201.
    pub(crate) async fn create_rule(&self, body: Value) -> palisade_api::admin::RuleRecord {
        self.expect(Method::POST, "/api/v1/rules", body, StatusCode::CREATED)
            .await
    }

    /// Create a policy, expecting 201.
    pub(crate) async fn create_policy(&self, name: &str, level: &str) {
        let _: Value = self
            .expect(
                Method::POST,
                "/api/v1/policies",
                serde_json::json!({ "name": name, "level": level }),
                StatusCode::CREATED,
            )
            .await;
    }

    /// Set a file state, expecting success.
    pub(crate) async fn set_state(&self, sha: Sha256, body: Value) {
        let (status, v) = self
            .call(
                Method::PUT,
                &format!("/api/v1/files/{sha}/state"),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }

    /// A new enrollment token for `policy`.
    pub(crate) async fn enroll_token(&self, policy: &str, max_uses: u32) -> String {
        let (status, v) = self
            .call(
                Method::POST,
                "/api/v1/enrollment-tokens",
                Some(serde_json::json!({ "policy": policy, "max_uses": max_uses })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["token"].as_str().expect("token").to_owned()
    }
}

/// An enrolled agent.
pub(crate) struct Agent {
    pub(crate) client: reqwest::Client,
    pub(crate) name: String,
    pub(crate) id: i64,
    pub(crate) identity_pem: String,
    base: String,
}

/// A fresh key pair and its CSR (PEM).
pub(crate) fn key_and_csr() -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("csr pem");
    (key, csr)
}

/// `POST /agent/v1/enroll` without a client certificate.
pub(crate) async fn enroll_raw(server: &TestServer, body: Value) -> (StatusCode, Value) {
    let c = client(&server.ca_pem, None);
    answer(
        c.post(server.url("/agent/v1/enroll"))
            .json(&body)
            .send()
            .await
            .expect("enroll request"),
    )
    .await
}

/// Enroll a computer; panics on refusal.
pub(crate) async fn enroll(server: &TestServer, token: &str, hostname: &str) -> Agent {
    try_enroll(server, token, hostname)
        .await
        .unwrap_or_else(|(s, e)| panic!("enrollment refused: {s} {e:?}"))
}

pub(crate) async fn try_enroll(
    server: &TestServer,
    token: &str,
    hostname: &str,
) -> Result<Agent, (StatusCode, ErrorBody)> {
    let (key, csr_pem) = key_and_csr();
    let req = EnrollRequest {
        token: token.to_owned(),
        hostname: hostname.to_owned(),
        os: "Debian GNU/Linux 12 (bookworm)".to_owned(),
        agent_version: "0.0.0-test".to_owned(),
        csr_pem,
    };
    let (status, v) = enroll_raw(server, serde_json::to_value(&req).expect("json")).await;
    if status != StatusCode::OK {
        return Err((status, from_value(v)));
    }
    let resp: EnrollResponse = from_value(v);
    assert_eq!(resp.ca_pem, server.ca_pem);
    let identity_pem = format!("{}\n{}", resp.certificate_pem, key.serialize_pem());
    Ok(Agent::new(
        server,
        &identity_pem,
        resp.computer,
        resp.computer_id.0,
    ))
}

impl Agent {
    /// A client for `server` with this agent's identity (any replica).
    pub(crate) fn new(server: &TestServer, identity_pem: &str, name: String, id: i64) -> Agent {
        Agent {
            client: client(&server.ca_pem, Some(identity_pem)),
            name,
            id,
            identity_pem: identity_pem.to_owned(),
            base: server.url(""),
        }
    }

    /// The same agent talking to another replica.
    pub(crate) fn on(&self, server: &TestServer) -> Agent {
        Agent::new(server, &self.identity_pem, self.name.clone(), self.id)
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        answer(req.send().await.expect("request")).await
    }

    pub(crate) async fn post_ok<T: DeserializeOwned>(&self, path: &str, body: Value) -> T {
        let (status, v) = self.call(Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {v}");
        from_value(v)
    }

    pub(crate) async fn get_ok<T: DeserializeOwned>(&self, path: &str) -> T {
        let (status, v) = self.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {v}");
        from_value(v)
    }

    /// Look up hashes (no context).
    pub(crate) async fn lookup(&self, hashes: &[Sha256]) -> palisade_api::agent::LookupResponse {
        let files: Vec<Value> = hashes
            .iter()
            .map(|h| serde_json::json!({ "sha256": h }))
            .collect();
        self.post_ok("/agent/v1/lookup", serde_json::json!({ "files": files }))
            .await
    }

    /// Look up items given as JSON (path, operation, publisher...).
    pub(crate) async fn lookup_items(
        &self,
        files: Vec<Value>,
    ) -> palisade_api::agent::LookupResponse {
        self.post_ok("/agent/v1/lookup", serde_json::json!({ "files": files }))
            .await
    }

    /// `GET /agent/v1/config`.
    pub(crate) async fn config(&self) -> palisade_api::agent::AgentConfig {
        self.get_ok("/agent/v1/config").await
    }

    /// Open the stream and read its `Hello`.
    pub(crate) async fn stream_hello(&self) -> (StreamReader, palisade_api::agent::AgentConfig) {
        let mut s = self.stream().await;
        match s.next(Duration::from_secs(5)).await {
            Next::Msg(StreamMessage::Hello { config, .. }) => (s, config),
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    /// Open the NDJSON stream.
    pub(crate) async fn stream(&self) -> StreamReader {
        let resp = self
            .client
            .get(format!("{}/agent/v1/stream", self.base))
            .send()
            .await
            .expect("stream request");
        assert_eq!(resp.status(), StatusCode::OK);
        StreamReader {
            body: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
        }
    }
}

type ByteStream = Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// Reads `StreamMessage` lines.
pub(crate) struct StreamReader {
    body: ByteStream,
    buf: Vec<u8>,
}

/// What reading the stream produced.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Next {
    Msg(StreamMessage),
    Eof,
    Timeout,
}

impl StreamReader {
    pub(crate) async fn next(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let msg: StreamMessage = serde_json::from_slice(&line[..line.len() - 1])
                    .unwrap_or_else(|e| {
                        panic!("bad stream line ({e}): {}", String::from_utf8_lossy(&line))
                    });
                return Next::Msg(msg);
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Next::Timeout,
                Ok(None) | Ok(Some(Err(_))) => return Next::Eof,
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
            }
        }
    }

    /// The next message that is not a heartbeat; panics on EOF or timeout.
    pub(crate) async fn next_change(&mut self, within: Duration) -> palisade_api::agent::Changes {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Next::Msg(StreamMessage::Heartbeat { .. }) => continue,
                Next::Msg(StreamMessage::Changed(c)) => return c,
                other => panic!("expected a Changed message within {within:?}, got {other:?}"),
            }
        }
    }

    /// Expect no `Changed` message within `within` (heartbeats allowed).
    pub(crate) async fn expect_quiet(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Next::Timeout => return,
                Next::Msg(StreamMessage::Heartbeat { .. }) => continue,
                other => panic!("expected no change within {within:?}, got {other:?}"),
            }
        }
    }

    /// Expect the stream to end within `within` (heartbeats allowed).
    pub(crate) async fn expect_eof(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Next::Eof => return,
                Next::Msg(StreamMessage::Heartbeat { .. } | StreamMessage::Changed(_)) => continue,
                other => panic!("expected the stream to end within {within:?}, got {other:?}"),
            }
        }
    }
}

/// A database, a server on it, and the `acme` organization with admin `alice`.
/// The server's configuration is the default one but for its address,
/// names, pool and grace (so alerts reach public addresses only).
pub(crate) struct Env {
    pub(crate) server: TestServer,
    pub(crate) admin: Admin,
    pub(crate) db: TestDb,
}

impl Env {
    pub(crate) async fn new(backend: Backend) -> Env {
        Env::new_with(backend, |_| {}).await
    }

    /// [`Env::new`] with a server configuration `tweak` changes.
    pub(crate) async fn new_with(backend: Backend, tweak: impl FnOnce(&mut ServerConfig)) -> Env {
        let db = TestDb::new(backend).await;
        let server = TestServer::start_with(&db, tweak).await;
        let boot = palisade_server::bootstrap(&server.db, &name("acme"), &name("alice"))
            .await
            .expect("bootstrap");
        let token = boot.admin_token.expect("fresh admin token");
        let admin = Admin::new(&server, &token);
        Env { server, admin, db }
    }

    /// Another organization, bootstrapped with its first admin.
    pub(crate) async fn org_admin(&self, org: &str, admin: &str) -> Admin {
        let token = palisade_server::bootstrap(&self.server.db, &name(org), &name(admin))
            .await
            .expect("bootstrap")
            .admin_token
            .expect("fresh admin token");
        Admin::new(&self.server, &token)
    }

    /// Enroll a computer into `policy` with a fresh one-use token.
    pub(crate) async fn agent(&self, policy: &str, hostname: &str) -> Agent {
        let token = self.admin.enroll_token(policy, 1).await;
        enroll(&self.server, &token, hostname).await
    }
}

/// Poll `check` every 20 ms until it returns `Some`, for at most `within`.
pub(crate) async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A file event as an agent uploads it.
pub(crate) fn event_json(seq: u64, kind: &str, sha: Sha256, path: &str) -> Value {
    serde_json::json!({"seq": seq, "event": {
        "time_ms": 1_700_000_000_000i64 + seq as i64, "kind": kind, "operation": "execute",
        "sha256": sha, "path": path,
        "approval": {"state": "unknown"}, "level": "lockdown",
        "process": {"pid": 1, "uid": 0, "euid": 0, "loginuid": null,
                    "sessionid": null, "exe": null, "ancestors": []},
        "reason": "test"}})
}

/// Now in milliseconds since the epoch (a time written into the database
/// for a back-off of whole seconds must not be truncated to the second).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Median and 95th percentile of durations, in microseconds.
pub(crate) fn percentiles(mut d: Vec<Duration>) -> (u128, u128) {
    d.sort();
    let p = |q: f64| d[((d.len() as f64 - 1.0) * q).round() as usize].as_micros();
    (p(0.5), p(0.95))
}

/// Run one SQL statement on the test database behind the server's back
/// (tampering, or changes the API refuses on purpose).
pub(crate) async fn exec_sql(backend: Backend, url: &str, sql: &str) {
    use sqlx::{Connection, Executor};
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
            c.execute(sql).await.expect(sql);
            c.close().await.ok();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.expect("postgres");
            c.execute(sql).await.expect(sql);
            c.close().await.ok();
        }
    }
}

/// Run one query returning one integer column on the test database, behind
/// the server's back.
pub(crate) async fn query_i64s(backend: Backend, url: &str, sql: &str) -> Vec<i64> {
    use sqlx::Connection;
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
            let v = sqlx::query_scalar(sql).fetch_all(&mut c).await.expect(sql);
            c.close().await.ok();
            v
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.expect("postgres");
            let v = sqlx::query_scalar(sql).fetch_all(&mut c).await.expect(sql);
            c.close().await.ok();
            v
        }
    }
}
