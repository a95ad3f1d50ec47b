/*
 * timer.c - timers: a binary min-heap of due times per worker.
 *
 * A timer is started from any thread by posting it to a worker (round
 * robin); from then on only that worker's holder touches it in the heap.
 * Cancelling is a flag plus a message that removes the timer from the heap
 * at once, so its done callback (which a binding uses to drop what the timer
 * holds) runs promptly rather than when the timer would have fired; a timer
 * whose run is under way is out of the heap, and the run ends it. The done
 * callback therefore never runs while fn does.
 */
#include "px_internal.h"

#include <errno.h>
#include <stdlib.h>

static void heap_swap(px__worker_t *w, size_t a, size_t b)
{
    px_timer_t *t = w->timers[a];
    w->timers[a] = w->timers[b];
    w->timers[b] = t;
    w->timers[a]->heap_index = a;
    w->timers[b]->heap_index = b;
}

static void sift_up(px__worker_t *w, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (w->timers[parent]->due_ns <= w->timers[i]->due_ns)
            break;
        heap_swap(w, i, parent);
        i = parent;
    }
}

static void sift_down(px__worker_t *w, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->timer_count && w->timers[l]->due_ns < w->timers[m]->due_ns)
            m = l;
        if (r < w->timer_count && w->timers[r]->due_ns < w->timers[m]->due_ns)
            m = r;
        if (m == i)
            return;
        heap_swap(w, i, m);
        i = m;
    }
}

static int heap_push(px__worker_t *w, px_timer_t *t)
{
    if (w->timer_count == w->timer_cap) {
        size_t cap = w->timer_cap ? w->timer_cap * 2 : 16;
        px_timer_t **grown = realloc(w->timers, cap * sizeof(*grown));
        if (grown == NULL)
            return -ENOMEM;
        w->timers = grown;
        w->timer_cap = cap;
    }
    t->heap_index = w->timer_count;
    w->timers[w->timer_count++] = t;
    sift_up(w, t->heap_index);
    return 0;
}

static void heap_remove(px__worker_t *w, size_t i)
{
    w->timer_count--;
    if (i != w->timer_count) {
        heap_swap(w, i, w->timer_count);
        sift_down(w, i);
        sift_up(w, i);
    }
    w->timers[w->timer_count]->heap_index = SIZE_MAX;
}

/* The heap's reference goes with the done callback. */
static void timer_done(px_timer_t *t)
{
    if (t->done)
        t->done(t->arg);
    px_timer_unref(t);
}

static int timer_start(px_loop_t *loop, px__worker_t *w, uint64_t delay_ns,
                       uint64_t period_ns, px_work_fn fn, px_work_fn done,
                       void *arg, px_timer_t **timer)
{
    if (fn == NULL)
        return -EINVAL;
    if (atomic_load(&loop->stopping) || !atomic_load(&loop->started))
        return PX_ESTOPPED;
    px_timer_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    t->loop = loop;
    atomic_init(&t->refs, timer ? 2 : 1); /* the heap's, and the caller's */
    t->due_ns = px_now_ns() + delay_ns;
    t->period_ns = period_ns;
    t->fn = fn;
    t->done = done;
    t->arg = arg;
    t->heap_index = SIZE_MAX;
    t->worker = w;
    if (timer)
        *timer = t;
    return px__worker_post(t->worker, PX__MSG_TIMER, t);
}

int px_timer_start(px_loop_t *loop, uint64_t delay_ns, uint64_t period_ns,
                   px_work_fn fn, px_work_fn done, void *arg,
                   px_timer_t **timer)
{
    unsigned i = atomic_fetch_add(&loop->next_worker, 1);
    px__worker_t *w = &loop->workers[i % (unsigned)loop->nworkers];
    return timer_start(loop, w, delay_ns, period_ns, fn, done, arg, timer);
}

int px_timer_start_on(px_loop_t *loop, int worker, uint64_t delay_ns,
                      uint64_t period_ns, px_work_fn fn, px_work_fn done,
                      void *arg, px_timer_t **timer)
{
    if (worker < 0 || worker >= loop->nworkers)
        return -EINVAL;
    return timer_start(loop, &loop->workers[worker], delay_ns, period_ns, fn,
                       done, arg, timer);
}

void px_timer_cancel(px_timer_t *t)
{
    if (atomic_exchange(&t->cancelled, true))
        return;
    px__worker_post(t->worker, PX__MSG_TIMER_CANCEL, t);
}

void px_timer_ref(px_timer_t *t) { atomic_fetch_add(&t->refs, 1); }

void px_timer_unref(px_timer_t *t)
{
    if (atomic_fetch_sub(&t->refs, 1) == 1)
        free(t);
}

void px__timers_add(px__worker_t *w, px_timer_t *t)
{
    /* Cancelled before it reached the heap, or arriving during shutdown. */
    if (atomic_load(&t->cancelled) || w->stopping || heap_push(w, t) < 0)
        timer_done(t);
}

void px__timers_remove(px__worker_t *w, px_timer_t *t)
{
    if (t->heap_index == SIZE_MAX)
        return; /* fired already, or not yet added (add sees the flag) */
    heap_remove(w, t->heap_index);
    timer_done(t);
}

void px__timers_cancel_all(px__worker_t *w)
{
    while (w->timer_count > 0) {
        px_timer_t *t = w->timers[0];
        heap_remove(w, 0);
        timer_done(t);
    }
}

/* The longest wait for the next timer: a clock jump cannot make a poll
 * sleep longer. */
#define TIMERS_MAX_WAIT_NS (60 * (int64_t)1000000000)

int64_t px__timers_run(px__worker_t *w, bool *entered, bool *lost)
{
    uint64_t now = px_now_ns();
    while (w->timer_count > 0) {
        px_timer_t *t = w->timers[0];
        if (t->due_ns > now) {
            uint64_t ns = t->due_ns - now;
            return ns > TIMERS_MAX_WAIT_NS ? TIMERS_MAX_WAIT_NS : (int64_t)ns;
        }
        heap_remove(w, 0);
        if (!*entered) {
            px__dispatch_enter(w);
            *entered = true;
        }
        if (!atomic_load(&t->cancelled)) {
            px__callback_enter(w);
            t->fn(t->arg);
            *lost = !px__callback_leave(w);
        }
        /* A periodic timer goes back into the heap only after its run, so
         * two runs never overlap (even when this one blocked and the worker
         * went to another thread) and a cancel during the run finds it out
         * of the heap and leaves the done callback to us. Due times advance
         * by the period, not from now, so it does not drift; one that fell
         * behind skips ahead. */
        if (t->period_ns > 0 && !atomic_load(&t->cancelled)) {
            t->due_ns += t->period_ns;
            uint64_t after = px_now_ns();
            if (t->due_ns <= after)
                t->due_ns = after + t->period_ns;
            if (*lost)
                px__worker_post(w, PX__MSG_TIMER, t); /* the holder re-adds */
            else if (heap_push(w, t) < 0)
                timer_done(t);
        } else {
            timer_done(t);
        }
        if (*lost)
            return 0;
        now = px_now_ns();
    }
    return -1;
}
