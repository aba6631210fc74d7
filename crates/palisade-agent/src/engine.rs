//! The decision pipeline: from a fanotify permission event to a verdict.
//!
//! Threads (all plain OS threads; none of them waits on the network or the
//! disk without a deadline):
//!
//! - **reader** (one): reads permission events and answers those the caches
//!   settle at once (own process, disabled level, non-regular files, files
//!   whose identity, kind and approval are cached). It never opens a file:
//!   an open on a watched filesystem raises an event that only this thread
//!   can answer. It never blocks on the workers either: when their queue is
//!   full (or the causing user's share of it, [`fair`]) it answers at once
//!   with the timeout verdict.
//! - **workers** (`workers`, [`pool`]): everything else: classify, hash, build the
//!   process context, look up (memory, service with a deadline, disk), decide,
//!   answer, fill the kernel-side cache, report.
//! - **watchdog** (one): answers every event still unanswered at its
//!   deadline with [`palisade_core::on_timeout`] of the level in force. All
//!   events have the same deadline offset, so a FIFO suffices. Then it
//!   replaces workers held past a deadline ([`pool::Pool::top_up`]).
//! - **guard** (one, when the BPF guard is loaded): turns guard reports into
//!   events and keeps the two kernel caches coherent.
//! - **hasher** (one, with `hash_on_write`): hashes executable files when they
//!   are closed after writing, so their first run needs no hashing.
//!
//! Locks are held only around in-memory operations, never across I/O.
mod decide;
mod fair;
mod pool;

pub use pool::WorkerCounts;

use crate::cache::Cache;
use crate::callerpath::{file_named_by, Budget, Named};
use crate::conditions::Timekeeper;
use crate::config::AgentConfig;
use crate::files::{self, FileId, Identity, Stamp};
use crate::latency::DecisionLatency;
use crate::procfs;
use crate::report::Reporter;
use crate::store::{CachedApproval, LevelsFile, PersistentCache};
use palisade_api::agent::LookupItem;
use palisade_core::rules::{CompiledRules, PublisherFact, RuleId, RuleSet, TrustedChange};
use palisade_core::{
    classify, decide, on_timeout, Ancestor, Approval, EventKind, Executable, FileEvent, FileKind,
    Level, Levels, Operation, ProcessContext, Report, Sha256, Verdict, CLASSIFY_HEADER_LEN,
};
use palisade_kernel::fanotify::{Fanotify, Mask, Response};
use palisade_kernel::guard::{
    ExecGuard, GuardConfig, GuardEvent, GuardEventKind, GuardMode, InodeKey,
};
use palisade_kernel::Stop;
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The events the agent marks watched filesystems for.
pub const PERMISSION_MASK: Mask =
    Mask::from_bits(Mask::OPEN_PERM.bits() | Mask::OPEN_EXEC_PERM.bits());

/// No answer.
const UNKNOWN: CachedApproval = CachedApproval {
    approval: Approval::Unknown,
    trust: None,
    revision: 0,
};

/// Files up to this size are classified and hashed by the reader itself.
const READER_READ_MAX: u64 = 256 << 10;

/// How far back the parent chain is followed.
const MAX_ANCESTORS: usize = 32;

/// What one decision may spend resolving an interpreter's arguments (see
/// `callerpath::Budget`): past it, the file is taken as the script. The
/// names bound the work; the time only a machine so slow (or loaded) that
/// the event's deadline is near: a tight one failed closed on data files
/// under load (100 ms did, in an emulated guest).
const SCRIPT_ARG_NAMES: usize = 32_768;
const SCRIPT_ARG_TIME: Duration = Duration::from_secs(1);

/// Why a lookup at the service gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The agent has no live link to the service.
    #[error("service unreachable")]
    Unreachable,
    /// No answer before the deadline.
    #[error("lookup timed out")]
    Timeout,
    /// The service answered with an error.
    #[error("service error: {0}")]
    Service(String),
}

/// The service side of a lookup, implemented by the link to the service.
pub trait Lookup: Send + Sync {
    /// Ask for one file's approval, waiting at most `timeout`. Returns the
    /// approval and the revision it was computed at.
    fn lookup(&self, item: LookupItem, timeout: Duration) -> Result<CachedApproval, LookupError>;
}

/// What the system package database says about a file (implemented by
/// [`crate::debian`]).
pub trait PackageFacts: Send + Sync {
    /// The package and publisher of the file at `path`, read through `file`.
    fn fact(&self, path: &str, file: BorrowedFd<'_>) -> Option<PublisherFact>;
}

/// Counters, for `palisade status` and the benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Permission events received.
    pub events: AtomicU64,
    /// Answered by the reader from the caches.
    pub fast_path: AtomicU64,
    /// Events of the agent's own process.
    pub own: AtomicU64,
    /// Answered by a worker.
    pub slow_path: AtomicU64,
    /// Files hashed on the decision path (not counting hashing on write).
    pub hashed: AtomicU64,
    /// Answered by the watchdog.
    pub timeouts: AtomicU64,
    /// Answered at once because the worker queue was full.
    pub overload: AtomicU64,
    /// Verdicts: allow.
    pub allowed: AtomicU64,
    /// Verdicts: block.
    pub blocked: AtomicU64,
    /// Service lookups.
    pub lookups: AtomicU64,
    /// Answers taken from the persistent cache.
    pub persistent_hits: AtomicU64,
    /// Kernel caches flushed.
    pub kernel_flushes: AtomicU64,
    /// Files hashed after being written.
    pub hashed_on_write: AtomicU64,
    /// Inodes put into the kernel-side cache ahead of their first run.
    pub prewarmed: AtomicU64,
    /// Times write notifications were lost (queue overflow), each emptying
    /// the kernel-side cache and the identities known.
    pub writes_missed: AtomicU64,
    /// The workers: how many run, how many were added because others were
    /// held past a deadline ([`pool`]).
    pub workers: Arc<WorkerCounts>,
}

/// A copy of [`Stats`] for serialisation.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct StatsSnapshot {
    pub events: u64,
    pub fast_path: u64,
    pub own: u64,
    pub slow_path: u64,
    pub hashed: u64,
    pub timeouts: u64,
    pub overload: u64,
    pub allowed: u64,
    pub blocked: u64,
    pub lookups: u64,
    pub persistent_hits: u64,
    pub kernel_flushes: u64,
    pub hashed_on_write: u64,
    pub prewarmed: u64,
    pub writes_missed: u64,
    /// Workers running now.
    pub workers: u64,
    /// Workers started because others were held past a deadline.
    pub workers_added: u64,
    /// Times no more could be started (the cap) while too few were free.
    pub workers_capped: u64,
}

impl Stats {
    /// Read every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            events: g(&self.events),
            fast_path: g(&self.fast_path),
            own: g(&self.own),
            slow_path: g(&self.slow_path),
            hashed: g(&self.hashed),
            timeouts: g(&self.timeouts),
            overload: g(&self.overload),
            allowed: g(&self.allowed),
            blocked: g(&self.blocked),
            lookups: g(&self.lookups),
            persistent_hits: g(&self.persistent_hits),
            kernel_flushes: g(&self.kernel_flushes),
            hashed_on_write: g(&self.hashed_on_write),
            prewarmed: g(&self.prewarmed),
            writes_missed: g(&self.writes_missed),
            workers: g(&self.workers.running),
            workers_added: g(&self.workers.added),
            workers_capped: g(&self.workers.capped),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// What the agent knows about one file version (inode + stamp).
#[derive(Debug, Clone)]
struct Known {
    stamp: Stamp,
    kind: FileKind,
    sha: Option<Sha256>,
    path: String,
    /// Package/publisher fact: `None` until computed.
    publisher: Option<Option<PublisherFact>>,
}

/// An updater rule (id, name) and the executable hashes it resolves to here.
type UpdaterHashes = ((RuleId, String), HashSet<Sha256>);

/// An ancestor process as cached: pid, start time, and its executable's
/// inode and stamp (a process that exec'd since is read again).
type AncestorKey = (u32, u64, FileId, Stamp);

/// One place a file version was seen.
#[derive(Debug, Clone)]
struct Location {
    id: FileId,
    stamp: Stamp,
    path: String,
}

/// At most this many locations are remembered per hash.
const LOCATIONS_PER_HASH: usize = 8;

/// Inodes in the kernel-side cache (ignore mark + guard entry), by hash, so a
/// policy change can revoke exactly them.
#[derive(Debug, Default)]
struct KernelAllowed {
    by_file: HashMap<FileId, Sha256>,
    by_hash: HashMap<Sha256, HashSet<FileId>>,
}

/// At most this many inodes in the kernel-side cache. Entries leave it when
/// the file changes or the policy does, not when the file is deleted (no
/// event says so), so a user who copies approved code to new files and
/// deletes them would grow it without end, and fill the guard's map (262 144
/// entries), after which nothing more could be allowed there. Reaching the
/// limit empties the cache: the next run of each file asks again.
const KERNEL_CACHE_MAX: usize = 200_000;

impl KernelAllowed {
    fn insert(&mut self, id: FileId, sha: Sha256) {
        if let Some(old) = self.by_file.insert(id, sha) {
            if old != sha {
                self.drop_from_hash(id, old);
            } else {
                return;
            }
        }
        self.by_hash.entry(sha).or_default().insert(id);
    }

    fn remove(&mut self, id: FileId) -> bool {
        match self.by_file.remove(&id) {
            Some(sha) => {
                self.drop_from_hash(id, sha);
                true
            }
            None => false,
        }
    }

    fn drop_from_hash(&mut self, id: FileId, sha: Sha256) {
        if let Some(v) = self.by_hash.get_mut(&sha) {
            v.remove(&id);
            if v.is_empty() {
                self.by_hash.remove(&sha);
            }
        }
    }

    fn take_hash(&mut self, sha: &Sha256) -> HashSet<FileId> {
        let ids = self.by_hash.remove(sha).unwrap_or_default();
        for id in &ids {
            self.by_file.remove(id);
        }
        ids
    }
}

thread_local! {
    /// Whether this thread is the reader (for [`Engine::latency`]).
    static ON_READER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// One permission event waiting for its answer.
pub(crate) struct Pending {
    fd: OwnedFd,
    pid: u32,
    mask: Mask,
    /// When the reader had read the event.
    received: Instant,
    deadline: Instant,
    answered: AtomicBool,
}

impl Pending {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Writes to the persistent cache, done by a background thread.
#[derive(Debug)]
pub(crate) enum PersistOp {
    Put(Sha256, CachedApproval),
    Remove(Vec<Sha256>),
    /// Empty the cache. It carries [`DiskState::losses`] as they were when
    /// it was queued: once the disk is empty, those no longer matter.
    Clear {
        losses_before: u64,
    },
    /// Every change up to this revision is applied: into the metadata (the
    /// revision to catch up from) and [`DiskState::current`].
    Revision(i64),
    /// New levels: into the cache's metadata and the levels file.
    Levels(Levels),
}

/// Capacity of the persistent-cache writer's queue. Answers to store are
/// dropped (they are a cache) once it is half full, so that a removal always
/// finds room.
const PERSIST_QUEUE: usize = 65_536;

/// How far the persistent cache's answers can be trusted: the newest
/// change whose removals it holds, unless a removal was lost.
#[derive(Debug, Default)]
struct DiskState {
    /// The newest revision every removal up to which is on disk.
    current: AtomicI64,
    /// Removals lost (their queue full, or the write failed). While one
    /// lost is not made good by a later clear, `current` stays where it is,
    /// and the revision stored for catching up too, so that the next start
    /// asks the service for those changes again.
    losses: AtomicU64,
    /// The losses a successful clear made good: those before it was
    /// queued (the disk was emptied after them).
    resolved: AtomicU64,
}

impl DiskState {
    fn lose(&self) {
        self.losses.fetch_add(1, Ordering::AcqRel);
    }

    fn lost(&self) -> bool {
        self.losses.load(Ordering::Acquire) > self.resolved.load(Ordering::Acquire)
    }
}

/// The decision engine, shared by every agent thread.
pub struct Engine {
    cfg: Arc<AgentConfig>,
    fan: Arc<Fanotify>,
    guard: Option<Arc<ExecGuard>>,
    own_pid: u32,
    levels: Mutex<Levels>,
    connected: AtomicBool,
    level: AtomicU8,
    identities: Mutex<Cache<FileId, Known>>,
    interpreter_exes: Mutex<Cache<FileId, (Stamp, bool)>>,
    /// Ancestors already read, by (pid, start time, executable inode and
    /// stamp): a process that exec'd since is read again.
    ancestors: Mutex<Cache<AncestorKey, Ancestor>>,
    approvals: Mutex<Cache<Sha256, CachedApproval>>,
    /// Where code files of each hash were last seen (hashed on write, by the
    /// scan, or on the decision path): when an approval arrives, these inodes
    /// go into the kernel-side cache before their first run.
    locations: Mutex<Cache<Sha256, Vec<Location>>>,
    /// Paths known to hold code, for reporting their removal.
    code_paths: Arc<crate::removals::CodePaths>,
    /// Devices (`st_dev`) of the watched filesystems whose renames and new
    /// links the agent is told of (see [`crate::removals`]).
    names_followed: parking_lot::RwLock<HashSet<u64>>,
    /// The name group's marks: arrivals are followed while rules look at
    /// paths.
    name_watch: Mutex<Option<Arc<crate::removals::NameWatch>>>,
    prewarm_tx: crossbeam_channel::Sender<Sha256>,
    kernel: Mutex<KernelAllowed>,
    /// Bumped (under the `kernel` lock) by every invalidation, so a decision
    /// made from an approval read before it is not cached in the kernel.
    epoch: AtomicU64,
    interpreters: HashSet<Sha256>,
    /// Sizes of the interpreters: an executable of another size is not one,
    /// whatever its name, and need not be hashed to know it.
    interpreter_sizes: HashSet<u64>,
    persist_tx: crossbeam_channel::Sender<PersistOp>,
    /// What the persistent cache holds (see [`DiskState`]).
    disk: Arc<DiskState>,
    persistent: Arc<PersistentCache>,
    lookup: Arc<dyn Lookup>,
    reporter: Reporter,
    /// Recent reports by (file, process): one load reported once, even when
    /// both fanotify and the guard see it (an exec, then its mappings).
    recent_reports: Mutex<HashMap<(FileId, u32), Instant>>,
    /// Revision of the newest change applied; answers computed at an older
    /// revision are used but not cached.
    newest_change: AtomicI64,
    watchdog: Watchdog,
    /// Whether this agent holds `vm.memfd_noexec` raised.
    memfd_held: AtomicBool,
    /// The rules that apply to this computer, compiled.
    rules: parking_lot::RwLock<Arc<CompiledRules>>,
    /// Updater rules and the executable hashes they resolve to here.
    updater_hashes: parking_lot::RwLock<Vec<UpdaterHashes>>,
    /// User and group names.
    names: crate::users::Names,
    /// Files being written by trusted writers, by inode.
    pending_writes: Mutex<Cache<FileId, decide::PendingWrite>>,
    /// Trusted writers' files hashed at their close, approved once the
    /// hasher has read the write notifications queued meanwhile.
    held_writes: Mutex<Vec<decide::HeldWrite>>,
    /// The system package database, when there is one.
    packages: Option<Arc<dyn PackageFacts>>,
    /// Approvals made here, for the link to send to the service.
    local_tx: tokio::sync::mpsc::Sender<palisade_api::agent::LocalApproval>,
    /// Package/publisher facts established at a decision, for the service
    /// (which otherwise learns them only from a scan's inventory).
    facts_tx: tokio::sync::mpsc::Sender<palisade_api::agent::InventoryItem>,
    /// Maximum run times of conditionally allowed processes.
    timekeeper: Arc<Timekeeper>,
    /// Counters.
    pub stats: Stats,
    /// How long answers took, per kind of decider.
    pub latency: DecisionLatency,
}

fn level_to_u8(l: Level) -> u8 {
    match l {
        Level::Disabled => 0,
        Level::Monitor => 1,
        Level::Prompt => 2,
        Level::Lockdown => 3,
    }
}

fn level_from_u8(v: u8) -> Level {
    match v {
        0 => Level::Disabled,
        1 => Level::Monitor,
        2 => Level::Prompt,
        _ => Level::Lockdown,
    }
}

/// Everything the engine is built from.
pub struct EngineParts {
    /// Validated configuration.
    pub cfg: Arc<AgentConfig>,
    /// The permission group.
    pub fan: Arc<Fanotify>,
    /// The BPF guard, when it could be loaded.
    pub guard: Option<Arc<ExecGuard>>,
    /// Levels to start with (from the persistent cache or the service).
    pub levels: Levels,
    /// Hashes and sizes of the interpreters whose script reads are controlled.
    pub interpreters: Vec<(Sha256, u64)>,
    /// The persistent cache.
    pub persistent: Arc<PersistentCache>,
    /// Where the levels are kept apart from the cache.
    pub levels_file: LevelsFile,
    /// The service side of lookups.
    pub lookup: Arc<dyn Lookup>,
    /// Event reporting.
    pub reporter: Reporter,
    /// Revision the persistent cache is in sync with.
    pub revision: i64,
    /// Rules to start with (the last ones received).
    pub rules: RuleSet,
    /// The system package database.
    pub packages: Option<Arc<dyn PackageFacts>>,
    /// Where approvals made on this computer go (to the service).
    pub local_tx: tokio::sync::mpsc::Sender<palisade_api::agent::LocalApproval>,
    /// Where package/publisher facts established at decisions go.
    pub facts_tx: tokio::sync::mpsc::Sender<palisade_api::agent::InventoryItem>,
}

impl Engine {
    /// Build the engine and start its persistent-cache writer. Loads the
    /// persistent cache into memory.
    pub fn new(parts: EngineParts) -> Arc<Engine> {
        let (persist_tx, persist_rx) = crossbeam_channel::bounded(PERSIST_QUEUE);
        let disk = Arc::new(DiskState {
            current: AtomicI64::new(parts.revision),
            ..DiskState::default()
        });
        let (prewarm_tx, prewarm_rx) = crossbeam_channel::bounded::<Sha256>(65_536);
        // Know our own executable (the admin CLI is the same binary) without
        // hashing it on the decision path.
        let mut identities = Cache::new(65_536);
        if let Some((id, known)) = own_executable() {
            identities.insert(id, known);
        }
        let mut approvals = Cache::new(100_000);
        match parts.persistent.all() {
            Ok(all) => {
                for (sha, c) in all.into_iter().take(200_000) {
                    approvals.insert(sha, c);
                }
            }
            Err(e) => tracing::warn!("persistent cache unreadable: {e}"),
        }
        let engine = Arc::new(Engine {
            level: AtomicU8::new(level_to_u8(parts.levels.disconnected)),
            levels: Mutex::new(parts.levels),
            connected: AtomicBool::new(false),
            own_pid: std::process::id(),
            identities: Mutex::new(identities),
            interpreter_exes: Mutex::new(Cache::new(4096)),
            ancestors: Mutex::new(Cache::new(4096)),
            approvals: Mutex::new(approvals),
            locations: Mutex::new(Cache::new(65_536)),
            code_paths: Arc::default(),
            names_followed: parking_lot::RwLock::default(),
            name_watch: Mutex::new(None),
            prewarm_tx,
            kernel: Mutex::new(KernelAllowed::default()),
            epoch: AtomicU64::new(0),
            interpreters: parts.interpreters.iter().map(|(h, _)| *h).collect(),
            interpreter_sizes: parts.interpreters.iter().map(|(_, s)| *s).collect(),
            persist_tx,
            disk: disk.clone(),
            persistent: parts.persistent.clone(),
            lookup: parts.lookup,
            reporter: parts.reporter,
            recent_reports: Mutex::new(HashMap::new()),
            newest_change: AtomicI64::new(parts.revision),
            watchdog: Watchdog::default(),
            memfd_held: AtomicBool::new(false),
            rules: parking_lot::RwLock::new(Arc::new(CompiledRules::new(parts.rules.clone()))),
            updater_hashes: parking_lot::RwLock::new(resolve_updaters(&parts.rules)),
            names: crate::users::Names::default(),
            pending_writes: Mutex::new(Cache::new(4096)),
            held_writes: Mutex::new(Vec::new()),
            packages: parts.packages,
            local_tx: parts.local_tx,
            facts_tx: parts.facts_tx,
            timekeeper: Timekeeper::start(),
            stats: Stats::default(),
            latency: DecisionLatency::default(),
            cfg: parts.cfg,
            fan: parts.fan,
            guard: parts.guard,
        });
        let persistent = parts.persistent;
        let levels_file = parts.levels_file;
        std::thread::Builder::new()
            .name("palisade-persist".into())
            .spawn(move || {
                background_priority();
                persist_loop(&persistent, &levels_file, &disk, &persist_rx);
            })
            .expect("spawn persist thread");
        {
            let engine = Arc::downgrade(&engine);
            std::thread::Builder::new()
                .name("palisade-prewarm".into())
                .spawn(move || {
                    background_priority();
                    while let Ok(sha) = prewarm_rx.recv() {
                        let Some(engine) = engine.upgrade() else {
                            return;
                        };
                        engine.prewarm(sha);
                    }
                })
                .expect("spawn prewarm thread");
        }
        engine.apply_level_mechanisms();
        engine
    }

    /// The level in force.
    pub fn level(&self) -> Level {
        level_from_u8(self.level.load(Ordering::Relaxed))
    }

    /// The policy's levels.
    pub fn levels(&self) -> Levels {
        *self.levels.lock()
    }

    /// Whether the link to the service is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Whether the BPF guard is loaded.
    pub fn guard_active(&self) -> bool {
        self.guard.is_some()
    }

    /// Events that will not reach the service (see
    /// [`Reporter::losses`]).
    pub fn event_losses(&self) -> palisade_api::agent::EventLosses {
        self.reporter.losses()
    }

    /// Set the policy's levels and the connection state; recompute the level
    /// in force and the guard's mode.
    pub fn set_levels(&self, levels: Levels, connected: bool) {
        self.update_levels(|held, conn| {
            *held = levels;
            *conn = connected;
        });
    }

    /// Record the connection state (keeping the levels).
    pub fn set_connected(&self, connected: bool) {
        self.update_levels(|_, conn| *conn = connected);
    }

    /// Set the policy's levels (keeping the connection state).
    pub fn set_policy_levels(&self, levels: Levels) {
        self.update_levels(|held, _| *held = levels);
    }

    /// Change the levels and connection state together, under the levels'
    /// lock (so that a connection change cannot interleave with new levels
    /// and leave either lost), and put what depends on them in line.
    fn update_levels(&self, change: impl FnOnce(&mut Levels, &mut bool)) {
        let mut held = self.levels.lock();
        let mut connected = self.connected.load(Ordering::Acquire);
        change(&mut held, &mut connected);
        let levels = *held;
        self.connected.store(connected, Ordering::Release);
        let level = levels.effective(connected);
        let old = level_from_u8(self.level.swap(level_to_u8(level), Ordering::Relaxed));
        if old != level {
            tracing::info!(
                "level in force: {level} ({})",
                if connected {
                    "connected"
                } else {
                    "disconnected"
                }
            );
        }
        self.apply_level_mechanisms();
        let _ = self.persist_tx.try_send(PersistOp::Levels(levels));
    }

    /// Put the kernel mechanisms that depend on the level in line with it:
    /// the guard's mode, and `vm.memfd_noexec` while enforcing.
    fn apply_level_mechanisms(&self) {
        let block_memfd = self.cfg.block_memfd_exec && self.level() >= Level::Prompt;
        if self.memfd_held.swap(block_memfd, Ordering::AcqRel) != block_memfd {
            match crate::memfd::want(block_memfd) {
                Ok(()) => tracing::info!(
                    "execution from memory (memfd): {}",
                    if block_memfd {
                        "refused (vm.memfd_noexec=2)"
                    } else {
                        "allowed"
                    }
                ),
                Err(e) => tracing::warn!("vm.memfd_noexec: {e}"),
            }
        }
        let Some(guard) = &self.guard else { return };
        let mode = match self.level() {
            Level::Disabled => GuardMode::Off,
            Level::Monitor => GuardMode::Report,
            Level::Prompt | Level::Lockdown => GuardMode::Enforce,
        };
        let cfg = GuardConfig {
            mode,
            agent_tgid: self.own_pid,
            block_memfd_exec: self.cfg.block_memfd_exec,
            block_userns_fs: !self.cfg.allow_user_namespace_filesystems,
        };
        if let Err(e) = guard.set_config(cfg) {
            tracing::error!("guard: cannot set mode: {e}");
        }
    }

    // ---- the reader ------------------------------------------------------

    /// Run the reader loop until `stop` is set. Spawns the workers and the watchdog.
    pub(crate) fn run_reader(self: &Arc<Self>, stop: Arc<Stop>) {
        // Events a worker must decide, with their owner (see `fair`).
        let cap = pool::cap_for(self.cfg.workers);
        let queue = Arc::new(fair::FairQueue::new(
            4096,
            cap - self.cfg.workers,
            self.stats.workers.clone(),
            |j: &(u32, Arc<Pending>)| j.0,
        ));
        let engine = self.clone();
        let workers = pool::Pool::new(
            "palisade-worker",
            self.cfg.workers,
            cap,
            queue.clone(),
            |j: &(u32, Arc<Pending>)| j.1.deadline,
            raise_priority,
            Box::new(move |(_, p): &(u32, Arc<Pending>)| {
                if !p.answered.load(Ordering::Relaxed) {
                    engine.decide_slow(p);
                }
            }),
            self.stats.workers.clone(),
        );
        workers.start().expect("spawn workers");
        {
            let engine = self.clone();
            std::thread::Builder::new()
                .name("palisade-watchdog".into())
                .spawn(move || essential("watchdog", || engine.watchdog_loop(&workers)))
                .expect("spawn watchdog");
        }
        raise_priority();
        ON_READER.set(true);
        let mut buf = vec![0u8; palisade_kernel::fanotify::EVENT_BUFFER];
        while !stop.requested() {
            let events = match self.fan.read_events_until(&mut buf, &stop) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!("fanotify read failed: {e}");
                    stop.sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let received = Instant::now();
            let deadline = received + self.cfg.decision_deadline;
            for ev in events {
                if ev.mask.contains(Mask::Q_OVERFLOW) {
                    tracing::warn!("fanotify queue overflow");
                    continue;
                }
                let Some(fd) = ev.file else { continue };
                if !ev.mask.is_permission() {
                    continue;
                }
                bump(&self.stats.events);
                let p = Arc::new(Pending {
                    fd,
                    pid: u32::try_from(ev.pid).unwrap_or(0),
                    mask: ev.mask,
                    received,
                    deadline,
                    answered: AtomicBool::new(false),
                });
                if self.decide_fast(&p) {
                    continue;
                }
                self.watchdog.push(p.clone());
                // A process that is gone, or unreadable: one owner for all.
                let owner = procfs::real_uid(p.pid).unwrap_or(u32::MAX);
                if queue.push((owner, p.clone())).is_err() {
                    bump(&self.stats.overload);
                    self.answer(&p, on_timeout(self.level()));
                }
            }
        }
        // The workers end once the queue drains; the watchdog, which
        // sleeps while nothing waits, is woken to stop.
        queue.close();
        self.watchdog.close();
    }

    fn answer(&self, p: &Pending, verdict: Verdict) -> bool {
        if p.answered.swap(true, Ordering::AcqRel) {
            return false;
        }
        let response = match verdict {
            Verdict::Allow => {
                bump(&self.stats.allowed);
                Response::Allow
            }
            Verdict::Block => {
                bump(&self.stats.blocked);
                Response::Deny
            }
        };
        self.respond(p, response);
        true
    }

    /// Write the answer (callers make sure it is the only one) and count
    /// the time it took, from the read of the event until now.
    fn respond(&self, p: &Pending, response: Response) {
        if let Err(e) = self.fan.respond(p.fd(), response) {
            tracing::warn!("fanotify respond failed: {e}");
        }
        let latency = if ON_READER.get() {
            &self.latency.reader
        } else {
            &self.latency.workers
        };
        latency.record(p.received.elapsed());
    }

    /// Cache the facts about a file version; its hash only if its stamp had
    /// settled (see [`Identity::settled`]: a later write might otherwise
    /// leave the stamp, and so the cached hash, as it was).
    fn cache_identity(&self, ident: &Identity, mut known: Known) {
        if !ident.settled {
            known.sha = None;
        }
        self.identities.lock().insert(ident.id, known);
    }

    fn known_cached(&self, ident: &Identity) -> Option<Known> {
        let known = self.identities.lock().get(&ident.id)?;
        (known.stamp == ident.stamp).then_some(known)
    }

    /// Whether the process runs an interpreter, from the cache only.
    fn interpreter_cached(&self, pid: u32) -> Option<bool> {
        let (id, now) = exe_stamp(pid)?;
        let (stamp, yes) = self.interpreter_exes.lock().get(&id)?;
        (stamp == now).then_some(yes)
    }

    // ---- the workers -----------------------------------------------------

    /// The cached facts about a file version, with its current path, or read
    /// them (header and path; not the hash).
    fn known(&self, fd: BorrowedFd<'_>, ident: &Identity) -> std::io::Result<Known> {
        if let Some(mut k) = self.known_cached(ident) {
            self.refresh_path(fd, ident, &mut k);
            return Ok(k);
        }
        let header = files::read_header(fd, CLASSIFY_HEADER_LEN)?;
        let path = fd_path(fd);
        let known = Known {
            stamp: ident.stamp,
            kind: classify(&header),
            sha: None,
            path,
            publisher: None,
        };
        self.cache_identity(ident, known.clone());
        Ok(known)
    }

    /// Make cached facts name the path the event's descriptor was opened
    /// through. A rename or a second hard link keeps the inode, and a rename
    /// within one clock tick of the last write keeps its stamp too, so the
    /// path cached with the facts can be stale; decisions that look at the
    /// path must not use it. The package fact goes with the old path.
    fn refresh_path(&self, fd: BorrowedFd<'_>, ident: &Identity, known: &mut Known) {
        let path = fd_path(fd);
        if path == known.path || !path.starts_with('/') {
            return;
        }
        known.path = path;
        known.publisher = None;
        if known.sha.is_some() {
            self.learn(ident, known.clone());
        } else {
            self.cache_identity(ident, known.clone());
        }
    }

    fn hash_file(
        &self,
        fd: BorrowedFd<'_>,
        ident: &Identity,
        known: &mut Known,
    ) -> std::io::Result<Sha256> {
        if ident.stamp.size > files::HASH_MAX {
            return Err(too_large_to_hash(ident.stamp.size));
        }
        let sha = files::hash(fd)?;
        // Only trust the hash if the file did not change while it was read.
        if files::identify(fd)?.stamp == ident.stamp {
            known.sha = Some(sha);
            self.learn(ident, known.clone());
        }
        Ok(sha)
    }

    /// The facts about a small file not met before, from one read through
    /// the event's descriptor (header and hash); its path only if
    /// `with_path` (a `/proc` lookup: the reader leaves it for after the
    /// answer when no rule depends on it). An error when the file changed
    /// while it was read.
    fn read_small(
        &self,
        fd: BorrowedFd<'_>,
        ident: &Identity,
        with_path: bool,
    ) -> std::io::Result<Known> {
        let (header, sha) = files::header_and_hash(fd, ident.stamp.size, CLASSIFY_HEADER_LEN)?;
        if files::identify(fd)?.stamp != ident.stamp {
            return Err(std::io::Error::other("file changed while read"));
        }
        Ok(Known {
            stamp: ident.stamp,
            kind: classify(&header),
            sha: Some(sha),
            path: if with_path {
                fd_path(fd)
            } else {
                String::new()
            },
            publisher: None,
        })
    }

    /// [`Engine::learn`] for facts read without the path: look it up first.
    fn learn_with_path(&self, p: &Pending, ident: Identity, mut known: Known) {
        if known.path.is_empty() {
            known.path = fd_path(p.fd());
        }
        self.learn(&ident, known);
    }

    /// Cache the facts about a hashed file version and remember where its
    /// hash lives.
    fn learn(&self, ident: &Identity, known: Known) {
        let Some(sha) = known.sha else { return };
        if self.remember_location(sha, ident, &known.path) {
            // Code is back where the service was told it was removed.
            let _ = self.facts_tx.try_send(palisade_api::agent::InventoryItem {
                sha256: sha,
                path: known.path.clone(),
                size: ident.stamp.size,
                kind: known.kind.clone(),
                publisher: known.publisher.clone().flatten(),
            });
        }
        self.cache_identity(ident, known);
    }

    /// Whether `pid` runs one of the configured interpreters (by content hash
    /// of its executable, so a renamed copy is still an interpreter).
    fn is_interpreter(&self, pid: u32) -> bool {
        if let Some(yes) = self.interpreter_cached(pid) {
            return yes;
        }
        let Some((id, stamp)) = exe_stamp(pid) else {
            return false;
        };
        // Most executables are told apart by size alone, unopened.
        let (id, stamp, yes) = if !self.interpreter_sizes.contains(&stamp.size) {
            (id, stamp, false)
        } else {
            match crate::callerpath::open_exe(pid) {
                crate::callerpath::Exe::Open(file) => {
                    let Ok(ident) = files::identify(&file) else {
                        return false;
                    };
                    let yes = self.interpreter_sizes.contains(&ident.stamp.size)
                        && self
                            .exe_sha(&file, &ident)
                            .is_some_and(|s| self.interpreters.contains(&s));
                    (ident.id, ident.stamp, yes)
                }
                // A program run from FUSE is no interpreter here (code
                // on FUSE runs unwatched anyway: README, known limits).
                crate::callerpath::Exe::OnFuse => (id, stamp, false),
                crate::callerpath::Exe::Unavailable => return false,
            }
        };
        self.interpreter_exes.lock().insert(id, (stamp, yes));
        yes
    }

    /// Remember where a hash lives. True when code had been reported
    /// removed from `path` (see [`crate::removals`]).
    fn remember_location(&self, sha: Sha256, ident: &Identity, path: &str) -> bool {
        if !path.starts_with('/') {
            return false;
        }
        let returned = self.code_paths.note(path);
        let mut locations = self.locations.lock();
        let mut list = locations.get(&sha).unwrap_or_default();
        list.retain(|l| l.id != ident.id);
        list.push(Location {
            id: ident.id,
            stamp: ident.stamp,
            path: path.to_owned(),
        });
        if list.len() > LOCATIONS_PER_HASH {
            list.remove(0);
        }
        locations.insert(sha, list);
        returned
    }

    /// Paths known to hold code (for [`crate::removals`]).
    pub fn code_paths(&self) -> Arc<crate::removals::CodePaths> {
        self.code_paths.clone()
    }

    /// Put the known, unchanged copies of an approved hash into the
    /// kernel-side cache, so their first run costs no round trip. A copy is
    /// marked only if its inode and stamp are still those that were hashed,
    /// checked again after marking (a write in between clears the mark, or
    /// is caught by the second check).
    fn prewarm(&self, sha: Sha256) {
        // The epoch before the approval and the rules: a change that lands
        // in between makes `kernel_allow` refuse.
        let epoch = self.epoch.load(Ordering::Acquire);
        let Some(cached) = self.approvals.lock().get(&sha) else {
            return;
        };
        let level = self.level();
        if !decide(&cached.approval, level).cacheable {
            return;
        }
        let rules = self.rules();
        let locations = self.locations.lock().get(&sha).unwrap_or_default();
        for loc in locations {
            if !self.prewarm_allowed(&rules, &cached, sha, &loc.path, level) {
                continue;
            }
            use std::os::unix::fs::OpenOptionsExt;
            let Ok(file) = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&loc.path)
            else {
                continue;
            };
            let Ok(mut ident) = files::identify(&file) else {
                continue;
            };
            // Just written: marked once its stamp has settled (until then a
            // write in the same clock tick would not move it).
            let wait = ident.unsettled_for();
            if !wait.is_zero() {
                std::thread::sleep(wait);
                let Ok(again) = files::identify(&file) else {
                    continue;
                };
                ident = again;
            }
            if ident.id != loc.id || !ident.regular {
                continue;
            }
            // Hash again, here, off the decision path: a stamp can stay
            // the same while the content changed (writes through a
            // mapping), and can move while it did not (chmod).
            if files::hash(&file).ok() != Some(sha) {
                continue;
            }
            if ident.stamp != loc.stamp {
                let path = loc.path.clone();
                let _ = self.remember_location(sha, &ident, &path);
                let known = self.identities.lock().get(&ident.id);
                if let Some(mut known) = known {
                    known.stamp = ident.stamp;
                    known.sha = Some(sha);
                    self.cache_identity(&ident, known);
                }
            }
            if self.kernel_allow(file.as_fd(), &ident, sha, epoch) {
                bump(&self.stats.prewarmed);
            }
        }
    }

    /// Stop holding host-wide settings (at shutdown).
    pub fn release(&self) {
        if self.memfd_held.swap(false, Ordering::AcqRel) {
            if let Err(e) = crate::memfd::want(false) {
                tracing::warn!("vm.memfd_noexec: {e}");
            }
        }
    }

    /// The hash of an open executable, through the identity cache.
    fn exe_sha(&self, file: &std::fs::File, ident: &Identity) -> Option<Sha256> {
        if let Some(sha) = self.known_cached(ident).and_then(|k| k.sha) {
            return Some(sha);
        }
        if ident.stamp.size > files::HASH_MAX {
            return None;
        }
        let sha = files::hash(file).ok()?;
        let header = files::read_header(file, CLASSIFY_HEADER_LEN).unwrap_or_default();
        self.cache_identity(
            ident,
            Known {
                stamp: ident.stamp,
                kind: classify(&header),
                sha: Some(sha),
                path: String::new(),
                publisher: None,
            },
        );
        Some(sha)
    }

    /// Whether an interpreter reading this file is running it as a script:
    /// it starts with `#!`, has a script extension, or is named on the
    /// interpreter's command line. Every argument after the interpreter's
    /// own name is resolved as the interpreter would resolve it (options
    /// too: `--` may precede a script named `-x`), and a bare name also in
    /// each directory of the caller's `PATH` (bash looks there for a
    /// script it does not find). Resolution that cannot finish (a limit,
    /// FUSE, an error) counts as naming this file: it fails closed.
    fn is_script_for(&self, pid: u32, ident: &Identity, known: &Known) -> bool {
        if matches!(known.kind, FileKind::Script { .. }) {
            return true;
        }
        let ext = std::path::Path::new(&known.path)
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if ext.is_some_and(|e| self.cfg.script_extensions.contains(&e)) {
            return true;
        }
        let args = match procfs::cmdline_bytes(pid) {
            Ok(Some(args)) => args,
            Ok(None) => {
                // Its arguments are in a file's pages (see
                // `procfs::strings_are_anonymous`): not read, fail closed.
                tracing::debug!(
                    "pid {pid}: command line not in anonymous memory; taken as a script"
                );
                return true;
            }
            // The process is gone: no answer matters to it.
            Err(_) => return false,
        };
        let mut budget = Budget::new(SCRIPT_ARG_NAMES, SCRIPT_ARG_TIME);
        let mut search: Option<Option<Vec<Vec<u8>>>> = None;
        let names_it = |named: Named| match named {
            Named::File(id) => id == ident.id,
            Named::Unknown => true,
            Named::Nothing => false,
        };
        for arg in args.iter().skip(1) {
            let named = file_named_by(pid, arg, &mut budget);
            if names_it(named) {
                if named == Named::Unknown {
                    tracing::debug!(
                        "pid {pid}: an argument could not be resolved; taken as a script"
                    );
                }
                return true;
            }
            if named != Named::Nothing || arg.contains(&b'/') {
                continue;
            }
            let Some(dirs) = search.get_or_insert_with(|| procfs::search_path(pid)) else {
                // The environment is in a file's pages: fail closed.
                return true;
            };
            for dir in dirs.iter() {
                let mut path = dir.clone();
                path.push(b'/');
                path.extend_from_slice(arg);
                if names_it(file_named_by(pid, &path, &mut budget)) {
                    return true;
                }
            }
        }
        false
    }

    /// The process context of `pid` (its parent chain, each with its
    /// executable's hash). Opens executables: never call from the reader.
    pub fn context(&self, pid: u32) -> ProcessContext {
        let Ok(info) = procfs::read(pid) else {
            return ProcessContext::unknown(pid);
        };
        let mut ancestors = Vec::new();
        let mut next = info.ppid;
        while next > 0 && ancestors.len() < MAX_ANCESTORS {
            let Ok((ppid, start)) = procfs::read_stat(next) else {
                break;
            };
            let exe = exe_stamp(next);
            let key = exe.map(|(id, stamp)| (next, start, id, stamp));
            if let Some(a) = key.and_then(|k| self.ancestors.lock().get(&k)) {
                ancestors.push(a);
                next = ppid;
                continue;
            }
            let Ok(a) = procfs::read(next) else { break };
            let ancestor = Ancestor {
                pid: a.pid,
                uid: a.uid,
                exe: self.executable(a.pid, a.exe.as_deref()),
            };
            if let Some(k) = key {
                self.ancestors.lock().insert(k, ancestor.clone());
            }
            ancestors.push(ancestor);
            next = a.ppid;
        }
        ProcessContext {
            pid,
            uid: info.uid,
            euid: info.euid,
            loginuid: info.loginuid,
            sessionid: info.sessionid,
            exe: self.executable(pid, info.exe.as_deref()),
            ancestors,
        }
    }

    fn executable(&self, pid: u32, path: Option<&std::path::Path>) -> Option<Executable> {
        let mut path = path?.to_string_lossy().into_owned();
        let mut here = false;
        let sha = match crate::callerpath::open_exe(pid) {
            crate::callerpath::Exe::Open(f) => Some(f),
            _ => None,
        }
        .and_then(|f| {
            let ident = files::identify(&f).ok()?;
            here = names_here(&path, ident.id);
            self.exe_sha(&f, &ident)
        });
        // The kernel names the executable as the process's own mount
        // namespace sees it: a path the agent does not find it at matches
        // no process pattern (see `Request::path_verified`).
        if !here {
            path = format!("{ELSEWHERE}{path}");
        }
        Some(Executable { path, sha256: sha })
    }

    /// The approval of `sha`: memory, then the service (with a deadline), then
    /// the persistent cache. Returns it with a reason for events.
    fn approval(
        &self,
        sha: Sha256,
        path: &str,
        op: Operation,
        pid: u32,
        process: &mut Option<ProcessContext>,
        deadline: Instant,
    ) -> (CachedApproval, String) {
        if let Some(c) = self.approvals.lock().get(&sha) {
            return (c, "agent cache".into());
        }
        // Keep a margin to answer, and to try the disk if the service fails.
        let budget = || {
            deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(Duration::from_millis(20))
                .min(self.cfg.lookup_timeout)
        };
        let mut why = "service unreachable".to_owned();
        if self.connected() && !budget().is_zero() {
            // The process's context first: reading it (and hashing its
            // executable) takes from the same deadline.
            let process = process.get_or_insert_with(|| self.context(pid)).clone();
            let budget = budget();
            if budget.is_zero() {
                why = "no time left to ask the service".to_owned();
            } else {
                bump(&self.stats.lookups);
                let item = LookupItem {
                    sha256: sha,
                    path: Some(path.to_owned()),
                    operation: Some(op),
                    process: Some(process),
                    publisher: None,
                };
                match self.lookup.lookup(item, budget) {
                    Ok(c) => {
                        self.remember(sha, c);
                        return (c, "policy lookup service".into());
                    }
                    Err(e) => why = e.to_string(),
                }
            }
        }
        let disk_budget = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(Duration::from_millis(5))
            .min(Duration::from_millis(200));
        // Read before the disk: a change after it is seen below.
        let newest = self.newest_change.load(Ordering::Acquire);
        let disk_behind = self.disk.current.load(Ordering::Acquire) < newest;
        match self.persistent.get(&sha, disk_budget) {
            // Older than a change whose removals are not on disk yet (or
            // were lost): it may be what that change took back.
            Ok(Some(c)) if disk_behind && c.revision < newest => (
                UNKNOWN,
                format!("persistent cache behind change {newest} ({why})"),
            ),
            Ok(Some(c)) => {
                bump(&self.stats.persistent_hits);
                // Into memory only if no change came meanwhile (checked
                // under the lock an invalidation takes after announcing
                // itself: it cannot slip between the check and the insert).
                let mut approvals = self.approvals.lock();
                if self.newest_change.load(Ordering::Acquire) == newest {
                    approvals.insert(sha, c);
                }
                drop(approvals);
                (c, format!("persistent cache ({why})"))
            }
            Ok(None) => (UNKNOWN, format!("not in persistent cache ({why})")),
            Err(e) => (UNKNOWN, format!("persistent cache failed: {e} ({why})")),
        }
    }

    /// Cache an answer from the service (memory and disk), unless a newer
    /// change may have overtaken it.
    fn remember(&self, sha: Sha256, c: CachedApproval) {
        {
            // Checked, stored and queued for the disk under the lock an
            // invalidation takes after raising `newest_change`: either it
            // sees the change, or the invalidation's removal comes after
            // this answer, in memory and in the disk's queue.
            let mut approvals = self.approvals.lock();
            if c.revision < self.newest_change.load(Ordering::Acquire) {
                return;
            }
            approvals.insert(sha, c);
            if self.persist_tx.len() < PERSIST_QUEUE / 2 {
                let _ = self.persist_tx.try_send(PersistOp::Put(sha, c));
            }
        }
        if matches!(c.approval, Approval::Approved(_)) {
            let _ = self.prewarm_tx.try_send(sha);
        }
    }

    /// Record answers fetched ahead of need (after a change or at start).
    pub fn prefetched(&self, answers: &[(Sha256, Approval, Option<u8>)], revision: i64) {
        for (sha, approval, trust) in answers {
            self.remember(
                *sha,
                CachedApproval {
                    approval: *approval,
                    trust: *trust,
                    revision,
                },
            );
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<CompiledRules> {
        self.rules.read().clone()
    }

    /// Replace the rules (from the service). When they differ, every
    /// kernel-side allow is dropped: a rule may now decide differently.
    /// Resolves updater programs to hashes (reads executables: never call
    /// from the reader).
    pub fn set_rules(&self, rules: RuleSet) {
        if self.rules.read().rules() == &rules {
            return;
        }
        let updaters = resolve_updaters(&rules);
        let compiled = Arc::new(CompiledRules::new(rules));
        let path_matters = compiled.path_matters();
        if path_matters {
            // Before the flush below: a rename after it must be seen.
            self.follow_arrivals(true);
        }
        *self.rules.write() = compiled;
        *self.updater_hashes.write() = updaters;
        // After the rules are in place (it moves the epoch): a decision that
        // read the epoch before this may have read the old rules, and caches
        // nothing.
        self.clear_kernel_side();
        if !path_matters {
            self.follow_arrivals(false);
        }
        tracing::info!("rules updated; kernel-side cache flushed");
    }

    /// Put an approved inode in the kernel-side cache: the guard's allowed map
    /// first, then the ignore mark (the coherence rule of palisade-kernel).
    /// `ident` is the inode as it was when its content was hashed; returns
    /// whether the inode is cached.
    ///
    /// A write clears the ignore mark only if the mark is already there, and
    /// the answer (or another writer) may let one land between the hash and
    /// the mark: so the stamp is read again once the mark is placed, and a
    /// changed file leaves the cache at once. A write that updated the stamp
    /// before that read is seen by it; one that did not has its modify event
    /// still to come, which clears the mark.
    fn kernel_allow(&self, fd: BorrowedFd<'_>, ident: &Identity, sha: Sha256, epoch: u64) -> bool {
        // An unsettled stamp may not move with the next write, so the check
        // after marking could not see one: no ignore mark then. The guard's
        // entry is still needed (without it the exec or mapping being
        // allowed is refused), and the guard drops it at any later write
        // whatever the stamp does.
        if (!ident.settled && self.guard.is_none()) || !self.inode_may_be_cached(ident) {
            return false;
        }
        let id = ident.id;
        let mut kernel = self.kernel.lock();
        if self.epoch.load(Ordering::Acquire) != epoch {
            return false; // the policy changed since the approval was read
        }
        if kernel.by_file.len() >= KERNEL_CACHE_MAX && !kernel.by_file.contains_key(&id) {
            drop(kernel);
            tracing::info!(
                "kernel-side cache full ({KERNEL_CACHE_MAX} inodes): emptied, each file asks again at its next run"
            );
            self.clear_kernel_side();
            return false;
        }
        let key = InodeKey {
            dev: id.dev,
            ino: id.ino,
        };
        if let Some(guard) = &self.guard {
            if let Err(e) = guard.allow(key) {
                tracing::warn!("guard allow failed: {e}");
                return false;
            }
        }
        kernel.insert(id, sha);
        // Still under the lock: every flush of the ignore marks (a ban, new
        // rules, an arrival) holds it too, so this mark cannot land just
        // after a flush that was meant to remove it.
        if ident.settled {
            if let Err(e) = self.fan.ignore_inode(fd, PERMISSION_MASK) {
                tracing::debug!("ignore mark failed: {e}");
            }
        }
        if files::identify(fd).is_ok_and(|now| now.stamp == ident.stamp) {
            return true;
        }
        kernel.remove(id);
        if let Some(guard) = &self.guard {
            let _ = guard.revoke(key);
        }
        // Removed whether or not this call placed one (only a settled stamp
        // gets a mark): a rare path, and a mark left by anything else must
        // not outlive the change either. None there is no failure.
        if let Err(e) = self.fan.remove_ignore(fd, PERMISSION_MASK) {
            if ident.settled {
                tracing::warn!("removing the ignore mark of a file changed while cached: {e}");
            } else {
                tracing::debug!("no ignore mark to remove on a file changed while cached: {e}");
            }
        }
        false
    }

    /// Whether an allow for this inode may go into the kernel-side cache,
    /// which knows inodes, not paths. While rules look at paths, an inode
    /// with a second name (hard link), or on a filesystem whose renames the
    /// agent is not told of, is decided each time instead: a name arriving
    /// under a rule would otherwise be covered by an allow made for another.
    fn inode_may_be_cached(&self, ident: &Identity) -> bool {
        !self.rules().path_matters()
            || (ident.nlink <= 1 && self.names_followed.read().contains(&ident.id.dev))
    }

    /// Hand over the name group's marks, and follow arrivals if the rules
    /// in force look at paths.
    pub fn set_name_watch(&self, watch: Option<Arc<crate::removals::NameWatch>>) {
        *self.name_watch.lock() = watch;
        self.follow_arrivals(self.rules().path_matters());
    }

    /// Start or stop following renames and new links; record where they
    /// are followed.
    fn follow_arrivals(&self, on: bool) {
        let watch = self.name_watch.lock().clone();
        let devs = watch.map(|w| w.follow_arrivals(on)).unwrap_or_default();
        *self.names_followed.write() = devs;
    }

    /// Take inodes just removed from the `kernel` map out of the kernel
    /// itself; call with the `kernel` lock held. An ignore mark goes by inode
    /// and cannot be removed without opening the file: all of them are
    /// flushed.
    fn revoke_taken(&self, ids: &[FileId]) {
        if ids.is_empty() {
            return;
        }
        self.flush_ignore_marks();
        if let Some(guard) = &self.guard {
            for id in ids {
                let _ = guard.revoke(InodeKey {
                    dev: id.dev,
                    ino: id.ino,
                });
            }
        }
    }

    /// Drop every allow from the kernel-side cache (ignore marks and the
    /// guard's map); the caches in memory stay.
    fn clear_kernel_side(&self) {
        let mut kernel = self.kernel.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        *kernel = KernelAllowed::default();
        self.flush_ignore_marks();
        if let Some(guard) = &self.guard {
            if let Err(e) = guard.clear() {
                tracing::error!("guard clear failed: {e}");
            }
        }
    }

    /// Close-write notifications were lost (the hasher's queue overflowed):
    /// any file may have been changed through a shared writable mapping
    /// unseen (no ignore mark cleared, on some filesystems no stamp moved),
    /// so neither the kernel-side cache nor the identities known can vouch
    /// for content any more. Both are emptied; the approvals of hashes stay.
    ///
    /// A trusted writer's open waits for its close in `pending_writes`; that
    /// close may be among those lost, and the entry would then approve what
    /// the next writer of the file closes. So those go too: the trusted
    /// writers' files written meanwhile stay unapproved (and say so).
    pub(crate) fn writes_missed(&self) {
        let pending = {
            let mut pending = self.pending_writes.lock();
            let n = pending.len();
            pending.clear();
            n
        };
        if pending > 0 {
            tracing::warn!(
                "write notifications were lost: {pending} file(s) open by trusted writers will not be approved at their close"
            );
        }
        self.drop_held_writes("write notifications were lost");
        self.identities.lock().clear();
        self.clear_kernel_side();
        bump(&self.stats.writes_missed);
        tracing::warn!(
            "write notifications were lost: kernel-side cache and file identities emptied"
        );
    }

    /// Make sure an inode is not in the guard's allowed map (a file that is
    /// not approved may reuse the inode of one that was).
    fn kernel_revoke(&self, id: FileId) {
        let mut kernel = self.kernel.lock();
        kernel.remove(id);
        if let Some(guard) = &self.guard {
            let _ = guard.revoke(InodeKey {
                dev: id.dev,
                ino: id.ino,
            });
        }
    }

    // ---- policy changes --------------------------------------------------

    /// Forget everything known about these hashes' approvals, in every cache
    /// (kernel included), because their approval may have changed.
    pub fn invalidate(&self, hashes: &[Sha256], revision: i64) {
        self.newest_change.fetch_max(revision, Ordering::AcqRel);
        self.forget(hashes);
        self.persist_change(PersistOp::Remove(hashes.to_vec()), revision);
    }

    /// Forget what memory and the kernel hold of these hashes' approvals
    /// (the disk keeps its answers: they came from the service), so that
    /// the next use asks again. For approvals this computer made itself
    /// (trusted directory, writer or user), once the service has them: it
    /// may not take them (a ban there, a rule gone), and says nothing of
    /// that as a change.
    pub fn forget(&self, hashes: &[Sha256]) {
        {
            let mut approvals = self.approvals.lock();
            for sha in hashes {
                approvals.remove(sha);
            }
        }
        let mut kernel = self.kernel.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let revoked: Vec<FileId> = hashes.iter().flat_map(|h| kernel.take_hash(h)).collect();
        self.revoke_taken(&revoked);
    }

    /// Queue a removal from the persistent cache, then the revision it
    /// brings the cache to. A removal that finds no room is lost: the disk
    /// is marked so (see [`DiskState::lost`]).
    fn persist_change(&self, removal: PersistOp, revision: i64) {
        if self.persist_tx.try_send(removal).is_err() {
            tracing::error!(
                "persistent cache: removal for change {revision} lost (writer queue full); \
                 answers on disk older than it are no longer used"
            );
            self.disk.lose();
        }
        let _ = self.persist_tx.try_send(PersistOp::Revision(revision));
    }

    /// Forget every approval (the service asked for a reset). Returns the
    /// hashes that were cached, to fetch again.
    pub fn reset(&self, revision: i64) -> Vec<Sha256> {
        self.newest_change.fetch_max(revision, Ordering::AcqRel);
        let known = {
            let mut approvals = self.approvals.lock();
            let keys = approvals.keys();
            approvals.clear();
            keys
        };
        self.clear_kernel_side();
        let losses_before = self.disk.losses.load(Ordering::Acquire);
        self.persist_change(PersistOp::Clear { losses_before }, revision);
        known
    }

    /// Note that the agent is in sync with the service at `revision`.
    pub fn synced(&self, revision: i64) {
        self.newest_change.fetch_max(revision, Ordering::AcqRel);
        let _ = self.persist_tx.try_send(PersistOp::Revision(revision));
    }

    fn flush_ignore_marks(&self) {
        bump(&self.stats.kernel_flushes);
        if let Err(e) = self.fan.flush_inode_marks() {
            tracing::error!("flushing ignore marks failed: {e}");
        }
    }

    /// Approvals cached in memory (to refresh after a reconnect).
    pub fn cached_hashes(&self) -> usize {
        self.approvals.lock().len()
    }

    // ---- reporting -------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        kind: EventKind,
        operation: Operation,
        file: FileId,
        sha256: Option<Sha256>,
        path: String,
        approval: Approval,
        level: Level,
        process: ProcessContext,
        reason: String,
    ) {
        let now = Instant::now();
        {
            let mut recent = self.recent_reports.lock();
            if recent.len() > 10_000 {
                recent.retain(|_, t| now.duration_since(*t) < Duration::from_secs(2));
            }
            let key = (file, process.pid);
            if recent
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(2))
            {
                return;
            }
            recent.insert(key, now);
        }
        self.reporter.report(FileEvent {
            time_ms: crate::now_ms(),
            kind,
            operation,
            sha256,
            path,
            approval,
            level,
            process,
            reason,
        });
    }

    /// Record what the scan hashed: identity and location of each file.
    pub fn learn_scanned(&self, files: &[crate::scan::ScannedFile]) {
        for f in files {
            self.cache_identity(
                &f.identity,
                Known {
                    stamp: f.identity.stamp,
                    kind: f.kind.clone(),
                    sha: Some(f.sha256),
                    path: f.path.clone(),
                    publisher: f.publisher.clone().map(Some),
                },
            );
            let _ = self.remember_location(f.sha256, &f.identity, &f.path);
        }
    }

    /// Report the local approvals of an initialization scan, one event per
    /// file, attributed to the agent's own process.
    pub fn report_scan_approvals(&self, files: &[crate::scan::ScannedFile]) {
        let process = self.context(self.own_pid);
        let level = self.level();
        let now = crate::now_ms();
        for f in files {
            self.reporter.report(FileEvent {
                time_ms: now,
                kind: EventKind::Approved,
                operation: Operation::Inventory,
                sha256: Some(f.sha256),
                path: f.path.clone(),
                approval: Approval::Approved(palisade_core::ApprovalSource {
                    scope: palisade_core::ScopeKind::Local,
                }),
                level,
                process: process.clone(),
                reason: "initialization scan (bulk approval)".into(),
            });
        }
    }

    // ---- the watchdog ----------------------------------------------------

    fn watchdog_loop(&self, workers: &Arc<pool::Pool<(u32, Arc<Pending>)>>) {
        raise_priority();
        let mut capped = false;
        while let Some(expired) = self.watchdog.wait_expired() {
            if expired.is_empty() {
                continue;
            }
            for p in &expired {
                if self.answer(p, on_timeout(self.level())) {
                    bump(&self.stats.timeouts);
                    tracing::warn!(
                        "pid {}: no decision within the deadline; answered by the level",
                        p.pid
                    );
                }
            }
            // After the answers: starting a thread is not free.
            let t = workers.top_up(Instant::now());
            if t.started > 0 {
                tracing::warn!(
                    "{} workers held past an event's deadline (a large file being hashed, or \
                     waiting in the kernel); started {} more ({} running, at most {})",
                    t.held,
                    t.started,
                    t.running,
                    workers.cap()
                );
            }
            if t.capped && !capped {
                tracing::error!(
                    "{} workers held past an event's deadline and no more may start: events \
                     that need a worker are answered by the level at their deadline until \
                     some come back",
                    t.held
                );
            }
            capped = t.capped;
        }
    }

    // ---- the guard -------------------------------------------------------

    /// Run the guard's event loop until `stop` is set.
    pub(crate) fn run_guard(&self, stop: &Stop) {
        let Some(guard) = self.guard.clone() else {
            return;
        };
        let mut dropped = guard.dropped_events();
        while !stop.requested() {
            match guard.poll_events_until(stop) {
                Ok(events) => {
                    for e in events {
                        self.guard_event(e);
                    }
                    // Events the ring buffer had no room for may have been
                    // invalidations: as with lost write notifications,
                    // nothing cached about content can stand.
                    let now = guard.dropped_events();
                    if now != dropped {
                        dropped = now;
                        tracing::warn!("the guard dropped events (its ring buffer was full)");
                        self.writes_missed();
                    }
                }
                Err(e) => {
                    tracing::error!("guard events: {e}");
                    stop.sleep(Duration::from_millis(200));
                }
            }
        }
    }

    fn guard_event(&self, e: GuardEvent) {
        let id = FileId {
            dev: e.key.dev,
            ino: e.key.ino,
        };
        let believed_allowed = {
            let mut kernel = self.kernel.lock();
            if e.kind == GuardEventKind::Invalidated {
                // A decision that read the old content may have put the
                // inode back since the guard dropped it: move the epoch (it
                // will not cache) and take the entry out again, under the
                // lock every caching takes.
                self.epoch.fetch_add(1, Ordering::AcqRel);
                if let Some(guard) = &self.guard {
                    let _ = guard.revoke(e.key);
                }
            }
            kernel.remove(id)
        };
        if believed_allowed {
            // The guard no longer allows an inode that may still carry an
            // ignore mark (changed through a mapping, not a write): drop the
            // marks so the next load is decided afresh.
            self.flush_ignore_marks();
        }
        let operation = match e.kind {
            GuardEventKind::Invalidated => {
                // Its content may change without its stamp moving.
                self.identities.lock().remove(&id);
                return;
            }
            GuardEventKind::MemfdExec => Operation::ExecuteMemory,
            GuardEventKind::Exec | GuardEventKind::UserNamespaceFs => Operation::Execute,
            GuardEventKind::Mprotect => Operation::MapExecutable,
            _ => Operation::LoadLibrary,
        };
        let level = self.level();
        let kind = if e.denied {
            EventKind::Blocked
        } else {
            EventKind::WouldBlock
        };
        let (sha, path) = if operation == Operation::ExecuteMemory {
            (None, format!("memfd (process {})", e.comm))
        } else {
            let k = self.identities.lock().get(&id);
            (
                k.as_ref().and_then(|k| k.sha),
                k.map(|k| k.path)
                    .unwrap_or_else(|| format!("inode {} on device {}", id.ino, id.dev)),
            )
        };
        let approval = sha
            .and_then(|s| self.approvals.lock().get(&s))
            .map(|c| c.approval)
            .unwrap_or(Approval::Unknown);
        let process = self.context(e.tgid);
        let reason = match (e.kind, operation) {
            (_, Operation::ExecuteMemory) => "code executed from memory (memfd)".to_owned(),
            (GuardEventKind::UserNamespaceFs, _) => {
                "code on a filesystem mounted inside a user namespace, which the agent cannot watch (kernel guard)".to_owned()
            }
            _ => "executable mapping of a file that is not approved (kernel guard)".to_owned(),
        };
        self.report(
            kind, operation, id, sha, path, approval, level, process, reason,
        );
    }

    // ---- hashing on write ------------------------------------------------

    /// Hash a file that was just written, if it looks executable, so that its
    /// first run needs no hashing; and fetch its approval ahead of need.
    ///
    /// First, a file that was in the kernel-side cache leaves it: its content
    /// may have changed without a `write(2)` (through a shared writable
    /// mapping, which clears no ignore mark). This notification comes only
    /// once every writer is gone (a mapping holds the file open until
    /// `munmap`), and while a writer holds it the kernel refuses to exec it
    /// (`ETXTBSY`).
    pub(crate) fn hash_written(&self, fd: BorrowedFd<'_>) {
        let Ok(ident) = files::identify(fd) else {
            // Which file closed is unknown: it may be one a held approval
            // is about.
            self.drop_held_writes("a written file could not be identified");
            return;
        };
        // A trusted writer's open counts for this close and no later one,
        // whatever was written: an entry left behind would approve what
        // someone else writes into the file (or into a new file given the
        // same inode number) later. And a close after the trusted writer's
        // (before its approval was settled) means another writer held the
        // file too: what the trusted writer closed was not its work alone.
        let pending = self.pending_writes.lock().remove(&ident.id);
        self.held_writes.lock().retain(|h| h.id != ident.id);
        let cached = self.kernel.lock().by_file.contains_key(&ident.id);
        if cached {
            self.kernel_revoke(ident.id);
            if let Err(e) = self.fan.remove_ignore(fd, PERMISSION_MASK) {
                tracing::debug!("removing an ignore mark after a write: {e}");
            }
        }
        // Forget what was known of the inode: its stamp may not have moved
        // (tmpfs on some kernels updates no time for writes through a
        // mapping), so its hash is recomputed below or at its next use.
        self.identities.lock().remove(&ident.id);
        if !ident.regular || ident.stamp.size == 0 {
            return;
        }
        if self.known_cached(&ident).is_some_and(|k| k.sha.is_some()) {
            return;
        }
        let Ok(header) = files::read_header(fd, CLASSIFY_HEADER_LEN) else {
            return;
        };
        let kind = classify(&header);
        let Ok(mut known) = self.known(fd, &ident) else {
            return;
        };
        let script_ext = std::path::Path::new(&known.path)
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .is_some_and(|e| self.cfg.script_extensions.contains(&e));
        if !kind.is_code() && !ident.executable && !script_ext {
            return;
        }
        if let Ok(sha) = self.hash_file(fd, &ident, &mut known) {
            bump(&self.stats.hashed_on_write);
            // Trusted change: written by a trusted writer, or into a trusted
            // directory, and not approved yet.
            let origin = {
                let rules = self.rules();
                pending.map(|w| (w.origin, Some(w.process))).or_else(|| {
                    decide::trusted_directory(&rules, &known.path, ident.id).map(|o| (o, None))
                })
            };
            if let Some((origin, writer)) = origin {
                // Trusted change approves only what policy leaves undecided,
                // as at a first run: a ban (or an approval) this agent has
                // not cached yet is asked for first, within the lookup's
                // deadline (off every decision's path: this is the hasher).
                let mut process =
                    Some(writer.clone().unwrap_or_else(|| ProcessContext::unknown(0)));
                let deadline = Instant::now() + self.cfg.lookup_timeout + Duration::from_millis(25);
                let (known_approval, _) = self.approval(
                    sha,
                    &known.path,
                    Operation::Write,
                    0,
                    &mut process,
                    deadline,
                );
                let undecided = !matches!(
                    known_approval.approval,
                    Approval::Approved(_) | Approval::Banned(_)
                );
                match writer {
                    // Approved once the hasher has read the notifications
                    // queued before this check (see `settle_held_writes`).
                    Some(process) if undecided && self.sole_writer_gone(fd, &known.path) => {
                        self.held_writes.lock().push(decide::HeldWrite {
                            id: ident.id,
                            sha,
                            path: known.path.clone(),
                            origin,
                            process,
                        });
                    }
                    None if undecided => {
                        self.approve_locally(sha, &known.path, origin, None);
                    }
                    _ => {}
                }
            }
            // Approved already (a copy of approved code): no round trip at its first run.
            let _ = self.prewarm_tx.try_send(sha);
        }
    }
}

impl Engine {
    /// Whether no one holds the file a trusted writer just closed open for
    /// writing (the closing writer itself may be counted a moment longer:
    /// asked again for up to about 10 ms). Someone else holding it, or
    /// writers the kernel will not tell (no leases on this filesystem),
    /// approve nothing.
    fn sole_writer_gone(&self, fd: BorrowedFd<'_>, path: &str) -> bool {
        for _ in 0..10 {
            match palisade_kernel::writers::open_for_writing(fd) {
                Ok(false) => return true,
                Ok(true) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => {
                    tracing::warn!(
                        "{path}: written by a trusted writer, not approved: its other writers cannot be known ({e})"
                    );
                    return false;
                }
            }
        }
        tracing::warn!(
            "{path}: written by a trusted writer, not approved: another process holds it open for writing"
        );
        false
    }

    /// Whether a trusted writer's approval of the file may still come: the
    /// writer has it open, or its close waits in `held_writes`.
    pub(super) fn trusted_write_unsettled(&self, id: FileId) -> bool {
        self.pending_writes.lock().get(&id).is_some()
            || self.held_writes.lock().iter().any(|h| h.id == id)
    }

    /// Wait (a worker, at a first run of the file) until the trusted write
    /// of `id` is settled, approved or not, leaving 50 ms before `deadline`.
    pub(super) fn await_trusted_write(&self, id: FileId, deadline: Instant) {
        let until = deadline.checked_sub(Duration::from_millis(50));
        while self.trusted_write_unsettled(id) && until.is_some_and(|u| Instant::now() < u) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether approvals are held for the hasher's next look at its queue.
    pub(crate) fn holds_writes(&self) -> bool {
        !self.held_writes.lock().is_empty()
    }

    /// The hasher found its queue empty: every write notification queued
    /// before the held approvals' checks was read, and none was another
    /// writer's close of their files. Approve them.
    pub(crate) fn settle_held_writes(&self) {
        let held = std::mem::take(&mut *self.held_writes.lock());
        for h in held {
            self.approve_locally(h.sha, &h.path, h.origin, Some(h.process));
        }
    }

    /// Approve none of the held writes: notifications were lost, or one
    /// could not be told apart.
    pub(crate) fn drop_held_writes(&self, why: &str) {
        let held = std::mem::take(&mut *self.held_writes.lock());
        for h in held {
            tracing::warn!(
                "{}: written by a trusted writer, not approved: {why}",
                h.path
            );
        }
    }
}

/// Run the body of a thread the answering of permission events depends on
/// (the reader, the watchdog). Should it panic, the process ends: while
/// it lives with that thread gone, its marks stay and events wait
/// unanswered, freezing every process that opens a watched file; once it
/// is gone, the kernel stops waiting on it (and the service manager
/// restarts it).
pub(crate) fn essential(what: &str, body: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
        tracing::error!(
            "the {what} thread panicked: ending the agent, whose events would go unanswered"
        );
        eprintln!("palisade agent: the {what} thread panicked: aborting");
        std::process::abort();
    }
}

/// Nice value of the threads that answer the kernel: a process waiting on a
/// decision should not wait for the scheduler behind ordinary work.
const DECISION_NICE: i32 = -10;

/// Names arriving on the watched filesystems (renames and new hard links):
/// the kernel-side cache knows inodes, so an allow made for a file under one
/// name would cover it under a name that a rule looks at.
impl Engine {
    /// Report a name change at a path custom write rules protect (see
    /// [`crate::removals::Arrivals`]): `how` it changed.
    fn report_name_change(&self, id: FileId, path: &str, pid: i32, how: &str) {
        let process = match u32::try_from(pid) {
            Ok(pid) if pid > 0 => self.context(pid),
            _ => ProcessContext::unknown(0),
        };
        self.report(
            EventKind::Allowed,
            Operation::Write,
            id,
            None,
            path.to_owned(),
            Approval::Unknown,
            self.level(),
            process,
            format!(
                "{how} a path write rules protect: not refusable (no permission event for renames, links and removals), reported only"
            ),
        );
    }
}

impl crate::removals::Arrivals for Engine {
    fn wanted(&self) -> bool {
        self.rules().path_matters()
    }

    fn arrived(&self, arrival: crate::removals::Arrival<'_>) {
        let crate::removals::Arrival {
            dir,
            name,
            path,
            is_dir,
            moved,
            pid,
        } = arrival;
        let rules = self.rules();
        if !rules.path_matters() {
            return;
        }
        if is_dir {
            // Whatever was cached under it may now sit under a rule.
            self.clear_kernel_side();
            tracing::info!("kernel-side cache emptied: a directory moved to {path}");
            return;
        }
        if !rules.path_has_rules(path) {
            return;
        }
        let Ok(st) = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) else {
            return;
        };
        let id = FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        };
        // A rename or a new link over a path write rules protect replaces
        // what is there without opening it for writing, and fanotify asks
        // nothing first: it cannot be refused here (the BPF guard does not
        // cover it either), only reported.
        let regular = rustix::fs::FileType::from_raw_mode(st.st_mode).is_file();
        if regular && (moved || st.st_nlink > 1) && rules.write_sensitive(path) {
            let how = if moved { "renamed over" } else { "linked at" };
            self.report_name_change(id, path, pid, how);
        }
        // Its facts were cached with another path: read them again.
        self.identities.lock().remove(&id);
        let mut kernel = self.kernel.lock();
        // Whether or not it is cached now: a decision made under its old
        // name that has yet to cache it must not.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if kernel.remove(id) {
            self.revoke_taken(&[id]);
            drop(kernel);
            tracing::info!("{path}: arrived under a rule; out of the kernel-side cache");
        }
    }

    fn departed(&self, path: &str, pid: i32) {
        if self.rules().write_sensitive(path) {
            // The inode may be gone: repeats are told apart by the path
            // alone (a device number no filesystem has).
            use std::hash::{BuildHasher, BuildHasherDefault};
            let by_path =
                BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
            let id = FileId {
                dev: u64::MAX,
                ino: by_path.hash_one(path),
            };
            self.report_name_change(id, path, pid, "removed from");
        }
    }

    fn missed(&self) {
        if self.rules().path_matters() {
            self.clear_kernel_side();
            tracing::warn!("kernel-side cache emptied: rename and link events were lost");
        }
    }
}

/// The path an open file descriptor refers to (`?` when unknown).
///
/// Read from the agent's own `/proc/PID/fd` directory, opened once: a
/// `readlinkat` there looks up one name, where a `readlink` of
/// `/proc/self/fd/N` walks four path components (a sixth of the reader's
/// time per cold event in a profile, more than hashing the file).
fn fd_path(fd: BorrowedFd<'_>) -> String {
    static FD_DIR: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    let n = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let dir = FD_DIR.get_or_init(|| {
        use rustix::fs::{Mode, OFlags};
        rustix::fs::open(
            "/proc/self/fd",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
    });
    let link = match dir {
        Some(dir) => rustix::fs::readlinkat(dir, n.to_string(), Vec::new())
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(std::io::Error::from),
        None => std::fs::read_link(format!("/proc/self/fd/{n}"))
            .map(|p| p.to_string_lossy().into_owned()),
    };
    link.unwrap_or_else(|_| "?".into())
}

/// Give the calling thread the decision threads' priority (Linux nice values
/// are per thread). Best effort: without the privilege it stays as it is.
fn raise_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, DECISION_NICE) {
        tracing::debug!("cannot raise the decision threads' priority: {e}");
    }
}

/// Put the calling thread behind the decision threads and behind the host's
/// real-time work: a thread that inherited a real-time policy (the agent
/// started under `SCHED_FIFO` or `SCHED_RR`, say by a unit's
/// `CPUSchedulingPolicy=`) goes back to `SCHED_OTHER`. Background work
/// (hashing written files, pre-warming, the persistent cache) must never
/// hold a CPU that a process just allowed is waiting for: under a real-time
/// policy a thread of equal priority is not preempted.
pub(crate) fn background_priority() {
    if let Err(e) = palisade_kernel::sched::leave_realtime() {
        tracing::debug!("cannot leave the real-time policy: {e}");
    }
}

/// The executable hashes of each updater rule: its listed hashes and the
/// programs of its listed names in the system's binary directories.
fn resolve_updaters(rules: &RuleSet) -> Vec<UpdaterHashes> {
    rules
        .trusted_change
        .iter()
        .filter_map(|t| match t {
            TrustedChange::Updater {
                id,
                name,
                programs,
                hashes,
                ..
            } => {
                let mut set: HashSet<Sha256> = hashes.iter().copied().collect();
                set.extend(
                    crate::agent::resolve_interpreters(programs)
                        .into_iter()
                        .map(|(h, _)| h),
                );
                Some(((*id, name.clone()), set))
            }
            _ => None,
        })
        .collect()
}

/// Put before a process's executable path that does not name it in the
/// agent's mount namespace (another namespace's view, or moved or deleted
/// since it started): no absolute pattern matches it.
const ELSEWHERE: &str = "(not at this path here) ";

/// Why a file of `size` bytes has no hash: it is larger than
/// [`files::HASH_MAX`].
fn too_large_to_hash(size: u64) -> std::io::Error {
    std::io::Error::other(format!(
        "larger than the {} GiB the agent hashes ({size} bytes): its content cannot be approved",
        files::HASH_MAX >> 30
    ))
}

/// Whether `path` names the file `id` in the agent's own mount namespace.
pub(crate) use crate::callerpath::names_here;

/// The agent's own executable: its identity and what is known of it.
fn own_executable() -> Option<(FileId, Known)> {
    let file = std::fs::File::open("/proc/self/exe").ok()?;
    let ident = files::identify(&file).ok()?;
    let sha = files::hash(&file).ok()?;
    let header = files::read_header(&file, CLASSIFY_HEADER_LEN).ok()?;
    Some((
        ident.id,
        Known {
            stamp: ident.stamp,
            kind: classify(&header),
            sha: Some(sha),
            path: std::fs::read_link("/proc/self/exe")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            publisher: None,
        },
    ))
}

/// The identity and stamp of process `pid`'s executable, from what the
/// kernel has cached of its attributes (`AT_STATX_DONT_SYNC`): the reader
/// calls this, and must not wait on a filesystem another user runs (a FUSE
/// daemon, under an overlay of a user namespace, would be asked otherwise,
/// and need never answer). Local filesystems' cached attributes are their
/// attributes.
fn exe_stamp(pid: u32) -> Option<(FileId, Stamp)> {
    use rustix::fs::{statx, AtFlags, StatxFlags, StatxTimestamp};
    let st = statx(
        rustix::fs::CWD,
        format!("/proc/{pid}/exe"),
        AtFlags::STATX_DONT_SYNC,
        StatxFlags::BASIC_STATS,
    )
    .ok()?;
    let time = |t: StatxTimestamp| (t.tv_sec, i64::from(t.tv_nsec));
    Some((
        FileId {
            dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
        },
        Stamp {
            size: st.stx_size,
            mtime: time(st.stx_mtime),
            ctime: time(st.stx_ctime),
        },
    ))
}

fn persist_loop(
    store: &PersistentCache,
    levels_file: &LevelsFile,
    disk: &DiskState,
    rx: &crossbeam_channel::Receiver<PersistOp>,
) {
    // The levels are saved whenever they differ from what the file holds
    // (`set_levels` runs at every connection change).
    let mut saved_levels = levels_file.load();
    while let Ok(first) = rx.recv() {
        let mut puts = Vec::new();
        let flush_puts = |puts: &mut Vec<(Sha256, CachedApproval)>| {
            if !puts.is_empty() {
                if let Err(e) = store.put_many(puts) {
                    tracing::warn!("persistent cache write failed: {e}");
                }
                puts.clear();
            }
        };
        for op in std::iter::once(first).chain(rx.try_iter().take(4096)) {
            match op {
                PersistOp::Put(sha, c) => puts.push((sha, c)),
                PersistOp::Remove(hashes) => {
                    flush_puts(&mut puts);
                    if let Err(e) = store.remove_many(&hashes) {
                        tracing::error!("persistent cache: removal failed: {e}");
                        disk.lose();
                    }
                }
                PersistOp::Clear { losses_before } => {
                    puts.clear();
                    match store.clear() {
                        // Nothing a removal lost before it could have taken
                        // out is left.
                        Ok(()) => {
                            disk.resolved.fetch_max(losses_before, Ordering::AcqRel);
                        }
                        Err(e) => {
                            tracing::error!("persistent cache: clear failed: {e}");
                            disk.lose();
                        }
                    }
                }
                PersistOp::Revision(revision) => {
                    flush_puts(&mut puts);
                    if disk.lost() {
                        continue;
                    }
                    if let Err(e) = store.set_meta("revision", &revision.to_string()) {
                        tracing::warn!("persistent cache write failed: {e}");
                    }
                    disk.current.fetch_max(revision, Ordering::AcqRel);
                }
                PersistOp::Levels(levels) => {
                    flush_puts(&mut puts);
                    let json = serde_json::to_string(&levels).unwrap_or_default();
                    if let Err(e) = store.set_meta("levels", &json) {
                        tracing::warn!("persistent cache write failed: {e}");
                    }
                    if saved_levels != Some(levels) {
                        match levels_file.save(levels) {
                            Ok(()) => saved_levels = Some(levels),
                            Err(e) => tracing::warn!(
                                "{}: cannot save the levels: {e}",
                                levels_file.path().display()
                            ),
                        }
                    }
                }
            }
        }
        flush_puts(&mut puts);
    }
}

/// Events waiting for a worker, oldest first.
#[derive(Default)]
struct Watchdog {
    queue: Mutex<VecDeque<Arc<Pending>>>,
    cv: Condvar,
    /// Set by [`Watchdog::close`] (under the queue's lock, so a waiter
    /// cannot miss it).
    closed: AtomicBool,
}

impl Watchdog {
    fn push(&self, p: Arc<Pending>) {
        let mut q = self.queue.lock();
        q.push_back(p);
        if q.len() == 1 {
            self.cv.notify_one();
        }
    }

    /// Wake the watchdog to stop: [`Watchdog::wait_expired`] returns `None`
    /// from now on.
    fn close(&self) {
        let _q = self.queue.lock();
        self.closed.store(true, Ordering::Release);
        self.cv.notify_all();
    }

    /// Wait until the oldest event's deadline (while nothing waits, until an
    /// event is pushed: an idle agent's watchdog does not wake) and return
    /// the unanswered events whose deadline passed; `None` once closed.
    fn wait_expired(&self) -> Option<Vec<Arc<Pending>>> {
        let mut q = self.queue.lock();
        while q
            .front()
            .is_some_and(|p| p.answered.load(Ordering::Relaxed))
        {
            q.pop_front();
        }
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        match q.front().map(|p| p.deadline) {
            Some(deadline) => {
                self.cv.wait_until(&mut q, deadline);
            }
            None => self.cv.wait(&mut q),
        }
        let now = Instant::now();
        let mut out = Vec::new();
        while let Some(p) = q.front() {
            if p.answered.load(Ordering::Relaxed) {
                q.pop_front();
            } else if p.deadline <= now {
                out.extend(q.pop_front());
            } else {
                break;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::removals::Arrivals;

    /// A service that cannot be reached.
    struct NoService;

    impl Lookup for NoService {
        fn lookup(&self, _: LookupItem, _: Duration) -> Result<CachedApproval, LookupError> {
            Err(LookupError::Unreachable)
        }
    }

    /// An engine over a data directory in `dir`, with a permission group
    /// that marks nothing (needs root: `None` otherwise).
    fn engine(dir: &std::path::Path) -> Option<Arc<Engine>> {
        let fan = match Fanotify::permission_group() {
            Ok(f) => Arc::new(f),
            Err(e) => {
                eprintln!("skipped: no fanotify permission group ({e}); CI runs this as root");
                return None;
            }
        };
        let cfg = crate::config::AgentConfigFile {
            data_dir: Some(dir.to_owned()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let (persistent, _) = PersistentCache::open(&dir.join("cache.db")).unwrap();
        let (spool, _) = crate::store::Spool::open(&dir.join("events.db")).unwrap();
        let (local_tx, _) = tokio::sync::mpsc::channel(16);
        let (facts_tx, _) = tokio::sync::mpsc::channel(16);
        Some(Engine::new(EngineParts {
            cfg: Arc::new(cfg),
            fan,
            guard: None,
            levels: Levels {
                connected: Level::Lockdown,
                disconnected: Level::Lockdown,
            },
            interpreters: Vec::new(),
            persistent: Arc::new(persistent),
            levels_file: LevelsFile::in_dir(dir),
            lookup: Arc::new(NoService),
            reporter: Reporter::start(Arc::new(spool), Arc::new(|| {})),
            revision: 0,
            rules: RuleSet::default(),
            packages: None,
            local_tx,
            facts_tx,
        }))
    }

    fn in_kernel_cache(engine: &Engine, id: FileId) -> bool {
        engine.kernel.lock().by_file.contains_key(&id)
    }

    /// Whether the engine's fanotify group holds an ignore mark on the
    /// inode (from the group's fdinfo: `ino:` and `ignored_mask:` in hex).
    fn has_ignore_mark(engine: &Engine, id: FileId) -> bool {
        use std::os::fd::AsRawFd;
        let fd = engine.fan.as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        let ino = format!("ino:{:x} ", id.ino);
        info.lines().any(|l| {
            l.starts_with("fanotify ")
                && l.contains(&ino)
                && l.split_whitespace()
                    .find_map(|w| w.strip_prefix("ignored_mask:"))
                    .is_some_and(|m| m != "0")
        })
    }

    /// An engine, and a small script in `dir` it can cache: its path, an
    /// open descriptor and its identity.
    fn engine_and_program(
        dir: &std::path::Path,
    ) -> Option<(Arc<Engine>, std::path::PathBuf, std::fs::File, Identity)> {
        let engine = engine(dir)?;
        let path = dir.join("program");
        std::fs::write(&path, b"#!/bin/sh\nexit 0\n").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let ident = settled(&file);
        Some((engine, path, file, ident))
    }

    /// The identity of `file` once its stamp has settled (what was just
    /// written is not cached until then).
    fn settled(file: &std::fs::File) -> Identity {
        std::thread::sleep(files::SETTLE + Duration::from_millis(2));
        let ident = files::identify(file).unwrap();
        assert!(ident.settled);
        ident
    }

    /// A file version read before its stamp settled is not cached: a write
    /// in the same clock tick (same size, through a descriptor held open)
    /// would leave the stamp, and so a cached hash or an ignore mark, as it
    /// was. Once settled, it is.
    #[test]
    fn a_stamp_that_has_not_settled_caches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let Some(engine) = engine(dir.path()) else {
            return;
        };
        let path = dir.path().join("fresh");
        std::fs::write(&path, b"#!/bin/sh\nexit 0\n").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let ident = files::identify(&file).unwrap();
        assert!(!ident.settled, "just written");
        let mut known = engine.known(file.as_fd(), &ident).unwrap();
        let sha = engine.hash_file(file.as_fd(), &ident, &mut known).unwrap();
        assert_eq!(known.sha, Some(sha), "the decision at hand has its hash");
        assert_eq!(engine.known_cached(&ident).and_then(|k| k.sha), None);
        let epoch = engine.epoch.load(Ordering::Acquire);
        assert!(!engine.kernel_allow(file.as_fd(), &ident, sha, epoch));
        assert!(!in_kernel_cache(&engine, ident.id));

        let ident = settled(&file);
        let mut known = engine.known(file.as_fd(), &ident).unwrap();
        engine.hash_file(file.as_fd(), &ident, &mut known).unwrap();
        assert_eq!(engine.known_cached(&ident).and_then(|k| k.sha), Some(sha));
        assert!(engine.kernel_allow(file.as_fd(), &ident, sha, epoch));
    }

    /// The kernel-side cache is bounded: deleted files never leave it by
    /// themselves, so reaching the limit empties it rather than growing (or
    /// filling the guard's map for good).
    #[test]
    fn a_full_kernel_side_cache_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let Some((engine, _, file, ident)) = engine_and_program(dir.path()) else {
            return;
        };
        let sha = Sha256::from_bytes([3; 32]);
        {
            let mut kernel = engine.kernel.lock();
            for ino in 0..KERNEL_CACHE_MAX as u64 {
                kernel.insert(FileId { dev: u64::MAX, ino }, sha);
            }
            assert_eq!(kernel.by_hash[&sha].len(), KERNEL_CACHE_MAX);
        }
        let epoch = engine.epoch.load(Ordering::Acquire);
        assert!(
            !engine.kernel_allow(file.as_fd(), &ident, sha, epoch),
            "full"
        );
        assert!(engine.kernel.lock().by_file.is_empty(), "emptied");
        let epoch = engine.epoch.load(Ordering::Acquire);
        assert!(
            engine.kernel_allow(file.as_fd(), &ident, sha, epoch),
            "room again"
        );
    }

    /// A block rule for what runs under `dir`.
    fn path_rules(dir: &std::path::Path) -> RuleSet {
        use palisade_core::rules::{CustomRule, Operations, RuleAction};
        RuleSet {
            custom: vec![CustomRule {
                id: RuleId(1),
                name: "blocked".into(),
                process: None,
                user: None,
                operations: Operations {
                    execute: true,
                    write: false,
                },
                paths: vec![
                    palisade_core::PathPattern::parse(&format!("{}/**", dir.display())).unwrap(),
                ],
                action: RuleAction::Block,
                conditions: Default::default(),
            }],
            ..RuleSet::default()
        }
    }

    /// The coherence contract of the kernel-side cache: an allow decided
    /// from facts read before a change (an invalidation, new rules, a reset,
    /// a name arriving under a rule) is answered but never cached; and while
    /// rules look at paths, an inode with a second name or on a filesystem
    /// whose renames are not followed is not cached at all.
    #[test]
    fn allows_decided_before_a_change_are_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let Some((engine, path, file, ident)) = engine_and_program(dir.path()) else {
            return;
        };
        let sha = Sha256::from_bytes([7; 32]);
        let epoch = || engine.epoch.load(Ordering::Acquire);

        // Nothing in between: cached.
        engine.kernel_allow(file.as_fd(), &ident, sha, epoch());
        assert!(in_kernel_cache(&engine, ident.id));

        // A ban lands between the decision and the caching.
        let before = epoch();
        engine.invalidate(&[sha], 1);
        assert!(!in_kernel_cache(&engine, ident.id), "the ban drops it");
        engine.kernel_allow(file.as_fd(), &ident, sha, before);
        assert!(
            !in_kernel_cache(&engine, ident.id),
            "decided before the ban"
        );

        // New rules land in between (rules that do not look at paths, so
        // that only the epoch can keep the allow out).
        let before = epoch();
        engine.set_rules(RuleSet {
            publishers: vec![palisade_core::rules::PublisherState {
                name: "Someone".into(),
                state: palisade_core::FileState::Banned,
                scope: palisade_core::ScopeKind::Global,
            }],
            ..RuleSet::default()
        });
        engine.kernel_allow(file.as_fd(), &ident, sha, before);
        assert!(
            !in_kernel_cache(&engine, ident.id),
            "decided before the rules"
        );
        assert!(engine.kernel_allow(file.as_fd(), &ident, sha, epoch()));
        assert!(in_kernel_cache(&engine, ident.id), "decided after them");
        assert!(has_ignore_mark(&engine, ident.id), "marked in the kernel");

        // The file is written after it was hashed and before it is cached
        // (the answer let the writer go on; the write's modify event came
        // before the mark, so it cleared nothing): it must not stay cached.
        let written = dir.path().join("written");
        std::fs::write(&written, b"#!/bin/sh\nexit 2\n").unwrap();
        let written_file = std::fs::File::open(&written).unwrap();
        let hashed = files::identify(&written_file).unwrap();
        {
            use std::io::Write;
            let mut w = std::fs::OpenOptions::new()
                .append(true)
                .open(&written)
                .unwrap();
            w.write_all(b"echo unapproved\n").unwrap();
        }
        assert!(!engine.kernel_allow(written_file.as_fd(), &hashed, sha, epoch()));
        assert!(
            !in_kernel_cache(&engine, hashed.id),
            "written after it was hashed"
        );
        assert!(
            !has_ignore_mark(&engine, hashed.id),
            "no ignore mark is left on a file written after it was hashed"
        );

        // Rules that look at paths: this filesystem's renames are not
        // followed (no name group handed over), so nothing is cached.
        let ruled = dir.path().join("ruled");
        std::fs::create_dir(&ruled).unwrap();
        engine.set_rules(path_rules(&ruled));
        assert!(!in_kernel_cache(&engine, ident.id), "new rules drop it");
        engine.kernel_allow(file.as_fd(), &ident, sha, epoch());
        assert!(!in_kernel_cache(&engine, ident.id), "names not followed");
        let dev = ident.id.dev;
        *engine.names_followed.write() = HashSet::from([dev]);

        // A second name arrives under the rule while a decision made under
        // the first (one name then) has yet to cache the file: it must not.
        let before = epoch();
        std::fs::hard_link(&path, ruled.join("linked")).unwrap();
        let ruled_dir = std::fs::File::open(&ruled).unwrap();
        let arrive = |name: &str| {
            engine.arrived(crate::removals::Arrival {
                dir: ruled_dir.as_fd(),
                name: std::ffi::OsStr::new(name),
                path: ruled.join(name).to_str().unwrap(),
                is_dir: false,
                moved: true,
                pid: 0,
            })
        };
        arrive("linked");
        engine.kernel_allow(file.as_fd(), &ident, sha, before);
        assert!(
            !in_kernel_cache(&engine, ident.id),
            "decided before the link"
        );
        // With two names it is not cached at all.
        let linked = settled(&file);
        assert_eq!(linked.nlink, 2);
        engine.kernel_allow(file.as_fd(), &linked, sha, epoch());
        assert!(!in_kernel_cache(&engine, ident.id), "a second name");

        // A cached file renamed under the rule leaves the cache.
        let other = dir.path().join("other");
        std::fs::write(&other, b"#!/bin/sh\nexit 1\n").unwrap();
        let other_file = std::fs::File::open(&other).unwrap();
        let other_ident = settled(&other_file);
        engine.kernel_allow(other_file.as_fd(), &other_ident, sha, epoch());
        assert!(
            in_kernel_cache(&engine, other_ident.id),
            "one name, followed"
        );
        std::fs::rename(&other, ruled.join("moved")).unwrap();
        arrive("moved");
        assert!(
            !in_kernel_cache(&engine, other_ident.id),
            "moved under the rule"
        );

        // A directory moved anywhere, or lost name events, empty it.
        let cache_other = || {
            *engine.names_followed.write() = HashSet::from([dev]);
            let ident = settled(&other_file);
            engine.kernel_allow(other_file.as_fd(), &ident, sha, epoch());
            assert!(in_kernel_cache(&engine, ident.id));
        };
        cache_other();
        engine.arrived(crate::removals::Arrival {
            dir: ruled_dir.as_fd(),
            name: std::ffi::OsStr::new("subdir"),
            path: ruled.join("subdir").to_str().unwrap(),
            is_dir: true,
            moved: true,
            pid: 0,
        });
        assert!(
            !in_kernel_cache(&engine, other_ident.id),
            "a directory moved"
        );
        cache_other();
        engine.missed();
        assert!(!in_kernel_cache(&engine, other_ident.id), "events lost");

        // Without path rules the linked file may be cached again; a reset
        // drops it, and an allow decided before the reset stays out.
        engine.set_rules(RuleSet::default());
        engine.kernel_allow(file.as_fd(), &linked, sha, epoch());
        assert!(in_kernel_cache(&engine, ident.id), "no path rules: cached");
        let before = epoch();
        engine.reset(2);
        assert!(!in_kernel_cache(&engine, ident.id), "the reset drops it");
        engine.kernel_allow(file.as_fd(), &linked, sha, before);
        assert!(
            !in_kernel_cache(&engine, ident.id),
            "decided before the reset"
        );
    }

    /// Trusted change approves only what policy leaves undecided: a ban in
    /// the agent's memory or in its persistent cache (the service away)
    /// stays a ban when the banned content is written into a trusted
    /// directory; unknown content is approved there, also offline.
    #[test]
    fn trusted_change_never_approves_over_a_ban() {
        use palisade_core::rules::TrustedChange;
        use palisade_core::{ApprovalSource, ScopeKind};
        let dir = tempfile::tempdir().unwrap();
        let Some((engine, _, file, _)) = engine_and_program(dir.path()) else {
            return;
        };
        engine.set_rules(RuleSet {
            trusted_change: vec![TrustedChange::TrustedDirectory {
                id: RuleId(9),
                dir: dir.path().to_str().unwrap().to_owned(),
            }],
            ..RuleSet::default()
        });
        let sha = files::hash(file.as_fd()).unwrap();
        let banned = CachedApproval {
            approval: Approval::Banned(ApprovalSource {
                scope: ScopeKind::Global,
            }),
            trust: None,
            revision: 1,
        };
        let approval = || engine.approvals.lock().get(&sha).map(|c| c.approval);

        // Banned in memory.
        engine.approvals.lock().insert(sha, banned);
        engine.hash_written(file.as_fd());
        assert!(matches!(approval(), Some(Approval::Banned(_))), "memory");

        // Banned on disk only (the service cannot be reached).
        engine.approvals.lock().remove(&sha);
        engine.persistent.put_many(&[(sha, banned)]).unwrap();
        engine.identities.lock().clear();
        engine.hash_written(file.as_fd());
        assert!(matches!(approval(), Some(Approval::Banned(_))), "disk");

        // Unknown everywhere: the trusted directory approves it.
        engine.approvals.lock().remove(&sha);
        let other = dir.path().join("other");
        std::fs::write(&other, b"#!/bin/sh\nexit 3\n").unwrap();
        let other = std::fs::File::open(&other).unwrap();
        let other_sha = files::hash(other.as_fd()).unwrap();
        engine.hash_written(other.as_fd());
        assert!(
            matches!(
                engine.approvals.lock().get(&other_sha).map(|c| c.approval),
                Some(Approval::Approved(_))
            ),
            "unknown content in a trusted directory"
        );
    }

    /// Lost write notifications: nothing the kernel-side cache or the known
    /// identities say about content may stand (a change through a shared
    /// writable mapping may be among those lost).
    #[test]
    fn lost_write_notifications_empty_the_kernel_side_cache_and_identities() {
        let dir = tempfile::tempdir().unwrap();
        let Some((engine, _, file, ident)) = engine_and_program(dir.path()) else {
            return;
        };
        let sha = Sha256::from_bytes([5; 32]);
        let epoch = engine.epoch.load(Ordering::Acquire);
        assert!(engine.kernel_allow(file.as_fd(), &ident, sha, epoch));
        assert!(in_kernel_cache(&engine, ident.id));
        assert!(has_ignore_mark(&engine, ident.id));
        engine.known(file.as_fd(), &ident).unwrap();
        assert!(engine.known_cached(&ident).is_some());
        // A trusted writer's open whose close may be among those lost.
        engine.pending_writes.lock().insert(
            ident.id,
            decide::PendingWrite {
                origin: palisade_api::agent::ApprovalOrigin::Updater {
                    rule: RuleId(7),
                    name: "updater".into(),
                },
                process: ProcessContext::unknown(1),
            },
        );
        assert!(engine.trusted_write_unsettled(ident.id));

        engine.writes_missed();
        assert!(
            !engine.trusted_write_unsettled(ident.id),
            "a trusted writer's open outlived lost close notifications"
        );
        assert!(!in_kernel_cache(&engine, ident.id));
        assert!(!has_ignore_mark(&engine, ident.id));
        assert!(engine.known_cached(&ident).is_none());
        assert_eq!(engine.stats.snapshot().writes_missed, 1);
    }

    /// The epoch and the kernel-cache lock under real concurrency: one
    /// thread decides and caches as fast as it can (the reader's order:
    /// epoch, approval, path, `kernel_allow`) while another bans the hash. Once
    /// the ban has returned and the decider stopped, the inode must be out
    /// of the kernel-side cache, ignore mark included, in every round.
    #[test]
    fn a_ban_racing_a_decision_leaves_nothing_cached() {
        use palisade_core::{ApprovalSource, ScopeKind};
        let dir = tempfile::tempdir().unwrap();
        let Some((engine, _, file, ident)) = engine_and_program(dir.path()) else {
            return;
        };
        let sha = Sha256::from_bytes([5; 32]);
        let mut raced = 0;
        for round in 1..=400i64 {
            engine.remember(
                sha,
                CachedApproval {
                    approval: Approval::Approved(ApprovalSource {
                        scope: ScopeKind::Global,
                    }),
                    trust: None,
                    revision: round,
                },
            );
            let stop = AtomicBool::new(false);
            let started = AtomicBool::new(false);
            let cached_before_ban = std::thread::scope(|s| {
                let decider = s.spawn(|| {
                    let mut cached = 0u32;
                    while !stop.load(Ordering::Acquire) {
                        let epoch = engine.epoch.load(Ordering::Acquire);
                        let approved = engine
                            .approvals
                            .lock()
                            .get(&sha)
                            .is_some_and(|c| matches!(c.approval, Approval::Approved(_)));
                        // What the reader does between the two (after an
                        // exec's answer): look up the path.
                        let _ = fd_path(file.as_fd());
                        if approved && engine.kernel_allow(file.as_fd(), &ident, sha, epoch) {
                            cached += 1;
                        }
                        started.store(true, Ordering::Release);
                    }
                    cached
                });
                // Once the decider is going, ban at a varying moment.
                let deadline = Instant::now() + Duration::from_secs(5);
                while !started.load(Ordering::Acquire) && Instant::now() < deadline {
                    std::hint::spin_loop();
                }
                let until = Instant::now() + Duration::from_micros(round as u64 % 13);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                engine.invalidate(&[sha], round);
                stop.store(true, Ordering::Release);
                decider.join().unwrap()
            });
            if cached_before_ban > 0 {
                raced += 1;
            }
            assert!(
                !in_kernel_cache(&engine, ident.id),
                "round {round}: cached after the ban"
            );
            assert!(
                !has_ignore_mark(&engine, ident.id),
                "round {round}: ignore mark left after the ban"
            );
        }
        // The decider did cache before the ban in most rounds: the race was run.
        assert!(raced > 200, "only {raced} rounds cached before the ban");
    }

    /// The persistent cache answers while the service is away, but not with
    /// what a change may have taken back: an answer older than a change
    /// whose removals are not on disk yet is no answer; once they are, it
    /// is used (and cached in memory).
    #[test]
    fn disk_answers_older_than_a_change_not_yet_on_disk_are_not_used() {
        use palisade_core::{ApprovalSource, ScopeKind};
        let dir = tempfile::tempdir().unwrap();
        let Some(engine) = engine(dir.path()) else {
            return;
        };
        let approved = |revision| CachedApproval {
            approval: Approval::Approved(ApprovalSource {
                scope: ScopeKind::Global,
            }),
            trust: None,
            revision,
        };
        let (old, fresh) = (Sha256::from_bytes([1; 32]), Sha256::from_bytes([2; 32]));
        engine
            .persistent
            .put_many(&[(old, approved(1)), (fresh, approved(2))])
            .unwrap();
        let ask = |sha| {
            let deadline = Instant::now() + Duration::from_millis(500);
            engine.approval(sha, "/x", Operation::Execute, 1, &mut None, deadline)
        };
        let in_memory = |sha| engine.approvals.lock().get(&sha).is_some();

        // Change 2 announced; its removals not yet on disk.
        engine.newest_change.store(2, Ordering::Release);
        let (c, why) = ask(old);
        assert_eq!(c.approval, Approval::Unknown, "{why}");
        assert!(why.contains("behind change 2"), "{why}");
        assert!(!in_memory(old));
        // An answer given at the change or after it is current.
        let (c, why) = ask(fresh);
        assert!(matches!(c.approval, Approval::Approved(_)), "{why}");
        assert!(in_memory(fresh));

        // The removals are on disk: what is left there stands.
        engine.disk.current.store(2, Ordering::Release);
        let (c, why) = ask(old);
        assert!(matches!(c.approval, Approval::Approved(_)), "{why}");
        assert!(in_memory(old));
    }

    /// The persistent-cache writer moves the revision to catch up from (and
    /// what the disk is trusted up to) only while no removal was lost.
    #[test]
    fn a_lost_removal_stops_the_revision_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = PersistentCache::open(&dir.path().join("cache.db")).unwrap();
        let levels = LevelsFile::in_dir(dir.path());
        let disk = DiskState::default();
        let run = |ops: Vec<PersistOp>| {
            let (tx, rx) = crossbeam_channel::unbounded();
            for op in ops {
                tx.send(op).unwrap();
            }
            drop(tx);
            persist_loop(&store, &levels, &disk, &rx);
        };
        let sha = Sha256::from_bytes([3; 32]);
        let answer = CachedApproval {
            revision: 4,
            ..UNKNOWN
        };
        run(vec![
            PersistOp::Put(sha, answer),
            PersistOp::Revision(4),
            PersistOp::Remove(vec![sha]),
            PersistOp::Revision(5),
        ]);
        assert_eq!(store.meta("revision").as_deref(), Some("5"));
        assert_eq!(disk.current.load(Ordering::Acquire), 5);
        assert_eq!(store.get(&sha, Duration::from_secs(1)).unwrap(), None);

        disk.lose();
        run(vec![PersistOp::Revision(6)]);
        assert_eq!(store.meta("revision").as_deref(), Some("5"));
        assert_eq!(disk.current.load(Ordering::Acquire), 5);

        // A clear queued after the loss empties what it could have left:
        // the revision moves again (it stayed for the process's life).
        let losses_before = disk.losses.load(Ordering::Acquire);
        disk.lose(); // lost after the clear was queued: still counts
        run(vec![
            PersistOp::Clear { losses_before },
            PersistOp::Revision(8),
        ]);
        assert_eq!(store.meta("revision").as_deref(), Some("5"));
        let losses_before = disk.losses.load(Ordering::Acquire);
        run(vec![
            PersistOp::Clear { losses_before },
            PersistOp::Revision(9),
        ]);
        assert_eq!(store.meta("revision").as_deref(), Some("9"));
        assert_eq!(disk.current.load(Ordering::Acquire), 9);
    }

    /// An answer fetched before a change never outlives it in memory: one
    /// thread stores answers of revision `round` as fast as it can while
    /// another invalidates at `round + 1`.
    #[test]
    fn an_answer_racing_an_invalidation_does_not_outlive_it() {
        let dir = tempfile::tempdir().unwrap();
        let Some(engine) = engine(dir.path()) else {
            return;
        };
        let sha = Sha256::from_bytes([4; 32]);
        for round in 1..=2000i64 {
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    while !stop.load(Ordering::Acquire) {
                        engine.remember(
                            sha,
                            CachedApproval {
                                revision: round,
                                ..UNKNOWN
                            },
                        );
                    }
                });
                std::thread::sleep(Duration::from_micros(50 + round as u64 % 17));
                engine.invalidate(&[sha], round + 1);
                stop.store(true, Ordering::Release);
            });
            let left = engine.approvals.lock().get(&sha);
            assert!(
                left.is_none_or(|c| c.revision > round),
                "round {round}: {left:?} outlived change {}",
                round + 1
            );
        }
    }

    /// Pre-warming puts a copy of approved code into the kernel-side cache
    /// only when its first run would be a plain, cacheable allow from the
    /// same facts: no rule for its path, no banned publisher that could
    /// still decide (a local approval), an approval that allows at all.
    #[test]
    fn prewarming_follows_the_rules() {
        use palisade_core::{ApprovalSource, FileState, ScopeKind};
        let dir = tempfile::tempdir().unwrap();
        let Some(engine) = engine(dir.path()) else {
            return;
        };
        let sha = Sha256::from_bytes([9; 32]);
        let approved = |scope| CachedApproval {
            approval: Approval::Approved(ApprovalSource { scope }),
            trust: None,
            revision: 1,
        };
        let ruled = dir.path().join("ruled");
        let plain = dir.path().join("plain/tool");
        let plain = plain.to_str().unwrap();
        let under_rule = ruled.join("tool");
        let under_rule = under_rule.to_str().unwrap();
        let lockdown = Level::Lockdown;

        let none = CompiledRules::new(RuleSet::default());
        let global = approved(ScopeKind::Global);
        assert!(engine.prewarm_allowed(&none, &global, sha, plain, lockdown));
        let unknown = CachedApproval {
            approval: Approval::Unknown,
            ..global
        };
        assert!(!engine.prewarm_allowed(&none, &unknown, sha, plain, lockdown));
        let banned = CachedApproval {
            approval: Approval::Banned(ApprovalSource {
                scope: ScopeKind::Global,
            }),
            ..global
        };
        assert!(!engine.prewarm_allowed(&none, &banned, sha, plain, lockdown));

        let paths = CompiledRules::new(path_rules(&ruled));
        assert!(engine.prewarm_allowed(&paths, &global, sha, plain, lockdown));
        assert!(
            !engine.prewarm_allowed(&paths, &global, sha, under_rule, lockdown),
            "a rule for its path decides at its first run"
        );

        let banned_publisher = CompiledRules::new(RuleSet {
            publishers: vec![palisade_core::rules::PublisherState {
                name: "Someone".into(),
                state: FileState::Banned,
                scope: ScopeKind::Global,
            }],
            ..RuleSet::default()
        });
        let local = approved(ScopeKind::Local);
        assert!(
            !engine.prewarm_allowed(&banned_publisher, &local, sha, plain, lockdown),
            "a banned publisher beats a local approval"
        );
        assert!(engine.prewarm_allowed(&banned_publisher, &global, sha, plain, lockdown));
    }

    #[test]
    fn fd_path_names_the_file_behind_a_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("some file");
        let file = std::fs::File::create(&path).unwrap();
        let want = path.canonicalize().unwrap();
        assert_eq!(fd_path(file.as_fd()), want.to_str().unwrap());
        // Twice: the second goes through the directory opened by the first.
        let other = std::fs::File::open(dir.path()).unwrap();
        let want_dir = dir.path().canonicalize().unwrap();
        assert_eq!(fd_path(other.as_fd()), want_dir.to_str().unwrap());
        assert_eq!(fd_path(file.as_fd()), want.to_str().unwrap());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            fd_path(file.as_fd()),
            format!("{} (deleted)", want.to_str().unwrap())
        );
    }
}
