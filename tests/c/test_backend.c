/*
 * test_backend.c - choosing the I/O backend: PYPARALLEL_IO and the
 * automatic choice, and the fallback to epoll where io_uring is blocked the
 * way container runtimes block it (a seccomp filter answering EPERM or
 * ENOSYS to io_uring_setup). The filter is installed in the test's own
 * process, which is one case's alone.
 */
#include "engine_util.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
#define THIS_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define THIS_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

static const char *auto_backend_name(void)
{
    px_loop_options_t opts;
    px_loop_options_init(&opts);
    opts.workers = TEST_WORKERS;
    opts.backend = PX_BACKEND_AUTO;
    px_loop_t *loop = NULL;
    ASSERT_PX_OK(px_loop_new(&loop, &opts));
    const char *name = px_loop_backend_name(loop);
    px_loop_free(loop);
    return name; /* a string constant of the backend */
}

static bool uring_usable(void)
{
    px_loop_options_t opts;
    test_loop_options(&opts, PX_BACKEND_URING);
    px_loop_t *loop = NULL;
    int rc = px_loop_new(&loop, &opts);
    if (rc == 0)
        px_loop_free(loop);
    else
        ASSERT_INT_EQ(rc, PX_ENOBACKEND);
    return rc == 0;
}

static void test_choice_by_environment(int unused)
{
    (void)unused;
    ASSERT_INT_EQ(unsetenv("PYPARALLEL_IO"), 0);
    bool uring = uring_usable();
    ASSERT_STR_EQ(auto_backend_name(), uring ? "io_uring" : "epoll");
    ASSERT_INT_EQ(setenv("PYPARALLEL_IO", "epoll", 1), 0);
    ASSERT_STR_EQ(auto_backend_name(), "epoll");
    ASSERT_INT_EQ(setenv("PYPARALLEL_IO", "uring", 1), 0);
    if (uring)
        ASSERT_STR_EQ(auto_backend_name(), "io_uring");
    /* An explicit backend wins over the environment. */
    ASSERT_INT_EQ(setenv("PYPARALLEL_IO", "uring", 1), 0);
    px_loop_t *loop = start_loop(PX_BACKEND_EPOLL, NULL);
    finish_loop(loop);
    ASSERT_INT_EQ(unsetenv("PYPARALLEL_IO"), 0);
}

/* Makes io_uring_setup fail with error, for this process from now on. */
static void block_io_uring(int error)
{
#ifdef THIS_AUDIT_ARCH
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, THIS_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K,
                 SECCOMP_RET_ERRNO | ((unsigned)error & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {
        .len = (unsigned short)(sizeof(filter) / sizeof(filter[0])),
        .filter = filter,
    };
    ASSERT_INT_EQ(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
    ASSERT_INT_EQ(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0);
#else
    (void)error;
    TEST_SKIP("no seccomp filter written for this architecture");
#endif
}

static void test_fallback_when_blocked(int error)
{
    ASSERT_INT_EQ(unsetenv("PYPARALLEL_IO"), 0);
    block_io_uring(error);
    ASSERT_TRUE(!uring_usable());
    ASSERT_STR_EQ(auto_backend_name(), "epoll");

    /* The epoll loop chosen instead serves connections. */
    conn_log_t log = CONN_LOG_INIT;
    engine_fixture_t f = {.callbacks = &echo_callbacks, .conn_data = &log};
    engine_fixture_start(&f, PX_BACKEND_AUTO);
    char back[5];
    client_send_all(f.fd, "hello", 5);
    client_recv_exact(f.fd, back, 5);
    ASSERT_SPAN_EQ(back, 5, "hello");
    engine_fixture_stop(&f);
}

static const test_case_t cases[] = {
    {"test_choice_by_environment", test_choice_by_environment, 0},
    {"test_fallback_when_blocked/eperm", test_fallback_when_blocked, EPERM},
    {"test_fallback_when_blocked/enosys", test_fallback_when_blocked, ENOSYS},
};

TEST_MAIN(cases)
