/*
 * test_http_util.h - the small harness the HTTP parser's tests share: test
 * registration, typed assertions, a command line matching tests/c's
 * convention (--list prints the cases, --run NAME runs one, exit 0 pass,
 * 1 fail, 77 skip; with no arguments every case runs in its own child
 * process with a timeout and a "N passed, N failed" line closes), and
 * guarded buffers: bytes placed so that their last byte is followed by an
 * inaccessible page, so any read past the input crashes.
 */
#ifndef TEST_HTTP_UTIL_H
#define TEST_HTTP_UTIL_H

#include "px_http.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void (*test_fn_t)(void);

typedef struct {
    const char *name;
    test_fn_t fn;
} test_case_t;

#define TEST_TIMEOUT_SECONDS 60

#define FAIL(...)                                                              \
    do {                                                                       \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                        \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        exit(1);                                                               \
    } while (0)

#define ASSERT_TRUE(cond)                                                      \
    do {                                                                       \
        if (!(cond))                                                           \
            FAIL("assertion failed: %s", #cond);                               \
    } while (0)

#define ASSERT_INT_EQ(actual, expected)                                        \
    do {                                                                       \
        long long a_ = (long long)(actual), e_ = (long long)(expected);        \
        if (a_ != e_)                                                          \
            FAIL("%s == %lld (%s), expected %lld (%s)", #actual, a_,           \
                 px_http_strerror((long)a_), e_, px_http_strerror((long)e_));  \
    } while (0)

/* Compares a pointer+length pair with a C string. */
#define ASSERT_SPAN_EQ(ptr, len, expected)                                     \
    do {                                                                       \
        const char *e_ = (expected);                                           \
        size_t el_ = strlen(e_);                                               \
        if ((len) != el_ || memcmp((ptr), e_, el_) != 0)                       \
            FAIL("%s == \"%.*s\", expected \"%s\"", #ptr, (int)(len),         \
                 (const char *)(ptr), e_);                                     \
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
        FAIL("mmap failed");
    char *guard = (char *)g.map + data_pages * page;
    if (mprotect(guard, page, PROT_NONE) != 0)
        FAIL("mprotect failed");
    g.data = guard - len;
    if (len > 0)
        memcpy(g.data, data, len);
    return g;
}

static inline void guarded_free(guarded_t *g)
{
    munmap(g->map, g->map_len);
}

static inline int run_one(const test_case_t *tests, size_t count,
                          const char *name)
{
    for (size_t i = 0; i < count; i++) {
        if (strcmp(tests[i].name, name) == 0) {
            alarm(TEST_TIMEOUT_SECONDS);
            tests[i].fn();
            return 0;
        }
    }
    fprintf(stderr, "no test named %s\n", name);
    return 2;
}

/* Runs every case in a child of its own so one crash fails one case. */
static inline int run_all(const test_case_t *tests, size_t count)
{
    int passed = 0, failed = 0, skipped = 0;
    for (size_t i = 0; i < count; i++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
            FAIL("fork failed");
        if (pid == 0) {
            alarm(TEST_TIMEOUT_SECONDS);
            tests[i].fn();
            _exit(0);
        }
        int status;
        if (waitpid(pid, &status, 0) < 0)
            FAIL("waitpid failed");
        const char *verdict;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            passed++;
            verdict = "ok";
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
            skipped++;
            verdict = "skipped";
        } else {
            failed++;
            verdict = "FAILED";
        }
        printf("%-50s %s\n", tests[i].name, verdict);
        fflush(stdout);
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed == 0 ? 0 : 1;
}

static inline int test_main(int argc, char **argv, const test_case_t *tests,
                            size_t count)
{
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < count; i++)
            printf("%s\n", tests[i].name);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--run") == 0)
        return run_one(tests, count, argv[2]);
    if (argc == 1)
        return run_all(tests, count);
    fprintf(stderr, "usage: %s [--list | --run NAME]\n", argv[0]);
    return 2;
}

#define TEST_COUNT(tests) (sizeof(tests) / sizeof((tests)[0]))

#endif /* TEST_HTTP_UTIL_H */
