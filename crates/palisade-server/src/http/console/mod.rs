//! The web console: server-rendered HTML (maud, escaped by construction)
//! over the server's TLS listener, at `/console/`.
//!
//! - Sign-in pages are plain HTML forms (`login.rs`): password, then TOTP
//!   or a recovery code, invitations; they set the `__Host-palisade_session`
//!   cookie (`HttpOnly; Secure; SameSite=Strict`).
//! - Every other page is a GET authorized exactly as an API call: the
//!   [`Page`] extractor is [`AdminAuth`] (live grants, conditions) with a
//!   redirect to the sign-in page instead of a `401`, and each page route
//!   has its permission in `access::route_permission`.
//! - Every action on a page is an API call: `console.js` turns a form with
//!   `data-api` into a `fetch` of that `/api/v1/...` endpoint with the
//!   session cookie and the session's CSRF token (`X-CSRF-Token`), so the
//!   console can do nothing the API would not let the same admin do, and a
//!   refusal shows the API's reason.
//! - What the admin may not do is not offered: pages render actions only
//!   for permissions [`AdminAuth::held`] right now.
mod login;
mod pages;

use super::access::{session_of, AdminAuth};
use super::AppState;
use crate::errors::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use palisade_authz::{Op, Permission, PermissionSet, Resource};

/// The console's routes (merged into the server's router).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/login", get(login::form).post(login::submit))
        .route(
            "/console/login/totp",
            get(login::totp_form).post(login::totp_submit),
        )
        .route("/console/logout", post(login::logout))
        .route(
            "/console/invite/{secret}",
            get(login::invite_form).post(login::invite_submit),
        )
        .route("/console/static/console.js", get(script))
        .route("/console/static/console.css", get(style))
        .route("/console/", get(pages::dashboard))
        .route("/console/account", get(pages::account))
        .route("/console/events", get(pages::events))
        .route("/console/files", get(pages::files))
        .route("/console/files/{sha256}", get(pages::file))
        .route("/console/requests", get(pages::requests))
        .route("/console/rules", get(pages::rules))
        .route("/console/computers", get(pages::computers))
        .route("/console/policies", get(pages::policies))
        .route("/console/admins", get(pages::admins))
        .route("/console/audit", get(pages::audit))
        .layer(axum::middleware::map_response(security_headers))
}

/// Every console answer: no framing, no foreign scripts or styles, no
/// referrer to other sites (invitation links carry a secret), no caching of pages.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(header::HeaderValue::from_static("no-store"));
    response
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("console.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("console.css"),
    )
        .into_response()
}

/// An admin signed in to the console, allowed to see the page now.
pub(crate) struct Page {
    pub(crate) auth: AdminAuth,
    /// The session's CSRF token, for the page's API calls.
    pub(crate) csrf: String,
}

/// Why a page is not shown: not signed in (to the sign-in page), or
/// refused (a page saying why).
pub(crate) enum PageRejection {
    SignIn,
    Refused(ApiError),
}

impl IntoResponse for PageRejection {
    fn into_response(self) -> Response {
        match self {
            PageRejection::SignIn => Redirect::to("/console/login").into_response(),
            PageRejection::Refused(e) => refused_page(&e),
        }
    }
}

impl From<ApiError> for PageRejection {
    fn from(e: ApiError) -> Self {
        if e.status() == StatusCode::UNAUTHORIZED {
            PageRejection::SignIn
        } else {
            PageRejection::Refused(e)
        }
    }
}

/// A database error while building a page: the refusal page's 500.
impl From<sqlx::Error> for PageRejection {
    fn from(e: sqlx::Error) -> Self {
        PageRejection::Refused(ApiError::from(e))
    }
}

impl FromRequestParts<AppState> for Page {
    type Rejection = PageRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, PageRejection> {
        // The console authenticates by its session cookie only.
        parts.headers.remove(header::AUTHORIZATION);
        let session = session_of(&parts.headers).ok_or(PageRejection::SignIn)?;
        let auth = AdminAuth::from_request_parts(parts, state).await?;
        Ok(Page {
            auth,
            csrf: session.csrf_token(),
        })
    }
}

fn refused_page(e: &ApiError) -> Response {
    let mfa = e.message().contains("multi-factor") || e.message().contains("MFA");
    let body = bare(
        "Not permitted",
        html! {
            main.narrow {
                h1 { "Not permitted" }
                p.error #flash { (e.message()) }
                @if mfa {
                    p { "Your organization requires a second factor. "
                        a href="/console/account" { "Set up two-factor authentication" } "." }
                }
                p { a href="/console/" { "Back to the dashboard" } " · " a href="/console/login" { "Sign in again" } }
            }
        },
    );
    (e.status(), body).into_response()
}

/// A permission, shortly.
pub(crate) const fn perm(resource: Resource, op: Op) -> Permission {
    Permission::new(resource, op)
}

/// The console's sections: path, label, the permission that shows it, and
/// whether holding it on some policies is enough (listings filtered to
/// those policies).
const SECTIONS: &[(&str, &str, Option<Permission>, bool)] = &[
    ("/console/", "Dashboard", None, false),
    (
        "/console/events",
        "Events",
        Some(perm(Resource::Events, Op::Read)),
        true,
    ),
    (
        "/console/files",
        "Files",
        Some(perm(Resource::Files, Op::Read)),
        false,
    ),
    (
        "/console/requests",
        "Requests",
        Some(perm(Resource::Files, Op::Read)),
        true,
    ),
    (
        "/console/rules",
        "Rules",
        Some(perm(Resource::Rules, Op::Read)),
        false,
    ),
    (
        "/console/computers",
        "Computers",
        Some(perm(Resource::Computers, Op::Read)),
        true,
    ),
    (
        "/console/policies",
        "Policies",
        Some(perm(Resource::Policies, Op::Read)),
        false,
    ),
    (
        "/console/admins",
        "Admins",
        Some(perm(Resource::Admins, Op::Read)),
        false,
    ),
    (
        "/console/audit",
        "Audit",
        Some(perm(Resource::Admins, Op::Read)),
        false,
    ),
];

/// Whether the caller may see a listing of `permission` at all (on the
/// organization or on some policy).
pub(crate) fn reaches(page: &Page, permission: Permission) -> bool {
    page.auth.reach(permission).is_none_or(|r| !r.is_empty())
}

/// A page of the signed-in console: navigation (only the sections the admin
/// may see now), the flash area for API answers, the content.
pub(crate) fn layout(
    page: &Page,
    held: PermissionSet,
    title: &str,
    content: Markup,
) -> Html<String> {
    let auth = &page.auth;
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="csrf-token" content=(page.csrf);
                    title { (title) " · Palisade" }
                    link rel="stylesheet" href="/console/static/console.css";
                    script src="/console/static/console.js" defer {}
                }
                body {
                    header.top {
                        a.brand href="/console/" { "Palisade" }
                        nav {
                            @for (href, label, need, by_policy) in SECTIONS {
                                @if need.is_none_or(|p| held.contains(p) || (*by_policy && reaches(page, p))) {
                                    a href=(href) class=[(*label == title).then_some("current")] { (label) }
                                }
                            }
                        }
                        div.who {
                            a href="/console/account" #who { (auth.admin) " @ " (auth.org) }
                            form method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(page.csrf);
                                button.link type="submit" #sign-out { "Sign out" }
                            }
                        }
                    }
                    div #flash role="status" {}
                    main { h1 { (title) } (content) }
                }
            }
        }
        .into_string(),
    )
}

/// A page without navigation (sign-in, errors).
pub(crate) fn bare(title: &str, content: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · Palisade" }
                    link rel="stylesheet" href="/console/static/console.css";
                }
                body.bare { header.top { span.brand { "Palisade" } } (content) }
            }
        }
        .into_string(),
    )
}

/// A time (ms since the epoch), for tables.
pub(crate) fn when(ms: i64) -> Markup {
    html! { time { (palisade_api::format_utc_ms(ms)) } }
}

/// An API action: a form that `console.js` sends as JSON to `api` with
/// `method`; `fields` are its inputs, `label` its button.
pub(crate) fn action(method: &str, api: &str, fields: Markup, label: &str, class: &str) -> Markup {
    html! {
        form.action data-api=(api) data-method=(method) {
            (fields)
            button type="submit" class=(class) { (label) }
        }
    }
}

/// A hidden input.
pub(crate) fn hidden(name: &str, value: &str) -> Markup {
    html! { input type="hidden" name=(name) value=(value); }
}
