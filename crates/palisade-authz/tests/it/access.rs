//! Account status and conditional access: MFA, trusted networks, office
//! hours, the organization boundary, and sign-in.
use super::*;

/// UTC time on the week of Monday 2026-11-23: `day` 0 is that Monday,
/// -1 the Sunday before, 4 the Friday, 5 the Saturday.
fn at(day: i64, hh: i64, mm: i64) -> i64 {
    MONDAY_NOON - 12 * 3_600_000 + day * 86_400_000 + hh * 3_600_000 + mm * 60_000
}

fn owner() -> [Grant; 1] {
    [grant("owner", Scope::Org)]
}

#[test]
fn disabled_or_locked_admins_are_refused_everything() {
    let grants = owner();
    for (status, reason) in [
        (AdminStatus::Disabled, DenyReason::AdminDisabled),
        (AdminStatus::Locked, DenyReason::AdminLocked),
    ] {
        let mut ask = Ask::new(&grants);
        ask.admin.status = status;
        for p in Permission::all() {
            for target in [
                Target::Org(ORG),
                in_policy(ORG, P7),
                in_policy(OTHER_ORG, P7),
            ] {
                assert_eq!(ask.decide(&p.to_string(), target), Decision::Deny(reason));
            }
        }
        assert_eq!(
            authz().sign_in(&ask.admin, &ask.conditions, &ask.context),
            Decision::Deny(reason)
        );
        // Also without any grant: the reason is still the account's status.
        let mut bare = Ask::new(&[]);
        bare.admin.status = status;
        assert_eq!(
            bare.decide("files:read", Target::Org(ORG)),
            Decision::Deny(reason)
        );
    }
}

#[test]
fn mfa() {
    let grants = owner();
    for (require, verified, want) in [
        (false, false, Decision::Allow),
        (false, true, Decision::Allow),
        (true, true, Decision::Allow),
        (true, false, Decision::Deny(DenyReason::MfaRequired)),
    ] {
        let mut ask = Ask::new(&grants);
        ask.conditions.require_mfa = require;
        ask.context.mfa_verified = verified;
        assert_eq!(
            ask.decide("files:read", Target::Org(ORG)),
            want,
            "{require} {verified}"
        );
        assert_eq!(
            authz().sign_in(&ask.admin, &ask.conditions, &ask.context),
            want
        );
    }
    // The condition's reason is given even when no grant would allow.
    let mut ask = Ask::new(&[]);
    ask.conditions.require_mfa = true;
    assert_eq!(
        ask.decide("settings:update", Target::Org(ORG)),
        Decision::Deny(DenyReason::MfaRequired)
    );
}

#[test]
fn trusted_networks() {
    let grants = owner();
    let networks: Vec<IpNet> = [
        "10.0.0.0/8",
        "192.0.2.128/25",
        "2001:db8::/32",
        "203.0.113.7",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    for (ip, trusted) in [
        ("10.1.2.3", true),
        ("10.255.255.255", true),
        ("11.0.0.0", false),
        ("192.0.2.200", true),
        ("192.0.2.127", false),
        ("203.0.113.7", true),
        ("203.0.113.8", false),
        // What a dual-stack socket reports for an IPv4 client.
        ("::ffff:10.1.2.3", true),
        ("::ffff:172.16.0.1", false),
        ("2001:db8::1", true),
        ("2001:db8:ffff:ffff::1", true),
        ("2001:db9::1", false),
        ("::1", false),
        ("127.0.0.1", false),
    ] {
        let mut ask = Ask::new(&grants);
        ask.conditions.trusted_networks = networks.clone();
        ask.context.source_ip = ip.parse().unwrap();
        let want = if trusted {
            Decision::Allow
        } else {
            Decision::Deny(DenyReason::UntrustedNetwork)
        };
        assert_eq!(ask.decide("events:read", in_policy(ORG, P7)), want, "{ip}");
        assert_eq!(
            authz().sign_in(&ask.admin, &ask.conditions, &ask.context),
            want,
            "{ip}"
        );
    }
    // No trusted networks means no restriction.
    let mut ask = Ask::new(&grants);
    ask.context.source_ip = "198.51.100.1".parse().unwrap();
    assert_eq!(ask.decide("events:read", Target::Org(ORG)), Decision::Allow);
}

#[test]
fn office_hours() {
    let grants = owner();
    for (spec, now, inside) in [
        // Monday to Friday, 08:00-18:00 at UTC+1.
        ("mon-fri 08:00-18:00 +01:00", at(0, 7, 0), true), // 08:00 local: start is inclusive
        ("mon-fri 08:00-18:00 +01:00", at(0, 6, 59), false), // 07:59 local
        ("mon-fri 08:00-18:00 +01:00", at(0, 16, 59), true), // 17:59 local
        ("mon-fri 08:00-18:00 +01:00", at(0, 17, 0), false), // 18:00 local: end is exclusive
        ("mon-fri 08:00-18:00 +01:00", at(4, 12, 0), true), // Friday
        ("mon-fri 08:00-18:00 +01:00", at(5, 12, 0), false), // Saturday: day not allowed
        ("mon-fri 08:00-18:00 +01:00", at(-1, 12, 0), false), // Sunday
        // The offset decides the local day: Sunday 23:30 UTC is Monday 00:30 at UTC+1.
        ("mon-fri 00:00-24:00 +01:00", at(-1, 23, 30), true),
        ("mon-fri 00:00-24:00", at(-1, 23, 30), false),
        ("mon-fri 00:00-24:00 +01:00", at(4, 23, 30), false), // Saturday 00:30 local
        ("mon-fri 00:00-24:00 -05:00", at(5, 3, 0), true),    // Friday 22:00 local
        ("mon-fri 09:00-17:00 -05:30", at(0, 14, 30), true),  // 09:00 local
        ("mon-fri 09:00-17:00 -05:30", at(0, 14, 29), false),
        ("sat,sun 10:00-12:00", at(5, 11, 0), true),
        ("sat,sun 10:00-12:00", at(4, 11, 0), false),
        // Crossing midnight: the window belongs to the day it starts on.
        ("fri 22:00-06:00", at(4, 23, 0), true), // Friday night
        ("fri 22:00-06:00", at(5, 5, 59), true), // Saturday morning
        ("fri 22:00-06:00", at(5, 6, 0), false),
        ("fri 22:00-06:00", at(4, 5, 0), false), // Friday morning belongs to Thursday
        ("fri 22:00-06:00", at(4, 21, 59), false),
        ("sun-mon 23:00-01:00 +02:00", at(-1, 21, 30), true), // Sunday 23:30 local
    ] {
        let hours: OfficeHours = spec.parse().unwrap();
        assert_eq!(hours.contains(now), inside, "{spec} at {now}");
        let mut ask = Ask::new(&grants);
        ask.conditions.office_hours = Some(hours);
        ask.context.now_unix_ms = now;
        let want = if inside {
            Decision::Allow
        } else {
            Decision::Deny(DenyReason::OutsideOfficeHours)
        };
        assert_eq!(
            ask.decide("computers:update", in_policy(ORG, P8)),
            want,
            "{spec} at {now}"
        );
        assert_eq!(
            authz().sign_in(&ask.admin, &ask.conditions, &ask.context),
            want
        );
    }
}

#[test]
fn times_before_the_epoch() {
    // 1969-12-31 (a Wednesday) 23:00 UTC.
    let hours: OfficeHours = "wed 22:00-24:00".parse().unwrap();
    assert!(hours.contains(-3_600_000));
    assert!(!hours.contains(0));
}

#[test]
fn other_organization_reveals_nothing() {
    let grants = owner();
    let ask = Ask::new(&grants);
    let reasons: Vec<String> = [
        Target::Org(OTHER_ORG),
        in_policy(OTHER_ORG, P7),
        in_policy(OrgId(99), PolicyId(12345)),
    ]
    .into_iter()
    .map(|target| match ask.decide("files:read", target) {
        Decision::Deny(reason) => {
            assert_eq!(reason, DenyReason::OtherOrganization);
            reason.to_string()
        }
        Decision::Allow => panic!("{target:?} allowed"),
    })
    .collect();
    assert!(reasons.iter().all(|r| r == &reasons[0]));
    assert!(
        !reasons[0].chars().any(|c| c.is_ascii_digit()),
        "{}",
        reasons[0]
    );
}

#[test]
fn reasons_are_reported_in_order() {
    let grants = owner();
    let untrusted = OrgConditions {
        require_mfa: true,
        trusted_networks: vec!["10.0.0.0/8".parse().unwrap()],
        office_hours: Some("sat 00:00-01:00".parse().unwrap()),
    };
    let mut ask = Ask::new(&grants);
    ask.conditions = untrusted;
    let target = in_policy(OTHER_ORG, P7);
    let mut seen = Vec::new();
    // Remove the failing facts one at a time; each time the next reason shows.
    ask.admin.status = AdminStatus::Disabled;
    seen.push(ask.decide("files:read", target));
    ask.admin.status = AdminStatus::Locked;
    seen.push(ask.decide("files:read", target));
    ask.admin.status = AdminStatus::Active;
    seen.push(ask.decide("files:read", target));
    ask.context.mfa_verified = true;
    seen.push(ask.decide("files:read", target));
    ask.context.source_ip = "10.9.9.9".parse().unwrap();
    seen.push(ask.decide("files:read", target));
    ask.conditions.office_hours = None;
    seen.push(ask.decide("files:read", target));
    seen.push(Ask::new(&[]).decide("files:read", Target::Org(ORG)));
    let want: Vec<Decision> = DenyReason::ALL[..7]
        .iter()
        .map(|&r| Decision::Deny(r))
        .collect();
    assert_eq!(seen, want);
}

#[test]
fn sign_in_needs_no_grant() {
    let ask = Ask::new(&[]);
    assert_eq!(
        authz().sign_in(&ask.admin, &ask.conditions, &ask.context),
        Decision::Allow
    );
}

#[test]
fn conditions_hide_everything_in_the_console() {
    let grants = owner();
    let conditions = OrgConditions {
        require_mfa: true,
        ..OrgConditions::default()
    };
    let admin = admin(AdminStatus::Active);
    for (mfa_verified, want) in [(false, PermissionSet::EMPTY), (true, PermissionSet::ALL)] {
        let context = AccessContext {
            mfa_verified,
            ..context()
        };
        let caller = Caller {
            admin: &admin,
            grants: &grants,
            conditions: &conditions,
            context: &context,
        };
        assert_eq!(authz().allowed(&caller, Target::Org(ORG)), want);
    }
}

#[test]
fn deny_reasons_read_well() {
    for reason in DenyReason::ALL {
        let text = reason.to_string();
        assert!(
            !text.is_empty() && text.chars().next().unwrap().is_lowercase(),
            "{text}"
        );
    }
}
