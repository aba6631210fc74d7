//! Deciding one permission event with the rule engine
//! (`palisade_core::rules::evaluate`).
//!
//! The reader settles what the caches can (rule-free paths whose facts are
//! known); workers do the rest: the process context and names when a rule
//! for the path needs the subject, the package/publisher fact when the
//! decision can depend on it, the service lookup, trusted change.
use super::*;
use crate::syscall::{open_intent, Look, OpenIntent};
use palisade_api::agent::{ApprovalOrigin, LocalApproval};
use palisade_core::rules::{
    evaluate, CompiledRules, DecidedBy, Evaluation, FileFacts, PublisherFact, Request, Subject,
};

/// A write to a file by a writer whose writes are approved (trusted change),
/// recorded when the file was opened for writing.
#[derive(Debug, Clone)]
pub(super) struct PendingWrite {
    pub(super) origin: ApprovalOrigin,
    pub(super) process: ProcessContext,
}

/// A trusted writer's file, hashed at its close with no other writer
/// holding it, whose approval waits until the hasher has read every write
/// notification queued before that check: a close by another writer among
/// them (someone else wrote too) cancels it.
#[derive(Debug, Clone)]
pub(super) struct HeldWrite {
    pub(super) id: FileId,
    pub(super) sha: Sha256,
    pub(super) path: String,
    pub(super) origin: ApprovalOrigin,
    pub(super) process: ProcessContext,
}

/// Names and publisher of a subject, when a rule needs them.
struct SubjectFacts {
    users: Vec<String>,
    groups: Vec<String>,
    publisher: Option<String>,
}

impl Engine {
    /// Whether `tid` is one of the agent's own threads.
    pub(super) fn is_own(&self, tid: u32) -> bool {
        tid == self.own_pid || rustix::fs::stat(format!("/proc/self/task/{tid}")).is_ok()
    }

    /// Settle an event from the caches, or for a small file by reading it
    /// through the event's descriptor; never opens anything. Returns false
    /// when a worker must decide.
    ///
    /// The agent's own events are always allowed, but finding out whether an
    /// event is one (a `/proc` lookup) is left until the answer would be
    /// anything but an allow. Likewise the path of a file read here is looked
    /// up before the answer only when a rule depends on paths; otherwise it
    /// and the caching come after the answer.
    pub(super) fn decide_fast(&self, p: &Pending) -> bool {
        let mut learned = None;
        let settled = self.settle_fast(p, &mut learned);
        if let Some((ident, known)) = learned {
            self.learn_with_path(p, ident, known);
        }
        if settled {
            return true;
        }
        if self.is_own(p.pid) {
            bump(&self.stats.own);
            p.answered.store(true, Ordering::Relaxed);
            self.respond(p, Response::Allow);
            return true;
        }
        false
    }

    /// [`Engine::decide_fast`] but for the own-event check; a file read here
    /// is put into `learned`, to be cached by the caller.
    fn settle_fast(&self, p: &Pending, learned: &mut Option<(Identity, Known)>) -> bool {
        // First, before any rule or approval is read: a change that lands
        // after this moves the epoch, and `kernel_allow` then caches nothing.
        let epoch = self.epoch.load(Ordering::Acquire);
        let level = self.level();
        if level == Level::Disabled {
            bump(&self.stats.fast_path);
            return self.answer(p, Verdict::Allow);
        }
        let Ok(ident) = files::identify(p.fd()) else {
            return false;
        };
        if !ident.regular {
            bump(&self.stats.fast_path);
            return self.answer(p, Verdict::Allow);
        }
        let rules = self.rules();
        // Small files are read here rather than handed to a worker: reading
        // them through the event's descriptor (no open) costs less than the
        // hand-off.
        let small = ident.stamp.size <= READER_READ_MAX;
        let exec = p.mask.contains(Mask::OPEN_EXEC_PERM);
        let mut known = match self.known_cached(&ident) {
            Some(mut k) => {
                // Facts that depend on where the file is (path rules, the
                // package fact) come from where it is now.
                if rules.path_matters() || k.publisher.is_some() {
                    self.refresh_path(p.fd(), &ident, &mut k);
                }
                k
            }
            // A first exec: header and hash from one read. (A plain open may
            // be a writer creating the file, or a read of data: its content is
            // hashed only once it is known to be code, below.)
            None if small && exec => match self.read_small(p.fd(), &ident, rules.path_matters()) {
                Ok(k) => {
                    bump(&self.stats.hashed);
                    *learned = Some((ident, k.clone()));
                    k
                }
                Err(_) => return false,
            },
            None if small => match self.known(p.fd(), &ident) {
                Ok(k) => k,
                Err(_) => return false,
            },
            None => return false,
        };
        if !exec
            && (rules.write_sensitive(&known.path) || rules.tracks_writers())
            && open_intent(p.pid, Look::Registers) != OpenIntent::Read
        {
            return false; // a write: judged by a worker
        }
        let op = if exec {
            Operation::Execute
        } else if matches!(known.kind, FileKind::Elf { .. }) {
            Operation::LoadLibrary
        } else {
            match self.interpreter_cached(p.pid) {
                Some(false) => {
                    bump(&self.stats.fast_path);
                    return self.answer(p, Verdict::Allow);
                }
                // An interpreter reading a file: whether it is a script needs
                // the command line; let a worker look.
                _ => return false,
            }
        };
        if rules.path_has_rules(&known.path) {
            return false; // decided per subject
        }
        let sha = match known.sha {
            Some(sha) => sha,
            None if small => match self.hash_file(p.fd(), &ident, &mut known) {
                Ok(sha) => {
                    bump(&self.stats.hashed);
                    sha
                }
                Err(_) => return false,
            },
            None => return false,
        };
        let Some(cached) = self.approvals.lock().get(&sha) else {
            return false;
        };
        let undecided = !matches!(cached.approval, Approval::Approved(_) | Approval::Banned(_));
        let publisher = match &known.publisher {
            Some(p) => p.clone(),
            None if rules.publisher_matters(cached.approval) && self.packages.is_some() => {
                return false
            }
            None => None,
        };
        if undecided && self.trusted_write_unsettled(ident.id) {
            return false; // written by a trusted writer: a worker waits for its approval
        }
        if undecided && rules.trusted_directory_for(&known.path).is_some() {
            return false;
        }
        let process = ProcessContext::unknown(p.pid);
        let eval = evaluate(
            &rules,
            &Request {
                operation: op,
                path: &known.path,
                file: FileFacts {
                    sha256: Some(sha),
                    approval: cached.approval,
                    trust: cached.trust,
                    publisher: publisher.as_ref(),
                },
                subject: Subject::of_process(&process),
                starter: None,
                // No rule for the path (checked above): nothing reads it,
                // and the reader makes no path lookup.
                path_verified: true,
            },
            level,
        );
        let guard_reports = op == Operation::LoadLibrary && self.guard.is_some();
        if (eval.report != Report::Nothing && !guard_reports) || eval.requestable {
            // Reporting reads the process context, which opens files: a worker's job.
            return false;
        }
        if eval.verdict == Verdict::Block && !guard_reports && self.is_own(p.pid) {
            return false; // the agent's own event: allowed by the caller
        }
        // The inode goes into the kernel-side cache before the answer, for
        // every open. A writer's writes must find the mark there to clear it;
        // with the guard, its map must hold the inode before the mappings are
        // made; and an exec raises two permission events, `OPEN_EXEC_PERM`
        // then `OPEN_PERM`, the second only once the first is answered: a
        // mark placed after the answer races with it, and where the second
        // event wins, the blocked process waits for a second round trip
        // (33 of 150 cold first execs in one benchmark run; none since).
        if eval.cacheable {
            self.kernel_allow(p.fd(), &ident, sha, epoch);
        } else if op == Operation::LoadLibrary {
            self.kernel_revoke(ident.id);
        }
        bump(&self.stats.fast_path);
        // Reading a library is not loading it: with the guard, the open is
        // allowed and the executable mapping is what gets judged.
        self.answer(
            p,
            if guard_reports {
                Verdict::Allow
            } else {
                eval.verdict
            },
        )
    }

    /// Whether the rules let a copy of approved code at `path` go into the
    /// kernel-side cache before anyone runs it (pre-warming): only when its
    /// first run would be allowed from the same facts the reader uses, with
    /// no rule for the path, no publisher that could still decide (a banned
    /// publisher beats an updater's local approval) and nothing to report.
    pub(super) fn prewarm_allowed(
        &self,
        rules: &CompiledRules,
        cached: &CachedApproval,
        sha: Sha256,
        path: &str,
        level: Level,
    ) -> bool {
        if rules.path_has_rules(path) || rules.publisher_matters(cached.approval) {
            return false;
        }
        let process = ProcessContext::unknown(0);
        let eval = evaluate(
            rules,
            &Request {
                operation: Operation::Execute,
                path,
                file: FileFacts {
                    sha256: Some(sha),
                    approval: cached.approval,
                    trust: cached.trust,
                    publisher: None,
                },
                subject: Subject::of_process(&process),
                starter: None,
                // No rule for the path (above): nothing reads it.
                path_verified: true,
            },
            level,
        );
        eval.verdict == Verdict::Allow
            && eval.cacheable
            && eval.report == Report::Nothing
            && !eval.requestable
    }

    /// Decide an event the caches could not settle.
    pub(super) fn decide_slow(&self, p: &Pending) {
        bump(&self.stats.slow_path);
        // Before any rule or approval is read (see `settle_fast`).
        let epoch = self.epoch.load(Ordering::Acquire);
        let level = self.level();
        let fail = |engine: &Engine, why: &str| {
            tracing::warn!("pid {}: {why}; answering by the level", p.pid);
            engine.answer(p, on_timeout(level));
        };
        let ident = match files::identify(p.fd()) {
            Ok(i) => i,
            Err(e) => return fail(self, &format!("fstat failed: {e}")),
        };
        if !ident.regular {
            self.answer(p, Verdict::Allow);
            return;
        }
        let mut known = match self.known(p.fd(), &ident) {
            Ok(k) => k,
            Err(e) => return fail(self, &format!("cannot read file: {e}")),
        };
        let rules = self.rules();
        let exec = p.mask.contains(Mask::OPEN_EXEC_PERM);
        if !exec && (rules.write_sensitive(&known.path) || rules.tracks_writers()) {
            let intent = open_intent(p.pid, Look::Memory);
            if intent != OpenIntent::Read {
                return self.decide_write(p, &ident, &known, &rules, intent);
            }
        }
        let op = if exec {
            Operation::Execute
        } else if matches!(known.kind, FileKind::Elf { .. }) {
            Operation::LoadLibrary
        } else if self.is_interpreter(p.pid) && self.is_script_for(p.pid, &ident, &known) {
            Operation::InterpretScript
        } else {
            self.answer(p, Verdict::Allow);
            return;
        };
        let sha = match known.sha {
            Some(s) => s,
            None if ident.stamp.size > files::HASH_MAX => {
                return self.decide_too_large(p, op, &ident, known, level);
            }
            None => match self.hash_file(p.fd(), &ident, &mut known) {
                Ok(s) => {
                    bump(&self.stats.hashed);
                    s
                }
                Err(e) => return fail(self, &format!("cannot hash {}: {e}", known.path)),
            },
        };
        // The process context is built only when something needs it: a lookup
        // at the service (the request carries it), a rule about the subject,
        // or a report.
        let mut process = None;
        let (mut answer, mut reason) =
            self.approval(sha, &known.path, op, p.pid, &mut process, p.deadline);
        let undecided = !matches!(answer.approval, Approval::Approved(_) | Approval::Banned(_));
        let publisher = if rules.publisher_matters(answer.approval) {
            self.publisher_fact(p.fd(), &ident, &mut known)
        } else {
            known.publisher.clone().flatten()
        };
        // Trusted change that happened before this load: written by a
        // trusted writer (approved by the hasher once the writer closed the
        // file and no one else wrote to it: wait for that), or placed in a
        // trusted directory.
        if undecided {
            if self.trusted_write_unsettled(ident.id) {
                self.await_trusted_write(ident.id, p.deadline);
                let settled = self.approvals.lock().get(&sha);
                if let Some(c) = settled.filter(|c| matches!(c.approval, Approval::Approved(_))) {
                    answer = c;
                    reason = "trusted change".into();
                }
            } else if let Some(origin) = trusted_directory(&rules, &known.path, ident.id) {
                answer.approval = self.approve_locally(sha, &known.path, origin, None);
                reason = "trusted change".into();
            }
        }
        let subject_needed = rules.path_has_rules(&known.path);
        let facts = subject_needed.then(|| {
            let process = process.get_or_insert_with(|| self.context(p.pid));
            self.subject_facts(process, p.pid, &rules)
        });
        let starter = if subject_needed && rules.folder_for(&known.path).is_some() {
            let process = process.get_or_insert_with(|| self.context(p.pid));
            self.starter(op, process)
        } else {
            None
        };
        let unknown_process = ProcessContext::unknown(p.pid);
        let eval = evaluate(
            &rules,
            &Request {
                operation: op,
                path: &known.path,
                file: FileFacts {
                    sha256: Some(sha),
                    approval: answer.approval,
                    trust: answer.trust,
                    publisher: publisher.as_ref(),
                },
                subject: Subject {
                    process: process.as_ref().unwrap_or(&unknown_process),
                    users: facts
                        .as_ref()
                        .map(|f| f.users.as_slice())
                        .unwrap_or_default(),
                    groups: facts
                        .as_ref()
                        .map(|f| f.groups.as_slice())
                        .unwrap_or_default(),
                    publisher: facts.as_ref().and_then(|f| f.publisher.as_deref()),
                },
                starter,
                // Looked up only where a rule reads the path.
                path_verified: !subject_needed || super::names_here(&known.path, ident.id),
            },
            level,
        );

        if op == Operation::LoadLibrary && self.guard.is_some() {
            // Reading a library is not loading it: the open is allowed, and
            // the guard refuses an executable mapping unless the inode is in
            // its allowed map.
            if eval.cacheable {
                self.kernel_allow(p.fd(), &ident, sha, epoch);
            } else {
                self.kernel_revoke(ident.id);
            }
            self.answer(p, Verdict::Allow);
            return;
        }
        if eval.cacheable {
            self.kernel_allow(p.fd(), &ident, sha, epoch);
        } else {
            self.kernel_revoke(ident.id);
        }
        if eval.verdict == Verdict::Allow && op == Operation::Execute {
            self.apply_conditions(p.pid, &eval);
        }
        // Read who it was while the process is still held by the kernel.
        let report = eval.report != Report::Nothing;
        let process = report.then(|| process.unwrap_or_else(|| self.context(p.pid)));
        self.answer(p, eval.verdict);
        if let Some(process) = process {
            let reason = explain(&eval, &reason, &known.path);
            self.report(
                report_kind(&eval),
                op,
                ident.id,
                Some(sha),
                known.path,
                answer.approval,
                level,
                process,
                reason,
            );
        }
    }

    /// Code larger than the agent hashes ([`files::HASH_MAX`]): never
    /// hashed here (a sparse file of a terabyte would hold this worker for
    /// minutes, and every worker with more such files), and so unknown, at
    /// once: blocked where the level enforces, reported without a hash.
    fn decide_too_large(
        &self,
        p: &Pending,
        op: Operation,
        ident: &Identity,
        known: Known,
        level: Level,
    ) {
        let decision = palisade_core::decide(&Approval::Unknown, level);
        self.kernel_revoke(ident.id);
        // Read who it was while the process is still held by the kernel.
        let process = (decision.report != Report::Nothing).then(|| self.context(p.pid));
        self.answer(p, decision.verdict);
        if let Some(process) = process {
            let kind = match decision.report {
                Report::Blocked => EventKind::Blocked,
                _ => EventKind::WouldBlock,
            };
            self.report(
                kind,
                op,
                ident.id,
                None,
                known.path,
                Approval::Unknown,
                level,
                process,
                super::too_large_to_hash(ident.stamp.size).to_string(),
            );
        }
    }

    /// An open for writing (or that cannot be told from one): custom write
    /// rules decide; a trusted writer's file is recorded for approval.
    fn decide_write(
        &self,
        p: &Pending,
        ident: &Identity,
        known: &Known,
        rules: &CompiledRules,
        intent: OpenIntent,
    ) {
        let level = self.level();
        let process = self.context(p.pid);
        let facts = self.subject_facts(&process, p.pid, rules);
        let eval = evaluate(
            rules,
            &Request {
                operation: Operation::Write,
                path: &known.path,
                file: FileFacts {
                    sha256: known.sha,
                    approval: Approval::Unknown,
                    trust: None,
                    publisher: None,
                },
                subject: Subject {
                    process: &process,
                    users: &facts.users,
                    groups: &facts.groups,
                    publisher: facts.publisher.as_deref(),
                },
                starter: None,
                path_verified: !rules.path_has_rules(&known.path)
                    || super::names_here(&known.path, ident.id),
            },
            level,
        );
        if eval.verdict == Verdict::Allow {
            let origin = match &eval.decided_by {
                DecidedBy::CustomRule { id, .. } if eval.approve_writes => {
                    Some(ApprovalOrigin::CustomRule { rule: *id })
                }
                _ => self.writer_origin(&process, &facts, rules),
            };
            let mut pending = self.pending_writes.lock();
            match origin {
                Some(origin) => {
                    pending.insert(
                        ident.id,
                        PendingWrite {
                            origin,
                            process: process.clone(),
                        },
                    );
                }
                // Someone else writes too: what the trusted writer closes
                // is no longer its own work alone.
                None => {
                    pending.remove(&ident.id);
                }
            }
        }
        self.answer(p, eval.verdict);
        if eval.report != Report::Nothing {
            let how = if intent == OpenIntent::Unknown {
                "open flags unknown (treated as a write)"
            } else {
                "open for writing"
            };
            let reason = explain(&eval, how, &known.path);
            self.report(
                report_kind(&eval),
                Operation::Write,
                ident.id,
                known.sha,
                known.path.clone(),
                Approval::Unknown,
                level,
                process,
                reason,
            );
        }
    }

    /// Names (and, when rules match processes by publisher, the publisher
    /// of the executable) of a subject.
    fn subject_facts(
        &self,
        process: &ProcessContext,
        tid: u32,
        rules: &CompiledRules,
    ) -> SubjectFacts {
        let mut uids = Vec::new();
        if let Some(l) = process.loginuid {
            uids.push(l);
        }
        uids.push(process.euid);
        let users = self.names.users(&uids);
        let groups = self.names.groups(&crate::users::process_groups(tid));
        let publisher = if rules.needs_process_publishers() {
            self.exe_publisher(tid)
        } else {
            None
        };
        SubjectFacts {
            users,
            groups,
            publisher,
        }
    }

    /// The verified publisher of a process's executable.
    fn exe_publisher(&self, tid: u32) -> Option<String> {
        let file = std::fs::File::open(format!("/proc/{tid}/exe")).ok()?;
        let path = std::fs::read_link(format!("/proc/{tid}/exe")).ok()?;
        let fact = self
            .packages
            .as_ref()?
            .fact(&path.to_string_lossy(), file.as_fd())?;
        fact.verified.then_some(fact.name).flatten()
    }

    /// The executable hash of the process that started the code: for an
    /// exec the process calling exec, for an interpreted script the
    /// interpreter's parent.
    fn starter(&self, op: Operation, process: &ProcessContext) -> Option<Sha256> {
        match op {
            Operation::InterpretScript => process
                .ancestors
                .first()
                .and_then(|a| a.exe.as_ref())
                .and_then(|e| e.sha256),
            _ => process.exe.as_ref().and_then(|e| e.sha256),
        }
    }

    /// The package/publisher fact of a file version, computed once.
    fn publisher_fact(
        &self,
        fd: BorrowedFd<'_>,
        ident: &Identity,
        known: &mut Known,
    ) -> Option<PublisherFact> {
        if let Some(p) = &known.publisher {
            return p.clone();
        }
        // Where the file is now: a cached path can be stale. dpkg writes
        // `NAME.dpkg-new` (hashed when closed, under that name) and renames
        // it into place, and a rename within the same clock tick as the last
        // write leaves the stamp as it was; the package database knows only
        // the final name.
        let path = fd_path(fd);
        if path.starts_with('/') {
            known.path = path;
        }
        let fact = self
            .packages
            .as_ref()
            .and_then(|db| db.fact(&known.path, fd));
        known.publisher = Some(fact.clone());
        let unchanged = files::identify(fd).is_ok_and(|i| i.stamp == ident.stamp);
        if unchanged {
            self.cache_identity(ident, known.clone());
        }
        if let (Some(fact), Some(sha), true) = (&fact, known.sha, unchanged) {
            // Tell the service, so its view of the file (and its evaluation
            // for `file show`, reputation, publisher counts) has the fact
            // too. Never waits: when the queue is full the next scan's
            // inventory carries it.
            let size = rustix::fs::fstat(fd).map_or(0, |st| st.st_size.max(0) as u64);
            let _ = self.facts_tx.try_send(palisade_api::agent::InventoryItem {
                sha256: sha,
                path: known.path.clone(),
                size,
                kind: known.kind.clone(),
                publisher: Some(fact.clone()),
            });
        }
        fact
    }

    /// Whether a writer's writes are approved: a trusted user or group, or
    /// an updater's executable.
    fn writer_origin(
        &self,
        process: &ProcessContext,
        facts: &SubjectFacts,
        rules: &CompiledRules,
    ) -> Option<ApprovalOrigin> {
        if let Some((rule, user)) = rules.trusted_user(&facts.users, &facts.groups) {
            return Some(ApprovalOrigin::TrustedUser { rule, user });
        }
        // An updater is trusted as the system's package manager: run by
        // root. The same program run by a user (`dpkg --force-not-root
        // --root=$HOME/r -i evil.deb`) writes that user's files.
        if process.euid != 0 {
            return None;
        }
        let exe = process.exe.as_ref().and_then(|e| e.sha256)?;
        self.updater_hashes
            .read()
            .iter()
            .find(|(_, hashes)| hashes.contains(&exe))
            .map(|((rule, name), _)| ApprovalOrigin::Updater {
                rule: *rule,
                name: name.clone(),
            })
    }

    /// Approve a file on this computer now (trusted change): in memory at
    /// once, and at the service (which pushes it back). Returns the approval.
    pub(super) fn approve_locally(
        &self,
        sha: Sha256,
        path: &str,
        origin: ApprovalOrigin,
        process: Option<ProcessContext>,
    ) -> Approval {
        let scope = match origin {
            ApprovalOrigin::TrustedDirectory { .. } => palisade_core::ScopeKind::Global,
            _ => palisade_core::ScopeKind::Local,
        };
        let approval = Approval::Approved(palisade_core::ApprovalSource { scope });
        let revision = self.newest_change.load(Ordering::Acquire);
        self.approvals.lock().insert(
            sha,
            CachedApproval {
                approval,
                trust: None,
                revision,
            },
        );
        let _ = self.prewarm_tx.try_send(sha);
        let why = origin_text(&origin);
        let _ = self.local_tx.try_send(LocalApproval {
            sha256: sha,
            path: path.to_owned(),
            origin,
            process: process.clone(),
        });
        self.reporter.report(FileEvent {
            time_ms: crate::now_ms(),
            kind: EventKind::Approved,
            operation: Operation::Write,
            sha256: Some(sha),
            path: path.to_owned(),
            approval,
            level: self.level(),
            process: process.unwrap_or_else(|| ProcessContext::unknown(0)),
            reason: format!("trusted change: {why}"),
        });
        approval
    }

    /// Apply an allow's conditions to the process that is starting.
    fn apply_conditions(&self, tid: u32, eval: &Evaluation) {
        let c = eval.conditions;
        if let Some(nice) = c.nice {
            crate::conditions::renice(tid, nice);
        }
        if let Some(secs) = c.max_runtime_secs {
            self.timekeeper
                .limit(tid, Duration::from_secs(u64::from(secs)));
        }
    }
}

fn report_kind(eval: &Evaluation) -> EventKind {
    match eval.report {
        Report::Blocked => EventKind::Blocked,
        Report::WouldBlock => EventKind::WouldBlock,
        _ => EventKind::Allowed,
    }
}

/// The reason recorded with an event: what decided, and where the facts came from.
fn explain(eval: &Evaluation, source: &str, path: &str) -> String {
    let mut s = format!("{} ({source})", eval.decided_by.explain());
    if eval.requestable {
        s.push_str(&format!(
            "; request approval with: palisade request new {path}"
        ));
    }
    s
}

fn origin_text(o: &ApprovalOrigin) -> String {
    match o {
        ApprovalOrigin::Updater { name, .. } => format!("written by updater {name}"),
        ApprovalOrigin::TrustedUser { user, .. } => format!("written by trusted user {user}"),
        ApprovalOrigin::TrustedDirectory { dir, .. } => {
            format!("placed in trusted directory {dir}")
        }
        ApprovalOrigin::CustomRule { rule } => {
            format!("written by a process custom rule {rule} approves")
        }
        ApprovalOrigin::LevelChange => "present when the level was raised".into(),
    }
}

/// The trusted directory `path` is placed in, as an approval's origin: only
/// when the agent finds the file `id` at that path itself (the kernel
/// names a file as the acting process's mount namespace sees it; see
/// [`Request::path_verified`]).
pub(super) fn trusted_directory(
    rules: &CompiledRules,
    path: &str,
    id: FileId,
) -> Option<ApprovalOrigin> {
    let (rule, dir) = rules.trusted_directory_for(path)?;
    super::names_here(path, id).then(|| ApprovalOrigin::TrustedDirectory {
        rule,
        dir: dir.to_owned(),
    })
}
