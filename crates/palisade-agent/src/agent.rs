//! Assembling a running agent: open the stores, load the guard, resolve the
//! interpreters, start the threads and the link, and only then mark the
//! watched filesystems (so no permission event can arrive before its reader).
use crate::config::AgentConfig;
use crate::control::{self, ControlStatus};
use crate::debian::LivePackageDb;
use crate::engine::{Engine, EngineParts, PackageFacts, PERMISSION_MASK};
use crate::identity::Identity;
use crate::link::{self, LinkParts, ServiceClient};
use crate::mounts::{self, Mount};
use crate::report::Reporter;
use crate::scan::{self, ScanSummary};
use crate::store::{starting_levels, LevelsFile, PersistentCache, Spool};
use anyhow::{bail, Context, Result};
use palisade_api::agent::AgentConfig as ServiceConfig;
use palisade_core::{Levels, Sha256};
use palisade_kernel::fanotify::{Fanotify, Mask};
use palisade_kernel::guard::ExecGuard;
use palisade_kernel::Stop;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// A running agent. Dropping it without [`RunningAgent::shutdown`] leaves its
/// threads running until the process exits.
pub struct RunningAgent {
    cfg: Arc<AgentConfig>,
    engine: Arc<Engine>,
    client: ServiceClient,
    fan: Arc<Fanotify>,
    notify_fan: Option<Arc<Fanotify>>,
    mounts: Vec<Mount>,
    /// Mount points watched now (the start's and those marked since).
    watched_now: Arc<parking_lot::Mutex<Vec<String>>>,
    stop: Arc<Stop>,
    enforcing: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    reporter: Reporter,
    packages: Option<Arc<dyn PackageFacts>>,
}

/// Options beyond the configuration file.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Levels to assume until the service says otherwise, when none were
    /// remembered (default: monitor while connected and disconnected).
    pub initial_levels: Option<Levels>,
}

impl RunningAgent {
    /// Start the agent (must run inside a tokio runtime). The agent must be
    /// enrolled (an identity in the data directory).
    pub async fn start(cfg: AgentConfig, opts: StartOptions) -> Result<RunningAgent> {
        let cfg = Arc::new(cfg);
        raise_open_file_limit();
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| cfg.data_dir.display().to_string())?;
        // The key, caches and spool are root's; users reach only the
        // request socket.
        crate::store::traverse_only(&cfg.data_dir)
            .with_context(|| cfg.data_dir.display().to_string())?;
        let identity = Identity::load(&cfg.data_dir)?.with_context(|| {
            format!(
                "this agent is not enrolled (no identity in {}); run `palisade agent enroll`",
                cfg.data_dir.display()
            )
        })?;
        let client = ServiceClient::new(&identity)?;

        let (persistent, rebuilt) = PersistentCache::open(&cfg.data_dir.join("cache.db"))?;
        if rebuilt {
            tracing::warn!(
                "persistent cache was unusable and has been rebuilt; it refills from the service"
            );
        }
        let persistent = Arc::new(persistent);
        let (spool, spool_rebuilt) = Spool::open(&cfg.data_dir.join("events.db"))?;
        if spool_rebuilt {
            tracing::warn!(
                "event spool was unusable and has been rebuilt (the old file is kept aside)"
            );
        }
        let spool = Arc::new(spool);
        let spool_id = spool_id(&persistent);

        let levels_file = LevelsFile::in_dir(&cfg.data_dir);
        let levels = starting_levels(
            levels_file.load(),
            persistent
                .meta("levels")
                .and_then(|s| serde_json::from_str::<Levels>(&s).ok()),
            rebuilt,
            opts.initial_levels,
        );
        tracing::info!(
            "starting at level {} ({} while disconnected) until the service says otherwise",
            levels.connected,
            levels.disconnected
        );
        // First: an unreadable one drops the revision with the answers.
        // A disk that fails that clear must not keep the agent from
        // starting: enforcing by the answers it has beats enforcing nothing.
        let remembered: Option<ServiceConfig> = persistent.saved_config().unwrap_or_else(|e| {
            tracing::error!("the saved configuration: {e}; starting without it");
            None
        });
        let revision = persistent
            .meta("revision")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);

        let interpreters = resolve_interpreters(&cfg.interpreters);
        tracing::info!(
            "{} interpreter binaries under script control",
            interpreters.len()
        );

        let all_mounts = mounts::all().context("reading the mount table")?;
        let watch =
            mounts::watch_set(&all_mounts, &cfg.watch).context("resolving watched paths")?;
        if watch.is_empty() {
            bail!("nothing to watch");
        }

        let fan = Arc::new(Fanotify::permission_group().context(
            "fanotify permission events (needs root and CONFIG_FANOTIFY_ACCESS_PERMISSIONS)",
        )?);
        let guard = match ExecGuard::load() {
            Ok(g) => Some(Arc::new(g)),
            Err(e) => {
                tracing::error!(
                    "BPF LSM guard unavailable ({e}): executable mappings are judged at open only, and code run from memory is blocked but not reported"
                );
                if unprivileged_user_namespaces() {
                    tracing::warn!(
                        "unprivileged users can create user namespaces, and mount filesystems there that the agent does not see: without the guard, code run from those is NOT controlled (sysctl user.max_user_namespaces=0 closes this)"
                    );
                }
                None
            }
        };

        let wake = Arc::new(Notify::new());
        let reporter = {
            let wake = wake.clone();
            Reporter::start(spool.clone(), Arc::new(move || wake.notify_one()))
        };
        let rt = tokio::runtime::Handle::current();
        let lookup = Arc::new(link::start_batcher(&rt, client.clone(), cfg.lookup_timeout));
        let packages: Option<Arc<dyn PackageFacts>> = match LivePackageDb::load(&cfg.package_root) {
            Ok(db) => {
                let (packages, files) = db.current().counts();
                tracing::info!(
                    "package database under {}: {packages} packages, {files} files",
                    cfg.package_root.display()
                );
                Some(Arc::new(RootedPackages {
                    db,
                    root: cfg.package_root.clone(),
                }))
            }
            Err(e) => {
                tracing::info!(
                    "no package database ({e}): publishers and package-manager updaters unused"
                );
                None
            }
        };
        let (local_tx, local_rx) = tokio::sync::mpsc::channel(65_536);
        let (facts_tx, facts_rx) = tokio::sync::mpsc::channel(16_384);
        let engine = Engine::new(EngineParts {
            cfg: cfg.clone(),
            fan: fan.clone(),
            guard: guard.clone(),
            levels,
            interpreters,
            persistent: persistent.clone(),
            levels_file,
            lookup,
            reporter: reporter.clone(),
            revision,
            rules: remembered
                .as_ref()
                .map(|c| c.rules.clone())
                .unwrap_or_default(),
            packages: packages.clone(),
            local_tx,
            facts_tx,
        });

        let stop = Arc::new(Stop::new().context("creating the stop signal")?);
        let enforcing = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let engine = engine.clone();
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("palisade-reader".into())
                    .spawn(move || {
                        crate::engine::essential("reader", || engine.run_reader(stop))
                    })?,
            );
        }
        if guard.is_some() {
            let engine = engine.clone();
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("palisade-guard".into())
                    .spawn(move || engine.run_guard(&stop))?,
            );
        }

        // The reader runs: now the marks.
        for m in &watch {
            fan.mark_filesystem(&m.mount_point, PERMISSION_MASK)
                .with_context(|| format!("marking {}", m.mount_point.display()))?;
            if let Some(g) = &guard {
                g.watch_device(m.st_dev())
                    .with_context(|| format!("guarding {}", m.mount_point.display()))?;
            }
            tracing::info!("watching {} ({})", m.mount_point.display(), m.fstype);
        }
        enforcing.store(true, Ordering::Relaxed);

        let notify_fan = if cfg.hash_on_write {
            match start_hasher(&engine, &watch, &stop) {
                Ok((f, t)) => {
                    threads.push(t);
                    Some(f)
                }
                Err(e) => {
                    tracing::warn!("hash-on-write unavailable: {e:#}");
                    None
                }
            }
        } else {
            None
        };

        // Filesystems mounted from now on (a login's /run/user/UID, a USB
        // stick, a tmpfs mounted inside a watched directory) are marked as
        // they appear.
        let live_watched = Arc::new(parking_lot::Mutex::new(
            watch
                .iter()
                .map(|m| m.mount_point.display().to_string())
                .collect::<Vec<_>>(),
        ));
        match start_mount_follower(MountFollower {
            scope: mounts::Scope::new(&cfg.watch),
            initial: watch.clone(),
            fan: fan.clone(),
            guard: guard.clone(),
            notify_fan: notify_fan.clone(),
            watched: live_watched.clone(),
            stop: stop.clone(),
        }) {
            Ok(t) => threads.push(t),
            Err(e) => tracing::warn!(
                "filesystems mounted from now on will NOT be watched (cannot follow the mount table: {e:#})"
            ),
        }

        let (removed_tx, removed_rx) = tokio::sync::mpsc::channel(16_384);
        let names = crate::removals::start(
            &watch,
            engine.code_paths(),
            removed_tx,
            engine.clone(),
            stop.clone(),
        );
        engine.set_name_watch(names.watch);
        threads.extend(names.thread);

        let watched: Vec<String> = watch
            .iter()
            .map(|m| m.mount_point.display().to_string())
            .collect();
        let config = Arc::new(parking_lot::Mutex::new(remembered));
        let certificate = Arc::new(parking_lot::Mutex::new((0i64, 0i64)));
        let tasks = vec![
            tokio::spawn(link::run_stream(LinkParts {
                scan: link::ScanParams {
                    mounts: watch.clone(),
                    script_extensions: cfg.script_extensions.clone(),
                    packages: packages.clone(),
                },
                client: client.clone(),
                engine: engine.clone(),
                persistent: persistent.clone(),
                watched: watched.clone(),
                enforcing: enforcing.clone(),
                config: config.clone(),
                status_every: cfg.status_interval,
            })),
            tokio::spawn(link::run_local_approvals(
                client.clone(),
                engine.clone(),
                local_rx,
            )),
            tokio::spawn(link::run_facts(client.clone(), facts_rx)),
            tokio::spawn(link::run_removed(client.clone(), removed_rx)),
            tokio::spawn(link::run_renewal(
                client.clone(),
                identity.clone(),
                cfg.data_dir.clone(),
                certificate.clone(),
            )),
            tokio::spawn(link::run_uploader(
                client.clone(),
                spool.clone(),
                spool_id,
                wake,
            )),
        ];

        {
            let engine = engine.clone();
            let enforcing = enforcing.clone();
            let reporter = reporter.clone();
            let server = identity.server.clone();
            let computer = identity.computer.clone();
            let live_watched = live_watched.clone();
            let persistent = persistent.clone();
            let data_dir = cfg.data_dir.clone();
            control::serve(&cfg.control_socket, move || {
                // Copied out first: a guard in the literal would be held
                // to its end.
                let certificate = *certificate.lock();
                ControlStatus {
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    computer: computer.clone(),
                    server: server.clone(),
                    policy: config.lock().as_ref().map(|c| c.policy.clone()),
                    connected: engine.connected(),
                    level: engine.level(),
                    levels: engine.levels(),
                    enforcing: enforcing.load(Ordering::Relaxed),
                    guard_active: engine.guard_active(),
                    watched: live_watched.lock().clone(),
                    stats: engine.stats.snapshot(),
                    latency: engine.latency.snapshot(),
                    spool_pending: spool.len().unwrap_or(0),
                    events_dropped: reporter.dropped(),
                    events_set_aside: reporter.losses().set_aside,
                    cached_approvals: engine.cached_hashes(),
                    stores_in_memory: [
                        (persistent.in_memory(), "cache.db"),
                        (spool.in_memory(), "events.db"),
                    ]
                    .into_iter()
                    .filter(|(in_memory, _)| *in_memory)
                    .map(|(_, name)| data_dir.join(name).display().to_string())
                    .collect(),
                    certificate_expires: certificate.0,
                    certificate_renewal_due: certificate.1,
                }
            })?;
        }

        {
            // Local users ask for blocked files to be approved (prompt level).
            let client = client.clone();
            let rt = tokio::runtime::Handle::current();
            let names = crate::users::Names::default();
            control::serve_requests(&cfg.request_socket, move |who, req, gone| {
                // Only what the requester could open themselves.
                let (path, file) = crate::asuser::open_as(who, &req.path)?;
                // Up to 8 GiB: not hashed on for a requester who hung up.
                let sha256 = crate::files::hash_unless(&file, gone)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                if req.hash_only {
                    return Ok(control::LocalRequestAnswer::Hashed {
                        sha256,
                        path: path.to_string_lossy().into_owned(),
                    });
                }
                let uid = who.uid;
                let user = names
                    .users(&[uid])
                    .pop()
                    .unwrap_or_else(|| format!("#{uid}"));
                let request = palisade_api::agent::NewApprovalRequest {
                    sha256,
                    path: path.to_string_lossy().into_owned(),
                    user,
                    reason: req.reason,
                    process: None,
                };
                rt.block_on(client.request(&request))
                    .map(|c| control::LocalRequestAnswer::Filed { id: c.id })
                    .map_err(|e| format!("the service did not take the request: {e:#}"))
            })?;
        }

        Ok(RunningAgent {
            cfg,
            engine,
            client,
            fan,
            notify_fan,
            mounts: watch,
            watched_now: live_watched,
            stop,
            enforcing,
            threads,
            tasks,
            reporter,
            packages,
        })
    }

    /// The decision engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The watched filesystems.
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// Wait until the link to the service is up, at most `max`.
    pub async fn wait_connected(&self, max: Duration) -> bool {
        let end = tokio::time::Instant::now() + max;
        while tokio::time::Instant::now() < end {
            if self.engine.connected() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.engine.connected()
    }

    /// Run the initialization scan over the watched filesystems.
    /// Afterwards the answers for everything found are fetched, so that the
    /// first run of each needs no round trip.
    pub async fn scan(&self, approve: bool, progress: bool) -> Result<ScanSummary> {
        let summary = scan::scan(
            &self.client,
            &self.mounts,
            &self.cfg.script_extensions,
            self.packages.clone(),
            approve,
            progress,
        )
        .await?;
        // What the scan hashed is known from now on, and where it is: its
        // approvals, fetched next, put it straight into the kernel-side cache.
        self.engine.learn_scanned(&summary.files);
        let mut hashes: Vec<Sha256> = summary.files.iter().map(|f| f.sha256).collect();
        hashes.sort_unstable();
        hashes.dedup();
        link::prefetch(&self.client, &self.engine, &hashes).await;
        if approve {
            // Each local approval is an event, like any other decision.
            let engine = self.engine.clone();
            let files = summary.files.clone();
            tokio::task::spawn_blocking(move || engine.report_scan_approvals(&files)).await?;
        }
        Ok(summary)
    }

    /// Stop: unmark (by closing the groups, which lets any unanswered event
    /// through), stop the threads, let the workers decide what is queued,
    /// write every event reported to disk, stop the tasks.
    pub async fn shutdown(mut self) {
        self.enforcing.store(false, Ordering::Relaxed);
        self.engine.release();
        // Marks off first, while the reader still answers what they raised;
        // then the stop; then once more, for a mount the follower marked in
        // between.
        self.unmark();
        self.stop.request();
        let threads = std::mem::take(&mut self.threads);
        let engine = self.engine.clone();
        let reporter = self.reporter.clone();
        let unwritten = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
            // The workers leave once the queue the reader closed is empty;
            // one held (a file of gigabytes) is not waited for long.
            let end = std::time::Instant::now() + Duration::from_secs(2);
            while engine.stats.workers.running.load(Ordering::Acquire) > 0
                && std::time::Instant::now() < end
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            reporter.flush(Duration::from_secs(5))
        })
        .await
        .unwrap_or(0);
        if unwritten > 0 {
            tracing::error!("stopping with {unwritten} events not written to the spool");
        }
        for t in &self.tasks {
            t.abort();
        }
        self.unmark();
        let _ = std::fs::remove_file(&self.cfg.control_socket);
        let _ = std::fs::remove_file(&self.cfg.request_socket);
    }
}

impl RunningAgent {
    /// Remove the marks of every watched filesystem.
    fn unmark(&self) {
        let now: Vec<PathBuf> = self.watched_now.lock().iter().map(PathBuf::from).collect();
        for point in self.mounts.iter().map(|m| &m.mount_point).chain(&now) {
            let _ = self.fan.unmark_filesystem(point, PERMISSION_MASK);
            if let Some(n) = &self.notify_fan {
                let _ = n.unmark_filesystem(point, Mask::CLOSE_WRITE);
            }
        }
    }
}

/// A random id for this spool, kept in the persistent cache, so event
/// sequence numbers stay unique even if the spool file is rebuilt.
fn spool_id(persistent: &PersistentCache) -> u64 {
    if let Some(id) = persistent
        .meta("spool_id")
        .and_then(|v| v.parse::<u64>().ok())
    {
        return id;
    }
    let id = rand::random::<u64>() & ((1 << 23) - 1);
    let _ = persistent.set_meta("spool_id", &id.to_string());
    id
}

/// Every permission event arrives with an open descriptor, held until the
/// event is answered: a burst of events waiting for workers (up to 4096
/// queued) must not run the process out of descriptors, or the kernel cannot
/// hand the next event over. Raise the
/// soft limit to the hard one (best effort; the shipped unit sets both).
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!("cannot raise the open file limit: {e}");
        }
    }
}

fn start_hasher(
    engine: &Arc<Engine>,
    watch: &[Mount],
    stop: &Arc<Stop>,
) -> Result<(Arc<Fanotify>, std::thread::JoinHandle<()>)> {
    let fan = Arc::new(Fanotify::notification_group()?);
    for m in watch {
        fan.mark_filesystem(&m.mount_point, Mask::CLOSE_WRITE)?;
    }
    // The hasher asks whether a trusted writer's file has other writers
    // with a lease it gives back at once: a break in between must not end
    // the agent.
    palisade_kernel::writers::ignore_lease_breaks()?;
    let engine = engine.clone();
    let stop = stop.clone();
    let f = fan.clone();
    let own = std::process::id() as i32;
    let t = std::thread::Builder::new()
        .name("palisade-hasher".into())
        .spawn(move || {
            crate::engine::background_priority();
            let mut buf = vec![0u8; palisade_kernel::fanotify::EVENT_BUFFER];
            while !stop.requested() {
                // A trusted writer's approval is held until the queue has
                // been read to its end (`Engine::settle_held_writes`): a
                // read that finds it empty settles what is held.
                let holding = engine.holds_writes();
                let read = if holding {
                    f.read_queued(&mut buf)
                } else {
                    f.read_events_until(&mut buf, &stop)
                };
                let Ok(events) = read else {
                    engine.drop_held_writes("the write notifications could not be read");
                    stop.sleep(Duration::from_millis(50));
                    continue;
                };
                if holding && events.is_empty() {
                    engine.settle_held_writes();
                    continue;
                }
                for ev in events {
                    if ev.mask.contains(Mask::Q_OVERFLOW) {
                        engine.writes_missed();
                        continue;
                    }
                    if ev.pid == own {
                        continue;
                    }
                    if let Some(fd) = ev.fd() {
                        engine.hash_written(fd);
                    }
                }
            }
        })?;
    Ok((fan, t))
}

/// Whether unprivileged users may create user namespaces (and so mount
/// filesystems of their own): `user.max_user_namespaces` above zero, and
/// Debian's `kernel.unprivileged_userns_clone`, where the kernel has it,
/// not zero.
fn unprivileged_user_namespaces() -> bool {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    read("/proc/sys/user/max_user_namespaces").is_some_and(|n| n > 0)
        && read("/proc/sys/kernel/unprivileged_userns_clone") != Some(0)
}

/// What the mount follower needs.
struct MountFollower {
    scope: mounts::Scope,
    /// Marked at the start.
    initial: Vec<Mount>,
    fan: Arc<Fanotify>,
    guard: Option<Arc<ExecGuard>>,
    notify_fan: Option<Arc<Fanotify>>,
    /// Mount points watched, as `palisade status` lists them.
    watched: Arc<parking_lot::Mutex<Vec<String>>>,
    stop: Arc<Stop>,
}

/// Follow the mount table (`/proc/self/mountinfo` reports each change as
/// `POLLPRI`) and mark every filesystem in scope, at each change. Marking an
/// already marked filesystem changes nothing, and a device number may come
/// back for a new filesystem between two looks (tmpfs numbers are reused),
/// so all are marked again rather than only those not seen before. Names
/// (removals, renames under path rules) are not followed on filesystems
/// mounted later: with path rules, their files are decided at each use.
fn start_mount_follower(f: MountFollower) -> Result<std::thread::JoinHandle<()>> {
    let table = std::fs::File::open("/proc/self/mountinfo").context("/proc/self/mountinfo")?;
    Ok(std::thread::Builder::new()
        .name("palisade-mounts".into())
        .spawn(move || {
            crate::engine::background_priority();
            use std::os::fd::AsFd;
            let mut known: HashSet<(u32, u32, PathBuf)> = f
                .initial
                .iter()
                .map(|m| (m.major, m.minor, m.mount_point.clone()))
                .collect();
            // A first pass at once: a mount made since the agent read the
            // table at its start reported no change to this descriptor.
            let mut first = true;
            while !f.stop.requested() {
                if !std::mem::take(&mut first) {
                    match f.stop.wait_priority(table.as_fd()) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::warn!("following the mount table: {e}");
                            f.stop.sleep(Duration::from_secs(1));
                        }
                    }
                }
                let all = match mounts::all() {
                    Ok(all) => all,
                    Err(e) => {
                        tracing::warn!("reading the mount table: {e}");
                        continue;
                    }
                };
                let chosen = f.scope.select(&all);
                let mut watched = Vec::with_capacity(chosen.len());
                for m in &chosen {
                    if let Err(e) = f.fan.mark_filesystem(&m.mount_point, PERMISSION_MASK) {
                        tracing::error!(
                            "{} ({}) mounted: NOT watched: {e}",
                            m.mount_point.display(),
                            m.fstype
                        );
                        continue;
                    }
                    if let Some(g) = &f.guard {
                        if let Err(e) = g.watch_device(m.st_dev()) {
                            tracing::error!("{}: not guarded: {e}", m.mount_point.display());
                        }
                    }
                    if let Some(n) = &f.notify_fan {
                        if let Err(e) = n.mark_filesystem(&m.mount_point, Mask::CLOSE_WRITE) {
                            tracing::warn!("{}: not hashed on write: {e}", m.mount_point.display());
                        }
                    }
                    if known.insert((m.major, m.minor, m.mount_point.clone())) {
                        tracing::info!("watching {} ({})", m.mount_point.display(), m.fstype);
                    }
                    watched.push(m.mount_point.display().to_string());
                }
                known.retain(|(major, minor, point)| {
                    chosen
                        .iter()
                        .any(|m| (m.major, m.minor) == (*major, *minor) && &m.mount_point == point)
                });
                *f.watched.lock() = watched;
            }
        })?)
}

/// Directories searched for interpreters.
const BIN_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Hash every program in the usual binary directories (and `PATH`) whose
/// name matches one of `globs`: (hash, size) of each.
pub fn resolve_interpreters(globs: &[String]) -> Vec<(Sha256, u64)> {
    let mut dirs: Vec<PathBuf> = BIN_DIRS.iter().map(PathBuf::from).collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !globs.iter().any(|g| glob_match(g, &name)) {
                continue;
            }
            let Ok(real) = std::fs::canonicalize(e.path()) else {
                continue;
            };
            if !seen.insert(real.clone()) {
                continue;
            }
            let size = std::fs::metadata(&real).map(|m| m.len()).unwrap_or(0);
            if let Ok(sha) = crate::files::hash_path(&real) {
                out.push((sha, size));
            }
        }
    }
    out
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(glob: &str, name: &str) -> bool {
    fn go(g: &[u8], n: &[u8]) -> bool {
        match g.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(glob.as_bytes(), name.as_bytes())
}

/// Whether `path` is on one of the agent's watched filesystems.
pub fn is_watched(mounts: &[Mount], path: &Path) -> bool {
    mounts::mount_of(mounts, path).is_ok_and(|m| {
        mounts
            .iter()
            .any(|w| w.major == m.major && w.minor == m.minor)
    })
}

/// The package database of a root directory, answering for absolute paths
/// (a path outside the root has no package).
struct RootedPackages {
    db: LivePackageDb,
    root: PathBuf,
}

impl PackageFacts for RootedPackages {
    fn fact(
        &self,
        path: &str,
        file: std::os::fd::BorrowedFd<'_>,
    ) -> Option<palisade_core::rules::PublisherFact> {
        if self.root == Path::new("/") {
            return self.db.fact(path, file);
        }
        let rel = Path::new(path).strip_prefix(&self.root).ok()?;
        self.db.fact(&format!("/{}", rel.display()), file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("python3.*", "python3.11"));
        assert!(!glob_match("python3.*", "python3"));
        assert!(glob_match("sh", "sh"));
        assert!(!glob_match("sh", "bash"));
        assert!(glob_match("*", ""));
        assert!(glob_match("lua5*", "lua5.4"));
    }

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let hard = getrlimit(Resource::Nofile).maximum;
        let lowered = hard.map_or(1024, |h| h.min(1024));
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(lowered),
                maximum: hard,
            },
        )
        .unwrap();
        assert_eq!(getrlimit(Resource::Nofile).current, Some(lowered));
        raise_open_file_limit();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(now.current, hard, "soft limit raised to the hard one");
        assert_eq!(now.maximum, hard, "hard limit unchanged");
    }

    #[test]
    fn finds_the_shell() {
        let set = resolve_interpreters(&["sh".to_string(), "bash".to_string()]);
        let bash = crate::files::hash_path(&std::fs::canonicalize("/bin/bash").unwrap()).unwrap();
        assert!(set.iter().any(|(h, size)| *h == bash && *size > 0));
    }
}
