/* postings_read.c: reading search posting lists (docs/search.md, "Encodings" and "Query evaluation").
 *
 * lsm_post_ranks decodes the ordinal header of a posting block (format 1 or 2) into ranks (ordinal + base)
 * with exactly the checks of lsmmail.search.postings._header; lsm_post_and walks sorted rank lists from the
 * top and returns the newest matches of an AND with negations, skipping by galloping. Twins:
 * lsmmail/search/_postings_read.py. */
#include "postings_read.h"

#define LSM_ECORRUPT -1
#define LSM_EINVAL -3

/* One varint at blk[*pos..len), as lsmmail.engine.coding.get_varint reads it (at most 10 bytes). A value
 * that does not fit 64 bits saturates: every caller rejects such values as out of range anyway. */
static int get_varint(const uint8_t *blk, size_t len, size_t *pos, uint64_t *out) {
    size_t p = *pos;
    uint64_t v = 0;
    for (unsigned shift = 0; shift <= 63; shift += 7) {
        if (p >= len) return LSM_ECORRUPT;
        uint8_t b = blk[p++];
        uint64_t part = (uint64_t)(b & 0x7F);
        if (shift == 63 && part > 1) v = UINT64_MAX;
        else v |= part << shift;
        if (b < 0x80) {
            *pos = p;
            *out = v;
            return 0;
        }
    }
    return LSM_ECORRUPT;
}

int64_t lsm_post_ranks(const uint8_t *blk, size_t len, uint64_t table_len, uint32_t base, uint32_t *out,
                       size_t cap) {
    if ((uint64_t)base + table_len > (uint64_t)UINT32_MAX + 1) return LSM_EINVAL;
    if (len < 4 || (blk[0] != 1 && blk[0] != 2)) return LSM_ECORRUPT;
    uint8_t mode = blk[1];
    size_t pos = 2;
    uint64_t n, cur;
    if (get_varint(blk, len, &pos, &n) != 0) return LSM_ECORRUPT;
    if (get_varint(blk, len, &pos, &cur) != 0) return LSM_ECORRUPT;
    if (n == 0) return LSM_ECORRUPT;
    if (mode != 0 && mode != 1) return LSM_ECORRUPT;
    if (mode == 0 && n - 1 > len - pos) return LSM_ECORRUPT; /* truncated */
    /* Every ordinal is < table_len, so a larger value (or a sum past it) is corruption whatever follows. */
    if (cur >= table_len || n > cap) return LSM_ECORRUPT;
    out[0] = base + (uint32_t)cur;
    for (uint64_t i = 1; i < n; i++) {
        uint64_t d;
        if (mode == 0) {
            d = blk[pos++];
        } else if (get_varint(blk, len, &pos, &d) != 0) {
            return LSM_ECORRUPT;
        }
        if (d == 0 || d >= table_len - cur) return LSM_ECORRUPT;
        cur += d;
        out[i] = base + (uint32_t)cur;
    }
    return (int64_t)n;
}

/* The number of elements of a[0..n) (ascending) that are <= c, searching down from the top: galloping
 * steps of 1, 2, 4, ... then a binary search, so a walk down a long list that matches rarely costs
 * O(log gap) per step, not O(gap). */
static size_t count_le(const uint32_t *a, size_t n, uint32_t c) {
    if (n == 0 || a[n - 1] <= c) return n;
    size_t hi = n - 1, lo = 0, step = 1; /* invariant: a[hi] > c; the answer is in [lo, hi] */
    while (step <= hi) {
        size_t probe = hi - step;
        if (a[probe] <= c) {
            lo = probe + 1;
            break;
        }
        hi = probe;
        step <<= 1;
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] > c) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

#define MAX_LISTS 64

int64_t lsm_post_and(const uint32_t *const *pos, const size_t *pos_len, size_t npos,
                     const uint32_t *const *neg, const size_t *neg_len, size_t nneg, uint32_t lo, uint32_t hi,
                     uint32_t *out, size_t want) {
    if (npos > MAX_LISTS || nneg > MAX_LISTS) return LSM_EINVAL;
    size_t pn[MAX_LISTS], nn[MAX_LISTS];
    size_t drv = 0;
    for (size_t i = 0; i < npos; i++) {
        pn[i] = pos_len[i];
        if (pn[i] < pn[drv]) drv = i;
    }
    for (size_t j = 0; j < nneg; j++) nn[j] = neg_len[j];
    size_t nout = 0;
    if (hi == 0 || hi <= lo) return 0;
    uint32_t top = hi - 1; /* the newest rank allowed */
    if (npos == 0) {
        /* every rank in [lo, hi), newest first, minus the negated lists */
        for (uint64_t c = (uint64_t)top + 1; c-- > lo && nout < want;) {
            int skip = 0;
            for (size_t j = 0; j < nneg; j++) {
                nn[j] = count_le(neg[j], nn[j], (uint32_t)c);
                if (nn[j] > 0 && neg[j][nn[j] - 1] == c) {
                    skip = 1;
                    break;
                }
            }
            if (!skip) out[nout++] = (uint32_t)c;
        }
        return (int64_t)nout;
    }
    const uint32_t *d = pos[drv];
    size_t dn = count_le(d, pn[drv], top);
    while (dn > 0 && nout < want) {
        uint32_t c = d[dn - 1];
        if (c < lo) break;
        if (c > top) { /* only in unsorted input: keep the result inside [lo, hi) whatever it is given */
            dn--;
            continue;
        }
        int ok = 1;
        for (size_t i = 0; i < npos; i++) {
            if (i == drv) continue;
            pn[i] = count_le(pos[i], pn[i], c);
            if (pn[i] == 0) return (int64_t)nout; /* list i has nothing <= c: no match below either */
            uint32_t t = pos[i][pn[i] - 1];
            if (t != c) {
                /* nothing of list i lies in (t, c]: jump the driver down to t */
                dn = count_le(d, dn - 1, t);
                ok = 0;
                break;
            }
        }
        if (!ok) continue;
        dn--;
        for (size_t j = 0; j < nneg; j++) {
            nn[j] = count_le(neg[j], nn[j], c);
            if (nn[j] > 0 && neg[j][nn[j] - 1] == c) {
                ok = 0;
                break;
            }
        }
        if (ok) out[nout++] = c;
    }
    return (int64_t)nout;
}
