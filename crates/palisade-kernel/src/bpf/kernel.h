/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The few kernel types and BPF helpers guard.bpf.c needs, written by hand.
 *
 * Only the fields the program reads are declared. Every struct carries
 * preserve_access_index, so clang emits CO-RE relocations for each field
 * access and the loader (aya-obj) rewrites the offsets at load time from the
 * running kernel's BTF (/sys/kernel/btf/vmlinux). Field *names* must match the
 * kernel's; order and offsets here do not matter. Checked against 6.18:
 *   struct file      { f_mode; f_mapping; f_inode; union { f_path; ... } }
 *   struct inode     { i_sb; i_ino; i_writecount (atomic_t); i_mapping }
 *   struct address_space { i_mmap_writable (atomic_t) }
 *   struct dentry    { union { d_name; ... }; d_inode }
 *   struct vm_area_struct { union { vm_flags; ... }; vm_file }
 *   struct linux_binprm { file }
 * No vmlinux.h is generated at build time, so the object does not depend on
 * the kernel of the build machine.
 */
#ifndef PALISADE_KERNEL_H
#define PALISADE_KERNEL_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed int __s32;
typedef signed long long __s64;

typedef __u32 dev_t;

typedef struct {
	int counter;
} atomic_t;

#define __core __attribute__((preserve_access_index))

struct user_namespace {
	int level;
} __core;

struct super_block {
	dev_t s_dev;
	struct user_namespace *s_user_ns;
} __core;

struct address_space {
	atomic_t i_mmap_writable;
} __core;

struct inode {
	struct super_block *i_sb;
	unsigned long i_ino;
	atomic_t i_writecount;
	struct address_space *i_mapping;
} __core;

struct qstr {
	const unsigned char *name;
} __core;

struct dentry {
	struct qstr d_name;
	struct inode *d_inode;
} __core;

struct path {
	struct dentry *dentry;
} __core;

struct file {
	unsigned int f_mode;
	struct address_space *f_mapping;
	struct inode *f_inode;
	struct path f_path;
} __core;

struct vm_area_struct {
	unsigned long vm_flags;
	struct file *vm_file;
} __core;

struct linux_binprm {
	struct file *file;
} __core;

/* ---- BPF plumbing (the subset of libbpf's bpf_helpers.h we use) ---- */

#define SEC(name) __attribute__((section(name), used))
#define __always_inline inline __attribute__((always_inline))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_RINGBUF 27
#define BPF_F_NO_PREALLOC 1

/* Helper ids from include/uapi/linux/bpf.h (stable ABI). */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static __u64 (*bpf_get_current_uid_gid)(void) = (void *)15;
static long (*bpf_get_current_comm)(void *buf, __u32 size) = (void *)16;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) = (void *)113;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;

/* ---- constants from the kernel's ABI ---- */

#define EPERM 1

#define PROT_WRITE 0x2
#define PROT_EXEC 0x4
#define MAP_SHARED 0x01
#define MAP_SHARED_VALIDATE 0x03
#define MAP_TYPE 0x0f

#define VM_WRITE 0x00000002UL
#define VM_EXEC 0x00000004UL
#define VM_SHARED 0x00000008UL
#define VM_MAYWRITE 0x00000020UL

#define FMODE_WRITE 0x2
#define MAY_WRITE 0x2

#endif
