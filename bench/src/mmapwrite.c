/* mmapwrite: change a file's last byte through a shared writable mapping.
 *
 *   mmapwrite FILE
 *
 * open(O_RDWR), mmap(MAP_SHARED), flip the bits of the last byte, msync,
 * munmap, close. Same inode, same size, new content, and no write(2): the
 * kernel raises no FAN_MODIFY for a change made through a mapping (it does
 * raise FAN_CLOSE_WRITE at the close, and updates the file's times).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: mmapwrite FILE\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror(argv[1]); return 1; }
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size == 0) { perror("fstat"); return 1; }
    unsigned char *p = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    p[st.st_size - 1] ^= 0xff;
    if (msync(p, st.st_size, MS_SYNC) < 0) { perror("msync"); return 1; }
    munmap(p, st.st_size);
    if (close(fd) < 0) { perror("close"); return 1; }
    return 0;
}
