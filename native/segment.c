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
    uint64_t off;       /* key bytes (field + term) in the key arena */
    uint64_t hash;
    uint64_t last_entry; /* entry that last gave this key a posting (+1; 0 = none) */
    uint64_t last_ord;   /* for any-field keys: last ordinal given (+1; 0 = none) */
    uint32_t len;
    uint32_t count;      /* positions in the current entry, then its fill cursor */
    uint32_t npost;
    uint32_t start;      /* first posting in the sorted posting array */
} key_t_;

typedef struct {
    uint32_t kid, ord;
    uint64_t run_off;
    uint32_t run_len;
} post_t;

typedef struct {
    sbuf arena; /* key bytes */
    key_t_ *keys;
    size_t nkeys, keys_cap;
    uint32_t *table;
    size_t table_size;
} keyset;

static inline uint64_t hash2(uint8_t field, const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    h ^= field;
    h *= 1099511628211ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int keyset_grow(keyset *ks) {
    size_t size = ks->table_size ? ks->table_size * 2 : 4096;
    uint32_t *t = calloc(size, sizeof(uint32_t));
    if (!t) return -1;
    for (size_t k = 0; k < ks->nkeys; k++) {
        size_t slot = (size_t)ks->keys[k].hash & (size - 1);
        while (t[slot]) slot = (slot + 1) & (size - 1);
        t[slot] = (uint32_t)(k + 1);
    }
    free(ks->table);
    ks->table = t;
    ks->table_size = size;
    return 0;
}

/* The id of key (field, term), inserted if new; -1 when out of memory. */
static int64_t keyset_get(keyset *ks, uint8_t field, const uint8_t *t, size_t n) {
    if ((ks->nkeys + 1) * 2 > ks->table_size && keyset_grow(ks)) return -1;
    uint64_t h = hash2(field, t, n);
    size_t mask = ks->table_size - 1, slot = (size_t)h & mask;
    for (;;) {
        uint32_t e = ks->table[slot];
        if (e == 0) break;
        key_t_ *k = &ks->keys[e - 1];
        if (k->hash == h && k->len == n + 1 && ks->arena.p[k->off] == field &&
            memcmp(ks->arena.p + k->off + 1, t, n) == 0)
            return (int64_t)(e - 1);
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
    k->count = 0;
    k->npost = 0;
    k->start = 0;
    ks->table[slot] = (uint32_t)(ks->nkeys + 1);
    return (int64_t)ks->nkeys++;
}

typedef struct {
    post_t *p;
    size_t len, cap;
} posts;

static int posts_add(posts *ps, uint32_t kid, uint32_t ord, uint64_t run_off, uint32_t run_len) {
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

int64_t lsm_segment_build(size_t n, const uint32_t *ords, const uint8_t *fields, const uint8_t *tok_buf,
                          size_t tok_len, const uint64_t *tok_end, const uint32_t *ntok,
                          const uint8_t *spec_buf, size_t spec_len, const uint64_t *spec_end,
                          const uint32_t *nspec, const uint8_t *text_mask, uint8_t any_code,
                          const uint8_t *key_prefix, size_t prefix_len, const uint8_t *key_suffix,
                          size_t suffix_len, lsm_segment_result *res) {
    memset(res, 0, sizeof(*res));
    keyset ks = {0};
    posts ps = {0};
    sbuf runs = {0}, vals = {0};
    uint32_t *tok_id = NULL, *touched = NULL, *positions = NULL;
    post_t *sorted = NULL;
    size_t scratch_cap = 0;
    int64_t rc = SEG_ENOMEM;
    uint64_t tprev = 0, sprev = 0;

    for (size_t e = 0; e < n; e++) {
        if (fields[e] == any_code) goto invalid;
        if (e && (ords[e] < ords[e - 1] || (ords[e] == ords[e - 1] && fields[e] <= fields[e - 1])))
            goto invalid;
        if (tok_end[e] < tprev || tok_end[e] > tok_len || spec_end[e] < sprev || spec_end[e] > spec_len)
            goto invalid;
        tprev = tok_end[e];
        sprev = spec_end[e];
    }
    tprev = sprev = 0;
    for (size_t e = 0; e < n; e++) {
        const uint8_t *buf = tok_buf + tprev;
        size_t len = (size_t)(tok_end[e] - tprev);
        size_t nt = ntok[e];
        uint8_t field = fields[e];
        uint32_t ord = ords[e];
        int text = text_mask[field] != 0;
        tprev = tok_end[e];
        if (nt == 0 && len != 0) goto invalid;
        if (nt > scratch_cap) {
            size_t cap = nt * 2;
            free(tok_id);
            free(touched);
            free(positions);
            tok_id = malloc(cap * sizeof(uint32_t));
            touched = malloc(cap * sizeof(uint32_t));
            positions = malloc(cap * sizeof(uint32_t));
            if (!tok_id || !touched || !positions) goto fail;
            scratch_cap = cap;
        }
        size_t ntouched = 0, i = 0;
        for (size_t p = 0; p < nt; p++) {
            size_t start = i;
            while (i < len && buf[i] != ' ') i++;
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
            int64_t kid = keyset_get(&ks, field, buf + start, tlen);
            if (kid < 0) goto fail;
            key_t_ *k = &ks.keys[kid];
            if (k->last_entry != e + 1) {
                k->last_entry = e + 1;
                k->count = 0;
                touched[ntouched++] = (uint32_t)kid;
            }
            k->count++;
            tok_id[p] = (uint32_t)kid;
        }
        /* group positions by key (counting sort), then encode each touched key's run */
        uint32_t acc = 0;
        for (size_t j = 0; j < ntouched; j++) {
            key_t_ *k = &ks.keys[touched[j]];
            uint32_t c = k->count;
            k->count = acc;
            acc += c;
        }
        for (size_t p = 0; p < nt; p++)
            if (tok_id[p] != UINT32_MAX) positions[ks.keys[tok_id[p]].count++] = (uint32_t)p;
        uint32_t from = 0;
        for (size_t j = 0; j < ntouched; j++) {
            uint32_t kid = touched[j];
            uint32_t to = ks.keys[kid].count;
            if (sbuf_reserve(&runs, 5 * (size_t)(to - from + 1))) goto fail;
            size_t o = runs.len;
            o = put_varint(runs.p, o, to - from);
            o = put_varint(runs.p, o, positions[from]);
            for (uint32_t q = from + 1; q < to; q++) o = put_varint(runs.p, o, positions[q] - positions[q - 1] - 1);
            if (posts_add(&ps, kid, ord, runs.len, (uint32_t)(o - runs.len))) goto fail;
            runs.len = o;
            from = to;
        }
        /* specials: position-less, only when the field has no posting of that term yet */
        const uint8_t *sb = spec_buf + sprev;
        size_t slen = (size_t)(spec_end[e] - sprev), ns = nspec[e], si = 0;
        sprev = spec_end[e];
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
            int64_t kid = keyset_get(&ks, field, sb + start, tlen);
            if (kid < 0) goto fail;
            if (ks.keys[kid].last_entry == e + 1) continue;
            ks.keys[kid].last_entry = e + 1;
            if (sbuf_reserve(&runs, 1)) goto fail;
            runs.p[runs.len] = 0;
            if (posts_add(&ps, (uint32_t)kid, ord, runs.len, 1)) goto fail;
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
            uint64_t koff = k->off;
            uint32_t klen = k->len;
            /* keyset_get may move the arena and the key array: copy what is needed first */
            int64_t aid;
            {
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
                aid = keyset_get(&ks, any_code, src, tl);
                free(heap);
            }
            if (aid < 0) goto fail;
            if (ks.keys[aid].last_ord == (uint64_t)ord + 1) continue;
            ks.keys[aid].last_ord = (uint64_t)ord + 1;
            if (posts_add(&ps, (uint32_t)aid, ord, 0, 0)) goto fail;
        }
    }
    /* bucket the postings by key, keeping their (ascending ordinal) order */
    for (size_t q = 0; q < ps.len; q++) ks.keys[ps.p[q].kid].npost++;
    {
        uint32_t acc = 0;
        for (size_t k = 0; k < ks.nkeys; k++) {
            ks.keys[k].start = acc;
            ks.keys[k].count = acc;
            acc += ks.keys[k].npost;
        }
    }
    sorted = malloc((ps.len ? ps.len : 1) * sizeof(post_t));
    if (!sorted) goto fail;
    for (size_t q = 0; q < ps.len; q++) sorted[ks.keys[ps.p[q].kid].count++] = ps.p[q];
    res->key_end = malloc((ks.nkeys ? ks.nkeys : 1) * sizeof(uint64_t));
    res->val_end = malloc((ks.nkeys ? ks.nkeys : 1) * sizeof(uint64_t));
    res->keys = malloc(ks.arena.len + ks.nkeys * (prefix_len + suffix_len) + 1);
    if (!res->key_end || !res->val_end || !res->keys) goto fail;
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
        const post_t *pp = sorted + key->start;
        size_t need = 3 + 10 + 10 + 10 * (size_t)np;
        for (uint32_t q = 0; q < np; q++) need += pp[q].run_len;
        if (sbuf_reserve(&vals, need)) goto fail;
        uint8_t *out = vals.p;
        size_t o = vals.len;
        int is_any = ks.arena.p[key->off] == any_code;
        out[o++] = is_any ? 2 : 1;
        size_t mode_at = o;
        out[o++] = 0;
        if (np == 1) {
            out[o++] = 1;
            o = put_varint(out, o, pp[0].ord);
        } else {
            o = put_varint(out, o, np);
            o = put_varint(out, o, pp[0].ord);
            int small = 1;
            for (uint32_t q = 1; q < np; q++)
                if (pp[q].ord - pp[q - 1].ord >= 256) small = 0;
            if (small) {
                for (uint32_t q = 1; q < np; q++) out[o++] = (uint8_t)(pp[q].ord - pp[q - 1].ord);
            } else {
                out[mode_at] = 1;
                for (uint32_t q = 1; q < np; q++) o = put_varint(out, o, pp[q].ord - pp[q - 1].ord);
            }
        }
        for (uint32_t q = 0; q < np; q++) {
            memcpy(out + o, runs.p + pp[q].run_off, pp[q].run_len);
            o += pp[q].run_len;
        }
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
    free(sorted);
    return rc;
}
