//! [`Stop`]: a stop request that a thread blocked in `poll(2)` sees at once.
//!
//! The agent's loops wait on a descriptor (a fanotify group, the guard's ring
//! buffer). Waking them on a timer only to look at a stop flag costs every
//! host a steady trickle of wake-ups while nothing happens (on a VM, each one
//! a halted vCPU woken). Instead each loop polls its descriptor together with
//! this one, an `eventfd` that becomes readable, and stays readable, once a
//! stop is requested: an idle loop sleeps until there is work or a stop.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A one-way stop signal shared by the threads of one agent.
#[derive(Debug)]
pub struct Stop {
    requested: AtomicBool,
    fd: OwnedFd,
}

impl Stop {
    /// A signal not yet requested.
    ///
    /// # Errors
    /// When the kernel refuses an `eventfd` (descriptor limit).
    pub fn new() -> std::io::Result<Stop> {
        // SAFETY: no pointers; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Stop {
            requested: AtomicBool::new(false),
            // SAFETY: `fd` was just returned by eventfd(2) and nothing else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Request the stop: every current and future wait returns at once.
    pub fn request(&self) {
        self.requested.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of a live u64. The counter is never read,
        // so it stays non-zero (readable); a failure (a counter at its
        // maximum) leaves it readable as well.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Whether the stop was requested.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Sleep for `d`, or less if the stop is requested meanwhile (a back-off
    /// after an error that does not hold up a shutdown). Returns
    /// [`Stop::requested`].
    pub fn sleep(&self, d: Duration) -> bool {
        let _ = poll_readable_or(self.fd.as_raw_fd(), None, Some(d));
        self.requested()
    }

    /// Wait until `fd` reports an exceptional condition (`POLLPRI`: what
    /// `/proc/self/mountinfo` reports once the mount table changed) or the
    /// stop is requested. `Ok(true)` for the former; `Ok(false)` on a stop
    /// or a signal.
    pub fn wait_priority(&self, fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<bool> {
        let mut pfds = [
            libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLPRI,
                revents: 0,
            },
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `pfds` holds 2 valid pollfds and outlives the call.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::EINTR) {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(!self.requested() && pfds[0].revents & (libc::POLLPRI | libc::POLLERR) != 0)
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// poll(2) for POLLIN on `fd`, and on `stop` if given: `Ok(true)` when `fd`
/// is readable; `Ok(false)` on timeout, on EINTR, or when only `stop` is.
pub(crate) fn poll_readable_or(
    fd: RawFd,
    stop: Option<RawFd>,
    timeout: Option<Duration>,
) -> std::result::Result<bool, i32> {
    let ms: libc::c_int = match timeout {
        None => -1,
        // Round up so that a 100µs timeout still waits, and clamp.
        Some(t) => t
            .as_micros()
            .div_ceil(1000)
            .try_into()
            .unwrap_or(libc::c_int::MAX),
    };
    let entry = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut pfds = [entry(fd), entry(stop.unwrap_or(-1))];
    let n: libc::nfds_t = if stop.is_some() { 2 } else { 1 };
    // SAFETY: `pfds` holds `n` (at most 2) valid pollfds and outlives the call.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), n, ms) };
    if rc < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return if errno == libc::EINTR {
            Ok(false)
        } else {
            Err(errno)
        };
    }
    Ok(pfds[0].revents != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_requested_stop_ends_a_wait_at_once_and_for_good() {
        let stop = std::sync::Arc::new(Stop::new().unwrap());
        assert!(!stop.requested());
        // A wait that nothing ends runs to its timeout.
        let t = Instant::now();
        assert!(!stop.sleep(Duration::from_millis(30)));
        assert!(t.elapsed() >= Duration::from_millis(30));
        // A thread blocked without a timeout is woken by the request.
        let waiter = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (r, w) = pipe();
                let readable = poll_readable_or(r.as_raw_fd(), Some(stop.raw_fd()), None);
                drop(w);
                (readable, stop.requested())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        stop.request();
        assert_eq!(waiter.join().unwrap(), (Ok(false), true));
        assert!(t.elapsed() < Duration::from_secs(1));
        // And every later wait returns at once.
        let t = Instant::now();
        assert!(stop.sleep(Duration::from_secs(5)));
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn the_watched_descriptor_still_reports_readable() {
        let stop = Stop::new().unwrap();
        let (r, w) = pipe();
        // SAFETY: writes one byte from a live buffer to a pipe we own.
        assert_eq!(
            unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) },
            1
        );
        assert_eq!(
            poll_readable_or(r.as_raw_fd(), Some(stop.raw_fd()), None),
            Ok(true)
        );
        stop.request();
        assert_eq!(
            poll_readable_or(r.as_raw_fd(), Some(stop.raw_fd()), None),
            Ok(true)
        );
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both were just created by pipe2 and nothing else owns them.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }
}
