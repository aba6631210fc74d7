//! Roles: named sets of permissions, built-in or custom.
use crate::error::{quote, Error, ErrorKind};
use crate::permission::{Op, PermissionSet, Resource};
use palisade_core::Name;

/// The names of the built-in roles, in [`builtin_roles`] order.
pub const BUILTIN_ROLE_NAMES: [&str; 4] = ["owner", "security-admin", "approver", "auditor"];

/// A named set of permissions.
///
/// Built-in roles ([`builtin_roles`]) have fixed permissions; custom roles
/// ([`Role::custom`]) are made by an organization at run time. Either way,
/// what a role allows is its permission set alone: the name is for people.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Role {
    name: Name,
    permissions: PermissionSet,
}

impl Role {
    /// A custom role. Refused when `permissions` is empty or when `name` is
    /// a built-in role's name (compared case-insensitively, so `Owner`
    /// cannot pass for `owner`).
    pub fn custom(name: Name, permissions: PermissionSet) -> Result<Role, Error> {
        if BUILTIN_ROLE_NAMES
            .iter()
            .any(|b| b.eq_ignore_ascii_case(name.as_str()))
        {
            return Err(Error::new(
                ErrorKind::ReservedRoleName,
                format!(
                    "role name {} is taken by a built-in role; choose another name",
                    quote(name.as_str())
                ),
            ));
        }
        if permissions.is_empty() {
            return Err(Error::new(
                ErrorKind::EmptyRole,
                format!(
                    "role {} has no permissions; give it at least one",
                    quote(name.as_str())
                ),
            ));
        }
        Ok(Role { name, permissions })
    }

    /// The built-in role called `name`, if there is one.
    pub fn builtin(name: &str) -> Option<Role> {
        builtin_roles()
            .into_iter()
            .find(|r| r.name.as_str() == name)
    }

    /// A role as stored: a built-in role's name with its own permissions, or
    /// a custom role ([`Role::custom`]). This is how a role read back from
    /// the database or the wire is checked.
    pub fn parse(name: &str, permissions: PermissionSet) -> Result<Role, Error> {
        if let Some(builtin) = Role::builtin(name) {
            if builtin.permissions != permissions {
                return Err(Error::new(
                    ErrorKind::BuiltinRoleChanged,
                    format!(
                        "built-in role {} has fixed permissions ({}), not {}",
                        quote(name),
                        builtin.permissions,
                        permissions
                    ),
                ));
            }
            return Ok(builtin);
        }
        let name = Name::parse(name).map_err(|e| {
            Error::new(
                ErrorKind::InvalidRoleName,
                format!("invalid role name: {e}"),
            )
        })?;
        Role::custom(name, permissions)
    }

    /// The role's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// What the role allows.
    pub fn permissions(&self) -> PermissionSet {
        self.permissions
    }

    /// Whether this is one of the built-in roles.
    pub fn is_builtin(&self) -> bool {
        Role::builtin(self.name.as_str()).is_some_and(|b| b == *self)
    }
}

impl<'de> serde::Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            name: String,
            permissions: PermissionSet,
        }
        let raw = Raw::deserialize(d)?;
        Role::parse(&raw.name, raw.permissions).map_err(serde::de::Error::custom)
    }
}

/// The four built-in roles: `owner`, `security-admin`, `approver`, `auditor`
/// (the table is in the crate documentation).
pub fn builtin_roles() -> [Role; 4] {
    use Op::*;
    use Resource::*;
    let role = |name: &str, permissions| Role {
        // Invariant: the built-in names are valid `Name`s (tested).
        name: Name::parse(name).expect("built-in role names are valid names"),
        permissions,
    };
    let operational = [Files, Rules, Computers, Policies, Events];
    [
        role("owner", PermissionSet::ALL),
        role(
            "security-admin",
            PermissionSet::of(&operational, &Op::ALL)
                .union(PermissionSet::of(&[Admins, Settings], &[Read])),
        ),
        role(
            "approver",
            PermissionSet::of(&operational, &[Read]).union(PermissionSet::of(&[Files], &[Update])),
        ),
        role("auditor", PermissionSet::of(&Resource::ALL, &[Read])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins() {
        let roles = builtin_roles();
        for (role, name) in roles.iter().zip(BUILTIN_ROLE_NAMES) {
            assert_eq!(role.name().as_str(), name);
            assert!(role.is_builtin());
            assert_eq!(Role::parse(name, role.permissions()).as_ref(), Ok(role));
        }
        let json = serde_json::to_string(&roles[2]).unwrap();
        assert_eq!(
            json,
            r#"{"name":"approver","permissions":["files:read","files:update","rules:read","computers:read","policies:read","events:read"]}"#
        );
        assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), roles[2]);
    }

    #[test]
    fn custom_roles() {
        let name = |s| Name::parse(s).unwrap();
        let perms: PermissionSet = "rules:*".parse().unwrap();
        let role = Role::custom(name("rule-editor"), perms).unwrap();
        assert!(!role.is_builtin());
        for (n, p, kind) in [
            ("owner", perms, ErrorKind::ReservedRoleName),
            ("Auditor", perms, ErrorKind::ReservedRoleName),
            ("empty", PermissionSet::EMPTY, ErrorKind::EmptyRole),
        ] {
            assert_eq!(Role::custom(name(n), p).unwrap_err().kind(), kind, "{n}");
        }
        for (n, p, kind) in [
            ("owner", perms, ErrorKind::BuiltinRoleChanged),
            ("has space", perms, ErrorKind::InvalidRoleName),
            ("", perms, ErrorKind::InvalidRoleName),
            ("OWNER", perms, ErrorKind::ReservedRoleName),
        ] {
            assert_eq!(Role::parse(n, p).unwrap_err().kind(), kind, "{n}");
        }
        assert!(serde_json::from_str::<Role>(
            r#"{"name":"auditor","permissions":["files:delete"]}"#
        )
        .is_err());
    }
}
