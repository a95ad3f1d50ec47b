/*
 * clients.h - the clocks shared by the C load generators of bench/
 * (echo_client.c, latency_client.c), each built as a single file.
 */
#ifndef PX_BENCH_CLIENTS_H
#define PX_BENCH_CLIENTS_H

#include <sys/resource.h>
#include <time.h>

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* User plus system CPU time of this process, in seconds. */
static double own_cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

#endif
