/* The B1 baseline: run `/bin/sh -c true` N times with K in flight and no
 * bookkeeping at all (posix_spawn, waitpid). Prints "jobs seconds" on stdout.
 * Built by run.py with the system `cc`; usage: spawn_loop N K */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s JOBS IN_FLIGHT\n", argv[0]);
        return 2;
    }
    long jobs = atol(argv[1]), in_flight = atol(argv[2]);
    char *child[] = {"/bin/sh", "-c", "true", NULL};
    long started = 0, done = 0, running = 0;
    double t0 = now();
    while (done < jobs) {
        while (running < in_flight && started < jobs) {
            pid_t pid;
            if (posix_spawn(&pid, "/bin/sh", NULL, NULL, child, environ) != 0) {
                perror("posix_spawn");
                return 1;
            }
            started++;
            running++;
        }
        int status;
        if (waitpid(-1, &status, 0) < 0) {
            perror("waitpid");
            return 1;
        }
        running--;
        done++;
    }
    printf("%ld %.6f\n", jobs, now() - t0);
    return 0;
}
