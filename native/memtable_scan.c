/* memtable_scan.c: reading the memtable in order: lsm_mem_scan (forward, and reverse without a search per
 * version) and the read-only cursors native/scan.c merges memtables with. Nodes and their helpers are in
 * memtable_internal.inc; inserts in memtable.c and memtable_batch.c; flush scans in memtable_flush.c. */
#include <stdint.h>
#include <string.h>

#include "memtable_internal.inc"
#include "scan.h"

static int64_t emit(const node *x, size_t n, uint8_t *buf, size_t cap, size_t *pos, uint64_t *ends,
                    uint64_t *trailers, uint64_t *need) {
    size_t sz = (size_t)x->klen + x->vlen;
    if (cap - *pos < sz) {
        if (n == 0) *need = sz;
        return -1;
    }
    memcpy(buf + *pos, key_of(x), sz);
    ends[2 * n] = *pos + x->klen;
    *pos += sz;
    ends[2 * n + 1] = *pos;
    trailers[n] = x->trailer;
    return 0;
}

static inline int key_lt(const node *x, const uint8_t *key, size_t klen) {
    return lsm_key_cmp(key_of(x), x->klen, key, klen) < 0;
}

/* Last node < (key, trailer), or the last node of all when key is NULL; the head if none. Fills prev[]
 * with the last node < the target on levels 0..height-1 (prev[0] is the result). */
static const node *seek_back(const lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t trailer,
                             const node **prev, int *height) {
    node *x = m->head;
    int level = __atomic_load_n(&m->height, __ATOMIC_RELAXED) - 1;
    *height = level + 1;
    for (;;) {
        node *nx = load(&x->next[level]);
        if (nx && (!key || cmp_node(nx, key, klen, trailer) < 0)) {
            x = nx;
        } else {
            prev[level] = x;
            if (level == 0) return x;
            level--;
        }
    }
}

/* Versions one reverse scan call returns at most: the run collected by a forward walk is kept in a ring
 * of this many node pointers on the stack (2 KiB); the Python side asks for at most 256 per call. */
#define BACK_MAX 256

/* The run scan_back and lsm_mem_cursor_back emit: from the node on the lowest level of prev[] expected to
 * lie at least `need` versions before hi, walk level 0 forward to hi, keeping the last `cap` nodes in
 * ring (index i % cap). Returns how many nodes were walked (the newest min(count, cap) are in ring); *from
 * = the level's node the walk started at (the head when it started at the first node). */
static size_t back_run(const lsm_memtable *m, const node *const *prev, int height, const node *hi,
                       size_t need, const node **ring, size_t cap, const node **from) {
    size_t reach = 1;
    int lv = 0;
    while (lv + 1 < height && (reach < need || prev[lv] == hi)) {
        lv++;
        reach *= 4;
    }
    const node *lo = prev[lv];
    const node *y = lo == m->head ? load(&lo->next[0]) : lo;
    size_t cnt = 0;
    *from = lo;
    for (;;) {
        ring[cnt++ % cap] = y;
        if (y == hi) break;
        y = load(&y->next[0]);
    }
    return cnt;
}

/* The reverse half of lsm_mem_scan without a skiplist search per version: one search for the last node
 * below the target also yields, on level L, a node expected 4^L versions further back; walking level 0
 * forward from it to the found node collects that run, which is emitted back to front. The next search
 * starts below the run's first node. Nodes linked in by a writer meanwhile are either inside a walked
 * run (in order, as the forward scan sees them) or found by a later search, so the output stays in
 * strictly descending internal order, as the per-version search gave it. */
static int64_t scan_back(const lsm_memtable *m, const void *after, const uint8_t *start, size_t slen,
                         const uint8_t *end, size_t elen, size_t max_n, uint8_t *buf, size_t cap,
                         uint64_t *ends, uint64_t *trailers, const void **last, uint64_t *state) {
    const node *prev[MAX_HEIGHT];
    const node *ring[BACK_MAX];
    size_t n = 0, pos = 0, want = max_n < BACK_MAX ? max_n : BACK_MAX;
    int height;
    const node *hi;
    if (after) {
        const node *a = after;
        hi = seek_back(m, key_of(a), a->klen, a->trailer, prev, &height);
    } else {
        hi = seek_back(m, end, elen, UINT64_MAX, prev, &height);
    }
    while (n < want) {
        if (hi == m->head) goto exhausted;
        /* The lowest level whose predecessor is expected to lie at least the remaining count back. */
        const node *lo;
        size_t cnt = back_run(m, prev, height, hi, want - n, ring, BACK_MAX, &lo);
        size_t k = cnt < BACK_MAX ? cnt : BACK_MAX;
        for (size_t i = 0; i < k && n < want; i++) {
            const node *x = ring[(cnt - 1 - i) % BACK_MAX];
            if (start && key_lt(x, start, slen)) goto exhausted;
            if (emit(x, n, buf, cap, &pos, ends, trailers, &state[1])) return (int64_t)n;
            *last = x;
            n++;
        }
        if (n == want) break;
        /* The whole run from lo is out: continue below lo (or stop at the head). */
        if (lo == m->head) goto exhausted;
        hi = seek_back(m, key_of(lo), lo->klen, lo->trailer, prev, &height);
    }
    return (int64_t)n;
exhausted:
    state[0] = 1;
    return (int64_t)n;
}

int64_t lsm_mem_scan(const lsm_memtable *m, int reverse, const void *after, const uint8_t *start, size_t slen,
                     const uint8_t *end, size_t elen, size_t max_n, uint8_t *buf, size_t cap, uint64_t *ends,
                     uint64_t *trailers, const void **last, uint64_t *state) {
    /* Copy up to max_n versions with start <= key < end (NULL = unbounded) into buf: entry i's key is
     * buf[ends[2i-1]:ends[2i]] (from 0 for i = 0), its value buf[ends[2i]:ends[2i+1]], its trailer
     * trailers[i]. Forward = internal order, reverse = its exact reverse (at most BACK_MAX versions per
     * call). `after` = the *last of the previous chunk (NULL to begin). state[0] = 1 once the range is
     * exhausted; state[1] = bytes needed when not even the first version fits in cap (then 0 is returned:
     * grow buf and call again). */
    size_t n = 0, pos = 0;
    const node *x;
    state[0] = 0;
    state[1] = 0;
    if (reverse)
        return scan_back(m, after, start, slen, end, elen, max_n, buf, cap, ends, trailers, last, state);
    if (after) x = load(&((const node *)after)->next[0]);
    else if (start) x = lsm_mem_find_ge(m, start, slen, UINT64_MAX, NULL);
    else x = load(&m->head->next[0]);
    for (; x && n < max_n; x = load(&x->next[0])) {
        if (end && !key_lt(x, end, elen)) break;
        if (emit(x, n, buf, cap, &pos, ends, trailers, &state[1])) return (int64_t)n;
        *last = x;
        n++;
    }
    if (n < max_n) state[0] = 1;
    return (int64_t)n;
}

/* ---- Read-only cursor access for the C scan (native/scan.c); added after the functions above. ---- */

const void *lsm_mem_cursor_ge(const lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t trailer) {
    /* The first node >= (key, trailer) in internal order (the first node when key is NULL), or NULL. */
    if (!key) return load(&m->head->next[0]);
    return lsm_mem_find_ge(m, key, klen, trailer, NULL);
}

const void *lsm_mem_cursor_lt(const lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t trailer) {
    /* The last node < (key, trailer) in internal order (the last node when key is NULL), or NULL. */
    const node *prev[MAX_HEIGHT];
    int height;
    const node *x = seek_back(m, key, klen, trailer, prev, &height);
    return x == m->head ? NULL : x;
}

const void *lsm_mem_cursor_next(const void *n) {
    /* The node after n, or NULL. */
    return load(&((const node *)n)->next[0]);
}

void lsm_mem_cursor_read(const void *n, const uint8_t **key, size_t *klen, uint64_t *trailer,
                         const uint8_t **value, size_t *vlen) {
    /* Node n's user key, trailer and value (valid while the memtable lives: nodes never move). */
    const node *x = n;
    *key = key_of(x);
    *klen = x->klen;
    *trailer = x->trailer;
    *value = val_of(x);
    *vlen = x->vlen;
}

size_t lsm_mem_cursor_back(const lsm_memtable *m, const uint8_t *key, size_t klen, uint64_t trailer,
                           const void **out, size_t want, size_t max) {
    /* Up to max (at most BACK_MAX) nodes < (key, trailer) (the last nodes when key is NULL), nearest
     * first, into out; returns how many. One skiplist search plus a walk on level 0, as scan_back does,
     * instead of a search per node (a reverse step cost ~0.8 us in a 20k-node memtable). The walk starts
     * on the lowest level expected to lie want (<= max) nodes back, and every node it passes is kept, up
     * to max: a walk sized for 8 passes ~16 nodes, each a cache miss, and keeping only 8 of them sent a
     * third of the reverse scans of 50 back for a second search and a 64-node walk. Nodes linked in
     * meanwhile may be missed: they are newer than any snapshot a scan reading them holds. */
    const node *prev[MAX_HEIGHT];
    const node *ring[BACK_MAX];
    int height;
    if (max > BACK_MAX) max = BACK_MAX;
    if (want > max) want = max;
    if (max == 0) return 0;
    const node *hi = seek_back(m, key, klen, trailer, prev, &height);
    if (hi == m->head) return 0;
    const node *lo;
    size_t cnt = back_run(m, prev, height, hi, want, ring, max, &lo);
    size_t k = cnt < max ? cnt : max;
    for (size_t i = 0; i < k; i++) out[i] = ring[(cnt - 1 - i) % max];
    return k;
}
