use std::time::Duration;

use palisade_authn::throttle::{
    check, record_failure, record_success, AccountState, Decision, Policy, RefuseReason,
};

const S: i64 = 1_000;
const MIN: i64 = 60 * S;
const T0: i64 = 1_700_000_000_000;

/// One step of a scenario: at `at` (ms after T0), an attempt from the
/// scenario's source gets `expect`; when allowed, its credentials are
/// `right` or not, and the state is updated as the server would.
struct Step {
    at: i64,
    right: bool,
    expect: Decision,
}

fn allow(at: i64, right: bool) -> Step {
    Step {
        at,
        right,
        expect: Decision::Allow,
    }
}

fn refuse(at: i64, wait_ms: i64, reason: RefuseReason) -> Step {
    Step {
        at,
        right: true,
        expect: Decision::Refuse {
            retry_after: Duration::from_millis(wait_ms as u64),
            reason,
        },
    }
}

fn locked(at: i64, until: i64) -> Step {
    Step {
        at,
        right: true,
        expect: Decision::Locked {
            until_ms: T0 + until,
        },
    }
}

/// Runs `steps` for one account from one source; returns the final state.
fn run(policy: &Policy, steps: &[Step]) -> AccountState {
    let mut account = AccountState::default();
    let mut source: Vec<i64> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let now = T0 + step.at;
        let decision = check(policy, &account, &source, now);
        assert_eq!(
            decision, step.expect,
            "step {i} at +{} ms, state {account:?}",
            step.at
        );
        if decision == Decision::Allow {
            if step.right {
                account = record_success();
            } else {
                account = record_failure(policy, &account, now);
                source.push(now);
            }
        }
    }
    account
}

#[test]
fn backoff_doubles_then_locks_after_five() {
    let policy = Policy::default();
    let state = run(
        &policy,
        &[
            allow(0, false),
            refuse(500, 500, RefuseReason::Backoff),
            allow(S, false),
            refuse(S + 1, 2 * S - 1, RefuseReason::Backoff),
            allow(3 * S, false),
            allow(7 * S, false),
            refuse(14 * S, S, RefuseReason::Backoff),
            allow(15 * S, false), // the fifth: locked for 15 minutes
            locked(15 * S, 15 * S + 15 * MIN),
            locked(15 * S + 15 * MIN - 1, 15 * S + 15 * MIN),
            // Lock served: allowed again, with a clean streak.
            allow(15 * S + 15 * MIN, false),
            refuse(15 * S + 15 * MIN + 1, S - 1, RefuseReason::Backoff),
        ],
    );
    assert_eq!(state.consecutive_failures, 1);
    assert!(!state.is_locked(T0 + 16 * S + 15 * MIN));
}

#[test]
fn the_right_password_during_a_lock_is_refused() {
    let policy = Policy::default();
    run(
        &policy,
        &[
            allow(0, false),
            allow(MIN, false),
            allow(2 * MIN, false),
            allow(3 * MIN, false),
            allow(4 * MIN, false),
            locked(5 * MIN, 4 * MIN + 15 * MIN), // right password, not even checked
            allow(19 * MIN, true),
        ],
    );
}

#[test]
fn success_resets_the_streak() {
    let policy = Policy::default();
    let state = run(
        &policy,
        &[
            allow(0, false),
            allow(MIN, false),
            allow(2 * MIN, false),
            allow(3 * MIN, false),
            allow(4 * MIN, true),
            allow(5 * MIN, false),
            // One failure since the success: back-off of 1 s, no lock.
            refuse(5 * MIN + 100, 900, RefuseReason::Backoff),
            allow(6 * MIN, false),
            allow(7 * MIN, false),
            allow(8 * MIN, false),
            allow(9 * MIN, true),
        ],
    );
    assert_eq!(state, AccountState::default());
}

#[test]
fn streak_is_forgotten_after_a_quiet_day() {
    let policy = Policy::default();
    let mut state = AccountState::default();
    for i in 0..4 {
        state = record_failure(&policy, &state, T0 + i * MIN);
    }
    assert_eq!(state.consecutive_failures, 4);
    let later = T0 + 3 * MIN + 24 * 60 * MIN;
    assert_eq!(check(&policy, &state, &[], later), Decision::Allow);
    state = record_failure(&policy, &state, later);
    assert_eq!(state.consecutive_failures, 1);
    assert!(!state.is_locked(later));
}

#[test]
fn backoff_is_capped() {
    let policy = Policy {
        lock_after: std::num::NonZeroU32::new(100).unwrap(),
        ..Policy::default()
    };
    let mut state = AccountState::default();
    for _ in 0..40 {
        state = record_failure(&policy, &state, T0);
    }
    assert_eq!(
        check(&policy, &state, &[], T0),
        Decision::Refuse {
            retry_after: Duration::from_secs(60),
            reason: RefuseReason::Backoff
        }
    );
    assert_eq!(check(&policy, &state, &[], T0 + MIN), Decision::Allow);

    let no_backoff = Policy {
        backoff_base: Duration::ZERO,
        ..policy
    };
    assert_eq!(check(&no_backoff, &state, &[], T0), Decision::Allow);
}

#[test]
fn per_source_limit() {
    let policy = Policy::default();
    let clean = AccountState::default();
    // 20 failures from one source against many accounts, one every 10 s.
    let failures: Vec<i64> = (0..20).map(|i| T0 + i * 10 * S).collect();
    let now = T0 + 200 * S;
    // The oldest leaves the 15-minute window at T0 + 15 min.
    assert_eq!(
        check(&policy, &clean, &failures, now),
        Decision::Refuse {
            retry_after: Duration::from_millis((T0 + 15 * MIN - now) as u64),
            reason: RefuseReason::SourceLimit
        }
    );
    assert_eq!(
        check(&policy, &clean, &failures, T0 + 15 * MIN),
        Decision::Allow
    );
    // 19 are under the limit; order does not matter; old ones do not count.
    assert_eq!(check(&policy, &clean, &failures[1..], now), Decision::Allow);
    let mut shuffled: Vec<i64> = failures.iter().rev().copied().collect();
    shuffled.extend((0..50).map(|i| T0 - 16 * MIN - i));
    assert_eq!(
        check(&policy, &clean, &shuffled, now),
        check(&policy, &clean, &failures, now)
    );
    // 25 failures: allowed when 6 have left the window (the 6th oldest at +50 s).
    let more: Vec<i64> = (0..25).map(|i| T0 + i * 10 * S).collect();
    let now = T0 + 250 * S;
    assert_eq!(
        check(&policy, &clean, &more, now),
        Decision::Refuse {
            retry_after: Duration::from_millis((T0 + 50 * S + 15 * MIN - now) as u64),
            reason: RefuseReason::SourceLimit
        }
    );
}

#[test]
fn longer_wait_wins_and_lock_wins_over_all() {
    let policy = Policy::default();
    let mut state = AccountState::default();
    for i in 0..3 {
        state = record_failure(&policy, &state, T0 + i * MIN);
    }
    let last = T0 + 2 * MIN;
    let over_limit: Vec<i64> = (0..20).map(|i| last - 14 * MIN + i).collect();
    // Back-off (4 s) is shorter than the source limit (until last + 1 min).
    assert_eq!(
        check(&policy, &state, &over_limit, last + S),
        Decision::Refuse {
            retry_after: Duration::from_millis((MIN - S) as u64),
            reason: RefuseReason::SourceLimit
        }
    );
    // Source failures that all just left the window: back-off alone.
    let old: Vec<i64> = over_limit.iter().map(|t| t - MIN).collect();
    assert_eq!(
        check(&policy, &state, &old, last + S),
        Decision::Refuse {
            retry_after: Duration::from_secs(3),
            reason: RefuseReason::Backoff
        }
    );
    state = record_failure(&policy, &state, last + 10 * S);
    state = record_failure(&policy, &state, last + 30 * S);
    assert!(state.is_locked(last + 30 * S));
    assert_eq!(
        check(&policy, &state, &over_limit, last + 31 * S),
        Decision::Locked {
            until_ms: last + 30 * S + 15 * MIN
        }
    );
}
