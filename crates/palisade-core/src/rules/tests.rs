use super::*;
use crate::approval::ApprovalSource;
use crate::context::Executable;
use crate::decision::Verdict;

fn sha(n: u8) -> Sha256 {
    Sha256::from_bytes([n; 32])
}

fn pat(s: &str) -> PathPattern {
    PathPattern::parse(s).unwrap()
}

fn process(exe_path: &str, exe: Sha256) -> ProcessContext {
    let mut p = ProcessContext::unknown(100);
    p.uid = 1000;
    p.exe = Some(Executable {
        path: exe_path.into(),
        sha256: Some(exe),
    });
    p
}

const APPROVED: Approval = Approval::Approved(ApprovalSource {
    scope: ScopeKind::Global,
});
const BANNED: Approval = Approval::Banned(ApprovalSource {
    scope: ScopeKind::Policy,
});

struct Case<'a> {
    op: Operation,
    path: &'a str,
    approval: Approval,
    trust: Option<u8>,
    publisher: Option<PublisherFact>,
    exe: (&'a str, Sha256),
    users: Vec<String>,
    starter: Option<Sha256>,
    path_verified: bool,
}

impl Default for Case<'_> {
    fn default() -> Self {
        Case {
            op: Operation::Execute,
            path: "/opt/app/tool",
            approval: Approval::Unknown,
            trust: None,
            publisher: None,
            exe: ("/usr/bin/bash", sha(50)),
            users: vec!["alice".into()],
            starter: Some(sha(50)),
            path_verified: true,
        }
    }
}

fn eval(rules: &CompiledRules, c: &Case<'_>, level: Level) -> Evaluation {
    let process = process(c.exe.0, c.exe.1);
    let groups = vec!["staff".to_string()];
    let req = Request {
        operation: c.op,
        path: c.path,
        file: FileFacts {
            sha256: Some(sha(1)),
            approval: c.approval,
            trust: c.trust,
            publisher: c.publisher.as_ref(),
        },
        subject: Subject {
            process: &process,
            users: &c.users,
            groups: &groups,
            publisher: None,
        },
        starter: c.starter,
        path_verified: c.path_verified,
    };
    evaluate(rules, &req, level)
}

fn custom(id: i64, paths: &[&str], action: RuleAction) -> CustomRule {
    CustomRule {
        id: RuleId(id),
        name: format!("rule {id}"),
        process: None,
        user: None,
        operations: Operations {
            execute: true,
            write: false,
        },
        paths: paths.iter().map(|p| pat(p)).collect(),
        action,
        conditions: Conditions::default(),
    }
}

fn debian(verified: bool) -> PublisherFact {
    PublisherFact {
        name: Some("Debian".into()),
        package: "coreutils".into(),
        version: "9.1-1".into(),
        verified,
    }
}

#[test]
fn level_table_for_unknown_and_explicit_blocks() {
    let rules = CompiledRules::new(RuleSet::default());
    let unknown = Case::default();
    let banned = Case {
        approval: BANNED,
        ..Case::default()
    };
    let v = |c: &Case<'_>, l| {
        let e = eval(&rules, c, l);
        (e.verdict, e.report, e.requestable)
    };
    assert_eq!(
        v(&unknown, Level::Lockdown),
        (Verdict::Block, Report::Blocked, false)
    );
    assert_eq!(
        v(&unknown, Level::Prompt),
        (Verdict::Block, Report::Blocked, true)
    );
    assert_eq!(
        v(&banned, Level::Prompt),
        (Verdict::Block, Report::Blocked, false),
        "a ban is not requestable"
    );
    assert_eq!(
        v(&unknown, Level::Monitor),
        (Verdict::Allow, Report::WouldBlock, false)
    );
    assert_eq!(
        v(&banned, Level::Disabled),
        (Verdict::Allow, Report::Nothing, false)
    );
    let e = eval(
        &rules,
        &Case {
            approval: APPROVED,
            ..Case::default()
        },
        Level::Lockdown,
    );
    assert_eq!((e.verdict, e.cacheable), (Verdict::Allow, true));
}

#[test]
fn precedence() {
    let mut set = RuleSet {
        custom: vec![
            custom(1, &["/opt/exception/*"], RuleAction::Allow),
            custom(2, &["/opt/blocked/**"], RuleAction::Block),
        ],
        folders: vec![FolderProtection {
            id: RuleId(3),
            dir: "/opt/rmm/scripts".into(),
            parents: vec![sha(77)],
        }],
        publishers: vec![
            PublisherState {
                name: "Debian".into(),
                state: FileState::Approved,
                scope: ScopeKind::Global,
            },
            PublisherState {
                name: "Evil".into(),
                state: FileState::Banned,
                scope: ScopeKind::Policy,
            },
        ],
        reputation: vec![ReputationRule {
            id: RuleId(4),
            min_trust: 8,
            min_publisher_trust: None,
            except_files: vec![sha(9)],
            except_publishers: vec![],
        }],
        ..RuleSet::default()
    };
    let rules = CompiledRules::new(set.clone());
    let by = |c: Case<'_>| eval(&rules, &c, Level::Lockdown);

    // 1. A custom allow beats a ban; a custom block beats an approval.
    let e = by(Case {
        path: "/opt/exception/tool",
        approval: BANNED,
        ..Case::default()
    });
    assert_eq!(
        (e.verdict, e.decided_by.clone()),
        (
            Verdict::Allow,
            DecidedBy::CustomRule {
                id: RuleId(1),
                name: "rule 1".into(),
                action: RuleAction::Allow
            }
        )
    );
    assert!(
        !e.cacheable,
        "a path with custom rules is decided per subject"
    );
    let e = by(Case {
        path: "/opt/blocked/deep/x",
        approval: APPROVED,
        ..Case::default()
    });
    assert_eq!(e.verdict, Verdict::Block);
    // 2. A ban beats folder protection, approvals, publisher and reputation.
    let e = by(Case {
        path: "/opt/rmm/scripts/gen.sh",
        approval: BANNED,
        starter: Some(sha(77)),
        trust: Some(10),
        ..Case::default()
    });
    assert!(matches!(
        e.decided_by,
        DecidedBy::FileState {
            state: FileState::Banned,
            ..
        }
    ));
    // 3. Folder protection: right parent runs unknown code; wrong parent is
    // blocked even with an approval.
    let e = by(Case {
        path: "/opt/rmm/scripts/gen-1234.sh",
        starter: Some(sha(77)),
        ..Case::default()
    });
    assert_eq!(e.verdict, Verdict::Allow);
    assert!(!e.cacheable);
    let e = by(Case {
        path: "/opt/rmm/scripts/gen-1234.sh",
        starter: Some(sha(78)),
        approval: APPROVED,
        ..Case::default()
    });
    assert_eq!(e.verdict, Verdict::Block);
    assert!(e.decided_by.explain().contains("not started by"));
    // 4. Approval.
    assert_eq!(
        by(Case {
            approval: APPROVED,
            ..Case::default()
        })
        .verdict,
        Verdict::Allow
    );
    // 5. Publisher: approved only when verified; banned blocks.
    let e = by(Case {
        publisher: Some(debian(true)),
        ..Case::default()
    });
    assert_eq!((e.verdict, e.cacheable), (Verdict::Allow, true));
    assert_eq!(
        by(Case {
            publisher: Some(debian(false)),
            ..Case::default()
        })
        .verdict,
        Verdict::Block
    );
    let mut evil = debian(true);
    evil.name = Some("Evil".into());
    let e = by(Case {
        publisher: Some(evil),
        trust: Some(10),
        ..Case::default()
    });
    assert!(matches!(
        e.decided_by,
        DecidedBy::Publisher {
            state: FileState::Banned,
            ..
        }
    ));
    // 6. Reputation, with exceptions; manual approvals come first.
    let e = by(Case {
        trust: Some(8),
        ..Case::default()
    });
    assert_eq!(
        e.decided_by,
        DecidedBy::Reputation {
            id: RuleId(4),
            trust: 8
        }
    );
    assert_eq!(
        by(Case {
            trust: Some(7),
            ..Case::default()
        })
        .verdict,
        Verdict::Block
    );
    assert!(matches!(
        by(Case {
            trust: Some(9),
            approval: APPROVED,
            ..Case::default()
        })
        .decided_by,
        DecidedBy::FileState { .. }
    ));
    // The excepted file.
    set.reputation[0].except_files = vec![sha(1)];
    let rules = CompiledRules::new(set);
    assert_eq!(
        eval(
            &rules,
            &Case {
                trust: Some(10),
                ..Case::default()
            },
            Level::Lockdown
        )
        .verdict,
        Verdict::Block
    );
}

/// A path the agent could not find the file at (seen only in the acting
/// process's mount namespace) grants nothing by itself: custom allows and
/// approves and a protected folder's parents are passed over; blocks still
/// apply.
#[test]
fn an_unverified_path_grants_nothing() {
    let rules = CompiledRules::new(RuleSet {
        custom: vec![
            custom(1, &["/opt/exception/*"], RuleAction::Allow),
            custom(2, &["/opt/approve/*"], RuleAction::Approve),
            custom(3, &["/opt/blocked/**"], RuleAction::Block),
        ],
        folders: vec![FolderProtection {
            id: RuleId(4),
            dir: "/opt/rmm/scripts".into(),
            parents: vec![sha(77)],
        }],
        ..RuleSet::default()
    });
    let by = |path: &str, path_verified: bool, approval: Approval| {
        eval(
            &rules,
            &Case {
                path,
                path_verified,
                approval,
                starter: Some(sha(77)),
                ..Case::default()
            },
            Level::Lockdown,
        )
    };
    for path in [
        "/opt/exception/tool",
        "/opt/approve/tool",
        "/opt/rmm/scripts/x.sh",
    ] {
        assert_eq!(
            by(path, true, Approval::Unknown).verdict,
            Verdict::Allow,
            "{path}"
        );
        let e = by(path, false, Approval::Unknown);
        assert_eq!(e.verdict, Verdict::Block, "{path}: {e:?}");
        assert!(!matches!(
            e.decided_by,
            DecidedBy::CustomRule {
                action: RuleAction::Allow | RuleAction::Approve,
                ..
            }
        ));
    }
    // Approved code still runs where only a grant was passed over.
    assert_eq!(
        by("/opt/exception/tool", false, APPROVED).verdict,
        Verdict::Allow
    );
    // Restrictions hold either way.
    for verified in [true, false] {
        assert_eq!(
            by("/opt/blocked/x", verified, APPROVED).verdict,
            Verdict::Block
        );
    }
}

/// A path the agent could not learn (`?`) may be anywhere: every rule that
/// restricts applies to it, and no rule that grants.
#[test]
fn an_unknown_path_meets_every_restriction_and_no_grant() {
    let rules = CompiledRules::new(RuleSet {
        custom: vec![
            custom(1, &["/opt/exception/*"], RuleAction::Allow),
            custom(2, &["/home/*/Downloads/**"], RuleAction::Block),
        ],
        ..RuleSet::default()
    });
    let by = |path: &str, approval: Approval| {
        eval(
            &rules,
            &Case {
                path,
                path_verified: false,
                approval,
                ..Case::default()
            },
            Level::Lockdown,
        )
    };
    let e = by("?", APPROVED);
    assert_eq!(e.verdict, Verdict::Block, "{e:?}");
    assert!(matches!(
        e.decided_by,
        DecidedBy::CustomRule {
            action: RuleAction::Block,
            ..
        }
    ));
    assert!(rules.path_has_rules("?"));
    // Grants only: nothing matches, the approval decides.
    let grants = CompiledRules::new(RuleSet {
        custom: vec![custom(1, &["/opt/exception/*"], RuleAction::Allow)],
        ..RuleSet::default()
    });
    assert!(!grants.path_has_rules("?"));
    assert_eq!(by("/srv/x", APPROVED).verdict, Verdict::Allow);
}

/// Two protections of one folder: the parents of either may start its code.
#[test]
fn a_folder_protected_twice_takes_both_rules_parents() {
    let rules = CompiledRules::new(RuleSet {
        folders: vec![
            FolderProtection {
                id: RuleId(1),
                dir: "/opt/rmm/scripts".into(),
                parents: vec![sha(77)],
            },
            FolderProtection {
                id: RuleId(2),
                dir: "/opt/rmm/scripts".into(),
                parents: vec![sha(78)],
            },
        ],
        ..RuleSet::default()
    });
    let by = |starter: u8| {
        eval(
            &rules,
            &Case {
                path: "/opt/rmm/scripts/x.sh",
                starter: Some(sha(starter)),
                ..Case::default()
            },
            Level::Lockdown,
        )
        .verdict
    };
    assert_eq!(by(77), Verdict::Allow);
    assert_eq!(by(78), Verdict::Allow);
    assert_eq!(by(79), Verdict::Block);
}

#[test]
fn custom_rule_matching_by_process_user_operation() {
    let mut by_hash = custom(1, &["/srv/**"], RuleAction::Block);
    by_hash.process = Some(ProcessMatch::Hash(sha(60)));
    let mut by_user = custom(2, &["/srv/**"], RuleAction::Prompt);
    by_user.user = Some(UserMatch::User("bob".into()));
    let mut by_group = custom(3, &["/srv/**"], RuleAction::Report);
    by_group.user = Some(UserMatch::Group("staff".into()));
    let mut write_protect = custom(4, &["/etc/app/*.conf"], RuleAction::Block);
    write_protect.operations = Operations {
        execute: false,
        write: true,
    };
    let mut approver = custom(5, &["/opt/deploy/**"], RuleAction::Approve);
    approver.process = Some(ProcessMatch::Path(pat("/usr/bin/deployer")));
    approver.operations = Operations {
        execute: true,
        write: true,
    };
    let mut slow = custom(6, &["/opt/batch/*"], RuleAction::Allow);
    slow.conditions = Conditions {
        nice: Some(10),
        max_runtime_secs: Some(60),
        log: LogLevel::Verbose,
    };
    let rules = CompiledRules::new(RuleSet {
        custom: vec![by_hash, by_user, by_group, write_protect, approver, slow],
        ..RuleSet::default()
    });
    let l = Level::Lockdown;
    // Process by hash.
    let e = eval(
        &rules,
        &Case {
            path: "/srv/x",
            exe: ("/usr/bin/x", sha(60)),
            approval: APPROVED,
            ..Case::default()
        },
        l,
    );
    assert_eq!(e.verdict, Verdict::Block);
    // A report rule reports and lets evaluation continue.
    let e = eval(
        &rules,
        &Case {
            path: "/srv/x",
            approval: APPROVED,
            ..Case::default()
        },
        l,
    );
    assert_eq!((e.verdict, e.report), (Verdict::Allow, Report::Reported));
    // By user: prompt.
    let e = eval(
        &rules,
        &Case {
            path: "/srv/x",
            users: vec!["bob".into()],
            ..Case::default()
        },
        l,
    );
    assert_eq!((e.verdict, e.requestable), (Verdict::Block, true));
    // Write control: only writes are decided by rule 4; other writes are allowed.
    let w = |path| {
        eval(
            &rules,
            &Case {
                op: Operation::Write,
                path,
                ..Case::default()
            },
            l,
        )
    };
    assert_eq!(w("/etc/app/main.conf").verdict, Verdict::Block);
    assert_eq!(w("/etc/app/other.txt").verdict, Verdict::Allow);
    assert_eq!(
        eval(
            &rules,
            &Case {
                path: "/etc/app/main.conf",
                approval: APPROVED,
                ..Case::default()
            },
            l
        )
        .verdict,
        Verdict::Allow
    );
    // Approve: the deployer's writes are to be approved.
    let e = eval(
        &rules,
        &Case {
            op: Operation::Write,
            path: "/opt/deploy/new",
            exe: ("/usr/bin/deployer", sha(61)),
            ..Case::default()
        },
        l,
    );
    assert!(e.approve_writes && e.verdict == Verdict::Allow);
    // Conditions travel with the allow.
    let e = eval(
        &rules,
        &Case {
            path: "/opt/batch/job",
            ..Case::default()
        },
        l,
    );
    assert_eq!(
        (e.verdict, e.conditions.nice, e.report),
        (Verdict::Allow, Some(10), Report::Reported)
    );
    assert!(!e.cacheable);
}

#[test]
fn publisher_states_ban_wins() {
    let rules = CompiledRules::new(RuleSet {
        publishers: vec![
            PublisherState {
                name: "X".into(),
                state: FileState::Approved,
                scope: ScopeKind::Policy,
            },
            PublisherState {
                name: "X".into(),
                state: FileState::Banned,
                scope: ScopeKind::Global,
            },
            PublisherState {
                name: "Y".into(),
                state: FileState::Unapproved,
                scope: ScopeKind::Global,
            },
            PublisherState {
                name: "Y".into(),
                state: FileState::Approved,
                scope: ScopeKind::Policy,
            },
        ],
        ..RuleSet::default()
    });
    assert_eq!(
        rules.publisher_state("X").map(|s| s.0),
        Some(FileState::Banned)
    );
    assert_eq!(
        rules.publisher_state("Y").map(|s| s.0),
        Some(FileState::Approved)
    );
    assert_eq!(rules.publisher_state("Z"), None);
}

#[test]
fn rule_sets_round_trip_through_json() {
    let set = RuleSet {
        custom: vec![custom(1, &["/a/*"], RuleAction::Approve)],
        trusted_change: vec![
            TrustedChange::Updater {
                id: RuleId(2),
                name: "dpkg".into(),
                programs: vec!["dpkg".into()],
                hashes: vec![sha(3)],
                package_manager: true,
            },
            TrustedChange::TrustedUser {
                id: RuleId(3),
                user: UserMatch::Group("wheel".into()),
            },
        ],
        ..RuleSet::default()
    };
    let json = serde_json::to_string(&set).unwrap();
    assert_eq!(serde_json::from_str::<RuleSet>(&json).unwrap(), set);
    assert!(serde_json::from_str::<RuleSet>(r#"{"custom":[{"id":1,"name":"x","operations":{"execute":true,"write":false},"paths":["relative"],"action":"allow"}]}"#).is_err());
}

#[test]
fn package_manager_updater_approves_verified_package_files() {
    let dpkg = TrustedChange::Updater {
        id: RuleId(7),
        name: "dpkg".into(),
        programs: vec!["dpkg".into()],
        hashes: vec![],
        package_manager: true,
    };
    let local_deb = PublisherFact {
        name: None,
        package: "hello-palisade".into(),
        version: "1.0".into(),
        verified: true,
    };
    let without = CompiledRules::new(RuleSet::default());
    let with = CompiledRules::new(RuleSet {
        trusted_change: vec![dpkg],
        publishers: vec![PublisherState {
            name: "Debian".into(),
            state: FileState::Banned,
            scope: ScopeKind::Global,
        }],
        ..RuleSet::default()
    });
    let case = |p: PublisherFact| Case {
        publisher: Some(p),
        ..Case::default()
    };
    assert_eq!(
        eval(&without, &case(local_deb.clone()), Level::Lockdown).verdict,
        Verdict::Block
    );
    let e = eval(&with, &case(local_deb.clone()), Level::Lockdown);
    assert_eq!(e.verdict, Verdict::Allow);
    assert!(
        e.decided_by.explain().contains("hello-palisade"),
        "{}",
        e.decided_by.explain()
    );
    let mut tampered = local_deb;
    tampered.verified = false;
    assert_eq!(
        eval(&with, &case(tampered), Level::Lockdown).verdict,
        Verdict::Block,
        "a file changed after install is not vouched for"
    );
    assert_eq!(
        eval(&with, &case(debian(true)), Level::Lockdown).verdict,
        Verdict::Block,
        "a banned publisher beats the updater"
    );
}

#[test]
fn a_banned_publisher_outranks_local_approvals_but_not_admin_approvals() {
    let banned_debian = CompiledRules::new(RuleSet {
        publishers: vec![PublisherState {
            name: "Debian".into(),
            state: FileState::Banned,
            scope: ScopeKind::Global,
        }],
        ..RuleSet::default()
    });
    let local = Approval::Approved(ApprovalSource {
        scope: ScopeKind::Local,
    });
    let case = |approval: Approval, verified: bool| Case {
        approval,
        publisher: Some(debian(verified)),
        ..Case::default()
    };
    // Installed by dpkg (approved locally by trusted change), then its
    // publisher banned: blocked.
    let e = eval(&banned_debian, &case(local, true), Level::Lockdown);
    assert_eq!(e.verdict, Verdict::Block);
    assert!(matches!(e.decided_by, DecidedBy::Publisher { .. }));
    // The admin approved that exact hash for all computers: it runs.
    assert_eq!(
        eval(&banned_debian, &case(APPROVED, true), Level::Lockdown).verdict,
        Verdict::Allow
    );
    // Content that does not match the package is not the publisher's: the
    // local approval stands.
    assert_eq!(
        eval(&banned_debian, &case(local, false), Level::Lockdown).verdict,
        Verdict::Allow
    );
    // The agent establishes the fact only where it can matter.
    assert!(banned_debian.publisher_matters(local));
    assert!(banned_debian.publisher_matters(Approval::Unknown));
    assert!(!banned_debian.publisher_matters(APPROVED));
    assert!(!banned_debian.publisher_matters(BANNED));
    let none = CompiledRules::new(RuleSet::default());
    assert!(!none.publisher_matters(local));
    assert!(!none.publisher_matters(Approval::Unknown));
}

#[test]
fn local_state_follows_the_file_facts_and_ignores_path_rules() {
    let rules = CompiledRules::new(RuleSet {
        publishers: vec![PublisherState {
            name: "Debian".into(),
            state: FileState::Approved,
            scope: ScopeKind::Global,
        }],
        // Would block everything, for whoever runs it anywhere: not a state.
        custom: vec![custom(1, &["/**"], RuleAction::Block)],
        ..RuleSet::default()
    });
    let facts = |approval, publisher| FileFacts {
        sha256: Some(sha(1)),
        approval,
        trust: None,
        publisher,
    };
    assert_eq!(local_state(&rules, facts(BANNED, None)), LocalState::Banned);
    assert_eq!(
        local_state(&rules, facts(APPROVED, None)),
        LocalState::Approved
    );
    assert_eq!(
        local_state(&rules, facts(Approval::Unknown, None)),
        LocalState::Unapproved
    );
    let verified = debian(true);
    assert_eq!(
        local_state(&rules, facts(Approval::Unknown, Some(&verified))),
        LocalState::Approved
    );
    let tampered = debian(false);
    assert_eq!(
        local_state(&rules, facts(Approval::Unknown, Some(&tampered))),
        LocalState::Unapproved
    );
}
