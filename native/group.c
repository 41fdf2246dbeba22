/* Grouping of one search field's token stream: term -> ascending positions (search/tokenizer.group).
 *
 * Input: ntok tokens (UTF-8) joined by single spaces; an empty token is a position with no indexed token.
 * Output, for the nterms distinct non-empty tokens in first-occurrence order:
 *   terms_out[0..*terms_len)    the distinct terms joined by single spaces
 *   enc_out, offsets[0..nterms] term i's positions, encoded as in a posting block (varint count, first
 *                               position, then gaps - 1, all LEB128), are enc_out[offsets[i] .. offsets[i+1])
 * Scratch: 5 * ntok uint32 (uninitialised is fine); table: table_size uint32, ZEROED, table_size a power
 * of two > ntok (open addressing, load factor < 1 so a probe always ends at an empty slot); enc_out:
 * 5 * (ntok + nterms) <= 10 * ntok bytes.
 * Returns nterms, or LSM_EINVAL when the stream does not hold exactly ntok tokens or a size is wrong.
 * Why C: positions as encoded bytes instead of Python lists of ints are what the index keeps in memory
 * (bytes are not tracked by the garbage collector, whose passes over millions of small lists were most
 * of the grouping time) and what a flush writes, so no Python loop touches a position. */
#include <string.h>

#include "group.h"

#define LSM_EINVAL_G -3

static inline uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static inline size_t put_varint32(uint8_t *out, size_t pos, uint32_t v) {
    while (v >= 0x80) {
        out[pos++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[pos++] = (uint8_t)v;
    return pos;
}

int64_t lsm_group_tokens(const uint8_t *buf, size_t len, size_t ntok, uint32_t *scratch, uint32_t *table,
                         size_t table_size, uint32_t *offsets, uint8_t *enc_out, uint8_t *terms_out,
                         size_t *terms_len) {
    if (ntok == 0 || ntok >= UINT32_MAX || table_size <= ntok || (table_size & (table_size - 1)) != 0)
        return LSM_EINVAL_G;
    uint32_t *tok_id = scratch;            /* per position: term id, or UINT32_MAX for an empty token */
    uint32_t *term_off = scratch + ntok;   /* per term: its bytes in terms_out */
    uint32_t *term_len = scratch + 2 * ntok;
    uint32_t *count = scratch + 3 * ntok;  /* per term: positions seen, then the fill cursor */
    uint32_t *positions = scratch + 4 * ntok; /* grouped by term */
    size_t mask = table_size - 1, nterms = 0, out = 0, i = 0;
    for (size_t p = 0; p < ntok; p++) {
        size_t start = i;
        while (i < len && buf[i] != ' ') i++;
        size_t tlen = i - start;
        if (p + 1 < ntok) {
            if (i >= len) return LSM_EINVAL_G; /* fewer tokens than ntok */
            i++;                               /* the separator */
        } else if (i != len) {
            return LSM_EINVAL_G; /* more tokens than ntok */
        }
        if (tlen == 0) {
            tok_id[p] = UINT32_MAX;
            continue;
        }
        const uint8_t *t = buf + start;
        size_t slot = (size_t)fnv1a(t, tlen) & mask;
        for (;;) {
            uint32_t e = table[slot];
            if (e == 0) {
                if (nterms) terms_out[out++] = ' ';
                memcpy(terms_out + out, t, tlen);
                term_off[nterms] = (uint32_t)out;
                term_len[nterms] = (uint32_t)tlen;
                count[nterms] = 1;
                out += tlen;
                table[slot] = (uint32_t)(nterms + 1);
                tok_id[p] = (uint32_t)nterms++;
                break;
            }
            uint32_t id = e - 1;
            if (term_len[id] == tlen && memcmp(terms_out + term_off[id], t, tlen) == 0) {
                count[id]++;
                tok_id[p] = id;
                break;
            }
            slot = (slot + 1) & mask;
        }
    }
    uint32_t *start = offsets; /* first: where each term's positions start in `positions` */
    uint32_t acc = 0;
    for (size_t k = 0; k < nterms; k++) {
        start[k] = acc;
        acc += count[k];
        count[k] = start[k];
    }
    for (size_t p = 0; p < ntok; p++) {
        uint32_t id = tok_id[p];
        if (id != UINT32_MAX) positions[count[id]++] = (uint32_t)p;
    }
    /* then: encode each term's run; count[k] is now the end of term k's positions */
    size_t e = 0;
    uint32_t from = 0;
    for (size_t k = 0; k < nterms; k++) {
        uint32_t to = count[k];
        offsets[k] = (uint32_t)e;
        e = put_varint32(enc_out, e, to - from);
        e = put_varint32(enc_out, e, positions[from]);
        for (uint32_t j = from + 1; j < to; j++)
            e = put_varint32(enc_out, e, positions[j] - positions[j - 1] - 1);
        from = to;
    }
    offsets[nterms] = (uint32_t)e;
    *terms_len = out;
    return (int64_t)nterms;
}
