//! Authorization cost of one admin API request: `cargo bench -p
//! palisade-server --bench authz` (PostgreSQL too when
//! `PALISADE_TEST_POSTGRES` is set: `source scripts/postgres.sh` first).
//!
//! One organization with 1,000 admins holding 10,000 grants (built-in and
//! custom roles, organization- and policy-scoped) over 50 policies. One
//! request is what the admin API does before a handler runs: look the
//! bearer token up with the admin, the organization's conditions and the
//! stamps of the admin's grants and roles (one query), take the grants from
//! memory when the stamps match (else read them: a second query), then
//! decide with Cedar. Requests go to random admins, permissions and
//! targets, one at a time. Prints the median and p99 per request, and the
//! same with the database part alone as a baseline.
use palisade_authz::{Authorizer, Op, Permission, Resource};
use palisade_server::Db;
use std::time::{Duration, Instant};

const ADMINS: usize = 1_000;
const GRANTS_PER_ADMIN: usize = 10;
const POLICIES: usize = 50;
const REQUESTS: usize = 5_000;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

async fn run(label: &str, url: &str) {
    let db = Db::connect(url).await.expect("connect");
    let org = palisade_core::Name::parse("bench").expect("name");
    palisade_server::bootstrap(
        &db,
        &org,
        &palisade_core::Name::parse("root").expect("name"),
    )
    .await
    .expect("bootstrap");
    let org_id = palisade_server::bench::org_id(&db, "bench").await;
    let t0 = Instant::now();
    let (tokens, policies) =
        palisade_server::bench::seed(&db, org_id, ADMINS, GRANTS_PER_ADMIN, POLICIES)
            .await
            .expect("seed");
    let seeded = t0.elapsed();
    let grants = palisade_server::bench::grant_count(&db).await;
    let authorizer = Authorizer::new();
    let perms: Vec<Permission> = Permission::all().collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as usize
    };
    let mut full = Vec::with_capacity(REQUESTS);
    let mut allowed = 0usize;
    // Warm the pool, the statement caches and every admin's grants (the
    // steady state: grants are read again only after they change, measured
    // below as "grants just changed").
    for t in &tokens {
        let _ = palisade_server::bench::authorize(
            &db,
            &authorizer,
            t,
            Permission::new(Resource::Files, Op::Read),
            None,
        )
        .await;
    }
    for _ in 0..REQUESTS {
        let token = &tokens[next() % tokens.len()];
        let perm = perms[next() % perms.len()];
        let policy = (next() % 4 != 0).then(|| policies[next() % policies.len()]);
        let t = Instant::now();
        let ok = palisade_server::bench::authorize(&db, &authorizer, token, perm, policy)
            .await
            .expect("authorize");
        full.push(t.elapsed());
        allowed += usize::from(ok);
    }
    let mut load_only = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let token = &tokens[next() % tokens.len()];
        let t = Instant::now();
        palisade_server::bench::load_only(&db, token).await;
        load_only.push(t.elapsed());
    }
    let mut ping = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let t = Instant::now();
        palisade_server::bench::ping(&db).await;
        ping.push(t.elapsed());
    }
    // Last, since it empties the cache: every request reads the grants.
    let mut changed = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let token = &tokens[next() % tokens.len()];
        let perm = perms[next() % perms.len()];
        let policy = (next() % 4 != 0).then(|| policies[next() % policies.len()]);
        palisade_server::bench::forget_grants(&db);
        let t = Instant::now();
        palisade_server::bench::authorize(&db, &authorizer, token, perm, policy)
            .await
            .expect("authorize");
        changed.push(t.elapsed());
    }
    let mut native = Vec::new();
    if url.starts_with("postgres") {
        // Configured as the server's pool is: no ping before each query.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .test_before_acquire(false)
            .connect(url)
            .await
            .expect("native pool");
        for t in tokens.iter().take(50) {
            palisade_server::bench::native_postgres_query(&pool, t).await;
        }
        for _ in 0..REQUESTS {
            let token = &tokens[next() % tokens.len()];
            let t = Instant::now();
            let rows = palisade_server::bench::native_postgres_query(&pool, token).await;
            native.push(t.elapsed());
            assert!(rows > 0, "the native query finds the token");
        }
        native.sort();
    }
    ping.sort();
    full.sort();
    changed.sort();
    load_only.sort();
    println!(
        "{label}: {ADMINS} admins, {grants} grants, {POLICIES} policies (seeded in {:.1} s); \
         {REQUESTS} requests, {:.0}% allowed",
        seeded.as_secs_f64(),
        allowed as f64 * 100.0 / REQUESTS as f64
    );
    println!(
        "  per request (credential, admin, conditions, grant stamps; Cedar):      median {:.1} µs, p99 {:.1} µs",
        pct(&full, 0.5),
        pct(&full, 0.99)
    );
    println!(
        "  the same, grants just changed (read again: a second query):           median {:.1} µs, p99 {:.1} µs",
        pct(&changed, 0.5),
        pct(&changed, 0.99)
    );
    println!(
        "  database part alone (baseline):                                       median {:.1} µs, p99 {:.1} µs",
        pct(&load_only, 0.5),
        pct(&load_only, 0.99)
    );
    println!(
        "  SELECT 1 through the same pool (round-trip floor):                    median {:.1} µs, p99 {:.1} µs",
        pct(&ping, 0.5),
        pct(&ping, 0.99)
    );
    if !native.is_empty() {
        println!(
            "  the same query, sqlx native PostgreSQL driver:                        median {:.1} µs, p99 {:.1} µs",
            pct(&native, 0.5),
            pct(&native, 0.99)
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/bench.db?mode=rwc", dir.path().display());
        run("SQLite", &url).await;
        match std::env::var("PALISADE_TEST_POSTGRES") {
            Ok(base) => {
                let name = palisade_server::bench::fresh_postgres(&base).await;
                let url = palisade_server::bench::postgres_url(&base, &name);
                run("PostgreSQL", &url).await;
                if std::env::var_os("PALISADE_BENCH_KEEP").is_some() {
                    println!("kept database {name}");
                } else {
                    palisade_server::bench::drop_postgres(&base, &name).await;
                }
            }
            Err(_) => println!("PostgreSQL: skipped (PALISADE_TEST_POSTGRES is not set)"),
        }
    });
}
