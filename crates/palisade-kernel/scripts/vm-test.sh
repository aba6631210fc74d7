#!/usr/bin/env bash
# Runs palisade-kernel's integration tests as root inside a throw-away QEMU
# VM booted on a stock Debian kernel with `lsm=...,bpf`.
#
# Why: some kernels (the project's CI VM among them) have CONFIG_BPF_LSM=y
# and `bpf` in the LSM list but refuse to load BPF LSM programs (EPERM before
# verification), so the guard tests skip there. This script gives them a
# kernel that runs them.
#
# Usage (as root, from anywhere in the workspace):
#   crates/palisade-kernel/scripts/vm-test.sh [TEST-FILTER...]   # default: all tests
# Environment:
#   KERNEL_PKG  Debian kernel package to boot (default: what linux-image-amd64
#               depends on, e.g. linux-image-6.1.0-56-amd64; linux-image-6.12.*
#               exercises the file_truncate hook too)
#   VM_ACCEL    QEMU accelerator (default: tcg; kvm is faster where nested
#               virtualisation works)
# Exit status: 0 passed, 1 tests failed, 2 set-up error, 77 kernel package
# unavailable (skipped).
#   VM_PACKAGE  which crate's `it` test binary to run (default: palisade-kernel;
#               palisade runs the end-to-end suite through the guard)
# The guest gets PALISADE_TIME_SCALE=4 under tcg (1 otherwise): the tests
# with a wall-clock bound from the issues scale it, since an emulated run
# measures the emulator. The native run of the same tests keeps the bound.
#
# The host filesystem is shared read-only (9p); the guest's /tmp is a tmpfs.
# Installs qemu-system-x86 and busybox-static with apt-get if missing, and
# downloads (not installs) the kernel package into a temp dir.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "vm-test.sh: must run as root" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
workspace="$(cd "$here/../../.." && pwd)"

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v xz >/dev/null || need+=(xz-utils)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

work="$(mktemp -d /tmp/palisade-vm.XXXXXX)"
trap 'rm -rf "$work"' EXIT

pkg="${KERNEL_PKG:-$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')}"
echo "vm-test: kernel package $pkg"
# Exit 77 ("skipped") when the kernel package cannot be fetched: that is the
# mirror, not the code under test.
fetched=0
for attempt in 1 2 3; do
    if (cd "$work" && apt-get download "$pkg" >/dev/null 2>&1); then fetched=1; break; fi
    sleep $((attempt * 5))
done
[ "$fetched" = 1 ] || { echo "vm-test: apt-get download $pkg failed (3 attempts)" >&2; exit 77; }
dpkg -x "$work"/*.deb "$work/root"
kver="$(ls "$work/root/lib/modules")"
vmlinuz="$work/root/boot/vmlinuz-$kver"
moddir="$work/root/lib/modules/$kver/kernel"

# Modules for a 9p root over virtio, in dependency order (whatever is
# built in is simply not found and skipped).
init="$work/initramfs"
mkdir -p "$init"/{bin,dev,proc,sys,newroot,mods}
cp /bin/busybox "$init/bin/"
for a in sh mount insmod switch_root cat sleep dmesg; do ln -s busybox "$init/bin/$a"; done
order=()
add_module() {
    local name="$1" file dep
    for m in "${order[@]}"; do [ "$m" = "$name" ] && return 0; done
    file="$(find "$moddir" \( -name "$name.ko" -o -name "$name.ko.xz" \) | head -1)"
    [ -n "$file" ] || return 0
    case "$file" in
        *.xz) xz -dc "$file" > "$init/mods/$name.ko" ;;
        *) cp "$file" "$init/mods/$name.ko" ;;
    esac
    for dep in $(strings "$init/mods/$name.ko" | sed -n 's/^depends=//p' | tr ',' ' '); do
        add_module "${dep//-/_}"
    done
    order+=("$name")
}
for m in virtio_pci 9pnet_virtio 9p; do add_module "$m"; done
echo "vm-test: modules ${order[*]}"

export package="${VM_PACKAGE:-palisade-kernel}"
test_bin="$(cd "$workspace" && cargo test -p "$package" --test it --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import os, sys, json
for line in sys.stdin:
    try:
        j = json.loads(line)
    except ValueError:
        continue
    if j.get("reason") == "compiler-artifact" and j.get("executable") \
            and j["target"]["name"] == "it" and "/" + os.environ["package"] + "#" in j["package_id"]:
        print(j["executable"])
')"
[ -n "$test_bin" ] || { echo "vm-test: could not build the test binary" >&2; exit 2; }

# Software emulation (tcg) runs the guest several times slower than native;
# the few tests with a wall-clock bound scale it by this (see
# crates/palisade/tests/it/harness.rs time_scale). The native run keeps the
# bounds as the issues state them.
if [ "${VM_ACCEL:-tcg}" = tcg ]; then time_scale=4; else time_scale=1; fi
cat > "$init/guest.sh" <<EOF
cd /tmp && export HOME=/tmp PATH=/usr/sbin:/usr/bin:/sbin:/bin PALISADE_REQUIRE_GUARD=1 PALISADE_TIME_SCALE=$time_scale
ip link set lo up 2>/dev/null || true
uname -r
$test_bin --test-threads=1 $*
EOF

cat > "$init/init" <<EOF
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in ${order[*]}; do insmod /mods/\$m.ko || echo "insmod \$m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /newroot || echo "9p mount failed"
mount -t tmpfs tmpfs /newroot/tmp
cat /guest.sh > /newroot/tmp/guest.sh
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mount -t securityfs securityfs /newroot/sys/kernel/security
echo "guest lsm: \$(cat /newroot/sys/kernel/security/lsm)"
# switch_root, not chroot: a chrooted process may not create a user
# namespace (EPERM), which the tests of filesystems mounted inside one need.
# It runs the tests as PID 1 of the new root, so that one powers off too.
exec switch_root /newroot /bin/sh -c '/bin/sh /tmp/guest.sh; echo "GUEST EXIT: \$?"; echo o > /proc/sysrq-trigger; while :; do :; done'
EOF
chmod +x "$init/init"
(cd "$init" && find . | busybox cpio -o -H newc 2>/dev/null | gzip > "$work/initrd.gz")

log="$work/console.log"
timeout 900 qemu-system-x86_64 -accel "${VM_ACCEL:-tcg}" -cpu max -m 3G -smp 2 \
    -kernel "$vmlinuz" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 lsm=lockdown,capability,landlock,bpf panic=-1 quiet" \
    -nographic -no-reboot \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    2>&1 | tee "$log" | sed -n '/guest lsm:/,$p'
status="$(sed -n 's/^GUEST EXIT: \([0-9]*\).*/\1/p' "$log" | tail -1)"
[ "$status" = 0 ] || { echo "vm-test: guest tests failed (exit ${status:-none})" >&2; exit 1; }
