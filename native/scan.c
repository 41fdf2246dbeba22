/* A range scan in C (docs/format.md "Data and index blocks"): memtable skiplists and SSTable data blocks
 * merged in internal order, reduced to what a snapshot shows -- for each user key the newest version with
 * seq <= snapshot, unless it is a DELETE or a range tombstone visible at the snapshot covers it with a
 * larger seq -- and copied out a page per call, so only returned entries become Python objects.
 *
 * Sources: a memtable is walked in place through the cursor functions at the end of memtable.c. A table
 * source (one L0 table, or the tables of a level, whose key ranges are disjoint) holds one raw data block
 * at a time; when it runs out of its block, lsm_scan_next stops with LSM_SCAN_NEED and the source's
 * number, Python reads the next block (the block cache is Python's) and hands it over with
 * lsm_scan_set_block, or says lsm_scan_set_done. A block is decoded with lsm_block_decode_data (block.c,
 * the strict decoder: malformed blocks are LSM_ECORRUPT) into arrays the source keeps; its bytes stay
 * owned by Python, which keeps them alive while the source points into them.
 *
 * Order per source: forward = internal order (user key ascending, seq descending); reverse = its exact
 * reverse. Equal (user key, seq) pairs across sources come out in source order (list the newest first),
 * as iterators.merge_entries does. */
#include <stdlib.h>
#include <string.h>

#include "lsm_native.h"
#include "pointget.h"
#include "scan.h"

#include "scan_internal.inc"

static uint8_t *dup(const uint8_t *p, size_t n) {
    uint8_t *d = malloc(n ? n : 1);
    if (d && n) memcpy(d, p, n);
    return d;
}

lsm_scan *lsm_scan_new(size_t nsrc, int reverse, uint64_t snap, const uint8_t *start, size_t slen,
                       const uint8_t *end, size_t elen) {
    /* A scan of nsrc sources (each set with lsm_scan_set_mem or lsm_scan_set_block before the first
     * lsm_scan_next) over start <= user key < end (NULL = open), at snapshot snap. NULL if out of memory. */
    lsm_scan *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->reverse = reverse;
    s->snap = snap;
    s->nsrc = nsrc;
    s->srcs = calloc(nsrc ? nsrc : 1, sizeof(src));
    if (start) s->start = dup(start, slen), s->slen = slen;
    if (end) s->end = dup(end, elen), s->elen = elen;
    if (!s->srcs || (start && !s->start) || (end && !s->end)) {
        lsm_scan_free(s);
        return NULL;
    }
    return s;
}

void lsm_scan_free(lsm_scan *s) {
    if (!s) return;
    for (size_t i = 0; s->srcs && i < s->nsrc; i++) {
        src *r = &s->srcs[i];
        lsm_bc_release(r->cache, r->ent);
        lsm_bc_free(r->cache); /* the reference lsm_scan_set_table took */
        free(r->keybuf);
        free(r->key_end);
        free(r->seqs);
        free(r->voff);
        free(r->vlen_);
        free(r->kinds);
    }
    for (size_t i = 0; i < s->ntomb; i++) {
        free(s->tombs[i].start);
        free(s->tombs[i].end);
    }
    free(s->tombs);
    free(s->srcs);
    free(s->start);
    free(s->end);
    free(s->held);
    free(s);
}

int lsm_scan_add_tombstone(lsm_scan *s, uint64_t seq, const uint8_t *start, size_t slen, const uint8_t *end,
                           size_t elen) {
    /* A range tombstone [start, end) at seq; ignored if newer than the snapshot. LSM_ESPACE if out of
     * memory. */
    if (seq > s->snap) return 0;
    if (s->ntomb == s->tcap) {
        size_t nc = s->tcap ? 2 * s->tcap : 8;
        tomb *t = realloc(s->tombs, nc * sizeof(tomb));
        if (!t) return LSM_ESPACE;
        s->tombs = t;
        s->tcap = nc;
    }
    tomb *t = &s->tombs[s->ntomb];
    t->start = dup(start, slen);
    t->end = dup(end, elen);
    if (!t->start || !t->end) {
        free(t->start);
        free(t->end);
        return LSM_ESPACE;
    }
    t->seq = seq;
    t->slen = slen;
    t->elen = elen;
    s->ntomb++;
    return 0;
}

static inline int below_start(const lsm_scan *s, const uint8_t *k, size_t kl) {
    return s->start && cmp_key(k, kl, s->start, s->slen) < 0;
}

static inline int at_or_past_end(const lsm_scan *s, const uint8_t *k, size_t kl) {
    return s->end && cmp_key(k, kl, s->end, s->elen) >= 0;
}

/* Load the memtable source's current node into its view and check the bounds. */
static void mem_view(const lsm_scan *s, src *r) {
    if (!r->node) {
        r->state = SRC_DONE;
        return;
    }
    uint64_t t;
    lsm_mem_cursor_read(r->node, &r->key, &r->klen, &t, &r->val, &r->vlen);
    r->seq = t >> 8;
    r->kind = (uint8_t)(t & 0xFF);
    if (s->reverse ? below_start(s, r->key, r->klen) : at_or_past_end(s, r->key, r->klen)) r->state = SRC_DONE;
    else r->state = SRC_READY;
}

/* Reverse: the node before (key, trailer) (before the end when key is NULL) from the ring, refilled
 * with the next run back when used up. */
static void mem_back(src *r, const uint8_t *key, size_t klen, uint64_t trailer) {
    if (r->rpos >= r->rn) {
        r->rn = lsm_mem_cursor_back(r->m, key, klen, trailer, r->ring, r->rwant, RING);
        r->rpos = 0;
        if (r->rwant < RING) r->rwant = r->rwant * 2 < RING ? r->rwant * 2 : RING;
    }
    r->node = r->rpos < r->rn ? r->ring[r->rpos++] : NULL;
}

int lsm_scan_set_mem(lsm_scan *s, size_t i, const struct lsm_memtable *m) {
    /* Source i is memtable m (which must outlive the scan), positioned at the scan's first version. */
    if (i >= s->nsrc) return LSM_EINVAL;
    src *r = &s->srcs[i];
    r->is_mem = 1;
    r->m = m;
    if (s->reverse) {
        r->rwant = RING_FIRST;
        mem_back(r, s->end, s->elen, UINT64_MAX);
    } else {
        r->node = lsm_mem_cursor_ge(m, s->start, s->slen, UINT64_MAX);
    }
    mem_view(s, r);
    return 0;
}

/* Load block entry r->i into the view; past either end of the block the source needs its next block. */
static void block_view(const lsm_scan *s, src *r) {
    if (r->i < 0 || (size_t)r->i >= r->n) {
        r->state = SRC_NEED;
        return;
    }
    size_t i = (size_t)r->i, a = i ? (size_t)r->key_end[i - 1] : 0;
    r->key = r->keybuf + a;
    r->klen = (size_t)r->key_end[i] - a - 8;
    r->seq = r->seqs[i];
    r->kind = r->kinds[i];
    r->val = r->blk + r->voff[i];
    r->vlen = (size_t)r->vlen_[i];
    if (s->reverse ? below_start(s, r->key, r->klen) : at_or_past_end(s, r->key, r->klen)) r->state = SRC_DONE;
    else r->state = SRC_READY;
}

/* Index of the first entry of the decoded block whose user key is >= key. */
static size_t block_lower_bound(const src *r, const uint8_t *key, size_t klen) {
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2, a = mid ? (size_t)r->key_end[mid - 1] : 0;
        if (cmp_key(r->keybuf + a, (size_t)r->key_end[mid] - a - 8, key, klen) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static int grow_src(src *r, size_t n, size_t keybytes) {
    if (keybytes > r->keycap) {
        size_t c = keybytes * 2;
        uint8_t *k = realloc(r->keybuf, c);
        if (!k) return LSM_ESPACE;
        r->keybuf = k;
        r->keycap = c;
    }
    if (n > r->cap_n) {
        size_t c = n * 2;
        uint64_t *a = realloc(r->key_end, c * 8);
        if (a) r->key_end = a;
        uint64_t *b = realloc(r->seqs, c * 8);
        if (b) r->seqs = b;
        uint64_t *d = realloc(r->voff, c * 8);
        if (d) r->voff = d;
        uint64_t *e = realloc(r->vlen_, c * 8);
        if (e) r->vlen_ = e;
        uint8_t *f = realloc(r->kinds, c);
        if (f) r->kinds = f;
        if (!a || !b || !d || !e || !f) return LSM_ESPACE;
        r->cap_n = c;
    }
    return 0;
}

/* Decode blk[0:len) into source r and position it at its first version in scan order within the bounds. */
int64_t lsm_scan_decode_block(lsm_scan *s, src *r, const uint8_t *blk, size_t len) {
    if (r->cap_n == 0 && grow_src(r, 64, 2048)) return LSM_ESPACE;
    uint64_t need[2];
    int64_t n;
    for (;;) {
        n = lsm_block_decode_data(blk, len, r->keybuf, r->keycap, r->key_end, r->seqs, r->kinds, r->voff,
                                  r->vlen_, r->cap_n, need);
        if (n != LSM_ESPACE) break;
        if (grow_src(r, (size_t)need[0], (size_t)need[1])) return LSM_ESPACE;
    }
    if (n < 0) {
        r->state = SRC_DONE;
        return n;
    }
    r->blk = blk;
    r->n = (size_t)n;
    if (s->reverse) r->i = (s->end ? (int64_t)block_lower_bound(r, s->end, s->elen) : (int64_t)r->n) - 1;
    else r->i = s->start ? (int64_t)block_lower_bound(r, s->start, s->slen) : 0;
    block_view(s, r);
    return n;
}

int64_t lsm_scan_set_block(lsm_scan *s, size_t i, const uint8_t *blk, size_t len) {
    /* Source i now reads the raw data block blk[0:len) (kept alive by the caller until the next
     * set_block/set_done of this source or the end of the scan), positioned at the block's first version
     * in scan order within the bounds. Returns the block's entry count, or LSM_ECORRUPT (a malformed
     * block), LSM_ESPACE (out of memory), LSM_EINVAL (no such source). */
    if (i >= s->nsrc) return LSM_EINVAL;
    src *r = &s->srcs[i];
    r->is_mem = 0;
    r->tbl = 0;
    lsm_bc_release(r->cache, r->ent);
    r->ent = NULL;
    return lsm_scan_decode_block(s, r, blk, len);
}

void lsm_scan_set_page_min(lsm_scan *s, size_t n) {
    /* Table-mode sources go on to their next block within one lsm_scan_next call until the page holds
     * n entries (0, the default: a page ends at the first block boundary). A caller that will take a
     * page of n anyway saves a call per block boundary. */
    s->page_min = n;
}

void lsm_scan_set_done(lsm_scan *s, size_t i) {
    /* Source i has nothing more in range. */
    if (i < s->nsrc) {
        src *r = &s->srcs[i];
        r->state = SRC_DONE;
        lsm_bc_release(r->cache, r->ent);
        r->ent = NULL;
        r->tbl = 0;
    }
}

static void advance(const lsm_scan *s, src *r) {
    if (r->is_mem) {
        if (s->reverse) {
            mem_back(r, r->key, r->klen, r->seq << 8 | r->kind);
        } else {
            r->node = lsm_mem_cursor_next(r->node);
        }
        mem_view(s, r);
    } else {
        r->i += s->reverse ? -1 : 1;
        block_view(s, r);
    }
}

/* 1 if a range tombstone visible at the snapshot covers key with a larger seq than seq. */
static int covered(const lsm_scan *s, const uint8_t *key, size_t klen, uint64_t seq) {
    for (size_t i = 0; i < s->ntomb; i++) {
        const tomb *t = &s->tombs[i];
        if (t->seq > seq && cmp_key(t->start, t->slen, key, klen) <= 0 && cmp_key(key, klen, t->end, t->elen) < 0)
            return 1;
    }
    return 0;
}

static int hold(lsm_scan *s, const src *r, int with_value) {
    size_t need = r->klen + (with_value ? r->vlen : 0);
    if (need > s->heldcap) {
        size_t c = need < 256 ? 256 : 2 * need;
        uint8_t *h = realloc(s->held, c);
        if (!h) return LSM_ESPACE;
        s->held = h;
        s->heldcap = c;
    }
    memcpy(s->held, r->key, r->klen);
    if (with_value && r->vlen) memcpy(s->held + r->klen, r->val, r->vlen);
    s->hklen = r->klen;
    s->hvlen = with_value ? r->vlen : 0;
    s->hseq = r->seq;
    s->hkind = r->kind;
    s->has_held = 1;
    return 0;
}

/* Append "<n>s" to the struct format at fmt[*fl]. */
static inline void fmt_count(char *fmt, size_t *fl, size_t n) {
    char tmp[24];
    size_t l = 0;
    do {
        tmp[l++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (l) fmt[(*fl)++] = tmp[--l];
    fmt[(*fl)++] = 's';
}

/* The page being filled: entry bytes, their offsets, kinds, and the struct format that cuts them. */
typedef struct {
    uint8_t *buf;
    size_t cap;
    uint64_t *offs;
    uint8_t *kinds;
    char *fmt;
    size_t fmtcap, fl;
} page;

/* Copy one entry out; 0, or -1 if it does not fit (state[2] = bytes needed when nothing was copied). */
static int put(page *pg, size_t n, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl, uint8_t kind,
               uint64_t *state) {
    size_t pos = (size_t)pg->offs[2 * n];
    if (pg->cap - pos < kl + vl || pg->fmtcap - pg->fl < 44) {
        if (n == 0) state[2] = kl + vl;
        return -1;
    }
    memcpy(pg->buf + pos, k, kl);
    if (vl) memcpy(pg->buf + pos + kl, v, vl);
    pg->offs[2 * n + 1] = pos + kl;
    pg->offs[2 * n + 2] = pos + kl + vl;
    pg->kinds[n] = kind;
    fmt_count(pg->fmt, &pg->fl, kl);
    fmt_count(pg->fmt, &pg->fl, vl);
    state[4] = pg->fl;
    return 0;
}

int64_t lsm_scan_next(lsm_scan *s, size_t max_n, uint8_t *buf, size_t cap, uint64_t *offs, uint8_t *kinds,
                      char *fmt, size_t fmtcap, uint64_t *state) {
    /* Copy out up to max_n visible entries: entry j's key is buf[offs[2j]:offs[2j+1]], its value
     * buf[offs[2j+1]:offs[2j+2]] (offs holds 2 * max_n + 1 items; offs[0] = 0), kinds[j] its kind (PUT,
     * or BLOB: the value is a blob reference). Returns the count, or LSM_ESPACE (out of memory).
     * state[0] = LSM_SCAN_END when the scan is exhausted, LSM_SCAN_NEED when source state[1] needs its
     * next block before the scan can go on, else LSM_SCAN_MORE (max_n reached, or buf full: state[2] =
     * the bytes one entry needs when not even that fit); state[3] = how many of the entries are BLOBs.
     * fmt[0:state[4]] receives the Python struct format that cuts buf into key, value, key, value, ...
     * ("<klen>s<vlen>s" per entry: one struct.unpack_from makes every bytes object); fmtcap >= 44 per
     * entry always suffices. A table-mode source (lsm_scan_set_table) moves to its next block here; if
     * that fails (and no entry was copied yet), returns LSM_ECORRUPT (state[2] = why), LSM_SCAN_EIO
     * (state[2] = errno) or LSM_ESPACE, with state[1] = the source, state[5] = the block offset and
     * state[6] = the table's position in the view for a level-mode source (state holds 7 words). */
    size_t n = 0, ns = s->nsrc;
    src *srcs = s->srcs;
    page pg = {buf, cap, offs, kinds, fmt, fmtcap, 0};
    offs[0] = 0;
    state[0] = LSM_SCAN_MORE;
    state[1] = state[2] = state[3] = state[4] = 0;
    const int rev = s->reverse;
    for (;;) {
        if (n >= max_n) return (int64_t)n;
        /* Pick the next version in scan order; every live source needs its head for that. */
        src *best = NULL;
        for (size_t j = 0; j < ns; j++) {
            src *r = &srcs[j];
            if (r->state == SRC_DONE) continue;
            if (r->state == SRC_NEED && r->tbl) {
                int64_t nt, nb;
                int more = lsm_scan_next_block(s, r, &nt, &nb);
                if (more == 0) {
                    r->state = SRC_DONE;
                    lsm_bc_release(r->cache, r->ent);
                    r->ent = NULL;
                    continue;
                }
                if (more == 1) {
                    /* A page of page_min entries or more ends where a source needs its next block,
                     * so a block is read only when the caller asks for more (pages of 256 read ~16
                     * blocks per seek + 50 where ~7 were needed). */
                    if (n && n >= s->page_min) return (int64_t)n;
                    uint64_t err[3];
                    int64_t rc = lsm_scan_table_load(s, r, nt, nb, err);
                    if (rc < 0) {
                        if (n) return (int64_t)n; /* the entries so far first; the next call fails again */
                        state[1] = j;
                        state[2] = err[0];
                        state[5] = err[1];
                        state[6] = err[2];
                        return rc == LSM_ESPACE || rc == LSM_ECORRUPT ? rc : LSM_SCAN_EIO;
                    }
                    if (r->state == SRC_DONE) continue; /* the new block starts past the bounds */
                }
            }
            if (r->state == SRC_NEED) {
                state[0] = LSM_SCAN_NEED;
                state[1] = j;
                return (int64_t)n;
            }
            if (!best) {
                best = r;
                continue;
            }
            int c = cmp_key(r->key, r->klen, best->key, best->klen);
            if (rev ? (c > 0 || (c == 0 && r->seq < best->seq)) : (c < 0 || (c == 0 && r->seq > best->seq)))
                best = r;
        }
        if (!best) {
            /* Exhausted; in reverse the held version is the last key's answer. */
            if (rev && s->has_held) {
                if (s->hkind != 0 && !covered(s, s->held, s->hklen, s->hseq)) {
                    if (put(&pg, n, s->held, s->hklen, s->held + s->hklen, s->hvlen, s->hkind,
                            state))
                        return (int64_t)n;
                    state[3] += s->hkind == 2;
                    n++;
                }
                s->has_held = 0;
            }
            state[0] = LSM_SCAN_END;
            return (int64_t)n;
        }
        if (best->seq > s->snap) {
            advance(s, best);
            continue;
        }
        if (!rev) {
            /* The first version of a user key at or below the snapshot decides it. */
            if (s->has_held && cmp_key(best->key, best->klen, s->held, s->hklen) == 0) {
                advance(s, best);
                continue;
            }
            if (best->kind != 0 && !covered(s, best->key, best->klen, best->seq)) {
                if (put(&pg, n, best->key, best->klen, best->val, best->vlen, best->kind, state))
                    return (int64_t)n;
                state[3] += best->kind == 2;
                n++;
            }
            if (hold(s, best, 0)) return LSM_ESPACE;
            advance(s, best);
            continue;
        }
        /* Reverse: versions of a key arrive oldest first; the last one at or below the snapshot decides. */
        if (s->has_held && cmp_key(best->key, best->klen, s->held, s->hklen) != 0) {
            if (s->hkind != 0 && !covered(s, s->held, s->hklen, s->hseq)) {
                if (put(&pg, n, s->held, s->hklen, s->held + s->hklen, s->hvlen, s->hkind,
                        state))
                    return (int64_t)n;
                state[3] += s->hkind == 2;
                n++;
            }
            s->has_held = 0;
            continue;
        }
        if (hold(s, best, 1)) return LSM_ESPACE;
        advance(s, best);
    }
}
