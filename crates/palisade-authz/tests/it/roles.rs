//! What each role allows, where: every resource type × operation, at
//! organization and policy scope, inside and outside the grant's reach.
use super::*;

/// The expected permissions of each built-in role, written out (not derived
/// from `builtin_roles`), one column per resource type: the letters of the
/// operations allowed (C create, R read, U update, D delete).
const TABLE: &[(&str, [&str; 7])] = &[
    //                 files   rules   computers policies events  admins  settings
    (
        "owner",
        ["CRUD", "CRUD", "CRUD", "CRUD", "CRUD", "CRUD", "CRUD"],
    ),
    (
        "security-admin",
        ["CRUD", "CRUD", "CRUD", "CRUD", "CRUD", "-R--", "-R--"],
    ),
    (
        "approver",
        ["-RU-", "-R--", "-R--", "-R--", "-R--", "----", "----"],
    ),
    (
        "auditor",
        ["-R--", "-R--", "-R--", "-R--", "-R--", "-R--", "-R--"],
    ),
];

fn expected(row: &[&str; 7]) -> Vec<(Permission, bool)> {
    let mut out = Vec::new();
    for (resource, ops) in Resource::ALL.into_iter().zip(row) {
        for (op, letter) in Op::ALL.into_iter().zip(ops.chars()) {
            out.push((Permission::new(resource, op), letter != '-'));
        }
    }
    out
}

#[test]
fn builtin_roles_match_the_table() {
    for (name, row) in TABLE {
        let role = Role::builtin(name).unwrap();
        let want: PermissionSet = expected(row)
            .into_iter()
            .filter(|&(_, ok)| ok)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(role.permissions(), want, "{name}");
    }
    assert_eq!(builtin_roles().len(), TABLE.len());
}

#[test]
fn org_scope() {
    for (name, row) in TABLE {
        let grants = [grant(name, Scope::Org)];
        let ask = Ask::new(&grants);
        for (p, ok) in expected(row) {
            let p = p.to_string();
            let want = if ok {
                Decision::Allow
            } else {
                Decision::Deny(DenyReason::NoGrant)
            };
            // The organization itself and anything in any of its policies.
            for target in [Target::Org(ORG), in_policy(ORG, P7), in_policy(ORG, P8)] {
                assert_eq!(ask.decide(&p, target), want, "{name} {p} {target:?}");
            }
            // Never another organization, whatever the ids.
            for target in [Target::Org(OTHER_ORG), in_policy(OTHER_ORG, P7)] {
                assert_eq!(
                    ask.decide(&p, target),
                    Decision::Deny(DenyReason::OtherOrganization),
                    "{name} {p} {target:?}"
                );
            }
        }
    }
}

#[test]
fn policy_scope() {
    for (name, row) in TABLE {
        let grants = [grant(name, Scope::Policy(P7))];
        let ask = Ask::new(&grants);
        for (p, ok) in expected(row) {
            let p = p.to_string();
            let want = if ok {
                Decision::Allow
            } else {
                Decision::Deny(DenyReason::NoGrant)
            };
            assert_eq!(ask.decide(&p, in_policy(ORG, P7)), want, "{name} {p} in P7");
            // Another policy, and organization-level objects, are out of reach.
            for target in [in_policy(ORG, P8), Target::Org(ORG)] {
                assert_eq!(
                    ask.decide(&p, target),
                    Decision::Deny(DenyReason::NoGrant),
                    "{name} {p} {target:?}"
                );
            }
            // A policy of another organization, even one carrying the granted
            // policy's id.
            for target in [in_policy(OTHER_ORG, P7), Target::Org(OTHER_ORG)] {
                assert_eq!(
                    ask.decide(&p, target),
                    Decision::Deny(DenyReason::OtherOrganization),
                    "{name} {p} {target:?}"
                );
            }
        }
    }
}

#[test]
fn grants_add_up() {
    // An auditor of the organization who approves files in P7 only.
    let grants = [
        grant("auditor", Scope::Org),
        grant("approver", Scope::Policy(P7)),
    ];
    let ask = Ask::new(&grants);
    for (p, target, want) in [
        ("files:read", Target::Org(ORG), true),
        ("files:update", in_policy(ORG, P7), true),
        ("files:update", in_policy(ORG, P8), false),
        ("files:update", Target::Org(ORG), false),
        ("admins:read", Target::Org(ORG), true),
        ("rules:create", in_policy(ORG, P7), false),
    ] {
        assert_eq!(ask.decide(p, target).is_allowed(), want, "{p} {target:?}");
    }
    let caller = Caller {
        admin: &ask.admin,
        grants: &grants,
        conditions: &ask.conditions,
        context: &ask.context,
    };
    assert_eq!(
        authz().allowed(&caller, in_policy(ORG, P7)),
        "*:read,files:update".parse().unwrap()
    );
    assert_eq!(
        authz().allowed(&caller, in_policy(ORG, P8)),
        "*:read".parse().unwrap()
    );
}

#[test]
fn no_grants_no_access() {
    let ask = Ask::new(&[]);
    for p in Permission::all() {
        assert_eq!(
            ask.decide(&p.to_string(), Target::Org(ORG)),
            Decision::Deny(DenyReason::NoGrant)
        );
    }
}

#[test]
fn custom_role() {
    let editor = custom("rule-editor", "rules:*,policies:read");
    let grants = [Grant {
        role: editor,
        scope: Scope::Policy(P7),
    }];
    let ask = Ask::new(&grants);
    for (p, target, want) in [
        ("rules:create", in_policy(ORG, P7), Decision::Allow),
        ("rules:delete", in_policy(ORG, P7), Decision::Allow),
        ("policies:read", in_policy(ORG, P7), Decision::Allow),
        (
            "policies:update",
            in_policy(ORG, P7),
            Decision::Deny(DenyReason::NoGrant),
        ),
        (
            "files:read",
            in_policy(ORG, P7),
            Decision::Deny(DenyReason::NoGrant),
        ),
        (
            "rules:create",
            in_policy(ORG, P8),
            Decision::Deny(DenyReason::NoGrant),
        ),
        (
            "rules:create",
            Target::Org(ORG),
            Decision::Deny(DenyReason::NoGrant),
        ),
    ] {
        assert_eq!(ask.decide(p, target), want, "{p} {target:?}");
    }
}

#[test]
fn revoking_a_grant_takes_effect_on_the_next_request() {
    let target = in_policy(ORG, P7);
    let mut grants = vec![
        grant("auditor", Scope::Org),
        grant("security-admin", Scope::Policy(P7)),
    ];
    assert_eq!(
        Ask::new(&grants).decide("rules:delete", target),
        Decision::Allow
    );
    grants.retain(|g| g.role.name().as_str() != "security-admin");
    assert_eq!(
        Ask::new(&grants).decide("rules:delete", target),
        Decision::Deny(DenyReason::NoGrant)
    );
    assert_eq!(
        Ask::new(&grants).decide("rules:read", target),
        Decision::Allow
    );
}

#[test]
fn editing_a_custom_role_takes_effect_on_the_next_request() {
    // The same role name with fewer permissions: what was compiled for the
    // old permission set cannot answer for the new one.
    let target = in_policy(ORG, P7);
    let before = [Grant {
        role: custom("operator", "computers:*,events:read"),
        scope: Scope::Org,
    }];
    assert_eq!(
        Ask::new(&before).decide("computers:delete", target),
        Decision::Allow
    );
    let after = [Grant {
        role: custom("operator", "computers:read,events:read"),
        scope: Scope::Org,
    }];
    assert_eq!(
        Ask::new(&after).decide("computers:delete", target),
        Decision::Deny(DenyReason::NoGrant)
    );
    assert_eq!(
        Ask::new(&after).decide("computers:read", target),
        Decision::Allow
    );
}

#[test]
fn duplicate_grants_are_harmless() {
    let grants = [
        grant("approver", Scope::Policy(P7)),
        grant("approver", Scope::Policy(P7)),
        grant("approver", Scope::Org),
    ];
    let ask = Ask::new(&grants);
    assert_eq!(
        ask.decide("files:update", in_policy(ORG, P8)),
        Decision::Allow
    );
    assert_eq!(
        ask.decide("files:delete", in_policy(ORG, P7)),
        Decision::Deny(DenyReason::NoGrant)
    );
}

#[test]
fn many_grants() {
    // 2,000 grants on as many policies: the one on P7 is found.
    let mut grants: Vec<Grant> = (100..2_100)
        .map(|p| grant("auditor", Scope::Policy(PolicyId(p))))
        .collect();
    grants.push(grant("approver", Scope::Policy(P7)));
    let ask = Ask::new(&grants);
    assert_eq!(
        ask.decide("files:update", in_policy(ORG, P7)),
        Decision::Allow
    );
    assert_eq!(
        ask.decide("files:update", in_policy(ORG, PolicyId(150))),
        Decision::Deny(DenyReason::NoGrant)
    );
    assert_eq!(
        ask.decide("files:read", in_policy(ORG, PolicyId(150))),
        Decision::Allow
    );
    assert_eq!(
        ask.decide("files:read", in_policy(ORG, P8)),
        Decision::Deny(DenyReason::NoGrant)
    );
}

/// The authorizer against a plain model of the rules, on random grant sets
/// (custom roles with random permissions, at the organization or one of
/// three policies): an active admin with no condition in force may do
/// `permission` on a target of their own organization exactly when a grant
/// at the target's policy or at the organization holds it; never on another
/// organization's.
#[test]
fn decisions_match_a_plain_model_on_random_grants() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let all: Vec<Permission> = Permission::all().collect();
    let policies = [PolicyId(7), PolicyId(8), PolicyId(9)];
    for round in 0..60 {
        let grants: Vec<Grant> = (0..next() % 6)
            .map(|i| {
                let perms: PermissionSet =
                    all.iter().copied().filter(|_| next() % 4 == 0).collect();
                let role = if perms.is_empty() {
                    Role::builtin("auditor").expect("built-in")
                } else {
                    Role::custom(Name::parse(&format!("r{round}-{i}")).unwrap(), perms).unwrap()
                };
                let scope = match next() % 4 {
                    0 => Scope::Org,
                    n => Scope::Policy(policies[n as usize - 1]),
                };
                Grant { role, scope }
            })
            .collect();
        let held_at = |scope: Scope| -> PermissionSet {
            grants
                .iter()
                .filter(|g| g.scope == scope)
                .fold(PermissionSet::EMPTY, |acc, g| {
                    acc.union(g.role.permissions())
                })
        };
        let ask = Ask::new(&grants);
        let mut targets = vec![Target::Org(ORG), Target::Org(OTHER_ORG)];
        for p in policies {
            targets.push(in_policy(ORG, p));
            targets.push(in_policy(OTHER_ORG, p));
        }
        for target in targets {
            for &p in &all {
                let want = match target {
                    Target::Org(org) => org == ORG && held_at(Scope::Org).contains(p),
                    Target::Policy { org, policy } => {
                        org == ORG
                            && (held_at(Scope::Org).contains(p)
                                || held_at(Scope::Policy(policy)).contains(p))
                    }
                };
                let got = ask.decide(&p.to_string(), target);
                assert_eq!(
                    got.is_allowed(),
                    want,
                    "round {round}, {p} on {target:?}, grants {grants:?}: {got:?}"
                );
            }
        }
    }
}
