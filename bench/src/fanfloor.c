/* fanfloor: the least a user-space exec decision can cost.
 *
 *   fanfloor MOUNT
 *
 * Marks the filesystem holding MOUNT for FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM
 * and answers every event in one thread the way Palisade's agent answers a
 * file it already knows (a "warm" first exec), minus the knowing: fstat the
 * file, put an ignore mark on its inode (so its next opens stay in the
 * kernel), allow, close. No policy, no caches, no hand-off between threads.
 * Prints "fanfloor: ready" once marked; SIGTERM ends it (closing the group
 * lets anything pending through).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef FAN_MARK_IGNORE
#define FAN_MARK_IGNORE 0x00000400
#endif
#ifndef FAN_MARK_EVICTABLE
#define FAN_MARK_EVICTABLE 0x00000200
#endif

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fanfloor MOUNT\n");
        return 2;
    }
    int fan = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, O_RDONLY | O_LARGEFILE | O_CLOEXEC);
    if (fan < 0) { perror("fanotify_init"); return 1; }
    const uint64_t mask = FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM;
    if (fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, mask, AT_FDCWD, argv[1]) != 0) {
        perror("fanotify_mark");
        return 1;
    }
    unsigned ignore = FAN_MARK_IGNORE | FAN_MARK_EVICTABLE;
    printf("fanfloor: ready\n");
    fflush(stdout);
    char buf[64 * 1024] __attribute__((aligned(8)));
    for (;;) {
        ssize_t n = read(fan, buf, sizeof buf);
        if (n <= 0) continue;
        struct fanotify_event_metadata *ev = (struct fanotify_event_metadata *)buf;
        for (; FAN_EVENT_OK(ev, n); ev = FAN_EVENT_NEXT(ev, n)) {
            if (ev->fd < 0) continue;
            struct stat st;
            if (fstat(ev->fd, &st) == 0 && S_ISREG(st.st_mode)) {
                if (fanotify_mark(fan, FAN_MARK_ADD | ignore, mask, ev->fd, NULL) != 0 &&
                    ignore != FAN_MARK_IGNORED_MASK) {
                    ignore = FAN_MARK_IGNORED_MASK; /* older kernels */
                    fanotify_mark(fan, FAN_MARK_ADD | ignore, mask, ev->fd, NULL);
                }
            }
            struct fanotify_response r = {.fd = ev->fd, .response = FAN_ALLOW};
            if (write(fan, &r, sizeof r) != sizeof r) perror("fanotify response");
            close(ev->fd);
        }
    }
}
