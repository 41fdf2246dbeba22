/* Data and index blocks (docs/format.md "Data and index blocks"): prefix-compressed entries with
 * restart points, then u32 restart offsets and u32 num_restarts.
 *
 * Decoding is strict, so that a malformed block is reported as corruption instead of read as other
 * data: the restart array must fit, start at 0, increase strictly, and every restart offset must be the
 * start of an entry whose `shared` is 0; every varint and every key/value length must stay inside the
 * entry area; `shared` may not exceed the previous key's length. An empty block is num_restarts = 0
 * with no entries. */
#include <string.h>

#include "lsm_bytes.h"
#include "lsm_native.h"
#include "lsm_varint.h"

static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline int get_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *out) {
    size_t p = *pos;
    if (p < len && buf[p] < 0x80) { /* one-byte fast path: nearly every shared/non_shared length */
        *out = buf[p];
        *pos = p + 1;
        return 0;
    }
    uint64_t result = 0;
    for (unsigned shift = 0; shift <= 63; shift += 7) {
        if (p >= len) return LSM_ECORRUPT;
        uint8_t b = buf[p++];
        if (shift == 63 && b > 1) return LSM_ECORRUPT;
        result |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            *pos = p;
            *out = result;
            return 0;
        }
    }
    return LSM_ECORRUPT;
}

/* Check the restart array; return the offset where it starts (end of the entries) or LSM_ECORRUPT. */
static int64_t parse_restarts(const uint8_t *blk, size_t len, uint32_t *num_restarts) {
    if (len < 4) return LSM_ECORRUPT;
    uint32_t nr = rd32(blk + len - 4);
    uint64_t tail = 4 + (uint64_t)nr * 4;
    if (tail > len) return LSM_ECORRUPT;
    size_t data_end = len - (size_t)tail;
    if (nr == 0 && data_end != 0) return LSM_ECORRUPT;
    uint32_t prev = 0;
    for (uint32_t i = 0; i < nr; i++) {
        uint32_t r = rd32(blk + data_end + 4 * (size_t)i);
        if (i == 0 ? r != 0 : r <= prev) return LSM_ECORRUPT;
        if (r >= data_end) return LSM_ECORRUPT;
        prev = r;
    }
    *num_restarts = nr;
    return (int64_t)data_end;
}

typedef struct {
    const uint8_t *blk;
    size_t data_end, pos;
    uint32_t nr, ri; /* restarts, index of the next restart to meet */
    uint64_t prev_len;
} walker;

typedef struct {
    uint64_t shared, non_shared, vlen;
    size_t delta_off, val_off;
} entry;

/* Read the entry at w->pos and advance; 0 on success, LSM_ECORRUPT if malformed. */
static inline int next_entry(walker *w, entry *e) {
    size_t p = w->pos, end = w->data_end;
    int is_restart = 0;
    if (w->ri < w->nr) {
        uint32_t r = rd32(w->blk + end + 4 * (size_t)w->ri);
        if (r < p) return LSM_ECORRUPT; /* a restart offset pointed into the middle of an entry */
        is_restart = (r == p);
    }
    if (get_varint(w->blk, end, &p, &e->shared) || get_varint(w->blk, end, &p, &e->non_shared) ||
        get_varint(w->blk, end, &p, &e->vlen))
        return LSM_ECORRUPT;
    if (e->shared > w->prev_len || (is_restart && e->shared != 0)) return LSM_ECORRUPT;
    if (e->non_shared > end - p || e->vlen > end - p - e->non_shared) return LSM_ECORRUPT;
    e->delta_off = p;
    e->val_off = p + e->non_shared;
    w->pos = e->val_off + e->vlen;
    w->prev_len = e->shared + e->non_shared;
    if (is_restart) w->ri++;
    return 0;
}

/* One decoder for both entry points: with seq/kind set (data blocks) every key must be an internal key of
 * at least 9 bytes (a user key of at least 1 byte plus the trailer) whose kind is 0, 1 or 2 (the kinds an
 * SSTable holds), and the trailer is split into seq[] and kind[]. */
static int64_t decode_impl(const uint8_t *blk, size_t len, uint8_t *keybuf, size_t keycap, uint64_t *key_end,
                           uint64_t *seq, uint8_t *kind, uint64_t *val_off, uint64_t *val_len, size_t max_n,
                           uint64_t *need) {
    uint32_t nr;
    int64_t de = parse_restarts(blk, len, &nr);
    if (de < 0) return de;
    walker w = {blk, (size_t)de, 0, nr, 0, 0};
    size_t n = 0, kpos = 0, prev_start = 0;
    int fits = 1; /* once an output overflows, keep validating and counting what would be needed */
    while (w.pos < w.data_end) {
        entry e;
        if (next_entry(&w, &e)) return LSM_ECORRUPT;
        uint64_t klen = e.shared + e.non_shared;
        if (seq && klen < 9) return LSM_ECORRUPT;
        if (fits && (n >= max_n || klen > keycap - kpos)) fits = 0;
        if (fits) {
            /* memmove: the shared prefix is copied from the previous key, just before in keybuf. */
            memmove(keybuf + kpos, keybuf + prev_start, (size_t)e.shared);
            memcpy(keybuf + kpos + e.shared, blk + e.delta_off, (size_t)e.non_shared);
            prev_start = kpos;
            key_end[n] = kpos + klen;
            val_off[n] = e.val_off;
            val_len[n] = e.vlen;
            if (seq) {
                const uint8_t *t = keybuf + kpos + klen - 8;
                uint64_t trailer = 0;
                for (int i = 7; i >= 0; i--) trailer = (trailer << 8) | t[i];
                /* kinds checked here only; in counting mode the caller retries with room and we get here */
                if ((trailer & 0xFF) > 2) return LSM_ECORRUPT;
                seq[n] = trailer >> 8;
                kind[n] = (uint8_t)(trailer & 0xFF);
            }
        }
        kpos += klen;
        n++;
    }
    if (w.ri != w.nr) return LSM_ECORRUPT;
    if (!fits) {
        need[0] = n;
        need[1] = kpos;
        return LSM_ESPACE;
    }
    return (int64_t)n;
}

int64_t lsm_block_decode(const uint8_t *blk, size_t len, uint8_t *keybuf, size_t keycap, uint64_t *key_end,
                         uint64_t *val_off, uint64_t *val_len, size_t max_n, uint64_t *need) {
    return decode_impl(blk, len, keybuf, keycap, key_end, NULL, NULL, val_off, val_len, max_n, need);
}

int64_t lsm_block_decode_data(const uint8_t *blk, size_t len, uint8_t *keybuf, size_t keycap,
                              uint64_t *key_end, uint64_t *seq, uint8_t *kind, uint64_t *val_off,
                              uint64_t *val_len, size_t max_n, uint64_t *need) {
    return decode_impl(blk, len, keybuf, keycap, key_end, seq, kind, val_off, val_len, max_n, need);
}

int lsm_compare_internal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    /* user key ascending (bytewise, shorter first on a tie), then trailer descending. */
    size_t ua = alen - 8, ub = blen - 8;
    int c = lsm_key_cmp(a, ua, b, ub);
    if (c) return c;
    uint64_t ta = 0, tb = 0;
    for (int i = 7; i >= 0; i--) {
        ta = (ta << 8) | a[ua + (size_t)i];
        tb = (tb << 8) | b[ub + (size_t)i];
    }
    return ta > tb ? -1 : (ta < tb ? 1 : 0);
}

static inline int compare_bytes(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    return lsm_key_cmp(a, alen, b, blen);
}

int64_t lsm_block_seek(const uint8_t *blk, size_t len, const uint8_t *target, size_t tlen, int internal,
                       uint8_t *keyout, size_t keycap, uint64_t *found) {
    /* found[0..4] = index of the first key >= target (n if none), its key length, value offset, value
     * length, number of entries. The whole block is validated as lsm_block_decode does (same outcome on a
     * malformed block); a key can never be longer than the block, so keycap = len always suffices. */
    if (internal && tlen < 8) return LSM_EINVAL;
    uint32_t nr;
    int64_t de = parse_restarts(blk, len, &nr);
    if (de < 0) return de;
    walker w = {blk, (size_t)de, 0, nr, 0, 0};
    size_t n = 0;
    int hit = 0;
    found[0] = found[1] = found[2] = found[3] = 0;
    while (w.pos < w.data_end) {
        entry e;
        if (next_entry(&w, &e)) return LSM_ECORRUPT;
        if (!hit) {
            uint64_t klen = e.shared + e.non_shared;
            if (klen > keycap) return LSM_ESPACE;
            memcpy(keyout + e.shared, blk + e.delta_off, (size_t)e.non_shared);
            int c;
            if (internal) {
                if (klen < 8) return LSM_ECORRUPT;
                c = lsm_compare_internal(keyout, (size_t)klen, target, tlen);
            } else {
                c = compare_bytes(keyout, (size_t)klen, target, tlen);
            }
            if (c >= 0) {
                hit = 1;
                found[0] = n;
                found[1] = klen;
                found[2] = e.val_off;
                found[3] = e.vlen;
            }
        }
        n++;
    }
    if (w.ri != w.nr) return LSM_ECORRUPT;
    if (!hit) found[0] = n;
    found[4] = n;
    return hit;
}

int64_t lsm_block_encode(const uint8_t *keys, const uint64_t *key_end, const uint8_t *vals,
                         const uint64_t *val_end, size_t n, uint32_t restart_interval, uint8_t *out,
                         size_t cap) {
    /* keys[key_end[i-1]:key_end[i]] is key i (key_end[-1] = 0); values likewise. The worst case size is
     * sum(keys) + sum(values) + 30 * n + 4 * (n / restart_interval + 2). Restart offsets are parked at
     * the end of `out` while entries are written, then moved down behind the last entry. */
    if (restart_interval == 0) return LSM_EINVAL;
    size_t nr = n == 0 ? 0 : (n - 1) / restart_interval + 1;
    if (cap < 4 * (nr + 1)) return LSM_ESPACE;
    size_t limit = cap - 4 * (nr + 1);
    size_t pos = 0, kprev = 0, kprev_len = 0, vs = 0;
    for (size_t i = 0; i < n; i++) {
        size_t ks = i ? (size_t)key_end[i - 1] : 0, klen = (size_t)key_end[i] - ks;
        size_t vlen = (size_t)val_end[i] - vs;
        size_t shared = 0;
        if (i % restart_interval) {
            size_t m = klen < kprev_len ? klen : kprev_len;
            const uint8_t *a = keys + kprev, *b = keys + ks;
            while (shared < m && a[shared] == b[shared]) shared++;
        } else {
            if (pos > 0xFFFFFFFFu) return LSM_EINVAL; /* offsets are u32 */
            wr32(out + limit + 4 * (i / restart_interval), (uint32_t)pos);
        }
        size_t nonsh = klen - shared;
        if (limit - pos < 30 || limit - pos - 30 < nonsh || limit - pos - 30 - nonsh < vlen) return LSM_ESPACE;
        pos += lsm_put_varint(out + pos, shared);
        pos += lsm_put_varint(out + pos, nonsh);
        pos += lsm_put_varint(out + pos, vlen);
        memcpy(out + pos, keys + ks + shared, nonsh);
        pos += nonsh;
        memcpy(out + pos, vals + vs, vlen);
        pos += vlen;
        kprev = ks;
        kprev_len = klen;
        vs = (size_t)val_end[i];
    }
    memmove(out + pos, out + limit, 4 * nr);
    pos += 4 * nr;
    wr32(out + pos, (uint32_t)nr);
    return (int64_t)(pos + 4);
}

int64_t lsm_block_get(const uint8_t *blk, size_t len, const uint8_t *ukey, size_t ulen, uint64_t snap,
                      uint8_t *keybuf, size_t keycap, uint64_t *out) {
    /* Point lookup of (ukey, snap) in a raw data block: the first entry whose internal key is >= ukey with
     * trailer (snap << 8 | 0xFF), as lsm_block_seek(internal=1) finds it and with the same validation of
     * the whole block, then judged in place instead of copied out: 1 = that entry is a version of ukey
     * (out[0..3] = seq, kind, value offset, value length), 2 = a larger user key follows (stop), 0 = no
     * such entry in this block (try the next one). A hit whose key is shorter than 9 bytes or whose kind
     * is not 0..2 is LSM_ECORRUPT. snap must be < 2^56 (LSM_EINVAL otherwise). */
    if (snap >> 56) return LSM_EINVAL;
    uint64_t target = (snap << 8) | 0xFF;
    uint32_t nr;
    int64_t de = parse_restarts(blk, len, &nr);
    if (de < 0) return de;
    walker w = {blk, (size_t)de, 0, nr, 0, 0};
    int hit = 0;
    uint64_t hlen = 0, hoff = 0, hvlen = 0, htrailer = 0;
    int hsame = 0;
    while (w.pos < w.data_end) {
        entry e;
        if (next_entry(&w, &e)) return LSM_ECORRUPT;
        if (hit) continue;
        uint64_t klen = e.shared + e.non_shared;
        if (klen > keycap) return LSM_ESPACE;
        memcpy(keybuf + e.shared, blk + e.delta_off, (size_t)e.non_shared);
        if (klen < 8) return LSM_ECORRUPT;
        size_t uk = (size_t)klen - 8;
        int c = compare_bytes(keybuf, uk, ukey, ulen);
        uint64_t t = 0;
        for (int i = 7; i >= 0; i--) t = (t << 8) | keybuf[uk + (size_t)i];
        if (c == 0) c = t > target ? -1 : (t < target ? 1 : 0);
        if (c >= 0) {
            hit = 1;
            hlen = klen;
            hoff = e.val_off;
            hvlen = e.vlen;
            htrailer = t;
            hsame = uk == ulen && memcmp(keybuf, ukey, ulen) == 0;
        }
    }
    if (w.ri != w.nr) return LSM_ECORRUPT;
    if (!hit) return 0;
    if (!hsame) return hlen < 9 ? LSM_ECORRUPT : 2;
    if ((htrailer & 0xFF) > 2) return LSM_ECORRUPT;
    out[0] = htrailer >> 8;
    out[1] = htrailer & 0xFF;
    out[2] = hoff;
    out[3] = hvlen;
    return 1;
}
