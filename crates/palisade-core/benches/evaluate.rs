//! Decision cost of the rule engine as rules grow: `cargo bench -p palisade-core`.
//!
//! For 10, 1,000 and 100,000 rules (custom rules over many directories,
//! protected folders, publisher states, reputation rules) and a catalogue of
//! 1,000,000 hashes (the agent's hash → approval cache), one decision is:
//! look the file's facts up by hash, then `evaluate`. Requests mix paths with
//! and without rules, known and unknown hashes. Hashing the file is not
//! included (it is measured by the exec benchmark). Prints ns per decision.
use palisade_core::rules::*;
use palisade_core::*;
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

fn sha(n: u64) -> Sha256 {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b[8..16].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    Sha256::from_bytes(b)
}

fn pat(s: &str) -> PathPattern {
    PathPattern::parse(s).expect("pattern")
}

fn rule_set(n: usize) -> RuleSet {
    let mut set = RuleSet::default();
    let customs = n * 90 / 100;
    for i in 0..customs {
        let action = match i % 4 {
            0 => RuleAction::Block,
            1 => RuleAction::Allow,
            2 => RuleAction::Report,
            _ => RuleAction::Prompt,
        };
        set.custom.push(CustomRule {
            id: RuleId(i as i64),
            name: format!("r{i}"),
            process: (i % 3 == 0).then(|| ProcessMatch::Hash(sha(i as u64))),
            user: (i % 5 == 0).then(|| UserMatch::User(format!("user{i}"))),
            operations: Operations {
                execute: true,
                write: i % 7 == 0,
            },
            paths: vec![
                pat(&format!("/srv/app{i}/bin/*")),
                pat(&format!("/opt/vendor{}/**/*.sh", i % 997)),
            ],
            action,
            conditions: Conditions::default(),
        });
    }
    for i in 0..n * 4 / 100 {
        set.folders.push(FolderProtection {
            id: RuleId(1_000_000 + i as i64),
            dir: format!("/var/rmm{i}/scripts"),
            parents: vec![sha(7 + i as u64)],
        });
    }
    for i in 0..(n * 5 / 100).max(1) {
        set.publishers.push(PublisherState {
            name: format!("Publisher{i}"),
            state: if i % 10 == 0 {
                FileState::Banned
            } else {
                FileState::Approved
            },
            scope: ScopeKind::Global,
        });
    }
    for i in 0..(n / 100).clamp(1, 100) {
        set.reputation.push(ReputationRule {
            id: RuleId(2_000_000 + i as i64),
            min_trust: 8,
            min_publisher_trust: None,
            except_files: vec![sha(i as u64)],
            except_publishers: vec![],
        });
    }
    set
}

fn main() {
    const HASHES: u64 = 1_000_000;
    let t = Instant::now();
    let mut catalogue: HashMap<Sha256, (Approval, Option<u8>)> =
        HashMap::with_capacity(HASHES as usize);
    for i in 0..HASHES {
        let approval = match i % 10 {
            0..=5 => Approval::Approved(ApprovalSource {
                scope: ScopeKind::Global,
            }),
            6 => Approval::Banned(ApprovalSource {
                scope: ScopeKind::Policy,
            }),
            _ => Approval::Unknown,
        };
        catalogue.insert(sha(i), (approval, (i % 3 == 0).then_some((i % 11) as u8)));
    }
    println!("catalogue: {HASHES} hashes built in {:?}", t.elapsed());
    let publisher = PublisherFact {
        name: Some("Publisher3".into()),
        package: "pkg".into(),
        version: "1".into(),
        verified: true,
    };
    let mut process = ProcessContext::unknown(1234);
    process.exe = Some(Executable {
        path: "/usr/bin/bash".into(),
        sha256: Some(sha(9)),
    });
    let users = vec!["alice".to_string()];
    let groups = vec!["staff".to_string()];
    // Paths: a third under custom-rule directories, some in protected
    // folders, the rest in plain system directories.
    let paths: Vec<String> = (0..4096u64)
        .map(|i| match i % 6 {
            0 => format!("/srv/app{}/bin/tool", i * 37 % 100_000),
            1 => format!("/opt/vendor{}/x/y/run.sh", i % 997),
            2 => format!("/var/rmm{}/scripts/job-{i}.sh", i % 4000),
            _ => format!("/usr/lib/x86_64-linux-gnu/lib{i}.so.1"),
        })
        .collect();
    println!(
        "{:>8} rules  {:>10}  {:>10}  {:>10}",
        "", "ns/decision", "p99 ns", "build ms"
    );
    for n in [10usize, 1_000, 100_000] {
        let t = Instant::now();
        let rules = CompiledRules::new(rule_set(n));
        let build = t.elapsed();
        let decide = |i: u64| {
            let h = sha((i * 7919) % (HASHES + HASHES / 10)); // ~9% unknown to the catalogue
            let (approval, trust) = catalogue
                .get(&h)
                .copied()
                .unwrap_or((Approval::Unknown, None));
            let req = Request {
                operation: if i.is_multiple_of(13) {
                    Operation::Write
                } else {
                    Operation::Execute
                },
                path: &paths[(i % paths.len() as u64) as usize],
                file: FileFacts {
                    sha256: Some(h),
                    approval,
                    trust,
                    publisher: i.is_multiple_of(4).then_some(&publisher),
                },
                subject: Subject {
                    process: &process,
                    users: &users,
                    groups: &groups,
                    publisher: None,
                },
                starter: Some(sha(7)),
                path_verified: true,
            };
            evaluate(&rules, &req, Level::Lockdown)
        };
        // Warm up, then time batches to get a distribution.
        for i in 0..20_000 {
            black_box(decide(i));
        }
        let mut batches = Vec::new();
        let mut i = 0u64;
        for _ in 0..200 {
            let t = Instant::now();
            for _ in 0..1000 {
                black_box(decide(i));
                i += 1;
            }
            batches.push(t.elapsed().as_nanos() as f64 / 1000.0);
        }
        batches.sort_by(|a, b| a.total_cmp(b));
        let median = batches[batches.len() / 2];
        let p99 = batches[batches.len() * 99 / 100];
        println!(
            "{n:>8} rules  {median:>10.0}  {p99:>10.0}  {:>10.1}",
            build.as_secs_f64() * 1000.0
        );
    }
}
