/* memtable_batch.c: the memtable's batch insert for batches of SORTED_MIN entries or more (lsm_mem_add_rep
 * in memtable.c hands them here): sorted, searched many at once, linked in order. The node layout and the
 * helpers it shares with single inserts are in memtable_internal.inc; scans in memtable_scan.c, flushes in
 * memtable_flush.c. */
#include <stdlib.h>
#include <string.h>

#include "memtable_internal.inc"

/* ---- Batch insert: sorted, searched many at once, linked in order.
 *
 * Why: an insert in random order is a skiplist search from the top, and in a memtable grown to 200k
 * entries (the bench's deleterandom: 200 batches of 1,000 random deletes) its lower levels are ~10
 * dependent cache misses, one after the other: ~370-450 ns per entry of lsm_mem_add_rep (thread CPU time,
 * in-process A/B of the old and new code, medians of 7), ~290-300 with each batch handed over pre-sorted.
 * What: the batch is parsed into a scratch array and sorted into internal order (a radix sort of the 6
 * key bytes after the prefix every key of the batch shares, ties settled by the full comparison: ~2% of
 * the time). Then
 *  1. search_old finds each entry's predecessor on every level it will be linked on, in the list as it
 *     was before the batch. The upper levels (each a 4^l-th of the list: at most FINE_NODES nodes, so
 *     they stay cached) are walked with one splice in sorted order: consecutive entries share them.
 *     Below, every step is a likely miss, so FINE_WAYS entries are searched at once, round robin, each
 *     prefetching the node it compares next: their misses overlap instead of queueing.
 *  2. The entries are linked in sorted order, each after its old predecessor on each level, or after the
 *     entry of this batch linked last on that level if that one had the same old predecessor.
 * Measured (same A/B): random batches 370-450 -> 140-150 ns per entry; pre-sorted 290-300 -> ~150; 1 KiB
 * puts in batches of 1,000 (30k entries) 475 -> 270, of 100: 490 -> 340. Steps on the way: sorting plus a
 * RocksDB-style splice (one search finger, every level) gave ~250; comparing keys inline instead of
 * calling libc memcmp ~225; interleaving 8 searches ~178, 16 ~170, 32 no better; setting the filter bits
 * one word at a time ~155; the key in the search state ~145. Prefetching the filter line and slot further
 * ahead, or the predecessors before linking, changed nothing measurable; nor did a branch-free search
 * step. Where the ~145 ns go (cycle counts): the search ~100 (its cached levels ~35, the interleaved
 * ones ~65: ~6 steps of ~10 ns, compute-bound now), sort and hashes ~20, linking ~19.
 * Semantics are insert()'s: the same nodes (entry i at seq + i), filter bits before a node's release-store
 * links, its point slot after; readers only ever see a sorted list. Only the one writer links nodes, so
 * the old list search_old walks does not change under it. */

/* SORTED_MIN (memtable_internal.inc): the smallest batch that pays for the sort and the interleaving. */
/* Entries sorted together: an entry's index is the low 16 bits of its sort word. */
#define SORT_MAX ((size_t)1 << 16)
/* Per entry: the parsed entry, two sort words, its predecessors (up to MAX_HEIGHT), their offset and its
 * height. Kept in the memtable between batches up to 2,048 entries' worth (~360 KiB, mostly never
 * touched: ~1.33 predecessors per entry; counted in lsm_mem_usage while held); a bigger batch's arrays are
 * freed after it. */
#define SCRATCH_PER (sizeof(bent) + 2 * sizeof(uint64_t) + MAX_HEIGHT * sizeof(node *) + sizeof(uint32_t) + 1)
#define SCRATCH_KEEP ((size_t)2048 * SCRATCH_PER)

/* One parsed entry of a batch. */
typedef struct bent {
    const uint8_t *key;
    const uint8_t *val;
    uint32_t klen, vlen;
    uint64_t trailer;
} bent;

/* Parse n entries at *pos (the first at sequence seq) into e[], skipping RANGE_DEL ones (counted in *rd).
 * Returns how many were kept, -1 if an entry is malformed. */
static int64_t parse_run(const uint8_t *rep, size_t len, size_t *pos, size_t n, uint64_t seq, bent *e,
                         uint64_t *rd) {
    uint8_t kind;
    size_t koff, voff, k = 0;
    uint64_t klen, vlen;
    for (size_t i = 0; i < n; i++, seq++) {
        if (lsm_mem_parse_entry(rep, len, pos, &kind, &koff, &klen, &voff, &vlen)) return -1;
        if (kind == KIND_RANGE_DEL) {
            (*rd)++;
            continue;
        }
        e[k].key = rep + koff;
        e[k].val = rep + voff;
        e[k].klen = (uint32_t)klen;
        e[k].vlen = (uint32_t)vlen;
        e[k].trailer = seq << 8 | kind;
        k++;
    }
    return (int64_t)k;
}

/* How many leading bytes all n (>= 1) keys share. */
static size_t common_prefix(const bent *e, size_t n) {
    size_t cp = e[0].klen;
    const uint8_t *a = e[0].key;
    for (size_t i = 1; i < n && cp; i++) {
        const uint8_t *b = e[i].key;
        size_t l = 0, lim = cp < e[i].klen ? cp : e[i].klen;
        while (l + 8 <= lim && lsm_ld64(a + l) == lsm_ld64(b + l)) l += 8;
        while (l < lim && a[l] == b[l]) l++;
        cp = l;
    }
    return cp;
}

/* The sort word of an entry whose first cp bytes every key of the run shares: the next 6 key bytes, big
 * endian, zero-padded past the key's end, in the top 48 bits (the index goes in the low 16). Padding with
 * the smallest byte keeps the words' order consistent with the keys' (a key sorts before its extensions),
 * ties are settled by sort_ties. */
static inline uint64_t sort_word(const bent *x, size_t cp) {
    size_t avail = x->klen - cp;
    const uint8_t *k = x->key + cp;
    uint64_t p = 0;
    if (avail >= 8) {
        p = lsm_ld64be(k) >> 16;
    } else {
        for (size_t j = 0; j < 6; j++) p = p << 8 | (j < avail ? k[j] : 0);
    }
    return p << 16;
}

/* Internal order of two entries whose keys share their first cp bytes: < 0 when a sorts first. Two
 * entries of one batch never have the same trailer. */
static inline int bent_cmp(const bent *a, const bent *b, size_t cp) {
    size_t l = (a->klen < b->klen ? a->klen : b->klen) - cp;
    int c = lsm_bytes_cmp(a->key + cp, b->key + cp, l);
    if (c) return c;
    if (a->klen != b->klen) return a->klen < b->klen ? -1 : 1;
    return a->trailer > b->trailer ? -1 : 1;
}

/* LSD radix sort of the words' top 48 bits, one pass per byte that is not the same in every word; stable
 * (equal prefixes keep their index order). Returns a or b, whichever holds the result. */
static uint64_t *radix_sort(uint64_t *a, uint64_t *b, size_t n) {
    uint64_t all = ~(uint64_t)0, any = 0;
    for (size_t i = 0; i < n; i++) {
        all &= a[i];
        any |= a[i];
    }
    uint64_t vary = all ^ any;
    int shift[6], np = 0;
    for (int d = 0; d < 6; d++)
        if ((vary >> (16 + 8 * d)) & 0xFF) shift[np++] = 16 + 8 * d;
    if (!np) return a;
    uint32_t cnt[6][256];
    memset(cnt, 0, sizeof(cnt[0]) * (size_t)np);
    for (size_t i = 0; i < n; i++)
        for (int p = 0; p < np; p++) cnt[p][(a[i] >> shift[p]) & 0xFF]++;
    for (int p = 0; p < np; p++) {
        uint32_t sum = 0;
        for (int v = 0; v < 256; v++) {
            uint32_t c = cnt[p][v];
            cnt[p][v] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++) b[cnt[p][(a[i] >> shift[p]) & 0xFF]++] = a[i];
        uint64_t *t = a;
        a = b;
        b = t;
    }
    return a;
}

/* Merge sort of w[0:n) by bent_cmp (insertion sort below 12), tmp holding n words. */
static void sort_full(uint64_t *w, size_t n, const bent *e, size_t cp, uint64_t *tmp) {
    if (n <= 12) {
        for (size_t i = 1; i < n; i++) {
            uint64_t v = w[i];
            size_t j = i;
            while (j && bent_cmp(&e[v & 0xFFFF], &e[w[j - 1] & 0xFFFF], cp) < 0) {
                w[j] = w[j - 1];
                j--;
            }
            w[j] = v;
        }
        return;
    }
    size_t h = n / 2, i = 0, j = h, k = 0;
    sort_full(w, h, e, cp, tmp);
    sort_full(w + h, n - h, e, cp, tmp);
    while (i < h && j < n)
        tmp[k++] = bent_cmp(&e[w[j] & 0xFFFF], &e[w[i] & 0xFFFF], cp) < 0 ? w[j++] : w[i++];
    while (i < h) tmp[k++] = w[i++];
    while (j < n) tmp[k++] = w[j++];
    memcpy(w, tmp, n * sizeof(uint64_t));
}

/* Settle the runs of equal 48-bit prefixes (longer keys, versions of one key) by the full order. */
static void sort_ties(uint64_t *w, size_t n, const bent *e, size_t cp, uint64_t *tmp) {
    size_t i = 0;
    while (i < n) {
        size_t j = i + 1;
        while (j < n && (w[j] >> 16) == (w[i] >> 16)) j++;
        if (j - i > 1) sort_full(w + i, j - i, e, cp, tmp);
        i = j;
    }
}

/* The search finger: on every level, the last node before the entry it was moved to last and the node
 * after it (prev[l]->next[l]), in a list nothing is linked into meanwhile (search_old's). */
typedef struct splice {
    node *prev[MAX_HEIGHT];
    node *next[MAX_HEIGHT];
} splice;

/* Move the splice to entry x, which sorts after every key it was moved to before, on levels lo and up:
 * up from level lo to the lowest level whose (prev, next) bracket still holds x, then down from there as
 * lsm_mem_find_ge does, each level starting from the node found one level up. prev[l] < x on every level,
 * so only the next side is tested; and a next[l] found to lie before x is itself a valid start on its
 * level. */
static void splice_seek(splice *sp, int lo, const bent *x) {
    const uint8_t *key = x->key;
    size_t klen = x->klen;
    uint64_t tr = x->trailer;
    int top = lo;
    while (top < MAX_HEIGHT - 1 && sp->next[top] && cmp_node(sp->next[top], key, klen, tr) < 0) top++;
    node *bound = sp->next[top];
    if (top == MAX_HEIGHT - 1 && bound && cmp_node(bound, key, klen, tr) < 0) {
        /* Only on the top level: nothing above to bracket x. */
        node *y = bound;
        bound = load(&y->next[top]);
        while (bound && cmp_node(bound, key, klen, tr) < 0) {
            y = bound;
            bound = load(&y->next[top]);
        }
        sp->prev[top] = y;
        sp->next[top] = bound;
    }
    if (top == lo) return;
    node *y = sp->next[top - 1]; /* before x: the upward walk compared it */
    for (int l = top - 1; l >= lo; l--) {
        node *nx = load(&y->next[l]);
        while (nx != bound && cmp_node(nx, key, klen, tr) < 0) {
            y = nx;
            nx = load(&y->next[l]);
        }
        sp->prev[l] = y;
        sp->next[l] = nx;
        bound = nx;
    }
}

/* Fetch the cache lines node n's comparison reads: its lengths and height, and its key after the next
 * pointers (for heights 1-3 and short keys that is at most the next line). */
static inline void prefetch_node(const node *n) {
    __builtin_prefetch(n);
    __builtin_prefetch((const uint8_t *)n + 56);
}

/* One of the FINE_WAYS searches search_old keeps in flight. */
typedef struct fine {
    const uint8_t *key; /* the entry's, copied: one indirection less per step */
    size_t klen;
    uint64_t tr;
    node *y, *cand, *bound; /* y before the key on `level`; cand = y->next[level]; bound known after it */
    node **pv;              /* where to store y per level below h */
    int level, h;
} fine;

/* Searches search_old keeps in flight below the cached levels: 4 -> 192, 8 -> 179, 16 -> 170, 32 -> 165
 * ns per entry of the random deletes. */
#define FINE_WAYS 16
/* How far ahead of the entry being linked its filter line and point slot are fetched. */
#define POINT_AHEAD 8

/* Start the search of entry x (height h) in the list as it was before the batch: the splice (moved in
 * sorted order, so mostly within the cached upper levels) gives the last node before x on levels c and
 * up, stored in pv[c..h); below c, *q continues it. Returns 0 when nothing is left below (c == 0). */
static inline int fine_start(splice *sp, int c, const bent *x, int h, node **pv, fine *q) {
    splice_seek(sp, c, x);
    for (int l = c; l < h; l++) pv[l] = sp->prev[l];
    if (c == 0) return 0;
    q->key = x->key;
    q->klen = x->klen;
    q->tr = x->trailer;
    q->h = h;
    q->pv = pv;
    q->level = c - 1;
    q->y = sp->prev[c];
    q->bound = sp->next[c];
    q->cand = load(&q->y->next[c - 1]);
    prefetch_node(q->cand);
    return 1;
}

/* For every entry i (sorted order, height hs[i]): pv[off[i] + l] = the last node before it on level l
 * in the list as it was before the batch, for l < hs[i]. Levels c and up are walked with one splice
 * (their nodes, a 4^c-th of the list, stay cached); below c each step is a likely cache miss, so
 * FINE_WAYS searches go on at once, round robin, each prefetching the node it will compare next: their
 * misses overlap instead of each waiting for the last. */
static void search_old(lsm_memtable *m, const bent *e, const uint64_t *w, size_t n, const uint8_t *hs,
                       const uint32_t *off, node **pv, int c) {
    splice sp;
    for (int l = 0; l < MAX_HEIGHT; l++) {
        sp.prev[l] = m->head;
        sp.next[l] = load(&m->head->next[l]);
    }
    fine f[FINE_WAYS];
    int act = 0;
    size_t i = 0;
    while (act < FINE_WAYS && i < n) {
        act += fine_start(&sp, c, &e[w[i] & 0xFFFF], hs[i], pv + off[i], &f[act]);
        i++;
    }
    while (act) {
        for (int s = 0; s < act;) {
            fine *q = &f[s];
            node *cn = q->cand;
            if (cn != q->bound && cmp_node(cn, q->key, q->klen, q->tr) < 0) {
                q->y = cn;
                q->cand = load(&cn->next[q->level]);
                prefetch_node(q->cand);
                s++;
                continue;
            }
            if (q->level < q->h) q->pv[q->level] = q->y;
            if (q->level > 0) {
                q->level--;
                q->bound = cn;
                q->cand = load(&q->y->next[q->level]);
                prefetch_node(q->cand);
                s++;
                continue;
            }
            /* Done: the slot takes the next entry, or the last slot's search moves here. */
            int more = 0;
            while (!more && i < n) {
                more = fine_start(&sp, c, &e[w[i] & 0xFFFF], hs[i], pv + off[i], q);
                i++;
            }
            if (more) s++;
            else f[s] = f[--act];
        }
    }
}

/* Levels whose nodes search_old walks with its splice: c and up, c the lowest level with at most
 * FINE_NODES nodes (a 4^c-th of the list; 4,096 nodes of the bench's ~64 bytes fit the 1 MiB L2 beside the
 * rest). 1,024, 2,048 and 16,384 measured the same or up to 10% slower. */
#define FINE_NODES 4096

/* Sort the n entries e[] into internal order and insert them: search_old finds every entry's place in the
 * list as it was, then each is linked in sorted order after the last node before it on each level, which
 * is its place found in the old list, unless an entry of this batch inserted before it on that level went
 * into the same place (same old predecessor): then that entry's node. Linking is as insert() does it:
 * filter bits before the node is linked (release stores, lowest level first), its point slot after;
 * versions of one key come together, newest first, so only the first sets the key's bits and slot (the
 * slot must keep naming the newest version). Returns 0, or LSM_ESPACE if the arena cannot grow (the
 * entries before stay inserted, as with insert()). *bytes += the key and value bytes inserted. */
static int insert_sorted(lsm_memtable *m, const bent *e, size_t n, uint64_t *wa, uint64_t *wb, node **pv,
                         uint32_t *off, uint8_t *hs, uint64_t *bytes) {
    if (!n) return 0;
    size_t cp = common_prefix(e, n);
    for (size_t i = 0; i < n; i++) wa[i] = sort_word(&e[i], cp) | i;
    uint64_t *w = radix_sort(wa, wb, n);
    uint64_t *kh = w == wa ? wb : wa;
    sort_ties(w, n, e, cp, kh);
    uint32_t tot = 0;
    for (size_t i = 0; i < n; i++) {
        const bent *x = &e[w[i] & 0xFFFF];
        kh[i] = lsm_mem_key_hash(x->key, x->klen);
        hs[i] = (uint8_t)random_height(m);
        off[i] = tot;
        tot += hs[i];
    }
    int c = 0;
    while (c < MAX_HEIGHT - 1 && (m->count >> (2 * c)) > FINE_NODES) c++;
    search_old(m, e, w, n, hs, off, pv, c);

    node *lastold[MAX_HEIGHT], *lastnew[MAX_HEIGHT];
    for (int l = 0; l < MAX_HEIGHT; l++) lastold[l] = lastnew[l] = NULL;
    const bent *last = NULL;
    for (size_t i = 0; i < n && i < POINT_AHEAD; i++) mem_point_prefetch(m, kh[i]);
    for (size_t i = 0; i < n; i++) {
        const bent *x = &e[w[i] & 0xFFFF];
        /* The filter line and slot of an entry a few ahead are fetched while this one is linked. */
        if (i + POINT_AHEAD < n) mem_point_prefetch(m, kh[i + POINT_AHEAD]);
        int point = !last || (w[i] >> 16) != (w[i - 1] >> 16) || last->klen != x->klen ||
                    memcmp(last->key, x->key, x->klen) != 0;
        int h = hs[i];
        node **p = pv + off[i];
        /* Readers that see the new height before the node find head->next[l] NULL there: still correct. */
        if (h > m->height) __atomic_store_n(&m->height, h, __ATOMIC_RELAXED);
        node *nd = lsm_mem_arena_alloc(m, sizeof(node) + (size_t)h * sizeof(node *) + x->klen + x->vlen);
        if (!nd) return LSM_ESPACE;
        nd->trailer = x->trailer;
        nd->klen = x->klen;
        nd->vlen = x->vlen;
        nd->height = (uint32_t)h;
        nd->pad = 0;
        memcpy((uint8_t *)&nd->next[h], x->key, x->klen);
        if (x->vlen) memcpy((uint8_t *)&nd->next[h] + x->klen, x->val, x->vlen);
        if (point) lsm_mem_filter_add(m, kh[i]);
        for (int l = 0; l < h; l++) {
            node *r = lastold[l] == p[l] ? lastnew[l] : p[l];
            nd->next[l] = __atomic_load_n(&r->next[l], __ATOMIC_RELAXED);
            __atomic_store_n(&r->next[l], nd, __ATOMIC_RELEASE);
            lastold[l] = p[l];
            lastnew[l] = nd;
        }
        if (point) mem_point_set(m, kh[i], nd);
        m->count++;
        if (x->vlen > m->max_vlen) m->max_vlen = x->vlen;
        *bytes += (uint64_t)x->klen + x->vlen;
        last = x;
    }
    return 0;
}


int64_t lsm_mem_add_sorted(lsm_memtable *m, const uint8_t *rep, size_t len, uint64_t seq, uint64_t count,
                           uint64_t *out) {
    /* lsm_mem_add_rep for count >= SORTED_MIN (its contract; the sequence range is checked there): parse
     * the batch into the scratch arrays, then insert_sorted it, SORT_MAX entries at a time. */
    size_t run = count < SORT_MAX ? (size_t)count : SORT_MAX;
    size_t need = run * SCRATCH_PER;
    /* The scratch is counted in used_bytes (lsm_mem_usage) while the memtable holds it: up to
     * SCRATCH_KEEP (~360 KiB) between batches, up to ~11 MiB during a batch of SORT_MAX entries. Counting
     * it there cannot move a flush: the engine switches memtables on the Python side's approximate_size
     * (key + value + ENTRY_OVERHEAD per entry, as the pure twin charges), never on lsm_mem_usage, which
     * only reports what the memtable really holds in memory. */
    if (m->scratch_cap < need) {
        free(m->scratch);
        m->used_bytes -= m->scratch_cap;
        m->scratch = malloc(need);
        m->scratch_cap = m->scratch ? need : 0;
        m->used_bytes += m->scratch_cap;
        if (!m->scratch) return lsm_mem_add_each(m, rep, len, seq, count, out);
    }
    bent *e = m->scratch;
    uint64_t *wa = (uint64_t *)(e + run), *wb = wa + run;
    node **pv = (node **)(wb + run);
    uint32_t *off = (uint32_t *)(pv + run * MAX_HEIGHT);
    uint8_t *hs = (uint8_t *)(off + run);
    uint64_t rd = 0, bytes = 0;
    size_t pos = 0;
    int rc = 0;
    if (count <= SORT_MAX) {
        int64_t k = parse_run(rep, len, &pos, run, seq, e, &rd);
        if (k < 0 || pos != len) return LSM_ECORRUPT;
        rc = insert_sorted(m, e, (size_t)k, wa, wb, pv, off, hs, &bytes);
    } else {
        /* Check the whole batch first, then sort and insert it SORT_MAX entries at a time (in sequence
         * order, so the last run holding a key sets its slot to the newest version). */
        uint8_t kind;
        size_t koff, voff;
        uint64_t klen, vlen;
        for (uint64_t i = 0; i < count; i++)
            if (lsm_mem_parse_entry(rep, len, &pos, &kind, &koff, &klen, &voff, &vlen)) return LSM_ECORRUPT;
        if (pos != len) return LSM_ECORRUPT;
        pos = 0;
        for (uint64_t i = 0; i < count && !rc; i += run) {
            size_t r = count - i < run ? (size_t)(count - i) : run;
            int64_t k = parse_run(rep, len, &pos, r, seq + i, e, &rd);
            rc = insert_sorted(m, e, (size_t)k, wa, wb, pv, off, hs, &bytes);
        }
    }
    if (m->scratch_cap > SCRATCH_KEEP) {
        free(m->scratch);
        m->used_bytes -= m->scratch_cap;
        m->scratch = NULL;
        m->scratch_cap = 0;
    }
    if (rc) return rc;
    out[0] = rd;
    out[1] = bytes;
    return (int64_t)(count - rd);
}
