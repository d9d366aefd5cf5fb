/* engine_probe: what a compiled spawner would buy B1 (see engine_probe.py).
 *
 * One C thread keeps K jobs running from tokens the caller feeds it: each job
 * is `/bin/sh -c true` spawned as a queued attempt is (posix_spawn in a new
 * session, stdin from /dev/null, stdout and stderr into pipes, a pidfd), its
 * exit awaited on an epoll set, its group swept, its status reaped and its
 * pipes drained; the next fed token starts at once. Each end is reported as
 * (token, pid, status, start, end) through a ring, with an eventfd written
 * only when the ring was empty. Built as a shared library by engine_probe.py.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

typedef struct {
    int64_t token;
    int32_t pid, status;
    double start, end;
} end_t;

typedef struct {
    int64_t token;
    int pid, pidfd, out, err;
    double start;
} run_t;

#define RING 65536
#define MAX_SLOTS 64
static end_t ends[RING];
static int64_t fed[RING];
static long ends_head, ends_tail, fed_head, fed_tail;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int slots, report_fd, feed_fd, poller;
static run_t running[MAX_SLOTS];
static int nrunning;
static posix_spawnattr_t attr;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void report(end_t e) {
    pthread_mutex_lock(&lock);
    int was_empty = ends_head == ends_tail;
    ends[ends_head++ % RING] = e;
    pthread_mutex_unlock(&lock);
    if (was_empty) {
        uint64_t one = 1;
        (void)!write(report_fd, &one, sizeof one);
    }
}

static int start_next(void) {
    pthread_mutex_lock(&lock);
    if (fed_head == fed_tail) {
        pthread_mutex_unlock(&lock);
        return 0;
    }
    int64_t token = fed[fed_tail++ % RING];
    pthread_mutex_unlock(&lock);
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) return 0;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err[1], 2);
    char *argv[] = {"/bin/sh", "-c", "true", NULL};
    pid_t pid;
    double start = now();
    int failed = posix_spawn(&pid, "/bin/sh", &actions, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    close(err[1]);
    if (failed) return 0;
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    running[nrunning++] = (run_t){token, pid, pidfd, out[0], err[0], start};
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)pidfd};
    epoll_ctl(poller, EPOLL_CTL_ADD, pidfd, &ev);
    return 1;
}

static void drain(int fd) {
    char buf[4096];
    fcntl(fd, F_SETFL, O_NONBLOCK);
    while (read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
}

static void ended(int pidfd) {
    for (int i = 0; i < nrunning; i++) {
        if (running[i].pidfd != pidfd) continue;
        run_t r = running[i];
        running[i] = running[--nrunning];
        epoll_ctl(poller, EPOLL_CTL_DEL, pidfd, NULL);
        kill(-r.pid, SIGKILL);
        int status;
        waitpid(r.pid, &status, 0);
        close(pidfd);
        drain(r.out);
        drain(r.err);
        report((end_t){r.token, r.pid, status, r.start, now()});
        return;
    }
}

static void *serve(void *unused) {
    (void)unused;
    struct epoll_event fe = {.events = EPOLLIN, .data.u32 = (uint32_t)feed_fd};
    epoll_ctl(poller, EPOLL_CTL_ADD, feed_fd, &fe);
    for (;;) {
        while (nrunning < slots && start_next()) {
        }
        struct epoll_event events[16];
        int n = epoll_wait(poller, events, 16, -1);
        for (int i = 0; i < n; i++) {
            int fd = (int)events[i].data.u32;
            if (fd == feed_fd) {
                uint64_t x;
                (void)!read(feed_fd, &x, sizeof x);
            } else {
                ended(fd);
                while (nrunning < slots && start_next()) {
                }
            }
        }
    }
    return NULL;
}

int probe_start(int k, int fd) {
    slots = k < MAX_SLOTS ? k : MAX_SLOTS;
    report_fd = fd;
    feed_fd = eventfd(0, EFD_CLOEXEC);
    poller = epoll_create1(EPOLL_CLOEXEC);
    posix_spawnattr_init(&attr);
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGXFSZ);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF);
    pthread_t thread;
    return pthread_create(&thread, NULL, serve, NULL);
}

void probe_feed(const int64_t *tokens, int n) {
    pthread_mutex_lock(&lock);
    for (int i = 0; i < n; i++) fed[fed_head++ % RING] = tokens[i];
    int idle = nrunning < slots;
    pthread_mutex_unlock(&lock);
    if (idle) {
        uint64_t one = 1;
        (void)!write(feed_fd, &one, sizeof one);
    }
}

int probe_take(end_t *out, int max) {
    int n = 0;
    pthread_mutex_lock(&lock);
    while (ends_tail < ends_head && n < max) out[n++] = ends[ends_tail++ % RING];
    pthread_mutex_unlock(&lock);
    return n;
}
