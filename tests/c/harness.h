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

/* Byte strings in failure messages: how many bytes are shown around the
 * first difference, and the room they take once escaped (four characters a
 * byte at most, quotes and the "..." marks). */
#define TEST_SHOW_BYTES 64
#define TEST_SHOW_CAP (TEST_SHOW_BYTES * 4 + 16)
#define TEST_NO_DIFFERENCE SIZE_MAX

/* Where a[0..alen) and b[0..blen) first differ (the shorter length when one
 * is a prefix of the other), or TEST_NO_DIFFERENCE. A NULL pointer equals
 * only NULL. */
static inline size_t test_first_difference(const void *a, size_t alen,
                                           const void *b, size_t blen)
{
    if (a == NULL || b == NULL)
        return a == b ? TEST_NO_DIFFERENCE : 0;
    const unsigned char *pa = a, *pb = b;
    size_t n = alen < blen ? alen : blen;
    for (size_t i = 0; i < n; i++)
        if (pa[i] != pb[i])
            return i;
    return alen == blen ? TEST_NO_DIFFERENCE : n;
}

/* Writes data[0..len) into out (TEST_SHOW_CAP bytes) as a quoted C string:
 * printable ASCII as it is, \r \n \t \" \\ and \xNN for the rest, so
 * binary data and line ends stay readable. Long data shows TEST_SHOW_BYTES
 * bytes from a little before offset at, "..." marking what is left out. */
static inline const char *test_show(char *out, const void *data, size_t len,
                                    size_t at)
{
    if (data == NULL)
        return "NULL";
    const unsigned char *p = data;
    size_t from = at > TEST_SHOW_BYTES / 4 ? at - TEST_SHOW_BYTES / 4 : 0;
    if (from > len)
        from = len;
    size_t to = len - from > TEST_SHOW_BYTES ? from + TEST_SHOW_BYTES : len;
    size_t n = 0;
    if (from > 0)
        n += (size_t)snprintf(out + n, TEST_SHOW_CAP - n, "...");
    out[n++] = '"';
    for (size_t i = from; i < to; i++) {
        unsigned char c = p[i];
        const char *escape = c == '\r'   ? "\\r"
                             : c == '\n' ? "\\n"
                             : c == '\t' ? "\\t"
                             : c == '"'  ? "\\\""
                             : c == '\\' ? "\\\\"
                                         : NULL;
        if (escape != NULL)
            n += (size_t)snprintf(out + n, TEST_SHOW_CAP - n, "%s", escape);
        else if (c >= 0x20 && c < 0x7f)
            out[n++] = (char)c;
        else
            n += (size_t)snprintf(out + n, TEST_SHOW_CAP - n, "\\x%02x", c);
    }
    out[n++] = '"';
    out[n] = '\0';
    if (to < len)
        snprintf(out + n, TEST_SHOW_CAP - n, "...");
    return out;
}

/* Fails, showing both sides around their first difference, unless the
 * byte strings are equal; what ASSERT_MEM_EQ and ASSERT_STR_EQ expand to,
 * with the names stringified by them. */
static inline void test_check_mem(const char *file, int line,
                                  const char *a_name, const void *a,
                                  size_t alen, const char *b_name,
                                  const void *b, size_t blen)
{
    size_t at = test_first_difference(a, alen, b, blen);
    if (at == TEST_NO_DIFFERENCE)
        return;
    char a_shown[TEST_SHOW_CAP], b_shown[TEST_SHOW_CAP];
    fprintf(stderr,
            "%s:%d: %s == %s is false: they differ at byte %zu\n"
            "  %s (%zu bytes): %s\n  %s (%zu bytes): %s\n",
            file, line, a_name, b_name, at, a_name, alen,
            test_show(a_shown, a, alen, at), b_name, blen,
            test_show(b_shown, b, blen, at));
    _exit(1);
}

/* Byte strings of their own lengths: equal lengths and equal bytes. */
#define ASSERT_MEM_EQ(a, alen, b, blen)                                        \
    test_check_mem(__FILE__, __LINE__, #a, (a), (alen), #b, (b), (blen))

/* NUL-terminated strings; a NULL pointer equals only NULL. */
#define ASSERT_STR_EQ(a, b)                                                    \
    do {                                                                       \
        const char *a_ = (a), *b_ = (b);                                       \
        test_check_mem(__FILE__, __LINE__, #a, a_, a_ ? strlen(a_) : 0, #b,    \
                       b_, b_ ? strlen(b_) : 0);                               \
    } while (0)

/* A pointer+length span equals a NUL-terminated string. */
#define ASSERT_SPAN_EQ(ptr, len, expected)                                     \
    do {                                                                       \
        const char *e_ = (expected);                                           \
        test_check_mem(__FILE__, __LINE__, #ptr, (ptr), (len), #expected, e_,  \
                       strlen(e_));                                            \
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
