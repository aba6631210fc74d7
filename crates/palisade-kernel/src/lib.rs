//! Palisade's interface to the Linux kernel: the only crate of the workspace
//! that contains `unsafe` (each block carries a `// SAFETY:` comment).
//!
//! It reports facts and executes orders; it holds **no policy**. Two
//! mechanisms, used together by the agent:
//!
//! - [`fanotify`]: permission events. The kernel stops a process that opens
//!   (`FAN_OPEN_PERM`) or execs (`FAN_OPEN_EXEC_PERM`) a file on a marked
//!   filesystem until the agent answers allow or deny, and lets the agent
//!   cache an allow in the kernel as an inode *ignore mark*.
//! - [`guard`]: a BPF LSM program that denies executable *mappings* of files
//!   that the agent has not approved, which fanotify cannot see.
//!
//! And [`sched`], so that the agent's background threads can leave a
//! real-time scheduling policy they inherited; [`writers`], whether anyone
//! holds a file open for writing; [`mapped`], a large file's bytes read in
//! place from the page cache (for its hash), safe against the file
//! shrinking meanwhile.
//!
//! # What each hook catches
//!
//! | how code gets loaded | caught by |
//! |----------------------|-----------|
//! | `execve`/`execveat` of a binary | fanotify `FAN_OPEN_EXEC_PERM`; guard `bprm_check_security` + `mmap_file` |
//! | the ELF interpreter (`PT_INTERP`, ld.so) opened by the kernel | fanotify `FAN_OPEN_EXEC_PERM`; guard `mmap_file` |
//! | a script run through its shebang (`./x.sh`), and its interpreter | fanotify `FAN_OPEN_EXEC_PERM` (script and interpreter); guard `bprm_check_security` |
//! | shared libraries loaded by ld.so, `dlopen`, `LD_PRELOAD`, `LD_LIBRARY_PATH` | fanotify `FAN_OPEN_PERM` (a plain open: the agent must judge it as code), guard `mmap_file` (`PROT_EXEC`) |
//! | `ld.so ./program` (the loader run directly on a file) | fanotify `FAN_OPEN_PERM`; guard `mmap_file` |
//! | `mprotect(PROT_EXEC)` on a file mapping | guard `file_mprotect` |
//! | `memfd_create` + `fexecve`, or an executable memfd mapping | guard `bprm_check_security` / `mmap_file` with `block_memfd_exec` |
//! | a program on a filesystem mounted inside a user namespace (`unshare -Urm`, then `mount -t tmpfs`) | guard `bprm_check_security` / `mmap_file` / `file_mprotect` with `block_userns_fs` (fanotify cannot mark what the agent cannot see) |
//! | a script handed to an interpreter (`bash x.sh`, `python x.py`) | fanotify `FAN_OPEN_PERM` only: the agent must recognise interpreters |
//!
//! **Not caught** by this crate: code that never comes from a file —
//! anonymous `PROT_EXEC`/RWX memory (JITs, shellcode, `mprotect` of anonymous
//! memory is deliberately allowed), `bash -c "$(cat file)"`, `python -c`,
//! `eval`, code piped to an interpreter's stdin, and interpreters reading
//! scripts that are not files (`curl … | sh`). Files on filesystems the agent
//! does not mark/watch (except, with the guard, those of user namespaces). Rewriting the content of a library that a process
//! *already* mapped (in-place writes reach existing `MAP_PRIVATE` pages; the
//! guard only judges new mappings, and exec'd binaries are protected by
//! `ETXTBSY` but libraries are not). Keys are `(i_sb->s_dev, i_ino)`, which
//! differ from `stat(2)` on btrfs subvolumes and overlayfs: the guard cannot
//! be keyed correctly there.
//!
//! # Cache coherence: ignore marks and the `allowed` map
//!
//! The agent keeps two kernel-side caches of "this inode is approved code":
//! fanotify ignore marks ([`fanotify::Fanotify::ignore_inode`]; with one, the
//! kernel no longer asks about opens of the inode) and the guard's `allowed`
//! map ([`guard::ExecGuard::allow`]; without an entry, executable mappings of
//! the inode are denied). They are invalidated by different kernel events, so
//! the agent must keep these rules:
//!
//! 1. **Whenever the agent sets an ignore mark for an inode it must already
//!    have `allow`ed that inode** in the guard. Once the mark exists the agent
//!    is no longer asked, so it would never get the chance to allow it later;
//!    the next `dlopen` of that file would be denied.
//! 2. **Whenever the guard reports a denial for an inode the agent believes
//!    allowed, the agent must [`flush_inode_marks`](fanotify::Fanotify::flush_inode_marks)**
//!    (and forget its own cached verdict), so that the next open asks again
//!    and the agent re-hashes the file. This happens when the guard dropped
//!    the inode from `allowed` but the ignore mark survived — a write through
//!    a shared writable mapping clears no ignore mark (see the table in
//!    [`fanotify`]).
//! 3. On a [`guard::GuardEventKind::Invalidated`] event the agent must forget
//!    its verdict for the inode; flushing the ignore marks at that point too
//!    is cheap (writes to approved code are rare) and avoids rule 2's one
//!    denied load.
//! 4. The agent answers a permission event only after the guard update it
//!    depends on (`allow` before `Response::Allow`), and answers every event
//!    exactly once before closing its fd (see [`fanotify`]).
//!
//! Both caches live exactly as long as the objects that own them: dropping
//! the [`fanotify::Fanotify`] group drops its marks, dropping the
//! [`guard::ExecGuard`] detaches the programs and frees their maps. Nothing is
//! pinned, so an agent restart starts with both caches empty.
//!
//! # Errors
//!
//! Every fallible call returns [`Error`], which names the failing operation,
//! carries the errno when the kernel gave one, and classifies the failure as
//! an [`ErrorKind`] — in particular [`ErrorKind::Unsupported`] when the
//! running kernel lacks fanotify permission events or a usable BPF LSM, so
//! the agent can degrade instead of failing. Kernel input (event buffers,
//! ring-buffer records) is parsed defensively: malformed records are skipped
//! and counted, never trusted, never a panic.

#![deny(missing_docs)]

mod error;
pub mod fanotify;
pub mod guard;
pub mod mapped;
pub mod sched;
pub mod stop;
pub mod writers;

pub use error::{Error, ErrorKind, Result};
pub use stop::Stop;
