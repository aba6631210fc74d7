//! palisade-kernel's integration tests. The root-only ones (all of them, in
//! practice) skip with a message when not run as root; CI runs them as root.
//! Each mounts its own tmpfs and marks or watches only that.

mod fanotify;
mod guard;
mod support;
