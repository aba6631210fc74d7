/* mkvariants: write COUNT distinct copies of a program.
 *
 *   mkvariants TEMPLATE DIR PREFIX COUNT TRAILER_BYTES
 *
 * Each copy DIR/PREFIX<i> is TEMPLATE followed by TRAILER_BYTES pseudo-random
 * bytes (an ELF program ignores trailing data), mode 0755, so every copy has
 * its own SHA-256 and runs exactly like TEMPLATE. The random stream is seeded
 * from the clock, the pid and the copy's index: copies made at different
 * times never repeat. Prints the paths written, one per line.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void write_all(int fd, const void *buf, size_t len, const char *path) {
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n <= 0) { perror(path); exit(1); }
        p += n;
        len -= (size_t)n;
    }
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: mkvariants TEMPLATE DIR PREFIX COUNT TRAILER_BYTES\n");
        return 2;
    }
    const char *tpl = argv[1], *dir = argv[2], *prefix = argv[3];
    long count = atol(argv[4]);
    size_t trailer = (size_t)atoll(argv[5]);

    int tfd = open(tpl, O_RDONLY);
    if (tfd < 0) { perror(tpl); return 1; }
    size_t tlen = (size_t)lseek(tfd, 0, SEEK_END);
    char *tbuf = malloc(tlen);
    if (pread(tfd, tbuf, tlen, 0) != (ssize_t)tlen) { perror(tpl); return 1; }
    close(tfd);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const size_t chunk = 1 << 20;
    uint64_t *buf = malloc(chunk);
    char path[4096];
    for (long i = 0; i < count; i++) {
        uint64_t seed = (uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec ^
                        ((uint64_t)getpid() << 32) ^ ((uint64_t)i * 0x2545f4914f6cdd1dULL);
        snprintf(path, sizeof path, "%s/%s%ld", dir, prefix, i);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
        if (fd < 0) { perror(path); return 1; }
        write_all(fd, tbuf, tlen, path);
        size_t left = trailer;
        while (left) {
            size_t n = left < chunk ? left : chunk;
            for (size_t w = 0; w < (n + 7) / 8; w++) buf[w] = splitmix(&seed);
            write_all(fd, buf, n, path);
            left -= n;
        }
        if (close(fd) != 0) { perror(path); return 1; }
        printf("%s\n", path);
    }
    return 0;
}
