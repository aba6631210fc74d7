//! The console's sign-in pages: plain HTML forms, no script. The logic
//! (throttling, second factor, sessions, audit) is `http::signin`.
use super::bare;
use crate::http::access::{cookie, session_of, SESSION_COOKIE, SESSION_MAX_MS};
use crate::http::extract::PeerAddr;
use crate::http::signin::{self, Begun, Refusal};
use crate::http::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use maud::html;
use palisade_authn::token::SessionId;
use std::net::{IpAddr, Ipv4Addr};

/// The pending (password-only) session's cookie, sent only to the TOTP step.
/// `__Secure-`: taken only over TLS (its path rules out `__Host-`).
const PENDING_COOKIE: &str = "__Secure-palisade_pending";
const PENDING_PATH: &str = "/console/login";

fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age_s: i64,
) -> (header::HeaderName, HeaderValue) {
    let text = format!(
        "{name}={value}; Path={path}; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age_s}"
    );
    // Hex values and fixed names: always a valid header value.
    (
        header::SET_COOKIE,
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("")),
    )
}

fn source(peer: Option<Extension<PeerAddr>>) -> IpAddr {
    peer.map(|Extension(PeerAddr(ip))| ip)
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Whether a form POST comes from the console's own pages: a browser sends
/// `Origin` with every POST; when present it must name this host (another
/// site cannot sign an admin in to the attacker's account, or out).
fn same_origin(uri: &Uri, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true; // not a browser (or an old one): nothing to compare
    };
    origin.strip_prefix("https://") == Some(crate::http::signin::authority(uri, headers))
}

/// A page saying only `text`, as an error.
fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    (
        status,
        bare(title, html! { main.narrow { p.error { (text) } } }),
    )
        .into_response()
}

fn cross_site() -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "Not permitted",
        "this form was sent from another site",
    )
}

/// The sign-in page saying that the step or link has expired.
fn start_again(status: StatusCode) -> Response {
    login_page(status, "", "", Some(&Refusal::Expired.to_string()))
}

/// Parse a urlencoded form body.
fn parse_form<T: serde::de::DeserializeOwned>(body: &Bytes) -> Option<T> {
    serde_urlencoded::from_bytes(body).ok()
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct LoginQuery {
    #[serde(default)]
    org: Option<String>,
}

#[derive(serde::Deserialize)]
struct LoginForm {
    org: String,
    name: String,
    password: String,
}

fn login_page(status: StatusCode, org: &str, name: &str, error: Option<&str>) -> Response {
    let page = bare(
        "Sign in",
        html! {
            main.narrow {
                h1 { "Sign in" }
                @if let Some(e) = error { p.error #flash { (e) } }
                form.stack method="post" action="/console/login" {
                    label for="org" { "Organization" }
                    input #org name="org" value=(org) required autocomplete="organization";
                    label for="name" { "Admin name" }
                    input #name name="name" value=(name) required autocomplete="username";
                    label for="password" { "Password" }
                    input #password name="password" type="password" required autocomplete="current-password";
                    button #sign-in type="submit" { "Sign in" }
                }
            }
        },
    );
    (status, page).into_response()
}

/// `GET /console/login`.
pub(crate) async fn form(axum::extract::Query(q): axum::extract::Query<LoginQuery>) -> Response {
    login_page(StatusCode::OK, q.org.as_deref().unwrap_or(""), "", None)
}

fn refusal_response(r: &Refusal, page: Response) -> Response {
    let mut page = page;
    if let Refusal::Retry(d) = r {
        if let Ok(v) = HeaderValue::from_str(&d.as_secs().max(1).to_string()) {
            page.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    page
}

/// Where a begun session goes next.
fn begun(b: Begun, full_to: &str) -> Response {
    if b.pending {
        let cookie = set_cookie(
            PENDING_COOKIE,
            &b.id.to_cookie_value(),
            PENDING_PATH,
            5 * 60,
        );
        return ([cookie], Redirect::to("/console/login/totp")).into_response();
    }
    let session = set_cookie(
        SESSION_COOKIE,
        &b.id.to_cookie_value(),
        "/",
        SESSION_MAX_MS / 1000,
    );
    let clear = set_cookie(PENDING_COOKIE, "", PENDING_PATH, 0);
    let mut response = Redirect::to(full_to).into_response();
    response.headers_mut().append(session.0, session.1);
    response.headers_mut().append(clear.0, clear.1);
    response
}

/// `POST /console/login`: the password step.
pub(crate) async fn submit(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&uri, &headers) {
        return cross_site();
    }
    let Some(f) = parse_form::<LoginForm>(&body) else {
        return login_page(
            StatusCode::BAD_REQUEST,
            "",
            "",
            Some("organization, name and password are required"),
        );
    };
    let (org, name) = (f.org.trim().to_owned(), f.name.trim().to_owned());
    match signin::password_step(&state, &org, &name, f.password, source(peer)).await {
        Ok(b) => begun(b, "/console/"),
        Err(r) => refusal_response(
            &r,
            login_page(r.status(), &org, &name, Some(&r.to_string())),
        ),
    }
}

fn totp_page(status: StatusCode, error: Option<&str>) -> Response {
    let page = bare(
        "Second factor",
        html! {
            main.narrow {
                h1 { "Second factor" }
                @if let Some(e) = error { p.error #flash { (e) } }
                form.stack method="post" action="/console/login/totp" {
                    label for="code" { "Code from your authenticator app, or a recovery code" }
                    input #code name="code" required autocomplete="one-time-code" inputmode="text" autofocus;
                    button #verify type="submit" { "Verify" }
                }
                p.muted { a href="/console/login" { "Start again" } }
            }
        },
    );
    (status, page).into_response()
}

/// `GET /console/login/totp`.
pub(crate) async fn totp_form(headers: HeaderMap) -> Response {
    if cookie(&headers, PENDING_COOKIE).is_none() {
        return Redirect::to("/console/login").into_response();
    }
    totp_page(StatusCode::OK, None)
}

#[derive(serde::Deserialize)]
struct CodeForm {
    code: String,
}

/// `POST /console/login/totp`: the second step.
pub(crate) async fn totp_submit(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&uri, &headers) {
        return cross_site();
    }
    let Some(pending) = cookie(&headers, PENDING_COOKIE).and_then(|v| SessionId::parse(v).ok())
    else {
        return start_again(StatusCode::UNAUTHORIZED);
    };
    let Some(f) = parse_form::<CodeForm>(&body) else {
        return totp_page(StatusCode::BAD_REQUEST, Some("enter a code"));
    };
    match signin::second_step(&state, &pending, &f.code, source(peer)).await {
        Ok(b) => begun(b, "/console/"),
        Err(r @ (Refusal::Expired | Refusal::Locked(_) | Refusal::Condition(_))) => {
            refusal_response(&r, login_page(r.status(), "", "", Some(&r.to_string())))
        }
        Err(r) => refusal_response(&r, totp_page(r.status(), Some(&r.to_string()))),
    }
}

#[derive(serde::Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /console/logout`: end the session (the form carries its CSRF
/// token, so another site cannot sign an admin out).
pub(crate) async fn logout(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&uri, &headers) {
        return cross_site();
    }
    let csrf = parse_form::<LogoutForm>(&body)
        .map(|f| f.csrf)
        .unwrap_or_default();
    if let Some(id) = session_of(&headers) {
        let allowed = id.verify_csrf(&csrf);
        if signin::sign_out(&state, &id, source(peer), allowed)
            .await
            .is_err()
        {
            return message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                "cannot end the session; try again",
            );
        }
        if !allowed {
            return message_page(StatusCode::FORBIDDEN, "Not permitted", "wrong CSRF token");
        }
    }
    let clear = set_cookie(SESSION_COOKIE, "", "/", 0);
    ([clear], Redirect::to("/console/login")).into_response()
}

fn invite_page(status: StatusCode, secret: &str, error: Option<&str>) -> Response {
    let action = format!("/console/invite/{secret}");
    let page = bare(
        "Set your password",
        html! {
            main.narrow {
                h1 { "Set your password" }
                @if let Some(e) = error { p.error #flash { (e) } }
                p.muted { "At least " (palisade_authn::password::MIN_CHARS) " characters. Setting it ends your other sessions and tokens; you will set up two-factor authentication next." }
                form.stack method="post" action=(action) {
                    label for="password" { "New password" }
                    input #password name="password" type="password" required autocomplete="new-password";
                    label for="confirm" { "Again" }
                    input #confirm name="confirm" type="password" required autocomplete="new-password";
                    button #set-password type="submit" { "Set password" }
                }
            }
        },
    );
    (status, page).into_response()
}

fn plausible_secret(secret: &str) -> bool {
    secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `GET /console/invite/{secret}`.
pub(crate) async fn invite_form(Path(secret): Path<String>) -> Response {
    if !plausible_secret(&secret) {
        return start_again(StatusCode::NOT_FOUND);
    }
    invite_page(StatusCode::OK, &secret, None)
}

#[derive(serde::Deserialize)]
struct InviteForm {
    password: String,
    confirm: String,
}

/// `POST /console/invite/{secret}`.
pub(crate) async fn invite_submit(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    uri: Uri,
    headers: HeaderMap,
    Path(secret): Path<String>,
    body: Bytes,
) -> Response {
    if !same_origin(&uri, &headers) {
        return cross_site();
    }
    if !plausible_secret(&secret) {
        return start_again(StatusCode::NOT_FOUND);
    }
    let Some(f) = parse_form::<InviteForm>(&body) else {
        return invite_page(
            StatusCode::BAD_REQUEST,
            &secret,
            Some("enter the password twice"),
        );
    };
    if f.password != f.confirm {
        return invite_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &secret,
            Some("the two passwords differ"),
        );
    }
    match signin::accept_invite(&state, &secret, f.password, source(peer)).await {
        Ok(b) => begun(b, "/console/account"),
        Err(r @ Refusal::WeakPassword(_)) => invite_page(r.status(), &secret, Some(&r.to_string())),
        Err(r) => refusal_response(&r, login_page(r.status(), "", "", Some(&r.to_string()))),
    }
}
