/* The per-entry loop of a compaction: merge k sorted runs of data blocks, drop the versions no reader can
 * see, and encode the survivors into data blocks cut as TableBuilder cuts them.
 *
 * A compactor is fed raw (decompressed, checked) data block payloads one run at a time and pulls
 * entries from them in internal order (user key ascending, sequence descending; equal (user key, seq)
 * pairs in run order, as iterators.merge_entries). The rules are compaction.drop_hidden's:
 * stripe(seq) = the number of snapshots below seq; a version in the same stripe as a newer version of
 * its key is dropped; so is a version covered by a range tombstone (newer, same stripe, start <= key <
 * end); a deletion in stripe 0 of a bottommost compaction is dropped (after it has hidden the older
 * versions of its stripe). Blocks are cut right after the entry that brings the raw size (entries +
 * restart array + count) to block_size or more, and at the end of the stream; the entry bytes are
 * lsm_block_encode's.
 *
 * Blob references (kind BLOB) get OutputSink's accounting: every reference is decoded and checked as
 * blob.decode_blob_ref checks it (plus: each field below 2^64); a dropped one adds (1, value length)
 * to its blob file's garbage; a kept one names its blob file in its output block's list; a kept one
 * into a blob file being relocated adds the same garbage and is rewritten to point at the next record
 * of the relocation blob file (whose offsets follow from the value lengths alone: records are
 * contiguous), and the caller copies the value there in the same order. A PUT value of at least
 * spill_min bytes is spilled the same way: its entry becomes a BLOB reference to the next record, and
 * the value is handed to the caller in a spill buffer (OutputSink.add's rule for large values). Python (compact_native.py)
 * feeds blocks, drains closed blocks and writes them through BlockTableWriter: no Python per entry. */
#include <stdlib.h>
#include <string.h>

#include "compact.h"
#include "lsm_bytes.h"
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
    /* Flat input (lsm_cmp_feed_flat): entries laid out as lsm_mem_flush_scan lays them out; NULL ends
     * for a data block. */
    const uint64_t *ends;
    size_t ei, en;
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
    /* Range tombstones: sequence, its stripe, and [start, end) as offsets into tkeys. */
    size_t ntomb;
    uint64_t *tseq, *tstripe, *tkey_end;
    uint8_t *tkeys;
    /* Blob files being relocated (sorted), the relocation file and its next record offset. */
    uint64_t *reloc_set;
    size_t nreloc_set;
    uint64_t reloc_number, reloc_off;
    uint64_t spill_min; /* PUT values of at least this many bytes move to the blob file (0: none) */
    int frame;          /* spilled values go out as whole blob records (lsm_cmp_frame_spill) */
    /* Garbage per blob file, sorted by file number. */
    uint64_t *g_num, *g_count, *g_bytes;
    size_t gn, gcap;
    /* The open output block. */
    vec blk, prev_ikey, ukeys;
    uint64_t *restarts, *uk_end, *trailers;
    size_t rcap, ecap, bn;
    uint64_t bvbytes;
    uint64_t *bblobs; /* distinct blob files the open block references, in first-use order */
    uint64_t *brelocs; /* 4 per relocated entry of the open block: file, offset, length, new offset */
    size_t nbblobs, nbrelocs; /* nbrelocs counts entries (4 words each); both <= ecap */
    vec bspill; /* values of the open block's spilled entries, in order */
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

/* The next entry of a flat input into c's current key and value; 1 = taken, 0 = input exhausted. */
static int flat_next(cursor *c) {
    if (c->ei >= c->en) return 0;
    size_t a = c->ei ? (size_t)c->ends[2 * c->ei - 1] : 0;
    size_t b = (size_t)c->ends[2 * c->ei], e = (size_t)c->ends[2 * c->ei + 1];
    if (b < a || e < b || b - a < 8 || e > c->limit) return LSM_EINVAL;
    c->key.len = 0;
    if (vec_reserve(&c->key, b - a)) return LSM_ESPACE;
    memcpy(c->key.p, c->blk + a, b - a);
    c->key.len = b - a;
    c->val = c->blk + b;
    c->vlen = e - b;
    uint64_t t = 0;
    for (int j = 7; j >= 0; j--) t = (t << 8) | c->key.p[c->key.len - 8 + (size_t)j];
    c->trailer = t;
    if ((t & 0xFF) > 2) return LSM_EINVAL;
    c->ei++;
    return 1;
}

/* Parse the entry at c->pos into c's current key and value; 1 = parsed, 0 = block exhausted. */
static int parse_next(cursor *c) {
    if (c->ends) return flat_next(c);
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
    int c = lsm_key_cmp(x->key.p, la, y->key.p, lb);
    if (c) return c < 0;
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
                           uint32_t ri, const uint64_t *tomb_seqs, const uint8_t *tomb_keys,
                           const uint64_t *tomb_key_end, size_t ntomb, const uint64_t *relocate,
                           size_t nrelocate, uint64_t reloc_number, uint64_t spill_min) {
    if (ri == 0 || block_size == 0 || k == 0) return NULL;
    for (size_t i = 1; i < nrelocate; i++)
        if (relocate[i] <= relocate[i - 1]) return NULL;
    lsm_compactor *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->k = k;
    m->cur = calloc(k, sizeof(cursor));
    m->heap = calloc(k, sizeof(uint32_t));
    m->snaps = malloc((nsnap ? nsnap : 1) * sizeof(uint64_t));
    m->tseq = malloc((ntomb ? ntomb : 1) * sizeof(uint64_t));
    m->tstripe = malloc((ntomb ? ntomb : 1) * sizeof(uint64_t));
    m->tkey_end = malloc((2 * ntomb + 1) * sizeof(uint64_t));
    size_t tklen = ntomb ? (size_t)tomb_key_end[2 * ntomb - 1] : 0;
    m->tkeys = malloc(tklen ? tklen : 1);
    m->reloc_set = malloc((nrelocate ? nrelocate : 1) * sizeof(uint64_t));
    if (!m->cur || !m->heap || !m->snaps || !m->tseq || !m->tstripe || !m->tkey_end || !m->tkeys ||
        !m->reloc_set) {
        lsm_cmp_free(m);
        return NULL;
    }
    if (nsnap) memcpy(m->snaps, snaps, nsnap * sizeof(uint64_t));
    m->nsnap = nsnap;
    m->ntomb = ntomb;
    if (ntomb) {
        memcpy(m->tseq, tomb_seqs, ntomb * sizeof(uint64_t));
        memcpy(m->tkey_end, tomb_key_end, 2 * ntomb * sizeof(uint64_t));
        memcpy(m->tkeys, tomb_keys, tklen);
        for (size_t t = 0; t < ntomb; t++) {
            size_t lo = 0, hi = nsnap;
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (snaps[mid] < tomb_seqs[t]) lo = mid + 1;
                else hi = mid;
            }
            m->tstripe[t] = lo;
        }
    }
    if (nrelocate) memcpy(m->reloc_set, relocate, nrelocate * sizeof(uint64_t));
    m->nreloc_set = nrelocate;
    m->reloc_number = reloc_number;
    m->reloc_off = 16; /* blob.HEADER_SIZE: the first record follows the header */
    m->spill_min = spill_min;
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
    free(m->tseq);
    free(m->tstripe);
    free(m->tkey_end);
    free(m->tkeys);
    free(m->reloc_set);
    free(m->g_num);
    free(m->g_count);
    free(m->g_bytes);
    free(m->last_uk.p);
    free(m->blk.p);
    free(m->prev_ikey.p);
    free(m->ukeys.p);
    free(m->restarts);
    free(m->uk_end);
    free(m->trailers);
    free(m->bblobs);
    free(m->brelocs);
    free(m->bspill.p);
    free(m);
}

int64_t lsm_cmp_garbage(const lsm_compactor *m, uint64_t *nums, uint64_t *counts, uint64_t *bytes,
                        size_t cap) {
    /* The garbage found so far, by blob file number ascending: (file, references, value bytes). Writes
     * min(cap, n) rows and returns n. */
    for (size_t i = 0; i < m->gn && i < cap; i++) {
        nums[i] = m->g_num[i];
        counts[i] = m->g_count[i];
        bytes[i] = m->g_bytes[i];
    }
    return (int64_t)m->gn;
}

/* A varint of blob.decode_blob_ref's reader that must also fit 64 bits. */
static int get_varint64(const uint8_t *b, size_t limit, size_t *pos, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
        if (*pos >= limit) return -1;
        uint8_t c = b[(*pos)++];
        if (shift == 63 && (c & 0x7F) > 1) return -1;
        v |= (uint64_t)(c & 0x7F) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* Decode a blob reference (file, record offset, value length): 0, or LSM_ECORRUPT. */
static int parse_ref(const uint8_t *v, size_t len, uint64_t *num, uint64_t *off, uint64_t *vlen) {
    size_t pos = 0;
    if (get_varint64(v, len, &pos, num) || get_varint64(v, len, &pos, off) ||
        get_varint64(v, len, &pos, vlen))
        return LSM_ECORRUPT;
    if (pos != len || *off < 16 || *vlen > 0xFFFFFFFFull) return LSM_ECORRUPT;
    return 0;
}

static int add_garbage(lsm_compactor *m, uint64_t num, uint64_t vlen) {
    size_t lo = 0, hi = m->gn;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (m->g_num[mid] < num) lo = mid + 1;
        else hi = mid;
    }
    if (lo == m->gn || m->g_num[lo] != num) {
        if (m->gn == m->gcap) {
            size_t nc = m->gcap ? 2 * m->gcap : 16;
            uint64_t *a = realloc(m->g_num, nc * sizeof(uint64_t));
            if (!a) return LSM_ESPACE;
            m->g_num = a;
            a = realloc(m->g_count, nc * sizeof(uint64_t));
            if (!a) return LSM_ESPACE;
            m->g_count = a;
            a = realloc(m->g_bytes, nc * sizeof(uint64_t));
            if (!a) return LSM_ESPACE;
            m->g_bytes = a;
            m->gcap = nc;
        }
        size_t tail = (m->gn - lo) * sizeof(uint64_t);
        memmove(m->g_num + lo + 1, m->g_num + lo, tail);
        memmove(m->g_count + lo + 1, m->g_count + lo, tail);
        memmove(m->g_bytes + lo + 1, m->g_bytes + lo, tail);
        m->g_num[lo] = num;
        m->g_count[lo] = m->g_bytes[lo] = 0;
        m->gn++;
    }
    m->g_count[lo]++;
    m->g_bytes[lo] += vlen;
    return 0;
}

static int relocating(const lsm_compactor *m, uint64_t num) {
    size_t lo = 0, hi = m->nreloc_set;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (m->reloc_set[mid] < num) lo = mid + 1;
        else if (m->reloc_set[mid] > num) hi = mid;
        else return 1;
    }
    return 0;
}

/* Bytewise comparison of two strings, as Python compares bytes. */
static int bcmp_len(const uint8_t *a, size_t la, const uint8_t *b, size_t lb) {
    return lsm_key_cmp(a, la, b, lb);
}

/* compaction._covered: a tombstone newer than seq, of the same stripe, whose range holds the key. */
static int covered(const lsm_compactor *m, const uint8_t *uk, size_t ulen, uint64_t seq, uint64_t stripe) {
    for (size_t t = 0; t < m->ntomb; t++) {
        if (m->tseq[t] <= seq || m->tstripe[t] != stripe) continue;
        size_t s0 = t ? (size_t)m->tkey_end[2 * t - 1] : 0, s1 = (size_t)m->tkey_end[2 * t];
        size_t e1 = (size_t)m->tkey_end[2 * t + 1];
        if (bcmp_len(m->tkeys + s0, s1 - s0, uk, ulen) <= 0 && bcmp_len(uk, ulen, m->tkeys + s1, e1 - s1) < 0)
            return 1;
    }
    return 0;
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
    c->ends = NULL;
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

int lsm_cmp_feed_flat(lsm_compactor *m, uint32_t run, const uint8_t *buf, size_t len, const uint64_t *ends,
                      size_t n) {
    /* Give run ``run`` its next n entries as one flat buffer: internal key and value of entry i at
     * buf[ends[2i-1]:ends[2i]] and buf[ends[2i]:ends[2i+1]] (ends[-1] = 0), as lsm_mem_flush_scan lays
     * them out; the entries must follow the run's previous ones in internal order. buf and ends must stay
     * alive until the compactor asks for this run's next input. 0; 1 when n == 0 (feed this run again,
     * or lsm_cmp_feed it NULL to end it); LSM_EINVAL for ends out of order or past len, an internal key
     * shorter than its 8-byte trailer, or a kind other than DELETE, PUT, BLOB. */
    if (run >= m->k) return LSM_EINVAL;
    if (m->need >= 0 && (uint32_t)m->need != run) return LSM_EINVAL;
    m->need = -1;
    cursor *c = &m->cur[run];
    c->blk = buf;
    c->limit = len;
    c->ends = ends;
    c->ei = 0;
    c->en = n;
    c->run = run;
    int r = parse_next(c);
    if (r < 0) return r;
    if (r == 0) {
        m->need = run;
        return 1;
    }
    m->heap[m->hn] = run;
    sift_up(m, m->hn++);
    return 0;
}

/* Append the current entry of c, with value (val, vlen), to the open block; blob_num is the blob file
 * the value references (or NULL) and reloc the relocation record (4 words) or NULL. */
static int emit(lsm_compactor *m, const cursor *c, const uint8_t *val, size_t vlen, const uint64_t *blob_num,
                const uint64_t *reloc) {
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
    if (vec_reserve(&m->blk, 30 + nonsh + vlen) || vec_reserve(&m->ukeys, klen)) return LSM_ESPACE;
    if (m->bn >= m->ecap) {
        size_t nc = m->ecap ? 2 * m->ecap : 256;
        uint64_t *a = realloc(m->uk_end, nc * sizeof(uint64_t));
        if (!a) return LSM_ESPACE;
        m->uk_end = a;
        a = realloc(m->trailers, nc * sizeof(uint64_t));
        if (!a) return LSM_ESPACE;
        m->trailers = a;
        a = realloc(m->bblobs, nc * sizeof(uint64_t));
        if (!a) return LSM_ESPACE;
        m->bblobs = a;
        a = realloc(m->brelocs, 4 * nc * sizeof(uint64_t));
        if (!a) return LSM_ESPACE;
        m->brelocs = a;
        m->ecap = nc;
    }
    uint8_t *p = m->blk.p + m->blk.len;
    p += lsm_put_varint(p, shared);
    p += lsm_put_varint(p, nonsh);
    p += lsm_put_varint(p, vlen);
    memcpy(p, c->key.p + shared, nonsh);
    p += nonsh;
    memcpy(p, val, vlen);
    p += vlen;
    m->blk.len = (size_t)(p - m->blk.p);
    memcpy(m->ukeys.p + m->ukeys.len, c->key.p, klen - 8);
    m->ukeys.len += klen - 8;
    m->uk_end[m->bn] = m->ukeys.len;
    m->trailers[m->bn] = c->trailer;
    m->bn++;
    m->bvbytes += vlen;
    if ((c->trailer & 0xFF) == 1 && vlen > m->max_put) m->max_put = vlen;
    if (blob_num) {
        size_t i = 0;
        while (i < m->nbblobs && m->bblobs[i] != *blob_num) i++;
        if (i == m->nbblobs) m->bblobs[m->nbblobs++] = *blob_num;
    }
    if (reloc) {
        memcpy(m->brelocs + 4 * m->nbrelocs, reloc, 4 * sizeof(uint64_t));
        m->nbrelocs++;
    }
    m->prev_ikey.len = 0;
    if (vec_reserve(&m->prev_ikey, klen)) return LSM_ESPACE;
    memcpy(m->prev_ikey.p, c->key.p, klen);
    m->prev_ikey.len = klen;
    size_t nr = (m->bn + m->ri - 1) / m->ri;
    if (m->blk.len + 4 * nr + 4 >= m->block_size) m->closing = 1;
    return 0;
}

/* XXH3-64 (seed 0), the blob records' checksum: the xxhash package's own XXH3_64bits, handed over once
 * by Python (lsm_cmp_set_hash), as native/commit.c takes it. */
typedef uint64_t (*cmp_xxh3_fn)(const void *data, size_t len);
static cmp_xxh3_fn g_cmp_xxh3;

void lsm_cmp_set_hash(void *xxh3_64bits) { g_cmp_xxh3 = (cmp_xxh3_fn)xxh3_64bits; }

int lsm_cmp_frame_spill(lsm_compactor *m) {
    /* From now on a spilled value goes to the spill output as a whole blob record (u32 length, u32
     * checksum, value) and its relocs row's first word is the record's offset there: the caller appends
     * the spill output to the blob file as it is. LSM_EINVAL when no hash was set. */
    if (!g_cmp_xxh3) return LSM_EINVAL;
    m->frame = 1;
    return 0;
}

static void put32(uint8_t *p, uint32_t v) {
    for (int j = 0; j < 4; j++) p[j] = (uint8_t)(v >> (8 * j));
}

/* A reference to the next record of the blob file, which will hold a value of vlen bytes; rec = the
 * record's (a, b, vlen, offset). */
static size_t next_record(lsm_compactor *m, uint64_t vlen, uint64_t a, uint64_t b, uint8_t *ref, uint64_t *rec) {
    rec[0] = a;
    rec[1] = b;
    rec[2] = vlen;
    rec[3] = m->reloc_off;
    size_t n = lsm_put_varint(ref, m->reloc_number);
    n += lsm_put_varint(ref + n, m->reloc_off);
    n += lsm_put_varint(ref + n, vlen);
    m->reloc_off += 8 + vlen; /* u32 length, u32 checksum, value */
    return n;
}

/* Keep a PUT whose value moves to the blob file: the entry becomes a BLOB reference (kind 2 in its key
 * and trailer) and the value goes to the block's spill buffer; its record has b = 0 (a relocation's
 * offset is at least 16) and a = the value's offset in the spill output. */
static int spill(lsm_compactor *m, cursor *c) {
    size_t hdr = m->frame ? 8 : 0;
    if (m->frame && c->vlen > 0xFFFFFFFFull) return LSM_EINVAL;
    if (vec_reserve(&m->bspill, hdr + c->vlen)) return LSM_ESPACE;
    uint64_t rec[4];
    uint8_t ref[30];
    size_t n = next_record(m, c->vlen, m->bspill.len, 0, ref, rec);
    uint8_t *d = m->bspill.p + m->bspill.len;
    if (hdr) { /* blob.py's record header: u32 value length, u32 low half of XXH3-64 of the value */
        put32(d, (uint32_t)c->vlen);
        put32(d + 4, (uint32_t)g_cmp_xxh3(c->val, c->vlen));
    }
    memcpy(d + hdr, c->val, c->vlen);
    m->bspill.len += hdr + c->vlen;
    uint8_t *kind = c->key.p + c->key.len - 8;
    uint64_t t = c->trailer;
    *kind = 2;
    c->trailer = (t & ~(uint64_t)0xFF) | 2;
    int r = emit(m, c, ref, n, &m->reloc_number, rec);
    *kind = (uint8_t)(t & 0xFF); /* the next key of this input block may share these bytes */
    c->trailer = t;
    return r;
}

/* Keep the current entry of c: a blob reference is checked, counted and maybe relocated; a large PUT
 * value is spilled. */
static int keep(lsm_compactor *m, cursor *c) {
    uint64_t kind = c->trailer & 0xFF;
    if (kind == 1 && m->spill_min && c->vlen >= m->spill_min) return spill(m, c);
    if (kind != 2) return emit(m, c, c->val, c->vlen, NULL, NULL);
    uint64_t num, off, vlen;
    if (parse_ref(c->val, c->vlen, &num, &off, &vlen)) return LSM_ECORRUPT;
    if (!m->nreloc_set || !relocating(m, num)) return emit(m, c, c->val, c->vlen, &num, NULL);
    int r = add_garbage(m, num, vlen);
    if (r) return r;
    uint64_t rec[4];
    uint8_t ref[30];
    size_t n = next_record(m, vlen, num, off, ref, rec);
    return emit(m, c, ref, n, &m->reloc_number, rec);
}

/* Drop the current entry of c: a blob reference becomes garbage of its file. */
static int drop(lsm_compactor *m, const cursor *c) {
    if ((c->trailer & 0xFF) != 2) return 0;
    uint64_t num, off, vlen;
    if (parse_ref(c->val, c->vlen, &num, &off, &vlen)) return LSM_ECORRUPT;
    return add_garbage(m, num, vlen);
}

/* Move the closed open block into the output; 0, or 1 when it does not fit. */
static int drain(lsm_compactor *m, lsm_cmp_out *o) {
    size_t nr = (m->bn + m->ri - 1) / m->ri;
    size_t need = m->blk.len + 4 * nr + 4;
    if (o->cap - o->pos < need || o->keycap - o->kpos < m->ukeys.len || o->max_keys - o->ne < m->bn ||
        o->nb >= o->max_blocks || o->max_keys - o->nblobs < m->nbblobs || o->max_keys - o->nrelocs < m->nbrelocs ||
        o->spillcap - o->spos < m->bspill.len)
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
    o->block_nblobs[o->nb] = m->nbblobs;
    o->nb++;
    memcpy(o->keys + o->kpos, m->ukeys.p, m->ukeys.len);
    for (size_t i = 0; i < m->bn; i++) {
        o->key_end[o->ne] = o->kpos + m->uk_end[i];
        o->trailers[o->ne] = m->trailers[i];
        o->ne++;
    }
    o->kpos += m->ukeys.len;
    if (m->nbblobs) memcpy(o->blobs + o->nblobs, m->bblobs, m->nbblobs * sizeof(uint64_t));
    o->nblobs += m->nbblobs;
    for (size_t i = 0; i < m->nbrelocs; i++) {
        uint64_t *r = o->relocs + 4 * (o->nrelocs + i);
        memcpy(r, m->brelocs + 4 * i, 4 * sizeof(uint64_t));
        if (r[1] == 0) r[0] += o->spos; /* a spill: its offset in the output's spill buffer */
    }
    o->nrelocs += m->nbrelocs;
    if (m->bspill.len) memcpy(o->spill + o->spos, m->bspill.p, m->bspill.len);
    o->spos += m->bspill.len;
    m->bspill.len = 0;
    m->blk.len = m->ukeys.len = 0;
    m->bn = 0;
    m->bvbytes = 0;
    m->nbblobs = m->nbrelocs = 0;
    m->closing = 0;
    return 0;
}

int64_t lsm_cmp_step(lsm_compactor *m, lsm_cmp_out *o, uint64_t *state) {
    /* Run until a run needs its next block (state[0] = 0, state[1] = the run), the output is full
     * (state[0] = 1; state[1] = 1 if not even one block fit: grow the buffers) or the stream ended and
     * its last block was drained (state[0] = 2). Output is appended to o at its positions (pos, nb,
     * kpos, ne, nblobs, nrelocs: the caller zeroes them after draining, or feeds a run and steps again
     * without draining). Block b = buf[block_end[b-1]:block_end[b]] with block_nent[b] entries of
     * block_vbytes[b] value bytes, whose user keys and trailers follow in keys/key_end/trailers, and
     * block_nblobs[b] distinct referenced blob files in blobs; relocs holds 4 words per entry whose value
     * goes to the blob file, in entry order: (old file, old offset, value length, new offset) for a
     * relocated reference, (offset in spill, 0, value length, new offset) for a spilled PUT value,
     * whose bytes are in spill[..spos]. state[3] = the largest PUT value
     * emitted so far. Returns the number of blocks in the output; negative: LSM_ECORRUPT (bad block or
     * blob reference), LSM_ESPACE or LSM_EINVAL. */
    if (o->pos > o->cap || o->nb > o->max_blocks || o->kpos > o->keycap || o->ne > o->max_keys ||
        o->nblobs > o->max_keys || o->nrelocs > o->max_keys || o->spos > o->spillcap)
        return LSM_EINVAL;
    state[0] = state[1] = state[2] = 0;
    int64_t rc = 0;
    for (;;) {
        if (m->closing) {
            if (drain(m, o)) {
                state[0] = OUT_FULL;
                state[1] = o->nb == 0;
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
        int e = 0;
        if (stripe == m->last_stripe || (m->ntomb && covered(m, c->key.p, ulen, seq, (uint64_t)stripe))) {
            e = drop(m, c);
        } else {
            m->last_stripe = stripe;
            if (!((c->trailer & 0xFF) == 0 && m->bottommost && stripe == 0)) e = keep(m, c);
        }
        if (e) {
            rc = e;
            break;
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
    if (rc) return rc;
    return (int64_t)o->nb;
}
