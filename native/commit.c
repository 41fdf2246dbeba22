/* The group-commit queue (docs/architecture.md "Write path"; the pure twin is the Python queue and
 * commit in lsmmail/engine/write_path.py). The leader's I/O is native/commit_io.c.
 *
 * Writers queue here and wait with the GIL released (cffi releases it around every call): first giving
 * the CPU away with sched_yield while that pays (yield_wait, lsm_cq_set_yield), then asleep on their own
 * condition variable. lsm_cq_join returns a leader its group already picked; the leader commits it with
 * one call (lsm_cq_commit_framed: framing with XXH3, one pwrite, at most one fdatasync, every batch into
 * the C memtable), so it gives up the GIL once per commit instead of once per syscall and batch.
 * lsm_cq_finish then marks the group done and wakes exactly the threads that must run: the followers,
 * which return to Python once with their outcome (one after the other when they have return turns, see
 * wait_turn), and the next head. A synced commit inserts the batches
 * while the device writes them (start_writeback): their sequence numbers are published by the caller
 * only once the fdatasync returned, so no read sees them earlier.
 *
 * Who leads: the head of the queue, once no group is being committed (`busy`). A synced head that saw
 * the last group hold more writers than are queued now first waits (up to wait_ns, on its own condition
 * variable) for the threads the last commit woke to queue again: each needs the GIL for its ~3 us of
 * Python, one after the other, so without the wait groups alternate between the early and the late
 * half. The writer whose push completes that group leads it itself instead of waking the head (it is
 * awake; the head's wake-up would sit between the group's last push and its fdatasync), and the head
 * stays in the group as a follower.
 *
 * Only a leader removes writers (its group, from the head); anyone appends at the tail, under q->mu. A
 * writer struct belongs to one thread and is in the queue at most once; its rep pointer is the caller's
 * buffer, valid because the caller stays inside lsm_cq_join until its group is done. Followers are
 * signalled after q->mu is dropped, so a slot used with a queue is freed with lsm_cq_drop_writer. */
#include "commit_internal.inc"

static void poke(lsm_cqw *w);
static int64_t now_ns(void);

#define YIELD_ONE 1024 /* moving averages of what paid (yields, return turns) are fractions of this */
#define YIELD_PROBE 8  /* when they say no, every 8th wait (finish) tries anyway: they re-measure */

/* How long a follower's return turn waits for a push before it is released anyway. Followers return
 * 4.6-4.8 us apart with turns (8 threads of synced puts: a thread's Python between its return and its
 * next join); 20 us lets a turn wait for ~4 of those while a thread that does not come back (it stops
 * writing, or runs other Python first) costs the next follower at most that much. */
#define TURN_WAIT_NS 20000

lsm_cq *lsm_cq_new(void) {
    lsm_cq *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->refs = 1;
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0) goto fail;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int bad = pthread_cond_init(&q->grew, &attr);
    pthread_condattr_destroy(&attr);
    if (bad) goto fail;
    if (pthread_mutex_init(&q->mu, NULL) != 0) {
        pthread_cond_destroy(&q->grew);
        goto fail;
    }
    return q;
fail:
    free(q);
    return NULL;
}

void lsm_cq_free(lsm_cq *q) {
    /* Drops the owner's reference; the queue goes when its last writer slot is dropped too. The Python
     * objects that own the queue and its slots can be collected in one garbage cycle, in any order: a
     * slot's finalizer (lsm_cq_drop_writer) ran after the queue's had freed it (AddressSanitizer). */
    if (!q) return;
    if (__atomic_sub_fetch(&q->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    free(q->buf);
    free(q->rep);
    pthread_cond_destroy(&q->grew);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

lsm_cqw *lsm_cqw_new(void) {
    lsm_cqw *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    /* CLOCK_MONOTONIC: a head waits for its group to fill on its own cv with a deadline. */
    pthread_condattr_t attr;
    int bad = pthread_condattr_init(&attr);
    if (!bad) {
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        bad = pthread_cond_init(&w->cv, &attr);
        pthread_condattr_destroy(&attr);
    }
    if (bad) {
        free(w);
        return NULL;
    }
    return w;
}

void lsm_cqw_free(lsm_cqw *w) {
    if (!w) return;
    pthread_cond_destroy(&w->cv);
    free(w->own);
    free(w);
}

int lsm_cqw_reserve(lsm_cqw *w, size_t cap) {
    /* Room for lsm_cq_join_kv to encode an entry of up to cap bytes in w: 0, or -1 (no memory). */
    if (cap <= w->own_cap) return 0;
    uint8_t *b = realloc(w->own, cap);
    if (!b) return -1;
    w->own = b;
    w->own_cap = cap;
    return 0;
}

static void push_locked(lsm_cq *q, lsm_cqw *w, const uint8_t *rep, size_t len, uint64_t count, uint64_t size,
                        int sync, int alone, int notify) {
    w->next = NULL;
    w->rep = rep;
    w->len = len;
    w->count = count;
    w->size = size;
    w->sync = sync;
    w->alone = alone;
    w->done = 0;
    w->status = 0;
    if (q->tail) q->tail->next = w;
    else q->head = w;
    q->tail = w;
    q->len++;
    if (q->turns_released < q->turns_issued) {
        /* This thread is inside a C call, so it does not hold the GIL: the next follower's turn. */
        q->counters[5]++;
        q->turn_ok += (YIELD_ONE - q->turn_ok) / 8;
        __atomic_store_n(&q->turn_released_at, now_ns(), __ATOMIC_RELAXED);
        __atomic_store_n(&q->turns_released, q->turns_released + 1, __ATOMIC_RELEASE);
    }
    /* Only the push that completes the waiting leader's group signals it: a signal per push cost ~2
     * more futex calls per group of 8 synced writers (36.6k -> 34.3k for 8,000 puts; context switches
     * per put unchanged at ~3.3: the leader was rarely asleep through several pushes). */
    if (q->leader_waits && q->len >= q->wait_target) pthread_cond_signal(&q->grew);
    if (notify && q->fill_head && !q->busy && q->len >= q->fill_target)
        poke(q->fill_head);
}

/* Signal w's condition variable and bump w->pokes, which a writer yielding instead of sleeping on it
 * watches (signalling a cv nobody sleeps on costs no system call). */
static void poke(lsm_cqw *w) {
    __atomic_fetch_add(&w->pokes, 1, __ATOMIC_RELEASE);
    pthread_cond_signal(&w->cv);
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* *t = now (CLOCK_MONOTONIC) + ns. */
static void add_ns(struct timespec *t, int64_t ns) {
    clock_gettime(CLOCK_MONOTONIC, t);
    t->tv_sec += ns / 1000000000;
    t->tv_nsec += ns % 1000000000;
    if (t->tv_nsec >= 1000000000) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000;
    }
}

/* Adaptive yield (RocksDB's write-thread "adaptive yield" is the same idea). A writer about to sleep
 * on its cv first gives the CPU away with sched_yield until it is poked, up to *left ns in all per
 * join. Why: on this 2-vCPU VM a futex wake of a sleeping thread costs ~10-15 us (an idle virtual CPU
 * halts and must be woken by an interrupt), and a group of 8 synced writers pays one per follower
 * plus one per hand-over of the GIL: with every wait sleeping, 8 threads made 53-66k puts/s with no
 * fdatasync at all against ~90k for one thread (104k yielding); yielding keeps both CPUs running, so
 * a wake-up is a flag the waiter sees at its next yield (8 synced threads, 16,000 puts: 22-30k ->
 * 44-47k puts/s at 500 us; 100-300 us ran out too often on this device's ~250 us group cycle). sched_yield
 * hands the CPU to any other runnable thread first, so the leader and the GIL holder still run.
 * Yields cost CPU, so they are kept only while they pay: yield_ok is a moving average (weight 1/8) of
 * the yields that saw their wake-up before running out of time (a wait longer than the budget: a slow
 * device); below 3/4 writers sleep at once, except every YIELD_PROBE-th wait, which measures again (so
 * from none paying it takes ~11 paying probes, ~90 waits, to yield again).
 * Called and returns with q->mu held (dropped while yielding): the caller re-checks its condition
 * afterwards. Returns 1 if it yielded (poked, deadline reached, or out of time), 0 if the caller must
 * sleep (no time left, or the average says no). */
static int yield_wait(lsm_cq *q, lsm_cqw *w, int64_t *left, int64_t deadline_ns) {
    if (*left <= 0) return 0;
    if (q->yield_ok < YIELD_ONE * 3 / 4 && (++q->yield_probe % YIELD_PROBE) != 0) {
        *left = 0;
        return 0;
    }
    uint32_t p = __atomic_load_n(&w->pokes, __ATOMIC_ACQUIRE);
    int64_t start = now_ns(), end = start + *left, t = start;
    if (deadline_ns && deadline_ns < end) end = deadline_ns;
    int poked = 0;
    pthread_mutex_unlock(&q->mu);
    while (t < end) {
        sched_yield();
        if (__atomic_load_n(&w->pokes, __ATOMIC_ACQUIRE) != p) {
            poked = 1;
            break;
        }
        t = now_ns();
    }
    if (!poked) t = now_ns();
    pthread_mutex_lock(&q->mu);
    int timed_out = !poked && deadline_ns && t >= deadline_ns;
    *left -= t - start;
    if (poked || timed_out) {
        /* A fill wait that reached its deadline counts as paid: the yield lasted as long as asked. */
        q->counters[3]++;
        q->yield_ok += (YIELD_ONE - q->yield_ok) / 8;
    } else {
        q->counters[4]++;
        q->yield_ok -= q->yield_ok / 8;
        *left = 0;
    }
    return 1;
}

static int64_t timespec_ns(const struct timespec *t) {
    return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/* The head's group: the head, then each following writer until one that leads alone, one that wants a
 * sync behind a head that does not (its durability would ride on an unsynced commit otherwise), or one
 * that would take the group past max_bytes. If the head wants a sync and fewer than wait_for writers are
 * queued, it first waits up to wait_ns for more to arrive (the threads the last commit woke need the GIL
 * to queue again): one fdatasync then serves them too, instead of groups alternating between the early
 * and the late half. */
static size_t group_locked(lsm_cq *q, uint64_t max_bytes, uint64_t *addrs, size_t max_n, int *need_sync,
                           int64_t wait_for, int64_t wait_ns) {
    lsm_cqw *w = q->head;
    if (w && w->sync && !w->alone && wait_ns > 0 && q->len < wait_for) {
        struct timespec deadline;
        add_ns(&deadline, wait_ns);
        q->leader_waits = 1;
        q->wait_target = wait_for;
        while (q->len < wait_for)
            if (pthread_cond_timedwait(&q->grew, &q->mu, &deadline) == ETIMEDOUT) break;
        q->leader_waits = 0;
    }
    size_t n = 0;
    int sync = 0;
    if (w && max_n > 0) {
        uint64_t size = w->size;
        sync = w->sync;
        addrs[n++] = (uint64_t)(uintptr_t)w;
        if (!w->alone) {
            for (lsm_cqw *o = w->next; o && n < max_n; o = o->next) {
                if (o->alone || (o->sync && !w->sync) || size + o->size > max_bytes) break;
                size += o->size;
                sync |= o->sync;
                addrs[n++] = (uint64_t)(uintptr_t)o;
            }
        }
    }
    *need_sync = sync;
    return n;
}

void lsm_cq_push(lsm_cq *q, lsm_cqw *w, const uint8_t *rep, size_t len, uint64_t count, uint64_t size, int sync,
                 int alone) {
    pthread_mutex_lock(&q->mu);
    push_locked(q, w, rep, len, count, size, sync, alone, 1);
    pthread_mutex_unlock(&q->mu);
}

int64_t lsm_cq_group(lsm_cq *q, uint64_t max_bytes, uint64_t *addrs, size_t max_n, int *need_sync,
                     int64_t wait_for, int64_t wait_ns) {
    pthread_mutex_lock(&q->mu);
    size_t n = group_locked(q, max_bytes, addrs, max_n, need_sync, wait_for, wait_ns);
    pthread_mutex_unlock(&q->mu);
    return (int64_t)n;
}

/* Return turns. After a group's fdatasync every follower wants the GIL at once: all but one then sleep
 * on CPython's GIL condition and each hand-over is a futex wake of a sleeping thread (~5 us here). With
 * yields on, finish gives the waiting followers turns in group order instead, and each returns to
 * Python only once the thread before it is back inside a C call (its next push, which releases one
 * turn), so the GIL it takes is free: 8 synced threads, 16,000 puts, interleaved: followers returned
 * ~8 -> ~4.6 us apart, 46-50k -> 51-52k puts/s. A turn that no push releases within TURN_WAIT_NS is
 * released by its waiter; a moving average of turns released by pushes turns turns off below 1/2
 * (threads that do not come back to write), tried again at every YIELD_PROBE-th finish. Called with
 * q->mu held by a follower whose group is done; returns with it held. */
static void wait_turn(lsm_cq *q, lsm_cqw *w) {
    uint64_t turn = w->turn;
    w->turn = 0;
    pthread_mutex_unlock(&q->mu);
    for (;;) {
        uint64_t r = __atomic_load_n(&q->turns_released, __ATOMIC_ACQUIRE);
        if (r >= turn) break;
        if (r + 1 == turn &&
            now_ns() - __atomic_load_n(&q->turn_released_at, __ATOMIC_RELAXED) > TURN_WAIT_NS) {
            pthread_mutex_lock(&q->mu);
            if (q->turns_released + 1 == turn) {
                q->counters[6]++;
                q->turn_ok -= q->turn_ok / 8;
                __atomic_store_n(&q->turn_released_at, now_ns(), __ATOMIC_RELAXED);
                __atomic_store_n(&q->turns_released, turn, __ATOMIC_RELEASE);
            }
            pthread_mutex_unlock(&q->mu);
            continue;
        }
        sched_yield();
    }
    pthread_mutex_lock(&q->mu);
}

static int64_t done_status(const lsm_cqw *w) { return w->status <= 0 ? w->status : LSM_EINVAL; }

/* lsm_cq_join with q->mu held (see the top of the file for who leads). */
static int64_t join_locked(lsm_cq *q, lsm_cqw *w, const uint8_t *rep, size_t len, uint64_t count,
                           uint64_t size, int sync, int alone, uint64_t max_bytes, uint64_t *addrs,
                           size_t max_n, int *need_sync, int64_t wait_for, int64_t wait_ns) {
    push_locked(q, w, rep, len, count, size, sync, alone, 0);
    lsm_cqw *fh = q->fill_head;
    if (fh && !q->busy && q->len >= q->fill_target) {
        /* This push completes the waiting head's group: lead it if this writer is in it. */
        size_t n = alone ? 0 : group_locked(q, max_bytes, addrs, max_n, need_sync, 0, 0);
        int in_group = 0;
        for (size_t i = n; i-- > 0 && !in_group;) in_group = addrs[i] == (uint64_t)(uintptr_t)w;
        if (in_group) {
            q->busy = 1;
            q->fill_head = NULL;
            q->counters[1]++;
            return (int64_t)n;
        }
        poke(fh); /* cut off by a size or sync limit: the head leads now */
    }
    struct timespec deadline;
    int waited = 0, expired = 0;
    int64_t yield_left = q->yield_ns;
    w->waiting = 1;
    for (;;) {
        if (w->done) {
            w->waiting = 0;
            if (w->turn) wait_turn(q, w);
            return done_status(w);
        }
        if (q->head == w && !q->busy) {
            /* wait_for < 0: as many as the last finish saw, read now (a value read at the join is
             * stale by a group: with it, groups of 5 and 3 of 8 threads kept alternating). */
            int64_t target = wait_for < 0 ? q->active : wait_for;
            if (w->sync && !w->alone && wait_ns > 0 && q->len < target && !expired) {
                if (!waited) {
                    add_ns(&deadline, wait_ns);
                    q->counters[0]++;
                }
                waited = 1;
                q->fill_head = w;
                q->fill_target = target;
                if (yield_wait(q, w, &yield_left, timespec_ns(&deadline))) {
                    if (q->fill_head == w && now_ns() >= timespec_ns(&deadline)) expired = 1;
                    continue;
                }
                if (pthread_cond_timedwait(&w->cv, &q->mu, &deadline) == ETIMEDOUT) expired = 1;
                continue;
            }
            w->waiting = 0;
            if (expired && q->fill_head == w) q->counters[2]++;
            if (q->fill_head == w) q->fill_head = NULL;
            q->busy = 1;
            return (int64_t)group_locked(q, max_bytes, addrs, max_n, need_sync, 0, 0);
        }
        /* A follower, or a head whose group a push took over (it cleared fill_head): wait until done, or
         * until the head may lead. */
        if (yield_wait(q, w, &yield_left, 0)) continue;
        pthread_cond_wait(&w->cv, &q->mu);
    }
}

int64_t lsm_cq_join(lsm_cq *q, lsm_cqw *w, const uint8_t *rep, size_t len, uint64_t count, uint64_t size,
                    int sync, int alone, uint64_t max_bytes, uint64_t *addrs, size_t max_n, int *need_sync,
                    int64_t wait_for, int64_t wait_ns) {
    pthread_mutex_lock(&q->mu);
    int64_t r = join_locked(q, w, rep, len, count, size, sync, alone, max_bytes, addrs, max_n, need_sync,
                            wait_for, wait_ns);
    pthread_mutex_unlock(&q->mu);
    return r;
}

static void wake_all(lsm_cq *q, lsm_cqw **wake, size_t nw) {
    /* After dropping mu: a woken writer's thread may return and free its slot at once, so
     * lsm_cq_drop_writer waits for `waking` to fall to 0 first. */
    for (size_t i = 0; i < nw; i++) poke(wake[i]);
    __atomic_fetch_sub(&q->waking, 1, __ATOMIC_RELEASE);
}

int64_t lsm_cq_finish(lsm_cq *q, size_t n, int64_t status) {
    /* Remove the first n writers (the leader's group) with `status`, wake the followers among them and
     * the next head. Returns the queue length left. Signalled after dropping mu: signalled under it,
     * each follower woke only to block on mu again (~9% fewer puts/s with 8 synced threads). */
    lsm_cqw *stack[64], **wake = stack;
    if (n + 1 > 64) wake = malloc((n + 1) * sizeof *wake);
    size_t nw = 0;
    int after = wake != NULL; /* else (no memory for the list) signalled under mu */
    pthread_mutex_lock(&q->mu);
    /* Return turns, when yields are on and turns have been paying (or as a probe). */
    int turns = q->yield_ns > 0 && (q->turn_ok >= YIELD_ONE / 2 || (++q->turn_probe % YIELD_PROBE) == 0);
    for (size_t i = 0; i < n && q->head; i++) {
        lsm_cqw *w = q->head;
        q->head = w->next;
        if (!q->head) q->tail = NULL;
        w->next = NULL;
        w->status = status;
        w->done = 1;
        if (turns && w->waiting) {
            if (q->turns_issued == q->turns_released)
                __atomic_store_n(&q->turn_released_at, now_ns(), __ATOMIC_RELAXED);
            w->turn = ++q->turns_issued;
        }
        q->len--;
        if (after) wake[nw++] = w;
        else poke(w);
    }
    q->busy = 0;
    q->active = (int64_t)n + q->len;
    if (q->head) {
        if (after) wake[nw++] = q->head;
        else poke(q->head);
    }
    int64_t left = q->len;
    if (after) __atomic_fetch_add(&q->waking, 1, __ATOMIC_ACQUIRE);
    pthread_mutex_unlock(&q->mu);
    if (after) wake_all(q, wake, nw);
    if (wake != stack) free(wake);
    return left;
}

int64_t lsm_cq_abandon(lsm_cq *q, lsm_cqw *w) {
    /* The leader w gives up its group without committing (its own write failed before the commit):
     * w leaves the queue, the rest stays queued, and the head is woken to lead. Returns the length. */
    pthread_mutex_lock(&q->mu);
    lsm_cqw *prev = NULL;
    for (lsm_cqw *x = q->head; x; prev = x, x = x->next) {
        if (x != w) continue;
        if (prev) prev->next = x->next;
        else q->head = x->next;
        if (q->tail == x) q->tail = prev;
        x->next = NULL;
        x->done = 1;
        q->len--;
        break;
    }
    q->busy = 0;
    if (q->head) poke(q->head);
    int64_t left = q->len;
    pthread_mutex_unlock(&q->mu);
    return left;
}

lsm_cqw *lsm_cqw_new_for(lsm_cq *q) {
    /* A writer slot that holds a reference to q until lsm_cq_drop_writer. */
    lsm_cqw *w = lsm_cqw_new();
    if (w) __atomic_add_fetch(&q->refs, 1, __ATOMIC_RELAXED);
    return w;
}

void lsm_cq_drop_writer(lsm_cq *q, lsm_cqw *w) {
    /* Free a slot made by lsm_cqw_new_for(q), once no finish is still signalling it, and drop its
     * reference to q. */
    while (__atomic_load_n(&q->waking, __ATOMIC_ACQUIRE) > 0) sched_yield();
    lsm_cqw_free(w);
    lsm_cq_free(q);
}

void lsm_cq_group_totals(lsm_cq *q, size_t n, uint64_t *out) {
    /* Of the first n queued writers (a leader's group): out[0] = their batches' sizes summed (header
     * included), out[1] = their entries. The leader's bookkeeping needs no Python loop over its group. */
    uint64_t size = 0, count = 0;
    pthread_mutex_lock(&q->mu);
    lsm_cqw *w = q->head;
    for (size_t i = 0; i < n && w; i++, w = w->next) {
        size += w->size;
        count += w->count;
    }
    pthread_mutex_unlock(&q->mu);
    out[0] = size;
    out[1] = count;
}

void lsm_cq_set_yield(lsm_cq *q, int64_t ns) {
    /* How long (ns) a writer in lsm_cq_join may yield the CPU in all before it sleeps; 0: never. */
    pthread_mutex_lock(&q->mu);
    q->yield_ns = ns > 0 ? ns : 0;
    q->yield_ok = YIELD_ONE;
    q->turn_ok = YIELD_ONE;
    pthread_mutex_unlock(&q->mu);
}

void lsm_cq_counters(lsm_cq *q, uint64_t *out) {
    /* out[0] = fill waits (a synced head waiting for the last group's size), out[1] = of which the
     * completing push led, out[2] = of which timed out; out[3] = yields that saw their wake-up (or
     * their fill wait's deadline), out[4] = yields that ran out of time; out[5] = return turns
     * released by a push, out[6] = by TURN_WAIT_NS running out. */
    pthread_mutex_lock(&q->mu);
    memcpy(out, q->counters, sizeof q->counters);
    pthread_mutex_unlock(&q->mu);
}

int64_t lsm_cq_len(lsm_cq *q) {
    pthread_mutex_lock(&q->mu);
    int64_t n = q->len;
    pthread_mutex_unlock(&q->mu);
    return n;
}

int64_t lsm_cq_join_kv(lsm_cq *q, lsm_cqw *w, int kind, const uint8_t *key, size_t klen,
                       const uint8_t *value, size_t vlen, int sync, uint64_t max_bytes, uint64_t *addrs,
                       size_t max_n, int *need_sync, int64_t wait_for, int64_t wait_ns) {
    /* lsm_cq_join of the batch holding only (kind, key, value) (a PUT or a DELETE), encoded here into w's
     * own buffer, which lsm_cqw_reserve made room for (21 + klen + vlen bytes): a single synced put
     * queues without a batch object or an encoding in Python. LSM_EINVAL, not queued, for another kind
     * or too small a buffer (never a group status: those are <= 0 statuses of finished groups). */
    if ((kind != KIND_PUT && kind != KIND_DELETE) || w->own_cap < 21 + klen + vlen)
        return LSM_CQ_NOT_QUEUED;
    size_t n = encode_kv(w->own, kind, key, klen, value, kind == KIND_PUT ? vlen : 0);
    return lsm_cq_join(q, w, w->own, n, 1, BATCH_HEADER + n, sync, 0, max_bytes, addrs, max_n, need_sync,
                       wait_for, wait_ns);
}
