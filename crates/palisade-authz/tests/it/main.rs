//! Integration tests of palisade-authz: one binary, table-driven.
use palisade_authz::*;
use palisade_core::{Name, OrgId, PolicyId};
use std::sync::OnceLock;

mod access;
mod parse;
mod roles;

/// One authorizer for every test, as the server shares one.
fn authz() -> &'static Authorizer {
    static AUTHZ: OnceLock<Authorizer> = OnceLock::new();
    AUTHZ.get_or_init(Authorizer::new)
}

const ORG: OrgId = OrgId(1);
const OTHER_ORG: OrgId = OrgId(2);
const P7: PolicyId = PolicyId(7);
const P8: PolicyId = PolicyId(8);

/// Monday 2026-11-23 12:00 UTC, in milliseconds since the epoch.
const MONDAY_NOON: i64 = 1_795_435_200_000;

fn admin(status: AdminStatus) -> AdminFacts {
    AdminFacts {
        id: AdminId(42),
        org: ORG,
        status,
    }
}

fn context() -> AccessContext {
    AccessContext {
        mfa_verified: false,
        source_ip: "192.0.2.10".parse().unwrap(),
        now_unix_ms: MONDAY_NOON,
    }
}

fn grant(role: &str, scope: Scope) -> Grant {
    Grant {
        role: Role::builtin(role).expect("built-in role"),
        scope,
    }
}

fn custom(name: &str, permissions: &str) -> Role {
    Role::custom(Name::parse(name).unwrap(), permissions.parse().unwrap()).unwrap()
}

fn in_policy(org: OrgId, policy: PolicyId) -> Target {
    Target::Policy { org, policy }
}

/// A caller made of parts, decided by `authorize`, and checked against
/// `allowed` so the console's answer cannot drift from the API's.
struct Ask<'a> {
    admin: AdminFacts,
    grants: &'a [Grant],
    conditions: OrgConditions,
    context: AccessContext,
}

impl<'a> Ask<'a> {
    fn new(grants: &'a [Grant]) -> Self {
        Ask {
            admin: admin(AdminStatus::Active),
            grants,
            conditions: OrgConditions::default(),
            context: context(),
        }
    }

    fn decide(&self, permission: &str, target: Target) -> Decision {
        let caller = Caller {
            admin: &self.admin,
            grants: self.grants,
            conditions: &self.conditions,
            context: &self.context,
        };
        let permission: Permission = permission.parse().unwrap();
        let decision = authz().authorize(&caller, permission, target);
        assert_eq!(
            authz().allowed(&caller, target).contains(permission),
            decision.is_allowed(),
            "allowed() disagrees with authorize() for {permission} on {target:?}"
        );
        decision
    }
}
