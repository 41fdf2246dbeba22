/* The per-entry loop of a compaction: merge k sorted runs of data blocks, drop the versions no reader can
 * see, and encode the survivors into data blocks cut as TableBuilder cuts them.
 *
 * A compactor is fed raw (decompressed, checked) data block payloads one run at a time and pulls
 * entries from them in internal order (user key ascending, sequence descending; equal (user key, seq)
 * pairs in run order, as iterators.merge_entries). The rules are compaction.drop_hidden's without range
 * tombstones: stripe(seq) = the number of snapshots below seq; a version in the same stripe as a newer
 * version of its key is dropped; a deletion in stripe 0 of a bottommost compaction is dropped (after it
 * has hidden the older versions of its stripe). Blocks are cut right after the entry that brings the raw
 * size (entries + restart array + count) to block_size or more, and at the end of the stream; the entry
 * bytes are lsm_block_encode's. Python (compact_native.py) feeds blocks, drains closed blocks and writes
 * them through BlockTableWriter: no Python runs per entry. */
#include <stdlib.h>
#include <string.h>

#include "compact.h"
#include "lsm_native.h"
#include "lsm_varint.h"

#define NEED_INPUT 0
#define OUT_FULL 1
#define DONE 2

typedef struct {
    uint8_t *p;
    size_t len, cap;
} vec;

static int vec_reserve(vec *v, size_t extra) {
    if (v->cap - v->len >= extra) return 0;
    size_t nc = v->cap ? v->cap : 256;
    while (nc - v->len < extra) nc *= 2;
    uint8_t *p = realloc(v->p, nc);
    if (!p) return -1;
    v->p = p;
    v->cap = nc;
    return 0;
}

typedef struct {
    const uint8_t *blk;
    size_t pos, limit;
    size_t nr, ri, next_restart; /* restart array: count, next index, next offset */
    vec key; /* current internal key (user key + 8 trailer bytes) */
    uint64_t trailer;
    const uint8_t *val;
    size_t vlen;
    uint32_t run;
} cursor;

struct lsm_compactor {
    size_t k;
    cursor *cur;
    uint32_t *heap; /* run indices with a current entry */
    size_t hn;
    int64_t need;   /* run whose block ran out, or -1 */
    uint64_t *snaps;
    size_t nsnap;
    int bottommost;
    size_t block_size;
    uint32_t ri;
    vec last_uk;    /* user key of the last entry seen (kept or dropped) */
    int have_last;
    int64_t last_stripe;
    /* The open output block. */
    vec blk, prev_ikey, ukeys;
    uint64_t *restarts, *uk_end, *trailers;
    size_t rcap, ecap, bn;
    uint64_t bvbytes;
    int closing; /* the open block is complete and waits for room in the output */
    uint64_t max_put;
};

static int get_varint(const uint8_t *b, size_t limit, size_t *pos, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
        if (*pos >= limit) return -1;
        uint8_t c = b[(*pos)++];
        v |= (uint64_t)(c & 0x7F) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Parse the entry at c->pos into c's current key and value; 1 = parsed, 0 = block exhausted. */
static int parse_next(cursor *c) {
    /* The checks of block.decode_block_spans_py, so a block one twin rejects the other rejects too. */
    if (c->pos >= c->limit) return c->ri == c->nr ? 0 : LSM_ECORRUPT;
    int at_restart = 0;
    if (c->pos == c->next_restart) {
        c->ri++;
        c->next_restart = c->ri < c->nr ? rd32(c->blk + c->limit + 4 * c->ri) : c->limit;
        at_restart = 1;
    } else if (c->pos > c->next_restart) {
        return LSM_ECORRUPT;
    }
    uint64_t shared, nonsh, vlen;
    if (get_varint(c->blk, c->limit, &c->pos, &shared) || get_varint(c->blk, c->limit, &c->pos, &nonsh) ||
        get_varint(c->blk, c->limit, &c->pos, &vlen))
        return LSM_ECORRUPT;
    if (c->limit - c->pos < nonsh || c->limit - c->pos - nonsh < vlen) return LSM_ECORRUPT;
    if (shared && (at_restart || shared > c->key.len)) return LSM_ECORRUPT;
    if (shared + nonsh < 9) return LSM_ECORRUPT;
    c->key.len = (size_t)shared;
    if (vec_reserve(&c->key, (size_t)nonsh)) return LSM_ESPACE;
    memcpy(c->key.p + c->key.len, c->blk + c->pos, (size_t)nonsh);
    c->key.len += (size_t)nonsh;
    c->pos += (size_t)nonsh;
    c->val = c->blk + c->pos;
    c->vlen = (size_t)vlen;
    c->pos += (size_t)vlen;
    uint64_t t = 0;
    for (int j = 7; j >= 0; j--) t = (t << 8) | c->key.p[c->key.len - 8 + (size_t)j];
    c->trailer = t;
    if ((t & 0xFF) > 2) return LSM_ECORRUPT; /* DELETE, PUT or BLOB */
    return 1;
}

static int less(const lsm_compactor *m, uint32_t a, uint32_t b) {
    const cursor *x = &m->cur[a], *y = &m->cur[b];
    size_t la = x->key.len - 8, lb = y->key.len - 8;
    int c = memcmp(x->key.p, y->key.p, la < lb ? la : lb);
    if (c) return c < 0;
    if (la != lb) return la < lb;
    uint64_t sa = x->trailer >> 8, sb = y->trailer >> 8;
    if (sa != sb) return sa > sb;
    return a < b;
}

static void sift_down(lsm_compactor *m, size_t i) {
    uint32_t *h = m->heap;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, s = i;
        if (l < m->hn && less(m, h[l], h[s])) s = l;
        if (r < m->hn && less(m, h[r], h[s])) s = r;
        if (s == i) return;
        uint32_t t = h[i];
        h[i] = h[s];
        h[s] = t;
        i = s;
    }
}

static void sift_up(lsm_compactor *m, size_t i) {
    uint32_t *h = m->heap;
    while (i) {
        size_t p = (i - 1) / 2;
        if (!less(m, h[i], h[p])) return;
        uint32_t t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

lsm_compactor *lsm_cmp_new(size_t k, const uint64_t *snaps, size_t nsnap, int bottommost, size_t block_size,
                           uint32_t ri) {
    if (ri == 0 || block_size == 0 || k == 0) return NULL;
    lsm_compactor *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->k = k;
    m->cur = calloc(k, sizeof(cursor));
    m->heap = calloc(k, sizeof(uint32_t));
    m->snaps = malloc((nsnap ? nsnap : 1) * sizeof(uint64_t));
    if (!m->cur || !m->heap || !m->snaps) {
        lsm_cmp_free(m);
        return NULL;
    }
    if (nsnap) memcpy(m->snaps, snaps, nsnap * sizeof(uint64_t));
    m->nsnap = nsnap;
    m->bottommost = bottommost;
    m->block_size = block_size;
    m->ri = ri;
    m->need = -1;
    m->last_stripe = -1;
    return m;
}

void lsm_cmp_free(lsm_compactor *m) {
    if (!m) return;
    if (m->cur)
        for (size_t j = 0; j < m->k; j++) free(m->cur[j].key.p);
    free(m->cur);
    free(m->heap);
    free(m->snaps);
    free(m->last_uk.p);
    free(m->blk.p);
    free(m->prev_ikey.p);
    free(m->ukeys.p);
    free(m->restarts);
    free(m->uk_end);
    free(m->trailers);
    free(m);
}

int lsm_cmp_feed(lsm_compactor *m, uint32_t run, const uint8_t *blk, size_t len) {
    /* Give run ``run`` its next raw data block (NULL: the run has ended). The block must stay alive
     * until the compactor asks for this run's next one. 0; 1 when the block held no entry (feed this run
     * again); LSM_ECORRUPT for a malformed block. */
    if (run >= m->k) return LSM_EINVAL;
    if (m->need >= 0 && (uint32_t)m->need != run) return LSM_EINVAL;
    m->need = -1;
    if (!blk) return 0;
    cursor *c = &m->cur[run];
    if (len < 4) return LSM_ECORRUPT;
    uint32_t nr = rd32(blk + len - 4);
    if ((uint64_t)nr > (len - 4) / 4) return LSM_ECORRUPT;
    c->blk = blk;
    c->pos = 0;
    c->limit = len - 4 - 4 * (size_t)nr;
    if (nr == 0 && c->limit) return LSM_ECORRUPT;
    if (nr && rd32(blk + c->limit) != 0) return LSM_ECORRUPT;
    c->nr = nr;
    c->ri = 0;
    c->next_restart = 0;
    c->key.len = 0;
    c->run = run;
    int r = parse_next(c);
    if (r < 0) return r;
    if (r == 0) {
        m->need = run; /* an empty block: this run needs its next one */
        return 1;
    }
    m->heap[m->hn] = run;
    sift_up(m, m->hn++);
    return 0;
}

/* Append the current entry of c to the open block. */
static int emit(lsm_compactor *m, const cursor *c) {
    size_t klen = c->key.len, shared = 0;
    if (m->bn % m->ri) {
        size_t pl = m->prev_ikey.len, ml = klen < pl ? klen : pl;
        while (shared < ml && m->prev_ikey.p[shared] == c->key.p[shared]) shared++;
    } else {
        if (m->bn / m->ri >= m->rcap) {
            size_t nc = m->rcap ? 2 * m->rcap : 64;
            uint64_t *r = realloc(m->restarts, nc * sizeof(uint64_t));
            if (!r) return LSM_ESPACE;
            m->restarts = r;
            m->rcap = nc;
        }
        m->restarts[m->bn / m->ri] = m->blk.len;
    }
    size_t nonsh = klen - shared;
    if (vec_reserve(&m->blk, 15 + nonsh + c->vlen) || vec_reserve(&m->ukeys, klen)) return LSM_ESPACE;
    if (m->bn >= m->ecap) {
        size_t nc = m->ecap ? 2 * m->ecap : 256;
        uint64_t *a = realloc(m->uk_end, nc * sizeof(uint64_t));
        if (!a) return LSM_ESPACE;
        m->uk_end = a;
        uint64_t *b = realloc(m->trailers, nc * sizeof(uint64_t));
        if (!b) return LSM_ESPACE;
        m->trailers = b;
        m->ecap = nc;
    }
    uint8_t *p = m->blk.p + m->blk.len;
    p += lsm_put_varint(p, shared);
    p += lsm_put_varint(p, nonsh);
    p += lsm_put_varint(p, c->vlen);
    memcpy(p, c->key.p + shared, nonsh);
    p += nonsh;
    memcpy(p, c->val, c->vlen);
    p += c->vlen;
    m->blk.len = (size_t)(p - m->blk.p);
    memcpy(m->ukeys.p + m->ukeys.len, c->key.p, klen - 8);
    m->ukeys.len += klen - 8;
    m->uk_end[m->bn] = m->ukeys.len;
    m->trailers[m->bn] = c->trailer;
    m->bn++;
    m->bvbytes += c->vlen;
    if ((c->trailer & 0xFF) == 1 && c->vlen > m->max_put) m->max_put = c->vlen;
    m->prev_ikey.len = 0;
    if (vec_reserve(&m->prev_ikey, klen)) return LSM_ESPACE;
    memcpy(m->prev_ikey.p, c->key.p, klen);
    m->prev_ikey.len = klen;
    size_t nr = (m->bn + m->ri - 1) / m->ri;
    if (m->blk.len + 4 * nr + 4 >= m->block_size) m->closing = 1;
    return 0;
}

typedef struct {
    uint8_t *buf;
    size_t cap, pos;
    uint64_t *block_end, *block_nent, *block_vbytes;
    size_t max_blocks, nb;
    uint8_t *keys;
    size_t keycap, kpos;
    uint64_t *key_end, *trailers;
    size_t max_keys, ne;
} outbuf;

/* Move the closed open block into the output; 0, or 1 when it does not fit. */
static int drain(lsm_compactor *m, outbuf *o) {
    size_t nr = (m->bn + m->ri - 1) / m->ri;
    size_t need = m->blk.len + 4 * nr + 4;
    if (o->cap - o->pos < need || o->keycap - o->kpos < m->ukeys.len || o->max_keys - o->ne < m->bn ||
        o->nb >= o->max_blocks)
        return 1;
    memcpy(o->buf + o->pos, m->blk.p, m->blk.len);
    o->pos += m->blk.len;
    for (size_t i = 0; i < nr + 1; i++) {
        uint64_t r = i < nr ? m->restarts[i] : nr;
        for (int j = 0; j < 4; j++) o->buf[o->pos++] = (uint8_t)(r >> (8 * j));
    }
    o->block_end[o->nb] = o->pos;
    o->block_nent[o->nb] = m->bn;
    o->block_vbytes[o->nb] = m->bvbytes;
    o->nb++;
    memcpy(o->keys + o->kpos, m->ukeys.p, m->ukeys.len);
    for (size_t i = 0; i < m->bn; i++) {
        o->key_end[o->ne] = o->kpos + m->uk_end[i];
        o->trailers[o->ne] = m->trailers[i];
        o->ne++;
    }
    o->kpos += m->ukeys.len;
    m->blk.len = m->ukeys.len = 0;
    m->bn = 0;
    m->bvbytes = 0;
    m->closing = 0;
    return 0;
}

int64_t lsm_cmp_step(lsm_compactor *m, uint8_t *buf, size_t cap, uint64_t *block_end, uint64_t *block_nent,
                     uint64_t *block_vbytes, size_t max_blocks, uint8_t *keys, size_t keycap, uint64_t *key_end, uint64_t *trailers,
                     size_t max_keys, uint64_t *state) {
    /* Run until a run needs its next block (state[0] = 0, state[1] = the run), the output is full
     * (state[0] = 1; state[1] = 1 if not even one block fit: grow the buffers) or the stream ended and
     * its last block was drained (state[0] = 2). Returns the number of blocks written to the output:
     * block b = buf[block_end[b-1]:block_end[b]] with block_nent[b] entries of block_vbytes[b] value
     * bytes, whose user keys and trailers follow in keys/key_end/trailers; state[3] = the largest PUT
     * value emitted so far. The output continues at state[4..7] (bytes, blocks, key bytes, entries
     * already in the buffers: 0 after the caller drained them), updated on return, so a caller can feed
     * a run and step again without draining; the return value counts every block in the buffers. Negative: LSM_ECORRUPT (bad block) or LSM_ESPACE. */
    outbuf o = {buf, cap, (size_t)state[4], block_end, block_nent, block_vbytes, max_blocks, (size_t)state[5],
                keys, keycap, (size_t)state[6], key_end, trailers, max_keys, (size_t)state[7]};
    if (o.pos > cap || o.nb > max_blocks || o.kpos > keycap || o.ne > max_keys) return LSM_EINVAL;
    state[0] = state[1] = state[2] = 0;
    int64_t rc = 0;
    for (;;) {
        if (m->closing) {
            if (drain(m, &o)) {
                state[0] = OUT_FULL;
                state[1] = o.nb == 0;
                break;
            }
        }
        if (m->need >= 0) {
            state[0] = NEED_INPUT;
            state[1] = (uint64_t)m->need;
            break;
        }
        if (m->hn == 0) {
            if (m->bn) {
                m->closing = 1;
                continue;
            }
            state[0] = DONE;
            break;
        }
        uint32_t run = m->heap[0];
        cursor *c = &m->cur[run];
        size_t ulen = c->key.len - 8;
        uint64_t seq = c->trailer >> 8;
        size_t lo = 0, hi = m->nsnap;
        while (lo < hi) { /* bisect_left: snapshots below seq */
            size_t mid = (lo + hi) / 2;
            if (m->snaps[mid] < seq) lo = mid + 1;
            else hi = mid;
        }
        int64_t stripe = (int64_t)lo;
        if (!m->have_last || m->last_uk.len != ulen || memcmp(m->last_uk.p, c->key.p, ulen) != 0) {
            m->last_uk.len = 0;
            if (vec_reserve(&m->last_uk, ulen)) {
                rc = LSM_ESPACE;
                break;
            }
            memcpy(m->last_uk.p, c->key.p, ulen);
            m->last_uk.len = ulen;
            m->have_last = 1;
            m->last_stripe = -1;
        }
        if (stripe != m->last_stripe) {
            m->last_stripe = stripe;
            if (!((c->trailer & 0xFF) == 0 && m->bottommost && stripe == 0)) {
                int e = emit(m, c);
                if (e) {
                    rc = e;
                    break;
                }
            }
        }
        int r = parse_next(c);
        if (r < 0) {
            rc = r;
            break;
        }
        if (r == 0) {
            m->heap[0] = m->heap[--m->hn];
            if (m->hn) sift_down(m, 0);
            m->need = run;
        } else {
            sift_down(m, 0);
        }
    }
    state[3] = m->max_put;
    state[4] = o.pos;
    state[5] = o.nb;
    state[6] = o.kpos;
    state[7] = o.ne;
    if (rc) return rc;
    return (int64_t)o.nb;
}
