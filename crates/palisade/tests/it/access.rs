//! Admin access from the CLI: admins, grants, scoped tokens through
//! PALISADE_TOKEN, revocation at the next command, the audit chain.
use crate::harness::*;
use crate::require_root;

/// Run a command with another admin's token.
fn as_token(up: &Up, token: &str, args: &[&str]) -> Ran {
    run(
        BIN,
        args,
        &[
            ("PALISADE_CLI_CONFIG", up.cli_config.to_str().unwrap()),
            ("PALISADE_TOKEN", token),
            ("PALISADE_LOG", "warn"),
        ],
    )
}

#[test]
fn admins_grants_tokens_and_audit_from_the_cli() {
    require_root!();
    let mount = TestMount::tmpfs();
    let up = Up::start(&mount, &[]);
    let out = up.ok(&["admin", "add", "bob"]);
    assert!(
        out.contains("invitation for bob") && out.contains("/console/invite/"),
        "{out}"
    );
    let out = up.ok(&["admin", "invite", "bob"]);
    let link = out
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("no link: {out}"));
    assert!(link.contains("/console/invite/"), "{out}");
    let out = up.ok(&["admin", "grant", "bob", "approver"]);
    assert!(out.contains("approver"), "{out}");
    let token = up.ok(&["token", "create", "--admin", "bob", "--expires", "1h"]);
    let token = token.trim();
    assert!(token.starts_with("plta1."), "{token}");

    // bob may ban a file but not change a policy's level.
    let sha = "ab".repeat(32);
    let r = as_token(&up, token, &["file", "ban", &sha]);
    assert!(r.ok(), "{r:?}");
    let r = as_token(&up, token, &["policy", "set-level", "default", "lockdown"]);
    assert!(!r.ok(), "{r:?}");
    assert!(r.stderr.contains("not permitted"), "{r:?}");
    let r = as_token(&up, token, &["admin", "list"]);
    assert!(!r.ok() && r.stderr.contains("not permitted"), "{r:?}");

    // Revoked: his very next command is refused.
    up.ok(&["admin", "revoke", "bob", "approver"]);
    let r = as_token(&up, token, &["computers"]);
    assert!(!r.ok(), "{r:?}");
    assert!(r.stderr.contains("401"), "{r:?}");

    let listed = up.ok(&["admin", "list"]);
    assert!(
        listed.contains("bob") && listed.contains("(no grants)"),
        "{listed}"
    );
    let audit = up.ok(&["audit", "list", "--limit", "1000"]);
    assert!(
        audit.contains("denied") && audit.contains("/grants"),
        "{audit}"
    );
    let anchor = up.data.path().join("anchor");
    let out = up.ok(&["audit", "verify", "--save-anchor", anchor.to_str().unwrap()]);
    assert!(out.contains("audit chain intact"), "{out}");
    let out = up.ok(&["audit", "verify", "--anchor", anchor.to_str().unwrap()]);
    assert!(out.contains("audit chain intact"), "{out}");
    // A malformed anchor is an error, not a pass.
    std::fs::write(&anchor, "not an anchor\n").unwrap();
    let r = up.cli(&["audit", "verify", "--anchor", anchor.to_str().unwrap()]);
    assert!(!r.ok(), "{r:?}");
}
