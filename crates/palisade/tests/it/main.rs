//! The `palisade` binary end to end. Tests marked by `require_root!` need
//! root (fanotify, BPF LSM, mounting their own tmpfs); CI runs them as root.

// The harness is shared by the test modules; `pub` there means "for the
// other test modules", which is what `unreachable_pub` cannot see.
#![allow(unreachable_pub)]

mod access;
mod approval;
mod cli;
mod enforcement;
mod fleet;
mod harness;
mod local;
mod scheduling;
mod up;
