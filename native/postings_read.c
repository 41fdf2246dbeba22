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

/* One varint as lsmmail.native.decode_varints reads position sections: at most 10 bytes, and a 10th byte
 * above 1 (a value beyond 64 bits) is corruption. */
static int get_varint_strict(const uint8_t *blk, size_t len, size_t *pos, uint64_t *out) {
    size_t p = *pos;
    uint64_t v = 0;
    for (unsigned shift = 0; shift <= 63; shift += 7) {
        if (p >= len) return LSM_ECORRUPT;
        uint8_t b = blk[p++];
        if (shift == 63 && b > 1) return LSM_ECORRUPT;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            *pos = p;
            *out = v;
            return 0;
        }
    }
    return LSM_ECORRUPT;
}

/* Check a whole format-1/2 block as postings._walk does and record, for each candidate ordinal it holds,
 * where that doc's position run starts (run[c] = offset of its npos varint; UINT64_MAX: not in the block).
 * cand is ascending. ords is scratch of len + 1 entries. */
static int64_t index_block(const uint8_t *blk, size_t len, uint64_t table_len, const uint32_t *cand,
                           size_t ncand, uint64_t *run, uint32_t *ords) {
    int64_t n = lsm_post_ranks(blk, len, table_len, 0, ords, len + 1);
    if (n < 0) return n;
    /* where the header ends: decode it again for its length (cheap next to the position section) */
    size_t pos = 2;
    uint64_t v;
    get_varint(blk, len, &pos, &v);
    get_varint(blk, len, &pos, &v);
    if (blk[1] == 0) {
        pos += (size_t)(n - 1);
    } else {
        for (int64_t i = 1; i < n; i++) get_varint(blk, len, &pos, &v);
    }
    for (size_t c = 0; c < ncand; c++) run[c] = UINT64_MAX;
    if (blk[0] == 2) {
        if (pos != len) return LSM_ECORRUPT; /* trailing bytes after an ordinals-only block */
        size_t c = 0;
        for (int64_t i = 0; i < n; i++) {
            while (c < ncand && cand[c] < ords[i]) c++;
            if (c < ncand && cand[c] == ords[i]) run[c] = UINT64_MAX - 1; /* held, no positions */
        }
        return 0;
    }
    size_t c = 0;
    for (int64_t i = 0; i < n; i++) {
        size_t start = pos;
        uint64_t npos;
        if (get_varint_strict(blk, len, &pos, &npos) != 0) return LSM_ECORRUPT;
        for (uint64_t j = 0; j < npos; j++) {
            if (get_varint_strict(blk, len, &pos, &v) != 0) return LSM_ECORRUPT;
        }
        while (c < ncand && cand[c] < ords[i]) c++;
        if (c < ncand && cand[c] == ords[i]) run[c] = start;
    }
    if (pos != len) {
        /* trailing bytes: corruption whether or not they parse as varints */
        return LSM_ECORRUPT;
    }
    return 0;
}

#define LSM_EDECLINE -4

/* Positions of the run at blk[off..) into out (npos of them); LSM_EDECLINE if one does not fit 64 bits. */
static int64_t run_positions(const uint8_t *blk, size_t len, uint64_t off, uint64_t *out) {
    if (off == UINT64_MAX - 1) return 0;
    size_t pos = (size_t)off;
    uint64_t npos, v, p = 0;
    get_varint_strict(blk, len, &pos, &npos); /* checked by index_block */
    for (uint64_t j = 0; j < npos; j++) {
        get_varint_strict(blk, len, &pos, &v);
        if (j == 0) {
            p = v;
        } else {
            if (v > UINT64_MAX - 1 - p) return LSM_EDECLINE;
            p = p + v + 1;
        }
        out[j] = p;
    }
    return (int64_t)npos;
}

int64_t lsm_post_phrase(const uint8_t *buf, const uint64_t *ends, size_t k, uint64_t table_len,
                        const uint32_t *cand, size_t ncand, uint64_t *run, uint32_t *ords, uint64_t *posbuf,
                        uint32_t *out) {
    if (k == 0 || k > MAX_LISTS) return LSM_EINVAL;
    const uint8_t *blks[MAX_LISTS];
    size_t lens[MAX_LISTS];
    for (size_t t = 0; t < k; t++) {
        uint64_t start = t ? ends[t - 1] : 0;
        if (ends[t] < start) return LSM_EINVAL;
        blks[t] = buf + start;
        lens[t] = (size_t)(ends[t] - start);
    }
    for (size_t t = 0; t < k; t++) {
        int64_t rc = index_block(blks[t], lens[t], table_len, cand, ncand, run + t * ncand, ords);
        if (rc < 0) return rc;
    }
    size_t nout = 0;
    int64_t np[MAX_LISTS];
    uint64_t *pl[MAX_LISTS];
    for (size_t c = 0; c < ncand; c++) {
        int held = 1;
        for (size_t t = 0; t < k; t++) {
            if (run[t * ncand + c] == UINT64_MAX) held = 0;
        }
        if (!held) continue;
        /* every token's positions in this doc, one after another in posbuf (at most one per block byte) */
        uint64_t *at = posbuf;
        for (size_t t = 0; t < k; t++) {
            np[t] = run_positions(blks[t], lens[t], run[t * ncand + c], at);
            if (np[t] < 0) return np[t];
            pl[t] = at;
            at += np[t];
        }
        size_t ptr[MAX_LISTS] = {0};
        int match = 0;
        for (int64_t i = 0; i < np[0] && !match; i++) {
            uint64_t p = pl[0][i];
            match = 1;
            for (size_t t = 1; t < k; t++) {
                if (p > UINT64_MAX - t) { /* p + t would not fit: no such position */
                    match = 0;
                    break;
                }
                while ((int64_t)ptr[t] < np[t] && pl[t][ptr[t]] < p + t) ptr[t]++;
                if ((int64_t)ptr[t] >= np[t] || pl[t][ptr[t]] != p + t) {
                    match = 0;
                    break;
                }
            }
        }
        if (match) out[nout++] = cand[c];
    }
    return (int64_t)nout;
}
