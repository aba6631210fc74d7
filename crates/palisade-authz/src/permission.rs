//! Resource types, operations, permissions and sets of permissions.
use crate::error::{quote, Error, ErrorKind};
use std::fmt;
use std::str::FromStr;

/// A type of object the admin API manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// Files (hashes) and their states: approvals, bans, local states.
    Files,
    /// Rules: custom rules, folder protection, publishers, reputation.
    Rules,
    /// Enrolled computers and their agents.
    Computers,
    /// Policies (security groups) and their levels.
    Policies,
    /// Events reported by agents.
    Events,
    /// Admins of the organization and their grants.
    Admins,
    /// Organization settings, including conditional access and custom roles.
    Settings,
}

impl Resource {
    /// Every resource type, in the order of [`Resource::as_str`]'s table.
    pub const ALL: [Resource; 7] = [
        Resource::Files,
        Resource::Rules,
        Resource::Computers,
        Resource::Policies,
        Resource::Events,
        Resource::Admins,
        Resource::Settings,
    ];

    /// The lower-case name used in permissions (`files`, `rules`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Files => "files",
            Resource::Rules => "rules",
            Resource::Computers => "computers",
            Resource::Policies => "policies",
            Resource::Events => "events",
            Resource::Admins => "admins",
            Resource::Settings => "settings",
        }
    }

    fn index(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Resource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Resource::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::UnknownResource,
                    format!(
                        "unknown resource type {}: use one of files, rules, computers, policies, events, admins, settings",
                        quote(s)
                    ),
                )
            })
    }
}

/// What is done to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Create a new object.
    Create,
    /// Read (list, show, export) objects.
    Read,
    /// Change an existing object (for files: approve, ban, unapprove).
    Update,
    /// Delete an object.
    Delete,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 4] = [Op::Create, Op::Read, Op::Update, Op::Delete];

    /// The lower-case name used in permissions (`create`, `read`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Read => "read",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }

    fn index(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Op {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Op::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::UnknownOperation,
                    format!(
                        "unknown operation {}: use one of create, read, update, delete",
                        quote(s)
                    ),
                )
            })
    }
}

/// One operation on one resource type, written `files:update`.
///
/// It is also the id of the Cedar action that authorizes it
/// (`Action::"files:update"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission {
    /// The type of object.
    pub resource: Resource,
    /// What is done to it.
    pub op: Op,
}

impl Permission {
    /// The permission to do `op` on `resource`.
    pub const fn new(resource: Resource, op: Op) -> Self {
        Self { resource, op }
    }

    /// Every permission (7 resource types × 4 operations), in bit order.
    pub fn all() -> impl Iterator<Item = Permission> {
        Resource::ALL.into_iter().flat_map(|resource| {
            Op::ALL
                .into_iter()
                .map(move |op| Permission { resource, op })
        })
    }

    /// The permission's position in [`Permission::all`] (0-27).
    pub(crate) fn index(self) -> usize {
        (self.resource.index() * 4 + self.op.index()) as usize
    }

    fn bit(self) -> u32 {
        1 << self.index()
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource, self.op)
    }
}

impl FromStr for Permission {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (resource, op) = s.split_once(':').ok_or_else(|| invalid_permission(s))?;
        Ok(Permission {
            resource: resource.parse()?,
            op: op.parse()?,
        })
    }
}

fn invalid_permission(s: &str) -> Error {
    Error::new(
        ErrorKind::InvalidPermission,
        format!(
            "invalid permission {}: write resource:operation, such as files:update",
            quote(s)
        ),
    )
}

impl serde::Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of permissions (a bit set: copying and comparing it is free).
///
/// Written as a comma-separated list; when parsing, `*` stands for every
/// resource type or every operation: `files:*,*:read` is every operation on
/// files and reading everything. `Display` writes every permission out.
/// Serialized as a list of permission strings.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PermissionSet(u32);

impl PermissionSet {
    /// No permission.
    pub const EMPTY: PermissionSet = PermissionSet(0);
    /// Every permission.
    pub const ALL: PermissionSet = PermissionSet((1 << 28) - 1);

    /// The set with every operation in `ops` on every resource type in `resources`.
    pub fn of(resources: &[Resource], ops: &[Op]) -> Self {
        let mut set = Self::EMPTY;
        for &resource in resources {
            for &op in ops {
                set.insert(Permission { resource, op });
            }
        }
        set
    }

    /// Whether the set holds `permission`.
    pub fn contains(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }

    /// Add `permission` to the set.
    pub fn insert(&mut self, permission: Permission) {
        self.0 |= permission.bit();
    }

    /// Whether the set holds no permission.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many permissions the set holds.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The permissions in both sets.
    pub fn intersection(self, other: PermissionSet) -> PermissionSet {
        PermissionSet(self.0 & other.0)
    }

    /// The permissions in either set.
    pub fn union(self, other: PermissionSet) -> PermissionSet {
        PermissionSet(self.0 | other.0)
    }

    /// The permissions, in bit order (by resource type, then operation).
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::all().filter(move |p| self.contains(*p))
    }

    /// The set as a number (bit `4 × resource + operation`), which names
    /// its Cedar action group.
    pub(crate) fn bits(self) -> u32 {
        self.0
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut set = Self::EMPTY;
        for p in iter {
            set.insert(p);
        }
        set
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PermissionSet({self})")
    }
}

impl fmt::Display for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl FromStr for PermissionSet {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut set = Self::EMPTY;
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (resource, op) = item
                .split_once(':')
                .ok_or_else(|| invalid_permission(item))?;
            let resources = if resource == "*" {
                Resource::ALL.to_vec()
            } else {
                vec![resource.parse()?]
            };
            let ops = if op == "*" {
                Op::ALL.to_vec()
            } else {
                vec![op.parse()?]
            };
            set = set.union(PermissionSet::of(&resources, &ops));
        }
        Ok(set)
    }
}

impl serde::Serialize for PermissionSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for PermissionSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Permission>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_round_trip() {
        for p in Permission::all() {
            assert_eq!(p.to_string().parse::<Permission>(), Ok(p));
        }
        assert_eq!(Permission::all().count(), 28);
        assert_eq!(PermissionSet::ALL.len(), 28);
        assert_eq!(
            Permission::all().collect::<PermissionSet>(),
            PermissionSet::ALL
        );
    }

    #[test]
    fn permission_errors() {
        for (input, kind) in [
            ("files", ErrorKind::InvalidPermission),
            ("", ErrorKind::InvalidPermission),
            ("file:read", ErrorKind::UnknownResource),
            ("files:write", ErrorKind::UnknownOperation),
            ("Files:read", ErrorKind::UnknownResource),
            ("files:read:x", ErrorKind::UnknownOperation),
        ] {
            assert_eq!(
                input.parse::<Permission>().unwrap_err().kind(),
                kind,
                "{input:?}"
            );
        }
    }

    #[test]
    fn set_parse_and_display() {
        let set: PermissionSet = "files:*, *:read".parse().unwrap();
        assert_eq!(set.len(), 4 + 6);
        assert_eq!(set.to_string().parse::<PermissionSet>(), Ok(set));
        assert_eq!("*:*".parse::<PermissionSet>(), Ok(PermissionSet::ALL));
        assert_eq!("".parse::<PermissionSet>(), Ok(PermissionSet::EMPTY));
        assert_eq!(
            "files".parse::<PermissionSet>().unwrap_err().kind(),
            ErrorKind::InvalidPermission
        );
        let json =
            serde_json::to_string(&"rules:read,files:update".parse::<PermissionSet>().unwrap())
                .unwrap();
        assert_eq!(json, r#"["files:update","rules:read"]"#);
        let back: PermissionSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back.len(), 2);
        assert!(serde_json::from_str::<PermissionSet>(r#"["files:fly"]"#).is_err());
    }
}
