//! The Cedar side: schema and policies (compiled once), and the entities
//! and context built for each request.
use crate::conditions::{AccessContext, Facts, OrgConditions};
use crate::decision::{Decision, DenyReason};
use crate::model::{AdminFacts, AdminStatus, Caller, Grant, Scope, Target};
use crate::permission::{Permission, PermissionSet};
use cedar_policy as cedar;
use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;

/// The policies, each with its id. A `forbid`'s id is the
/// [`DenyReason::code`] it reports.
const POLICIES: &[(&str, &str)] = &[
    (
        "admin-disabled",
        r#"forbid (principal, action, resource) when { principal.status == "disabled" };"#,
    ),
    (
        "admin-locked",
        r#"forbid (principal, action, resource) when { principal.status == "locked" };"#,
    ),
    (
        "mfa-required",
        r#"forbid (principal, action, resource) when { context.mfa_required && !context.mfa_verified };"#,
    ),
    (
        "untrusted-network",
        r#"forbid (principal, action, resource) when { context.network_restricted && !context.from_trusted_network };"#,
    ),
    (
        "outside-office-hours",
        r#"forbid (principal, action, resource) when { context.hours_restricted && !context.in_office_hours };"#,
    ),
    (
        "other-organization",
        r#"forbid (principal, action, resource) unless { resource in principal.org };"#,
    ),
    (
        "grants",
        r#"permit (principal, action, resource) when {
  (principal.hasTag(resource.scope) && action in principal.getTag(resource.scope)) ||
  (principal.hasTag(resource.org_scope) && action in principal.getTag(resource.org_scope))
};"#,
    ),
    (
        "sign-in",
        r#"permit (principal, action == Action::"sign-in", resource);"#,
    ),
];

/// The permit only sign-in can match (`action == Action::"sign-in"`): left
/// out of the set that other requests are evaluated against. A permit that
/// cannot match changes nothing but the time taken.
const ONLY_SIGN_IN: &str = "sign-in";
/// The permit sign-in cannot match (no group holds `Action::"sign-in"`, and
/// sign-in brings no grants): left out of the set sign-in is evaluated
/// against.
const NEVER_SIGN_IN: &str = "grants";

/// The Cedar action that signing in is checked as.
const SIGN_IN: &str = "sign-in";

/// Decides admin requests with Cedar. Build one at start and share it.
///
/// It holds what is derived from this crate's own text (the policies and
/// the names of entity types and actions) and a memo of Cedar's answers by
/// shape (see `Shape`): nothing about any admin, grant, role or organization is kept
/// between calls, only "a request of this shape is allowed (or refused for
/// this reason)", which is true for every request of that shape.
#[derive(Debug)]
pub struct Authorizer {
    memo: Mutex<HashMap<Shape, Decision>>,
    schema_source: String,
    requests: PolicySet,
    sign_ins: PolicySet,
    cedar: cedar::Authorizer,
    org_type: EntityTypeName,
    policy_type: EntityTypeName,
    admin_type: EntityTypeName,
    action_type: EntityTypeName,
    actions: Vec<EntityUid>,
    sign_in: EntityUid,
}

/// Shapes remembered at most; past it the memo starts over.
const MEMO_MAX: usize = 65_536;

/// Everything a request's decision can depend on, with the ids taken out.
///
/// The policies read the admin's status, whether the target is in the
/// admin's organization (`resource in principal.org`), the admin's tags at
/// the target's scope and at its organization's scope (the permissions
/// held there), the action, and the conditional-access facts; nothing
/// else, and no policy names an entity. Two requests of the same shape
/// therefore get the same answer from Cedar, and the answer for a shape is
/// remembered: the first request of a shape is evaluated by Cedar, the
/// rest reuse its answer. (A new policy that reads anything else must add
/// it here; `memo_answers_as_cedar_does` compares memo and Cedar on random
/// requests with random ids.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Shape {
    status: AdminStatus,
    same_org: bool,
    on_policy: bool,
    at_org: Option<PermissionSet>,
    at_policy: Option<PermissionSet>,
    facts: Facts,
    permission: Permission,
}

impl Shape {
    fn of(
        admin: &AdminFacts,
        held: &Held,
        target: Target,
        facts: Facts,
        permission: Permission,
    ) -> Shape {
        let (on_policy, at_policy) = match target {
            Target::Org(_) => (false, None),
            Target::Policy { policy, .. } => (true, held.at(ScopeKey::Policy(policy.0))),
        };
        Shape {
            status: admin.status,
            same_org: target.org() == admin.org,
            on_policy,
            at_org: held.at(ScopeKey::Org(target.org().0)),
            at_policy,
            facts,
            permission,
        }
    }
}

/// A fault while building or evaluating the Cedar request: refused as
/// [`DenyReason::PolicyError`].
struct Fault;

impl<E: std::error::Error> From<E> for Fault {
    fn from(_: E) -> Fault {
        Fault
    }
}

/// One request's Cedar inputs, built once and evaluated for one or more
/// actions.
struct Inputs {
    principal: EntityUid,
    resource: EntityUid,
    context: Context,
    entities: Entities,
}

/// What the caller's grants come to on one target: for each scope that
/// reaches the target (as its tag key), the permissions held there (the
/// union of the roles granted at that scope).
///
/// Only the target's own scope and its organization's are kept: the
/// policies read the admin's tags only at `resource.scope` and
/// `resource.org_scope`, so tags for other scopes (and the action groups
/// only they bring) cannot change a decision; leaving them out (Cedar's
/// "entity slicing") keeps the entities, and the time to build them, small
/// however many grants an admin holds.
struct Held(Vec<(ScopeKey, PermissionSet)>);

impl Held {
    fn new(admin: &AdminFacts, grants: &[Grant], target: Target) -> Held {
        let reaching = [
            Some(ScopeKey::Org(target.org().0)),
            match target {
                Target::Org(_) => None,
                Target::Policy { policy, .. } => Some(ScopeKey::Policy(policy.0)),
            },
        ];
        let mut by_scope: Vec<(ScopeKey, PermissionSet)> = grants
            .iter()
            .map(|g| {
                let scope = match g.scope {
                    Scope::Org => ScopeKey::Org(admin.org.0),
                    Scope::Policy(p) => ScopeKey::Policy(p.0),
                };
                (scope, g.role.permissions())
            })
            .filter(|(scope, _)| reaching.contains(&Some(*scope)))
            .collect();
        by_scope.sort_unstable_by_key(|&(scope, _)| scope);
        let mut held: Vec<(ScopeKey, PermissionSet)> = Vec::with_capacity(by_scope.len());
        for (scope, permissions) in by_scope {
            match held.last_mut() {
                Some((last, union)) if *last == scope => *union = union.union(permissions),
                _ => held.push((scope, permissions)),
            }
        }
        Held(held)
    }

    /// The permissions held at `scope`, if any grant is there.
    fn at(&self, scope: ScopeKey) -> Option<PermissionSet> {
        self.0.iter().find(|(s, _)| *s == scope).map(|&(_, p)| p)
    }

    /// The distinct permission sets held, each an action group.
    fn groups(&self) -> Vec<PermissionSet> {
        let mut groups: Vec<PermissionSet> = self.0.iter().map(|&(_, p)| p).collect();
        groups.sort_unstable();
        groups.dedup();
        groups
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum ScopeKey {
    Org(i64),
    Policy(i64),
}

impl ScopeKey {
    /// The key of the scope in the admin's tags and the targets' `scope`
    /// and `org_scope` attributes.
    fn tag(self) -> String {
        match self {
            ScopeKey::Org(org) => format!("org:{org}"),
            ScopeKey::Policy(policy) => format!("policy:{policy}"),
        }
    }
}

impl Default for Authorizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Authorizer {
    /// Parse the schema and the policies and validate the policies against
    /// the schema (a few milliseconds).
    ///
    /// Panics only if this crate's own schema or policy text is broken,
    /// which its tests rule out.
    pub fn new() -> Authorizer {
        // Invariant for every `expect` here: the inputs are this crate's own
        // constant text, which the tests parse and validate.
        let schema_source = schema_source(&[]);
        let schema = Schema::from_cedarschema_str(&schema_source)
            .map(|(schema, _warnings)| schema)
            .expect("the Cedar schema parses");
        let set = |skip: &str| {
            let mut set = PolicySet::new();
            for (id, text) in POLICIES.iter().filter(|(id, _)| *id != skip) {
                let policy = cedar::Policy::parse(Some(PolicyId::new(id)), *text)
                    .expect("the policies parse");
                set.add(policy).expect("policy ids are distinct");
            }
            let validation = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
            assert!(
                validation.validation_passed(),
                "the policies match the schema: {validation}"
            );
            set
        };
        let type_name = |s| EntityTypeName::from_str(s).expect("entity type names parse");
        let action =
            |id: &str| EntityUid::from_type_name_and_id(type_name("Action"), EntityId::new(id));
        Authorizer {
            memo: Mutex::new(HashMap::new()),
            actions: Permission::all().map(|p| action(&p.to_string())).collect(),
            sign_in: action(SIGN_IN),
            org_type: type_name("Org"),
            policy_type: type_name("Policy"),
            admin_type: type_name("Admin"),
            action_type: type_name("Action"),
            cedar: cedar::Authorizer::new(),
            requests: set(ONLY_SIGN_IN),
            sign_ins: set(NEVER_SIGN_IN),
            schema_source,
        }
    }

    /// Decide whether `caller` may do `permission` on `target`.
    pub fn authorize(
        &self,
        caller: &Caller<'_>,
        permission: Permission,
        target: Target,
    ) -> Decision {
        let held = Held::new(caller.admin, caller.grants, target);
        let facts = Facts::new(caller.conditions, caller.context);
        let shape = Shape::of(caller.admin, &held, target, facts, permission);
        if let Some(decision) = self.recall(&shape) {
            return decision;
        }
        match self.evaluate_one(caller, &held, target, facts, permission) {
            Ok(decision) => {
                self.remember(shape, decision);
                decision
            }
            Err(Fault) => Decision::Deny(DenyReason::PolicyError),
        }
    }

    /// What [`authorize`](Self::authorize) answers, always from a fresh
    /// Cedar evaluation (neither reading nor filling the memo): the
    /// baseline the benchmark compares the memo with.
    pub fn evaluate(
        &self,
        caller: &Caller<'_>,
        permission: Permission,
        target: Target,
    ) -> Decision {
        let held = Held::new(caller.admin, caller.grants, target);
        let facts = Facts::new(caller.conditions, caller.context);
        self.evaluate_one(caller, &held, target, facts, permission)
            .unwrap_or(Decision::Deny(DenyReason::PolicyError))
    }

    /// One Cedar evaluation of `permission` on `target`.
    fn evaluate_one(
        &self,
        caller: &Caller<'_>,
        held: &Held,
        target: Target,
        facts: Facts,
        permission: Permission,
    ) -> Result<Decision, Fault> {
        let inputs = self.inputs(caller, held, target, facts, &[permission], None)?;
        self.decide(&self.requests, &inputs, &self.actions[permission.index()])
    }

    fn recall(&self, shape: &Shape) -> Option<Decision> {
        self.memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(shape)
            .copied()
    }

    fn remember(&self, shape: Shape, decision: Decision) {
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if memo.len() >= MEMO_MAX {
            memo.clear();
        }
        memo.insert(shape, decision);
    }

    /// The permissions `caller` has on `target` right now, for a console
    /// that hides what the admin may not do. Each one is decided exactly as
    /// [`authorize`](Self::authorize) decides it: the same policies and
    /// entities (plus the other actions' entities, which a request for this
    /// action does not read).
    pub fn allowed(&self, caller: &Caller<'_>, target: Target) -> PermissionSet {
        let held = Held::new(caller.admin, caller.grants, target);
        let facts = Facts::new(caller.conditions, caller.context);
        let mut allowed = PermissionSet::EMPTY;
        let mut unknown = Vec::new();
        for p in Permission::all() {
            let shape = Shape::of(caller.admin, &held, target, facts, p);
            match self.recall(&shape) {
                Some(decision) if decision.is_allowed() => allowed.insert(p),
                Some(_) => {}
                None => unknown.push((p, shape)),
            }
        }
        if unknown.is_empty() {
            return allowed;
        }
        let permissions: Vec<Permission> = unknown.iter().map(|&(p, _)| p).collect();
        let Ok(inputs) = self.inputs(caller, &held, target, facts, &permissions, None) else {
            return PermissionSet::EMPTY;
        };
        for (p, shape) in unknown {
            match self.decide(&self.requests, &inputs, &self.actions[p.index()]) {
                Ok(decision) => {
                    self.remember(shape, decision);
                    if decision.is_allowed() {
                        allowed.insert(p);
                    }
                }
                Err(Fault) => return PermissionSet::EMPTY,
            }
        }
        allowed
    }

    /// Decide whether `admin` may sign in (start a session) now: the
    /// account's status and the organization's conditions, no grants. A
    /// [`DenyReason::MfaRequired`] answer to a session without a verified
    /// second factor means "ask for it", not "refuse for good".
    pub fn sign_in(
        &self,
        admin: &AdminFacts,
        conditions: &OrgConditions,
        context: &AccessContext,
    ) -> Decision {
        let caller = Caller {
            admin,
            grants: &[],
            conditions,
            context,
        };
        self.inputs(
            &caller,
            &Held(Vec::new()),
            Target::Org(admin.org),
            Facts::new(conditions, context),
            &[],
            None,
        )
        .and_then(|inputs| self.decide(&self.sign_ins, &inputs, &self.sign_in))
        .unwrap_or(Decision::Deny(DenyReason::PolicyError))
    }

    /// The Cedar schema the policies are validated against. The action
    /// groups that grants bring (`Action::"perms:…"`) are not declared in
    /// it: they exist per request.
    pub fn schema_source(&self) -> &str {
        &self.schema_source
    }

    /// The policies, each preceded by its id.
    pub fn policies_source() -> String {
        POLICIES
            .iter()
            .map(|(id, text)| format!("@id(\"{id}\")\n{text}\n"))
            .collect()
    }

    fn entity(&self, ty: &EntityTypeName, id: impl AsRef<str>) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
    }

    fn group(&self, permissions: PermissionSet) -> EntityUid {
        self.entity(&self.action_type, group_id(permissions))
    }

    /// Build the Cedar entities and context of one request, with the
    /// entities of the actions of `permissions`. `schema` is given only by
    /// the tests, to check that the entities conform.
    fn inputs(
        &self,
        caller: &Caller<'_>,
        held: &Held,
        target: Target,
        facts: Facts,
        permissions: &[Permission],
        schema: Option<&Schema>,
    ) -> Result<Inputs, Fault> {
        let admin = caller.admin;
        let principal = self.entity(&self.admin_type, admin.id.to_string());
        let mut entities = Vec::with_capacity(2 + permissions.len());
        // The admin: status, organization, and a tag per scope it holds
        // permissions at, naming the group of those permissions.
        entities.push(Entity::new_with_tags(
            principal.clone(),
            [
                (
                    "status".to_owned(),
                    RestrictedExpression::new_string(admin.status.as_str().to_owned()),
                ),
                (
                    "org".to_owned(),
                    RestrictedExpression::new_entity_uid(
                        self.entity(&self.org_type, admin.org.to_string()),
                    ),
                ),
            ],
            [],
            held.0.iter().map(|(scope, permissions)| {
                (
                    scope.tag(),
                    RestrictedExpression::new_entity_uid(self.group(*permissions)),
                )
            }),
        )?);
        // The target: an organization, or a policy in its organization;
        // either names the scopes that reach it.
        let org = target.org();
        let org_uid = self.entity(&self.org_type, org.to_string());
        let org_scope = ScopeKey::Org(org.0).tag();
        let (resource, scope, parents) = match target {
            Target::Org(_) => (org_uid, org_scope.clone(), vec![]),
            Target::Policy { policy, .. } => (
                self.entity(&self.policy_type, policy.to_string()),
                ScopeKey::Policy(policy.0).tag(),
                vec![org_uid],
            ),
        };
        entities.push(Entity::new(
            resource.clone(),
            HashMap::from([
                ("scope".to_owned(), RestrictedExpression::new_string(scope)),
                (
                    "org_scope".to_owned(),
                    RestrictedExpression::new_string(org_scope),
                ),
            ]),
            parents.into_iter().collect(),
        )?);
        // Each action, in the groups that hold it.
        let groups = held.groups();
        for &permission in permissions {
            entities.push(Entity::new_no_attrs(
                self.actions[permission.index()].clone(),
                groups
                    .iter()
                    .filter(|g| g.contains(permission))
                    .map(|&g| self.group(g))
                    .collect(),
            ));
        }
        let entities = Entities::from_entities(entities, schema)?;

        // Context: each condition of the organization and whether this
        // request meets it.
        let context = Context::from_pairs([
            bool_pair("mfa_required", facts.mfa_required),
            bool_pair("mfa_verified", facts.mfa_verified),
            bool_pair("network_restricted", facts.network_restricted),
            bool_pair("from_trusted_network", facts.trusted_network),
            bool_pair("hours_restricted", facts.hours_restricted),
            bool_pair("in_office_hours", facts.office_hours),
        ])?;
        Ok(Inputs {
            principal,
            resource,
            context,
            entities,
        })
    }

    /// One Cedar evaluation of `policies`.
    fn decide(
        &self,
        policies: &PolicySet,
        inputs: &Inputs,
        action: &EntityUid,
    ) -> Result<Decision, Fault> {
        let request = cedar::Request::new(
            inputs.principal.clone(),
            action.clone(),
            inputs.resource.clone(),
            inputs.context.clone(),
            None,
        )?;
        let response = self
            .cedar
            .is_authorized(&request, policies, &inputs.entities);
        // A policy that fails to evaluate is skipped by Cedar; a skipped
        // forbid could turn a deny into an allow, so any error refuses.
        if response.diagnostics().errors().next().is_some() {
            return Err(Fault);
        }
        Ok(match response.decision() {
            cedar::Decision::Allow => Decision::Allow,
            // Cedar's reasons for a deny are the forbids that hold, whether
            // or not a permit holds too; none means no permit held.
            cedar::Decision::Deny => Decision::Deny(
                response
                    .diagnostics()
                    .reason()
                    .filter_map(|id| DenyReason::from_code(id.as_ref()))
                    .min()
                    .unwrap_or(DenyReason::NoGrant),
            ),
        })
    }
}

fn bool_pair(name: &str, value: bool) -> (String, RestrictedExpression) {
    (name.to_owned(), RestrictedExpression::new_bool(value))
}

/// The id of the action group of a set of permissions: `perms:` and the
/// set's bits in hex (bit 4 × resource + operation, in
/// [`Permission::all`] order).
fn group_id(permissions: PermissionSet) -> String {
    format!("perms:{:07x}", permissions.bits())
}

/// The schema, with the action groups `groups` declared (the tests declare
/// some to validate requests; at run time there are none: a request brings
/// its own).
fn schema_source(groups: &[PermissionSet]) -> String {
    let mut actions = String::new();
    for p in Permission::all() {
        let member_of: Vec<String> = groups
            .iter()
            .filter(|g| g.contains(p))
            .map(|&g| format!("\"{}\"", group_id(g)))
            .collect();
        let member_of = if member_of.is_empty() {
            String::new()
        } else {
            format!(" in [{}]", member_of.join(", "))
        };
        actions.push_str(&format!(
            "action \"{p}\"{member_of} appliesTo {{ principal: [Admin], resource: [Org, Policy], context: Conditions }};\n"
        ));
    }
    for &g in groups {
        actions.push_str(&format!("action \"{}\";\n", group_id(g)));
    }
    format!(
        r#"// Palisade admin authorization.
entity Org = {{ scope: String, org_scope: String }};
entity Policy in [Org] = {{ scope: String, org_scope: String }};
entity Admin = {{ status: String, org: Org }} tags Action;
type Conditions = {{
  mfa_required: Bool,
  mfa_verified: Bool,
  network_restricted: Bool,
  from_trusted_network: Bool,
  hours_restricted: Bool,
  in_office_hours: Bool,
}};
{actions}action "{SIGN_IN}" appliesTo {{ principal: [Admin], resource: [Org], context: Conditions }};
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AdminId;
    use crate::role::{builtin_roles, Role};
    use palisade_core::{Name, OrgId, PolicyId};

    /// With the request's action groups declared in the schema, the
    /// entities and the requests for every action conform (the production
    /// path skips these checks for speed).
    #[test]
    fn requests_conform_to_the_schema() {
        let authz = Authorizer::new();
        let custom = Role::custom(Name::parse("x").unwrap(), "rules:*".parse().unwrap()).unwrap();
        let mut grants: Vec<Grant> = builtin_roles()
            .into_iter()
            .map(|role| Grant {
                role,
                scope: Scope::Policy(PolicyId(7)),
            })
            .collect();
        grants.push(Grant {
            role: custom,
            scope: Scope::Org,
        });
        let conditions = OrgConditions {
            require_mfa: true,
            trusted_networks: vec!["10.0.0.0/8".parse().unwrap()],
            office_hours: Some("mon-fri 08:00-18:00".parse().unwrap()),
        };
        let context = AccessContext {
            mfa_verified: true,
            source_ip: "10.0.0.1".parse().unwrap(),
            now_unix_ms: 0,
        };
        for status in [
            AdminStatus::Active,
            AdminStatus::Disabled,
            AdminStatus::Locked,
        ] {
            let admin = AdminFacts {
                id: AdminId(1),
                org: OrgId(1),
                status,
            };
            let caller = Caller {
                admin: &admin,
                grants: &grants,
                conditions: &conditions,
                context: &context,
            };
            for target in [
                Target::Org(OrgId(1)),
                Target::Org(OrgId(2)),
                Target::Policy {
                    org: OrgId(1),
                    policy: PolicyId(7),
                },
                Target::Policy {
                    org: OrgId(2),
                    policy: PolicyId(8),
                },
            ] {
                let held = Held::new(&admin, &grants, target);
                if target
                    == (Target::Policy {
                        org: OrgId(1),
                        policy: PolicyId(7),
                    })
                {
                    // Two scopes: the policy (four roles merged) and the organization.
                    assert_eq!(held.0.len(), 2);
                }
                let schema = Schema::from_cedarschema_str(&schema_source(&held.groups()))
                    .unwrap()
                    .0;
                let all: Vec<Permission> = Permission::all().collect();
                let inputs = authz
                    .inputs(
                        &caller,
                        &held,
                        target,
                        Facts::new(&conditions, &context),
                        &all,
                        Some(&schema),
                    )
                    .ok()
                    .expect("entities conform");
                let mut actions = authz.actions.clone();
                if let Target::Org(_) = target {
                    actions.push(authz.sign_in.clone());
                }
                for action in actions {
                    cedar::Request::new(
                        inputs.principal.clone(),
                        action,
                        inputs.resource.clone(),
                        inputs.context.clone(),
                        Some(&schema),
                    )
                    .expect("request conforms");
                }
            }
        }
    }

    /// The memo answers every request exactly as a fresh Cedar evaluation
    /// of that request does: random admins (ids, organizations, statuses),
    /// grants, conditions and targets, asked twice each, so that most
    /// answers after the first come from shapes other requests filled.
    #[test]
    fn memo_answers_as_cedar_does() {
        let authz = Authorizer::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let all: Vec<Permission> = Permission::all().collect();
        let roles = builtin_roles();
        let statuses = [
            AdminStatus::Active,
            AdminStatus::Active,
            AdminStatus::Disabled,
            AdminStatus::Locked,
        ];
        let (mut hits, mut asked) = (0usize, 0usize);
        for _ in 0..400 {
            let admin = AdminFacts {
                id: AdminId(i64::try_from(next() % 1000).unwrap()),
                org: OrgId(i64::try_from(next() % 3).unwrap()),
                status: statuses[(next() % 4) as usize],
            };
            let grants: Vec<Grant> = (0..next() % 4)
                .map(|_| Grant {
                    role: roles[(next() % 4) as usize].clone(),
                    scope: match next() % 3 {
                        0 => Scope::Org,
                        n => Scope::Policy(PolicyId(i64::try_from(n).unwrap())),
                    },
                })
                .collect();
            let conditions = OrgConditions {
                require_mfa: next() % 2 == 0,
                trusted_networks: if next() % 2 == 0 {
                    vec!["10.0.0.0/8".parse().unwrap()]
                } else {
                    vec![]
                },
                office_hours: None,
            };
            let context = AccessContext {
                mfa_verified: next() % 2 == 0,
                source_ip: if next() % 2 == 0 {
                    "10.1.2.3".parse().unwrap()
                } else {
                    "192.0.2.1".parse().unwrap()
                },
                now_unix_ms: 0,
            };
            let caller = Caller {
                admin: &admin,
                grants: &grants,
                conditions: &conditions,
                context: &context,
            };
            let org = OrgId(i64::try_from(next() % 3).unwrap());
            let target = match next() % 3 {
                0 => Target::Org(org),
                n => Target::Policy {
                    org,
                    policy: PolicyId(i64::try_from(n).unwrap()),
                },
            };
            let permission = all[(next() % all.len() as u64) as usize];
            let held = Held::new(&admin, &grants, target);
            let facts = Facts::new(&conditions, &context);
            let fresh = authz.evaluate(&caller, permission, target);
            assert_ne!(fresh, Decision::Deny(DenyReason::PolicyError));
            let shape = Shape::of(&admin, &held, target, facts, permission);
            hits += usize::from(authz.recall(&shape).is_some());
            asked += 1;
            for _ in 0..2 {
                assert_eq!(
                    authz.authorize(&caller, permission, target),
                    fresh,
                    "{admin:?} {grants:?} {target:?} {permission}"
                );
            }
            assert_eq!(
                authz.allowed(&caller, target).contains(permission),
                fresh.is_allowed()
            );
        }
        assert!(hits > asked / 4, "the memo was used: {hits} of {asked}");
    }

    #[test]
    fn every_forbid_is_a_deny_reason() {
        for (id, text) in POLICIES {
            assert_eq!(
                text.starts_with("forbid"),
                DenyReason::from_code(id).is_some(),
                "{id}"
            );
        }
        for reason in DenyReason::ALL {
            assert_eq!(DenyReason::from_code(reason.code()), Some(reason));
        }
    }

    #[test]
    fn shareable_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Authorizer>();
    }

    #[test]
    fn sources_show_every_policy() {
        let policies = Authorizer::policies_source();
        for (id, _) in POLICIES {
            assert!(policies.contains(&format!("@id(\"{id}\")")), "{id}");
        }
        let authz = Authorizer::new();
        assert!(authz.schema_source().contains("tags Action"));
        assert!(authz
            .schema_source()
            .contains(r#"action "settings:delete" appliesTo"#));
    }

    #[test]
    fn grants_at_one_scope_are_merged() {
        let admin = AdminFacts {
            id: AdminId(1),
            org: OrgId(3),
            status: AdminStatus::Active,
        };
        let role = |p: &str| Role::custom(Name::parse("r").unwrap(), p.parse().unwrap()).unwrap();
        let grants = [
            Grant {
                role: role("files:read"),
                scope: Scope::Policy(PolicyId(7)),
            },
            Grant {
                role: role("rules:read"),
                scope: Scope::Org,
            },
            Grant {
                role: role("files:update"),
                scope: Scope::Policy(PolicyId(7)),
            },
        ];
        let on = |policy| Target::Policy {
            org: OrgId(3),
            policy: PolicyId(policy),
        };
        let tags = |target| -> Vec<(String, String)> {
            Held::new(&admin, &grants, target)
                .0
                .iter()
                .map(|(k, p)| (k.tag(), group_id(*p)))
                .collect()
        };
        assert_eq!(
            tags(on(7)),
            [
                ("org:3".to_owned(), "perms:0000020".to_owned()),
                ("policy:7".to_owned(), "perms:0000006".to_owned()),
            ]
        );
        // Sliced to the scopes that reach the target: another policy sees
        // only the organization's grants, the organization only its own,
        // another organization none.
        assert_eq!(
            tags(on(8)),
            [("org:3".to_owned(), "perms:0000020".to_owned())]
        );
        assert_eq!(
            tags(Target::Org(OrgId(3))),
            [("org:3".to_owned(), "perms:0000020".to_owned())]
        );
        assert!(tags(Target::Org(OrgId(4))).is_empty());
    }
}
