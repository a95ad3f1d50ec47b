/*
 * worker.c - the thread pool, the worker loop, the inbox, work stealing and
 * the hand-off monitor.
 *
 * A worker is a slot (backend instance, ready list, timers, inbox); a thread
 * holds at most one worker and runs its loop. The monitor takes a worker away
 * from a thread that has been inside one user callback for longer than
 * handoff_ms and gives it to a spare thread (creating one if none waits and
 * max_threads allows), so a blocking callback stalls only its own connection.
 * A computing callback's worker is taken too, as long as the threads
 * computing in long callbacks leave a worker's worth of cores for the rest:
 * the thread that takes it mostly waits for I/O, so it uses the core an idle
 * worker left. The thread that lost the worker learns it when its callback
 * returns (px__callback_leave fails), finishes what it was doing through
 * thread-safe paths and waits as a spare. See px_internal.h for the state
 * word protocol that guarantees exactly one holder.
 *
 * Work items are queued on one worker, but a worker that has nothing of its
 * own to run takes (steals) the oldest item that may run anywhere from a
 * worker busy in a callback, so one long item does not hold up the items
 * queued behind it while another worker idles.
 */
#include "px_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The engine thread the calling OS thread is, if any. Thread-local, not
 * shared: each thread sees only its own. */
static _Thread_local px__thread_t *current_thread;

/* Callbacks and work items one worker runs before it polls again, so that
 * I/O keeps flowing while work is queued. */
#define DISPATCH_BUDGET 64

uint64_t px_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int px_current_worker(void)
{
    px__thread_t *t = current_thread;
    if (t == NULL)
        return -1;
    px__worker_t *w = atomic_load(&t->worker);
    return w ? w->index : t->last_worker;
}

px__worker_t *px__held_worker(void)
{
    px__thread_t *t = current_thread;
    if (t == NULL)
        return NULL;
    px__worker_t *w = atomic_load(&t->worker);
    if (w == NULL)
        return NULL;
    uint64_t s = atomic_load(&w->state);
    if ((s & PX__IN_CALLBACK) || (s & ~(uint64_t)PX__IN_CALLBACK) != t->epoch)
        return NULL;
    return w;
}

/* ---- callback bracketing ---------------------------------------------- */

/* How long after a callback of a worker was found blocked its callbacks
 * are handed off as they start, in hand-off thresholds. */
#define BLOCKING_SPELL_THRESHOLDS 100
/* Callbacks in a row, handed off as they started, that return within a
 * threshold: the storm is over, and handing off costs more than it saves
 * (a thread switch per callback: 4.5 times the cost of a submit_work item
 * whose worker had once waited for a busy main interpreter's GIL). */
#define QUICK_CALLBACKS_END_SPELL 16

static void hand_off_locked(px_loop_t *loop, px__worker_t *w);
static int spawn_thread_locked(px_loop_t *loop, px__worker_t *w);

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void mark_blocking(px__worker_t *w, uint64_t now)
{
    uint64_t spell = (uint64_t)w->loop->opts.handoff_ms * 1000000u *
                     BLOCKING_SPELL_THRESHOLDS;
    atomic_store_explicit(&w->quick_in_spell, 0, memory_order_relaxed);
    atomic_store_explicit(&w->blocking_until, now + spell,
                          memory_order_relaxed);
}

/* A callback handed off as it started returned within a threshold. */
static void count_quick_callback(px__worker_t *w)
{
    unsigned quick =
        atomic_fetch_add_explicit(&w->quick_in_spell, 1, memory_order_relaxed);
    if (quick + 1 >= QUICK_CALLBACKS_END_SPELL)
        atomic_store_explicit(&w->blocking_until, 0, memory_order_relaxed);
}

/* While a worker's callbacks block (a storm of slow handlers), waiting a
 * threshold to find each one blocked serialises them: the worker serves
 * one per threshold, and a quick request queued behind hundreds of them
 * waits seconds. So for a while after a callback was found blocked, the
 * holder gives the worker away as each callback starts, to a spare or to
 * a thread started for it (up to max_threads), and runs the callback as a
 * thread that no longer holds a worker; a callback that then returns
 * quickly costs one thread switch. At max_threads it keeps the worker and
 * the monitor's rules apply. */
/* Takes w from the thread inside the callback whose state word is `held`
 * and gives it to a spare, or to a thread started for it while fewer than
 * max_threads exist. False, with w left to its holder, when there is no
 * thread to give it to or the callback has just returned. threads_lock
 * held. */
static bool take_worker_locked(px_loop_t *loop, px__worker_t *w, uint64_t held)
{
    bool spare = loop->spares != NULL;
    if (loop->threads_exit ||
        (!spare && loop->nthreads >= (int)loop->opts.max_threads))
        return false;
    uint64_t expected = held;
    uint64_t next = (held & ~(uint64_t)PX__IN_CALLBACK) + PX__EPOCH_ONE;
    if (!atomic_compare_exchange_strong(&w->state, &expected, next))
        return false;
    if (spare) {
        hand_off_locked(loop, w);
    } else if (spawn_thread_locked(loop, w) < 0) {
        /* No holder after all: give it back. Nobody else changes a state
         * word without IN_CALLBACK. */
        atomic_store(&w->state, held);
        return false;
    }
    atomic_fetch_add_explicit(&w->stat_handoffs, 1, memory_order_relaxed);
    return true;
}

static void hand_off_early(px__worker_t *w, px__thread_t *t, uint64_t now)
{
    px_loop_t *loop = w->loop;
    pthread_mutex_lock(&loop->threads_lock);
    if (take_worker_locked(loop, w, t->epoch | PX__IN_CALLBACK)) {
        t->gave_early = true;
        t->early_wall = now;
        t->early_cpu = thread_cpu_ns();
    }
    pthread_mutex_unlock(&loop->threads_lock);
}

void px__callback_enter(px__worker_t *w)
{
    px__thread_t *t = current_thread;
    uint64_t now = px_now_ns();
    atomic_store_explicit(&w->callback_since, now, memory_order_relaxed);
    atomic_store(&w->state, t->epoch | PX__IN_CALLBACK);
    atomic_fetch_add_explicit(&w->stat_callbacks, 1, memory_order_relaxed);
    if (now < atomic_load_explicit(&w->blocking_until, memory_order_relaxed))
        hand_off_early(w, t, now);
}

bool px__callback_leave(px__worker_t *w)
{
    px__thread_t *t = current_thread;
    uint64_t expected = t->epoch | PX__IN_CALLBACK;
    if (atomic_compare_exchange_strong(&w->state, &expected, t->epoch)) {
        /* Only the holder writes the worker's busy time: relaxed. */
        uint64_t since =
            atomic_load_explicit(&w->callback_since, memory_order_relaxed);
        atomic_fetch_add_explicit(&w->stat_busy_ns, px_now_ns() - since,
                                  memory_order_relaxed);
        return true;
    }
    /* The monitor gave the worker to another thread while we were inside
     * the callback (or we gave it away as the callback started): we no
     * longer hold it. A callback given away early that blocked (it ran
     * for a threshold, mostly off the CPU) keeps the spell going. */
    if (atomic_exchange(&t->taken_computing, false))
        atomic_fetch_sub(&w->loop->computing_orphans, 1);
    if (t->gave_early) {
        t->gave_early = false;
        uint64_t now = px_now_ns();
        uint64_t wall = now - t->early_wall;
        uint64_t cpu = thread_cpu_ns() - t->early_cpu;
        if (wall >= (uint64_t)w->loop->opts.handoff_ms * 1000000u &&
            cpu < wall / 2)
            mark_blocking(w, now);
        else if (wall < (uint64_t)w->loop->opts.handoff_ms * 1000000u)
            count_quick_callback(w);
    }
    atomic_store(&t->worker, NULL);
    return false;
}

/* ---- inbox ------------------------------------------------------------ */

void px__worker_wake(px__worker_t *w)
{
    if (!atomic_exchange(&w->sleeping, false))
        return;
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: a wake is pending. */
    ssize_t n = write(w->wake_fd, &one, sizeof(one));
    (void)n;
}

static void inbox_push_locked(px__worker_t *w, px__msg_t *m)
{
    m->next = NULL;
    if (w->inbox_tail)
        w->inbox_tail->next = m;
    else
        w->inbox_head = m;
    w->inbox_tail = m;
    atomic_fetch_add(&w->inbox_count, 1);
}

int px__worker_post(px__worker_t *w, px__msg_kind_t kind, void *object)
{
    px__msg_t *m = malloc(sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->kind = kind;
    m->u.object = object;
    switch (kind) {
    case PX__MSG_CONN_READY:
    case PX__MSG_CONN_WANT_WRITE:
    case PX__MSG_CONN_PAUSE:
    case PX__MSG_CONN_RESUME:
    case PX__MSG_CONN_CLOSE:
    case PX__MSG_CONN_ADOPT:
        px_conn_ref(m->u.conn);
        break;
    case PX__MSG_TIMER:
    case PX__MSG_TIMER_CANCEL:
        px_timer_ref(m->u.timer);
        break;
    case PX__MSG_WATCH_ADD:
    case PX__MSG_WATCH_UPDATE:
        px_watch_ref(m->u.watch);
        break;
    case PX__MSG_LISTEN:
    case PX__MSG_UNLISTEN:
    case PX__MSG_STOP:
        break;
    }
    pthread_mutex_lock(&w->inbox_lock);
    inbox_push_locked(w, m);
    pthread_mutex_unlock(&w->inbox_lock);
    px__worker_wake(w);
    return 0;
}

static void handle_msg(px__worker_t *w, px__msg_t *m)
{
    switch (m->kind) {
    case PX__MSG_TIMER:
        px__timers_add(w, m->u.timer);
        px_timer_unref(m->u.timer);
        break;
    case PX__MSG_TIMER_CANCEL:
        px__timers_remove(w, m->u.timer);
        px_timer_unref(m->u.timer);
        break;
    case PX__MSG_LISTEN:
        px__listener_start(w, m->u.listener);
        break;
    case PX__MSG_UNLISTEN:
        px__listener_stop(w, m->u.listener);
        break;
    case PX__MSG_WATCH_ADD:
    case PX__MSG_WATCH_UPDATE:
        px__watch_handle_msg(w, m);
        px_watch_unref(m->u.watch);
        break;
    case PX__MSG_STOP:
        w->stopping = true;
        px__listeners_stop_all(w);
        px__conn_close_all(w);
        px__watches_stop_all(w);
        break;
    default:
        px__conn_handle_msg(w, m);
        px_conn_unref(m->u.conn);
        break;
    }
    free(m);
}

static void drain_inbox(px__worker_t *w)
{
    if (atomic_load(&w->inbox_count) == 0)
        return;
    pthread_mutex_lock(&w->inbox_lock);
    px__msg_t *m = w->inbox_head;
    w->inbox_head = w->inbox_tail = NULL;
    atomic_store(&w->inbox_count, 0);
    pthread_mutex_unlock(&w->inbox_lock);
    while (m) {
        px__msg_t *next = m->next;
        handle_msg(w, m);
        m = next;
    }
}

/* ---- work items ------------------------------------------------------- */

int px__worker_submit(px__worker_t *w, px__work_t *work)
{
    pthread_mutex_lock(&w->inbox_lock);
    px__q_push(&w->work, &work->node);
    atomic_fetch_add(&w->work_count, 1);
    if (!work->pinned)
        atomic_fetch_add(&w->stealable_count, 1);
    pthread_mutex_unlock(&w->inbox_lock);
    px__worker_wake(w);
    return 0;
}

/* Takes work off w's queue; inbox_lock held. */
static void work_remove_locked(px__worker_t *w, px__work_t *work)
{
    px__q_remove(&work->node);
    atomic_fetch_sub(&w->work_count, 1);
    if (!work->pinned)
        atomic_fetch_sub(&w->stealable_count, 1);
}

static px__work_t *pop_work(px__worker_t *w)
{
    if (atomic_load(&w->work_count) == 0)
        return NULL;
    pthread_mutex_lock(&w->inbox_lock);
    px__work_t *work = NULL;
    if (!px__q_empty(&w->work)) {
        work = px__container_of(w->work.next, px__work_t, node);
        work_remove_locked(w, work);
    }
    pthread_mutex_unlock(&w->inbox_lock);
    return work;
}

/* Whether v is inside a callback with work that may run elsewhere queued
 * behind it. */
static bool worth_stealing_from(px__worker_t *v)
{
    return (atomic_load(&v->state) & PX__IN_CALLBACK) &&
           atomic_load(&v->stealable_count) > 0;
}

/* The busy worker with the most stealable work, other than w; NULL when
 * there is none. Only a worker inside a callback is robbed: any other runs
 * its queue itself within a round, and taking items from it would only move
 * them between caches. */
static px__worker_t *steal_victim(px__worker_t *w)
{
    px_loop_t *loop = w->loop;
    px__worker_t *best = NULL;
    size_t most = 0;
    for (int i = 1; i < loop->nworkers; i++) {
        px__worker_t *v = &loop->workers[(w->index + i) % loop->nworkers];
        size_t n = atomic_load(&v->stealable_count);
        if (n > most && worth_stealing_from(v)) {
            best = v;
            most = n;
        }
    }
    return best;
}

/* The oldest work item of a busy worker's queue that is not pinned to it,
 * for w to run; NULL when there is none. Items pinned to their worker
 * (px_submit_to) stay, in their order. */
static px__work_t *steal_work(px__worker_t *w)
{
    if (w->stopping || atomic_load(&w->loop->stopping))
        return NULL; /* the victim's stop cancels what it has queued */
    px__worker_t *v = steal_victim(w);
    if (v == NULL)
        return NULL;
    px__work_t *work = NULL;
    pthread_mutex_lock(&v->inbox_lock);
    for (px__qnode_t *n = v->work.next; n != &v->work; n = n->next) {
        px__work_t *candidate = px__container_of(n, px__work_t, node);
        if (!candidate->pinned) {
            work = candidate;
            work_remove_locked(v, work);
            break;
        }
    }
    pthread_mutex_unlock(&v->inbox_lock);
    if (work)
        atomic_fetch_add_explicit(&w->stat_steals, 1, memory_order_relaxed);
    return work;
}

/* Runs the work items still queued at shutdown through their cancel
 * function, inside the dispatch bracket so a binding can touch its
 * runtime. */
static void cancel_work(px__worker_t *w)
{
    px__work_t *work;
    while ((work = pop_work(w)) != NULL) {
        if (work->cancel)
            work->cancel(work->arg);
        free(work);
    }
}

/* ---- the worker loop -------------------------------------------------- */

void px__dispatch_enter(px__worker_t *w)
{
    const px_loop_options_t *o = &w->loop->opts;
    if (o->on_dispatch_enter)
        o->on_dispatch_enter(o->hook_data, w->index);
}

void px__dispatch_leave(px__worker_t *w)
{
    const px_loop_options_t *o = &w->loop->opts;
    if (o->on_dispatch_leave)
        o->on_dispatch_leave(o->hook_data, w->index);
}

/* Runs ready connections and work items, within a budget. Returns false
 * when the thread lost the worker. */
static bool dispatch(px__worker_t *w, bool *entered)
{
    int budget = DISPATCH_BUDGET;
    while (budget > 0) {
        bool progressed = false;
        px__qnode_t *n = px__q_pop(&w->ready);
        if (n) {
            px_conn_t *c = px__container_of(n, px_conn_t, ready_node);
            if (!*entered) {
                px__dispatch_enter(w);
                *entered = true;
            }
            budget--;
            progressed = true;
            if (!px__conn_dispatch(w, c))
                return false;
        }
        n = px__q_pop(&w->watch_ready);
        if (n) {
            px_watch_t *x = px__container_of(n, px_watch_t, ready_node);
            if (!*entered) {
                px__dispatch_enter(w);
                *entered = true;
            }
            budget--;
            progressed = true;
            if (!px__watch_dispatch(w, x))
                return false;
        }
        px__work_t *work = pop_work(w);
        /* Nothing of its own ran this round: help a busy worker. */
        if (work == NULL && !progressed)
            work = steal_work(w);
        if (work) {
            if (!*entered) {
                px__dispatch_enter(w);
                *entered = true;
            }
            budget--;
            progressed = true;
            px__callback_enter(w);
            work->fn(work->arg);
            free(work);
            if (!px__callback_leave(w))
                return false;
        }
        if (!progressed)
            break;
    }
    return true;
}

static bool has_pending(px__worker_t *w)
{
    return !px__q_empty(&w->ready) || !px__q_empty(&w->watch_ready) ||
           atomic_load(&w->work_count) > 0 ||
           atomic_load(&w->inbox_count) > 0 ||
           (!w->stopping && steal_victim(w) != NULL);
}

/* The worker is finished when it was told to stop and nothing of it is
 * left: no connection, no listener armed on it, no watch whose on_done has
 * not run. */
static bool worker_done(px__worker_t *w)
{
    return w->stopping && px__q_empty(&w->conns) && w->listeners_armed == 0 &&
           px__q_empty(&w->watches) && px__q_empty(&w->ready) &&
           atomic_load(&w->inbox_count) == 0;
}

/* Runs w until the thread loses it (returns false) or w is finished (true). */
static bool run_worker(px__thread_t *t, px__worker_t *w)
{
    for (;;) {
        px__thread_visit(t);
        drain_inbox(w);
        bool lost = false, entered = false;
        if (w->stopping &&
            (atomic_load(&w->work_count) > 0 || w->timer_count)) {
            /* Shutdown cancels what has not started (their cancel
             * callbacks run here, inside the dispatch bracket). */
            px__dispatch_enter(w);
            entered = true;
            px__timers_cancel_all(w);
            cancel_work(w);
        }
        int64_t timer_ns = px__timers_run(w, &entered, &lost);
        if (!lost)
            lost = !dispatch(w, &entered);
        if (entered)
            px__dispatch_leave(w);
        if (lost)
            return false;
        if (worker_done(w))
            return true;

        int64_t timeout = timer_ns;
        atomic_store(&w->sleeping, true);
        if (has_pending(w))
            timeout = 0;
        int rc = w->backend_ops->poll(w, timeout);
        atomic_store(&w->sleeping, false);
        if (rc < 0 && rc != -EINTR && rc != -ETIME && rc != -EAGAIN) {
            /* A broken backend cannot recover; make the loop wind down
             * instead of spinning. */
            w->stopping = true;
            px__conn_close_all(w);
        }
    }
}

static void spare_wait(px_loop_t *loop, px__thread_t *t)
{
    pthread_mutex_lock(&loop->threads_lock);
    t->next_spare = loop->spares;
    loop->spares = t;
    while (atomic_load(&t->worker) == NULL && !loop->threads_exit &&
           !px__thread_visit_due(t))
        pthread_cond_wait(&t->wake, &loop->threads_lock);
    /* Whoever gave us a worker took us off the spare list. */
    if (atomic_load(&t->worker) == NULL) {
        px__thread_t **p = &loop->spares;
        while (*p && *p != t)
            p = &(*p)->next_spare;
        if (*p)
            *p = t->next_spare;
    }
    pthread_mutex_unlock(&loop->threads_lock);
}

static void *thread_main(void *arg)
{
    px__thread_t *t = arg;
    px_loop_t *loop = t->loop;
    current_thread = t;
    atomic_store(&t->kernel_tid, (pid_t)syscall(SYS_gettid));
    const px_loop_options_t *o = &loop->opts;
    if (o->on_thread_start)
        o->on_thread_start(o->hook_data, t->last_worker);
    for (;;) {
        px__worker_t *w = atomic_load(&t->worker);
        if (w == NULL) {
            px__thread_visit(t);
            spare_wait(loop, t);
            if (atomic_load(&t->worker) != NULL || px__thread_visit_due(t))
                continue;
            break; /* the loop is exiting */
        }
        t->last_worker = w->index;
        t->epoch = atomic_load(&w->state) & ~(uint64_t)PX__IN_CALLBACK;
        atomic_store(&w->holder, t);
        if (run_worker(t, w)) {
            atomic_store(&t->worker, NULL);
            px__loop_worker_finished(loop, w);
        }
    }
    px__thread_visit(t);
    if (o->on_thread_stop)
        o->on_thread_stop(o->hook_data, t->last_worker);
    current_thread = NULL;
    return NULL;
}

/* Starts a thread holding w; threads_lock held. */
static int spawn_thread_locked(px_loop_t *loop, px__worker_t *w)
{
    px__thread_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    t->loop = loop;
    t->last_worker = w ? w->index : -1;
    t->visit_seen = atomic_load(&loop->visit_epoch); /* see visit.c */
    atomic_store(&t->worker, w);
    pthread_cond_init(&t->wake, NULL);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    /* Python code runs on these threads: give them the main thread's usual
     * stack size rather than a small default. */
    pthread_attr_setstacksize(&attr, 8u << 20);
    int rc = pthread_create(&t->tid, &attr, thread_main, t);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_cond_destroy(&t->wake);
        free(t);
        return -rc;
    }
    t->next_all = loop->threads;
    loop->threads = t;
    loop->nthreads++;
    return 0;
}

int px__threads_start(px_loop_t *loop)
{
    int rc = 0;
    pthread_mutex_lock(&loop->threads_lock);
    for (int i = 0; i < loop->nworkers && rc == 0; i++)
        rc = spawn_thread_locked(loop, &loop->workers[i]);
    pthread_mutex_unlock(&loop->threads_lock);
    return rc;
}

/* Gives w, just taken from its blocked holder, to a spare; threads_lock
 * held and a spare known to wait. */
static void hand_off_locked(px_loop_t *loop, px__worker_t *w)
{
    px__thread_t *t = loop->spares;
    loop->spares = t->next_spare;
    atomic_store(&t->worker, w);
    pthread_cond_signal(&t->wake);
}

/* CPU time the thread holding w has used, in ns; 0 when unknown. */
static uint64_t holder_cpu_ns(px__worker_t *w)
{
    px__thread_t *t = atomic_load(&w->holder);
    clockid_t cid;
    struct timespec ts;
    if (t == NULL || pthread_getcpuclockid(t->tid, &cid) != 0 ||
        clock_gettime(cid, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Whether the holder thread sleeps in the kernel ('S' or 'D' in
 * /proc/self/task/TID/stat). A computing thread is 'R' even while the
 * scheduler makes it wait for a CPU, which the CPU clock alone cannot tell
 * from blocking on a loaded machine. */
static bool holder_sleeping(px__worker_t *w)
{
    px__thread_t *t = atomic_load(&w->holder);
    pid_t tid = t ? atomic_load(&t->kernel_tid) : 0;
    if (tid <= 0)
        return true;
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true; /* no /proc: rely on the CPU clock alone */
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return true;
    buf[n] = '\0';
    /* The state follows the command name, which ends with the last ')'. */
    const char *p = strrchr(buf, ')');
    return p == NULL || p[1] != ' ' || p[2] == 'S' || p[2] == 'D';
}

typedef enum {
    CALLBACK_YOUNG,     /* not judged yet */
    CALLBACK_BLOCKED,   /* past a threshold, mostly off the CPU */
    CALLBACK_COMPUTING, /* past a threshold, computing */
    CALLBACK_STARVED    /* past a threshold, runnable but mostly waiting
                           for a CPU that others hold */
} callback_verdict_t;

/* What the callback that started at `since` is doing, once it has run for
 * a threshold, from the holder's CPU time over the last wall time since
 * the monitor first saw the callback (at least half a threshold): blocked
 * when it used less than half of it and sleeps in the kernel; computing
 * when it used at least half. A holder that used less but is runnable
 * waits for a CPU that others hold (a loaded machine: the workers and the
 * clients outnumber the cores) is starved: it wants a core as a computing
 * one does, but another thread would wait alike, and each new one costs
 * memory, so its worker is left alone. Between two samples the last
 * verdict stands. */
static callback_verdict_t judge_callback(px__worker_t *w, uint64_t since,
                                         uint64_t now, uint64_t threshold)
{
    if (w->mon_since != since) {
        w->mon_since = since;
        w->mon_wall = now;
        w->mon_cpu = holder_cpu_ns(w);
        w->mon_computing = w->mon_starved = false;
        return CALLBACK_YOUNG;
    }
    uint64_t wall = now - w->mon_wall;
    if (now < since + threshold)
        return CALLBACK_YOUNG;
    if (wall < threshold / 2)
        return w->mon_computing ? CALLBACK_COMPUTING
               : w->mon_starved ? CALLBACK_STARVED
                                : CALLBACK_YOUNG;
    uint64_t cpu = holder_cpu_ns(w);
    uint64_t used = cpu > w->mon_cpu ? cpu - w->mon_cpu : 0;
    w->mon_wall = now;
    w->mon_cpu = cpu;
    w->mon_computing = used >= wall / 2;
    w->mon_starved = !w->mon_computing && !holder_sleeping(w);
    if (w->mon_computing)
        return CALLBACK_COMPUTING;
    return w->mon_starved ? CALLBACK_STARVED : CALLBACK_BLOCKED;
}

/* Whether w has anything for a new holder to serve besides the callback
 * under way: connections, messages, or work only it may run. */
static bool has_others(px__worker_t *w)
{
    return atomic_load(&w->nconns) > 0 || atomic_load(&w->inbox_count) > 0 ||
           atomic_load(&w->work_count) > atomic_load(&w->stealable_count);
}

/* Takes the worker of a computing callback; threads_lock held. The thread
 * computing is counted in computing_orphans until its callback returns
 * (px__callback_leave). */
static void take_computing_locked(px_loop_t *loop, px__worker_t *w,
                                  uint64_t held)
{
    px__thread_t *t = atomic_load(&w->holder);
    if (t == NULL)
        return;
    /* Marked before the CAS: the holder reads the mark only after its own
     * CAS failed, that is after ours succeeded. */
    atomic_store(&t->taken_computing, true);
    atomic_fetch_add(&loop->computing_orphans, 1);
    if (!take_worker_locked(loop, w, held)) {
        atomic_store(&t->taken_computing, false);
        atomic_fetch_sub(&loop->computing_orphans, 1);
    }
}

/* Wakes one sleeping worker other than w to steal from it. */
static void wake_a_thief(px_loop_t *loop, px__worker_t *w)
{
    for (int i = 1; i < loop->nworkers; i++) {
        px__worker_t *o = &loop->workers[(w->index + i) % loop->nworkers];
        if (atomic_load(&o->sleeping)) {
            px__worker_wake(o);
            return;
        }
    }
}

static void *monitor_main(void *arg)
{
    px_loop_t *loop = arg;
    uint64_t threshold = (uint64_t)loop->opts.handoff_ms * 1000000u;
    uint64_t tick_ns = threshold / 4 ? threshold / 4 : 1000000u;
    /* While no callback runs, look four times less often: an idle server
     * should not wake up hundreds of times a second for nothing. A callback
     * that starts meanwhile is still judged within about two thresholds. */
    bool watching = false;
    pthread_mutex_lock(&loop->threads_lock);
    while (!loop->monitor_exit) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        uint64_t ns =
            (uint64_t)until.tv_nsec + (watching ? tick_ns : 4 * tick_ns);
        until.tv_sec += (time_t)(ns / 1000000000u);
        until.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&loop->monitor_wake, &loop->threads_lock,
                               &until);
        if (loop->monitor_exit)
            break;
        uint64_t now = px_now_ns();
        watching = false;
        /* Threads computing in long callbacks: those that lost their
         * worker, and the holders judged below. */
        int computing = atomic_load(&loop->computing_orphans);
        int ncandidates = 0;
        px__worker_t *candidates[PX_MAX_WORKERS];
        uint64_t held[PX_MAX_WORKERS];
        for (int i = 0; i < loop->nworkers; i++) {
            px__worker_t *w = &loop->workers[i];
            uint64_t s = atomic_load(&w->state);
            if (!(s & PX__IN_CALLBACK))
                continue;
            watching = true;
            /* Items queued behind a callback go to an idle worker, which
             * a submit may not have woken (it was busy then). */
            if (worth_stealing_from(w))
                wake_a_thief(loop, w);
            uint64_t since =
                atomic_load_explicit(&w->callback_since, memory_order_relaxed);
            switch (judge_callback(w, since, now, threshold)) {
            case CALLBACK_YOUNG:
                break;
            case CALLBACK_STARVED:
                computing++; /* it holds, or wants, a core */
                break;
            case CALLBACK_BLOCKED:
                mark_blocking(w, now);
                take_worker_locked(loop, w, s);
                break;
            case CALLBACK_COMPUTING:
                computing++;
                /* Handed off after twice the threshold: a pause of every
                 * thread (a collection of free-threaded CPython stops
                 * them all, for ~10 ms) looks like computing, and a new
                 * holder could not run meanwhile; each one costs a thread
                 * and its memory. */
                if (now - since >= 2 * threshold && has_others(w)) {
                    candidates[ncandidates] = w;
                    held[ncandidates++] = s;
                }
                break;
            }
        }
        /* A computing callback's other connections are served by a new
         * holder while the long computations leave at least a worker's
         * worth of cores idle: the new holder mostly waits for I/O and
         * uses that core. Past that every core computes, and a thread
         * more would only compete with them (IOCP's concurrency limit). */
        if (computing < loop->nworkers)
            for (int i = 0; i < ncandidates; i++)
                take_computing_locked(loop, candidates[i], held[i]);
    }
    pthread_mutex_unlock(&loop->threads_lock);
    return NULL;
}

int px__monitor_start(px_loop_t *loop)
{
    int rc = pthread_create(&loop->monitor, NULL, monitor_main, loop);
    if (rc != 0)
        return -rc;
    loop->monitor_running = true;
    return 0;
}

/* Joins every thread; called once all workers are finished. */
void px__threads_join(px_loop_t *loop)
{
    pthread_mutex_lock(&loop->threads_lock);
    loop->monitor_exit = true;
    loop->threads_exit = true;
    pthread_cond_signal(&loop->monitor_wake);
    for (px__thread_t *t = loop->spares; t; t = t->next_spare)
        pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&loop->threads_lock);
    if (loop->monitor_running) {
        pthread_join(loop->monitor, NULL);
        loop->monitor_running = false;
    }
    for (;;) {
        pthread_mutex_lock(&loop->threads_lock);
        px__thread_t *t = loop->threads;
        if (t) {
            loop->threads = t->next_all;
            loop->nthreads--;
        }
        /* Threads that became spares after the broadcast above. */
        for (px__thread_t *s = loop->spares; s; s = s->next_spare)
            pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&loop->threads_lock);
        if (t == NULL)
            break;
        pthread_join(t->tid, NULL);
        pthread_cond_destroy(&t->wake);
        free(t);
    }
}

int px__worker_init(px_loop_t *loop, px__worker_t *w, int index)
{
    memset(w, 0, sizeof(*w));
    w->loop = loop;
    w->index = index;
    w->backend_ops = loop->backend_ops;
    pthread_mutex_init(&w->inbox_lock, NULL);
    px__q_init(&w->work);
    px__q_init(&w->ready);
    px__q_init(&w->conns);
    px__q_init(&w->watches);
    px__q_init(&w->watch_ready);
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->wake_fd < 0)
        return -errno;
    int rc = w->backend_ops->init(w);
    if (rc < 0) {
        close(w->wake_fd);
        w->wake_fd = -1;
    }
    return rc;
}

void px__worker_destroy(px__worker_t *w)
{
    if (w->backend)
        w->backend_ops->destroy(w);
    w->backend = NULL;
    if (w->wake_fd >= 0)
        close(w->wake_fd);
    w->wake_fd = -1;
    /* Messages posted after the worker finished (late sends, cancels). */
    px__msg_t *m = w->inbox_head;
    w->inbox_head = w->inbox_tail = NULL;
    while (m) {
        px__msg_t *next = m->next;
        if (m->kind == PX__MSG_TIMER || m->kind == PX__MSG_TIMER_CANCEL)
            px_timer_unref(m->u.timer);
        else if (m->kind == PX__MSG_WATCH_ADD ||
                 m->kind == PX__MSG_WATCH_UPDATE)
            px_watch_unref(m->u.watch);
        else if (m->kind != PX__MSG_LISTEN && m->kind != PX__MSG_UNLISTEN &&
                 m->kind != PX__MSG_STOP)
            px_conn_unref(m->u.conn);
        free(m);
        m = next;
    }
    free(w->timers);
    w->timers = NULL;
    pthread_mutex_destroy(&w->inbox_lock);
}

void px__on_wake(px__worker_t *w)
{
    uint64_t value;
    ssize_t n = read(w->wake_fd, &value, sizeof(value));
    (void)n; /* EAGAIN: the backend drained it already */
}
