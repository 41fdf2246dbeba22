/* Word splitting of the search tokenizer (search/tokenizer.py `_words`, joined by spaces).
 *
 * Input: UTF-8 text, already normalised by Python (NFKC + casefold) when it is not ASCII; ASCII letters
 * are lower-cased here (for ASCII text `normalize` is exactly `lower()`, so Python can skip that pass).
 * A word is a maximal run of code points for which `str.isalnum()` holds ([^\W_] of Python's re):
 * ASCII [A-Za-z0-9] by table, other code points of the Basic Multilingual Plane by the caller's table
 * `bmp_alnum` (65536 bytes, byte c non-zero iff chr(c) matches [^\W_]; built once in Python with that
 * very regex, so both sides use the same Unicode database). It is not read for ASCII-only input. A token of more than `max_tok_bytes` UTF-8 bytes is replaced by an empty token
 * (it keeps its position).
 * Output: the tokens joined by single spaces in out[0..*out_len); out needs `len` bytes (every token after
 * the first is preceded by at least one separator byte in the input, so the output is never longer).
 * Returns the token count, or LSM_TOK_DECLINE (-4) for input this kernel does not model: a code point
 * outside the BMP, a surrogate, or malformed UTF-8 (Python then tokenizes the text itself). */
#include "tokenize.h"

#include <string.h>

#define LSM_TOK_DECLINE -4

/* 0 for a separator, else the lower-cased byte */
static const uint8_t *ascii_table(void) {
    static uint8_t t[128];
    static int ready = 0;
    if (!ready) {
        for (int c = 0; c < 128; c++) {
            if (c >= 'a' && c <= 'z') t[c] = (uint8_t)c;
            else if (c >= 'A' && c <= 'Z') t[c] = (uint8_t)(c + 32);
            else if (c >= '0' && c <= '9') t[c] = (uint8_t)c;
            else t[c] = 0;
        }
        ready = 1; /* idempotent: a racing second initialisation writes the same bytes */
    }
    return t;
}

int64_t lsm_tokenize(const uint8_t *in, size_t len, const uint8_t *bmp_alnum, uint32_t max_tok_bytes,
                     uint8_t *out, size_t *out_len) {
    const uint8_t *tab = ascii_table();
    size_t o = 0, tok_start = 0, i = 0;
    int64_t ntok = 0;
    int in_tok = 0;
    while (i < len) {
        uint8_t b = in[i];
        size_t n;
        int alnum;
        /* Runs of ASCII bytes, the bulk of mail text, in tight loops (same effect as the general step
         * below, one byte at a time: ~2x faster on the corpus bodies). */
        if (b < 0x80 && tab[b]) {
            if (!in_tok) {
                if (ntok) out[o++] = ' ';
                tok_start = o;
                in_tok = 1;
                ntok++;
            }
            do {
                out[o++] = tab[b];
                if (++i == len) break;
                b = in[i];
            } while (b < 0x80 && tab[b]);
            continue;
        }
        if (b < 0x80 && !in_tok) {
            do {
                if (++i == len) break;
                b = in[i];
            } while (b < 0x80 && !tab[b]);
            continue;
        }
        if (b < 0x80) {
            n = 1;
            alnum = tab[b] != 0;
        } else {
            uint32_t cp;
            if (b >= 0xC2 && b <= 0xDF) {
                if (i + 1 >= len || (in[i + 1] & 0xC0) != 0x80) return LSM_TOK_DECLINE;
                cp = ((uint32_t)(b & 0x1F) << 6) | (in[i + 1] & 0x3F);
                n = 2;
            } else if (b >= 0xE0 && b <= 0xEF) {
                if (i + 2 >= len || (in[i + 1] & 0xC0) != 0x80 || (in[i + 2] & 0xC0) != 0x80)
                    return LSM_TOK_DECLINE;
                cp = ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(in[i + 1] & 0x3F) << 6) | (in[i + 2] & 0x3F);
                if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)) return LSM_TOK_DECLINE;
                n = 3;
            } else {
                return LSM_TOK_DECLINE; /* 4-byte sequences (outside the BMP) or invalid lead bytes */
            }
            alnum = bmp_alnum[cp] != 0;
        }
        if (alnum) {
            if (!in_tok) {
                if (ntok) out[o++] = ' ';
                tok_start = o;
                in_tok = 1;
                ntok++;
            }
            if (n == 1) {
                out[o++] = tab[b];
            } else {
                for (size_t k = 0; k < n; k++) out[o++] = in[i + k];
            }
        } else if (in_tok) {
            if (o - tok_start > max_tok_bytes) o = tok_start; /* over-long: an empty token */
            in_tok = 0;
        }
        i += n;
    }
    if (in_tok && o - tok_start > max_tok_bytes) o = tok_start;
    *out_len = o;
    return ntok;
}

/* Lines holding a non-ASCII byte (search/tokenizer.py `_fold_utf8` uses them to normalise only those).
 *
 * Writes the byte ranges [start, end) of `in` that consist of whole lines (a line ends at "\n", which is
 * not part of a range) and hold a byte >= 0x80, ranges less than `gap` bytes apart merged into one, as
 * spans[2k], spans[2k+1]. Returns the number of ranges, or LSM_TOK_SPACE (-2) when there are more than
 * max_spans (the caller then normalises the whole text). */
#define LSM_TOK_SPACE -2

static int has_high(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return (w & 0x8080808080808080ULL) != 0;
}

int64_t lsm_nonascii_lines(const uint8_t *in, size_t len, size_t gap, uint64_t *spans, size_t max_spans) {
    size_t n = 0, i = 0, lo = 0; /* bytes before lo are covered by earlier ranges or ASCII lines */
    while (i < len) {
        while (i + 8 <= len && !has_high(in + i)) i += 8;
        while (i < len && in[i] < 0x80) i++;
        if (i >= len) break;
        size_t start = i;
        while (start > lo && in[start - 1] != '\n') start--;
        const uint8_t *nl = memchr(in + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - in) : len;
        if (n && start - spans[2 * n - 1] < gap) {
            spans[2 * n - 1] = end;
        } else {
            if (n >= max_spans) return LSM_TOK_SPACE;
            spans[2 * n] = start;
            spans[2 * n + 1] = end;
            n++;
        }
        lo = i = end;
    }
    return (int64_t)n;
}
