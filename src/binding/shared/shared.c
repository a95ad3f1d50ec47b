/*
 * shared.c - the shared-state part of pyparallel._core: its sub-state
 * (st->shared), the exec/traverse/free hooks that module.c calls, and the
 * small introspection functions:
 *
 *   rdtsc()          the CPU's time-stamp counter on x86 (cycles since reset;
 *                    not synchronized across sockets on old machines); on
 *                    other architectures CLOCK_MONOTONIC in nanoseconds.
 *   gmtime()         the current time as an RFC 9110 IMF-fixdate, e.g.
 *                    "Sun, 06 Nov 1994 08:49:37 GMT": what an HTTP server
 *                    puts in its Date header, formatted once per second.
 *   cpu_count()      logical CPUs online (sysconf), ignoring Python's
 *                    -X cpu_count override, like the engine's worker count.
 *   thread_seq_id()  0, 1, 2... per OS thread in the order threads first call
 *                    it, where the thread that imported the module (the
 *                    main thread, normally) counts as the first: it is 0.
 *                    Stable for the life of the thread, never reused.
 *                    Numbers are per interpreter: in interpreters mode each
 *                    worker interpreter counts on its own.
 *
 * The types and functions of rwlock.c, protect.c, ilist.c and eternal.c are
 * added by their own *_exec parts, called from pxpy_shared_exec().
 */
#include "shared/shared.h"

#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

pxpy_state *pxpy_shared_state(PyObject *module)
{
    pxpy_state *st = pxpy_get_state(module);
    if (st == NULL || st->shared == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "pyparallel._core has been torn down");
        return NULL;
    }
    return st;
}

/* ---- gmtime() ---------------------------------------------------------- */

static const char day_names[7][4] = {
    "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat",
};
static const char month_names[12][4] = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
};

static void put_digits(char *p, int value, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + value % 10);
        value /= 10;
    }
}

/* "Sun, 06 Nov 1994 08:49:37 GMT": fixed width, C locale by construction. */
static void format_http_date(time_t second, char out[PXPY_HTTP_DATE_LEN])
{
    struct tm tm;
    gmtime_r(&second, &tm);
    memcpy(out, day_names[tm.tm_wday], 3);
    memcpy(out + 3, ", ", 2);
    put_digits(out + 5, tm.tm_mday, 2);
    out[7] = ' ';
    memcpy(out + 8, month_names[tm.tm_mon], 3);
    out[11] = ' ';
    put_digits(out + 12, (tm.tm_year + 1900) % 10000, 4);
    out[16] = ' ';
    put_digits(out + 17, tm.tm_hour, 2);
    out[19] = ':';
    put_digits(out + 20, tm.tm_min, 2);
    out[22] = ':';
    put_digits(out + 23, tm.tm_sec, 2);
    memcpy(out + 25, " GMT", 4);
}

/* Reads the cache; returns 1 with out filled when it holds `second`. */
static int read_cached_date(pxpy_shared_t *sh, long long second,
                            char out[PXPY_HTTP_DATE_LEN])
{
    unsigned long long words[PXPY_HTTP_DATE_WORDS];
    for (int attempt = 0; attempt < 4; attempt++) {
        unsigned long before =
            atomic_load_explicit(&sh->date_seq, memory_order_acquire);
        if (before & 1)
            continue; /* a writer is in the middle of an update */
        long long cached =
            atomic_load_explicit(&sh->date_second, memory_order_relaxed);
        for (int i = 0; i < PXPY_HTTP_DATE_WORDS; i++)
            words[i] =
                atomic_load_explicit(&sh->date_words[i], memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&sh->date_seq, memory_order_relaxed) != before)
            continue;
        if (cached != second)
            return 0;
        memcpy(out, words, PXPY_HTTP_DATE_LEN);
        return 1;
    }
    return 0;
}

static void publish_date(pxpy_shared_t *sh, long long second,
                         const char text[PXPY_HTTP_DATE_LEN])
{
    /* One writer at a time; a thread that loses the race keeps its own
     * formatted copy instead of waiting. */
    if (atomic_exchange_explicit(&sh->date_writing, 1, memory_order_acquire))
        return;
    unsigned long long words[PXPY_HTTP_DATE_WORDS] = {0};
    memcpy(words, text, PXPY_HTTP_DATE_LEN);
    unsigned long seq =
        atomic_load_explicit(&sh->date_seq, memory_order_relaxed);
    atomic_store_explicit(&sh->date_seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&sh->date_second, second, memory_order_relaxed);
    for (int i = 0; i < PXPY_HTTP_DATE_WORDS; i++)
        atomic_store_explicit(&sh->date_words[i], words[i],
                              memory_order_relaxed);
    atomic_store_explicit(&sh->date_seq, seq + 2, memory_order_release);
    atomic_store_explicit(&sh->date_writing, 0, memory_order_release);
}

void pxpy_http_date(pxpy_shared_t *sh, char out[PXPY_HTTP_DATE_LEN])
{
    /* The coarse clock (the kernel's last tick, a few ms behind at most) is
     * the cheapest read there is, and a Date header needs only seconds. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME_COARSE, &now);
    if (read_cached_date(sh, (long long)now.tv_sec, out))
        return;
    format_http_date(now.tv_sec, out);
    publish_date(sh, (long long)now.tv_sec, out);
}

static PyObject *gmtime_now(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    pxpy_state *st = pxpy_shared_state(module);
    if (st == NULL)
        return NULL;
    char text[PXPY_HTTP_DATE_LEN];
    pxpy_http_date(st->shared, text);
    return PyUnicode_FromStringAndSize(text, PXPY_HTTP_DATE_LEN);
}

/* ---- rdtsc(), cpu_count(), thread_seq_id() ----------------------------- */

static PyObject *rdtsc(PyObject *Py_UNUSED(module),
                       PyObject *Py_UNUSED(ignored))
{
#if defined(__x86_64__) || defined(__i386__)
    return PyLong_FromUnsignedLongLong(__rdtsc());
#else
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return PyLong_FromUnsignedLongLong((unsigned long long)now.tv_sec *
                                           1000000000ULL +
                                       (unsigned long long)now.tv_nsec);
#endif
}

static PyObject *cpu_count(PyObject *Py_UNUSED(module),
                           PyObject *Py_UNUSED(ignored))
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return PyLong_FromLong(n > 0 ? n : 1);
}

/* The calling thread's number, assigned on first use; -1 when out of
 * memory (no exception set). */
static long thread_number(pxpy_shared_t *sh)
{
    /* Stored plus one, so that 0 (the key's initial value) means "none". */
    uintptr_t stored = (uintptr_t)pthread_getspecific(sh->thread_seq_key);
    if (stored == 0) {
        stored = (uintptr_t)atomic_fetch_add(&sh->next_thread_seq, 1) + 1;
        if (pthread_setspecific(sh->thread_seq_key, (void *)stored) != 0)
            return -1;
    }
    return (long)(stored - 1);
}

static PyObject *thread_seq_id(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    pxpy_state *st = pxpy_shared_state(module);
    if (st == NULL)
        return NULL;
    long number = thread_number(st->shared);
    return number < 0 ? PyErr_NoMemory() : PyLong_FromLong(number);
}

PyDoc_STRVAR(
    rdtsc_doc,
    "rdtsc() -> int\n\n"
    "The CPU's time-stamp counter (x86); elsewhere CLOCK_MONOTONIC in ns.");
PyDoc_STRVAR(
    gmtime_doc,
    "gmtime() -> str\n\n"
    "The current time as an RFC 9110 IMF-fixdate, for an HTTP Date header:\n"
    "'Sun, 06 Nov 1994 08:49:37 GMT'. Formatted once per second.");
PyDoc_STRVAR(cpu_count_doc,
             "cpu_count() -> int\n\nThe number of logical CPUs online.");
PyDoc_STRVAR(
    thread_seq_id_doc,
    "thread_seq_id() -> int\n\n"
    "A small number for the calling OS thread: 0 for the thread that imported\n"
    "pyparallel (normally the main thread), then 1, 2... in the order threads\n"
    "first call it; never reused.");

static PyMethodDef introspection_functions[] = {
    {"rdtsc", rdtsc, METH_NOARGS, rdtsc_doc},
    {"gmtime", gmtime_now, METH_NOARGS, gmtime_doc},
    {"cpu_count", cpu_count, METH_NOARGS, cpu_count_doc},
    {"thread_seq_id", thread_seq_id, METH_NOARGS, thread_seq_id_doc},
    {NULL, NULL, 0, NULL},
};

/* ---- the sub-state's lifecycle ----------------------------------------- */

int pxpy_shared_exec(PyObject *module, pxpy_state *st)
{
    pxpy_shared_t *sh = PyMem_RawCalloc(1, sizeof(*sh));
    if (sh == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    atomic_init(&sh->next_thread_seq, 0);
    atomic_init(&sh->date_writing, 0);
    atomic_init(&sh->date_seq, 0);
    atomic_init(&sh->date_second, -1);
    for (int i = 0; i < PXPY_HTTP_DATE_WORDS; i++)
        atomic_init(&sh->date_words[i], 0);
    st->shared = sh;
    if (pthread_key_create(&sh->thread_seq_key, NULL) != 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "no thread-specific key left for thread_seq_id()");
        return -1;
    }
    sh->thread_seq_key_valid = 1;
    if (thread_number(sh) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (pxpy_rwlock_exec(module, st) < 0 || pxpy_protect_exec(module, st) < 0 ||
        pxpy_ilist_exec(module, st) < 0 || pxpy_eternal_exec(module, st) < 0 ||
        PyModule_AddFunctions(module, introspection_functions) < 0)
        return -1;
    return 0;
}

/* st->ilist_type and st->lock_guard_type are created here but visited by
 * module.c's traverse with the rest of pxpy_state; visiting them twice
 * would make the GC undercount their outside references. */
int pxpy_shared_traverse(pxpy_state *st, visitproc visit, void *arg)
{
    if (st->shared == NULL)
        return 0;
    Py_VISIT(st->shared->rwlock_type);
    return pxpy_protect_traverse(st, visit, arg);
}

/* Safe to call more than once and after a failed exec. */
void pxpy_shared_free(pxpy_state *st)
{
    Py_CLEAR(st->ilist_type);
    Py_CLEAR(st->lock_guard_type);
    pxpy_shared_t *sh = st->shared;
    if (sh == NULL)
        return;
    pxpy_protect_free(st);
    Py_CLEAR(sh->rwlock_type);
    if (sh->thread_seq_key_valid)
        pthread_key_delete(sh->thread_seq_key);
    st->shared = NULL;
    PyMem_RawFree(sh);
}
