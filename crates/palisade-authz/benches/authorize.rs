//! Cost of one admin authorization: `cargo bench -p palisade-authz`.
//!
//! 1,000 admins in 10 organizations (50 policies each) hold 10,000 grants,
//! 10 per admin: the four built-in roles and 20 custom roles, 30% at
//! organization scope and 70% on one policy. Every organization requires
//! MFA, trusted networks (4 ranges, v4 and v6) and office hours. One request
//! is `Authorizer::authorize` with the admin's grants already loaded (the
//! database lookup is the server's, not measured here): a permission and a
//! target (the organization, one of its policies, now and then another
//! organization's policy), allowed and refused alike. Prints per-request
//! median and p99 in ns, the same with `evaluate` (Cedar at every call,
//! without the memo of answers by shape: the baseline), and for `allowed`
//! (the console's 28 permissions at once) and `sign_in`.
use palisade_authz::*;
use palisade_core::{Name, OrgId, PolicyId};
use std::hint::black_box;
use std::time::Instant;

const ORGS: i64 = 10;
const POLICIES_PER_ORG: i64 = 50;
const ADMINS: i64 = 1_000;
const GRANTS_PER_ADMIN: i64 = 10;
const CUSTOM_ROLES: u64 = 20;

/// A deterministic pseudo-random number for `i` (SplitMix64).
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn policy(org: i64, n: i64) -> PolicyId {
    PolicyId(org * 1000 + n)
}

struct Admin {
    facts: AdminFacts,
    grants: Vec<Grant>,
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Time `f` on each of `n` inputs after a warm-up; per-call ns, sorted.
fn measure(n: u64, mut f: impl FnMut(u64)) -> Vec<u64> {
    for i in 0..n / 10 {
        f(i);
    }
    let mut times: Vec<u64> = (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed().as_nanos() as u64
        })
        .collect();
    times.sort_unstable();
    times
}

fn report(what: &str, times: &[u64]) {
    println!(
        "{what:<34} {:>10} {:>10} {:>10}",
        percentile(times, 50),
        percentile(times, 99),
        times.iter().sum::<u64>() / times.len() as u64
    );
}

/// The process's resident set size in KiB (0 when unknown).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let builtins = builtin_roles();
    let customs: Vec<Role> = (0..CUSTOM_ROLES)
        .map(|i| {
            let bits = mix(i) as u32 & ((1 << 28) - 1);
            let permissions: PermissionSet = Permission::all()
                .enumerate()
                .filter(|(k, _)| bits & (1 << k) != 0)
                .map(|(_, p)| p)
                .collect();
            Role::custom(Name::parse(&format!("custom-{i}")).unwrap(), permissions).unwrap()
        })
        .collect();
    let admins: Vec<Admin> = (0..ADMINS)
        .map(|a| {
            let org = a % ORGS;
            let grants = (0..GRANTS_PER_ADMIN)
                .map(|g| {
                    let r = mix((a * GRANTS_PER_ADMIN + g) as u64);
                    let role = if r.is_multiple_of(2) {
                        builtins[(r / 2 % 4) as usize].clone()
                    } else {
                        customs[(r / 2 % CUSTOM_ROLES) as usize].clone()
                    };
                    let scope = if (r >> 20) % 10 < 3 {
                        Scope::Org
                    } else {
                        Scope::Policy(policy(org, ((r >> 24) % POLICIES_PER_ORG as u64) as i64))
                    };
                    Grant { role, scope }
                })
                .collect();
            Admin {
                facts: AdminFacts {
                    id: AdminId(a),
                    org: OrgId(org),
                    status: if a % 100 == 99 {
                        AdminStatus::Locked
                    } else {
                        AdminStatus::Active
                    },
                },
                grants,
            }
        })
        .collect();
    let grants: usize = admins.iter().map(|a| a.grants.len()).sum();
    let conditions = OrgConditions {
        require_mfa: true,
        trusted_networks: ["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32", "fd00::/8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect(),
        office_hours: Some("mon-fri 07:00-20:00 +01:00".parse().unwrap()),
    };
    // Monday 2026-11-23 12:00 UTC.
    let contexts: Vec<AccessContext> = (0..16u64)
        .map(|i| AccessContext {
            mfa_verified: i != 0,
            source_ip: if i % 2 == 0 {
                format!("10.1.2.{i}").parse().unwrap()
            } else {
                format!("2001:db8::{i}").parse().unwrap()
            },
            now_unix_ms: 1_795_435_200_000 + i as i64 * 60_000,
        })
        .collect();
    let permissions: Vec<Permission> = Permission::all().collect();
    let request = |i: u64| {
        let r = mix(i ^ 0xA5A5);
        let admin = &admins[(r % ADMINS as u64) as usize];
        let org = admin.facts.org.0;
        let target = match (r >> 16) % 20 {
            0 => Target::Policy {
                org: OrgId((org + 1) % ORGS),
                policy: policy((org + 1) % ORGS, 1),
            },
            1..=5 => Target::Org(OrgId(org)),
            _ => Target::Policy {
                org: OrgId(org),
                policy: policy(org, ((r >> 24) % POLICIES_PER_ORG as u64) as i64),
            },
        };
        (
            admin,
            permissions[((r >> 32) % 28) as usize],
            target,
            &contexts[((r >> 40) % 16) as usize],
        )
    };

    println!("resident memory before: {} MiB", rss_kib() / 1024);
    let t = Instant::now();
    let authz = Authorizer::new();
    let build = t.elapsed();
    println!(
        "{ADMINS} admins, {grants} grants, {} custom roles; Authorizer::new {:.1} ms",
        customs.len(),
        build.as_secs_f64() * 1000.0
    );
    let mut allowed = 0u64;
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "ns per call", "median", "p99", "mean"
    );
    let times = measure(100_000, |i| {
        let (admin, permission, target, context) = request(i);
        let caller = Caller {
            admin: &admin.facts,
            grants: &admin.grants,
            conditions: &conditions,
            context,
        };
        if black_box(authz.authorize(&caller, permission, target)).is_allowed() {
            allowed += 1;
        }
    });
    report("authorize (10 grants)", &times);
    println!(
        "  ({:.0}% of those requests allowed)",
        allowed as f64 * 100.0 / 110_000.0
    );
    let times = measure(100_000, |i| {
        let (admin, permission, target, context) = request(i);
        let caller = Caller {
            admin: &admin.facts,
            grants: &admin.grants,
            conditions: &conditions,
            context,
        };
        let _ = black_box(authz.evaluate(&caller, permission, target));
    });
    report("evaluate (10 grants, no memo)", &times);
    let times = measure(10_000, |i| {
        let (admin, _, target, context) = request(i);
        let caller = Caller {
            admin: &admin.facts,
            grants: &admin.grants,
            conditions: &conditions,
            context,
        };
        black_box(authz.allowed(&caller, target));
    });
    report("allowed (28 permissions)", &times);
    let times = measure(100_000, |i| {
        let (admin, _, _, context) = request(i);
        let _ = black_box(authz.sign_in(&admin.facts, &conditions, context));
    });
    report("sign_in", &times);
    let none: [Grant; 0] = [];
    let times = measure(100_000, |i| {
        let (admin, permission, target, context) = request(i);
        let caller = Caller {
            admin: &admin.facts,
            grants: &none,
            conditions: &conditions,
            context,
        };
        let _ = black_box(authz.authorize(&caller, permission, target));
    });
    report("authorize (no grants: floor)", &times);
    println!("resident memory after the run: {} MiB", rss_kib() / 1024);
}
