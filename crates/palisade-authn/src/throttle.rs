//! Login throttling: exponential back-off and lockout per account, a failure
//! limit per source address. Pure decisions over state the server keeps.
//!
//! # Protocol
//!
//! For each login attempt (password step, TOTP step or recovery code alike):
//!
//! 1. [`check`] with the account's [`AccountState`], the recent failure times
//!    of the source address and the current time. Unless it says
//!    [`Decision::Allow`], answer at once without verifying anything (no
//!    Argon2 work for a refused attempt, and the answer does not depend on
//!    whether the password was right).
//! 2. Verify the credentials.
//! 3. On failure: store [`record_failure`]'s new account state and add `now`
//!    to the source address's failures. On success: store [`record_success`]'s
//!    state; the address's failures stay (a valid account of the attacker's
//!    own must not reset the limit for the others).
//!
//! Keep an `AccountState` for every submitted login name, existing or not
//! (for unknown names, in memory is enough): if only real accounts could be
//! locked, locking would tell an attacker which names exist. The server
//! decides what a "source" is; for IPv6, a /64 rather than one address.
//!
//! # Account lockout is a denial-of-service lever
//!
//! Anyone who knows an admin's name can lock them out for [`Policy::lock_for`]
//! by failing [`Policy::lock_after`] times. That is the accepted price of
//! stopping online guessing; the per-source limit slows a single attacker
//! down, and another admin (or the server's local CLI) can still act.
//!
//! # Times
//!
//! Instants are Unix milliseconds (`i64`), durations [`Duration`]. Nothing
//! here reads a clock.

use std::num::NonZeroU32;
use std::time::Duration;

/// Throttling parameters. The [`Default`] is: back-off of 1, 2, 4, 8 s after
/// the 1st to 4th consecutive failure, a 15-minute lock at the 5th,
/// failures forgotten after 24 hours without one, and at most 20 failures per
/// source address in any 15 minutes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive failures that lock the account.
    pub lock_after: NonZeroU32,
    /// How long a lock lasts, from the failure that caused it.
    pub lock_for: Duration,
    /// Delay imposed after the first failure; it doubles with each further
    /// consecutive failure. Zero disables back-off.
    pub backoff_base: Duration,
    /// Upper bound of the back-off delay.
    pub backoff_max: Duration,
    /// A failure streak ends when this long passes without a failure.
    pub forget_after: Duration,
    /// The sliding window of the per-source limit.
    pub source_window: Duration,
    /// Failures from one source, within [`Policy::source_window`], after
    /// which that source is refused until the oldest of them leaves the
    /// window.
    pub source_max_failures: NonZeroU32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            // Evaluated at compile time: cannot panic at run time.
            lock_after: const { NonZeroU32::new(5).unwrap() },
            lock_for: Duration::from_secs(15 * 60),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            forget_after: Duration::from_secs(24 * 3600),
            source_window: Duration::from_secs(15 * 60),
            source_max_failures: const { NonZeroU32::new(20).unwrap() },
        }
    }
}

/// What the server stores per account (login name) between attempts. The
/// [`Default`] is a clean account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountState {
    /// Failures since the last success, lock or forgotten streak.
    pub consecutive_failures: u32,
    /// When the last failure happened (Unix ms).
    pub last_failure_at_ms: Option<i64>,
    /// Until when the account is locked (Unix ms, exclusive), if a lock was
    /// set; a past value means the lock is over.
    pub locked_until_ms: Option<i64>,
}

impl AccountState {
    /// Whether the account is locked at `now_ms`.
    pub fn is_locked(&self, now_ms: i64) -> bool {
        self.locked_until_ms.is_some_and(|until| now_ms < until)
    }

    /// The failure streak that still counts at `now_ms`: zero once a lock has
    /// been served or [`Policy::forget_after`] has passed since the last
    /// failure.
    fn live_failures(&self, policy: &Policy, now_ms: i64) -> u32 {
        let lock_served = self.locked_until_ms.is_some_and(|until| until <= now_ms);
        let forgotten = self
            .last_failure_at_ms
            .is_some_and(|at| at.saturating_add(ms(policy.forget_after)) <= now_ms);
        if lock_served || forgotten {
            0
        } else {
            self.consecutive_failures
        }
    }
}

/// Why an attempt is refused before any credential is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// The account's back-off delay since its last failure has not passed.
    Backoff,
    /// The source has too many recent failures.
    SourceLimit,
}

/// What to do with a login attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Check the credentials.
    Allow,
    /// Refuse without checking; the attempt may be retried after the delay
    /// (send it as `Retry-After`).
    Refuse {
        /// How long until an attempt would be allowed.
        retry_after: Duration,
        /// Which limit applies (the longer one, when both do).
        reason: RefuseReason,
    },
    /// The account is locked; refuse without checking.
    Locked {
        /// When the lock ends (Unix ms).
        until_ms: i64,
    },
}

/// A duration in milliseconds, saturating at `i64::MAX`.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The back-off delay after `failures` consecutive failures, in ms.
fn backoff_ms(policy: &Policy, failures: u32) -> i64 {
    if failures == 0 {
        return 0;
    }
    let doublings = (failures - 1).min(62);
    ms(policy.backoff_base)
        .saturating_mul(1i64 << doublings)
        .min(ms(policy.backoff_max))
}

/// When a source with these failure times may try again, if it is over the
/// limit now.
fn source_retry_at(policy: &Policy, source_failures_ms: &[i64], now_ms: i64) -> Option<i64> {
    let window = ms(policy.source_window);
    let mut recent: Vec<i64> = source_failures_ms
        .iter()
        .map(|&at| at.min(now_ms))
        .filter(|&at| at.saturating_add(window) > now_ms)
        .collect();
    let max = policy.source_max_failures.get() as usize;
    if recent.len() < max {
        return None;
    }
    // The source is allowed again once only `max - 1` failures remain in the
    // window: when the failure at index `len - max` (oldest first) leaves it.
    recent.sort_unstable();
    Some(recent[recent.len() - max].saturating_add(window))
}

/// Decides whether a login attempt for an account in state `account`, from a
/// source whose recent failures happened at `source_failures_ms` (any order;
/// times outside the window are ignored, so the caller may pass more), may
/// proceed at `now_ms`.
///
/// A lock wins over a refusal; between back-off and the source limit, the
/// longer wait wins.
pub fn check(
    policy: &Policy,
    account: &AccountState,
    source_failures_ms: &[i64],
    now_ms: i64,
) -> Decision {
    if let Some(until_ms) = account.locked_until_ms.filter(|&u| now_ms < u) {
        return Decision::Locked { until_ms };
    }
    let failures = account.live_failures(policy, now_ms);
    let backoff_until = account
        .last_failure_at_ms
        .filter(|_| failures > 0)
        .map(|at| at.saturating_add(backoff_ms(policy, failures)))
        .filter(|&until| until > now_ms);
    let source_until = source_retry_at(policy, source_failures_ms, now_ms);
    let refusal = match (backoff_until, source_until) {
        (None, None) => return Decision::Allow,
        (Some(b), Some(s)) if s > b => (s, RefuseReason::SourceLimit),
        (Some(b), _) => (b, RefuseReason::Backoff),
        (None, Some(s)) => (s, RefuseReason::SourceLimit),
    };
    let wait = refusal.0.saturating_sub(now_ms).max(0);
    Decision::Refuse {
        retry_after: Duration::from_millis(wait.unsigned_abs()),
        reason: refusal.1,
    }
}

/// The account's state after a failed attempt at `now_ms`: one more
/// consecutive failure, and a lock until `now_ms + lock_for` when that makes
/// [`Policy::lock_after`]. Call it only for attempts [`check`] allowed and the
/// credentials then failed. The caller compares
/// [`AccountState::is_locked`] before and after to audit the lock.
pub fn record_failure(policy: &Policy, account: &AccountState, now_ms: i64) -> AccountState {
    let failures = account.live_failures(policy, now_ms).saturating_add(1);
    let active_lock = account.locked_until_ms.filter(|&u| now_ms < u);
    let new_lock =
        (failures >= policy.lock_after.get()).then(|| now_ms.saturating_add(ms(policy.lock_for)));
    let locked_until_ms = match (active_lock, new_lock) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    AccountState {
        consecutive_failures: failures,
        last_failure_at_ms: Some(now_ms),
        locked_until_ms,
    }
}

/// The account's state after a successful login: clean (no failures, no
/// lock).
pub fn record_success() -> AccountState {
    AccountState::default()
}
