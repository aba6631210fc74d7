//! Hashing a file, the cost a first exec pays for it:
//! `cargo bench -p palisade-agent --bench hash`.
//!
//! For each size in `HASH_MIB` (MiB, comma-separated; default `1,4,8,64`)
//! writes a file in `HASH_DIR` (default `/dev/shm`, a tmpfs: the page cache
//! alone, no disk) and, in `HASH_ROUNDS` interleaved rounds (default 21),
//! times the agent's ways of hashing it:
//! - `buffered`: [`files::hash_buffered`], `pread` a MiB at a time into one
//!   buffer: what [`files::hash`] does up to [`files::IN_PLACE_ABOVE`];
//! - `mapped`: [`files::hash_in_place`], reading the file in place through a
//!   mapping (`palisade_kernel::mapped`): what it does above;
//! - `pread pipeline`: [`files::hash_pipelined`], the fallback when the
//!   mapping is unavailable (one thread copies 256 KiB chunks with `pread`
//!   while the other hashes);
//! - `in cache`: SHA-256 of a 256 KiB buffer hashed over and over, as many
//!   bytes: the speed of the hash alone, the floor of the others.
//!
//! Prints the median of each and its ratio to the floor; the one
//! [`files::hash`] uses at that size is marked `*`.
use palisade_agent::files;
use sha2::Digest;
use std::hint::black_box;
use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{name}={s:?} is not a valid value")),
        Err(_) => default,
    }
}

/// Deterministic bytes that do not compress or repeat.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn main() {
    let dir = std::env::var("HASH_DIR").unwrap_or_else(|_| "/dev/shm".into());
    let sizes: Vec<usize> = std::env::var("HASH_MIB")
        .unwrap_or_else(|_| "1,4,8,64".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or_else(|| panic!("HASH_MIB: {s:?} is not a size in MiB"))
        })
        .collect();
    let rounds: usize = env_or("HASH_ROUNDS", 21);
    assert!(rounds > 0, "HASH_ROUNDS must be at least 1");
    for mib in sizes {
        bench_size(&dir, mib, rounds);
    }
}

fn bench_size(dir: &str, mib: usize, rounds: usize) {
    let len = mib << 20;
    let data = noise(len);
    let mut file = tempfile::tempfile_in(dir).expect("a temporary file in HASH_DIR");
    file.write_all(&data).expect("write");
    let want = palisade_core::Sha256::from_bytes(sha2::Sha256::digest(&data).into());
    drop(data);
    let block = vec![0x5au8; 256 << 10];
    let fd = file.as_fd();
    let never = || false;

    let (mut buffered, mut mapped, mut piped, mut cached) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        assert_eq!(files::hash_buffered(fd, &never).expect("buffered"), want);
        buffered.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(
            files::hash_in_place(fd, len as u64, &never).expect("mapped"),
            want
        );
        mapped.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(files::hash_pipelined(fd, &never).expect("pread"), want);
        piped.push(t.elapsed());
        let t = Instant::now();
        let mut h = sha2::Sha256::new();
        let mut left = len;
        while left > 0 {
            let n = left.min(block.len());
            h.update(black_box(&block[..n]));
            left -= n;
        }
        black_box(h.finalize());
        cached.push(t.elapsed());
    }
    let floor = median(cached);
    let in_place = len as u64 > files::IN_PLACE_ABOVE;
    println!("SHA-256 of a {mib} MiB file in {dir}, medians of {rounds} interleaved rounds:");
    for (name, used, d) in [
        ("buffered", !in_place, median(buffered)),
        ("mapped", in_place, median(mapped)),
        ("pread pipeline", false, median(piped)),
        ("in cache", false, floor),
    ] {
        println!(
            "  {name:<15} {:>8.2} ms  {:>5.2} GB/s  {:.3}x the hash in cache{}",
            d.as_secs_f64() * 1e3,
            len as f64 / d.as_secs_f64() / 1e9,
            d.as_secs_f64() / floor.as_secs_f64(),
            if used { "  *" } else { "" }
        );
    }
}
