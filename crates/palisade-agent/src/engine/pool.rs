//! The workers: a pool that keeps `target` workers free to take events
//! however many are held.
//!
//! A worker can be held past its event's deadline: hashing a file of
//! gigabytes, or waiting in the kernel on something the agent did not
//! foresee (a network filesystem that stopped answering, a name service).
//! The watchdog answers that event at its deadline; then the worker is no
//! use to the events behind it, and with every worker held, each event a
//! worker must decide would wait for its deadline. So at each deadline it
//! meets, the watchdog calls [`Pool::top_up`]: while fewer than `target`
//! workers are free (idle, or on an event whose deadline has not passed),
//! it starts another, up to `cap` in all. A held worker that comes back
//! leaves while enough others are free, so the pool returns to `target`.
//! A worker that panics leaves too (its slot is dropped as it unwinds), and
//! the next top-up replaces it.
//!
//! Nothing here wakes on a timer: the pool only grows at a deadline the
//! watchdog was waiting for anyway, and shrinks when a worker finishes.
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How many workers a pool of `target` may run in all when workers are
/// held: four times as many, at least `target + 4`. Bounded, because a
/// user who can hold one worker (with a huge file, say) can hold as many
/// as are started.
pub(super) fn cap_for(target: usize) -> usize {
    (target * 4).max(target + 4)
}

/// Counts for the agent's status, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct WorkerCounts {
    /// Workers running now.
    pub running: AtomicU64,
    /// Workers started beyond the configured number because others were
    /// held past a deadline (since the agent started).
    pub added: AtomicU64,
    /// Times a top-up found fewer than the configured number of workers
    /// free and could start no more (the cap).
    pub capped: AtomicU64,
}

/// One worker's state: `0` while idle, else the deadline of the job in
/// hand, in nanoseconds after the pool's `base`, plus one.
#[derive(Debug, Default)]
struct Slot {
    until: AtomicU64,
}

/// What [`Pool::top_up`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TopUp {
    /// Workers on a job whose deadline has passed.
    pub held: usize,
    /// Workers started now.
    pub started: usize,
    /// Workers running after it.
    pub running: usize,
    /// Whether the cap kept it from starting as many as it wanted.
    pub capped: bool,
}

/// Where a pool's workers take their jobs.
pub(super) trait Jobs<T>: Send + Sync {
    /// The next job, waiting for one; `None` once no more will come.
    fn take(&self) -> Option<T>;
    /// A job taken is done (its worker returned, or unwound from a panic).
    fn done(&self, job: &T);
}

impl<T: Send> Jobs<T> for crossbeam_channel::Receiver<T> {
    fn take(&self) -> Option<T> {
        self.recv().ok()
    }

    fn done(&self, _: &T) {}
}

/// A pool of threads that take jobs of type `T` from one source.
pub(super) struct Pool<T> {
    target: usize,
    cap: usize,
    base: Instant,
    jobs: Arc<dyn Jobs<T>>,
    deadline: fn(&T) -> Instant,
    run: Box<dyn Fn(&T) + Send + Sync>,
    /// Runs first on each new thread (its priority, say).
    init: fn(),
    name: &'static str,
    slots: Mutex<Vec<Arc<Slot>>>,
    numbered: AtomicU64,
    counts: Arc<WorkerCounts>,
}

impl<T: Send + 'static> Pool<T> {
    /// A pool of `target` workers (none running yet: [`Pool::start`]), at
    /// most `cap` when some are held. Threads are named `name-N`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        name: &'static str,
        target: usize,
        cap: usize,
        jobs: Arc<dyn Jobs<T>>,
        deadline: fn(&T) -> Instant,
        init: fn(),
        run: Box<dyn Fn(&T) + Send + Sync>,
        counts: Arc<WorkerCounts>,
    ) -> Arc<Pool<T>> {
        Arc::new(Pool {
            target,
            cap: cap.max(target),
            base: Instant::now(),
            jobs,
            deadline,
            run,
            init,
            name,
            slots: Mutex::new(Vec::new()),
            numbered: AtomicU64::new(0),
            counts,
        })
    }

    /// Start the `target` workers.
    pub(super) fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let mut slots = self.slots.lock();
        for _ in 0..self.target {
            self.spawn(&mut slots)?;
        }
        Ok(())
    }

    /// Start workers until `target` are free (as far as `cap` allows), as
    /// of `now`.
    pub(super) fn top_up(self: &Arc<Self>, now: Instant) -> TopUp {
        let mut slots = self.slots.lock();
        let held = self.held(&slots, now, None);
        let free = slots.len() - held;
        let want = self.target.saturating_sub(free);
        let mut started = 0;
        while started < want && slots.len() < self.cap {
            match self.spawn(&mut slots) {
                Ok(()) => started += 1,
                Err(e) => {
                    tracing::warn!("cannot start another worker: {e}");
                    break;
                }
            }
        }
        self.counts
            .added
            .fetch_add(started as u64, Ordering::Relaxed);
        let capped = started < want && slots.len() >= self.cap;
        if capped {
            self.counts.capped.fetch_add(1, Ordering::Relaxed);
        }
        TopUp {
            held,
            started,
            running: slots.len(),
            capped,
        }
    }

    /// The most workers it runs.
    pub(super) fn cap(&self) -> usize {
        self.cap
    }

    /// Workers running now.
    #[cfg(test)]
    fn running(&self) -> usize {
        self.slots.lock().len()
    }

    /// Slots (but `except`) on a job whose deadline is `now` or earlier.
    fn held(&self, slots: &[Arc<Slot>], now: Instant, except: Option<&Arc<Slot>>) -> usize {
        let now = self.nanos(now);
        slots
            .iter()
            .filter(|s| except.is_none_or(|e| !Arc::ptr_eq(s, e)))
            .filter(|s| matches!(s.until.load(Ordering::Acquire), u if u != 0 && u <= now))
            .count()
    }

    /// `at` in nanoseconds after `base`, plus one (never `0`, idle).
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1)
            + 1
    }

    fn spawn(self: &Arc<Self>, slots: &mut Vec<Arc<Slot>>) -> std::io::Result<()> {
        let slot = Arc::new(Slot::default());
        let pool = self.clone();
        let n = self.numbered.fetch_add(1, Ordering::Relaxed);
        let mine = slot.clone();
        std::thread::Builder::new()
            .name(format!("{}-{n}", self.name))
            .spawn(move || pool.work(mine))?;
        slots.push(slot);
        self.counts
            .running
            .store(slots.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn work(self: Arc<Self>, slot: Arc<Slot>) {
        (self.init)();
        let leaving = Leaving {
            pool: &self,
            slot: &slot,
        };
        while let Some(job) = self.jobs.take() {
            slot.until
                .store(self.nanos((self.deadline)(&job)), Ordering::Release);
            let doing = Doing {
                jobs: &*self.jobs,
                job,
            };
            (self.run)(&doing.job);
            drop(doing);
            slot.until.store(0, Ordering::Release);
            if self.surplus(&slot) {
                break;
            }
        }
        drop(leaving);
    }

    /// Whether enough workers but `slot` are free for `slot` to leave.
    fn surplus(&self, slot: &Arc<Slot>) -> bool {
        let slots = self.slots.lock();
        let others = slots.len() - 1;
        others >= self.target
            && others - self.held(&slots, Instant::now(), Some(slot)) >= self.target
    }

    fn leave(&self, slot: &Arc<Slot>) {
        let mut slots = self.slots.lock();
        slots.retain(|s| !Arc::ptr_eq(s, slot));
        self.counts
            .running
            .store(slots.len() as u64, Ordering::Relaxed);
    }
}

/// Tells the jobs' source a job is done when dropped, unwinding from a
/// panic included.
struct Doing<'a, T> {
    jobs: &'a dyn Jobs<T>,
    job: T,
}

impl<T> Drop for Doing<'_, T> {
    fn drop(&mut self) {
        self.jobs.done(&self.job);
    }
}

/// Takes a worker's slot out of the pool when the worker ends, unwinding
/// from a panic included.
struct Leaving<'a, T: Send + 'static> {
    pool: &'a Pool<T>,
    slot: &'a Arc<Slot>,
}

impl<T: Send + 'static> Drop for Leaving<'_, T> {
    fn drop(&mut self) {
        self.pool.leave(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A job: its deadline, and a channel it waits on before it ends
    /// (`None`: ends at once). The pool's `run` reports each job it starts.
    struct Job {
        deadline: Instant,
        hold: Option<crossbeam_channel::Receiver<()>>,
    }

    fn pool(
        target: usize,
        cap: usize,
    ) -> (
        Arc<Pool<Job>>,
        crossbeam_channel::Sender<Job>,
        crossbeam_channel::Receiver<()>,
    ) {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let (started_tx, started_rx) = crossbeam_channel::unbounded();
        let p = Pool::new(
            "test-worker",
            target,
            cap,
            Arc::new(rx),
            |j: &Job| j.deadline,
            || {},
            Box::new(move |j: &Job| {
                started_tx.send(()).unwrap();
                if let Some(h) = &j.hold {
                    let _ = h.recv();
                }
            }),
            Arc::default(),
        );
        p.start().unwrap();
        (p, tx, started_rx)
    }

    fn eventually(mut f: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// Hold `n` workers on jobs whose deadline is `deadline`; the senders
    /// release them (or dropping them).
    fn hold(
        tx: &crossbeam_channel::Sender<Job>,
        started: &crossbeam_channel::Receiver<()>,
        n: usize,
        deadline: Instant,
    ) -> Vec<crossbeam_channel::Sender<()>> {
        (0..n)
            .map(|_| {
                let (release, hold) = crossbeam_channel::bounded(1);
                tx.send(Job {
                    deadline,
                    hold: Some(hold),
                })
                .unwrap();
                started.recv_timeout(Duration::from_secs(5)).unwrap();
                release
            })
            .collect()
    }

    /// Send a job that ends at once, and wait until a worker took it.
    fn run_one(tx: &crossbeam_channel::Sender<Job>, started: &crossbeam_channel::Receiver<()>) {
        tx.send(Job {
            deadline: Instant::now() + Duration::from_secs(60),
            hold: None,
        })
        .unwrap();
        started.recv_timeout(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn held_workers_are_replaced_and_leave_when_they_come_back() {
        let (p, tx, started) = pool(2, 5);
        assert_eq!(p.running(), 2);
        let passed = Instant::now();
        let releases = hold(&tx, &started, 2, passed);
        let t = p.top_up(Instant::now());
        assert_eq!(
            t,
            TopUp {
                held: 2,
                started: 2,
                running: 4,
                capped: false
            }
        );
        assert_eq!(p.counts.added.load(Ordering::Relaxed), 2);
        // The new workers take jobs while the others are held.
        run_one(&tx, &started);
        // Nothing more is held: another top-up starts nothing.
        assert_eq!(p.top_up(Instant::now()).started, 0);
        // Released, the held ones leave: two are free without them.
        drop(releases);
        assert!(eventually(|| p.running() == 2), "{}", p.running());
        assert_eq!(p.counts.running.load(Ordering::Relaxed), 2);
        // And the pool still works.
        run_one(&tx, &started);
    }

    #[test]
    fn a_job_before_its_deadline_does_not_count_as_held() {
        let (p, tx, started) = pool(1, 4);
        let later = Instant::now() + Duration::from_secs(60);
        let _release = hold(&tx, &started, 1, later);
        assert_eq!(p.top_up(Instant::now()).started, 0);
        // At the deadline, it is held.
        assert_eq!(p.top_up(later).started, 1);
    }

    #[test]
    fn the_cap_bounds_the_workers_started() {
        let (p, tx, started) = pool(2, 3);
        let passed = Instant::now();
        let mut releases = hold(&tx, &started, 2, passed);
        let t = p.top_up(Instant::now());
        assert_eq!((t.started, t.running, t.capped), (1, 3, true));
        releases.extend(hold(&tx, &started, 1, passed));
        let t = p.top_up(Instant::now());
        assert_eq!((t.held, t.started, t.running, t.capped), (3, 0, 3, true));
        assert_eq!(p.counts.capped.load(Ordering::Relaxed), 2);
        drop(releases);
        assert!(eventually(|| p.running() == 2));
    }

    #[test]
    fn a_worker_that_panics_leaves_and_is_replaced() {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let p = Pool::new(
            "test-worker",
            1,
            2,
            Arc::new(rx),
            |j: &Job| j.deadline,
            || {},
            Box::new(|j: &Job| {
                assert!(j.hold.is_some(), "a job without a hold panics");
            }),
            Arc::default(),
        );
        p.start().unwrap();
        tx.send(Job {
            deadline: Instant::now(),
            hold: None,
        })
        .unwrap();
        assert!(eventually(|| p.running() == 0));
        assert_eq!(p.top_up(Instant::now()).started, 1);
        assert_eq!(p.running(), 1);
    }

    #[test]
    fn workers_end_when_the_channel_closes() {
        let (p, tx, _started) = pool(3, 6);
        assert_eq!(p.running(), 3);
        drop(tx);
        assert!(eventually(|| p.running() == 0));
    }
}
