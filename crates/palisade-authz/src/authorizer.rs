//! The Cedar side: schema, static policies, role templates, and the
//! per-request entities, context and policy set.
use crate::conditions::{AccessContext, Facts, OrgConditions};
use crate::decision::{Decision, DenyReason};
use crate::model::{AdminFacts, Caller, Scope, Target};
use crate::permission::{Permission, PermissionSet};
use cedar_policy as cedar;
use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet,
    RestrictedExpression, Schema, SlotId, Template, ValidationMode, Validator,
};
use palisade_core::OrgId;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{PoisonError, RwLock};

/// The static policies, each with the id that names it in a decision's
/// reasons. Every `forbid` id is a [`DenyReason::code`].
const STATIC_POLICIES: &[(&str, &str)] = &[
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
        "sign-in",
        r#"permit (principal, action == Action::"sign-in", resource);"#,
    ),
];

/// The Cedar action that signing in is checked as.
const SIGN_IN: &str = "sign-in";

/// Templates kept compiled, at most. Every distinct permission set among the
/// roles in use needs one; past this many, a role's template is compiled
/// for each request instead of kept (correct, slower).
const MAX_TEMPLATES: usize = 4096;

/// Decides admin requests with Cedar. Build one at start and share it.
///
/// It holds only things derived from this crate's own text (schema, static
/// policies) and compiled role templates keyed by their exact permission
/// set; no grant, role name, admin or organization data survives a call.
#[derive(Debug)]
pub struct Authorizer {
    schema: Schema,
    schema_source: String,
    base: PolicySet,
    templates: RwLock<HashMap<u32, Template>>,
    cedar: cedar::Authorizer,
    org_type: EntityTypeName,
    policy_type: EntityTypeName,
    admin_type: EntityTypeName,
    actions: Vec<EntityUid>,
    sign_in: EntityUid,
}

/// A fault while building the Cedar request: refused as
/// [`DenyReason::PolicyError`].
struct Fault;

impl<E: std::error::Error> From<E> for Fault {
    fn from(_: E) -> Fault {
        Fault
    }
}

/// One request's Cedar inputs, built once and evaluated for one or more
/// actions.
struct Prepared {
    principal: EntityUid,
    resource: EntityUid,
    context: Context,
    entities: Entities,
    policies: PolicySet,
}

impl Default for Authorizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Authorizer {
    /// Parse the schema and the static policies, validate the policies
    /// against the schema, and compile the built-in roles' templates.
    pub fn new() -> Authorizer {
        // Invariant for every `expect` here: the inputs are this crate's own
        // constant text, which the tests parse and validate.
        let schema_source = schema_source();
        let schema = Schema::from_cedarschema_str(&schema_source)
            .map(|(schema, _warnings)| schema)
            .expect("the Cedar schema parses");
        let mut base = PolicySet::new();
        for (id, text) in STATIC_POLICIES {
            let policy = cedar::Policy::parse(Some(PolicyId::new(id)), *text)
                .expect("the static policies parse");
            base.add(policy).expect("static policy ids are distinct");
        }
        let validation = Validator::new(schema.clone()).validate(&base, ValidationMode::Strict);
        assert!(
            validation.validation_passed(),
            "the static policies match the schema: {validation}"
        );
        let type_name = |s| EntityTypeName::from_str(s).expect("entity type names parse");
        let action =
            |id: &str| EntityUid::from_type_name_and_id(type_name("Action"), EntityId::new(id));
        let authorizer = Authorizer {
            actions: Permission::all().map(|p| action(&p.to_string())).collect(),
            sign_in: action(SIGN_IN),
            org_type: type_name("Org"),
            policy_type: type_name("Policy"),
            admin_type: type_name("Admin"),
            templates: RwLock::new(HashMap::new()),
            cedar: cedar::Authorizer::new(),
            base,
            schema,
            schema_source,
        };
        for role in crate::role::builtin_roles() {
            authorizer
                .template(role.permissions())
                .ok()
                .expect("the built-in roles' templates compile");
        }
        authorizer
    }

    /// Decide whether `caller` may do `permission` on `target`.
    pub fn authorize(
        &self,
        caller: &Caller<'_>,
        permission: Permission,
        target: Target,
    ) -> Decision {
        match self.prepare(
            caller.admin,
            caller.grants,
            caller.conditions,
            caller.context,
            target,
            None,
        ) {
            Ok(prepared) => self.decide(&prepared, &self.actions[permission.index()]),
            Err(Fault) => Decision::Deny(DenyReason::PolicyError),
        }
    }

    /// The permissions `caller` has on `target` right now, for a console
    /// that hides what the admin may not do. Each one is decided exactly as
    /// [`authorize`](Self::authorize) decides it (same entities, same
    /// policies, one Cedar evaluation per permission).
    pub fn allowed(&self, caller: &Caller<'_>, target: Target) -> PermissionSet {
        let Ok(prepared) = self.prepare(
            caller.admin,
            caller.grants,
            caller.conditions,
            caller.context,
            target,
            None,
        ) else {
            return PermissionSet::EMPTY;
        };
        Permission::all()
            .filter(|&p| {
                self.decide(&prepared, &self.actions[p.index()])
                    .is_allowed()
            })
            .collect()
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
        match self.prepare(
            admin,
            &[],
            conditions,
            context,
            Target::Org(admin.org),
            None,
        ) {
            Ok(prepared) => self.decide(&prepared, &self.sign_in),
            Err(Fault) => Decision::Deny(DenyReason::PolicyError),
        }
    }

    /// The Cedar schema the policies are validated against.
    pub fn schema_source(&self) -> &str {
        &self.schema_source
    }

    /// The static policies (conditional access, account status, organization
    /// boundary, sign-in), one per line, each preceded by its id.
    pub fn static_policies_source() -> String {
        STATIC_POLICIES
            .iter()
            .map(|(id, text)| format!("@id(\"{id}\")\n{text}\n"))
            .collect()
    }

    /// The Cedar template a role with `permissions` compiles to; each grant
    /// of the role links it with `?principal` = the admin and `?resource` =
    /// the grant's scope.
    pub fn template_source(permissions: PermissionSet) -> String {
        let actions: Vec<String> = permissions
            .iter()
            .map(|p| format!("Action::\"{p}\""))
            .collect();
        format!(
            "permit (principal == ?principal, action in [{}], resource in ?resource);",
            actions.join(", ")
        )
    }

    fn template(&self, permissions: PermissionSet) -> Result<Template, Fault> {
        let bits = permissions.bits();
        let cached = self
            .templates
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&bits)
            .cloned();
        if let Some(template) = cached {
            return Ok(template);
        }
        let template =
            Template::parse(Some(template_id(bits)), Self::template_source(permissions))?;
        let mut set = PolicySet::new();
        set.add_template(template.clone())?;
        if !Validator::new(self.schema.clone())
            .validate(&set, ValidationMode::Strict)
            .validation_passed()
        {
            return Err(Fault);
        }
        let mut cache = self
            .templates
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.len() < MAX_TEMPLATES {
            cache.insert(bits, template.clone());
        }
        Ok(template)
    }

    fn entity(&self, ty: &EntityTypeName, id: i64) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id.to_string()))
    }

    fn org(&self, org: OrgId) -> EntityUid {
        self.entity(&self.org_type, org.0)
    }

    /// Build the Cedar inputs of one request. `schema` is given only by the
    /// tests, to check that the entities and context conform.
    fn prepare(
        &self,
        admin: &AdminFacts,
        grants: &[crate::model::Grant],
        conditions: &OrgConditions,
        context: &AccessContext,
        target: Target,
        schema: Option<&Schema>,
    ) -> Result<Prepared, Fault> {
        let principal = self.entity(&self.admin_type, admin.id.0);
        let admin_org = self.org(admin.org);

        // Entities: the admin (status, organization), the admin's
        // organization, the target and the organization it is in.
        let mut entities = Vec::with_capacity(4);
        entities.push(Entity::new(
            principal.clone(),
            HashMap::from([
                (
                    "status".to_owned(),
                    RestrictedExpression::new_string(admin.status.as_str().to_owned()),
                ),
                (
                    "org".to_owned(),
                    RestrictedExpression::new_entity_uid(admin_org.clone()),
                ),
            ]),
            HashSet::new(),
        )?);
        entities.push(Entity::new_no_attrs(admin_org.clone(), HashSet::new()));
        let target_org = self.org(target.org());
        if target.org() != admin.org {
            entities.push(Entity::new_no_attrs(target_org.clone(), HashSet::new()));
        }
        let resource = match target {
            Target::Org(_) => target_org,
            Target::Policy { policy, .. } => {
                let uid = self.entity(&self.policy_type, policy.0);
                entities.push(Entity::new_no_attrs(
                    uid.clone(),
                    HashSet::from([target_org]),
                ));
                uid
            }
        };
        let entities = Entities::from_entities(entities, schema)?;

        // Context: each condition of the organization and whether this
        // request meets it.
        let facts = Facts::new(conditions, context);
        let context = Context::from_pairs([
            (
                "mfa_required".to_owned(),
                RestrictedExpression::new_bool(facts.mfa_required),
            ),
            (
                "mfa_verified".to_owned(),
                RestrictedExpression::new_bool(facts.mfa_verified),
            ),
            (
                "network_restricted".to_owned(),
                RestrictedExpression::new_bool(facts.network_restricted),
            ),
            (
                "from_trusted_network".to_owned(),
                RestrictedExpression::new_bool(facts.trusted_network),
            ),
            (
                "hours_restricted".to_owned(),
                RestrictedExpression::new_bool(facts.hours_restricted),
            ),
            (
                "in_office_hours".to_owned(),
                RestrictedExpression::new_bool(facts.office_hours),
            ),
        ])?;

        // Policies: the static ones, plus one template per distinct
        // permission set among the grants and one link per distinct
        // (permission set, scope).
        let mut keys: Vec<(u32, Option<i64>)> = grants
            .iter()
            .map(|g| {
                let scope = match g.scope {
                    Scope::Org => None,
                    Scope::Policy(p) => Some(p.0),
                };
                (g.role.permissions().bits(), scope)
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut policies = self.base.clone();
        let mut added = None;
        for (n, &(bits, scope)) in keys.iter().enumerate() {
            if added != Some(bits) {
                policies.add_template(self.template(PermissionSet::from_bits(bits))?)?;
                added = Some(bits);
            }
            let scope = match scope {
                None => admin_org.clone(),
                Some(policy) => self.entity(&self.policy_type, policy),
            };
            policies.link(
                template_id(bits),
                PolicyId::new(format!("grant-{n}")),
                HashMap::from([
                    (SlotId::principal(), principal.clone()),
                    (SlotId::resource(), scope),
                ]),
            )?;
        }

        Ok(Prepared {
            principal,
            resource,
            context,
            entities,
            policies,
        })
    }

    fn decide(&self, prepared: &Prepared, action: &EntityUid) -> Decision {
        let Ok(request) = cedar::Request::new(
            prepared.principal.clone(),
            action.clone(),
            prepared.resource.clone(),
            prepared.context.clone(),
            None,
        ) else {
            return Decision::Deny(DenyReason::PolicyError);
        };
        let response = self
            .cedar
            .is_authorized(&request, &prepared.policies, &prepared.entities);
        // A policy that fails to evaluate is skipped by Cedar; a skipped
        // forbid could turn a deny into an allow, so any error refuses.
        if response.diagnostics().errors().next().is_some() {
            return Decision::Deny(DenyReason::PolicyError);
        }
        match response.decision() {
            cedar::Decision::Allow => Decision::Allow,
            // Cedar's reasons for a deny are the forbid policies that hold
            // (whether or not a permit also holds); none means no permit.
            cedar::Decision::Deny => Decision::Deny(
                response
                    .diagnostics()
                    .reason()
                    .filter_map(|id| DenyReason::from_code(id.as_ref()))
                    .min()
                    .unwrap_or(DenyReason::NoGrant),
            ),
        }
    }
}

fn template_id(bits: u32) -> PolicyId {
    PolicyId::new(format!("role-{bits:07x}"))
}

fn schema_source() -> String {
    let actions: Vec<String> = Permission::all().map(|p| format!("\"{p}\"")).collect();
    format!(
        r#"// Palisade admin authorization.
entity Org;
entity Policy in [Org];
entity Admin = {{ status: String, org: Org }};
type Conditions = {{
  mfa_required: Bool,
  mfa_verified: Bool,
  network_restricted: Bool,
  from_trusted_network: Bool,
  hours_restricted: Bool,
  in_office_hours: Bool,
}};
action {} appliesTo {{
  principal: [Admin],
  resource: [Org, Policy],
  context: Conditions,
}};
action "{SIGN_IN}" appliesTo {{
  principal: [Admin],
  resource: [Org],
  context: Conditions,
}};
"#,
        actions.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AdminId, AdminStatus, Grant};
    use crate::role::{builtin_roles, Role};
    use palisade_core::{Name, PolicyId};

    /// The entities and context built per request conform to the schema, and
    /// so do requests for every action (the production path skips these
    /// checks for speed).
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
                let prepared = authz
                    .prepare(
                        &admin,
                        &grants,
                        &conditions,
                        &context,
                        target,
                        Some(&authz.schema),
                    )
                    .ok()
                    .expect("entities conform");
                for action in &authz.actions {
                    cedar::Request::new(
                        prepared.principal.clone(),
                        action.clone(),
                        prepared.resource.clone(),
                        prepared.context.clone(),
                        Some(&authz.schema),
                    )
                    .expect("request conforms");
                }
                if let Target::Org(_) = target {
                    cedar::Request::new(
                        prepared.principal.clone(),
                        authz.sign_in.clone(),
                        prepared.resource.clone(),
                        prepared.context.clone(),
                        Some(&authz.schema),
                    )
                    .expect("sign-in request conforms");
                }
            }
        }
    }

    #[test]
    fn every_forbid_is_a_deny_reason() {
        for (id, text) in STATIC_POLICIES {
            if text.starts_with("forbid") {
                assert!(DenyReason::from_code(id).is_some(), "{id}");
            }
        }
        for reason in DenyReason::ALL {
            assert_eq!(DenyReason::from_code(reason.code()), Some(reason));
        }
    }

    #[test]
    fn templates_are_keyed_by_permission_set() {
        let authz = Authorizer::new();
        assert_eq!(authz.templates.read().unwrap().len(), 4);
        let set: PermissionSet = "events:read,admins:update".parse().unwrap();
        authz.template(set).ok().expect("compiles");
        authz.template(set).ok().expect("cached");
        assert_eq!(authz.templates.read().unwrap().len(), 5);
        assert_eq!(
            Authorizer::template_source(set),
            r#"permit (principal == ?principal, action in [Action::"events:read", Action::"admins:update"], resource in ?resource);"#
        );
    }
}
