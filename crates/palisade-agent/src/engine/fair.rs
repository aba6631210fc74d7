//! The workers' queue, fair between users.
//!
//! One queue for all would let one user hold every worker: run enough
//! files that take long to decide (each distinct file of gigabytes takes
//! a worker for seconds), and every other user's events wait behind them
//! until their deadline, refused in lockdown. So events wait per owner
//! (the real uid of the process that caused them), owners take turns, and
//! the last free worker is kept for an owner with nothing in progress: an
//! owner already being served gets a worker only while another stays
//! free, and never more than `per_owner` at once (the pool's cap less its
//! size: when one owner's workers are held for good, the pool can still
//! grow by its size for the others). A lone owner still gets all but one
//! (the pool replaces held workers, so "all but one" grows with it); an
//! owner flooding the queue gets at most a quarter of its room.
use super::pool::{Jobs, WorkerCounts};
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Why [`FairQueue::push`] refused a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    /// The queue holds `capacity` jobs.
    All,
    /// This owner has a quarter of that waiting.
    Owner,
}

struct State<T> {
    waiting: HashMap<u32, VecDeque<T>>,
    /// Owners with jobs waiting, in turn order.
    turns: VecDeque<u32>,
    /// Jobs in progress per owner (absent: none).
    busy: HashMap<u32, usize>,
    busy_total: usize,
    len: usize,
    closed: bool,
}

/// Jobs of type `T`, each with its owner; see the module's notes.
pub(super) struct FairQueue<T> {
    state: Mutex<State<T>>,
    cv: Condvar,
    capacity: usize,
    /// Jobs one owner may have in progress at once.
    per_owner: usize,
    /// The pool's count of running workers.
    workers: Arc<WorkerCounts>,
    owner_of: fn(&T) -> u32,
}

impl<T: Send> FairQueue<T> {
    pub(super) fn new(
        capacity: usize,
        per_owner: usize,
        workers: Arc<WorkerCounts>,
        owner_of: fn(&T) -> u32,
    ) -> FairQueue<T> {
        FairQueue {
            state: Mutex::new(State {
                waiting: HashMap::new(),
                turns: VecDeque::new(),
                busy: HashMap::new(),
                busy_total: 0,
                len: 0,
                closed: false,
            }),
            cv: Condvar::new(),
            capacity,
            per_owner: per_owner.max(1),
            workers,
            owner_of,
        }
    }

    /// Queue `job`, unless the queue or its owner's share is full.
    pub(super) fn push(&self, job: T) -> Result<(), Full> {
        let owner = (self.owner_of)(&job);
        let mut s = self.state.lock();
        if s.len >= self.capacity {
            return Err(Full::All);
        }
        let queue = s.waiting.entry(owner).or_default();
        if queue.len() >= (self.capacity / 4).max(1) {
            return Err(Full::Owner);
        }
        queue.push_back(job);
        if queue.len() == 1 {
            s.turns.push_back(owner);
        }
        s.len += 1;
        drop(s);
        self.cv.notify_one();
        Ok(())
    }

    /// No more jobs: workers take what is left, then end.
    pub(super) fn close(&self) {
        self.state.lock().closed = true;
        self.cv.notify_all();
    }

    /// The next job a free worker may take, if any (see the module's
    /// notes); after [`FairQueue::close`], any.
    fn next(&self, s: &mut State<T>) -> Option<T> {
        let running = self.workers.running.load(Ordering::Relaxed) as usize;
        // This worker is free: taking a job leaves `running - busy - 1` free.
        let spare = running.saturating_sub(s.busy_total + 1) > 0;
        let at = s.turns.iter().position(|o| {
            s.closed
                || match s.busy.get(o) {
                    None => true,
                    Some(&n) => spare && n < self.per_owner,
                }
        })?;
        let owner = s.turns.remove(at)?;
        let queue = s.waiting.get_mut(&owner)?;
        let job = queue.pop_front()?;
        if queue.is_empty() {
            s.waiting.remove(&owner);
        } else {
            s.turns.push_back(owner);
        }
        s.len -= 1;
        *s.busy.entry(owner).or_default() += 1;
        s.busy_total += 1;
        Some(job)
    }
}

impl<T: Send> Jobs<T> for FairQueue<T> {
    fn take(&self) -> Option<T> {
        let mut s = self.state.lock();
        loop {
            if let Some(job) = self.next(&mut s) {
                return Some(job);
            }
            if s.closed && s.len == 0 {
                return None;
            }
            self.cv.wait(&mut s);
        }
    }

    fn done(&self, job: &T) {
        let owner = (self.owner_of)(job);
        let mut s = self.state.lock();
        if let Some(n) = s.busy.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                s.busy.remove(&owner);
            }
            s.busy_total -= 1;
        }
        drop(s);
        // A worker may now take what it could not.
        self.cv.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// (owner, label)
    type Job = (u32, &'static str);

    fn queue(capacity: usize, running: u64) -> FairQueue<Job> {
        let counts = Arc::new(WorkerCounts::default());
        counts.running.store(running, Ordering::Relaxed);
        FairQueue::new(capacity, 64, counts, |j: &Job| j.0)
    }

    fn try_take(q: &FairQueue<Job>) -> Option<Job> {
        q.next(&mut q.state.lock())
    }

    #[test]
    fn owners_take_turns() {
        let q = queue(64, 8);
        for j in [
            (1, "a1"),
            (1, "a2"),
            (1, "a3"),
            (2, "b1"),
            (3, "c1"),
            (2, "b2"),
        ] {
            q.push(j).unwrap();
        }
        let order: Vec<_> = std::iter::from_fn(|| try_take(&q)).map(|j| j.1).collect();
        assert_eq!(order, ["a1", "b1", "c1", "a2", "b2", "a3"]);
    }

    #[test]
    fn the_last_free_worker_is_kept_for_an_owner_not_being_served() {
        // Two workers: one takes a job of owner 1; the other (the last
        // free one) may not take owner 1's next, but may take owner 2's.
        let q = queue(64, 2);
        q.push((1, "a1")).unwrap();
        q.push((1, "a2")).unwrap();
        assert_eq!(try_take(&q), Some((1, "a1")));
        assert_eq!(try_take(&q), None);
        q.push((2, "b1")).unwrap();
        assert_eq!(try_take(&q), Some((2, "b1")));
        // With a third worker (the pool replaced a held one), owner 1 may
        // have its second: one stays free.
        q.workers.running.store(4, Ordering::Relaxed);
        assert_eq!(try_take(&q), Some((1, "a2")));
        // Done, owner 1 is served again like anyone.
        q.done(&(1, "a1"));
        q.done(&(1, "a2"));
        q.done(&(2, "b1"));
        q.workers.running.store(1, Ordering::Relaxed);
        q.push((1, "a3")).unwrap();
        assert_eq!(try_take(&q), Some((1, "a3")));
    }

    #[test]
    fn one_owner_has_at_most_per_owner_in_progress() {
        let counts = Arc::new(WorkerCounts::default());
        counts.running.store(16, Ordering::Relaxed);
        let q = FairQueue::new(64, 3, counts, |j: &Job| j.0);
        for _ in 0..5 {
            q.push((1, "a")).unwrap();
        }
        for _ in 0..3 {
            assert_eq!(try_take(&q), Some((1, "a")));
        }
        assert_eq!(
            try_take(&q),
            None,
            "13 workers free, but 3 is owner 1's share"
        );
        q.push((2, "b")).unwrap();
        assert_eq!(try_take(&q), Some((2, "b")));
        q.done(&(1, "a"));
        assert_eq!(try_take(&q), Some((1, "a")));
    }

    #[test]
    fn one_owner_fills_a_quarter_of_the_room_at_most() {
        let q = queue(8, 4);
        assert_eq!(q.push((1, "a")), Ok(()));
        assert_eq!(q.push((1, "a")), Ok(()));
        assert_eq!(q.push((1, "a")), Err(Full::Owner));
        for o in 2..5 {
            q.push((o, "x")).unwrap();
            q.push((o, "x")).unwrap();
        }
        assert_eq!(q.push((9, "x")), Err(Full::All));
    }

    #[test]
    fn a_waiting_worker_takes_a_job_once_another_is_done() {
        let q = Arc::new(queue(64, 2));
        q.push((1, "a1")).unwrap();
        q.push((1, "a2")).unwrap();
        let first = q.take().unwrap();
        let waiter = std::thread::spawn({
            let q = q.clone();
            move || q.take()
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "owner 1 holds one of two workers");
        q.done(&first);
        assert_eq!(waiter.join().unwrap(), Some((1, "a2")));
    }

    #[test]
    fn closed_it_gives_what_is_left_then_none() {
        let q = queue(64, 1);
        q.push((1, "a1")).unwrap();
        q.push((1, "a2")).unwrap();
        let _held = q.take().unwrap();
        q.close();
        assert_eq!(q.take(), Some((1, "a2")));
        assert_eq!(q.take(), None);
    }
}
