//! Event reporting that never slows a decision: the decision path hands an
//! event to a bounded queue (never waiting), a spool thread writes batches to
//! the on-disk [`Spool`], and the uploader sends them to the service.
use crate::store::Spool;
use palisade_core::FileEvent;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The decision path's handle for reporting events.
#[derive(Clone)]
pub struct Reporter {
    tx: crossbeam_channel::Sender<FileEvent>,
    dropped: Arc<AtomicU64>,
    spool: Arc<Spool>,
}

impl Reporter {
    /// Start the spool thread. `written` is called after each batch is on
    /// disk (to wake the uploader).
    pub fn start(spool: Arc<Spool>, written: Arc<dyn Fn() + Send + Sync>) -> Reporter {
        let (tx, rx) = crossbeam_channel::bounded::<FileEvent>(65_536);
        std::thread::Builder::new()
            .name("palisade-spool".into())
            .spawn({
                let spool = spool.clone();
                move || spool_loop(&spool, &rx, &*written)
            })
            .expect("spawn spool thread");
        Reporter {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            spool,
        }
    }

    /// Queue an event. Never blocks: if the queue is full the event is
    /// counted as dropped.
    pub fn report(&self, event: FileEvent) {
        if self.tx.try_send(event).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!("event queue full: {n} events dropped so far");
            }
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events that will not reach the service: dropped (queue full, since
    /// the agent started) and set aside (refused by the service, kept on
    /// disk).
    pub fn losses(&self) -> palisade_api::agent::EventLosses {
        palisade_api::agent::EventLosses {
            dropped: self.dropped(),
            set_aside: self.spool.set_aside_count(),
        }
    }

    /// Wait until the queue is empty (written to the spool), at most `max`.
    pub fn flush(&self, max: Duration) {
        let end = std::time::Instant::now() + max;
        while !self.tx.is_empty() && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Let the spool thread finish the batch it took.
        std::thread::sleep(Duration::from_millis(30));
    }
}

fn spool_loop(spool: &Spool, rx: &crossbeam_channel::Receiver<FileEvent>, written: &dyn Fn()) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        let until = std::time::Instant::now() + Duration::from_millis(10);
        while batch.len() < 500 {
            match rx.recv_deadline(until) {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let mut tries = 0;
        loop {
            match spool.push(&batch) {
                Ok(()) => break,
                Err(e) if tries < 3 => {
                    tries += 1;
                    tracing::warn!("event spool write failed (retrying): {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    tracing::error!("event spool write failed; {} events lost: {e}", batch.len());
                    break;
                }
            }
        }
        written();
    }
}
