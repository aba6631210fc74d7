//! Admin access API (zero-trust admin access): admins, roles, grants, API
//! tokens, conditional-access settings, the audit log. Bearer token as for
//! [`crate::admin`]; every call is authorized from the caller's grants at
//! that moment (`403` with the reason when refused).
//!
//! | method | path                              | body              | answer |
//! |--------|-----------------------------------|-------------------|--------|
//! | GET    | `/api/v1/admins`                  |                   | `[`[`AdminInfo`]`]` |
//! | POST   | `/api/v1/admins`                  | [`AddAdmin`]      | [`AdminInfo`] |
//! | POST   | `/api/v1/admins/{name}/grants`    | [`GrantRef`]      | [`AdminInfo`] |
//! | POST   | `/api/v1/admins/{name}/revoke`    | [`GrantRef`]      | [`AdminInfo`] (also ends the admin's sessions and tokens) |
//! | POST   | `/api/v1/admins/{name}/disable`   |                   | [`AdminInfo`] |
//! | POST   | `/api/v1/admins/{name}/enable`    |                   | [`AdminInfo`] |
//! | GET    | `/api/v1/roles`                   |                   | `[`[`RoleInfo`]`]` |
//! | POST   | `/api/v1/roles`                   | [`RoleInfo`]      | [`RoleInfo`] |
//! | GET    | `/api/v1/tokens`                  |                   | `[`[`TokenInfo`]`]` (the caller's) |
//! | POST   | `/api/v1/tokens`                  | [`CreateToken`]   | [`TokenCreated`] |
//! | DELETE | `/api/v1/tokens/{id}`             |                   | 204 |
//! | GET    | `/api/v1/settings`                |                   | [`AccessSettings`] |
//! | PUT    | `/api/v1/settings`                | [`AccessSettings`]| [`AccessSettings`] |
//! | GET    | `/api/v1/audit?after&limit`       |                   | [`AuditPage`] |
//! | POST   | `/api/v1/admins/{name}/invite`    |                   | [`Invitation`] |
//! | GET    | `/api/v1/me`                      |                   | [`Me`] |
//! | POST   | `/api/v1/me/totp`                 |                   | [`TotpEnrollment`] |
//! | POST   | `/api/v1/me/totp/confirm`         | [`ConfirmTotp`]   | [`RecoveryCodes`] |
//!
//! The web console (`/console/`) signs in with a password and then a TOTP
//! code or a recovery code; its session cookie authenticates the same API
//! calls (with the session's CSRF token in `X-CSRF-Token` for changes).
use palisade_core::Name;

/// An admin of the caller's organization.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AdminInfo {
    /// Admin name.
    pub name: String,
    /// `active` or `disabled`.
    pub status: String,
    /// Until when (ms since the epoch) sign-in is locked after failures.
    pub locked_until_ms: Option<i64>,
    /// The admin's grants.
    pub grants: Vec<GrantRef>,
    /// Live API tokens.
    pub tokens: u32,
}

/// Create an admin (no grants: grant roles afterwards).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AddAdmin {
    /// Admin name.
    pub name: Name,
}

/// A role at a scope: the whole organization, or one policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GrantRef {
    /// Role name (built-in: owner, security-admin, approver, auditor).
    pub role: Name,
    /// The policy the grant is limited to; absent: the whole organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Name>,
}

/// A role: a set of `resource:operation` permissions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RoleInfo {
    /// Role name.
    pub name: Name,
    /// Permissions, such as `files:update` (resources: files, rules,
    /// computers, policies, events, admins, settings; operations: create,
    /// read, update, delete).
    pub permissions: Vec<String>,
    /// Whether the role is built in (ignored on creation).
    #[serde(default)]
    pub builtin: bool,
}

/// Create an API token.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// For another admin (needs `admins:update` and every permission they
    /// hold, where they hold it); absent: the caller. Such a token does
    /// nothing to its admin's own account (password reset, second factor,
    /// tokens) and counts as made without a second factor.
    #[serde(default)]
    pub admin: Option<Name>,
    /// A label.
    #[serde(default)]
    pub name: Option<String>,
    /// Lifetime in seconds; absent: no expiry.
    #[serde(default)]
    pub expires_secs: Option<u64>,
    /// Permissions the token is limited to (never more than the admin's
    /// grants); absent: all the admin's.
    #[serde(default)]
    pub scope: Option<Vec<String>>,
}

/// A token, once: its text is never shown again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TokenCreated {
    /// Token id (to revoke it).
    pub id: i64,
    /// The token text, for `PALISADE_TOKEN`.
    pub token: String,
    /// Expiry (ms since the epoch), if any.
    pub expires_ms: Option<i64>,
}

/// One of the caller's API tokens.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TokenInfo {
    /// Token id.
    pub id: i64,
    /// Label.
    pub name: String,
    /// Scope, if limited.
    pub scope: Option<Vec<String>>,
    /// Created (ms since the epoch).
    pub created_ms: i64,
    /// Expiry, if any.
    pub expires_ms: Option<i64>,
    /// Revoked at, if revoked.
    pub revoked_ms: Option<i64>,
}

/// Conditional access for the organization's admins.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AccessSettings {
    /// Refuse credentials obtained without a verified second factor.
    #[serde(default)]
    pub require_mfa: bool,
    /// When not empty, only these networks (CIDR, IPv4 or IPv6).
    #[serde(default)]
    pub trusted_networks: Vec<String>,
    /// When set, only these hours, e.g. `mon-fri 08:00-18:00 +01:00`.
    #[serde(default)]
    pub office_hours: Option<String>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditEntry {
    /// Position in the organization's chain (from 1).
    pub seq: u64,
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// Admin name.
    pub actor: String,
    /// Method and route.
    pub action: String,
    /// The object (request path, or what the handler named).
    pub object: String,
    /// The client's address.
    pub source: String,
    /// `allowed` or `denied`.
    pub outcome: String,
    /// Why refused, or how a permitted call failed.
    pub reason: Option<String>,
    /// State before, where known.
    pub before: Option<serde_json::Value>,
    /// State after, where known.
    pub after: Option<serde_json::Value>,
    /// The record's chain hash (hex).
    pub hash: String,
}

/// A page of audit records, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditPage {
    /// The organization's id (part of every record's hash).
    pub org_id: i64,
    /// The records.
    pub records: Vec<AuditEntry>,
}

/// The caller's own account (`GET /api/v1/me`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Me {
    /// Admin name.
    pub admin: String,
    /// Organization name.
    pub organization: String,
    /// Whether a TOTP second factor is enrolled.
    pub totp: bool,
    /// Unused recovery codes.
    pub recovery_codes: u32,
    /// Whether this request's credential was obtained with a verified
    /// second factor.
    pub mfa_verified: bool,
    /// Whether the organization requires a second factor.
    pub require_mfa: bool,
    /// Whether the request came with a console session (rather than a token).
    pub console_session: bool,
}

/// A TOTP enrollment in progress (`POST /api/v1/me/totp`): add the secret to
/// an authenticator app, then confirm with a code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TotpEnrollment {
    /// The secret, base32 (for typing it in).
    pub secret: String,
    /// The `otpauth://` URI the QR code carries.
    pub uri: String,
    /// The QR code, as an SVG document.
    pub qr_svg: String,
}

/// Confirm a TOTP enrollment with the app's current code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ConfirmTotp {
    /// Six digits from the authenticator app.
    pub code: String,
}

/// Fresh recovery codes, shown once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RecoveryCodes {
    /// Single-use codes (`xxxx-xxxx-xxxx-xxxx`), each good for one sign-in
    /// instead of a TOTP code.
    pub codes: Vec<String>,
}

/// A one-time invitation to set a password
/// (`POST /api/v1/admins/{name}/invite`). Accepting it replaces the admin's
/// password, removes their second factor and recovery codes, and ends their
/// sessions and tokens.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Invitation {
    /// The console link to open (it carries the secret).
    pub url: String,
    /// Until when the link works (ms since the epoch).
    pub expires_ms: i64,
}
