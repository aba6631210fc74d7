//! Hashing a large file, the cost of a first exec of a large binary:
//! `cargo bench -p palisade-agent --bench hash`.
//!
//! Writes a 64 MiB file (`HASH_MIB` to change it) in `HASH_DIR` (default
//! `/dev/shm`, a tmpfs: the page cache alone, no disk) and, in interleaved
//! rounds, times:
//! - `mapped`: [`files::hash`], which reads the file in place through a
//!   mapping (`palisade_kernel::mapped`);
//! - `pread pipeline`: [`files::hash_pipelined`], its fallback and the way
//!   the agent hashed before (one thread copies 256 KiB chunks with `pread`
//!   while the other hashes);
//! - `in cache`: SHA-256 of a 256 KiB buffer hashed over and over, as many
//!   bytes: the speed of the hash alone, the floor of the other two.
//!
//! Prints the median of each and its ratio to the floor.
use palisade_agent::files;
use sha2::Digest;
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = std::env::var("HASH_DIR").unwrap_or_else(|_| "/dev/shm".into());
    let mib: usize = std::env::var("HASH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let rounds: usize = std::env::var("HASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(21);
    let len = mib << 20;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut file = tempfile::tempfile_in(&dir).expect("a temporary file in HASH_DIR");
    file.write_all(&data).expect("write");
    let want = palisade_core::Sha256::from_bytes(sha2::Sha256::digest(&data).into());
    drop(data);
    let block = vec![0x5au8; 256 << 10];

    let (mut mapped, mut piped, mut cached) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        assert_eq!(files::hash(&file).expect("mapped"), want);
        mapped.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(
            files::hash_pipelined(std::os::fd::AsFd::as_fd(&file), &|| false).expect("pread"),
            want
        );
        piped.push(t.elapsed());
        let t = Instant::now();
        let mut h = sha2::Sha256::new();
        for _ in 0..len / block.len() {
            h.update(black_box(&block));
        }
        black_box(h.finalize());
        cached.push(t.elapsed());
    }
    let floor = median(cached);
    println!("SHA-256 of a {mib} MiB file in {dir}, medians of {rounds} interleaved rounds:");
    for (name, d) in [
        ("mapped", median(mapped)),
        ("pread pipeline", median(piped)),
        ("in cache", floor),
    ] {
        println!(
            "  {name:<15} {:>7.1} ms  {:>5.2} GB/s  {:.3}x the hash in cache",
            d.as_secs_f64() * 1e3,
            len as f64 / d.as_secs_f64() / 1e9,
            d.as_secs_f64() / floor.as_secs_f64()
        );
    }
}
