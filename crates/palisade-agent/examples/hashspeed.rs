//! SHA-256 of a file the way the agent hashes it, against `sha2` over the
//! same bytes already in memory: `cargo run --release -p palisade-agent
//! --example hashspeed -- FILE [ROUNDS]`.
use sha2::Digest;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: hashspeed FILE [ROUNDS]");
    let rounds: usize = args.next().map_or(9, |r| r.parse().expect("ROUNDS"));
    let bytes = std::fs::read(&path).expect("read");
    let file = std::fs::File::open(&path).expect("open");
    let mut agent = Vec::new();
    let mut memory = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let a = palisade_agent::files::hash(&file).expect("hash");
        agent.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let m = sha2::Sha256::digest(&bytes);
        memory.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(a.to_string(), hex(&m));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, m) = (median(&mut agent), median(&mut memory));
    let mb = bytes.len() as f64 / 1e6;
    println!(
        "{mb:.1} MB: agent (files::hash) {a:.2} ms ({:.2} GB/s), sha2 in memory {m:.2} ms ({:.2} GB/s), ratio {:.3}",
        mb / a,
        mb / m,
        a / m
    );
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
