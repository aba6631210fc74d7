//! Parsing: networks, office hours, permissions, and their errors.
use super::*;

#[test]
fn networks() {
    for (input, shown) in [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("192.0.2.1", "192.0.2.1/32"),
        ("192.0.2.1/32", "192.0.2.1/32"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("::/0", "::/0"),
        ("::1", "::1/128"),
        ("fe80::/10", "fe80::/10"),
    ] {
        let net: IpNet = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(net.to_string(), shown);
        assert_eq!(shown.parse::<IpNet>(), Ok(net));
    }
    for (input, kind) in [
        ("", ErrorKind::InvalidNetwork),
        ("10.0.0.0/", ErrorKind::InvalidNetwork),
        ("10.0.0/8", ErrorKind::InvalidNetwork),
        ("10.0.0.0/8/8", ErrorKind::InvalidNetwork),
        ("10.0.0.0/+8", ErrorKind::InvalidNetwork),
        ("10.0.0.0/ 8", ErrorKind::InvalidNetwork),
        ("10.0.0.0/0008", ErrorKind::InvalidNetwork),
        ("300.0.0.0/8", ErrorKind::InvalidNetwork),
        ("example.com/8", ErrorKind::InvalidNetwork),
        (" 10.0.0.0/8", ErrorKind::InvalidNetwork),
        ("10.0.0.0/33", ErrorKind::InvalidPrefix),
        ("10.0.0.0/999", ErrorKind::InvalidPrefix),
        ("2001:db8::/129", ErrorKind::InvalidPrefix),
        ("10.0.0.1/8", ErrorKind::HostBitsSet),
        ("2001:db8::1/32", ErrorKind::HostBitsSet),
    ] {
        let err = input.parse::<IpNet>().unwrap_err();
        assert_eq!(err.kind(), kind, "{input:?}: {err}");
    }
    let err = "10.0.0.1/8".parse::<IpNet>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "10.0.0.1/8 has bits set after the prefix; did you mean 10.0.0.0/8?"
    );
}

#[test]
fn office_hours_specs() {
    for (input, shown) in [
        ("mon-fri 08:00-18:00 +01:00", "mon-fri 08:00-18:00 +01:00"),
        ("MON-FRI 08:00-18:00", "mon-fri 08:00-18:00 +00:00"),
        (
            "mon,wed,fri 09:30-17:45 -05:30",
            "mon,wed,fri 09:30-17:45 -05:30",
        ),
        ("sat,sun 10:00-14:00 UTC", "sat,sun 10:00-14:00 +00:00"),
        ("fri-mon 00:00-24:00 Z", "mon,fri-sun 00:00-24:00 +00:00"),
        ("mon-sun 22:00-06:00 +14:00", "mon-sun 22:00-06:00 +14:00"),
        (
            "tue,mon  07:00-19:00   -12:00",
            "mon,tue 07:00-19:00 -12:00",
        ),
        ("mon-wed,fri 08:00-09:00", "mon-wed,fri 08:00-09:00 +00:00"),
    ] {
        let hours: OfficeHours = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(hours.to_string(), shown);
        assert_eq!(shown.parse::<OfficeHours>(), Ok(hours));
    }
    for (input, kind) in [
        ("", ErrorKind::InvalidOfficeHours),
        ("mon-fri", ErrorKind::InvalidOfficeHours),
        (
            "mon-fri 08:00-18:00 +01:00 extra",
            ErrorKind::InvalidOfficeHours,
        ),
        ("weekdays 08:00-18:00", ErrorKind::InvalidDays),
        ("mon-fry 08:00-18:00", ErrorKind::InvalidDays),
        ("mon,,fri 08:00-18:00", ErrorKind::InvalidDays),
        ("mon-fri 8:00-18:00", ErrorKind::InvalidTime),
        ("mon-fri 08:00", ErrorKind::InvalidTime),
        ("mon-fri 08:60-18:00", ErrorKind::InvalidTime),
        ("mon-fri 08:00-25:00", ErrorKind::InvalidTime),
        ("mon-fri 08:00-24:01", ErrorKind::InvalidTime),
        ("mon-fri 24:00-08:00", ErrorKind::InvalidTime),
        ("mon-fri 08h00-18h00", ErrorKind::InvalidTime),
        ("mon-fri 08:00-08:00", ErrorKind::EmptyWindow),
        ("mon-fri 00:00-00:00", ErrorKind::EmptyWindow),
        ("mon-fri 08:00-18:00 +1", ErrorKind::InvalidUtcOffset),
        ("mon-fri 08:00-18:00 01:00", ErrorKind::InvalidUtcOffset),
        ("mon-fri 08:00-18:00 +14:30", ErrorKind::InvalidUtcOffset),
        ("mon-fri 08:00-18:00 +01:60", ErrorKind::InvalidUtcOffset),
        ("mon-fri 08:00-18:00 CET", ErrorKind::InvalidUtcOffset),
    ] {
        let err = input.parse::<OfficeHours>().unwrap_err();
        assert_eq!(err.kind(), kind, "{input:?}: {err}");
    }
}

#[test]
fn conditions_as_json() {
    let json = r#"{"require_mfa":true,"trusted_networks":["10.0.0.0/8","2001:db8::/32"],"office_hours":"mon-fri 08:00-18:00 +01:00"}"#;
    let conditions: OrgConditions = serde_json::from_str(json).unwrap();
    assert!(conditions.require_mfa);
    assert_eq!(conditions.trusted_networks.len(), 2);
    assert_eq!(serde_json::to_string(&conditions).unwrap(), json);
    assert_eq!(
        serde_json::from_str::<OrgConditions>("{}").unwrap(),
        OrgConditions::default()
    );
    for bad in [
        r#"{"trusted_networks":["10.0.0.1/8"]}"#,
        r#"{"office_hours":"always"}"#,
        r#"{"require_mfa":true,"allow_everyone":true}"#,
    ] {
        assert!(serde_json::from_str::<OrgConditions>(bad).is_err(), "{bad}");
    }
}

#[test]
fn grants_as_json() {
    let grant = Grant {
        role: custom("viewer", "events:read"),
        scope: Scope::Policy(P7),
    };
    let json = serde_json::to_string(&grant).unwrap();
    assert_eq!(
        json,
        r#"{"role":{"name":"viewer","permissions":["events:read"]},"scope":{"policy":7}}"#
    );
    assert_eq!(serde_json::from_str::<Grant>(&json).unwrap(), grant);
    let org: Grant = serde_json::from_str(r#"{"role":{"name":"auditor","permissions":["files:read","rules:read","computers:read","policies:read","events:read","admins:read","settings:read"]},"scope":"org"}"#).unwrap();
    assert_eq!(org.role, Role::builtin("auditor").unwrap());
    assert_eq!(org.scope, Scope::Org);
}
