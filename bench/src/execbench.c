/* execbench: time program executions one by one.
 *
 *   execbench [-r REPS] [-w WARMUP] [-f LISTFILE] [-c CONTROL | -C CONTROL_LIST] [-e] [PATH...]
 *
 * Runs the programs (PATHs, then the lines of LISTFILE) in order, REPS times
 * over, each with posix_spawn + waitpid and no arguments, and prints one line:
 *
 *   n=.. fail=.. median_us=.. mean_us=.. p95_us=.. min_us=.. max_us=.. total_ms=..
 *
 * Each sample is the wall time (CLOCK_MONOTONIC) from just before
 * posix_spawn to just after waitpid returns. WARMUP untimed runs of the first
 * program come first. A run "fails" if it cannot be spawned or does not exit
 * with status 0 (the reason goes to stderr); with -e (expect failure) the
 * exit status is 0 only if every run failed, otherwise only if none did.
 *
 * With -c CONTROL, every run is paired with a run of CONTROL (a copy of the
 * same program elsewhere), in alternating order; with -C CONTROL_LIST, run i
 * is paired with line i of CONTROL_LIST. The line then also gives the
 * control's figures (ctl_median_us, ctl_mean_us, ctl_p95_us), pair_ratio (the
 * median over pairs of run time / control time) and pair_mean_ratio (total
 * run time / total control time). Both members of a pair see the same moment
 * of the machine, so these ratios are free of the drift that separates two
 * runs made seconds apart.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* 0 on success (exit status 0), else an errno or -1. */
static int run(const char *path) {
    char *argv[] = {(char *)path, NULL};
    pid_t pid;
    int err = posix_spawn(&pid, path, NULL, NULL, argv, environ);
    if (err != 0) {
        fprintf(stderr, "execbench: %s: %s\n", path, strerror(err));
        return err;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return errno;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "execbench: %s: exit status 0x%x\n", path, status);
        return -1;
    }
    return 0;
}

/* One timed run: its duration in µs; counts a failure in *fails. */
static double timed(const char *path, size_t *fails) {
    double t0 = now_us();
    int rc = run(path);
    double dt = now_us() - t0;
    if (rc != 0) (*fails)++;
    return dt;
}

/* Append the non-empty lines of a file to *v. */
static int read_list(const char *file, char ***v, size_t *n, size_t *cap) {
    FILE *f = fopen(file, "r");
    if (!f) { perror(file); return -1; }
    char *line = NULL;
    size_t len = 0;
    ssize_t got;
    while ((got = getline(&line, &len, f)) > 0) {
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
        if (got == 0) continue;
        if (*n == *cap) *v = realloc(*v, (*cap *= 2) * sizeof **v);
        (*v)[(*n)++] = strdup(line);
    }
    free(line);
    fclose(f);
    return 0;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct stats { double median, mean, p95, min, max, sum; };

/* Sorts t. */
static struct stats summarise(double *t, size_t n) {
    struct stats s = {0};
    for (size_t i = 0; i < n; i++) s.sum += t[i];
    qsort(t, n, sizeof *t, cmp);
    s.median = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
    size_t p95 = (size_t)(0.95 * n + 0.999999);
    if (p95 < 1) p95 = 1;
    s.p95 = t[p95 - 1];
    s.mean = s.sum / n;
    s.min = t[0];
    s.max = t[n - 1];
    return s;
}

int main(int argc, char **argv) {
    long reps = 1, warmup = 0;
    int expect_fail = 0, opt;
    const char *list = NULL, *control = NULL, *clist = NULL;
    while ((opt = getopt(argc, argv, "r:w:f:c:C:e")) != -1) {
        switch (opt) {
        case 'r': reps = atol(optarg); break;
        case 'w': warmup = atol(optarg); break;
        case 'f': list = optarg; break;
        case 'c': control = optarg; break;
        case 'C': clist = optarg; break;
        case 'e': expect_fail = 1; break;
        default:
            fprintf(stderr, "usage: execbench [-r REPS] [-w WARMUP] [-f LISTFILE] [-c CONTROL | -C CONTROL_LIST] [-e] [PATH...]\n");
            return 2;
        }
    }
    size_t np = 0, cap = 16;
    char **paths = malloc(cap * sizeof *paths);
    for (int i = optind; i < argc; i++) {
        if (np == cap) paths = realloc(paths, (cap *= 2) * sizeof *paths);
        paths[np++] = argv[i];
    }
    if (list && read_list(list, &paths, &np, &cap) != 0) return 2;
    if (np == 0 || reps < 1) { fprintf(stderr, "execbench: nothing to run\n"); return 2; }
    /* ctl[i]: the control paired with paths[i], or NULL */
    char **ctl = NULL;
    if (control || clist) {
        ctl = malloc(np * sizeof *ctl);
        if (clist) {
            size_t nc = 0, ccap = 16;
            char **cl = malloc(ccap * sizeof *cl);
            if (read_list(clist, &cl, &nc, &ccap) != 0) return 2;
            if (nc != np) { fprintf(stderr, "execbench: %zu programs but %zu controls\n", np, nc); return 2; }
            for (size_t i = 0; i < np; i++) ctl[i] = cl[i];
        } else {
            for (size_t i = 0; i < np; i++) ctl[i] = (char *)control;
        }
    }

    for (long i = 0; i < warmup; i++) {
        run(paths[0]);
        if (ctl) run(ctl[0]);
    }

    size_t n = np * (size_t)reps, k = 0, fails = 0, cfails = 0;
    double *t = malloc(n * sizeof *t);
    double *c = ctl ? malloc(n * sizeof *c) : NULL;
    double *ratio = ctl ? malloc(n * sizeof *ratio) : NULL;
    for (long r = 0; r < reps; r++) {
        for (size_t i = 0; i < np; i++) {
            if (ctl && ((r + (long)i) & 1)) {
                c[k] = timed(ctl[i], &cfails);
                t[k] = timed(paths[i], &fails);
            } else {
                t[k] = timed(paths[i], &fails);
                if (ctl) c[k] = timed(ctl[i], &cfails);
            }
            if (ctl) ratio[k] = t[k] / c[k];
            k++;
        }
    }
    struct stats s = summarise(t, n);
    printf("n=%zu fail=%zu median_us=%.2f mean_us=%.2f p95_us=%.2f min_us=%.2f max_us=%.2f total_ms=%.3f",
           n, fails + cfails, s.median, s.mean, s.p95, s.min, s.max, s.sum / 1e3);
    if (ctl) {
        struct stats cs = summarise(c, n), rs = summarise(ratio, n);
        printf(" ctl_median_us=%.2f ctl_mean_us=%.2f ctl_p95_us=%.2f pair_ratio=%.4f pair_mean_ratio=%.4f",
               cs.median, cs.mean, cs.p95, rs.median, s.sum / cs.sum);
    }
    printf("\n");
    if (expect_fail) return fails == n ? 0 : 1;
    return fails + cfails == 0 ? 0 : 1;
}
