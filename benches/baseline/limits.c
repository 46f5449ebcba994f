/*
 * limits.c: the floor under multiproc's benchmark, in plain C on Linux.
 *
 * Each figure is the cheapest way this machine does what a multiproc figure
 * does (create a process, bounce a byte between two processes, hand items
 * through shared memory, take a lock), so the harness can say how far above
 * the floor the library is. `cargo bench --bench compare` builds and runs it:
 *
 *   cc -O2 -o limits limits.c -lpthread -lrt
 *   cc -O2 -static -o exit0 exit0.c      (exec'd by the start section)
 *   ./limits [--reps 5] [--scale 1.0] [--only start,pipe] [--exit0 ./exit0]
 *            [--self PROGRAM] [--out FILE]
 *
 * Output: one JSON object {"meta": {...}, "results": {name: {...}}} on
 * stdout and in --out; each figure is the median of --reps timed runs after
 * one warm-up run. Sections carry bench_mp.py's names (interp, pool and
 * manager have no C figures). MB = 10^6 bytes. CLOCK_MONOTONIC.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <semaphore.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int reps = 5;
static double scale = 1.0;
static const char *exit0_path = "./exit0";
/* With --self: a program (the benchmark harness itself) that returns from
 * main at once when MULTIPROC_BENCH_EXIT_AT_ONCE is set: the cost of
 * starting that very program, the floor of any start method that execs it. */
static const char *self_path = NULL;

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void fail(const char *what) {
    perror(what);
    exit(1);
}

static long scaled(long n) {
    long k = (long)((double)n * scale);
    return k < 1 ? 1 : k;
}

/* ------------------------------------------------------------ recording */

#define MAX_FIGURES 48
#define MAX_REPS 64

struct figure {
    const char *name, *unit, *note;
    long n;
    double samples[MAX_REPS];
    double median, min, max;
};
static struct figure figures[MAX_FIGURES];
static int nfigures;

typedef double (*measure_fn)(long n, const void *cfg);

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void record(const char *name, const char *unit, const char *note, measure_fn f,
                   long n, const void *cfg) {
    struct figure *fig = &figures[nfigures++];
    double sorted[MAX_REPS];
    fig->name = name;
    fig->unit = unit;
    fig->note = note;
    fig->n = n;
    f(n, cfg); /* warm-up */
    for (int i = 0; i < reps; i++) fig->samples[i] = sorted[i] = f(n, cfg);
    qsort(sorted, (size_t)reps, sizeof(double), by_value);
    fig->min = sorted[0];
    fig->max = sorted[reps - 1];
    fig->median = reps % 2 ? sorted[reps / 2] : (sorted[reps / 2 - 1] + sorted[reps / 2]) / 2;
    fprintf(stderr, "  %-46s %14.3f %-12s [%.3f .. %.3f]\n", name, fig->median, unit,
            fig->min, fig->max);
}

/* ------------------------------------------------------------ processes */

static void wait_ok(pid_t pid) {
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) fail("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "child %d ended with status %#x\n", (int)pid, status);
        exit(1);
    }
}

static pid_t fork_or_die(void) {
    pid_t pid = fork();
    if (pid < 0) fail("fork");
    return pid;
}

/* us per fork(); child _exit(0); waitpid() */
static double fork_exit(long n, const void *cfg) {
    (void)cfg;
    double t0 = seconds();
    for (long i = 0; i < n; i++) {
        pid_t pid = fork_or_die();
        if (pid == 0) _exit(0);
        wait_ok(pid);
    }
    return (seconds() - t0) / (double)n * 1e6;
}

/* ms for 32 forks, then 32 waitpids */
static double fork32(long n, const void *cfg) {
    (void)n;
    (void)cfg;
    pid_t pids[32];
    double t0 = seconds();
    for (int i = 0; i < 32; i++)
        if ((pids[i] = fork_or_die()) == 0) _exit(0);
    for (int i = 0; i < 32; i++) wait_ok(pids[i]);
    return (seconds() - t0) * 1e3;
}

/* us per fork(); execve(cfg, or exit0 without one); waitpid() */
static double fork_exec(long n, const void *cfg) {
    const char *path = cfg ? (const char *)cfg : exit0_path;
    char *argv[] = {(char *)path, NULL};
    double t0 = seconds();
    for (long i = 0; i < n; i++) {
        pid_t pid = fork_or_die();
        if (pid == 0) {
            execve(path, argv, environ);
            _exit(127);
        }
        wait_ok(pid);
    }
    return (seconds() - t0) / (double)n * 1e6;
}

/* us per fork(); execve(self, MULTIPROC_BENCH_EXIT_AT_ONCE=1); waitpid() */
static double fork_exec_self(long n, const void *cfg) {
    (void)cfg;
    if (setenv("MULTIPROC_BENCH_EXIT_AT_ONCE", "1", 1)) fail("setenv");
    double r = fork_exec(n, self_path);
    unsetenv("MULTIPROC_BENCH_EXIT_AT_ONCE");
    return r;
}

/* us per posix_spawn(exit0); waitpid() */
static double spawn_exit0(long n, const void *cfg) {
    (void)cfg;
    char *argv[] = {(char *)exit0_path, NULL};
    double t0 = seconds();
    for (long i = 0; i < n; i++) {
        pid_t pid;
        int e = posix_spawn(&pid, exit0_path, NULL, NULL, argv, environ);
        if (e) {
            errno = e;
            fail("posix_spawn");
        }
        wait_ok(pid);
    }
    return (seconds() - t0) / (double)n * 1e6;
}

/* us per posix_spawn(exit0); waitpid(), from a parent holding 1 GiB of
 * touched memory (posix_spawn copies no page tables: flat in the size) */
static double spawn_exit0_1gib(long n, const void *cfg) {
    size_t size = (size_t)1 << 30;
    char *ballast = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ballast == MAP_FAILED) fail("mmap");
    for (size_t i = 0; i < size; i += 4096) ballast[i] = 1;
    double r = spawn_exit0(n, cfg);
    munmap(ballast, size);
    return r;
}

/* fork_exit with `live` idle children alive the whole time (spawned, as
 * the library's benchmark spawns its idle children); with
 * `fds_per_child`, the parent also holds that many descriptors per live
 * child (a socket and a pidfd, as a library watching and talking to each
 * child does), and each forked child closes every descriptor but stdio
 * before exiting (as a library that hands a child only its own resources
 * must). */
struct live_cfg {
    int live, fds_per_child, close_in_child;
};

static double fork_exit_with_live(long n, const void *arg) {
    const struct live_cfg *cfg = arg;
    /* The idle children are spawned `cat`s reading the gate (so they share
     * no pages with this process, as the library's idle children), which
     * end when the gate closes. */
    int gate[2];
    if (pipe2(gate, O_CLOEXEC)) fail("pipe2");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, gate[0], 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    char *argv[] = {"cat", NULL};
    pid_t *idle = malloc(sizeof(pid_t) * (size_t)cfg->live);
    int *held = malloc(sizeof(int) * (size_t)(cfg->live * cfg->fds_per_child + 1));
    if (!idle || !held) fail("malloc");
    int nheld = 0;
    for (int k = 0; k < cfg->live; k++) {
        int e = posix_spawnp(&idle[k], "cat", &fa, NULL, argv, environ);
        if (e) {
            errno = e;
            fail("posix_spawnp(cat)");
        }
        if (cfg->fds_per_child >= 1) {
            int sv[2];
            if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) fail("socketpair");
            close(sv[1]);
            held[nheld++] = sv[0];
        }
        if (cfg->fds_per_child >= 2) {
            int pidfd = (int)syscall(SYS_pidfd_open, idle[k], 0);
            if (pidfd < 0) fail("pidfd_open");
            held[nheld++] = pidfd;
        }
    }
    posix_spawn_file_actions_destroy(&fa);
    double t0 = seconds();
    for (long i = 0; i < n; i++) {
        pid_t pid = fork_or_die();
        if (pid == 0) {
            if (cfg->close_in_child) syscall(SYS_close_range, 3u, ~0u, 0u);
            _exit(0);
        }
        wait_ok(pid);
    }
    double dt = seconds() - t0;
    close(gate[1]);
    close(gate[0]);
    for (int k = 0; k < cfg->live; k++) wait_ok(idle[k]);
    for (int k = 0; k < nheld; k++) close(held[k]);
    free(idle);
    free(held);
    return dt / (double)n * 1e6;
}

/* ------------------------------------------------------- pipes, sockets */

static void write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t k = write(fd, p, len);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) fail("write");
        p += k;
        len -= (size_t)k;
    }
}

/* bytes read (0 at end of file) */
static size_t read_some(int fd, void *buf, size_t len) {
    for (;;) {
        ssize_t k = read(fd, buf, len);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) fail("read");
        return (size_t)k;
    }
}

static void read_all(int fd, void *buf, size_t len) {
    char *p = buf;
    while (len > 0) {
        size_t k = read_some(fd, p, len);
        if (k == 0) {
            fprintf(stderr, "unexpected end of file\n");
            exit(1);
        }
        p += k;
        len -= k;
    }
}

/* A channel between parent and child: fds[0]/fds[1] the parent's read and
 * write ends, fds[2]/fds[3] the child's; one socketpair or two pipes. */
static void channel(int socket, int fds[4]) {
    if (socket) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) fail("socketpair");
        fds[0] = fds[1] = sv[0];
        fds[2] = fds[3] = sv[1];
    } else {
        int down[2], up[2];
        if (pipe(down) || pipe(up)) fail("pipe");
        fds[0] = up[0];
        fds[1] = down[1];
        fds[2] = down[0];
        fds[3] = up[1];
    }
}

static void close_pair(int r, int w) {
    close(r);
    if (w != r) close(w);
}

/* us per 1-byte round trip; cfg: int, 1 = socketpair, 0 = two pipes */
static double ping_pong(long n, const void *cfg) {
    int fds[4];
    channel(*(const int *)cfg, fds);
    pid_t pid = fork_or_die();
    if (pid == 0) {
        close_pair(fds[0], fds[1]);
        char c;
        while (read_some(fds[2], &c, 1) == 1) write_all(fds[3], &c, 1);
        _exit(0);
    }
    close_pair(fds[2], fds[3]);
    char c = 1;
    write_all(fds[1], &c, 1); /* the child is up once this comes back */
    read_all(fds[0], &c, 1);
    double t0 = seconds();
    for (long i = 0; i < n; i++) {
        write_all(fds[1], &c, 1);
        read_all(fds[0], &c, 1);
    }
    double dt = seconds() - t0;
    close_pair(fds[0], fds[1]);
    wait_ok(pid);
    return dt / (double)n * 1e6;
}

struct stream_cfg {
    int socket;
    size_t chunk;
};

/* MB/s of 256 MiB written in `chunk`-sized write()s to a child that reads
 * and acknowledges the total; the clock stops at the acknowledgement. */
static double stream(long n, const void *arg) {
    (void)n;
    const struct stream_cfg *cfg = arg;
    size_t total = (size_t)scaled(256) << 20;
    total -= total % cfg->chunk;
    if (total == 0) total = cfg->chunk;
    int fds[4], ack[2];
    channel(cfg->socket, fds);
    if (pipe(ack)) fail("pipe");
    char *buf = malloc(cfg->chunk);
    if (!buf) fail("malloc");
    memset(buf, 0xa5, cfg->chunk);
    pid_t pid = fork_or_die();
    if (pid == 0) {
        close_pair(fds[0], fds[1]);
        close(ack[0]);
        size_t got = 0, k;
        while (got < total && (k = read_some(fds[2], buf, cfg->chunk)) > 0) got += k;
        write_all(ack[1], &got, sizeof got);
        _exit(0);
    }
    close_pair(fds[2], fds[3]);
    close(ack[1]);
    double t0 = seconds();
    for (size_t sent = 0; sent < total; sent += cfg->chunk) write_all(fds[1], buf, cfg->chunk);
    size_t got;
    read_all(ack[0], &got, sizeof got);
    double dt = seconds() - t0;
    if (got != total) {
        fprintf(stderr, "stream: child read %zu of %zu bytes\n", got, total);
        exit(1);
    }
    close_pair(fds[0], fds[1]);
    close(ack[0]);
    wait_ok(pid);
    free(buf);
    return (double)total / dt / 1e6;
}

/* Runs another measurement with this process (and the children it forks)
 * on one CPU. */
struct pinned_cfg {
    measure_fn f;
    const void *cfg;
};

static double pinned(long n, const void *arg) {
    const struct pinned_cfg *p = arg;
    cpu_set_t saved, one;
    if (sched_getaffinity(0, sizeof saved, &saved)) fail("sched_getaffinity");
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &saved)) {
            CPU_SET(c, &one);
            break;
        }
    if (sched_setaffinity(0, sizeof one, &one)) fail("sched_setaffinity");
    double r = p->f(n, p->cfg);
    if (sched_setaffinity(0, sizeof saved, &saved)) fail("sched_setaffinity");
    return r;
}

/* ------------------------------------------------------- shared memory */

static void *shared_zeroed(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail("mmap");
    memset(p, 0, size);
    return p;
}

struct sems {
    sem_t a, b, lock;
    long counter;
};

/* us per round trip of two process-shared semaphores */
static double sem_ping_pong(long n, const void *cfg) {
    (void)cfg;
    struct sems *s = shared_zeroed(sizeof *s);
    if (sem_init(&s->a, 1, 0) || sem_init(&s->b, 1, 0)) fail("sem_init");
    pid_t pid = fork_or_die();
    if (pid == 0) {
        for (long i = 0; i <= n; i++) {
            while (sem_wait(&s->a) && errno == EINTR) {
            }
            sem_post(&s->b);
        }
        _exit(0);
    }
    sem_post(&s->a);
    while (sem_wait(&s->b) && errno == EINTR) {
    }
    double t0 = seconds();
    for (long i = 0; i < n; i++) {
        sem_post(&s->a);
        while (sem_wait(&s->b) && errno == EINTR) {
        }
    }
    double dt = seconds() - t0;
    wait_ok(pid);
    munmap(s, sizeof *s);
    return dt / (double)n * 1e6;
}

/* sem_wait + sem_post per second, one process, never contended */
static double sem_uncontended(long n, const void *cfg) {
    (void)cfg;
    struct sems *s = shared_zeroed(sizeof *s);
    if (sem_init(&s->lock, 1, 1)) fail("sem_init");
    double t0 = seconds();
    for (long i = 0; i < n; i++) {
        sem_wait(&s->lock);
        sem_post(&s->lock);
    }
    double dt = seconds() - t0;
    munmap(s, sizeof *s);
    return (double)n / dt;
}

/* increments per second: two processes add n/2 each to a shared long under
 * a process-shared semaphore used as a lock */
static double sem_contended(long n, const void *cfg) {
    (void)cfg;
    struct sems *s = shared_zeroed(sizeof *s);
    if (sem_init(&s->lock, 1, 1) || sem_init(&s->a, 1, 0) || sem_init(&s->b, 1, 0))
        fail("sem_init");
    long each = n / 2;
    pid_t pids[2];
    for (int k = 0; k < 2; k++) {
        if ((pids[k] = fork_or_die()) == 0) {
            sem_post(&s->b); /* arrived */
            while (sem_wait(&s->a) && errno == EINTR) {
            }
            for (long i = 0; i < each; i++) {
                while (sem_wait(&s->lock) && errno == EINTR) {
                }
                s->counter++;
                sem_post(&s->lock);
            }
            _exit(0);
        }
    }
    for (int k = 0; k < 2; k++)
        while (sem_wait(&s->b) && errno == EINTR) {
        }
    double t0 = seconds();
    sem_post(&s->a);
    sem_post(&s->a);
    wait_ok(pids[0]);
    wait_ok(pids[1]);
    double dt = seconds() - t0;
    if (s->counter != 2 * each) {
        fprintf(stderr, "sem_contended: counted %ld, expected %ld\n", s->counter, 2 * each);
        exit(1);
    }
    munmap(s, sizeof *s);
    return (double)(2 * each) / dt;
}

/* us per create (shm_open, ftruncate, mmap), attach (shm_open, fstat,
 * mmap), unmap and close both, shm_unlink: SharedMemory's system calls */
static double shm_cycle(long n, const void *cfg) {
    (void)cfg;
    const size_t size = 4096;
    char name[64];
    double t0 = seconds();
    for (long i = 0; i < n; i++) {
        snprintf(name, sizeof name, "/multiproc_floor_%d_%ld", (int)getpid(), i);
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd < 0) fail("shm_open(create)");
        if (ftruncate(fd, (off_t)size)) fail("ftruncate");
        void *a = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        int fd2 = shm_open(name, O_RDWR, 0600);
        if (a == MAP_FAILED || fd2 < 0) fail("attach");
        struct stat st;
        if (fstat(fd2, &st)) fail("fstat");
        void *b = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0);
        if (b == MAP_FAILED) fail("mmap");
        munmap(b, (size_t)st.st_size);
        close(fd2);
        munmap(a, size);
        close(fd);
        if (shm_unlink(name)) fail("shm_unlink");
    }
    return (seconds() - t0) / (double)n * 1e6;
}

/* MB/s of memcpy of a 1 MiB block (cache-resident) */
static double copy_1mib(long n, const void *cfg) {
    (void)cfg;
    size_t size = 1 << 20;
    char *src = malloc(size), *dst = malloc(size);
    if (!src || !dst) fail("malloc");
    memset(src, 3, size);
    memset(dst, 4, size);
    double t0 = seconds();
    for (long i = 0; i < n; i++) {
        src[(size_t)i % size] ^= 1;
        memcpy(dst, src, size);
        __asm__ __volatile__("" : : "r"(dst) : "memory");
    }
    double dt = seconds() - t0;
    free(src);
    free(dst);
    return (double)size * (double)n / dt / 1e6;
}

/* --------------------------------------------------- shared-memory rings
 *
 * What a queue between processes costs at best: a ring in shared memory
 * mapped before fork, atomics for the indices, and a futex only when one
 * side has to wait. The parent consumes; forked children produce.
 *
 * Sleeping uses an event count: a waiter reads `seq`, raises `sleepy`,
 * re-checks its condition, and only then futex-waits on `seq`. A waker,
 * after its seq_cst index store, reads `sleepy` and, only if it is up, takes
 * it down, bumps `seq` and wakes everyone. The waiter's flag store and the
 * waker's index store are both seq_cst, so one of them sees the other; a
 * bump after the waiter read `seq` makes its FUTEX_WAIT return at once. Only
 * wakers lower the flag (several waiters may share it), so a stale flag
 * costs one needless wake, while a waiter that sleeps long costs the other
 * side one system call, not one per item.
 */

#define SLOTS 4096 /* u64 ring size, a power of two */
#define SPINS 128  /* polls before sleeping */
#define BIG_SLOTS 8
#define BIG (1 << 20)
#define LINE 64

struct eventcount {
    _Alignas(LINE) atomic_uint seq;
    atomic_uint sleepy;
};

static void futex(atomic_uint *word, int op, unsigned val) {
    if (syscall(SYS_futex, word, op, val, NULL, NULL, 0) < 0 && errno != EAGAIN &&
        errno != EINTR)
        fail("futex");
}

static void notify(struct eventcount *ec) {
    if (atomic_load(&ec->sleepy) && atomic_exchange(&ec->sleepy, 0)) {
        atomic_fetch_add(&ec->seq, 1);
        futex(&ec->seq, FUTEX_WAKE, INT_MAX);
    }
}

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/* Polls `ready` SPINS times, then sleeps on `ec` until it holds. */
#define AWAIT(ec, ready)                                                                   \
    do {                                                                                   \
        for (int polls_ = 0; !(ready);) {                                                  \
            if (polls_++ < SPINS) {                                                        \
                relax();                                                                   \
                continue;                                                                  \
            }                                                                              \
            unsigned seq_ = atomic_load(&(ec)->seq);                                       \
            atomic_store(&(ec)->sleepy, 1);                                                \
            if (!(ready)) futex(&(ec)->seq, FUTEX_WAIT, seq_);                             \
        }                                                                                  \
    } while (0)

/* The parent starts its clock when every producer has checked in, then lets
 * them go. */
struct start_line {
    atomic_uint arrived;
    atomic_uint go; /* futex word */
};

static void start_line_arrive(struct start_line *s) {
    atomic_fetch_add(&s->arrived, 1);
    while (atomic_load(&s->go) == 0) futex(&s->go, FUTEX_WAIT, 0);
}

static void start_line_release(struct start_line *s, unsigned n) {
    while (atomic_load(&s->arrived) < n) usleep(50);
}

static void start_line_go(struct start_line *s) {
    atomic_store(&s->go, 1);
    futex(&s->go, FUTEX_WAKE, INT_MAX);
}

/* touch every page of a shared mapping so the child's page faults happen
 * before the clock starts */
static void touch(const void *p, size_t size) {
    for (size_t off = 0; off < size; off += 4096) (void)((const volatile char *)p)[off];
}

static void check_sum(const char *what, uint64_t got, uint64_t want, uint64_t disorder) {
    if (got != want || disorder) {
        fprintf(stderr, "%s: received sum %llu, expected %llu; %llu items out of order\n",
                what, (unsigned long long)got, (unsigned long long)want,
                (unsigned long long)disorder);
        exit(1);
    }
}

struct spsc {
    _Alignas(LINE) _Atomic uint64_t written;
    _Alignas(LINE) _Atomic uint64_t taken;
    struct eventcount has_items, has_room;
    struct start_line start;
    _Alignas(LINE) uint64_t slot[SLOTS];
};

/* items/s: one producer child sends 1..n, the parent receives in order */
static double spsc_u64(long n, const void *cfg) {
    (void)cfg;
    struct spsc *r = shared_zeroed(sizeof *r);
    pid_t pid = fork_or_die();
    if (pid == 0) {
        touch(r, sizeof *r);
        start_line_arrive(&r->start);
        uint64_t w = 0, room_until = SLOTS; /* taken + SLOTS as last seen */
        for (uint64_t v = 1; v <= (uint64_t)n; v++) {
            if (w == room_until)
                AWAIT(&r->has_room, w != (room_until = atomic_load(&r->taken) + SLOTS));
            r->slot[w % SLOTS] = v;
            atomic_store(&r->written, ++w);
            notify(&r->has_items);
        }
        _exit(0);
    }
    start_line_release(&r->start, 1);
    uint64_t t = 0, seen = 0, sum = 0, disorder = 0, last = 0;
    double t0 = seconds();
    start_line_go(&r->start);
    for (long i = 0; i < n; i++) {
        if (t == seen) AWAIT(&r->has_items, t != (seen = atomic_load(&r->written)));
        uint64_t v = r->slot[t % SLOTS];
        atomic_store(&r->taken, ++t);
        notify(&r->has_room);
        disorder += v != last + 1;
        last = v;
        sum += v;
    }
    double dt = seconds() - t0;
    wait_ok(pid);
    check_sum("spsc ring", sum, (uint64_t)n * ((uint64_t)n + 1) / 2, disorder);
    munmap(r, sizeof *r);
    return (double)n / dt;
}

/* Several producers: each claims a ticket from `next`; slot ticket % SLOTS
 * is theirs to fill when its `stamp` equals the ticket, and holds the item
 * once the stamp is ticket + 1. The consumer frees it for ticket + SLOTS. */
struct cell {
    _Atomic uint64_t stamp;
    uint64_t value;
};

struct mpsc {
    _Alignas(LINE) _Atomic uint64_t next;
    struct eventcount has_items, has_room;
    struct start_line start;
    _Alignas(LINE) struct cell cell[SLOTS];
};

#define PRODUCERS 4

/* items/s: PRODUCERS children send disjoint ranges; per-producer order and
 * the total are checked */
static double mpsc_u64(long n, const void *cfg) {
    (void)cfg;
    uint64_t each = (uint64_t)n / PRODUCERS, total = each * PRODUCERS;
    struct mpsc *r = shared_zeroed(sizeof *r);
    for (uint64_t i = 0; i < SLOTS; i++) atomic_store(&r->cell[i].stamp, i);
    pid_t pids[PRODUCERS];
    for (int k = 0; k < PRODUCERS; k++) {
        if ((pids[k] = fork_or_die()) == 0) {
            touch(r, sizeof *r);
            start_line_arrive(&r->start);
            for (uint64_t v = k * each + 1; v <= (k + 1) * each; v++) {
                uint64_t ticket = atomic_fetch_add(&r->next, 1);
                struct cell *c = &r->cell[ticket % SLOTS];
                AWAIT(&r->has_room, atomic_load(&c->stamp) == ticket);
                c->value = v;
                atomic_store(&c->stamp, ticket + 1);
                notify(&r->has_items);
            }
            _exit(0);
        }
    }
    start_line_release(&r->start, PRODUCERS);
    uint64_t sum = 0, disorder = 0, last[PRODUCERS] = {0};
    double t0 = seconds();
    start_line_go(&r->start);
    for (uint64_t t = 0; t < total; t++) {
        struct cell *c = &r->cell[t % SLOTS];
        AWAIT(&r->has_items, atomic_load(&c->stamp) == t + 1);
        uint64_t v = c->value;
        atomic_store(&c->stamp, t + SLOTS);
        notify(&r->has_room);
        uint64_t k = (v - 1) / each;
        if (k >= PRODUCERS || v <= last[k]) disorder++;
        else last[k] = v;
        sum += v;
    }
    double dt = seconds() - t0;
    for (int k = 0; k < PRODUCERS; k++) wait_ok(pids[k]);
    check_sum("mpsc ring", sum, total * (total + 1) / 2, disorder);
    munmap(r, sizeof *r);
    return (double)total / dt;
}

struct big_ring {
    _Alignas(LINE) _Atomic uint64_t written;
    _Alignas(LINE) _Atomic uint64_t taken;
    struct eventcount has_items, has_room;
    struct start_line start;
    _Alignas(4096) unsigned char slot[BIG_SLOTS][BIG];
};

/* MB/s of 1 MiB messages copied into and out of an 8-slot ring */
static double spsc_1mib(long n, const void *cfg) {
    (void)cfg;
    struct big_ring *r = shared_zeroed(sizeof *r);
    unsigned char *buf = malloc(BIG);
    if (!buf) fail("malloc");
    memset(buf, 0x5a, BIG);
    pid_t pid = fork_or_die();
    if (pid == 0) {
        touch(r, sizeof *r);
        start_line_arrive(&r->start);
        uint64_t w = 0;
        for (uint64_t m = 1; m <= (uint64_t)n; m++) {
            AWAIT(&r->has_room, w - atomic_load(&r->taken) < BIG_SLOTS);
            memcpy(buf, &m, sizeof m); /* message number at both ends */
            memcpy(buf + BIG - sizeof m, &m, sizeof m);
            memcpy(r->slot[w % BIG_SLOTS], buf, BIG);
            atomic_store(&r->written, ++w);
            notify(&r->has_items);
        }
        _exit(0);
    }
    start_line_release(&r->start, 1);
    uint64_t t = 0, sum = 0, disorder = 0;
    double t0 = seconds();
    start_line_go(&r->start);
    for (uint64_t m = 1; m <= (uint64_t)n; m++) {
        AWAIT(&r->has_items, atomic_load(&r->written) != t);
        memcpy(buf, r->slot[t % BIG_SLOTS], BIG);
        atomic_store(&r->taken, ++t);
        notify(&r->has_room);
        uint64_t head, tail;
        memcpy(&head, buf, sizeof head);
        memcpy(&tail, buf + BIG - sizeof tail, sizeof tail);
        disorder += head != m || tail != m || buf[BIG / 2] != 0x5a;
        sum += head;
    }
    double dt = seconds() - t0;
    wait_ok(pid);
    check_sum("1 MiB ring", sum, (uint64_t)n * ((uint64_t)n + 1) / 2, disorder);
    free(buf);
    munmap(r, sizeof *r);
    return (double)n * BIG / dt / 1e6;
}

/* ----------------------------------------------------------------- main */

static const char *const SECTIONS[] = {"interp", "start", "pipe", "queue",
                                       "pool",   "manager", "lock", "shm"};
#define NSECTIONS (sizeof SECTIONS / sizeof *SECTIONS)
static int chosen[NSECTIONS];

static int wanted(const char *section) {
    for (size_t i = 0; i < NSECTIONS; i++)
        if (!strcmp(SECTIONS[i], section)) return chosen[i];
    return 0;
}

static int choose(const char *list) {
    char copy[256];
    snprintf(copy, sizeof copy, "%s", list);
    for (char *save = NULL, *s = strtok_r(copy, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
        size_t i = 0;
        while (i < NSECTIONS && strcmp(SECTIONS[i], s)) i++;
        if (i == NSECTIONS) {
            fprintf(stderr, "unknown section %s\n", s);
            return -1;
        }
        chosen[i] = 1;
    }
    return 0;
}

static void write_json(FILE *f) {
    fprintf(f, "{\n \"meta\": {\"reps\": %d, \"scale\": %g, \"cpus\": %ld, \"sections\": [", reps,
            scale, sysconf(_SC_NPROCESSORS_ONLN));
    for (size_t i = 0, k = 0; i < NSECTIONS; i++)
        if (chosen[i]) fprintf(f, "%s\"%s\"", k++ ? ", " : "", SECTIONS[i]);
    fprintf(f, "], \"statistic\": \"median of reps after one warm-up\"},\n \"results\": {\n");
    for (int i = 0; i < nfigures; i++) {
        const struct figure *g = &figures[i];
        fprintf(f, "  \"%s\": {\"median\": %.6g, \"min\": %.6g, \"max\": %.6g, \"unit\": \"%s\", "
                   "\"n\": %ld, \"note\": \"%s\", \"samples\": [",
                g->name, g->median, g->min, g->max, g->unit, g->n, g->note);
        for (int k = 0; k < reps; k++) fprintf(f, "%s%.6g", k ? ", " : "", g->samples[k]);
        fprintf(f, "]}%s\n", i + 1 < nfigures ? "," : "");
    }
    fprintf(f, " }\n}\n");
}

int main(int argc, char **argv) {
    const char *out = "limits.json";
    int any = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--reps")) reps = atoi(v);
        else if (!strcmp(a, "--scale")) scale = atof(v);
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--exit0")) exit0_path = v;
        else if (!strcmp(a, "--self")) self_path = v;
        else if (!strcmp(a, "--only")) {
            if (choose(v)) return 2;
            any = 1;
        } else goto usage;
        i++;
    }
    if (!any)
        for (size_t i = 0; i < NSECTIONS; i++) chosen[i] = 1;
    if (reps < 1 || reps > MAX_REPS) reps = 5;
    if (scale <= 0) scale = 1.0;

    if (wanted("start")) {
        record("fork_exit_waitpid_us", "us/process", "fork(); child _exit(0); waitpid()",
               fork_exit, scaled(1000), NULL);
        static const struct live_cfg live_bare = {2000, 0, 0}, live_fds = {2000, 2, 0},
                                     live_fds_closed = {2000, 2, 1},
                                     live_socket_closed = {2000, 1, 1};
        record("fork_exit_waitpid_2000_live_us", "us/process",
               "as fork_exit_waitpid_us with 2000 idle forked children alive", fork_exit_with_live,
               scaled(1000), &live_bare);
        record("fork_exit_waitpid_2000_live_4000_fds_us", "us/process",
               "as fork_exit_waitpid_2000_live_us; the parent holds a socket and a pidfd per "
               "live child",
               fork_exit_with_live, scaled(1000), &live_fds);
        record("fork_close_fds_exit_waitpid_2000_live_us", "us/process",
               "as fork_exit_waitpid_2000_live_4000_fds_us; each forked child closes all but "
               "stdio first",
               fork_exit_with_live, scaled(1000), &live_fds_closed);
        record("fork_close_fds_exit_waitpid_2000_live_2000_fds_us", "us/process",
               "as fork_close_fds_exit_waitpid_2000_live_us with one descriptor (a socket) per "
               "live child, as multiproc holds",
               fork_exit_with_live, scaled(1000), &live_socket_closed);
        record("fork32_then_reap_all_ms", "ms total", "32 fork()s (_exit(0)), then 32 waitpid()s",
               fork32, 32, NULL);
        if (access(exit0_path, X_OK) == 0) {
            record("fork_exec_static_waitpid_us", "us/process",
                   "fork(); execve(a static program returning 0); waitpid()", fork_exec,
                   scaled(300), NULL);
            record("posix_spawn_static_waitpid_us", "us/process",
                   "posix_spawn(a static program returning 0); waitpid()", spawn_exit0,
                   scaled(300), NULL);
            record("posix_spawn_static_1gib_parent_us", "us/process",
                   "as posix_spawn_static_waitpid_us from a parent holding 1 GiB of touched memory",
                   spawn_exit0_1gib, scaled(300), NULL);
        } else {
            fprintf(stderr, "  (no %s: fork+exec figures left out)\n", exit0_path);
        }
        if (self_path && access(self_path, X_OK) == 0)
            record("fork_exec_self_waitpid_us", "us/process",
                   "fork(); execve(the benchmark program, which returns from main at once); "
                   "waitpid()",
                   fork_exec_self, scaled(300), NULL);
    }
    if (wanted("pipe")) {
        static const int two_pipes = 0, socket = 1;
        static const struct pinned_cfg pipes_one_cpu = {ping_pong, &two_pipes};
        static const struct pinned_cfg socket_one_cpu = {ping_pong, &socket};
        static const struct stream_cfg streams[] = {
            {0, 64 << 10}, {0, 1 << 20}, {1, 64 << 10}, {1, 1 << 20}};
        record("pipe_pingpong_1byte_rtt_us", "us/roundtrip",
               "two pipes; parent writes 1 byte, child echoes it", ping_pong, scaled(20000),
               &two_pipes);
        record("socketpair_pingpong_1byte_rtt_us", "us/roundtrip",
               "AF_UNIX socketpair; parent writes 1 byte, child echoes it", ping_pong,
               scaled(20000), &socket);
        record("pipe_pingpong_1byte_rtt_same_cpu_us", "us/roundtrip",
               "as pipe_pingpong_1byte_rtt_us on one CPU", pinned, scaled(20000),
               &pipes_one_cpu);
        record("socketpair_pingpong_1byte_rtt_same_cpu_us", "us/roundtrip",
               "as socketpair_pingpong_1byte_rtt_us on one CPU", pinned, scaled(20000),
               &socket_one_cpu);
        record("pipe_throughput_64k_writes_MBps", "MB/s", "pipe; 256 MiB in 64 KiB writes",
               stream, 0, &streams[0]);
        record("pipe_throughput_1m_writes_MBps", "MB/s", "pipe; 256 MiB in 1 MiB writes", stream,
               0, &streams[1]);
        record("socketpair_throughput_64k_writes_MBps", "MB/s",
               "socketpair; 256 MiB in 64 KiB writes", stream, 0, &streams[2]);
        record("socketpair_throughput_1m_writes_MBps", "MB/s",
               "socketpair; 256 MiB in 1 MiB writes", stream, 0, &streams[3]);
    }
    if (wanted("queue")) {
        record("shm_spsc_ring_u64_items_per_s", "items/s",
               "1 producer child, parent consumes; 4096-slot u64 ring in shared memory, futex "
               "only when a side must wait",
               spsc_u64, scaled(10000000), NULL);
        record("shm_mpsc_ring_u64_4prod_items_per_s", "items/s",
               "4 producer children, parent consumes; ticket + per-slot stamp ring",
               mpsc_u64, scaled(10000000), NULL);
        record("shm_spsc_ring_1MiB_MBps", "MB/s",
               "1 MiB messages copied in and out of an 8-slot shared ring", spsc_1mib,
               scaled(2000), NULL);
    }
    if (wanted("lock")) {
        record("sem_pingpong_rtt_us", "us/roundtrip",
               "two process-shared sem_t; post/wait round trip parent<->child", sem_ping_pong,
               scaled(20000), NULL);
        record("sem_uncontended_wait_post_ops_per_s", "ops/s",
               "sem_wait + sem_post on a process-shared sem_t, one process", sem_uncontended,
               scaled(10000000), NULL);
        record("sem_lock_2proc_contended_incr_ops_per_s", "ops/s",
               "2 processes increment a shared long under a sem_t lock; 200k in total",
               sem_contended, scaled(200000), NULL);
    }
    if (wanted("shm")) {
        record("shm_create_attach_close_unlink_us", "us/cycle",
               "shm_open+ftruncate+mmap; shm_open+fstat+mmap; munmap+close x2; shm_unlink",
               shm_cycle, scaled(5000), NULL);
        record("memcpy_1MiB_MBps", "MB/s", "memcpy of a cache-resident 1 MiB block", copy_1mib,
               scaled(4000), NULL);
        /* value_lock pairs with the lock section's sem_t figure */
        if (!wanted("lock"))
            record("sem_lock_2proc_contended_incr_ops_per_s", "ops/s",
                   "2 processes increment a shared long under a sem_t lock; 200k in total",
                   sem_contended, scaled(200000), NULL);
    }

    write_json(stdout);
    FILE *f = fopen(out, "w");
    if (!f) fail(out);
    write_json(f);
    fclose(f);
    return 0;

usage:
    fprintf(stderr,
            "usage: %s [--reps N] [--scale X] [--only SECTION,...] [--exit0 PATH] [--self PATH] [--out FILE]\n"
            "sections: interp start pipe queue pool manager lock shm\n",
            argv[0]);
    return 2;
}
