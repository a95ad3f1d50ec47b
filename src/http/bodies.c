/*
 * bodies.c - what a request body being received may cost: memory, counted
 * against max_body_memory, and time, bounded by body_timeout and
 * min_body_rate.
 *
 * Memory. A body that does not arrive with its head waits in its
 * connection's input buffer until it is complete. server.c sizes that buffer
 * from Content-Length, so a declared body costs what was declared and no
 * more; a chunked body's buffer grows as it arrives. The buffer's capacity
 * is counted from the moment the body is buffered until it is complete
 * (handed to the request callback) or dropped, and a server refuses a body
 * (503) that would take the count past its max_body_memory.
 *
 * The count is the HTTP layer's one mutable static, deliberately. What it
 * bounds, the process's memory, is shared by every server, and the servers
 * that must share it are made independently: the binding makes one per
 * registered class, and in mode "interpreters" one per worker interpreter,
 * with nothing in common but the engine loop, which knows nothing of HTTP.
 * A budget object handed to each server would need an owner that all of
 * them reach, which is what is missing. The count is touched only when a
 * body must be buffered, never for a request that arrives whole.
 *
 * Time. body_timeout bounds the wait for the next read of a body, and
 * min_body_rate its average pace: a body may take body_timeout plus one
 * second per min_body_rate bytes received from its start. A client that
 * sends a byte just before each body_timeout would otherwise hold its
 * buffer for ever.
 */
#include "server_internal.h"

#include <unistd.h>

#define DEFAULT_MIN_BODY_RATE 1024u
#define MAX_DEFAULT_BODY_MEMORY (UINT64_C(1) << 30)
#define NS_PER_S 1e9
/* Later than any deadline the sweep will meet (about 31 years). */
#define FAR_NS UINT64_C(1000000000000000000)

static _Atomic uint64_t body_memory;

uint64_t px_http_default_body_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page_size <= 0)
        return MAX_DEFAULT_BODY_MEMORY;
    uint64_t quarter = (uint64_t)pages / 4 * (uint64_t)page_size;
    return quarter < MAX_DEFAULT_BODY_MEMORY ? quarter
                                             : MAX_DEFAULT_BODY_MEMORY;
}

uint64_t px_http_body_memory_in_use(void)
{
    return atomic_load_explicit(&body_memory, memory_order_relaxed);
}

void px__http_body_limits(px_http_server_t *s,
                          const px_http_server_options_t *opts)
{
    s->min_body_rate =
        opts->min_body_rate ? opts->min_body_rate : DEFAULT_MIN_BODY_RATE;
    s->max_body_memory = opts->max_body_memory ? opts->max_body_memory
                                               : px_http_default_body_memory();
}

bool px__http_body_charge(px_http_conn_t *hc, size_t bytes)
{
    if (bytes <= hc->body_charge)
        return true;
    uint64_t more = bytes - hc->body_charge;
    uint64_t bound = hc->server->max_body_memory;
    uint64_t held = atomic_load_explicit(&body_memory, memory_order_relaxed);
    do {
        if (more > bound || held > bound - more)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(
        &body_memory, &held, held + more, memory_order_relaxed,
        memory_order_relaxed));
    hc->body_charge = bytes;
    return true;
}

void px__http_body_release(px_http_conn_t *hc)
{
    if (hc->body_charge == 0)
        return;
    atomic_fetch_sub_explicit(&body_memory, hc->body_charge,
                              memory_order_relaxed);
    hc->body_charge = 0;
}

static uint64_t add_saturating(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

uint64_t px__http_body_deadline(const px_http_conn_t *hc, uint64_t now)
{
    const px_http_server_t *s = hc->server;
    if (s->body_timeout_ns == PX_HTTP_NO_TIMEOUT)
        return 0;
    uint64_t next_read = add_saturating(now, s->body_timeout_ns);
    if (s->min_body_rate == PX_HTTP_NO_MIN_RATE)
        return next_read;
    double earned =
        (double)hc->body_received / (double)s->min_body_rate * NS_PER_S;
    uint64_t earned_ns = earned < (double)FAR_NS ? (uint64_t)earned : FAR_NS;
    uint64_t by_rate = add_saturating(
        add_saturating(hc->body_start_ns, s->body_timeout_ns), earned_ns);
    return by_rate < next_read ? by_rate : next_read;
}
