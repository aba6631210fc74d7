//! Console sign-in over HTTP: invitations, password and TOTP steps,
//! recovery codes, throttling and lockout, MFA enforcement, conditional
//! access at sign-in, CSRF, and revocation ending a console session and an
//! API token at their next request.
use crate::both_backends;
use crate::support::*;
use palisade_api::access::{
    AdminInfo, AuditPage, Invitation, Me, RecoveryCodes, TokenCreated, TotpEnrollment,
};
use palisade_authn::totp;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;

both_backends!(
    invitation_password_totp_and_recovery_codes,
    wrong_credentials_are_throttled_and_lock_the_account,
    failures_from_one_address_are_limited,
    attempts_sent_at_once_take_turns,
    replicas_share_the_throttle_and_take_turns,
    resetting_your_own_credentials_needs_your_second_factor,
    required_mfa_leaves_only_enrollment,
    sign_in_conditions_and_csrf,
    revocation_ends_console_session_and_token,
    a_lockout_refuses_credentials_while_it_lasts_and_ends_none,
);

/// A browser-like client of the console: keeps cookies, does not follow
/// redirects (the tests look at them).
pub(crate) struct Console {
    client: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

pub(crate) const PASSWORD: &str = "correct horse battery staple";

impl Console {
    pub(crate) fn new(server: &TestServer) -> Console {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).expect("CA pem"),
            )
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Console {
            client,
            base: server.url(""),
            cookies: BTreeMap::new(),
        }
    }

    fn keep_cookies(&mut self, resp: &reqwest::Response) {
        for v in resp.headers().get_all(SET_COOKIE) {
            let text = v.to_str().expect("cookie text");
            let (kv, attrs) = text.split_once(';').unwrap_or((text, ""));
            assert!(
                attrs.contains("HttpOnly") && attrs.contains("Secure"),
                "{text}"
            );
            assert!(attrs.contains("SameSite=Strict"), "{text}");
            let (k, v) = kv.split_once('=').expect("name=value");
            if v.is_empty() || attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Send a console request with this client's cookies, keep the cookies
    /// it sets; returns status, `Location`, body.
    async fn send(&mut self, req: reqwest::RequestBuilder) -> (StatusCode, Option<String>, String) {
        let resp = req
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .expect("request");
        self.keep_cookies(&resp);
        let status = resp.status();
        let location = resp
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().expect("location").to_owned());
        (status, location, resp.text().await.expect("body"))
    }

    /// POST a form; returns status, `Location`, body.
    pub(crate) async fn form(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (StatusCode, Option<String>, String) {
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .form(fields);
        self.send(req).await
    }

    /// GET a page; returns status, `Location`, body.
    pub(crate) async fn page(&mut self, path: &str) -> (StatusCode, Option<String>, String) {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// The CSRF token the console pages carry for this session.
    pub(crate) async fn csrf(&mut self) -> String {
        let (status, _, body) = self.page("/console/account").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let marker = r#"name="csrf-token" content=""#;
        let start = body.find(marker).expect("csrf meta") + marker.len();
        body[start..start + 64].to_owned()
    }

    /// An API call with the session cookie (and `csrf`, when given).
    pub(crate) async fn api(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
        csrf: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header());
        if let Some(c) = csrf {
            req = req.header("X-CSRF-Token", c);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        answer(req.send().await.expect("request")).await
    }

    pub(crate) fn has_session(&self) -> bool {
        self.cookies.contains_key("__Host-palisade_session")
    }

    /// Password step, then (if asked) the second step with `code`.
    pub(crate) async fn sign_in(
        &mut self,
        org: &str,
        name: &str,
        password: &str,
    ) -> (StatusCode, Option<String>, String) {
        self.form(
            "/console/login",
            &[("org", org), ("name", name), ("password", password)],
        )
        .await
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A TOTP code for a step not used yet: `offset` steps ahead (within the
/// ±1 skew the server accepts).
pub(crate) fn code(secret: &str, offset: u64) -> String {
    let secret = totp::Secret::parse_base32(secret).expect("secret");
    totp::code_at(&secret, now_s() + offset * totp::PERIOD_S)
}

/// Add `who` (if new) with `role` and return the path of a fresh invitation
/// link for them.
pub(crate) async fn invitation_path(env: &Env, who: &str, role: Option<&str>) -> String {
    let (status, v) = env
        .admin
        .call(Method::POST, "/api/v1/admins", Some(json!({"name": who})))
        .await;
    assert!(
        status == StatusCode::CREATED || status == StatusCode::CONFLICT,
        "{v}"
    );
    if let Some(role) = role {
        let _: AdminInfo = env
            .admin
            .post_ok(
                &format!("/api/v1/admins/{who}/grants"),
                json!({ "role": role }),
            )
            .await;
    }
    let inv: Invitation = env
        .admin
        .expect(
            Method::POST,
            &format!("/api/v1/admins/{who}/invite"),
            json!({}),
            StatusCode::CREATED,
        )
        .await;
    assert!(
        inv.url.starts_with(&env.server.url("/console/invite/")),
        "the link names the address the request reached: {}",
        inv.url
    );
    let path = inv.url.split_once("/console/").expect("console url").1;
    format!("/console/{path}")
}

/// An API client with a fresh token made for `who` by the owner.
async fn token_for(env: &Env, who: &str) -> Admin {
    let token: TokenCreated = env
        .admin
        .expect(
            Method::POST,
            "/api/v1/tokens",
            json!({"admin": who, "name": "cli"}),
            StatusCode::CREATED,
        )
        .await;
    Admin::new(&env.server, &token.token)
}

/// Add `who` with `role` and have them accept an invitation: a signed-in
/// console (password only).
pub(crate) async fn invited(env: &Env, who: &str, role: Option<&str>) -> Console {
    let path = invitation_path(env, who, role).await;
    let mut c = Console::new(&env.server);
    let (status, _, body) = c.page(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Too short, then different, then right.
    let (status, _, body) = c
        .form(&path, &[("password", "short"), ("confirm", "short")])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _, _) = c
        .form(
            &path,
            &[("password", PASSWORD), ("confirm", "something else!!")],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, location, body) = c
        .form(&path, &[("password", PASSWORD), ("confirm", PASSWORD)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(location.as_deref(), Some("/console/account"));
    assert!(c.has_session());
    // The link works once.
    let mut again = Console::new(&env.server);
    let (status, _, _) = again
        .form(&path, &[("password", PASSWORD), ("confirm", PASSWORD)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    c
}

/// Enroll TOTP through the API with the console session; returns the
/// secret and the recovery codes.
pub(crate) async fn enroll_totp(c: &mut Console) -> (String, Vec<String>) {
    let csrf = c.csrf().await;
    let (status, v) = c
        .api(
            Method::POST,
            "/api/v1/me/totp",
            Some(json!({})),
            Some(&csrf),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let e: TotpEnrollment = from_value(v);
    assert!(e.uri.starts_with("otpauth://totp/"), "{}", e.uri);
    assert!(e.qr_svg.contains("<svg"), "QR code is SVG");
    let (status, v) = c
        .api(
            Method::POST,
            "/api/v1/me/totp/confirm",
            Some(json!({"code": "000000"})),
            Some(&csrf),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (status, v) = c
        .api(
            Method::POST,
            "/api/v1/me/totp/confirm",
            Some(json!({"code": code(&e.secret, 0)})),
            Some(&csrf),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let codes: RecoveryCodes = from_value(v);
    assert_eq!(codes.codes.len(), 10);
    (e.secret, codes.codes)
}

async fn invitation_password_totp_and_recovery_codes(backend: Backend) {
    let env = Env::new(backend).await;
    let mut c = invited(&env, "bob", Some("approver")).await;
    let (status, v) = c.api(Method::GET, "/api/v1/me", None, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let me: Me = from_value(v);
    assert!(!me.totp && !me.mfa_verified && me.console_session);
    let (secret, codes) = enroll_totp(&mut c).await;
    let me: Me = from_value(c.api(Method::GET, "/api/v1/me", None, None).await.1);
    assert!(me.totp && me.mfa_verified && me.recovery_codes == 10);

    // Sign out (the form needs the CSRF token), then in with password + TOTP.
    let csrf = c.csrf().await;
    let (status, _, _) = c.form("/console/logout", &[("csrf", "nope")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, location, _) = c.form("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/console/login"));
    assert!(!c.has_session());
    // Both are in the audit log: the refused one (another site's form, it
    // may be) with its reason.
    let page: AuditPage = env.admin.get_ok("/api/v1/audit").await;
    let outs: Vec<_> = page
        .records
        .iter()
        .filter(|r| r.actor == "bob" && r.action == "SIGN-OUT console")
        .map(|r| (r.outcome.as_str(), r.reason.clone().unwrap_or_default()))
        .collect();
    assert_eq!(outs.len(), 2, "{outs:?}");
    assert!(
        outs.iter()
            .any(|(o, r)| *o == "denied" && r.contains("CSRF")),
        "{outs:?}"
    );
    assert!(outs.iter().any(|(o, _)| *o == "allowed"), "{outs:?}");
    let (status, location, _) = c.page("/console/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/console/login"));

    let mut c = Console::new(&env.server);
    let (status, location, body) = c.sign_in("acme", "bob", PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(location.as_deref(), Some("/console/login/totp"));
    assert!(!c.has_session(), "no session before the second factor");
    // The pending cookie is no session: the API refuses it.
    let (status, _) = c.api(Method::GET, "/api/v1/whoami", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = c.form("/console/login/totp", &[("code", "123456")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("wrong"), "{body}");
    // The enrollment's code was for step 0: the next step is fresh. (Back-off
    // after one failure is 1 s.)
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, location, body) = c
        .form("/console/login/totp", &[("code", &code(&secret, 1))])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(location.as_deref(), Some("/console/"));
    assert!(c.has_session());
    let (status, _, body) = c.page("/console/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("bob @ acme"), "{body}");
    let me: Me = from_value(c.api(Method::GET, "/api/v1/me", None, None).await.1);
    assert!(me.mfa_verified);

    // A recovery code signs in once.
    for (attempt, want) in [(1, StatusCode::SEE_OTHER), (2, StatusCode::UNAUTHORIZED)] {
        let mut r = Console::new(&env.server);
        let (status, _, _) = r.sign_in("acme", "bob", PASSWORD).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "attempt {attempt}");
        let (status, _, body) = r
            .form("/console/login/totp", &[("code", &codes[3].to_uppercase())])
            .await;
        assert_eq!(status, want, "recovery attempt {attempt}: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }

    // Sign-ins and failures are in the audit chain.
    let (status, v) = env.admin.get("/api/v1/audit?limit=1000").await;
    assert_eq!(status, StatusCode::OK);
    let records = v["records"].as_array().expect("records");
    let sign_ins: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "SIGN-IN console" && r["actor"] == "bob")
        .collect();
    assert!(sign_ins.iter().any(|r| r["outcome"] == "allowed"));
    assert!(sign_ins.iter().any(|r| r["outcome"] == "denied"));
}

/// Twenty failures from one address within 15 minutes, each on a different
/// name (so no account's own back-off applies): the address is refused,
/// even with a right password, while another admin's API token still works.
async fn failures_from_one_address_are_limited(backend: Backend) {
    let env = Env::new(backend).await;
    let _ = invited(&env, "gina", Some("auditor")).await;
    let mut x = Console::new(&env.server);
    for i in 0..20 {
        let (status, _, body) = x
            .sign_in("acme", &format!("guess{i}"), "wrong password!!")
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}: {body}");
    }
    let (status, _, body) = x.sign_in("acme", "gina", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let _: Value = env.admin.get_ok("/api/v1/whoami").await;
}

/// An invitation for yourself clears your second factor when accepted: a
/// credential made without that factor (a token from before it was
/// enrolled) may not ask for one; a sign-in made with it may.
async fn resetting_your_own_credentials_needs_your_second_factor(backend: Backend) {
    let env = Env::new(backend).await;
    let mut c = invited(&env, "fay", Some("owner")).await;
    let csrf = c.csrf().await;
    let (status, v) = c
        .api(Method::POST, "/api/v1/tokens", Some(json!({})), Some(&csrf))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let early = Admin::new(&env.server, v["token"].as_str().unwrap());
    let _ = enroll_totp(&mut c).await;
    let (status, v) = early
        .call(Method::POST, "/api/v1/admins/fay/invite", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(v.to_string().contains("second factor"), "{v}");
    let csrf = c.csrf().await;
    let (status, v) = c
        .api(Method::POST, "/api/v1/admins/fay/invite", None, Some(&csrf))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
}

/// Ten wrong passwords for one account sent at once: one is checked, the
/// others wait their turn and then meet its back-off (before, all ten
/// passed the throttle before the first failure was counted, and were all
/// checked: thousands of guesses per lock cycle).
/// Of wrong passwords sent at once, one was checked (401); the others were
/// throttled (429) before their password was looked at.
fn only_one_checked(codes: &[StatusCode]) {
    let checked = codes
        .iter()
        .filter(|c| **c == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(checked, 1, "{codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| matches!(*c, StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS)),
        "{codes:?}"
    );
}

async fn attempts_sent_at_once_take_turns(backend: Backend) {
    let env = Env::new(backend).await;
    let _ = invited(&env, "dave", Some("auditor")).await;
    let attempts = (0..10).map(|_| async {
        let mut x = Console::new(&env.server);
        x.sign_in("acme", "dave", "wrong password!!").await.0
    });
    only_one_checked(&futures_util::future::join_all(attempts).await);
}

/// Two replicas over one database: attempts on one account sent at once
/// through both are still checked one at a time (the claim in the
/// database), and a name that is not an admin is throttled on the other
/// replica as on the first (its state is in the database, not in memory).
async fn replicas_share_the_throttle_and_take_turns(backend: Backend) {
    let env = Env::new(backend).await;
    let _ = invited(&env, "dave", Some("auditor")).await;
    let other = TestServer::start(&env.db).await;
    let attempts = (0..10).map(|i| {
        let server = if i % 2 == 0 { &env.server } else { &other };
        async move {
            let mut x = Console::new(server);
            x.sign_in("acme", "dave", "wrong password!!").await.0
        }
    });
    only_one_checked(&futures_util::future::join_all(attempts).await);

    let mut a = Console::new(&env.server);
    let (status, _, _) = a.sign_in("acme", "nobody", "wrong password!!").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut b = Console::new(&other);
    let (status, _, _) = b.sign_in("acme", "nobody", "wrong password!!").await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "throttled on the other replica too"
    );
    // Attempts on names that are not admins are audited like any other.
    let page: AuditPage = env.admin.get_ok("/api/v1/audit").await;
    assert!(
        page.records.iter().any(|r| r.actor == "nobody"
            && r.outcome == "denied"
            && r.reason
                .as_deref()
                .is_some_and(|x| x.contains("no such admin"))),
        "{:#?}",
        page.records
    );
    other.stop().await;
}

async fn wrong_credentials_are_throttled_and_lock_the_account(backend: Backend) {
    let env = Env::new(backend).await;
    let mut c = invited(&env, "carol", Some("auditor")).await;
    let carol_api = token_for(&env, "carol").await;
    let _: Value = carol_api.get_ok("/api/v1/whoami").await;

    // Wrong password: generic answer; right away again: back-off (429).
    let mut x = Console::new(&env.server);
    let (status, _, body) = x.sign_in("acme", "carol", "wrong password!!").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("wrong organization, name, password or code"));
    let (status, _, body) = x.sign_in("acme", "carol", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // A name that does not exist answers the same way, throttled the same.
    let (status, _, body2) = x.sign_in("acme", "nobody", "wrong password!!").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body2.contains("wrong organization, name, password or code"));
    let (status, _, _) = x.sign_in("acme", "nobody", "wrong password!!").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    // The back-off doubles: after three failures in a row it is 4 s, so 3 s
    // after the last one even the right password waits, and 5 s after it
    // goes in (which also ends the streak).
    for (ago_ms, want) in [
        (3_000, StatusCode::TOO_MANY_REQUESTS),
        (5_000, StatusCode::SEE_OTHER),
    ] {
        let at = now_ms() - ago_ms;
        exec_sql(
            backend,
            &env.db.url,
            &format!(
                "UPDATE admins SET failed_logins = 3, last_failed_ms = {at} WHERE name = 'carol'"
            ),
        )
        .await;
        let mut y = Console::new(&env.server);
        let (status, _, body) = y.sign_in("acme", "carol", PASSWORD).await;
        assert_eq!(status, want, "{ago_ms} ms after the third failure: {body}");
    }

    // Four failures long enough ago that the back-off is over: the fifth
    // locks the account; its session and token are refused while it lasts
    // (see a_lockout_refuses_credentials_while_it_lasts_and_ends_none).
    let long_ago = lock_out(&env, backend, &mut x, "carol").await;
    let (status, _) = carol_api.get("/api/v1/whoami").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "token refused while locked");
    let (status, _) = c.api(Method::GET, "/api/v1/whoami", None, None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "session refused while locked"
    );
    // A name that is not an admin locks alike, with the same answer.
    exec_sql(
        backend,
        &env.db.url,
        &format!(
            "INSERT INTO signin_attempts (org, name, failed_logins, last_failed_ms) \
             VALUES ('acme', 'ghost', 4, {long_ago})"
        ),
    )
    .await;
    let (status, _, ghost) = x.sign_in("acme", "ghost", "wrong again!!!!").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{ghost}");
    assert!(ghost.contains("locked"), "{ghost}");
    // Even the right password is refused while locked.
    let (status, _, body) = x.sign_in("acme", "carol", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let admins: Vec<AdminInfo> = env.admin.get_ok("/api/v1/admins").await;
    let carol = admins.iter().find(|a| a.name == "carol").expect("carol");
    assert!(carol.locked_until_ms.is_some());
    // An owner's invitation is the way back in.
    let _ = invited(&env, "carol", None).await;
}

/// Lock `who` out: four failures long enough ago that the back-off is
/// over, then a fifth through `x`. Returns when the four were.
async fn lock_out(env: &Env, backend: Backend, x: &mut Console, who: &str) -> i64 {
    let long_ago = now_ms() - 60_000;
    exec_sql(
        backend,
        &env.db.url,
        &format!(
            "UPDATE admins SET failed_logins = 4, last_failed_ms = {long_ago} WHERE name = '{who}'"
        ),
    )
    .await;
    let (status, _, body) = x.sign_in("acme", who, "wrong again!!!!").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("locked"), "{body}");
    long_ago
}

/// Five wrong passwords, which anyone may send, lock an account: while the
/// lock lasts its session and API tokens are refused, and after it they
/// work again. (Before, the lock revoked every token of the admin for good:
/// anyone knowing an admin's name could end their automation.)
async fn a_lockout_refuses_credentials_while_it_lasts_and_ends_none(backend: Backend) {
    let env = Env::new(backend).await;
    let mut c = invited(&env, "carol", Some("auditor")).await;
    let csrf = c.csrf().await;
    let (status, v) = c
        .api(Method::POST, "/api/v1/tokens", Some(json!({})), Some(&csrf))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let carol_api = Admin::new(&env.server, v["token"].as_str().expect("token"));
    let _: Value = carol_api.get_ok("/api/v1/computers").await;
    lock_out(&env, backend, &mut Console::new(&env.server), "carol").await;
    for path in ["/api/v1/whoami", "/api/v1/computers"] {
        let (status, v) = carol_api.get(path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "token, {path}: {v}");
        assert!(v.to_string().contains("locked"), "{path}: {v}");
        let (status, v) = c.api(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "session, {path}: {v}");
    }
    // The lock lapses: both work again.
    let lapsed = now_ms() - 1;
    exec_sql(
        backend,
        &env.db.url,
        &format!("UPDATE admins SET locked_until_ms = {lapsed} WHERE name = 'carol'"),
    )
    .await;
    let _: Value = carol_api.get_ok("/api/v1/computers").await;
    let (status, v) = c.api(Method::GET, "/api/v1/computers", None, None).await;
    assert_eq!(status, StatusCode::OK, "session after the lock: {v}");
}

async fn required_mfa_leaves_only_enrollment(backend: Backend) {
    let env = Env::new(backend).await;
    let mut c = invited(&env, "dave", Some("security-admin")).await;
    let _: Value = env
        .admin
        .put_ok(
            "/api/v1/settings",
            json!({"require_mfa": true, "trusted_networks": [], "office_hours": null}),
        )
        .await;
    // Without a second factor: refused everywhere but enrollment.
    let (status, v) = c.api(Method::GET, "/api/v1/computers", None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("MFA")
            || v["error"].as_str().unwrap_or("").contains("multi-factor"),
        "{v}"
    );
    let (status, _, body) = c.page("/console/computers").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("/console/account"),
        "the refusal links to enrollment"
    );
    let (secret, codes) = enroll_totp(&mut c).await;
    // Enrolling made this session MFA-verified.
    let (status, v) = c.api(Method::GET, "/api/v1/computers", None, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // A new sign-in needs the code.
    let mut d = Console::new(&env.server);
    let (_, location, _) = d.sign_in("acme", "dave", PASSWORD).await;
    assert_eq!(location.as_deref(), Some("/console/login/totp"));
    let (status, _, body) = d
        .form("/console/login/totp", &[("code", &code(&secret, 1))])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let (status, _) = d.api(Method::GET, "/api/v1/computers", None, None).await;
    assert_eq!(status, StatusCode::OK);
    // Thirty-one minutes without a request end a session.
    let idle_since = now_ms() - 31 * 60 * 1000;
    exec_sql(
        backend,
        &env.db.url,
        &format!("UPDATE admin_sessions SET last_seen_ms = {idle_since}"),
    )
    .await;
    let (status, v) = d.api(Method::GET, "/api/v1/computers", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("inactivity"),
        "{v}"
    );
    // And twelve hours after sign-in a session ends, however busy it is:
    // moved 11 h 59 min into the past (used a moment ago) it still works,
    // 2 minutes more and it is refused.
    let mut e = Console::new(&env.server);
    let (status, _, _) = e.sign_in("acme", "dave", PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, body) = e.form("/console/login/totp", &[("code", &codes[0])]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    for (minutes, want) in [(12 * 60 - 1, StatusCode::OK), (2, StatusCode::UNAUTHORIZED)] {
        let now = now_ms();
        let shift = minutes * 60 * 1000;
        exec_sql(
            backend,
            &env.db.url,
            &format!(
                "UPDATE admin_sessions SET created_ms = created_ms - {shift}, \
                 expires_ms = expires_ms - {shift}, last_seen_ms = {now} WHERE stage = 'full'"
            ),
        )
        .await;
        let (status, v) = e.api(Method::GET, "/api/v1/computers", None, None).await;
        assert_eq!(status, want, "{minutes} min more: {v}");
    }
}

async fn sign_in_conditions_and_csrf(backend: Backend) {
    let env = Env::new(backend).await;
    let mut c = invited(&env, "erin", Some("security-admin")).await;
    // CSRF: a change with the cookie but without the token is refused.
    let (status, v) = c
        .api(
            Method::POST,
            "/api/v1/policies",
            Some(json!({"name": "p1"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("CSRF"), "{v}");
    let (status, v) = c
        .api(
            Method::POST,
            "/api/v1/policies",
            Some(json!({"name": "p1"})),
            Some(&"0".repeat(64)),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let csrf = c.csrf().await;
    let (status, v) = c
        .api(
            Method::POST,
            "/api/v1/policies",
            Some(json!({"name": "p1"})),
            Some(&csrf),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // The two refusals are audited, with their reason.
    let page: AuditPage = env.admin.get_ok("/api/v1/audit").await;
    let refused = page
        .records
        .iter()
        .filter(|r| {
            r.actor == "erin"
                && r.outcome == "denied"
                && r.reason.as_deref().is_some_and(|x| x.contains("CSRF"))
        })
        .count();
    assert_eq!(refused, 2);

    // A sign-in form posted from another site is refused.
    let resp = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(env.server.ca_pem.as_bytes()).expect("CA pem"),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(env.server.url("/console/login"))
        .header("Origin", "https://evil.example")
        .form(&[("org", "acme"), ("name", "erin"), ("password", PASSWORD)])
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get("set-cookie").is_none());

    // Trusted networks that exclude this client: sign-in refused, with the
    // reason, after the password was checked.
    let _: Value = env
        .admin
        .put_ok(
            "/api/v1/settings",
            json!({"require_mfa": false, "trusted_networks": ["127.0.0.1/32"], "office_hours": null}),
        )
        .await;
    let (status, _) = c.api(Method::GET, "/api/v1/whoami", None, None).await;
    assert_eq!(status, StatusCode::OK, "from 127.0.0.1: trusted");
    exec_sql(
        backend,
        &env.db.url,
        "UPDATE orgs SET trusted_networks = '10.0.0.0/8'",
    )
    .await;
    let (status, v) = c.api(Method::GET, "/api/v1/whoami", None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let mut x = Console::new(&env.server);
    let (status, _, body) = x.sign_in("acme", "erin", PASSWORD).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("network"), "{body}");
    assert!(!x.has_session());
}

async fn revocation_ends_console_session_and_token(backend: Backend) {
    let env = Env::new(backend).await;
    let mut c = invited(&env, "frank", Some("approver")).await;
    let api = token_for(&env, "frank").await;
    let (status, _) = c.api(Method::GET, "/api/v1/computers", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.get("/api/v1/computers").await;
    assert_eq!(status, StatusCode::OK);
    let _: AdminInfo = env
        .admin
        .post_ok("/api/v1/admins/frank/revoke", json!({"role": "approver"}))
        .await;
    let (status, _) = c.api(Method::GET, "/api/v1/computers", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "session ended");
    let (status, _) = api.get("/api/v1/computers").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "token ended");
    let (status, location, _) = c.page("/console/computers").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/console/login"));
}
