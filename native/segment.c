/* Building a flushed search segment (search/segment_writes.py `flush`) from the memory segment's token
 * streams, in one call per user instead of a Python loop per (term, doc) posting.
 *
 * Input: n entries, one per (doc, field) of the memory segment, in strictly ascending (ords[e], fields[e])
 * order, where ords[e] is the doc's ordinal in the segment's doc table. Entry e's token stream is
 * tok_buf[tok_end[e-1] .. tok_end[e]) holding ntok[e] tokens joined by single spaces ("" tokens hold a
 * position, see group.c); its position-less special terms are spec_buf[spec_end[e-1] .. spec_end[e]),
 * nspec[e] non-empty terms joined by NUL. text_mask[f] != 0 marks the text fields whose terms also go
 * into the any-field blocks of field `any_code` (which no entry may use).
 * Output (malloc'ed into *res; release with lsm_segment_free): one engine key and value per distinct
 * (field, term) and per any-field term: key = key_prefix + field byte + term + key_suffix; value = the
 * posting block of search/postings.py: format 1 (ordinals, then per doc the encoded position run of
 * _group.encode_positions; a special alone in its field has the run "\0") or, for any-field keys,
 * format 2 (ordinals only). Keys come in first-occurrence order.
 * Returns the key count, LSM_EINVAL for inputs that break the contract above, LSM_ENOMEM_S (-5) when
 * memory runs out (nothing is leaked either way). */
#include <stdlib.h>
#include <string.h>

#include "segment.h"

#define SEG_EINVAL -3
#define SEG_ENOMEM -5

typedef struct {
    uint8_t *p;
    size_t len, cap;
} sbuf;

static int sbuf_reserve(sbuf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline size_t put_varint(uint8_t *out, size_t pos, uint64_t v) {
    while (v >= 0x80) {
        out[pos++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[pos++] = (uint8_t)v;
    return pos;
}

typedef struct {
    uint64_t off;        /* key bytes (field + term) in the key arena */
    uint64_t hash;
    uint64_t last_ord;   /* for any-field keys: last ordinal given (+1; 0 = none) */
    uint32_t last_entry; /* entry that last gave this key a posting (+1; 0 = none) */
    uint32_t len;
    uint32_t npost;      /* its postings */
    uint32_t rbytes;     /* the bytes of its postings' position runs */
    uint32_t any_id;     /* for text-field keys: id + 1 of the any-field key of the same term (0: not yet) */
} key_t_;

/* 16 bytes: an import's flush holds ~500 postings per message, in two arrays (added, then by key). */
typedef struct {
    uint32_t kid, ord;
    uint32_t run_off; /* runs stay below 4 GiB: checked before the build */
    uint32_t run_len;
} post_t;

/* A table slot: key id + 1 (0 = empty) and the high half of the key's hash, so that a probe past other
 * keys compares 4 bytes in the table instead of loading each key (a cache miss per key in large segments). */
typedef struct {
    uint32_t id1;
    uint32_t tag;
} slot_t;

typedef struct {
    sbuf arena; /* key bytes */
    key_t_ *keys;
    size_t nkeys, keys_cap;
    slot_t *table;
    size_t table_size;
} keyset;

#define FNV_OFFSET 1469598103934665603ULL
#define FNV_PRIME 1099511628211ULL

static inline uint64_t hash_field(uint8_t field) { return (FNV_OFFSET ^ field) * FNV_PRIME; }

static inline uint64_t hash_more(uint64_t h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= FNV_PRIME;
    }
    return h;
}

static int keyset_grow(keyset *ks) {
    size_t size = ks->table_size ? ks->table_size * 2 : 4096;
    slot_t *t = calloc(size, sizeof(slot_t));
    if (!t) return -1;
    for (size_t k = 0; k < ks->nkeys; k++) {
        size_t slot = (size_t)ks->keys[k].hash & (size - 1);
        while (t[slot].id1) slot = (slot + 1) & (size - 1);
        t[slot].id1 = (uint32_t)(k + 1);
        t[slot].tag = (uint32_t)(ks->keys[k].hash >> 32);
    }
    free(ks->table);
    ks->table = t;
    ks->table_size = size;
    return 0;
}

/* The id of key (field, term) whose hash is h (hash_more(hash_field(field), t, n)), inserted if new;
 * -1 when out of memory. */
static int64_t keyset_get(keyset *ks, uint8_t field, const uint8_t *t, size_t n, uint64_t h) {
    if ((ks->nkeys + 1) * 2 > ks->table_size && keyset_grow(ks)) return -1;
    size_t mask = ks->table_size - 1, slot = (size_t)h & mask;
    uint32_t tag = (uint32_t)(h >> 32);
    for (;;) {
        slot_t s = ks->table[slot];
        if (s.id1 == 0) break;
        if (s.tag == tag) {
            key_t_ *k = &ks->keys[s.id1 - 1];
            if (k->hash == h && k->len == n + 1 && ks->arena.p[k->off] == field &&
                memcmp(ks->arena.p + k->off + 1, t, n) == 0)
                return (int64_t)(s.id1 - 1);
        }
        slot = (slot + 1) & mask;
    }
    if (ks->nkeys == ks->keys_cap) {
        size_t cap = ks->keys_cap ? ks->keys_cap * 2 : 4096;
        key_t_ *nk = realloc(ks->keys, cap * sizeof(key_t_));
        if (!nk) return -1;
        ks->keys = nk;
        ks->keys_cap = cap;
    }
    if (sbuf_reserve(&ks->arena, n + 1)) return -1;
    key_t_ *k = &ks->keys[ks->nkeys];
    k->off = ks->arena.len;
    ks->arena.p[ks->arena.len++] = field;
    memcpy(ks->arena.p + ks->arena.len, t, n);
    ks->arena.len += n;
    k->hash = h;
    k->len = (uint32_t)(n + 1);
    k->last_entry = 0;
    k->last_ord = 0;
    k->npost = 0;
    k->rbytes = 0;
    k->any_id = 0;
    ks->table[slot].id1 = (uint32_t)(ks->nkeys + 1);
    ks->table[slot].tag = tag;
    return (int64_t)ks->nkeys++;
}

typedef struct {
    post_t *p;
    size_t len, cap;
} posts;

/* A distinct term of one entry: its first occurrence in the stream, hash, and positions count. */
typedef struct {
    uint64_t hash;
    uint32_t start, len, count;
} lterm_t;

typedef struct {
    uint64_t hash;
    uint32_t lid1; /* local term id + 1; 0 = empty */
} lslot_t;

static int posts_add(posts *ps, keyset *ks, uint32_t kid, uint32_t ord, uint32_t run_off, uint32_t run_len) {
    ks->keys[kid].npost++;
    ks->keys[kid].rbytes += run_len;
    if (ps->len == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 16384;
        post_t *np = realloc(ps->p, cap * sizeof(post_t));
        if (!np) return -1;
        ps->p = np;
        ps->cap = cap;
    }
    post_t *q = &ps->p[ps->len++];
    q->kid = kid;
    q->ord = ord;
    q->run_off = run_off;
    q->run_len = run_len;
    return 0;
}

void lsm_segment_free(lsm_segment_result *res) {
    if (!res) return;
    free(res->keys);
    free(res->key_end);
    free(res->vals);
    free(res->val_end);
    memset(res, 0, sizeof(*res));
}

/* The build itself. Entry e's stream is tok_buf[tok_start[e] .. tok_end[e]) and its specials
 * spec_buf[spec_start[e] .. spec_end[e]) (lsm_segment_build: consecutive ranges; lsm_segment_build_fwd:
 * ranges inside the forward records). */
static int64_t build(size_t n, const uint32_t *ords, const uint8_t *fields, const uint8_t *tok_buf,
                     size_t tok_len, const uint64_t *tok_start, const uint64_t *tok_end, const uint32_t *ntok,
                     const uint8_t *spec_buf, size_t spec_len, const uint64_t *spec_start,
                     const uint64_t *spec_end, const uint32_t *nspec, const uint8_t *text_mask,
                     uint8_t any_code, const uint8_t *key_prefix, size_t prefix_len,
                     const uint8_t *key_suffix, size_t suffix_len, lsm_segment_result *res) {
    memset(res, 0, sizeof(*res));
    keyset ks = {0};
    posts ps = {0};
    sbuf runs = {0}, vals = {0};
    uint32_t *tok_id = NULL, *touched = NULL, *positions = NULL;
    lterm_t *lterm = NULL;
    lslot_t *lslot = NULL;
    uint32_t *pcur = NULL, *rcur = NULL, *sord = NULL;
    uint8_t *sruns = NULL;
    size_t scratch_cap = 0, lslot_cap = 0;
    int64_t rc = SEG_ENOMEM;

    if (n >= UINT32_MAX) goto invalid; /* entry numbers + 1 are uint32 */
    uint64_t total_tok = 0, total_spec = 0;
    for (size_t e = 0; e < n; e++) {
        total_tok += ntok[e];
        total_spec += nspec[e];
        if (fields[e] == any_code) goto invalid;
        if (e && (ords[e] < ords[e - 1] || (ords[e] == ords[e - 1] && fields[e] <= fields[e - 1])))
            goto invalid;
        if (tok_end[e] < tok_start[e] || tok_end[e] > tok_len || spec_end[e] < spec_start[e] ||
            spec_end[e] > spec_len)
            goto invalid;
        if (ntok[e] > tok_end[e] - tok_start[e] + 1 || nspec[e] > spec_end[e] - spec_start[e] + 1)
            goto invalid; /* more tokens or specials than the bytes can hold */
        if (tok_end[e] - tok_start[e] >= UINT32_MAX) goto invalid; /* offsets in an entry are uint32 */
    }
    /* Runs: at most 5 bytes per position plus 5 for a count per posting, reserved once (growing by
     * doubling copied them again). Postings: about (tokens + specials) / 1.5 in corpus mail, any-field ones
     * included; reserved at tokens + specials and grown if needed. Both stay well under glibc's 32 MiB
     * mmap threshold for a flush of 1M tokens, so the next flush reuses the pages instead of faulting in
     * fresh ones (page faults were ~30% of a flush's time with 24-byte postings reserved at twice that). */
    {
        uint64_t run_cap = 10 * (total_tok + total_spec) + 16;
        if (run_cap > UINT32_MAX) goto fail; /* run offsets are uint32 */
        size_t cap = (size_t)(total_tok + total_spec) + 16;
        ps.p = malloc(cap * sizeof(post_t));
        if (!ps.p) goto fail;
        ps.cap = cap;
        if (sbuf_reserve(&runs, (size_t)run_cap)) goto fail;
    }
    for (size_t e = 0; e < n; e++) {
        const uint8_t *buf = tok_buf + tok_start[e];
        size_t len = (size_t)(tok_end[e] - tok_start[e]);
        size_t nt = ntok[e];
        uint8_t field = fields[e];
        uint32_t ord = ords[e];
        int text = text_mask[field] != 0;
        if (nt == 0 && len != 0) goto invalid;
        size_t need_cap = nt + nspec[e] + 1;
        if (need_cap > scratch_cap) {
            size_t cap = need_cap * 2;
            free(tok_id);
            free(touched);
            free(positions);
            free(lterm);
            free(lslot);
            tok_id = malloc(cap * sizeof(uint32_t));
            touched = malloc(cap * sizeof(uint32_t));
            positions = malloc(cap * sizeof(uint32_t));
            lterm = malloc(cap * sizeof(lterm_t));
            lslot_cap = 16;
            while (lslot_cap < 2 * cap) lslot_cap *= 2;
            lslot = malloc(lslot_cap * sizeof(lslot_t));
            if (!tok_id || !touched || !positions || !lterm || !lslot) goto fail;
            scratch_cap = cap;
        }
        /* First the entry's own distinct terms, in a table local to the entry (small: in L1/L2), so the
         * segment-wide key table is probed once per distinct term rather than once per token (a corpus
         * message has ~2.8 tokens per distinct term; the wide probe is a cache miss in a large segment). */
        size_t lsize = 16;
        while (lsize < 2 * nt) lsize *= 2;
        memset(lslot, 0, lsize * sizeof(lslot_t));
        size_t lmask = lsize - 1, nl = 0, i = 0;
        const uint64_t h0 = hash_field(field);
        for (size_t p = 0; p < nt; p++) {
            size_t start = i;
            uint64_t h = h0;
            while (i < len && buf[i] != ' ') {
                h ^= buf[i++];
                h *= FNV_PRIME;
            }
            size_t tlen = i - start;
            if (p + 1 < nt) {
                if (i >= len) goto invalid;
                i++;
            } else if (i != len) {
                goto invalid;
            }
            if (tlen == 0) {
                tok_id[p] = UINT32_MAX;
                continue;
            }
            size_t slot = (size_t)h & lmask;
            uint32_t lid;
            for (;;) {
                lslot_t *ls = &lslot[slot];
                if (ls->lid1 == 0) {
                    lid = (uint32_t)nl++;
                    ls->lid1 = lid + 1;
                    ls->hash = h;
                    lterm[lid].start = (uint32_t)start;
                    lterm[lid].len = (uint32_t)tlen;
                    lterm[lid].hash = h;
                    lterm[lid].count = 0;
                    break;
                }
                if (ls->hash == h) {
                    lterm_t *t = &lterm[ls->lid1 - 1];
                    if (t->len == tlen && memcmp(buf + t->start, buf + start, tlen) == 0) {
                        lid = ls->lid1 - 1;
                        break;
                    }
                }
                slot = (slot + 1) & lmask;
            }
            lterm[lid].count++;
            tok_id[p] = lid;
        }
        /* group positions by local term (counting sort), then per term: its segment-wide key and run */
        uint32_t acc = 0;
        for (size_t j = 0; j < nl; j++) {
            uint32_t c = lterm[j].count;
            lterm[j].count = acc;
            acc += c;
        }
        for (size_t p = 0; p < nt; p++)
            if (tok_id[p] != UINT32_MAX) positions[lterm[tok_id[p]].count++] = (uint32_t)p;
        size_t ntouched = 0;
        uint32_t from = 0;
        for (size_t j = 0; j < nl; j++) {
            int64_t kid = keyset_get(&ks, field, buf + lterm[j].start, lterm[j].len, lterm[j].hash);
            if (kid < 0) goto fail;
            ks.keys[kid].last_entry = (uint32_t)(e + 1);
            touched[ntouched++] = (uint32_t)kid;
            uint32_t to = lterm[j].count;
            if (sbuf_reserve(&runs, 5 * (size_t)(to - from + 1))) goto fail;
            size_t o = runs.len;
            o = put_varint(runs.p, o, to - from);
            o = put_varint(runs.p, o, positions[from]);
            for (uint32_t q = from + 1; q < to; q++) o = put_varint(runs.p, o, positions[q] - positions[q - 1] - 1);
            if (posts_add(&ps, &ks, (uint32_t)kid, ord, (uint32_t)runs.len, (uint32_t)(o - runs.len))) goto fail;
            runs.len = o;
            from = to;
        }
        /* specials: position-less, only when the field has no posting of that term yet */
        const uint8_t *sb = spec_buf + spec_start[e];
        size_t slen = (size_t)(spec_end[e] - spec_start[e]), ns = nspec[e], si = 0;
        if (ns == 0 && slen != 0) goto invalid;
        for (size_t q = 0; q < ns; q++) {
            size_t start = si;
            while (si < slen && sb[si] != 0) si++;
            size_t tlen = si - start;
            if (q + 1 < ns) {
                if (si >= slen) goto invalid;
                si++;
            } else if (si != slen) {
                goto invalid;
            }
            if (tlen == 0) goto invalid;
            int64_t kid = keyset_get(&ks, field, sb + start, tlen, hash_more(hash_field(field), sb + start, tlen));
            if (kid < 0) goto fail;
            if (ks.keys[kid].last_entry == (uint32_t)(e + 1)) continue;
            ks.keys[kid].last_entry = (uint32_t)(e + 1);
            if (sbuf_reserve(&runs, 1)) goto fail;
            runs.p[runs.len] = 0;
            if (posts_add(&ps, &ks, (uint32_t)kid, ord, (uint32_t)runs.len, 1)) goto fail;
            runs.len++;
            if (scratch_cap <= ntouched) {
                size_t cap = (ntouched + 1) * 2;
                uint32_t *nt2 = realloc(touched, cap * sizeof(uint32_t));
                if (!nt2) goto fail;
                touched = nt2;
                uint32_t *a = realloc(tok_id, cap * sizeof(uint32_t));
                if (!a) goto fail;
                tok_id = a;
                uint32_t *b = realloc(positions, cap * sizeof(uint32_t));
                if (!b) goto fail;
                positions = b;
                scratch_cap = cap;
            }
            touched[ntouched++] = (uint32_t)kid;
        }
        if (!text) continue;
        /* any-field keys: each term of a text field once per doc */
        for (size_t j = 0; j < ntouched; j++) {
            key_t_ *k = &ks.keys[touched[j]];
            int64_t aid;
            if (k->any_id) {
                aid = (int64_t)k->any_id - 1;
            } else {
                uint64_t koff = k->off;
                uint32_t klen = k->len;
                uint32_t self = touched[j];
                /* keyset_get may move the arena and the key array: copy what is needed first */
                size_t tl = klen - 1;
                uint8_t tmp[256];
                uint8_t *heap = NULL;
                uint8_t *src = tmp;
                if (tl > sizeof(tmp)) {
                    heap = malloc(tl);
                    if (!heap) goto fail;
                    src = heap;
                }
                memcpy(src, ks.arena.p + koff + 1, tl);
                aid = keyset_get(&ks, any_code, src, tl, hash_more(hash_field(any_code), src, tl));
                free(heap);
                if (aid < 0) goto fail;
                ks.keys[self].any_id = (uint32_t)(aid + 1);
            }
            if (ks.keys[aid].last_ord == (uint64_t)ord + 1) continue;
            ks.keys[aid].last_ord = (uint64_t)ord + 1;
            if (posts_add(&ps, &ks, (uint32_t)aid, ord, 0, 0)) goto fail;
        }
    }
    /* Bucket the postings by key, keeping their (ascending ordinal) order: one pass over the postings in
     * the order they were added scatters each one's ordinal and run bytes into its key's range of two
     * key-ordered arrays, so the output below reads both sequentially. (Gathering them per key instead,
     * through an index array, read a random 16-byte posting and a random run per posting: two cache
     * misses each over ~25 MB for a 1M-token flush, ~2/3 of the build's time.) The cursors are arrays
     * of their own (8 bytes per key, not the 48-byte key records) to keep the scatter's reads in cache. */
    {
        size_t nk = ks.nkeys ? ks.nkeys : 1;
        pcur = malloc(nk * sizeof(uint32_t));
        rcur = malloc(nk * sizeof(uint32_t));
        sord = malloc((ps.len ? ps.len : 1) * sizeof(uint32_t));
        if (!pcur || !rcur || !sord) goto fail;
        uint32_t acc = 0, racc = 0;
        for (size_t k = 0; k < ks.nkeys; k++) {
            pcur[k] = acc;
            acc += ks.keys[k].npost;
            rcur[k] = racc;
            racc += ks.keys[k].rbytes; /* <= runs.len < 4 GiB (run_cap) */
        }
        sruns = malloc((size_t)racc + 8);
        if (!sruns) goto fail;
        const post_t *pp = ps.p;
        for (size_t q = 0; q < ps.len; q++) {
            uint32_t kid = pp[q].kid, rl = pp[q].run_len;
            sord[pcur[kid]++] = pp[q].ord;
            uint8_t *dst = sruns + rcur[kid];
            const uint8_t *src = runs.p + pp[q].run_off;
            if (rl <= 4) { /* most runs are 2-3 bytes: no memcpy call per posting */
                for (uint32_t b = 0; b < rl; b++) dst[b] = src[b];
            } else {
                memcpy(dst, src, rl);
            }
            rcur[kid] += rl;
        }
    }
    res->key_end = malloc((ks.nkeys ? ks.nkeys : 1) * sizeof(uint64_t));
    res->val_end = malloc((ks.nkeys ? ks.nkeys : 1) * sizeof(uint64_t));
    res->keys = malloc(ks.arena.len + ks.nkeys * (prefix_len + suffix_len) + 1);
    if (!res->key_end || !res->val_end || !res->keys) goto fail;
    {
        /* header (3) + count and first ordinal (10) + deltas (<= 5 each) + runs, per key */
        size_t need = 0;
        for (size_t k = 0; k < ks.nkeys; k++) need += 13 + 5 * (size_t)ks.keys[k].npost + ks.keys[k].rbytes;
        if (sbuf_reserve(&vals, need)) goto fail;
    }
    size_t ko = 0;
    for (size_t k = 0; k < ks.nkeys; k++) {
        key_t_ *key = &ks.keys[k];
        memcpy(res->keys + ko, key_prefix, prefix_len);
        ko += prefix_len;
        memcpy(res->keys + ko, ks.arena.p + key->off, key->len);
        ko += key->len;
        memcpy(res->keys + ko, key_suffix, suffix_len);
        ko += suffix_len;
        res->key_end[k] = ko;
        uint32_t np = key->npost;
        /* after the scatter, each cursor is its key's end */
        const uint32_t *ko_ords = sord + (pcur[k] - np);
        const uint8_t *kruns = sruns + (rcur[k] - key->rbytes);
        uint8_t *out = vals.p;
        size_t o = vals.len;
        int is_any = ks.arena.p[key->off] == any_code;
        out[o++] = is_any ? 2 : 1;
        size_t mode_at = o;
        out[o++] = 0;
        if (np == 1) {
            out[o++] = 1;
            o = put_varint(out, o, ko_ords[0]);
        } else {
            o = put_varint(out, o, np);
            o = put_varint(out, o, ko_ords[0]);
            int small = 1;
            for (uint32_t q = 1; q < np; q++)
                if (ko_ords[q] - ko_ords[q - 1] >= 256) small = 0;
            if (small) {
                for (uint32_t q = 1; q < np; q++) out[o++] = (uint8_t)(ko_ords[q] - ko_ords[q - 1]);
            } else {
                out[mode_at] = 1;
                for (uint32_t q = 1; q < np; q++) o = put_varint(out, o, ko_ords[q] - ko_ords[q - 1]);
            }
        }
        memcpy(out + o, kruns, key->rbytes);
        o += key->rbytes;
        vals.len = o;
        res->val_end[k] = o;
    }
    res->vals = vals.p;
    vals.p = NULL;
    res->nkeys = ks.nkeys;
    rc = (int64_t)ks.nkeys;
    goto done;
invalid:
    rc = SEG_EINVAL;
fail:
    lsm_segment_free(res);
done:
    free(ks.arena.p);
    free(ks.keys);
    free(ks.table);
    free(ps.p);
    free(runs.p);
    free(vals.p);
    free(tok_id);
    free(touched);
    free(positions);
    free(lterm);
    free(lslot);
    free(pcur);
    free(rcur);
    free(sord);
    free(sruns);
    return rc;
}

int64_t lsm_segment_build(size_t n, const uint32_t *ords, const uint8_t *fields, const uint8_t *tok_buf,
                          size_t tok_len, const uint64_t *tok_end, const uint32_t *ntok,
                          const uint8_t *spec_buf, size_t spec_len, const uint64_t *spec_end,
                          const uint32_t *nspec, const uint8_t *text_mask, uint8_t any_code,
                          const uint8_t *key_prefix, size_t prefix_len, const uint8_t *key_suffix,
                          size_t suffix_len, lsm_segment_result *res) {
    memset(res, 0, sizeof(*res));
    uint64_t *starts = malloc((2 * n + 1) * sizeof(uint64_t));
    if (!starts) return SEG_ENOMEM;
    uint64_t *tok_start = starts, *spec_start = starts + n;
    for (size_t e = 0; e < n; e++) {
        tok_start[e] = e ? tok_end[e - 1] : 0;
        spec_start[e] = e ? spec_end[e - 1] : 0;
    }
    int64_t rc = build(n, ords, fields, tok_buf, tok_len, tok_start, tok_end, ntok, spec_buf, spec_len,
                       spec_start, spec_end, nspec, text_mask, any_code, key_prefix, prefix_len, key_suffix,
                       suffix_len, res);
    free(starts);
    return rc;
}

/* A LEB128 varint of at most 5 bytes (< 2^32) at buf[*pos], pos < end; -1 if cut or too long. */
static int get_varint32(const uint8_t *buf, size_t end, size_t *pos, uint32_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 35; shift += 7) {
        if (*pos >= end) return -1;
        uint8_t b = buf[(*pos)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            if (v > UINT32_MAX) return -1;
            *out = (uint32_t)v;
            return 0;
        }
    }
    return -1;
}

int64_t lsm_segment_build_fwd(size_t nrec, const uint32_t *ords, const uint8_t *buf, size_t buf_len,
                              const uint64_t *rec_end, const uint8_t *text_mask, uint8_t any_code,
                              const uint8_t *key_prefix, size_t prefix_len, const uint8_t *key_suffix,
                              size_t suffix_len, lsm_segment_result *res) {
    memset(res, 0, sizeof(*res));
    /* entries: at most one per field byte of the records (a field takes >= 5 bytes) */
    size_t cap = buf_len / 5 + 1, n = 0;
    uint32_t *eords = malloc(cap * sizeof(uint32_t)), *entok = malloc(cap * sizeof(uint32_t));
    uint32_t *enspec = malloc(cap * sizeof(uint32_t));
    uint8_t *efield = malloc(cap);
    uint64_t *r = malloc(4 * cap * sizeof(uint64_t));
    int64_t rc = SEG_ENOMEM;
    if (!eords || !entok || !enspec || !efield || !r) goto done;
    uint64_t *ts = r, *te = r + cap, *ss = r + 2 * cap, *se = r + 3 * cap;
    size_t pos = 0;
    for (size_t k = 0; k < nrec; k++) {
        size_t end = (size_t)rec_end[k];
        uint32_t nf, v;
        if (end < pos || end > buf_len || pos >= end || buf[pos++] != 2) goto invalid;
        if (get_varint32(buf, end, &pos, &nf)) goto invalid;
        for (uint32_t f = 0; f < nf; f++) {
            if (n == cap || pos >= end) goto invalid;
            efield[n] = buf[pos++];
            if (efield[n] >= 0x80) goto invalid; /* field codes are ASCII (the pure twin's rule) */
            eords[n] = ords[k];
            if (get_varint32(buf, end, &pos, &entok[n]) || get_varint32(buf, end, &pos, &v)) goto invalid;
            if (v > end - pos) goto invalid;
            ts[n] = pos;
            pos += v;
            te[n] = pos;
            if (get_varint32(buf, end, &pos, &enspec[n]) || get_varint32(buf, end, &pos, &v)) goto invalid;
            if (v > end - pos) goto invalid;
            ss[n] = pos;
            pos += v;
            se[n] = pos;
            n++;
        }
        if (pos != end) goto invalid;
    }
    if (pos != buf_len) goto invalid;
    rc = build(n, eords, efield, buf, buf_len, ts, te, entok, buf, buf_len, ss, se, enspec, text_mask,
               any_code, key_prefix, prefix_len, key_suffix, suffix_len, res);
    goto done;
invalid:
    rc = SEG_EINVAL;
done:
    free(eords);
    free(entok);
    free(enspec);
    free(efield);
    free(r);
    return rc;
}
