//! The web console in a real browser (headless chromium through
//! chromedriver): set a password from an invitation, enroll TOTP, sign in
//! with it, approve a blocked file, ban a file, move a computer to another
//! policy, and revoke an admin's grant in one session so that the other
//! admin's session is refused on its next click.
//!
//! With `PALISADE_SCREENSHOTS=DIR`, the main pages are saved there as PNG
//! (`docs/console/` holds the ones committed).
use crate::signin::{code, invitation_path, PASSWORD};
use crate::support::*;
use crate::webdriver::Browser;
use palisade_api::admin::{ComputerInfo, FileDetails};
use palisade_core::GlobalState;
use palisade_core::Sha256;
use serde_json::{json, Value};
use std::path::PathBuf;

async fn invitation(env: &Env, who: &str, role: &str) -> String {
    env.server.url(&invitation_path(env, who, Some(role)).await)
}

async fn set_password(b: &Browser, link: &str) {
    b.goto(link).await;
    b.fill("#password", PASSWORD).await;
    b.fill("#confirm", PASSWORD).await;
    b.click("#set-password").await;
    b.wait_url("/console/account").await;
}

async fn sign_in(b: &Browser, env: &Env, name: &str) {
    b.goto(&env.server.url("/console/login")).await;
    b.fill("#org", "acme").await;
    b.fill("#name", name).await;
    b.fill("#password", PASSWORD).await;
    b.click("#sign-in").await;
}

fn sha(n: u8) -> Sha256 {
    Sha256::from_bytes([n; 32])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser() {
    let shots: Option<PathBuf> = std::env::var_os("PALISADE_SCREENSHOTS").map(PathBuf::from);
    let shots = shots.as_deref();
    let env = Env::new(Backend::Sqlite).await;
    env.admin.create_policy("servers", "lockdown").await;
    let agent = env.agent("default", "web01").await;
    let (tool, miner) = (sha(0x11), sha(0x22));
    let events: Vec<Value> = vec![
        event_json(1, "blocked", tool, "/opt/tools/report-gen"),
        event_json(2, "blocked", miner, "/tmp/.x/miner"),
        event_json(3, "blocked", miner, "/tmp/.x/miner"),
    ];
    let _: Value = agent
        .post_ok("/agent/v1/events", json!({ "events": events }))
        .await;

    // Olivia, owner: password from her invitation, then TOTP enrollment.
    let link = invitation(&env, "olivia", "owner").await;
    let olivia = Browser::start().await;
    set_password(&olivia, &link).await;
    olivia.click("#totp-start").await;
    let secret = olivia
        .attr("#totp-secret", "data-secret")
        .await
        .expect("secret shown");
    olivia.find(".qr svg").await;
    olivia.fill("#totp-code", &code(&secret, 0)).await;
    olivia.click("#totp-verify").await;
    olivia
        .wait_text("#recovery-codes", "recovery codes shown", |t| {
            t.lines().count() == 10
        })
        .await;
    olivia.screenshot(shots, "account-totp").await;

    // Sign out, and in again: password, then the TOTP code.
    olivia.click("#sign-out").await;
    olivia.wait_url("/console/login").await;
    olivia.screenshot(shots, "sign-in").await;
    sign_in(&olivia, &env, "olivia").await;
    olivia.wait_url("/console/login/totp").await;
    olivia.fill("#code", &code(&secret, 1)).await;
    olivia.click("#verify").await;
    olivia.wait_url("/console/").await;
    olivia
        .wait_text("#who", "signed in", |t| t.contains("olivia @ acme"))
        .await;
    olivia
        .wait_text("#blocks-24h", "three blocks counted", |t| t == "3")
        .await;
    olivia.screenshot(shots, "dashboard").await;

    // Approve the blocked tool from the events page and the file's story.
    olivia.goto(&env.server.url("/console/events")).await;
    olivia
        .wait_text("#events", "the blocks are listed", |t| {
            t.contains("/opt/tools/report-gen")
        })
        .await;
    // Live updates: an event uploaded now appears without a reload.
    let fresh = sha(0x33);
    let _: Value = agent
        .post_ok(
            "/agent/v1/events",
            json!({ "events": [event_json(4, "would_block", fresh, "/home/dev/new-tool")] }),
        )
        .await;
    olivia
        .wait_text("#events", "the new event arrives live", |t| {
            t.contains("/home/dev/new-tool")
        })
        .await;
    olivia.find("#events tr.live").await;
    olivia.screenshot(shots, "events").await;
    olivia
        .click(&format!("#events a[href=\"/console/files/{tool}\"]"))
        .await;
    olivia.wait_url(&format!("/console/files/{tool}")).await;
    olivia.click("#file-actions button.approve").await;
    olivia
        .wait_text("#global-state", "approved", |t| t == "approved for all")
        .await;
    olivia.screenshot(shots, "file").await;
    let d: FileDetails = env.admin.get_ok(&format!("/api/v1/files/{tool}")).await;
    assert_eq!(d.global_state, GlobalState::ApprovedForAll);

    // Ban the miner.
    olivia
        .goto(&env.server.url(&format!("/console/files/{miner}")))
        .await;
    olivia.click("#file-actions button.ban").await;
    olivia
        .wait_text("#global-state", "banned", |t| t == "banned for all")
        .await;
    let d: FileDetails = env.admin.get_ok(&format!("/api/v1/files/{miner}")).await;
    assert_eq!(d.global_state, GlobalState::BannedForAll);
    olivia.goto(&env.server.url("/console/files")).await;
    olivia.find("#files").await;
    olivia.screenshot(shots, "files").await;

    // web01's agent reports its answer times: the computers page shows
    // them per computer and over the fleet.
    let (code, body) = agent
        .call(
            reqwest::Method::POST,
            "/agent/v1/status",
            Some(json!({
                "agent_version": "1.0.0", "level_in_force": "lockdown", "enforcing": true,
                "guard_active": false, "watched": ["/"],
                "latency": {
                    "reader": {"count": 99, "sum_ns": 1980000, "max_ns": 22000,
                               "buckets": [[20480, 98], [22528, 1]]},
                    "workers": {"count": 1, "sum_ns": 40000000, "max_ns": 40000000,
                                "buckets": [[41943040, 1]]}
                },
                "recent": {"secs": 300, "latency": {
                    "reader": {"count": 4, "sum_ns": 80000, "max_ns": 20100,
                               "buckets": [[20480, 4]]},
                    "workers": {}
                }},
                "event_losses": {"dropped": 0, "set_aside": 2}
            })),
        )
        .await;
    assert!(code.is_success(), "{code} {body}");
    // Move web01 from default to servers.
    olivia.goto(&env.server.url("/console/computers")).await;
    let agent_cell = olivia.text("tr[data-computer=\"web01\"] td.agent").await;
    assert!(
        agent_cell.ends_with("events lost: 0 dropped, 2 set aside"),
        "{agent_cell}"
    );
    let cell = olivia.text("tr[data-computer=\"web01\"] td.latency").await;
    assert_eq!(
        cell,
        "median ≤ 20.5 µs, p99 ≤ 22.5 µs (100 answers)\nlast 300 s: median ≤ 20.1 µs, p99 ≤ 20.1 µs (4 answers)"
    );
    let fleet = olivia.text("#fleet-latency").await;
    assert!(
        fleet == "Answer time over 1 computer, since each agent started: median ≤ 20.5 µs, p99 ≤ 22.5 µs (100 answers), max 40.0 ms.\nIn each one's last report window (1 computer): median ≤ 20.1 µs, p99 ≤ 20.1 µs (4 answers), max 20.1 µs.",
        "{fleet}"
    );
    let row = "tr[data-computer=\"web01\"]";
    olivia
        .select(&format!("{row} select[name=policy]"), "servers")
        .await;
    olivia.click(&format!("{row} button.move")).await;
    olivia
        .wait_text(&format!("{row} td.policy"), "moved", |t| t == "servers")
        .await;
    olivia.screenshot(shots, "computers").await;
    let computers: Vec<ComputerInfo> = env.admin.get_ok("/api/v1/computers").await;
    assert_eq!(computers[0].policy, "servers");

    // Paul, security-admin, signed in (no second factor required here) in
    // another browser, looking at the miner's page.
    let link = invitation(&env, "paul", "security-admin").await;
    let paul = Browser::start().await;
    set_password(&paul, &link).await;
    paul.goto(&env.server.url(&format!("/console/files/{tool}")))
        .await;
    paul.find("#file-actions button.ban").await;

    // Olivia revokes Paul's grant...
    olivia.goto(&env.server.url("/console/admins")).await;
    olivia.screenshot(shots, "admins").await;
    olivia
        .click("tr[data-admin=\"paul\"] li[data-grant=\"security-admin\"] button.revoke")
        .await;
    olivia
        .wait_text("tr[data-admin=\"paul\"] ul.grants", "grant gone", |t| {
            !t.contains("security-admin")
        })
        .await;
    // ...and Paul's next click is refused: his session is over.
    paul.click("#file-actions button.ban").await;
    paul.wait_url("/console/login").await;
    let d: FileDetails = env.admin.get_ok(&format!("/api/v1/files/{tool}")).await;
    assert_eq!(
        d.global_state,
        GlobalState::ApprovedForAll,
        "the refused ban did nothing"
    );
    // Signed in again, he sees only what he holds now: nothing.
    sign_in(&paul, &env, "paul").await;
    paul.wait_url("/console/").await;
    paul.wait_text("main", "no permissions", |t| {
        t.contains("You hold no permissions")
    })
    .await;
    let nav = paul.text("nav").await;
    assert!(!nav.contains("Files") && !nav.contains("Admins"), "{nav}");
    paul.goto(&env.server.url(&format!("/console/files/{tool}")))
        .await;
    paul.wait_text("#flash", "refused page", |t| t.contains("not permitted"))
        .await;
    paul.quit().await;

    olivia.goto(&env.server.url("/console/audit")).await;
    olivia
        .wait_text("#audit", "the revocation is audited", |t| {
            t.contains("/api/v1/admins/{name}/revoke")
        })
        .await;
    olivia.screenshot(shots, "audit").await;
    for (page, name) in [
        ("/console/policies", "policies"),
        ("/console/rules", "rules"),
        ("/console/requests", "requests"),
    ] {
        olivia.goto(&env.server.url(page)).await;
        olivia.find("main h1").await;
        olivia.screenshot(shots, name).await;
    }
    olivia.quit().await;
}
