/* The group-commit queue and the leader's I/O (docs/architecture.md "Write path"; the pure twin is the
 * Python queue and commit in lsmmail/engine/write_path.py).
 *
 * Writers queue here and wait with the GIL released (cffi releases it around every call): first giving
 * the CPU away with sched_yield while that pays (yield_wait, lsm_cq_set_yield), then asleep on their own
 * condition variable. lsm_cq_join returns a leader its group already picked; the leader commits it with
 * one call (lsm_cq_commit_framed: framing with XXH3, one pwrite, at most one fdatasync, every batch into
 * the C memtable), so it gives up the GIL once per commit instead of once per syscall and batch.
 * lsm_cq_finish then marks the group done and wakes exactly the threads that must run: the followers,
 * which return to Python once with their outcome, and the next head. A synced commit inserts the batches
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
#define _GNU_SOURCE /* sync_file_range */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commit.h"
#include "lsm_native.h"
#include "memtable.h"

struct lsm_cqw {
    pthread_cond_t cv;
    lsm_cqw *next;
    const uint8_t *rep; /* the batch's encoded entries (WAL payload after its 12-byte header) */
    size_t len;
    uint64_t count;
    uint64_t size;
    int sync;
    int alone; /* never grouped behind a leader and leads alone (a forced flush) */
    int done;
    uint32_t pokes; /* bumped (atomically) by every signal of cv: what a yielding writer watches */
    int64_t status;
    uint8_t *own; /* lsm_cq_join_kv's encoding of this writer's single entry (its rep) */
    size_t own_cap;
};


struct lsm_cq {
    pthread_mutex_t mu;
    pthread_cond_t grew; /* signalled by a push while a leader waits for its group to fill */
    int leader_waits;
    int64_t wait_target; /* the queue length a waiting leader wants (push signals `grew` only there) */
    int busy;            /* a leader holds a group (from lsm_cq_join's return to lsm_cq_finish/abandon) */
    int waking;          /* threads signalling writers after dropping mu (lsm_cq_drop_writer waits) */
    int64_t active;      /* writers the last finish saw: its group plus those still queued */
    lsm_cqw *fill_head;  /* a head waiting (on its own cv) for fill_target writers before it leads */
    int64_t fill_target;
    uint64_t counters[5]; /* fill waits, of which completed by a push that then led, and timed out;
                           * yields that saw their wake-up, and yields that ran out (then slept) */
    int64_t yield_ns;     /* lsm_cq_set_yield: how long a join may yield the CPU before it sleeps */
    int yield_ok;         /* recent yields that saw their wake-up, of YIELD_ONE (a moving average) */
    unsigned yield_probe; /* counts refused yields: every YIELD_PROBE-th yields anyway (re-measures) */
    lsm_cqw *head, *tail;
    int64_t len;
    uint8_t *buf; /* the commit section's framing buffer (only its holder touches it) */
    size_t cap;
    uint8_t *rep; /* the commit section's scratch for lsm_cq_commit_kv's batch entries */
    size_t rep_cap;
    int refs; /* the owner's reference plus one per writer slot made by lsm_cqw_new_for */
};

static void poke(lsm_cqw *w);

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
#define YIELD_ONE 1024
#define YIELD_PROBE 8
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

static int64_t timespec_ns(const struct timespec *t) { return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec; }

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
    for (;;) {
        if (w->done) return done_status(w);
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

/* pwrite buf at offset (continuing short writes), then fdatasync if asked; 0 or -errno (out[2] = bytes
 * written, out[3] = 1 for the write, 2 for the sync). */
static int64_t write_sync(int fd, const uint8_t *buf, size_t len, uint64_t offset, int do_sync, uint64_t *out) {
    size_t done = 0;
    while (done < len) {
        ssize_t k = pwrite(fd, buf + done, len - done, (off_t)(offset + done));
        if (k < 0) {
            if (errno == EINTR) continue;
            out[2] = done;
            out[3] = 1;
            return -(int64_t)errno;
        }
        done += (size_t)k;
    }
    out[2] = done;
    if (do_sync && fdatasync(fd) != 0) {
        out[3] = 2;
        return -(int64_t)errno;
    }
    return 0;
}

/* XXH3-64 (seed 0), the log's checksum (docs/format.md "Conventions"): the xxhash package's own
 * XXH3_64bits, handed over once by Python (lsm_cq_set_hash); NULL leaves framing to Python. */
typedef uint64_t (*xxh3_fn)(const void *data, size_t len);
static xxh3_fn g_xxh3;

void lsm_cq_set_hash(void *xxh3_64bits) { g_xxh3 = (xxh3_fn)xxh3_64bits; }

int lsm_cq_can_frame(void) { return g_xxh3 != NULL; }

#define LOG_BLOCK 32768
#define LOG_HEADER 7
#define BATCH_HEADER 12

/* Append one log record (payload = u64 seq, u32 count, rep) to out at out_pos, cut into fragments as
 * docs/format.md "Log format" says (and wal.py's LogWriter.encode_record does): no fragment crosses a
 * 32 KiB block; a block tail shorter than a header is zero-filled. *boff is the offset in the current
 * block. out must have room for frame_bound(rep_len) bytes. Returns the new out_pos. */
static size_t frame_record(uint8_t *out, size_t pos, uint64_t *boff, uint64_t seq, uint64_t count,
                           const uint8_t *rep, size_t rep_len) {
    uint8_t hdr[BATCH_HEADER];
    for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)(seq >> (8 * i));
    for (int i = 0; i < 4; i++) hdr[8 + i] = (uint8_t)(count >> (8 * i));
    size_t total = BATCH_HEADER + rep_len, done = 0;
    int begin = 1;
    do {
        size_t room = LOG_BLOCK - (size_t)*boff;
        if (room < LOG_HEADER) {
            memset(out + pos, 0, room);
            pos += room;
            *boff = 0;
            room = LOG_BLOCK;
        }
        size_t left = total - done, frag = left < room - LOG_HEADER ? left : room - LOG_HEADER;
        int end = frag == left;
        uint8_t type = begin && end ? 1 : begin ? 2 : end ? 4 : 3;
        uint8_t *h = out + pos;
        h[4] = (uint8_t)frag;
        h[5] = (uint8_t)(frag >> 8);
        h[6] = type;
        /* The payload piece [done, done + frag) of hdr || rep. */
        size_t p = done, o = pos + LOG_HEADER;
        if (p < BATCH_HEADER) {
            size_t k = BATCH_HEADER - p < frag ? BATCH_HEADER - p : frag;
            memcpy(out + o, hdr + p, k);
            o += k;
            p += k;
        }
        if (done + frag > p) memcpy(out + o, rep + (p - BATCH_HEADER), done + frag - p);
        uint32_t cks = (uint32_t)g_xxh3(h + 6, 1 + frag);
        h[0] = (uint8_t)cks;
        h[1] = (uint8_t)(cks >> 8);
        h[2] = (uint8_t)(cks >> 16);
        h[3] = (uint8_t)(cks >> 24);
        pos += LOG_HEADER + frag;
        *boff += LOG_HEADER + frag;
        done += frag;
        begin = 0;
    } while (done < total);
    return pos;
}

/* Bytes frame_record may produce for a rep of rep_len: the payload plus, per block it touches, a header
 * and at most 6 bytes of padding. */
static size_t frame_bound(size_t rep_len) {
    size_t total = BATCH_HEADER + rep_len;
    return total + (total / (LOG_BLOCK - LOG_HEADER - 6) + 2) * (LOG_HEADER + 6);
}

/* Start writing [offset, offset + len) of fd back to the device, without waiting: only a head start for
 * the fdatasync that follows, which waits for it and reports any error of it (an error here is ignored
 * for that reason). Measured on this project's VM (a C loop, pwrite, CPU work, fdatasync; 800-1,000 of
 * each way, interleaved, 5 runs): an 8.4 KB write with 8.5 us of work 87-132 -> 78-120 us p50 (9-13 us
 * less: the work hidden); a 1.1 KB write with 1 us of work unchanged (within 1.6 us). The call itself
 * takes ~14 us, but the fdatasync then has that much less to do. */
static void start_writeback(int fd, uint64_t offset, size_t len) {
#ifdef SYNC_FILE_RANGE_WRITE
    (void)sync_file_range(fd, (off_t)offset, (off_t)len, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd;
    (void)offset;
    (void)len;
#endif
}

static int grow(lsm_cq *q, size_t need) {
    if (need <= q->cap) return 0;
    size_t cap = q->cap ? q->cap : 65536;
    while (cap < need) cap *= 2;
    uint8_t *b = realloc(q->buf, cap);
    if (!b) return -1;
    q->buf = b;
    q->cap = cap;
    return 0;
}

int64_t lsm_cq_frame_bound(size_t rep_bytes, size_t nrec) {
    /* An upper bound of the framed size of nrec records whose reps total rep_bytes (for preallocation). */
    return (int64_t)(frame_bound(rep_bytes) + nrec * (BATCH_HEADER + 2 * (LOG_HEADER + 6)));
}

int64_t lsm_cq_commit_framed(lsm_cq *q, int fd, uint64_t offset, uint64_t block_offset, int do_sync, void *mem,
                             uint64_t first_seq, size_t n, const uint8_t *rep, size_t rep_len, uint64_t count,
                             uint64_t *out) {
    /* lsm_cq_commit (n > 0: the first n queued writers) or lsm_wal_commit_one (n == 0: the batch rep
     * with count entries), framing the records here with their checksums instead of taking them framed.
     * The caller holds the commit section (q->buf is its scratch). out[] as lsm_cq_commit; out[4] =
     * the framed length (= out[2] on success). LSM_ESPACE if the buffer cannot grow, LSM_EINVAL without
     * a hash function. Unlike lsm_cq_commit, with do_sync the batches are inserted between the write and
     * the fdatasync, overlapping the device's write (~8 us for a group of 8 one-KiB puts): a failed
     * fdatasync (out[3] = 2) leaves them in the memtable under sequence numbers the caller never
     * publishes (it poisons the DB), as a memtable error leaves the batches before the bad one. */
    out[0] = out[1] = out[2] = out[3] = out[4] = 0;
    if (!g_xxh3) return LSM_EINVAL;
    lsm_cqw *w = NULL;
    size_t need = 0;
    if (n > 0) {
        pthread_mutex_lock(&q->mu);
        w = q->head;
        pthread_mutex_unlock(&q->mu);
        lsm_cqw *x = w;
        for (size_t i = 0; i < n && x; i++, x = i < n ? x->next : NULL) need += frame_bound(x->len);
    } else {
        need = frame_bound(rep_len);
    }
    if (grow(q, need)) return LSM_ESPACE;
    size_t pos = 0;
    uint64_t boff = block_offset % LOG_BLOCK, seq = first_seq;
    if (n > 0) {
        lsm_cqw *x = w;
        for (size_t i = 0; i < n && x; i++, x = i < n ? x->next : NULL) {
            pos = frame_record(q->buf, pos, &boff, seq, x->count, x->rep, x->len);
            seq += x->count;
        }
    } else {
        pos = frame_record(q->buf, pos, &boff, seq, count, rep, rep_len);
    }
    out[4] = pos;
    int64_t r = write_sync(fd, q->buf, pos, offset, 0, out);
    if (r < 0) return r;
    if (do_sync) start_writeback(fd, offset, pos);
    uint64_t tmp[2];
    seq = first_seq;
    if (n == 0) {
        r = lsm_mem_add_rep((lsm_memtable *)mem, rep, rep_len, seq, count, tmp);
        if (r < 0) {
            out[3] = 3;
            return r;
        }
        out[0] = tmp[0];
        out[1] = tmp[1];
    }
    for (size_t i = 0; n > 0 && i < n && w; i++, w = i < n ? w->next : NULL) {
        r = lsm_mem_add_rep((lsm_memtable *)mem, w->rep, w->len, seq, w->count, tmp);
        if (r < 0) {
            out[3] = 3;
            return r;
        }
        out[0] += tmp[0];
        out[1] += tmp[1];
        seq += w->count;
    }
    if (do_sync && fdatasync(fd) != 0) {
        out[3] = 2;
        return -(int64_t)errno;
    }
    return 0;
}

static size_t put_varint(uint8_t *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

#define KIND_DELETE 0
#define KIND_PUT 1
#define MAX_SEQUENCE (((uint64_t)1 << 56) - 1)

/* The batch entries of the single entry (kind, key, value) -- a PUT, or a DELETE (value ignored) -- as
 * WriteBatch encodes them (docs/format.md "WAL record payload"): kind, varint key length, key, and for a
 * PUT varint value length and value. p has room for 21 + klen + vlen bytes. Returns the length. */
static size_t encode_kv(uint8_t *p, int kind, const uint8_t *key, size_t klen, const uint8_t *value,
                        size_t vlen) {
    size_t n = 0;
    p[n++] = (uint8_t)kind;
    n += put_varint(p + n, klen);
    memcpy(p + n, key, klen);
    n += klen;
    if (kind == KIND_PUT) {
        n += put_varint(p + n, vlen);
        if (vlen) memcpy(p + n, value, vlen);
        n += vlen;
    }
    return n;
}

int64_t lsm_cq_commit_kv(lsm_cq *q, int fd, uint64_t offset, uint64_t block_offset, int do_sync, void *mem,
                         uint64_t seq, int kind, const uint8_t *key, size_t klen, const uint8_t *value,
                         size_t vlen, uint64_t *out) {
    /* lsm_cq_commit_framed (n == 0) of the batch holding the single entry (kind, key, value) -- a PUT,
     * or a DELETE (value ignored) -- encoded here as WriteBatch does (docs/format.md "WAL record
     * payload"), so a single put or delete is one call from Python. The caller holds the commit
     * section and checked the key (1..65535 bytes) and value (< 2**32 bytes). out[] as
     * lsm_cq_commit_framed, plus out[5] = the entries' encoded length (the batch's size is 12 more).
     * LSM_EINVAL for another kind or a sequence number past 56 bits, before anything is written. */
    out[5] = 0;
    if ((kind != KIND_PUT && kind != KIND_DELETE) || seq > MAX_SEQUENCE || seq == 0) {
        out[0] = out[1] = out[2] = out[3] = out[4] = 0;
        return LSM_EINVAL;
    }
    if (kind == KIND_DELETE) vlen = 0;
    size_t need = 1 + 10 + klen + 10 + vlen;
    if (need > q->rep_cap) {
        size_t cap = q->rep_cap ? q->rep_cap : 4096;
        while (cap < need) cap *= 2;
        uint8_t *b = realloc(q->rep, cap);
        if (!b) {
            out[0] = out[1] = out[2] = out[3] = out[4] = 0;
            return LSM_ESPACE;
        }
        q->rep = b;
        q->rep_cap = cap;
    }
    size_t n = encode_kv(q->rep, kind, key, klen, value, vlen);
    uint8_t *p = q->rep;
    int64_t r = lsm_cq_commit_framed(q, fd, offset, block_offset, do_sync, mem, seq, 0, p, n, 1, out);
    out[5] = n;
    return r;
}

int64_t lsm_wal_commit_one(int fd, const uint8_t *buf, size_t len, uint64_t offset, int do_sync, void *mem,
                           const uint8_t *rep, size_t rep_len, uint64_t seq, uint64_t count, uint64_t *out) {
    /* lsm_cq_commit for one batch outside the queue (a writer alone, holding the commit section): the
     * same out[] and returns. */
    out[0] = out[1] = out[2] = out[3] = 0;
    int64_t r = write_sync(fd, buf, len, offset, do_sync, out);
    if (r < 0) return r;
    uint64_t tmp[2];
    r = lsm_mem_add_rep((lsm_memtable *)mem, rep, rep_len, seq, count, tmp);
    if (r < 0) {
        out[3] = 3;
        return r;
    }
    out[0] = tmp[0];
    out[1] = tmp[1];
    return 0;
}

int64_t lsm_cq_commit(lsm_cq *q, int fd, const uint8_t *buf, size_t len, uint64_t offset, int do_sync,
                      void *mem, uint64_t first_seq, size_t n, uint64_t *out) {
    /* The leader's I/O for the first n queued writers: write buf at offset, fdatasync if asked, then
     * insert each writer's batch at consecutive sequence numbers from first_seq. out[0] = RANGE_DEL
     * entries seen, out[1] = key and value bytes inserted, out[2] = bytes written, out[3] = the step
     * that failed (1 write, 2 sync, 3 memtable). Returns 0; -errno for a failed write or sync (nothing
     * inserted); or a memtable error (LSM_ECORRUPT, LSM_EINVAL, LSM_ESPACE) after inserting the batches
     * before the bad one. */
    out[0] = out[1] = out[2] = out[3] = 0;
    int64_t r0 = write_sync(fd, buf, len, offset, do_sync, out);
    if (r0 < 0) return r0;
    /* The group cannot leave the queue before lsm_cq_finish, and its links were set under q->mu before
     * lsm_cq_join handed it over, so they are read without the lock; the last member's `next` (which a
     * push may be setting now) is never read. */
    lsm_cqw *w;
    pthread_mutex_lock(&q->mu);
    w = q->head;
    pthread_mutex_unlock(&q->mu);
    uint64_t seq = first_seq, tmp[2];
    for (size_t i = 0; i < n && w; i++, w = i < n ? w->next : NULL) {
        int64_t r = lsm_mem_add_rep((lsm_memtable *)mem, w->rep, w->len, seq, w->count, tmp);
        if (r < 0) {
            out[3] = 3;
            return r;
        }
        out[0] += tmp[0];
        out[1] += tmp[1];
        seq += w->count;
    }
    return 0;
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
    for (size_t i = 0; i < n && q->head; i++) {
        lsm_cqw *w = q->head;
        q->head = w->next;
        if (!q->head) q->tail = NULL;
        w->next = NULL;
        w->status = status;
        w->done = 1;
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

void lsm_cq_set_yield(lsm_cq *q, int64_t ns) {
    /* How long (ns) a writer in lsm_cq_join may yield the CPU in all before it sleeps; 0: never. */
    pthread_mutex_lock(&q->mu);
    q->yield_ns = ns > 0 ? ns : 0;
    q->yield_ok = YIELD_ONE;
    pthread_mutex_unlock(&q->mu);
}

void lsm_cq_counters(lsm_cq *q, uint64_t *out) {
    /* out[0] = fill waits (a synced head waiting for the last group's size), out[1] = of which the
     * completing push led, out[2] = of which timed out; out[3] = yields that saw their wake-up (or
     * their fill wait's deadline), out[4] = yields that ran out of time. */
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
