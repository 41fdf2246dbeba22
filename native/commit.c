/* The group-commit queue and the leader's I/O (docs/architecture.md "Write path"; the pure twin is the
 * Python queue and commit in lsmmail/engine/write_path.py).
 *
 * Writers queue here and sleep on their own condition variable with the GIL released (cffi releases it
 * around every call). The writer that reaches the head leads: lsm_cq_join returns it its group already
 * picked (waiting briefly, still without the GIL, for writers the last commit woke); Python frames the
 * group's WAL records (the checksums are XXH3 in Python), and lsm_cq_commit writes them with one pwrite,
 * at most one fdatasync, and inserts every batch into the C memtable, in one call, so the leader gives
 * up the GIL once per commit instead of once per syscall and batch (each hand-off lets a follower run
 * its ~5-10 us of Python first). lsm_cq_finish then marks the group done and wakes exactly the threads
 * that must run: the followers, which return to Python once with their outcome, and the next head.
 *
 * Only the leader removes writers (from the head); anyone appends at the tail, under q->mu. A writer
 * struct belongs to one thread and is in the queue at most once; its rep pointer is the caller's buffer,
 * valid because the caller stays inside lsm_cq_join until its group is done. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
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
    int64_t status;
};

struct lsm_cq {
    pthread_mutex_t mu;
    pthread_cond_t grew; /* signalled by a push while a leader waits for its group to fill */
    int leader_waits;
    int64_t wait_target; /* the queue length a waiting leader wants (push signals `grew` only there) */
    lsm_cqw *head, *tail;
    int64_t len;
    uint8_t *buf; /* the commit section's framing buffer (only its holder touches it) */
    size_t cap;
    uint8_t *rep; /* the commit section's scratch for lsm_cq_commit_kv's batch entries */
    size_t rep_cap;
};

lsm_cq *lsm_cq_new(void) {
    lsm_cq *q = calloc(1, sizeof *q);
    if (!q) return NULL;
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
    if (!q) return;
    free(q->buf);
    free(q->rep);
    pthread_cond_destroy(&q->grew);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

lsm_cqw *lsm_cqw_new(void) {
    lsm_cqw *w = calloc(1, sizeof *w);
    if (w && pthread_cond_init(&w->cv, NULL) != 0) {
        free(w);
        return NULL;
    }
    return w;
}

void lsm_cqw_free(lsm_cqw *w) {
    if (!w) return;
    pthread_cond_destroy(&w->cv);
    free(w);
}

static void push_locked(lsm_cq *q, lsm_cqw *w, const uint8_t *rep, size_t len, uint64_t count, uint64_t size,
                        int sync, int alone) {
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
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += wait_ns / 1000000000;
        deadline.tv_nsec += wait_ns % 1000000000;
        if (deadline.tv_nsec >= 1000000000) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000;
        }
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
    push_locked(q, w, rep, len, count, size, sync, alone);
    pthread_mutex_unlock(&q->mu);
}

int64_t lsm_cq_group(lsm_cq *q, uint64_t max_bytes, uint64_t *addrs, size_t max_n, int *need_sync,
                     int64_t wait_for, int64_t wait_ns) {
    pthread_mutex_lock(&q->mu);
    size_t n = group_locked(q, max_bytes, addrs, max_n, need_sync, wait_for, wait_ns);
    pthread_mutex_unlock(&q->mu);
    return (int64_t)n;
}

int64_t lsm_cq_join(lsm_cq *q, lsm_cqw *w, const uint8_t *rep, size_t len, uint64_t count, uint64_t size,
                    int sync, int alone, uint64_t max_bytes, uint64_t *addrs, size_t max_n, int *need_sync,
                    int64_t wait_for, int64_t wait_ns) {
    pthread_mutex_lock(&q->mu);
    push_locked(q, w, rep, len, count, size, sync, alone);
    while (!w->done && q->head != w) pthread_cond_wait(&w->cv, &q->mu);
    int64_t r;
    if (w->done) r = w->status <= 0 ? w->status : LSM_EINVAL;
    else r = (int64_t)group_locked(q, max_bytes, addrs, max_n, need_sync, wait_for, wait_ns);
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
     * a hash function. */
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
    int64_t r = write_sync(fd, q->buf, pos, offset, do_sync, out);
    if (r < 0) return r;
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
        return 0;
    }
    for (size_t i = 0; i < n && w; i++, w = i < n ? w->next : NULL) {
        r = lsm_mem_add_rep((lsm_memtable *)mem, w->rep, w->len, seq, w->count, tmp);
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
    uint8_t *p = q->rep;
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

int64_t lsm_cq_finish(lsm_cq *q, size_t n, int64_t status) {
    /* Remove the first n writers (the leader's group, leader first) with `status`, wake the followers
     * among them and the next head. Returns the queue length left. */
    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < n && q->head; i++) {
        lsm_cqw *w = q->head;
        q->head = w->next;
        if (!q->head) q->tail = NULL;
        w->next = NULL;
        w->status = status;
        w->done = 1;
        q->len--;
        if (i > 0) pthread_cond_signal(&w->cv);
    }
    if (q->head) pthread_cond_signal(&q->head->cv);
    int64_t left = q->len;
    pthread_mutex_unlock(&q->mu);
    return left;
}

int64_t lsm_cq_len(lsm_cq *q) {
    pthread_mutex_lock(&q->mu);
    int64_t n = q->len;
    pthread_mutex_unlock(&q->mu);
    return n;
}
