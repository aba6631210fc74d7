//! The `palisade` binary end to end. Tests marked by `require_root!` need
//! root (fanotify, BPF LSM, mounting their own tmpfs); CI runs them as root.
mod cli;
mod enforcement;
mod fleet;
mod harness;
