/* Scan sources that read their tables' blocks themselves (native/scan.c has the merge): through the
 * block cache (native/blockcache.c), or read with pread, verified and decompressed (lsm_block_fetch in
 * pointget.c) and then cached; one table handed over by Python (lsm_scan_set_table), or every table of a
 * version laid out as point reads see it (lsm_scan_set_view: one source per L0 table and per level,
 * positioned by binary search, walking a level's tables in order). A block that fails its checks is
 * reported (and never cached); the source then stays where it was, so the next call meets it again. */
#include <stdlib.h>
#include <string.h>

#include "scan_internal.inc"

/* Why a table-mode block failed beyond lsm_block_load's reasons (pointget.c): it does not decode. */
#define WHY_MALFORMED 6

/* Table mode: make block bi of table t (lt[t] in level mode; r's one table otherwise) the current one
 * (from the cache, or read, checked, decoded and then cached). On failure the position stays where it was
 * (state NEED: the next call tries the same block again). Errors as lsm_scan_set_table, err[0..2] = why or
 * errno, block offset, table position. */
int64_t lsm_scan_table_load(lsm_scan *s, src *r, int64_t t, int64_t bi, uint64_t *err) {
    lsm_bc_release(r->cache, r->ent);
    r->ent = NULL;
    r->blk = NULL;
    const lsm_probe_table *p = r->lt ? &r->lt[t] : NULL;
    uint64_t table = p ? p->table : r->table;
    int fd = p ? (int)p->fd : r->fd;
    uint64_t off = p ? p->boff[bi] : r->boff[bi], size = p ? p->bsize[bi] : r->bsize[bi];
    uint64_t out[4] = {0, 0, 0, 0};
    lsm_bc_entry *e = NULL;
    int64_t got = lsm_block_fetch(r->cache, table, fd, off, size, r->verify, &e, out);
    err[1] = off;
    err[2] = (uint64_t)t;
    r->state = SRC_NEED;
    if (got < 0) {
        err[0] = got == LSM_ECORRUPT ? out[2] : out[1];
        return got;
    }
    int64_t n = lsm_scan_decode_block(s, r, e->data, e->len);
    if (n < 0) {
        if (got == 1 && n == LSM_ECORRUPT) lsm_bc_erase(r->cache, table, off);
        lsm_bc_release(got == 1 ? r->cache : NULL, e);
        r->state = SRC_NEED;
        err[0] = WHY_MALFORMED;
        return n;
    }
    if (got == 0) lsm_bc_publish(r->cache, e, table, off, e->len + LSM_BC_OVERHEAD);
    r->ent = e;
    r->bi = bi;
    if (p) {
        r->li = t;
        r->table = p->table;
        r->fd = fd;
        r->boff = p->boff;
        r->bsize = p->bsize;
        r->nblocks = p->n;
    }
    return n;
}

/* Index key k (the last user key of block k) of table p. */
static inline int cmp_index(const lsm_probe_table *p, uint64_t k, const uint8_t *key, size_t klen) {
    uint64_t a = k ? p->iends[k - 1] : 0;
    return cmp_key(p->ikeys + a, (size_t)(p->iends[k] - a), key, klen);
}

/* The first block of p whose index key is >= key (p->n if none). */
static uint64_t index_lower_bound(const lsm_probe_table *p, const uint8_t *key, size_t klen) {
    uint64_t lo = 0, hi = p->n;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (cmp_index(p, mid, key, klen) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Table mode: the block after r's current one in scan order: 1 with (*t, *bi); 0 if the range has no more
 * in this source; -1 if the caller must say (lsm_scan_set_table's one table is used up). */
int lsm_scan_next_block(const lsm_scan *s, const src *r, int64_t *t, int64_t *bi) {
    if (!s->reverse) {
        if ((uint64_t)(r->bi + 1) < r->nblocks) {
            *t = r->li, *bi = r->bi + 1;
            return 1;
        }
        if (!r->lt) return -1;
        for (int64_t k = r->li + 1; k < r->lb; k++) {
            const lsm_probe_table *p = &r->lt[k];
            if (s->end && cmp_key(p->lo, (size_t)p->lolen, s->end, s->elen) >= 0) return 0;
            if (p->n) {
                *t = k, *bi = 0;
                return 1;
            }
        }
        return 0;
    }
    if (r->bi > 0) {
        /* Block bi - 1 ends below start: nothing there or before it is in range. */
        if (r->lt && s->start && cmp_index(&r->lt[r->li], (uint64_t)r->bi - 1, s->start, s->slen) < 0)
            return 0;
        *t = r->li, *bi = r->bi - 1;
        return 1;
    }
    if (!r->lt) return -1;
    for (int64_t k = r->li - 1; k >= r->la; k--) {
        const lsm_probe_table *p = &r->lt[k];
        if (s->start && cmp_key(p->hi, (size_t)p->hilen, s->start, s->slen) < 0) return 0;
        if (p->n) {
            *t = k, *bi = (int64_t)p->n - 1;
            return 1;
        }
    }
    return 0;
}

/* Level mode: the first block in scan order of the tables lt[a..b) within the bounds: 1 with (*t, *bi),
 * or 0 if they hold nothing in range. */
static int first_block(const lsm_scan *s, const lsm_probe_table *lt, int64_t a, int64_t b, int64_t *t,
                       int64_t *bi) {
    if (!s->reverse) {
        int64_t lo = a, hi = b; /* the first table whose largest key is >= start */
        if (s->start) {
            while (lo < hi) {
                int64_t mid = lo + (hi - lo) / 2;
                if (cmp_key(lt[mid].hi, (size_t)lt[mid].hilen, s->start, s->slen) < 0) lo = mid + 1;
                else hi = mid;
            }
        }
        for (int64_t k = lo; k < b; k++) {
            const lsm_probe_table *p = &lt[k];
            if (s->end && cmp_key(p->lo, (size_t)p->lolen, s->end, s->elen) >= 0) return 0;
            uint64_t i = s->start && k == lo ? index_lower_bound(p, s->start, s->slen) : 0;
            if (i < p->n) {
                *t = k, *bi = (int64_t)i;
                return 1;
            }
        }
        return 0;
    }
    int64_t lo = a, hi = b; /* one past the last table whose smallest key is < end */
    if (s->end) {
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (cmp_key(lt[mid].lo, (size_t)lt[mid].lolen, s->end, s->elen) < 0) lo = mid + 1;
            else hi = mid;
        }
    } else {
        lo = b;
    }
    for (int64_t k = lo - 1; k >= a; k--) {
        const lsm_probe_table *p = &lt[k];
        if (s->start && cmp_key(p->hi, (size_t)p->hilen, s->start, s->slen) < 0) return 0;
        if (!p->n) continue;
        uint64_t i = s->end && k == lo - 1 ? index_lower_bound(p, s->end, s->elen) : p->n - 1;
        *t = k, *bi = (int64_t)(i < p->n ? i : p->n - 1);
        return 1;
    }
    return 0;
}

int64_t lsm_scan_set_view(lsm_scan *s, size_t first, const lsm_read_view *v, uint64_t *err) {
    /* Sources first, first + 1, ... read the tables of a version (lsm_read_view, as lsm_get takes it;
     * every table's fd >= 0): one source per L0 table (newest first), then one per deeper level, each
     * going through its tables' blocks in scan order by itself, through v's block cache. Each is put at
     * its first version in range (or done). Returns the number of sources set, or an error as
     * lsm_scan_set_table with err[2] = the table's position in v. The view (and its arrays) must outlive
     * the scan. */
    size_t j = first, gs = 0;
    for (size_t g = 0; g < v->ngroups; gs = v->group_end[g], g++) {
        size_t ge = v->group_end[g];
        for (size_t a = gs; a < ge; a = v->group_sorted[g] ? ge : a + 1) {
            size_t b = v->group_sorted[g] ? ge : a + 1;
            if (j >= s->nsrc) return LSM_EINVAL;
            src *r = &s->srcs[j++];
            r->is_mem = 0;
            r->tbl = 1;
            if (r->cache != v->cache) {
                lsm_bc_ref(v->cache);
                lsm_bc_free(r->cache);
                r->cache = v->cache;
            }
            r->verify = v->verify;
            r->lt = v->t;
            r->la = (int64_t)a, r->lb = (int64_t)b, r->li = -1;
            int64_t t, bi;
            if (!first_block(s, v->t, (int64_t)a, (int64_t)b, &t, &bi)) {
                r->state = SRC_DONE;
                continue;
            }
            if (v->t[t].fd < 0 || !v->t[t].boff) return LSM_EINVAL;
            int64_t rc = lsm_scan_table_load(s, r, t, bi, err);
            if (rc < 0) return rc;
        }
    }
    return (int64_t)(j - first);
}

int64_t lsm_scan_set_table(lsm_scan *s, size_t i, lsm_block_cache *c, uint64_t table, int fd, int verify,
                           const uint64_t *boff, const uint64_t *bsize, uint64_t nblocks, uint64_t bi,
                           uint64_t *err) {
    /* Source i now reads data block bi of a table itself: its blocks are (boff[k], bsize[k]) for
     * k < nblocks (the arrays outlive the source's use of this table), read with pread from fd and
     * checked (checksums if verify), through the block cache c (may be NULL). When the source runs out
     * of a block it takes the next one in scan order without returning; only past the table's first or
     * last block does lsm_scan_next stop with LSM_SCAN_NEED (the caller then sets the next table, or
     * lsm_scan_set_done). Returns the entry count of block bi, or LSM_ECORRUPT (err[0] = why: pointget's
     * reasons, 6 = malformed block; err[1] = block offset), LSM_EIO (err[0] = errno), LSM_ESPACE,
     * LSM_EINVAL. A block that fails is never cached. */
    if (i >= s->nsrc || bi >= nblocks || fd < 0) return LSM_EINVAL;
    src *r = &s->srcs[i];
    r->is_mem = 0;
    lsm_bc_release(r->cache, r->ent);
    r->ent = NULL;
    r->tbl = 1;
    if (r->cache != c) {
        lsm_bc_ref(c);
        lsm_bc_free(r->cache);
        r->cache = c;
    }
    r->table = table;
    r->fd = fd;
    r->verify = verify;
    r->boff = boff;
    r->bsize = bsize;
    r->nblocks = nblocks;
    r->lt = NULL;
    r->li = 0;
    return lsm_scan_table_load(s, r, 0, (int64_t)bi, err);
}
