/* fanfloor: the least a user-space exec decision can cost.
 *
 *   fanfloor MOUNT [sha256]
 *
 * Marks the filesystem holding MOUNT for FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM
 * and answers every event in one thread the way Palisade's agent answers a
 * file it already knows (a "warm" first exec), minus the knowing: fstat the
 * file, put an ignore mark on its inode (so its next opens stay in the
 * kernel), allow, close. No policy, no caches, no hand-off between threads.
 * With `sha256` it also reads each regular file whole through the event's
 * descriptor and computes its SHA-256 (OpenSSL) before the mark and the
 * answer, on the same thread, 1 MiB at a time: a floor for a decision bound
 * to the content of a file never seen (a "cold" first exec). For a small
 * file, one read and one hash, it is the least such a decision costs; a
 * large one can go faster when reading and hashing overlap.
 * Prints "fanfloor: ready" once marked; SIGTERM ends it (closing the group
 * lets anything pending through) after printing its answer times, measured
 * as the agent measures its own (from the read of the event returning to
 * the answer written):
 *   answers=N median_ns=X p99_ns=Y
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>

#ifndef FAN_MARK_IGNORE
#define FAN_MARK_IGNORE 0x00000400
#endif
#ifndef FAN_MARK_EVICTABLE
#define FAN_MARK_EVICTABLE 0x00000200
#endif

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

#define MAX_TIMES (1 << 20)
static uint64_t times[MAX_TIMES];
static size_t n_times;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* SHA-256 of the `size` bytes of the file behind fd (from its fstat), read
 * with pread in chunks of up to 1 MiB: one read for a small file, as the
 * agent does; 0 on success. The digest is discarded: only its cost matters
 * here. */
static unsigned char chunk[1 << 20];
static int sha256_fd(int fd, off_t size, EVP_MD_CTX *ctx) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len;
    off_t off = 0;
    if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) return -1;
    while (off < size) {
        size_t want = size - off < (off_t)sizeof chunk ? (size_t)(size - off) : sizeof chunk;
        ssize_t n = pread(fd, chunk, want, off);
        if (n < 0) return -1;
        if (n == 0) break;
        EVP_DigestUpdate(ctx, chunk, (size_t)n);
        off += n;
    }
    return EVP_DigestFinal_ex(ctx, md, &len) ? 0 : -1;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 2 && !(argc == 3 && strcmp(argv[2], "sha256") == 0)) {
        fprintf(stderr, "usage: fanfloor MOUNT [sha256]\n");
        return 2;
    }
    EVP_MD_CTX *hash = argc == 3 ? EVP_MD_CTX_new() : NULL;
    if (argc == 3 && !hash) { fprintf(stderr, "fanfloor: EVP_MD_CTX_new failed\n"); return 1; }
    if (hash) {
        /* Before the first event: fault the buffer in and let OpenSSL pick
         * its SHA-256 code, as a long-running daemon would have done. */
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len;
        memset(chunk, 1, sizeof chunk);
        EVP_DigestInit_ex(hash, EVP_sha256(), NULL);
        EVP_DigestUpdate(hash, chunk, sizeof chunk);
        EVP_DigestFinal_ex(hash, md, &len);
    }
    int fan = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, O_RDONLY | O_LARGEFILE | O_CLOEXEC);
    if (fan < 0) { perror("fanotify_init"); return 1; }
    const uint64_t mask = FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM;
    if (fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, mask, AT_FDCWD, argv[1]) != 0) {
        perror("fanotify_mark");
        return 1;
    }
    /* No SA_RESTART: SIGTERM interrupts the blocking read. */
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    unsigned ignore = FAN_MARK_IGNORE | FAN_MARK_EVICTABLE;
    printf("fanfloor: ready\n");
    fflush(stdout);
    char buf[64 * 1024] __attribute__((aligned(8)));
    while (!stop) {
        ssize_t n = read(fan, buf, sizeof buf);
        if (n <= 0) continue;
        uint64_t received = now_ns();
        struct fanotify_event_metadata *ev = (struct fanotify_event_metadata *)buf;
        for (; FAN_EVENT_OK(ev, n); ev = FAN_EVENT_NEXT(ev, n)) {
            if (ev->fd < 0) continue;
            struct stat st;
            if (fstat(ev->fd, &st) == 0 && S_ISREG(st.st_mode)) {
                if (hash && sha256_fd(ev->fd, st.st_size, hash) != 0) perror("fanfloor: hashing");
                if (fanotify_mark(fan, FAN_MARK_ADD | ignore, mask, ev->fd, NULL) != 0 &&
                    ignore != FAN_MARK_IGNORED_MASK) {
                    ignore = FAN_MARK_IGNORED_MASK; /* older kernels */
                    fanotify_mark(fan, FAN_MARK_ADD | ignore, mask, ev->fd, NULL);
                }
            }
            struct fanotify_response r = {.fd = ev->fd, .response = FAN_ALLOW};
            if (write(fan, &r, sizeof r) != sizeof r) perror("fanotify response");
            if (n_times < MAX_TIMES) times[n_times++] = now_ns() - received;
            close(ev->fd);
        }
    }
    qsort(times, n_times, sizeof times[0], cmp_u64);
    if (n_times)
        printf("answers=%zu median_ns=%llu p99_ns=%llu\n", n_times,
               (unsigned long long)times[(n_times - 1) / 2],
               (unsigned long long)times[(n_times * 99 + 99) / 100 - 1]);
    return 0;
}
