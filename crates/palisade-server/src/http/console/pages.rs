//! The console's pages. Each reads through the same functions as the API
//! (or, for the views the API has no call for, the same tables filtered by
//! the caller's organization) and offers only the actions the admin holds.
use super::{action, hidden, layout, perm, reaches, when, Page, PageRejection};
use crate::http::access::policy_clause;
use crate::http::admins::{self, AuditQuery};
use crate::http::approvals::{self, RequestQuery};
use crate::http::extract::{PathParam, QueryParams};
use crate::http::{api, signin, AppState};
use crate::store::parse_sha;
use axum::extract::{Query, State};
use axum::response::Html;
use maud::{html, Markup};
use palisade_api::admin::{ComputerInfo, RequestStatus};
use palisade_authz::{Op, PermissionSet, Resource};
use palisade_core::latency::{self, human_ns, HistogramSnapshot};
use palisade_core::{FileEvent, Level};
use sqlx::Row;

type PageResult = Result<Html<String>, PageRejection>;

const LEVELS: [Level; 3] = [Level::Lockdown, Level::Monitor, Level::Disabled];

fn level_select(name: &str, current: Level) -> Markup {
    html! {
        select name=(name) {
            @for l in LEVELS {
                option value=(l.as_str()) selected[l == current] { (l.as_str()) }
            }
        }
    }
}

fn state_class(state: &str) -> String {
    format!("state-{state}")
}

/// A global state's words and style.
fn global_label(g: palisade_core::GlobalState) -> (&'static str, &'static str) {
    use palisade_core::GlobalState as G;
    match g {
        G::ApprovedForAll => ("approved for all", "state-approved"),
        G::ApprovedByPolicy => ("approved by policy", "state-approved"),
        G::Unapproved => ("unapproved", "state-unapproved"),
        G::BannedForAll => ("banned for all", "state-banned"),
        G::BannedByPolicy => ("banned by policy", "state-banned"),
        G::Mixed => ("mixed", "state-banned"),
    }
}

/// The policies of the caller's organization (id, name), for choices.
async fn policy_names(state: &AppState, org_id: i64) -> Result<Vec<(i64, String)>, PageRejection> {
    let rows = sqlx::query("SELECT id, name FROM policies WHERE org_id = $1 ORDER BY name")
        .bind(org_id)
        .fetch_all(state.db.pool())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push((r.try_get(0)?, r.try_get(1)?));
    }
    Ok(out)
}

/// `GET /console/`: blocks over the last 24 hours, top blocked files,
/// computers and their levels, pending requests: each shown only with the
/// permission to read it.
pub(crate) async fn dashboard(State(state): State<AppState>, page: Page) -> PageResult {
    let held = page.auth.held(None);
    let org_id = page.auth.org_id;
    let now = crate::db::now_ms();
    let hour = 3_600_000;
    let mut content = html! {};
    let events_reach = page.auth.reach(perm(Resource::Events, Op::Read));
    if events_reach.as_ref().is_none_or(|r| !r.is_empty()) {
        // Events of the computers in the policies the admin reaches.
        let scope = policy_clause(
            "(SELECT c.policy_id FROM computers c WHERE c.id = events.computer_id)",
            events_reach.as_deref(),
        );
        let since = (now / hour - 23) * hour;
        let rows = sqlx::query(&format!(
            "SELECT received_ms / 3600000, COUNT(*) FROM events \
             WHERE org_id = $1 AND kind IN ('blocked', 'would_block') AND received_ms >= $2{scope} \
             GROUP BY received_ms / 3600000"
        ))
        .bind(org_id)
        .bind(since)
        .fetch_all(state.db.pool())
        .await?;
        let mut buckets = [0i64; 24];
        for r in &rows {
            let h: i64 = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            if let Ok(i) = usize::try_from(h - since / hour) {
                if i < 24 {
                    buckets[i] = n;
                }
            }
        }
        let total: i64 = buckets.iter().sum();
        let max = buckets.iter().copied().max().unwrap_or(0).max(1);
        let top = sqlx::query(&format!(
            "SELECT sha256, MAX(path), COUNT(*) FROM events \
             WHERE org_id = $1 AND kind IN ('blocked', 'would_block') AND sha256 IS NOT NULL \
               AND received_ms >= $2{scope} \
             GROUP BY sha256 ORDER BY COUNT(*) DESC, sha256 LIMIT 10"
        ))
        .bind(org_id)
        .bind(now - 7 * 24 * hour)
        .fetch_all(state.db.pool())
        .await?;
        content = html! {
            (content)
            div.cards {
                div.card { div.n #blocks-24h { (total) } div.l { "blocks and would-blocks, last 24 h" } }
            }
            h2 { "Blocks per hour (last 24 hours, UTC)" }
            svg.chart viewBox="0 0 480 160" preserveAspectRatio="none" role="img" aria-label="blocks per hour" {
                @for (i, n) in buckets.iter().enumerate() {
                    @let height = (*n as f64 / max as f64 * 130.0).round() as i64;
                    rect x=(i * 20 + 2) y=(140 - height) width="16" height=(height) {
                        title { (n) " at " (palisade_api::format_utc_ms((since / hour + i as i64) * hour)) }
                    }
                    @if i % 3 == 0 {
                        text x=(i * 20 + 2) y="155" { (format!("{:02}h", (since / hour + i as i64) % 24)) }
                    }
                }
            }
            h2 { "Top blocked files (7 days)" }
            @if top.is_empty() { p.muted { "Nothing blocked." } } @else {
                table #top-blocked {
                    thead { tr { th { "Blocks" } th { "File" } th { "SHA-256" } } }
                    tbody {
                        @for r in &top {
                            @let sha: String = r.try_get(0).unwrap_or_default();
                            @let path: String = r.try_get(1).unwrap_or_default();
                            @let n: i64 = r.try_get(2).unwrap_or_default();
                            tr {
                                td { (n) }
                                td.mono { (path) }
                                td.mono { a href=(format!("/console/files/{sha}")) { (&sha[..12.min(sha.len())]) } }
                            }
                        }
                    }
                }
            }
        };
    }
    if reaches(&page, perm(Resource::Computers, Op::Read)) {
        let computers = api::computers(State(state.clone()), page.auth.clone())
            .await?
            .0;
        content = html! {
            (content)
            h2 { "Computers" }
            (computer_table(&computers, None))
        };
    }
    if reaches(&page, perm(Resource::Files, Op::Read)) {
        let pending = approvals::requests(
            State(state.clone()),
            page.auth.clone(),
            QueryParams(RequestQuery {
                status: Some(RequestStatus::Pending),
                ..RequestQuery::default()
            }),
        )
        .await?
        .0
        .len();
        let more = if pending as i64 >= approvals::MAX_REQUESTS {
            "+"
        } else {
            ""
        };
        content = html! {
            (content)
            h2 { "Approval requests" }
            p { a href="/console/requests?status=pending" { (pending) (more) " pending" } }
        };
    }
    if held.is_empty() && !reaches(&page, perm(Resource::Computers, Op::Read)) {
        content = html! { p.muted { "You hold no permissions in this organization." } };
    }
    Ok(layout(&page, held, "Dashboard", content))
}

/// The actions a computer row offers: the policies to move to, whether
/// moving and revoking are offered.
struct ComputerActions<'a> {
    policies: &'a [(i64, String)],
    can_move: bool,
    can_revoke: bool,
}

fn computer_table(computers: &[ComputerInfo], actions: Option<ComputerActions<'_>>) -> Markup {
    html! {
        table #computers {
            thead { tr {
                th { "Computer" } th { "Host" } th { "Policy" } th { "Level" } th { "Disconnected" }
                th { "Connected" } th { "Last seen" } th { "Agent" } th { "Answer time" }
                @if actions.is_some() { th { "Actions" } }
            } }
            tbody {
                @for c in computers {
                    tr data-computer=(c.name) {
                        td { (c.name) @if c.revoked { " " span.state-banned { "(revoked)" } } }
                        td { (c.hostname) }
                        td.policy { (c.policy) }
                        td { (c.levels.connected.as_str()) }
                        td { (c.levels.disconnected.as_str()) }
                        td { @if c.connected { span.ok { "yes" } } @else { "no" } }
                        td { @if let Some(t) = c.last_seen_ms { (when(t)) } }
                        td.agent { @if let Some(s) = &c.status {
                            (s.agent_version) ", " (s.level_in_force.as_str())
                            @if s.guard_active { ", guard" }
                            @if s.event_losses.any() {
                                br; span.state-banned.losses {
                                    "events lost: " (s.event_losses.dropped) " dropped, "
                                    (s.event_losses.set_aside) " set aside"
                                }
                            }
                        } }
                        td.latency { @if let Some(s) = &c.status {
                            (latency_cell(&s.latency.all()))
                            @if let Some(w) = &s.recent {
                                @let recent = w.latency.all();
                                @if recent.count > 0 {
                                    br; span.recent { "last " (w.secs) " s: " (latency_cell(&recent)) }
                                }
                            }
                        } }
                        @if let Some(ComputerActions { policies, can_move, can_revoke }) = &actions {
                            td {
                                @if *can_move {
                                    (action("PUT", &format!("/api/v1/computers/{}/policy", c.name), html! {
                                        select name="policy" aria-label="policy" {
                                            @for (_, p) in policies.iter() {
                                                option value=(p) selected[*p == c.policy] { (p) }
                                            }
                                        }
                                    }, "Move", "quiet move"))
                                }
                                @if *can_revoke && !c.revoked {
                                    (action("POST", &format!("/api/v1/computers/{}/revoke", c.name), html! {}, "Revoke", "danger"))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// "median ≤ …, p99 ≤ … (n answers)", or nothing for an empty histogram.
fn latency_cell(h: &HistogramSnapshot) -> Markup {
    let le = |q: f64| h.quantile(q).map(|ns| format!("≤ {}", human_ns(ns)));
    html! {
        @if let (Some(p50), Some(p99)) = (le(0.5), le(0.99)) {
            "median " (p50) ", p99 " (p99) " (" (h.count) " answers)"
        }
    }
}

/// `GET /console/computers`: move between policies, revoke.
pub(crate) async fn computers(State(state): State<AppState>, page: Page) -> PageResult {
    let held = page.auth.held(None);
    let computers = api::computers(State(state.clone()), page.auth.clone())
        .await?
        .0;
    let policies = policy_names(&state, page.auth.org_id).await?;
    let update = perm(Resource::Computers, Op::Update);
    // A move needs computers:update on both policies: offer it when the
    // admin holds it anywhere; the API decides each move.
    let can_move = held.contains(update)
        || policies
            .iter()
            .any(|(id, _)| page.auth.held(Some(*id)).contains(update));
    let can_revoke = held.contains(perm(Resource::Computers, Op::Delete));
    let content = computer_table(
        &computers,
        Some(ComputerActions {
            policies: &policies,
            can_move,
            can_revoke,
        }),
    );
    let (fleet, reporting) = latency::total(computers.iter().filter_map(ComputerInfo::latency));
    let (recent, recently) =
        latency::total(computers.iter().filter_map(ComputerInfo::recent_latency));
    let content = html! {
        @if computers.is_empty() { p.muted { "No computer has enrolled yet." } }
        @if reporting > 0 {
            p #fleet-latency {
                "Answer time over " (reporting) " computer" @if reporting != 1 { "s" } ", since each agent started: "
                (latency_cell(&fleet)) ", max " (human_ns(fleet.max_ns)) "."
                @if recently > 0 {
                    br; span.recent {
                        "In each one's last report window (" (recently) " computer" @if recently != 1 { "s" } "): "
                        (latency_cell(&recent)) ", max " (human_ns(recent.max_ns)) "."
                    }
                }
            }
        }
        (content)
    };
    Ok(layout(&page, held, "Computers", content))
}

/// `GET /console/policies`: levels, creation.
pub(crate) async fn policies(State(state): State<AppState>, page: Page) -> PageResult {
    let held = page.auth.held(None);
    let policies = api::policies(State(state.clone()), page.auth.clone())
        .await?
        .0;
    let ids = policy_names(&state, page.auth.org_id).await?;
    let update = perm(Resource::Policies, Op::Update);
    let content = html! {
        table #policies {
            thead { tr { th { "Policy" } th { "Level" } th { "When disconnected" } th { "Computers" } th { "Set levels" } } }
            tbody {
                @for p in &policies {
                    @let id = ids.iter().find(|(_, n)| *n == p.name).map(|(id, _)| *id);
                    tr {
                        td { (p.name) }
                        td { (p.levels.connected.as_str()) }
                        td { (p.levels.disconnected.as_str()) }
                        td { (p.computers) }
                        td {
                            @if held.contains(update) || id.is_some_and(|id| page.auth.held(Some(id)).contains(update)) {
                                (action("PUT", &format!("/api/v1/policies/{}/levels", p.name), html! {
                                    (level_select("level", p.levels.connected))
                                    (level_select("disconnected_level", p.levels.disconnected))
                                }, "Set", "quiet"))
                            }
                        }
                    }
                }
            }
        }
        @if held.contains(perm(Resource::Policies, Op::Create)) {
            h2 { "New policy" }
            (action("POST", "/api/v1/policies", html! {
                input name="name" placeholder="name" required;
                (level_select("level", Level::Monitor))
            }, "Create", ""))
        }
    };
    Ok(layout(&page, held, "Policies", content))
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct EventFilter {
    #[serde(default)]
    computer: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// `GET /console/events?computer&kind`: the newest 200, then live.
pub(crate) async fn events(
    State(state): State<AppState>,
    page: Page,
    Query(filter): Query<EventFilter>,
) -> PageResult {
    let held = page.auth.held(None);
    // No stored name or path holds NUL (the API refuses it), and
    // PostgreSQL cannot take it as a parameter: a filter with one is read
    // without it.
    let computer = filter
        .computer
        .map(|c| c.replace('\0', ""))
        .filter(|c| !c.trim().is_empty());
    let kind = filter
        .kind
        .filter(|k| ["blocked", "would_block", "approved", "allowed"].contains(&k.as_str()));
    let reach = page.auth.reach(perm(Resource::Events, Op::Read));
    let rows = sqlx::query(&format!(
        "SELECT e.id, c.name, e.received_ms, e.event_json FROM events e \
         JOIN computers c ON c.id = e.computer_id \
         WHERE e.org_id = $1 AND ($2 = '' OR c.name = $2) AND ($3 = '' OR e.kind = $3){} \
         ORDER BY e.id DESC LIMIT 200",
        policy_clause("c.policy_id", reach.as_deref())
    ))
    .bind(page.auth.org_id)
    .bind(computer.clone().unwrap_or_default())
    .bind(kind.clone().unwrap_or_default())
    .fetch_all(state.db.pool())
    .await?;
    let mut events = Vec::with_capacity(rows.len());
    let mut last_id = 0i64;
    for r in &rows {
        let id: i64 = r.try_get(0)?;
        last_id = last_id.max(id);
        let json: String = r.try_get(3)?;
        let Ok(event) = serde_json::from_str::<FileEvent>(&json) else {
            continue;
        };
        events.push((r.try_get::<String, _>(1)?, r.try_get::<i64, _>(2)?, event));
    }
    if last_id == 0 {
        // Follow from now on: the newest id of the organization.
        last_id = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events WHERE org_id = $1")
            .bind(page.auth.org_id)
            .fetch_one(state.db.pool())
            .await?;
    }
    let mut live_filter = form_urlencoded::Serializer::new(String::new());
    if let Some(c) = &computer {
        live_filter.append_pair("computer", c);
    }
    if let Some(k) = &kind {
        live_filter.append_pair("kind", k);
    }
    let live_filter = live_filter.finish();
    let content = html! {
        form.filters method="get" action="/console/events" {
            label { "Computer" input name="computer" value=(computer.clone().unwrap_or_default()); }
            label { "Kind" select name="kind" {
                option value="" { "any" }
                @for k in ["blocked", "would_block", "approved", "allowed"] {
                    option value=(k) selected[kind.as_deref() == Some(k)] { (k) }
                }
            } }
            button.quiet type="submit" { "Filter" }
            span.muted { "New events appear as they arrive." }
        }
        table #events data-live="1" data-after=(last_id) data-filter=(live_filter) {
            thead { tr { th { "Received" } th { "Computer" } th { "Kind" } th { "Path" } th { "File" } th { "Process" } th { "Reason" } } }
            tbody {
                @for (computer, received, e) in &events {
                    tr class=(format!("kind-{}", e.kind.as_str())) {
                        td { (when(*received)) }
                        td { (computer) }
                        td { (e.kind.as_str()) }
                        td.mono { (e.path) }
                        td.mono { @if let Some(sha) = e.sha256 {
                            a href=(format!("/console/files/{sha}")) { (&sha.to_hex()[..12]) }
                        } }
                        td.mono { (e.process.exe.as_ref().map(|x| x.path.as_str()).unwrap_or("")) }
                        td { (e.reason) }
                    }
                }
            }
        }
    };
    Ok(layout(&page, held, "Events", content))
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct FileSearch {
    #[serde(default)]
    q: Option<String>,
}

/// `GET /console/files?q`: the catalog, most recently seen first.
pub(crate) async fn files(
    State(state): State<AppState>,
    page: Page,
    Query(search): Query<FileSearch>,
) -> PageResult {
    let held = page.auth.held(None);
    // Without NUL, as the events page's filter.
    let q = search
        .q
        .unwrap_or_default()
        .replace('\0', "")
        .trim()
        .to_owned();
    let like = format!("%{}%", q.replace(['%', '_'], ""));
    // An admin who reads files on some policies only sees the files seen on
    // their computers, counted there.
    let reach = page.auth.reach(perm(Resource::Files, Op::Read));
    let (join, narrow) = match reach.as_deref() {
        None => ("LEFT JOIN", String::new()),
        Some(policies) => (
            "JOIN",
            format!(
                " AND i.computer_id IN (SELECT c.id FROM computers c WHERE c.org_id = $1{})",
                policy_clause("c.policy_id", Some(policies))
            ),
        ),
    };
    let sql = format!(
        "SELECT f.sha256, f.first_seen_ms, MAX(i.path), COUNT(DISTINCT i.computer_id), \
           COALESCE(MAX(i.last_seen_ms), f.first_seen_ms), \
           (SELECT s.state FROM file_states s WHERE s.org_id = f.org_id AND s.sha256 = f.sha256 \
              AND s.scope_kind = 'global') \
         FROM files f {join} file_instances i ON i.org_id = f.org_id AND i.sha256 = f.sha256{narrow} \
         WHERE f.org_id = $1 AND ($2 = '' OR f.sha256 LIKE $3 OR i.path LIKE $3) \
         GROUP BY f.org_id, f.sha256, f.first_seen_ms \
         ORDER BY COALESCE(MAX(i.last_seen_ms), f.first_seen_ms) DESC, f.sha256 LIMIT 200"
    );
    let rows = sqlx::query(&sql)
        .bind(page.auth.org_id)
        .bind(&q)
        .bind(&like)
        .fetch_all(state.db.pool())
        .await?;
    let content = html! {
        form.filters method="get" action="/console/files" {
            label { "Path or SHA-256 contains" input name="q" value=(q); }
            button.quiet type="submit" { "Search" }
        }
        table #files {
            thead { tr { th { "File" } th { "SHA-256" } th { "Global state" } th { "Computers" } th { "Last seen" } } }
            tbody {
                @for r in &rows {
                    @let sha: String = r.try_get(0).unwrap_or_default();
                    @let path: Option<String> = r.try_get(2).unwrap_or_default();
                    @let computers: i64 = r.try_get(3).unwrap_or_default();
                    @let last: i64 = r.try_get(4).unwrap_or_default();
                    @let state: Option<String> = r.try_get(5).unwrap_or_default();
                    @let state = state.unwrap_or_else(|| "unapproved".into());
                    tr {
                        td.mono { (path.unwrap_or_default()) }
                        td.mono { a href=(format!("/console/files/{sha}")) { (sha) } }
                        td class=(state_class(&state)) { (state) }
                        td { (computers) }
                        td { (when(last)) }
                    }
                }
            }
        }
    };
    Ok(layout(&page, held, "Files", content))
}

/// `GET /console/files/{sha256}`: the file's story (where seen, its states,
/// what each computer decides and why, recent events) and the approve/ban
/// actions the admin holds (org-wide, or per policy).
pub(crate) async fn file(State(state): State<AppState>, page: Page, sha: PathParam) -> PageResult {
    let held = page.auth.held(None);
    let hex = sha.0.clone();
    let d = api::file(State(state.clone()), page.auth.clone(), sha)
        .await?
        .0;
    let update = perm(Resource::Files, Op::Update);
    let policies = policy_names(&state, page.auth.org_id).await?;
    let actionable: Vec<&String> = policies
        .iter()
        .filter(|(id, _)| held.contains(update) || page.auth.held(Some(*id)).contains(update))
        .map(|(_, n)| n)
        .collect();
    // Recent events on the computers the admin may read events of.
    let events_reach = page.auth.reach(perm(Resource::Events, Op::Read));
    let sql = format!(
        "SELECT c.name, e.received_ms, e.event_json FROM events e \
         JOIN computers c ON c.id = e.computer_id \
         WHERE e.org_id = $1 AND e.sha256 = $2{} ORDER BY e.id DESC LIMIT 20",
        policy_clause("c.policy_id", events_reach.as_deref())
    );
    let recent = sqlx::query(&sql)
        .bind(page.auth.org_id)
        .bind(parse_sha(&hex).map(|s| s.to_hex()).unwrap_or_default())
        .fetch_all(state.db.pool())
        .await?;
    let api_path = format!("/api/v1/files/{}/state", d.sha256);
    let (global, global_class) = global_label(d.global_state);
    let content = html! {
            p.mono #sha256 { (d.sha256) }
            div.cards {
                div.card { div.n #global-state class=(global_class) { (global) } div.l { "global state" } }
                div.card { div.n { (d.instances.len()) } div.l { "places seen" } }
                @if let Some(t) = d.trust { div.card { div.n { (t) } div.l { "trust " (d.trust_source.clone().unwrap_or_default()) } } }
            }
            @if held.contains(update) {
                div.panel #file-actions {
                    strong { "Everywhere: " }
                    (action("PUT", &api_path, hidden("state", "approved"), "Approve", "approve"))
                    (action("PUT", &api_path, hidden("state", "banned"), "Ban", "danger ban"))
                    (action("PUT", &api_path, hidden("state", "unapproved"), "Unapprove", "quiet"))
                }
            }
            @if !actionable.is_empty() {
                div.panel #policy-actions {
                    strong { "In one policy: " }
                    (action("PUT", &api_path, html! {
                        select name="policy" aria-label="policy" { @for p in &actionable { option value=(p) { (p) } } }
                        select name="state" aria-label="state" {
                            option value="approved" { "approve" } option value="banned" { "ban" } option value="unapproved" { "unapprove" }
                        }
                    }, "Apply", "quiet"))
                }
            }
            h2 { "States" }
            @if d.states.is_empty() { p.muted { "No state set: unapproved everywhere." } } @else {
                table #states {
                    thead { tr { th { "Scope" } th { "State" } th { "Set" } th { "By" } } }
                    tbody { @for s in &d.states {
                        @let st = format!("{:?}", s.state).to_lowercase();
                        tr {
                            td { (match &s.scope { palisade_api::admin::ScopeRef::Global => "global".to_owned(),
                                    palisade_api::admin::ScopeRef::Policy(p) => format!("policy {p}"),
                                    palisade_api::admin::ScopeRef::Computer(c) => format!("computer {c}") }) }
                            td class=(state_class(&st)) { (st) }
                            td { (when(s.updated_ms)) }
                            td { (s.updated_by) }
                        }
                    } }
                }
            }
            h2 { "Decision per computer" }
            table #effective {
                thead { tr { th { "Computer" } th { "Policy" } th { "Decision" } th { "Why" } } }
                tbody { @for e in &d.effective {
                    @let decision = serde_json::to_value(e.approval).ok()
        .and_then(|v| v["state"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", e.approval));
    tr { td { (e.computer) } td { (e.policy) } td class=(state_class(&decision)) { (decision) } td { (e.explanation) } }
                } }
            }
            h2 { "Where seen" }
            table #instances {
                thead { tr { th { "Computer" } th { "Path" } th { "First seen" } th { "Last seen" } th { "Times" } th { "Local" } } }
                tbody { @for i in &d.instances {
                    tr {
                        td { (i.computer) } td.mono { (i.path) @if i.deleted_ms.is_some() { " (deleted)" } }
                        td { (when(i.first_seen_ms)) } td { (when(i.last_seen_ms)) } td { (i.count) }
                        td { (format!("{:?}", i.local_state).to_lowercase()) }
                    }
                } }
            }
            @if !d.publishers.is_empty() {
                h2 { "Publishers" }
                ul { @for p in &d.publishers { li { (format!("{p:?}")) } } }
            }
            @if events_reach.as_ref().is_none_or(|r| !r.is_empty()) {
                h2 { "Recent events" }
                table #file-events {
                    thead { tr { th { "Received" } th { "Computer" } th { "Kind" } th { "Path" } th { "Process" } th { "Reason" } } }
                    tbody { @for r in &recent {
                        @let name: String = r.try_get(0).unwrap_or_default();
                        @let at: i64 = r.try_get(1).unwrap_or_default();
                        @let json: String = r.try_get(2).unwrap_or_default();
                        @if let Ok(e) = serde_json::from_str::<FileEvent>(&json) {
                            tr class=(format!("kind-{}", e.kind.as_str())) {
                                td { (when(at)) } td { (name) } td { (e.kind.as_str()) } td.mono { (e.path) }
                                td.mono { (e.process.exe.as_ref().map(|x| x.path.as_str()).unwrap_or("")) } td { (e.reason) }
                            }
                        }
                    } }
                }
            }
        };
    Ok(layout(&page, held, "File", content))
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct RequestFilter {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    before: Option<String>,
}

/// Approval requests per page of the console.
const REQUESTS_PAGE: i64 = 100;

/// `GET /console/requests?status&before`: approval requests, newest first,
/// a page at a time.
pub(crate) async fn requests(
    State(state): State<AppState>,
    page: Page,
    Query(filter): Query<RequestFilter>,
) -> PageResult {
    let held = page.auth.held(None);
    let status = match filter.status.as_deref() {
        Some("pending") => Some(RequestStatus::Pending),
        Some("granted") => Some(RequestStatus::Granted),
        Some("denied") => Some(RequestStatus::Denied),
        _ => None,
    };
    let before = filter.before.and_then(|b| b.trim().parse::<i64>().ok());
    let all = approvals::requests(
        State(state.clone()),
        page.auth.clone(),
        QueryParams(RequestQuery {
            status,
            before,
            limit: Some(REQUESTS_PAGE),
        }),
    )
    .await?
    .0;
    let status_word = status.map(|s| format!("{s:?}").to_lowercase());
    let older = (all.len() as i64 == REQUESTS_PAGE)
        .then(|| all.last().map(|r| r.id))
        .flatten()
        .map(|last| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            if let Some(s) = &status_word {
                q.append_pair("status", s);
            }
            q.append_pair("before", &last.to_string());
            format!("/console/requests?{}", q.finish())
        });
    let decide = held.contains(perm(Resource::Files, Op::Update));
    let content = html! {
        form.filters method="get" action="/console/requests" {
            label { "Status" select name="status" {
                option value="" { "any" }
                @for k in ["pending", "granted", "denied"] {
                    option value=(k) selected[status_word.as_deref() == Some(k)] { (k) }
                }
            } }
            button.quiet type="submit" { "Filter" }
            span.muted { "Newest first." }
        }
        @if all.is_empty() { p.muted { "No approval requests." } }
        table #requests {
            thead { tr { th { "Asked" } th { "Computer" } th { "User" } th { "File" } th { "Reason" } th { "Status" } th { "" } } }
            tbody { @for r in &all {
                tr {
                    td { (when(r.created_ms)) } td { (r.computer) } td { (r.user) }
                    td.mono { a href=(format!("/console/files/{}", r.sha256)) { (r.path) } }
                    td { (r.reason) }
                    td { (format!("{:?}", r.status).to_lowercase())
                        @if let Some(by) = &r.decided_by { " by " (by) } }
                    td { @if decide && r.status == RequestStatus::Pending {
                        (action("POST", &format!("/api/v1/requests/{}/grant", r.id), html! { input name="comment" placeholder="comment"; }, "Grant", "approve"))
                        (action("POST", &format!("/api/v1/requests/{}/deny", r.id), html! {}, "Deny", "danger"))
                    } }
                }
            } }
        }
        @if let Some(href) = &older { p { a #older-requests href=(href) { "Older requests" } } }
    };
    Ok(layout(&page, held, "Requests", content))
}

/// `GET /console/rules`: custom rules, bundles, publishers.
pub(crate) async fn rules(State(state): State<AppState>, page: Page) -> PageResult {
    let held = page.auth.held(None);
    let rules = approvals::rules(State(state.clone()), page.auth.clone())
        .await?
        .0;
    let bundles = approvals::bundles(State(state.clone()), page.auth.clone())
        .await?
        .0;
    let publishers = approvals::publishers(State(state.clone()), page.auth.clone())
        .await?
        .0;
    let delete = held.contains(perm(Resource::Rules, Op::Delete));
    let update = held.contains(perm(Resource::Rules, Op::Update));
    let content = html! {
        table #rules {
            thead { tr { th { "Rule" } th { "Rank" } th { "Policies" } th { "Enabled" } th { "Definition" } th { "Created" } th { "" } } }
            tbody { @for r in &rules {
                tr {
                    td { (r.name) @if let Some(b) = &r.bundle { " (" (b) ")" } }
                    td { (r.rank) }
                    td { @if r.policies.is_empty() { "all" } @else { (r.policies.join(", ")) } }
                    td { (r.enabled) }
                    td.mono { (serde_json::to_string(&r.body).unwrap_or_default()) }
                    td { (when(r.created_ms)) " by " (r.created_by) }
                    td { @if delete && r.bundle.is_none() {
                        (action("DELETE", &format!("/api/v1/rules/{}", r.id), html! {}, "Delete", "danger"))
                    } }
                }
            } }
        }
        @if held.contains(perm(Resource::Rules, Op::Create)) {
            h2 { "New rule" }
            form.stack data-api="/api/v1/rules" data-method="POST" {
                label for="rule-name" { "Name" }
                input #rule-name name="name" required;
                label for="rule-body" { "Definition (JSON, as in the API's rule body)" }
                textarea #rule-body name="body" data-json rows="4" placeholder=r#"{"kind": "path", "pattern": "/opt/tools/**", "state": "approved"}"# {}
                label for="rule-policies" { "Policies (blank: all)" }
                input #rule-policies name="policies" data-list;
                button type="submit" { "Create" }
            }
        }
        h2 { "Bundles" }
        table #bundles {
            thead { tr { th { "Bundle" } th { "Description" } th { "Enabled" } } }
            tbody { @for b in &bundles {
                tr { td { (b.name) } td { (b.description) } td {
                    @if update {
                        (action("PUT", &format!("/api/v1/bundles/{}", b.name), html! {
                            input type="checkbox" name="enabled" checked[b.enabled] aria-label="enabled";
                        }, "Save", "quiet"))
                    } @else { (b.enabled) }
                } }
            } }
        }
        h2 { "Publishers" }
        table #publishers {
            thead { tr { th { "Publisher" } th { "Details" } } }
            tbody { @for p in &publishers {
                tr { td { (p.name) } td.mono { (serde_json::to_string(p).unwrap_or_default()) } }
            } }
        }
    };
    Ok(layout(&page, held, "Rules", content))
}

/// `GET /console/admins`: admins and their grants, roles, access settings.
pub(crate) async fn admins(State(state): State<AppState>, page: Page) -> PageResult {
    let held = page.auth.held(None);
    let list = admins::list(State(state.clone()), page.auth.clone())
        .await?
        .0;
    let roles = admins::roles(State(state.clone()), page.auth.clone())
        .await?
        .0;
    let policies = policy_names(&state, page.auth.org_id).await?;
    let update = held.contains(perm(Resource::Admins, Op::Update));
    let settings = if held.contains(perm(Resource::Settings, Op::Read)) {
        Some(
            admins::settings(State(state.clone()), page.auth.clone())
                .await?
                .0,
        )
    } else {
        None
    };
    let content = html! {
        table #admins {
            thead { tr { th { "Admin" } th { "Status" } th { "Grants" } th { "Tokens" } th { "" } } }
            tbody { @for a in &list {
                tr data-admin=(a.name) {
                    td { (a.name) }
                    td { (a.status) @if let Some(t) = a.locked_until_ms { @if t > crate::db::now_ms() { ", locked until " (when(t)) } } }
                    td { ul.grants { @for g in &a.grants {
                        li data-grant=(format!("{}{}", g.role, g.policy.as_ref().map(|p| format!("@{p}")).unwrap_or_default())) {
                            (g.role) @if let Some(p) = &g.policy { " on policy " (p) } @else { " (organization)" }
                            @if update {
                                " "
                                (action("POST", &format!("/api/v1/admins/{}/revoke", a.name), html! {
                                    (hidden("role", g.role.as_str()))
                                    @if let Some(p) = &g.policy { (hidden("policy", p.as_str())) }
                                }, "Revoke", "danger revoke"))
                            }
                        }
                    } } }
                    td { (a.tokens) }
                    td { @if update {
                        (action("POST", &format!("/api/v1/admins/{}/grants", a.name), html! {
                            select name="role" aria-label="role" { @for r in &roles { option value=(r.name) { (r.name) } } }
                            select name="policy" aria-label="scope" {
                                option value="" { "organization" }
                                @for (_, p) in &policies { option value=(p) { "policy " (p) } }
                            }
                        }, "Grant", "quiet"))
                        @if a.status == "active" {
                            (action("POST", &format!("/api/v1/admins/{}/disable", a.name), html! {}, "Disable", "danger"))
                        } @else {
                            (action("POST", &format!("/api/v1/admins/{}/enable", a.name), html! {}, "Enable", "quiet"))
                        }
                        form.action data-api=(format!("/api/v1/admins/{}/invite", a.name)) data-method="POST" data-show="link" {
                            button.quiet type="submit" { "Invitation link" }
                        }
                    } }
                }
            } }
        }
        div #result {}
        @if held.contains(perm(Resource::Admins, Op::Create)) {
            h2 { "New admin" }
            (action("POST", "/api/v1/admins", html! { input name="name" placeholder="name" required; }, "Add", ""))
            p.muted { "Then grant roles, and send the admin an invitation link to set a password." }
        }
        h2 { "Roles" }
        table #roles {
            thead { tr { th { "Role" } th { "Permissions" } } }
            tbody { @for r in &roles {
                tr { td { (r.name) @if r.builtin { " (built in)" } } td.mono { (r.permissions.join(" ")) } }
            } }
        }
        @if held.contains(perm(Resource::Admins, Op::Create)) {
            h2 { "New role" }
            (action("POST", "/api/v1/roles", html! {
                input name="name" placeholder="name" required;
                input name="permissions" data-list placeholder="files:read files:update" size="40" required;
            }, "Create", ""))
        }
        @if let Some(s) = settings {
            h2 { "Conditional access" }
            @if held.contains(perm(Resource::Settings, Op::Update)) {
                form.stack #settings data-api="/api/v1/settings" data-method="PUT" {
                    label { input type="checkbox" name="require_mfa" checked[s.require_mfa]; " Require two-factor authentication" }
                    label for="nets" { "Trusted networks (blank: any)" }
                    input #nets name="trusted_networks" data-list value=(s.trusted_networks.join(" "));
                    label for="hours" { "Office hours (blank: any time), such as mon-fri 08:00-18:00 +01:00" }
                    input #hours name="office_hours" value=(s.office_hours.clone().unwrap_or_default());
                    button type="submit" { "Save" }
                }
            } @else {
                p { "Require MFA: " (s.require_mfa) "; trusted networks: " (s.trusted_networks.join(", ")) "; office hours: " (s.office_hours.clone().unwrap_or_else(|| "any".into())) }
            }
        }
    };
    Ok(layout(&page, held, "Admins", content))
}

/// `GET /console/audit`: the newest 200 records.
pub(crate) async fn audit(State(state): State<AppState>, page: Page) -> PageResult {
    let held = page.auth.held(None);
    let head: Option<i64> = sqlx::query_scalar("SELECT seq FROM audit_heads WHERE org_id = $1")
        .bind(page.auth.org_id)
        .fetch_optional(state.db.pool())
        .await?;
    let after = head.unwrap_or(0).saturating_sub(200).max(0);
    let mut records = admins::audit(
        State(state.clone()),
        page.auth.clone(),
        QueryParams(AuditQuery {
            after: Some(after),
            limit: Some(200),
        }),
    )
    .await?
    .0
    .records;
    records.reverse();
    let content = html! {
        p.muted { "Every change and every refusal, chained by hash. Check the chain with " code { "palisade audit verify" } "." }
        table #audit {
            thead { tr { th { "#" } th { "When" } th { "Who" } th { "What" } th { "Object" } th { "From" } th { "Outcome" } th { "Before → after" } } }
            tbody { @for r in &records {
                tr class=(if r.outcome == "allowed" { "" } else { "kind-blocked" }) {
                    td { (r.seq) } td { (when(r.at_ms)) } td { (r.actor) } td { (r.action) } td.mono { (r.object) }
                    td { (r.source) }
                    td { (r.outcome) @if let Some(why) = &r.reason { ": " (why) } }
                    td.mono {
                        @if let Some(b) = &r.before { (b.to_string()) }
                        @if r.before.is_some() || r.after.is_some() { " → " }
                        @if let Some(a) = &r.after { (a.to_string()) }
                    }
                }
            } }
        }
    };
    Ok(layout(&page, held, "Audit", content))
}

/// `GET /console/account`: two-factor enrollment, API tokens.
pub(crate) async fn account(State(state): State<AppState>, page: Page) -> PageResult {
    let held: PermissionSet = page.auth.held(None);
    let me = signin::me(State(state.clone()), page.auth.clone()).await?.0;
    let tokens = admins::tokens(State(state.clone()), page.auth.clone())
        .await?
        .0;
    let content = html! {
        h2 { "Two-factor authentication" }
        @if me.totp {
            p #totp-status.ok { "On. " (me.recovery_codes) " recovery codes left." }
        } @else {
            p #totp-status { "Off."
                @if me.require_mfa { " " strong.error { "Your organization requires it: set it up to continue." } } }
        }
        @if !me.totp || me.mfa_verified {
            form.action data-api="/api/v1/me/totp" data-method="POST" data-show="totp" {
                button #totp-start type="submit" { @if me.totp { "Replace authenticator" } @else { "Set up authenticator" } }
            }
            form.action #totp-confirm hidden data-api="/api/v1/me/totp/confirm" data-method="POST" data-show="codes" {
                input #totp-code name="code" placeholder="6-digit code" autocomplete="one-time-code" required;
                button #totp-verify type="submit" { "Verify and turn on" }
            }
        }
        div #result {}
        h2 { "API tokens" }
        table #tokens {
            thead { tr { th { "Name" } th { "Scope" } th { "Created" } th { "Expires" } th { "" } } }
            tbody { @for t in &tokens {
                tr {
                    td { (t.name) } td.mono { (t.scope.as_ref().map(|s| s.join(" ")).unwrap_or_else(|| "all".into())) }
                    td { (when(t.created_ms)) }
                    td { @if let Some(r) = t.revoked_ms { "revoked " (when(r)) } @else if let Some(e) = t.expires_ms { (when(e)) } @else { "never" } }
                    td { @if t.revoked_ms.is_none() {
                        (action("DELETE", &format!("/api/v1/tokens/{}", t.id), html! {}, "Revoke", "danger"))
                    } }
                }
            } }
        }
        h3 { "New token" }
        form.action data-api="/api/v1/tokens" data-method="POST" data-show="token" {
            input name="name" placeholder="name" required;
            input name="expires_secs" data-int placeholder="expires in seconds (blank: never)";
            button type="submit" { "Create" }
        }
    };
    Ok(layout(&page, held, "Account", content))
}
