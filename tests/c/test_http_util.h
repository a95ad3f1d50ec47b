/*
 * test_http_util.h - what the HTTP parser's tests add to tests/c/harness.h:
 * an assertion on parser results, and guarded buffers: bytes placed so that
 * their last byte is followed by an inaccessible page, so any read (or
 * write) past them crashes.
 */
#ifndef TEST_HTTP_UTIL_H
#define TEST_HTTP_UTIL_H

#include "harness.h"
#include "px_http.h"

#include <stdbool.h>
#include <sys/mman.h>

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

/* Compares parser results, naming both. */
#define ASSERT_RESULT_EQ(actual, expected)                                     \
    do {                                                                       \
        long a_ = (long)(actual), e_ = (long)(expected);                       \
        if (a_ != e_)                                                          \
            TEST_FAIL("%s == %ld (%s), expected %ld (%s)", #actual, a_,        \
                      px_http_strerror(a_), e_, px_http_strerror(e_));         \
    } while (0)

/* A writable copy of data[0..len) whose last byte is the last accessible
 * one: the page after it is PROT_NONE. */
typedef struct {
    char *data;
    void *map;
    size_t map_len;
} guarded_t;

static inline guarded_t guarded_copy(const void *data, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (len + page - 1) / page;
    if (data_pages == 0)
        data_pages = 1;
    guarded_t g;
    g.map_len = (data_pages + 1) * page;
    g.map = mmap(NULL, g.map_len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g.map == MAP_FAILED)
        TEST_FAIL("mmap failed");
    char *guard = (char *)g.map + data_pages * page;
    if (mprotect(guard, page, PROT_NONE) != 0)
        TEST_FAIL("mprotect failed");
    g.data = guard - len;
    if (len > 0)
        memcpy(g.data, data, len);
    return g;
}

static inline void guarded_free(guarded_t *g) { munmap(g->map, g->map_len); }

#endif /* TEST_HTTP_UTIL_H */
