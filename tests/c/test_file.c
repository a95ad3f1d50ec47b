/*
 * test_file.c - file reads and writes off the workers: files of sizes
 * around the piece size are written and read back whole, in ranges, and
 * appended to; a missing file, a directory, a FIFO, an existing file with
 * PX_FILE_EXCLUSIVE and bad arguments fail with their errno; done runs on
 * the worker it names; requests still queued when the loop stops are
 * finished and delivered. Each case runs under both backends.
 */
#include "engine_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

typedef struct {
    int worker; /* where done must run; -1: any */
    atomic_int calls;
    atomic_int bad_worker;
    int64_t result;
    char *data;
    size_t len;
} outcome_t;

static void on_done(void *arg, int64_t result, char *data, size_t len)
{
    outcome_t *o = arg;
    if (o->worker >= 0 && px_current_worker() != o->worker)
        atomic_fetch_add(&o->bad_worker, 1);
    if (px_current_worker() < 0)
        atomic_fetch_add(&o->bad_worker, 1);
    o->result = result;
    o->data = data;
    o->len = len;
    atomic_fetch_add(&o->calls, 1);
}

static void wait_done(outcome_t *o)
{
    WAIT_FOR(atomic_load(&o->calls) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&o->bad_worker), 0);
}

/* A fresh directory for the case's files. */
static void temp_dir(char *dir, size_t cap)
{
    snprintf(dir, cap, "%s", "/tmp/px-test-file-XXXXXX");
    ASSERT_TRUE(mkdtemp(dir) != NULL);
}

static void remove_tree(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ASSERT_INT_EQ(system(cmd), 0);
}

static int64_t write_file(px_loop_t *loop, const char *path, const void *data,
                          size_t len, int flags)
{
    outcome_t o = {.worker = 1};
    ASSERT_PX_OK(px_file_write(loop, 1, path, data, len, flags, on_done, &o));
    wait_done(&o);
    return o.result;
}

/* Reads and checks against the pattern (seed 7, from offset). */
static void read_check(px_loop_t *loop, const char *path, uint64_t offset,
                       int64_t length, size_t expect)
{
    outcome_t o = {.worker = -1};
    ASSERT_PX_OK(px_file_read(loop, -1, path, offset, length, on_done, &o));
    wait_done(&o);
    ASSERT_INT_EQ(o.result, (intmax_t)expect);
    ASSERT_UINT_EQ(o.len, expect);
    check_pattern(o.data, o.len, offset, 7);
    free(o.data);
}

static void test_sizes(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    char dir[64], path[128];
    temp_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/f", dir);
    static const size_t sizes[] = {0,
                                   1,
                                   PX_FILE_PIECE - 1,
                                   PX_FILE_PIECE,
                                   PX_FILE_PIECE + 1,
                                   3 * PX_FILE_PIECE + 7};
    size_t max = 3 * PX_FILE_PIECE + 7;
    char *buf = malloc(max);
    fill_pattern(buf, max, 0, 7);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        ASSERT_INT_EQ(write_file(loop, path, buf, n, 0), (intmax_t)n);
        struct stat sb;
        ASSERT_INT_EQ(stat(path, &sb), 0);
        ASSERT_INT_EQ(sb.st_size, (intmax_t)n);
        read_check(loop, path, 0, -1, n);
        /* Ranges: inside, across a piece's end, and past the end. */
        if (n > 2)
            read_check(loop, path, 1, (int64_t)n - 2, n - 2);
        read_check(loop, path, n / 2, PX_FILE_PIECE,
                   (n - n / 2) < PX_FILE_PIECE ? n - n / 2 : PX_FILE_PIECE);
        read_check(loop, path, n + 10, -1, 0);
        read_check(loop, path, 0, 0, 0);
    }
    /* Appending continues the pattern. */
    ASSERT_INT_EQ(write_file(loop, path, buf, 5, 0), 5);
    ASSERT_INT_EQ(
        write_file(loop, path, buf + 5, PX_FILE_PIECE + 3, PX_FILE_APPEND),
        PX_FILE_PIECE + 3);
    read_check(loop, path, 0, -1, PX_FILE_PIECE + 8);
    free(buf);
    finish_loop(loop);
    remove_tree(dir);
}

static void expect_error(px_loop_t *loop, bool write, const char *path,
                         int flags, int err)
{
    outcome_t o = {.worker = 0};
    if (write)
        ASSERT_PX_OK(px_file_write(loop, 0, path, "x", 1, flags, on_done, &o));
    else
        ASSERT_PX_OK(px_file_read(loop, 0, path, 0, -1, on_done, &o));
    wait_done(&o);
    ASSERT_INT_EQ(o.result, err);
    ASSERT_TRUE(o.data == NULL);
}

static void test_errors(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    char dir[64], path[128], fifo[128];
    temp_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/missing", dir);
    expect_error(loop, false, path, 0, -ENOENT);
    snprintf(path, sizeof(path), "%s/no/such/dir", dir);
    expect_error(loop, true, path, 0, -ENOENT);
    expect_error(loop, false, dir, 0, -EISDIR);
    expect_error(loop, true, dir, 0, -EISDIR);
    snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
    ASSERT_INT_EQ(mkfifo(fifo, 0600), 0);
    expect_error(loop, false, fifo, 0, -EINVAL);
    snprintf(path, sizeof(path), "%s/once", dir);
    ASSERT_INT_EQ(write_file(loop, path, "a", 1, PX_FILE_EXCLUSIVE), 1);
    expect_error(loop, true, path, PX_FILE_EXCLUSIVE, -EEXIST);

    outcome_t o = {0};
    ASSERT_INT_EQ(px_file_read(loop, 0, path, 0, -2, on_done, &o), -EINVAL);
    ASSERT_INT_EQ(px_file_read(loop, TEST_WORKERS, path, 0, -1, on_done, &o),
                  -EINVAL);
    ASSERT_INT_EQ(px_file_read(loop, 0, NULL, 0, -1, on_done, &o), -EINVAL);
    ASSERT_INT_EQ(px_file_write(loop, 0, path, "x", 1, 4, on_done, &o),
                  -EINVAL);
    ASSERT_INT_EQ(px_file_write(loop, 0, path, NULL, 1, 0, on_done, &o),
                  -EINVAL);
    ASSERT_INT_EQ(atomic_load(&o.calls), 0);
    finish_loop(loop);
    remove_tree(dir);
}

#define QUEUED 64

/* Requests queued when the loop stops are all finished and delivered; the
 * stopped loop refuses new ones. */
static void test_stop(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    char dir[64], path[128];
    temp_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/f", dir);
    char *buf = malloc(PX_FILE_PIECE);
    fill_pattern(buf, PX_FILE_PIECE, 0, 7);
    ASSERT_INT_EQ(write_file(loop, path, buf, PX_FILE_PIECE, 0), PX_FILE_PIECE);
    static outcome_t o[QUEUED];
    for (int i = 0; i < QUEUED; i++) {
        o[i] = (outcome_t){.worker = i % TEST_WORKERS};
        ASSERT_PX_OK(
            px_file_read(loop, i % TEST_WORKERS, path, 0, -1, on_done, &o[i]));
    }
    ASSERT_PX_OK(px_loop_stop(loop));
    for (int i = 0; i < QUEUED; i++) {
        ASSERT_INT_EQ(atomic_load(&o[i].calls), 1);
        ASSERT_INT_EQ(o[i].result, PX_FILE_PIECE);
        free(o[i].data);
    }
    outcome_t late = {0};
    ASSERT_INT_EQ(px_file_read(loop, 0, path, 0, -1, on_done, &late),
                  PX_ESTOPPED);
    px_loop_free(loop);
    free(buf);
    remove_tree(dir);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_sizes),
    ENGINE_CASE(test_errors),
    ENGINE_CASE(test_stop),
};

TEST_MAIN(cases)
