// SPDX-License-Identifier: GPL-2.0-only
/*
 * Palisade exec-mapping guard (BPF LSM).
 *
 * Denies executable file mappings (mmap/mprotect with PROT_EXEC) and execs of
 * files on a *watched* device unless userspace put the file's inode in the
 * `allowed` map, and optionally denies executing or mapping memfd files and
 * files on filesystems mounted inside a user namespace (which the agent
 * cannot see to watch).
 * Keeps `allowed` coherent: any write/truncate/shared-writable-mapping of an
 * allowed file removes its key.
 *
 * Inert by construction for everything else: every hook first checks the
 * cheap conditions (prot bits, mask, config mode), then the `watched` map,
 * and returns 0 (allow) when the file's device is not watched (unless it
 * is a memfd or belongs to a user namespace, and the config says so).
 *
 * Layouts of the maps and of `struct event` are mirrored in src/guard.rs.
 */
#include "kernel.h"

char LICENSE[] SEC("license") = "GPL";

#define MODE_OFF 0
#define MODE_REPORT 1
#define MODE_ENFORCE 2

#define KIND_EXEC_MAPPING 1
#define KIND_MPROTECT 2
#define KIND_MEMFD_EXEC 3
#define KIND_INVALIDATED 4
#define KIND_EXEC 5
#define KIND_USERNS_FS 6

struct config {
	__u32 mode;
	__u32 agent_tgid;
	__u32 block_memfd_exec;
	__u32 block_userns_fs;
};

struct inode_key {
	__u32 dev;
	__u32 pad;
	__u64 ino;
};

struct event {
	__u32 kind;
	__u32 tgid;
	__u32 pid;
	__u32 uid;
	__u32 dev;
	__u32 denied;
	__u64 ino;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} watched SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct inode_key);
	__type(value, __u32);
} allowed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

/* counters[0]: events dropped because the ring buffer was full. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

static __always_inline struct config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

/* Nonzero when this hook must not judge the current task. */
static __always_inline int exempt(const struct config *cfg)
{
	if (!cfg || cfg->mode == MODE_OFF)
		return 1;
	if (cfg->agent_tgid != 0 &&
	    (__u32)(bpf_get_current_pid_tgid() >> 32) == cfg->agent_tgid)
		return 1;
	return 0;
}

static __always_inline void inode_key_of(struct inode *inode, struct inode_key *key)
{
	key->dev = inode->i_sb->s_dev;
	key->pad = 0;
	key->ino = inode->i_ino;
}

static __always_inline void emit(__u32 kind, const struct inode_key *key, __u32 denied)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *dropped = bpf_map_lookup_elem(&counters, &zero);
		if (dropped)
			__sync_fetch_and_add(dropped, 1);
		return;
	}
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	e->kind = kind;
	e->tgid = (__u32)(pid_tgid >> 32);
	e->pid = (__u32)pid_tgid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->dev = key->dev;
	e->denied = denied;
	e->ino = key->ino;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
}

/* The name memfd_create(2) gives its dentry: "memfd:<name>". */
static __always_inline int is_memfd(struct file *file)
{
	char buf[8] = {};
	const unsigned char *name = file->f_path.dentry->d_name.name;
	if (!name || bpf_probe_read_kernel(buf, 6, name) < 0)
		return 0;
	return buf[0] == 'm' && buf[1] == 'e' && buf[2] == 'm' && buf[3] == 'f' &&
	       buf[4] == 'd' && buf[5] == ':';
}

/*
 * The exec rule, for a file about to be executed or mapped executable.
 * Returns 0 (allow) or -EPERM.
 */
static __always_inline int check_exec(struct file *file, __u32 kind, const struct config *cfg)
{
	struct inode_key key;
	struct inode *inode = file->f_inode;

	if (!inode)
		return 0;
	inode_key_of(inode, &key);

	if (bpf_map_lookup_elem(&watched, &key.dev)) {
		int ok = bpf_map_lookup_elem(&allowed, &key) != 0;
		/*
		 * An allowed file that someone holds open for writing, or that has
		 * a shared writable mapping, can change under the mapping without
		 * passing through our invalidation hooks again: not allowed now.
		 */
		if (ok && inode->i_writecount.counter > 0)
			ok = 0;
		if (ok) {
			struct address_space *mapping = file->f_mapping;
			if (mapping && mapping->i_mmap_writable.counter > 0)
				ok = 0;
		}
		if (ok)
			return 0;
		__u32 deny = cfg->mode == MODE_ENFORCE;
		emit(kind, &key, deny);
		return deny ? -EPERM : 0;
	}

	if (is_memfd(file)) {
		if (!cfg->block_memfd_exec)
			return 0;
		__u32 deny = cfg->mode == MODE_ENFORCE;
		emit(KIND_MEMFD_EXEC, &key, deny);
		return deny ? -EPERM : 0;
	}

	/*
	 * A filesystem mounted inside a user namespace (any user may make one,
	 * and mount a tmpfs, FUSE or overlay there) is in no mount table the
	 * agent reads, so it is watched by nobody: code on it is not known.
	 */
	if (cfg->block_userns_fs) {
		struct user_namespace *ns = inode->i_sb->s_user_ns;
		if (ns && ns->level > 0) {
			__u32 deny = cfg->mode == MODE_ENFORCE;
			emit(KIND_USERNS_FS, &key, deny);
			return deny ? -EPERM : 0;
		}
	}
	return 0;
}

/* Content of `inode` may change from now on: forget that it was allowed. */
static __always_inline void invalidate_inode(struct inode *inode)
{
	struct inode_key key;

	if (!inode)
		return;
	inode_key_of(inode, &key);
	if (!bpf_map_lookup_elem(&watched, &key.dev))
		return;
	if (bpf_map_delete_elem(&allowed, &key) == 0)
		emit(KIND_INVALIDATED, &key, 0);
}

/*
 * Every program receives the hook's arguments in ctx[0..n) and, in ctx[n],
 * the return value of the previous BPF LSM program on this hook: a nonzero
 * value is a denial that we pass on unchanged.
 */

SEC("lsm/mmap_file")
int mmap_file(unsigned long long *ctx)
{
	struct file *file = (struct file *)ctx[0];
	unsigned long prot = ctx[2];
	unsigned long flags = ctx[3];
	int ret = (int)ctx[4];
	struct config *cfg;

	if (ret)
		return ret;
	if (!file)
		return 0;

	/* A shared writable mapping lets the content change without write(2). */
	if ((prot & PROT_WRITE) &&
	    ((flags & MAP_TYPE) == MAP_SHARED || (flags & MAP_TYPE) == MAP_SHARED_VALIDATE) &&
	    (file->f_mode & FMODE_WRITE))
		invalidate_inode(file->f_inode);

	if (!(prot & PROT_EXEC))
		return 0;
	cfg = get_config();
	if (!cfg || exempt(cfg))
		return 0;
	return check_exec(file, KIND_EXEC_MAPPING, cfg);
}

SEC("lsm/file_mprotect")
int file_mprotect(unsigned long long *ctx)
{
	struct vm_area_struct *vma = (struct vm_area_struct *)ctx[0];
	unsigned long prot = ctx[2];
	int ret = (int)ctx[3];
	struct config *cfg;
	struct file *file;
	unsigned long vm_flags;

	if (ret)
		return ret;
	file = vma->vm_file;
	if (!file)
		return 0; /* anonymous memory (JITs): not our business */
	vm_flags = vma->vm_flags;

	if ((prot & PROT_WRITE) && (vm_flags & VM_SHARED) && (vm_flags & VM_MAYWRITE) &&
	    !(vm_flags & VM_WRITE))
		invalidate_inode(file->f_inode);

	if (!(prot & PROT_EXEC) || (vm_flags & VM_EXEC))
		return 0;
	cfg = get_config();
	if (!cfg || exempt(cfg))
		return 0;
	return check_exec(file, KIND_MPROTECT, cfg);
}

SEC("lsm/bprm_check_security")
int bprm_check_security(unsigned long long *ctx)
{
	struct linux_binprm *bprm = (struct linux_binprm *)ctx[0];
	int ret = (int)ctx[1];
	struct config *cfg;
	struct file *file;

	if (ret)
		return ret;
	cfg = get_config();
	if (!cfg || exempt(cfg))
		return 0;
	file = bprm->file;
	if (!file)
		return 0;
	return check_exec(file, KIND_EXEC, cfg);
}

SEC("lsm/file_permission")
int file_permission(unsigned long long *ctx)
{
	struct file *file = (struct file *)ctx[0];
	int mask = (int)ctx[1];
	int ret = (int)ctx[2];

	if (ret)
		return ret;
	if (!(mask & MAY_WRITE) || !file)
		return 0;
	invalidate_inode(file->f_inode);
	return 0;
}

SEC("lsm/file_truncate")
int file_truncate(unsigned long long *ctx)
{
	struct file *file = (struct file *)ctx[0];
	int ret = (int)ctx[1];

	if (ret)
		return ret;
	if (file)
		invalidate_inode(file->f_inode);
	return 0;
}

SEC("lsm/path_truncate")
int path_truncate(unsigned long long *ctx)
{
	const struct path *path = (const struct path *)ctx[0];
	int ret = (int)ctx[1];

	if (ret)
		return ret;
	if (path && path->dentry)
		invalidate_inode(path->dentry->d_inode);
	return 0;
}
