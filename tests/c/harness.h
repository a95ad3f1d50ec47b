/*
 * harness.h - the C tests' harness: typed assertions, a table of cases per
 * test program, and the main() that runs them.
 *
 * A test program is one file per feature; it ends with a table of cases and
 * TEST_MAIN(table). Its command line is what tests/c/run-tests.sh expects:
 *
 *   prog --list        prints the case names, one a line
 *   prog --run NAME    runs that case in this process: exit 0 passed,
 *                      1 failed, 77 skipped (e.g. io_uring unavailable)
 *   prog               runs every case, each in a child process of its own
 *
 * A case is a function of one int argument, so one function can be listed
 * several times with different arguments (the engine tests run each case
 * under both I/O backends this way). A failed assertion prints where and
 * why, then ends the process with _exit(1): other threads may still be
 * running, and exit handlers (leak checks included) would only add noise to
 * a failure already reported.
 */
#ifndef PX_TEST_HARNESS_H
#define PX_TEST_HARNESS_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEST_EXIT_SKIP 77

typedef struct {
    const char *name;
    void (*fn)(int arg);
    int arg;
} test_case_t;

/* Defines a case that ignores the harness's argument, for tests that do
 * not run once per backend; TEST_CASE(name) lists it. */
#define TEST(name)                                                             \
    static void name##_body(void);                                             \
    static void name(int arg)                                                  \
    {                                                                          \
        (void)arg;                                                             \
        name##_body();                                                         \
    }                                                                          \
    static void name##_body(void)

#define TEST_CASE(name)                                                        \
    {                                                                          \
#name, test_##name, 0                                                  \
    }

#define TEST_FAIL(...)                                                         \
    do {                                                                       \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                        \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        _exit(1);                                                              \
    } while (0)

#define TEST_SKIP(...)                                                         \
    do {                                                                       \
        fprintf(stderr, "skipped: ");                                          \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        fflush(stdout);                                                        \
        _exit(TEST_EXIT_SKIP);                                                 \
    } while (0)

#define ASSERT_TRUE(cond)                                                      \
    do {                                                                       \
        if (!(cond))                                                           \
            TEST_FAIL("assertion failed: %s", #cond);                          \
    } while (0)

/* Comparisons that print both values; the names are stringified here, at
 * the outermost macro, so that the message shows the test's own words. */
#define TEST_CMP_(type, fmt, a, op, b, a_name, b_name)                         \
    do {                                                                       \
        type a_ = (type)(a), b_ = (type)(b);                                   \
        if (!(a_ op b_))                                                       \
            TEST_FAIL("%s %s %s: " fmt " %s " fmt " is false", a_name, #op,    \
                      b_name, a_, #op, b_);                                    \
    } while (0)

#define ASSERT_INT_CMP(a, op, b) TEST_CMP_(intmax_t, "%jd", a, op, b, #a, #b)
#define ASSERT_UINT_CMP(a, op, b) TEST_CMP_(uintmax_t, "%ju", a, op, b, #a, #b)
#define ASSERT_INT_EQ(a, b) TEST_CMP_(intmax_t, "%jd", a, ==, b, #a, #b)
#define ASSERT_UINT_EQ(a, b) TEST_CMP_(uintmax_t, "%ju", a, ==, b, #a, #b)

#define ASSERT_STR_EQ(a, b)                                                    \
    do {                                                                       \
        const char *a_ = (a), *b_ = (b);                                       \
        if (strcmp(a_, b_) != 0)                                               \
            TEST_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, a_, b_);           \
    } while (0)

/* Byte comparison that names the first differing offset. */
#define ASSERT_MEM_EQ(a, b, len)                                               \
    do {                                                                       \
        const unsigned char *a_ = (const unsigned char *)(a);                  \
        const unsigned char *b_ = (const unsigned char *)(b);                  \
        size_t len_ = (len);                                                   \
        for (size_t i_ = 0; i_ < len_; i_++)                                   \
            if (a_[i_] != b_[i_])                                              \
                TEST_FAIL("%s and %s differ at byte %zu of %zu: 0x%02x != "    \
                          "0x%02x",                                            \
                          #a, #b, i_, len_, a_[i_], b_[i_]);                   \
    } while (0)

static inline const test_case_t *test_find(const test_case_t *cases, size_t n,
                                           const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(cases[i].name, name) == 0)
            return &cases[i];
    return NULL;
}

/* Runs every case in a child process; prints one line per case. */
static inline int test_run_all(const test_case_t *cases, size_t n)
{
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            cases[i].fn(cases[i].arg);
            fflush(stdout);
            _exit(0);
        }
        int status = 0;
        while (waitpid(pid, &status, 0) < 0)
            ;
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
        const char *verdict = code == 0                ? "ok"
                              : code == TEST_EXIT_SKIP ? "skipped"
                                                       : "FAILED";
        printf("%-50s %s\n", cases[i].name, verdict);
        failed += code != 0 && code != TEST_EXIT_SKIP;
    }
    return failed ? 1 : 0;
}

static inline int test_main(int argc, char **argv, const test_case_t *cases,
                            size_t n)
{
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < n; i++)
            printf("%s\n", cases[i].name);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--run") == 0) {
        const test_case_t *c = test_find(cases, n, argv[2]);
        if (c == NULL) {
            fprintf(stderr, "%s: no case named %s\n", argv[0], argv[2]);
            return 2;
        }
        c->fn(c->arg);
        return 0;
    }
    if (argc == 1)
        return test_run_all(cases, n);
    fprintf(stderr, "usage: %s [--list | --run NAME]\n", argv[0]);
    return 2;
}

#define TEST_MAIN(table)                                                       \
    int main(int argc, char **argv)                                            \
    {                                                                          \
        return test_main(argc, argv, table, sizeof(table) / sizeof(table[0])); \
    }

#endif /* PX_TEST_HARNESS_H */
