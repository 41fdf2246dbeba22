/* memtable_flush.c: what a flush reads out of a memtable: each key's newest version in order, as internal
 * keys and values (lsm_mem_flush_scan) or already encoded as the table's data blocks
 * (lsm_mem_flush_blocks). Nodes and their helpers are in memtable_internal.inc; scans in memtable_scan.c,
 * inserts in memtable.c and memtable_batch.c. */
#include <stdlib.h>
#include <string.h>

#include "lsm_varint.h"
#include "memtable_internal.inc"

int64_t lsm_mem_flush_scan(const lsm_memtable *m, const void *after, size_t max_n, uint8_t *buf, size_t cap,
                           uint64_t *ends, const void **last, uint64_t *state) {
    /* For a flush with no snapshot and no range tombstone: the newest version of every key, in order,
     * as internal keys (user key + 8-byte little-endian trailer) and values laid out in buf as in
     * lsm_mem_scan (ends[2i] = internal key end, ends[2i+1] = value end). `after`, *last and state[]
     * as in lsm_mem_scan. Older versions of a key are skipped: no reader can see them. */
    size_t n = 0, pos = 0;
    const node *prev = after;
    const node *x = after ? load(&prev->next[0]) : load(&m->head->next[0]);
    state[0] = 0;
    state[1] = 0;
    for (; x && n < max_n; x = load(&x->next[0])) {
        if (prev && prev->klen == x->klen && memcmp(key_of(prev), key_of(x), x->klen) == 0) continue;
        size_t sz = (size_t)x->klen + 8 + x->vlen;
        if (cap - pos < sz) {
            if (n == 0) state[1] = sz;
            return (int64_t)n;
        }
        memcpy(buf + pos, key_of(x), x->klen);
        pos += x->klen;
        for (int i = 0; i < 8; i++) buf[pos + i] = (uint8_t)(x->trailer >> (8 * i));
        pos += 8;
        ends[2 * n] = pos;
        memcpy(buf + pos, val_of(x), x->vlen);
        pos += x->vlen;
        ends[2 * n + 1] = pos;
        *last = x;
        prev = x;
        n++;
    }
    if (n < max_n) state[0] = 1;
    return (int64_t)n;
}

static size_t varint_len(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

int64_t lsm_mem_flush_blocks(const lsm_memtable *m, const void *after, size_t block_size, uint32_t ri,
                             size_t max_blocks, uint8_t *buf, size_t cap, uint64_t *block_end,
                             uint64_t *block_last, uint8_t *keys, size_t keycap, uint64_t *key_end,
                             uint64_t *trailers, size_t max_keys, const void **last, uint64_t *state) {
    /* The data blocks of a flush (each key's newest version, as lsm_mem_flush_scan picks them), encoded
     * exactly as TableBuilder cuts and lsm_block_encode writes them: a block ends right after the entry
     * that brings its raw size (entries + restart array + count) to block_size or more. Block b is
     * buf[block_end[b-1]:block_end[b]]; entry i of this call has user key keys[key_end[i-1]:key_end[i]]
     * and trailer trailers[i]; block_last[b] = index of block b's last entry. Only whole blocks are
     * returned, except the last one of the memtable. Returns the block count; state[0] = 1 when the
     * memtable is exhausted, state[1] = 1 when not even one block fit (grow buf/keys and call again),
     * state[2] = entries returned, state[3] = their value bytes. */
    if (ri == 0 || block_size == 0) return LSM_EINVAL;
    state[0] = state[1] = state[2] = state[3] = 0;
    uint64_t vbytes = 0, vdone = 0;
    const node *prev = after;
    const node *x = after ? load(&prev->next[0]) : load(&m->head->next[0]);
    size_t nb = 0, pos = 0, kpos = 0, ne = 0;
    /* The open block: where it starts in buf/keys/entries, its entry count, its restart offsets. */
    size_t bstart = 0, estart = 0, bn = 0;
    uint32_t *restarts = NULL;
    size_t rcap = 0;
    const node *blast = NULL, *bprev = NULL;
    int64_t rc = 0;
    while (nb < max_blocks) {
        /* Skip older versions of the key just taken. */
        while (x && prev && prev->klen == x->klen && memcmp(key_of(prev), key_of(x), x->klen) == 0)
            x = load(&x->next[0]);
        if (!x) break;
        size_t klen = (size_t)x->klen + 8, vlen = x->vlen, shared = 0;
        if (bn % ri) {
            size_t pl = (size_t)bprev->klen + 8, mlen = klen < pl ? klen : pl;
            const uint8_t *a = key_of(bprev), *b = key_of(x);
            size_t ua = bprev->klen, ub = x->klen;
            /* Shared prefix of the internal keys (user key, then the 8 trailer bytes). */
            while (shared < mlen) {
                uint8_t ca = shared < ua ? a[shared] : (uint8_t)(bprev->trailer >> (8 * (shared - ua)));
                uint8_t cb = shared < ub ? b[shared] : (uint8_t)(x->trailer >> (8 * (shared - ub)));
                if (ca != cb) break;
                shared++;
            }
        }
        size_t nonsh = klen - shared;
        size_t need = varint_len(shared) + varint_len(nonsh) + varint_len(vlen) + nonsh + vlen;
        if (bn % ri == 0) {
            if (bn / ri >= rcap) {
                size_t nc = rcap ? 2 * rcap : 64;
                uint32_t *r = realloc(restarts, nc * sizeof(uint32_t));
                if (!r) {
                    rc = LSM_ESPACE;
                    goto out;
                }
                restarts = r;
                rcap = nc;
            }
            restarts[bn / ri] = (uint32_t)(pos - bstart);
        }
        size_t nr = bn / ri + 1;
        if (cap - pos < need + 4 * (nr + 1) || keycap - kpos < x->klen || ne >= max_keys) {
            /* Out of room: drop the open block; it is redone by the next call. */
            if (nb == 0) state[1] = 1;
            goto out;
        }
        uint8_t *p = buf + pos;
        p += lsm_put_varint(p, shared);
        p += lsm_put_varint(p, nonsh);
        p += lsm_put_varint(p, vlen);
        for (size_t i = shared; i < klen; i++)
            *p++ = i < x->klen ? key_of(x)[i] : (uint8_t)(x->trailer >> (8 * (i - x->klen)));
        memcpy(p, val_of(x), vlen);
        p += vlen;
        vbytes += vlen;
        pos = (size_t)(p - buf);
        memcpy(keys + kpos, key_of(x), x->klen);
        kpos += x->klen;
        key_end[ne] = kpos;
        trailers[ne] = x->trailer;
        ne++;
        bn++;
        bprev = x;
        prev = x;
        x = load(&x->next[0]);
        size_t raw = pos - bstart + 4 * nr + 4;
        int more = 0;
        if (raw < block_size) {
            /* The block stays open unless the memtable ends here. */
            const node *y = x;
            while (y && y->klen == bprev->klen && memcmp(key_of(y), key_of(bprev), y->klen) == 0)
                y = load(&y->next[0]);
            more = y != NULL;
        }
        if (!more) {
            /* Close the block: restart array and count. */
            for (size_t i = 0; i < nr; i++) {
                uint32_t r = restarts[i];
                for (int j = 0; j < 4; j++) buf[pos++] = (uint8_t)(r >> (8 * j));
            }
            for (int j = 0; j < 4; j++) buf[pos++] = (uint8_t)(nr >> (8 * j));
            block_end[nb] = pos;
            block_last[nb] = ne - 1;
            nb++;
            blast = bprev;
            bstart = pos;
            estart = ne;
            vdone = vbytes;
            bn = 0;
        }
    }
    if (bn == 0 && !x) state[0] = 1;
out:
    free(restarts);
    if (rc) return rc;
    /* Entries of a dropped open block are not returned. */
    state[2] = estart;
    state[3] = vdone;
    if (blast) *last = blast;
    return (int64_t)nb;
}
