//! Compiles the BPF LSM guard (`src/bpf/guard.bpf.c`) with clang into
//! `$OUT_DIR/guard.bpf.o`, which `src/guard.rs` embeds with `include_bytes!`.
//!
//! The object carries BTF and CO-RE relocations (`-g` plus the
//! `preserve_access_index` structs of `src/bpf/kernel.h`); it is relocated
//! against the running kernel's BTF at load time, so nothing here depends on
//! the kernel of the build machine. Set `CLANG` to use another clang binary.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src = manifest.join("src/bpf/guard.bpf.c");
    let header = manifest.join("src/bpf/kernel.h");
    let obj = out_dir.join("guard.bpf.o");

    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = env::var_os("CLANG").unwrap_or_else(|| "clang".into());
    let output = Command::new(&clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg("-I")
        .arg(manifest.join("src/bpf"))
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output();
    match output {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "clang failed to compile {} ({}):\n{}{}",
            src.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "palisade-kernel needs clang to compile its BPF program, and `{}` was not found: \
             install clang (Debian: apt-get install clang), or set CLANG to its path",
            clang.to_string_lossy()
        ),
        Err(err) => panic!("could not run `{}`: {err}", clang.to_string_lossy()),
    }
}
