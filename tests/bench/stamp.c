/* A job that records when it started: writes CLOCK_REALTIME ("SECONDS.NANOS")
 * to the file named by its argument. Used by B2 and B6 (as `sh -c 'stamp FILE'`,
 * which dash execs in place, so the stamp is taken by the job's own process). */
#include <stdio.h>
#include <time.h>

int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (argc != 2) return 2;
    FILE *f = fopen(argv[1], "w");
    if (!f) return 1;
    fprintf(f, "%lld.%09ld\n", (long long)ts.tv_sec, ts.tv_nsec);
    return fclose(f) == 0 ? 0 : 1;
}
