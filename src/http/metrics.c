/*
 * metrics.c - the per-worker request counters (px_http_ops.h): requests by
 * status class, a duration histogram and response body bytes.
 *
 * Each worker counts into a cache line block of its own, with relaxed
 * atomic adds: the answering thread is nearly always the worker itself,
 * so the lines stay in its core's cache and nothing is contended; a late
 * answer from another thread adds to the same block correctly. A reader
 * sums nothing here: it copies each worker's counters (Prometheus sums
 * them, or the status page shows them per worker).
 */
#include "ops_internal.h"

#include <stdalign.h>
#include <string.h>

#define MS UINT64_C(1000000)

const uint64_t px_http_duration_bounds_ns[PX_HTTP_DURATION_BUCKETS] = {
    MS / 2,    1 * MS,    2 * MS + MS / 2, 5 * MS,     10 * MS,
    25 * MS,   50 * MS,   100 * MS,        250 * MS,   500 * MS,
    1000 * MS, 2500 * MS, 5000 * MS,       10000 * MS,
};

typedef struct {
    alignas(64) _Atomic uint64_t requests[6];
    _Atomic uint64_t duration[PX_HTTP_DURATION_BUCKETS + 1];
    _Atomic uint64_t duration_sum_ns;
    _Atomic uint64_t body_bytes;
} counters_t;

static counters_t counters[PX_MAX_WORKERS];

static void add(_Atomic uint64_t *c, uint64_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

void px__http_count(int worker, int status, uint64_t bytes,
                    uint64_t duration_ns)
{
    counters_t *c = &counters[(unsigned)worker % PX_MAX_WORKERS];
    int cls = status >= 100 && status < 600 ? status / 100 : 0;
    add(&c->requests[cls], 1);
    /* A binary search would save a few compares on slow requests only:
     * most end in the first buckets. */
    int b = 0;
    while (b < PX_HTTP_DURATION_BUCKETS &&
           duration_ns > px_http_duration_bounds_ns[b])
        b++;
    add(&c->duration[b], 1);
    add(&c->duration_sum_ns, duration_ns);
    add(&c->body_bytes, bytes);
}

void px_http_counters_enable(int on)
{
    if (on)
        atomic_fetch_or(&px__http_ops_on, PX__HTTP_OPS_COUNT);
    else
        atomic_fetch_and(&px__http_ops_on, ~PX__HTTP_OPS_COUNT);
}

static uint64_t get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

void px_http_counters_read(px_http_worker_counters_t *out, int n)
{
    if (n > PX_MAX_WORKERS)
        n = PX_MAX_WORKERS;
    for (int w = 0; w < n; w++) {
        counters_t *c = &counters[w];
        px_http_worker_counters_t *o = &out[w];
        for (int i = 0; i < 6; i++)
            o->requests[i] = get(&c->requests[i]);
        for (int i = 0; i <= PX_HTTP_DURATION_BUCKETS; i++)
            o->duration[i] = get(&c->duration[i]);
        o->duration_sum_ns = get(&c->duration_sum_ns);
        o->body_bytes = get(&c->body_bytes);
    }
}
