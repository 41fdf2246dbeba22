/* mimescan.c: the MIME structure of a message in one call (lsmmail/mail/mime_fast.py `scan_pure` is the
 * pure twin and states the contract; this file follows it line by line).
 *
 * What it finds, exactly as the stdlib compat32 feed parser would: every part's header block and body,
 * the kept header fields of each block (name and value as byte ranges: the value without the blanks after
 * the colon and without trailing CR/LF, continuation lines included), each part's kind (leaf, multipart,
 * message/<any>) from its Content-Type, multipart boundaries and the delimiter lines that split the body.
 * Decoding (RFC 2047, charsets, transfer encodings, parameters other than the boundary) stays in Python.
 *
 * Output, in pre-order (a part before its children):
 *   parts[7*i ..]  = parent index (-1 for the root), kind (0 leaf, 1 multipart, 2 message/<any>),
 *                    default type (0 text/plain, 1 message/rfc822), body start, body end, first field,
 *                    end of fields (indices into `fields`)
 *   fields[4*j ..] = name start, name end, value start, value end (offsets into `raw`)
 * Returns the number of parts and sets *nfields, or
 *   LSM_MS_REFERENCE (-4): the feed parser does something the fast path does not model (use it);
 *   LSM_MS_PYTHON (-5):    a case the pure twin reads through the stdlib's generic helpers (non-ASCII
 *                          Content-Type, RFC 2231 or backslash-quoted boundary): use the pure twin;
 *   LSM_ESPACE (-2):       more parts or fields than the arrays hold (use the pure twin). */
#define _GNU_SOURCE /* memmem */
#include "mimescan.h"

#include <string.h>

#define LSM_ESPACE -2
#define LSM_MS_REFERENCE -4
#define LSM_MS_PYTHON -5
#define MS_MAX_DEPTH 32 /* as mime_fast._MAX_DEPTH: real mail nests 3-4 deep */

enum { KIND_LEAF = 0, KIND_MULTI = 1, KIND_MESSAGE = 2 };

typedef struct {
    const uint8_t *raw;
    int32_t *parts;
    int32_t max_parts, nparts;
    int32_t *fields;
    int32_t max_fields, nfields;
    const uint8_t *outer[MS_MAX_DEPTH + 2]; /* delimiters of the enclosing multiparts */
    size_t outer_len[MS_MAX_DEPTH + 2];
    int nouter;
    int rc; /* first error, 0 while none */
} scan_t;

/* Python's str.isspace() for ASCII. */
static int py_space(uint8_t c) { return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f); }

static int name_char(uint8_t c) { return (c >= 041 && c <= 071) || (c >= 073 && c <= 0176); }

static uint8_t lower(uint8_t c) { return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c; }

static const uint8_t *find_byte(const uint8_t *raw, size_t i, size_t end, uint8_t c) {
    return i < end ? memchr(raw + i, c, end - i) : NULL;
}

static const char *const KEPT[] = {"subject", "from", "to", "cc", "bcc", "date", "message-id", "in-reply-to",
                                   "references", "content-type", "content-disposition",
                                   "content-transfer-encoding"};
static const uint8_t KEPT_LEN[] = {7, 4, 2, 2, 3, 4, 10, 11, 10, 12, 19, 25};
#define KEPT_MAX 25

/* n if raw[i..i+n) is a kept field name (any case), else 0. */
static size_t kept_len(const uint8_t *raw, size_t i, size_t n) {
    for (size_t k = 0; k < sizeof KEPT / sizeof KEPT[0]; k++) {
        if (KEPT_LEN[k] != n) continue;
        size_t j = 0;
        while (j < n && lower(raw[i + j]) == (uint8_t)KEPT[k][j]) j++;
        if (j == n) return n;
    }
    return 0;
}

/* Kept lines remembered per header block in one pass; a block with more (never seen in mail) is read a
 * second time. */
#define KEPT_LINES 64

/* Append the kept field whose name raw[line..line+n) is followed by ':': the value without the blanks
 * after the colon, over its continuation lines (a blank after the line end), without trailing CR/LF,
 * within the block's end `stop` (mime_fast._KEPT_FIELD). 0, or -1 with s->rc set. */
static int add_field(scan_t *s, size_t line, size_t n, size_t stop) {
    const uint8_t *raw = s->raw;
    size_t v = line + n + 1;
    while (v < stop && (raw[v] == ' ' || raw[v] == '\t')) v++;
    size_t e = v;
    for (;;) {
        const uint8_t *nl = find_byte(raw, e, stop, '\n');
        if (!nl) { e = stop; break; }
        e = (size_t)(nl - raw);
        if (e + 1 < stop && (raw[e + 1] == ' ' || raw[e + 1] == '\t')) { e += 1; continue; }
        break;
    }
    size_t ve = e;
    while (ve > v && (raw[ve - 1] == '\r' || raw[ve - 1] == '\n')) ve--;
    if (s->nfields >= s->max_fields) { s->rc = LSM_ESPACE; return -1; }
    int32_t *f = s->fields + 4 * s->nfields++;
    f[0] = (int32_t)line; f[1] = (int32_t)(line + n); f[2] = (int32_t)v; f[3] = (int32_t)ve;
    return 0;
}

/* mime_fast._headers: read the header block of raw[start:end) into a new field range; return the body
 * start, or -1 with s->rc set. */
static int64_t headers(scan_t *s, size_t start, size_t end) {
    const uint8_t *raw = s->raw;
    /* One pass over the block's lines: which belong (headerRE), which start a kept field, and which
     * start with "From " or ':' (declined after the first line). */
    size_t kept_at[KEPT_LINES], kept_n[KEPT_LINES];
    size_t nkept = 0, k = 0;
    int flag_at_1 = 0, flag_after_1 = 0, overflow = 0;
    size_t stop = start;
    for (;; k++) {
        size_t line = stop;
        size_t n = 0;
        int ok = 0, flagged = 0;
        if (line < end) {
            uint8_t c = raw[line];
            if (c == ' ' || c == '\t') {
                ok = 1;
            } else if (end - line >= 5 && memcmp(raw + line, "From ", 5) == 0) {
                ok = flagged = 1;
            } else {
                size_t i = line;
                while (i < end && name_char(raw[i])) i++;
                ok = i < end && raw[i] == ':';
                flagged = i == line;
                if (ok) n = kept_len(raw, line, i - line);
            }
        }
        if (!ok) break;
        const uint8_t *nl = find_byte(raw, line, end, '\n');
        if (!nl) {
            /* a last header line without a line end, at the end of the input: in the block */
            stop = end;
        } else {
            stop = (size_t)(nl - raw) + 1;
        }
        if (flagged && k == 1) flag_at_1 = 1;
        if (flagged && k >= 2) flag_after_1 = 1;
        if (n) {
            if (nkept < KEPT_LINES) { kept_at[nkept] = line; kept_n[nkept] = n; nkept++; }
            else overflow = 1;
        }
        if (!nl) break;
    }
    size_t body = stop;
    if (stop < end) {
        if (raw[stop] == '\n') body = stop + 1;
        else if (raw[stop] == '\r') body = stop + 2; /* "\r\n": lone CRs were declined */
    } else {
        body = end;
    }
    if (stop == start) return (int64_t)body;
    int envelope = stop - start >= 5 && memcmp(raw + start, "From ", 5) == 0;
    if (envelope) {
        const uint8_t *nl = find_byte(raw, start, stop, '\n');
        if (!nl || (size_t)(nl - raw) + 1 == stop) return (int64_t)body;
        start = (size_t)(nl - raw) + 1;
    }
    if (raw[start] == ' ' || raw[start] == '\t' || raw[start] == ':' || flag_after_1 || (!envelope && flag_at_1)) {
        s->rc = LSM_MS_REFERENCE;
        return -1;
    }
    if (!overflow) {
        for (size_t j = 0; j < nkept; j++)
            if (add_field(s, kept_at[j], kept_n[j], stop) < 0) return -1;
        return (int64_t)body;
    }
    for (size_t line = start; line < stop;) { /* more kept lines than the array: find them again */
        size_t lim = stop - line < KEPT_MAX + 1 ? stop - line : KEPT_MAX + 1;
        const uint8_t *colon = memchr(raw + line, ':', lim);
        size_t n = colon ? kept_len(raw, line, (size_t)(colon - (raw + line))) : 0;
        if (n && add_field(s, line, n, stop) < 0) return -1;
        const uint8_t *nl = find_byte(raw, line, stop, '\n');
        line = nl ? (size_t)(nl - raw) + 1 : stop;
    }
    return (int64_t)body;
}

/* Strip Python whitespace from both ends of raw[*a:*b). */
static void strip(const uint8_t *raw, size_t *a, size_t *b) {
    while (*a < *b && py_space(raw[*a])) (*a)++;
    while (*b > *a && py_space(raw[*b - 1])) (*b)--;
}

/* The first Content-Type value of the fields [f0, f1) as a range; 0 if none. */
static int first_ctype(scan_t *s, int32_t f0, int32_t f1, size_t *a, size_t *b) {
    static const char name[] = "content-type";
    for (int32_t j = f0; j < f1; j++) {
        const int32_t *f = s->fields + 4 * j;
        if (f[1] - f[0] != 12) continue;
        int k = 0;
        while (k < 12 && lower(s->raw[f[0] + k]) == (uint8_t)name[k]) k++;
        if (k == 12) { *a = (size_t)f[2]; *b = (size_t)f[3]; return 1; }
    }
    return 0;
}

static int eq_ci(const uint8_t *p, size_t n, const char *lit) {
    size_t m = strlen(lit);
    if (n != m) return 0;
    for (size_t i = 0; i < n; i++)
        if (lower(p[i]) != (uint8_t)lit[i]) return 0;
    return 1;
}

/* Python's unquote() of raw[*a:*b) when there is no backslash in it. */
static void unquote(const uint8_t *raw, size_t *a, size_t *b) {
    if (*b - *a > 1 && ((raw[*a] == '"' && raw[*b - 1] == '"') || (raw[*a] == '<' && raw[*b - 1] == '>'))) {
        (*a)++;
        (*b)--;
    }
}

/* mime_fast.Part.get_boundary for a Content-Type value raw[a:b) without '*' or backslash: the first
 * parameter named boundary (as email.message._parseparam splits), unquoted twice, right-stripped.
 * Returns 1 and the range, or 0 when there is none. */
static int boundary(const uint8_t *raw, size_t a, size_t b, size_t *ba, size_t *bb) {
    size_t p = a; /* s = raw[p:b) after the ';' that _parseparam drops */
    for (;;) {
        /* end = s.find(';'), then past ';'s inside an odd number of '"' */
        size_t end = p;
        while (end < b && raw[end] != ';') end++;
        while (end > p && end < b) {
            size_t q = 0;
            for (size_t i = p; i < end; i++) q += raw[i] == '"';
            if (!(q & 1)) break;
            end++;
            while (end < b && raw[end] != ';') end++;
        }
        /* piece = s[:end]: name = before the first '=', stripped, lower case */
        size_t eq = p;
        while (eq < end && raw[eq] != '=') eq++;
        size_t na = p, nb = eq;
        strip(raw, &na, &nb);
        if (eq < end) {
            if (eq_ci(raw + na, nb - na, "boundary")) {
                size_t va = eq + 1, vb = end;
                strip(raw, &va, &vb);
                unquote(raw, &va, &vb);
                unquote(raw, &va, &vb);
                while (vb > va && py_space(raw[vb - 1])) vb--;
                *ba = va;
                *bb = vb;
                return 1;
            }
        } else if (eq_ci(raw + na, nb - na, "boundary")) {
            return 0; /* "boundary" without a value: an empty boundary */
        }
        if (end >= b) return 0;
        p = end + 1;
    }
}

/* mime_fast._part: append the part in raw[start:end) (and its subparts); returns its index or -1. */
static int32_t part(scan_t *s, size_t start, size_t end, int32_t parent, int depth, int digest) {
    const uint8_t *raw = s->raw;
    if (depth > MS_MAX_DEPTH) { s->rc = LSM_MS_REFERENCE; return -1; }
    if (s->nparts >= s->max_parts) { s->rc = LSM_ESPACE; return -1; }
    int32_t me = s->nparts++;
    int32_t f0 = s->nfields;
    int64_t body = headers(s, start, end);
    if (body < 0) return -1;
    int32_t *p = s->parts + 7 * me;
    p[0] = parent; p[1] = KIND_LEAF; p[2] = digest ? 1 : 0; p[3] = (int32_t)body; p[4] = (int32_t)end;
    p[5] = f0; p[6] = s->nfields;
    /* get_content_type: before the first ';', stripped, lower case; text/plain unless exactly one '/' */
    size_t ta, tb;
    int multipart = 0, message = 0, is_digest = 0;
    if (first_ctype(s, f0, s->nfields, &ta, &tb)) {
        for (size_t i = ta; i < tb; i++)
            if (raw[i] >= 0x80) { s->rc = LSM_MS_PYTHON; return -1; }
        size_t ca = ta, cb = ta;
        while (cb < tb && raw[cb] != ';') cb++;
        strip(raw, &ca, &cb);
        int slashes = 0;
        size_t slash = cb;
        for (size_t i = ca; i < cb; i++)
            if (raw[i] == '/') { if (!slashes) slash = i; slashes++; }
        if (slashes == 1) {
            multipart = eq_ci(raw + ca, slash - ca, "multipart");
            message = eq_ci(raw + ca, slash - ca, "message");
            if (message && eq_ci(raw + ca, cb - ca, "message/delivery-status")) {
                s->rc = LSM_MS_REFERENCE; /* the feed parser splits it into header blocks */
                return -1;
            }
            is_digest = eq_ci(raw + ca, cb - ca, "multipart/digest");
        }
    } else {
        message = digest; /* the default type */
    }
    if (message) {
        p[1] = KIND_MESSAGE;
        return part(s, (size_t)body, end, me, depth + 1, 0) < 0 ? -1 : me;
    }
    if (!multipart) return me;
    p[1] = KIND_MULTI;
    for (size_t i = ta; i < tb; i++)
        if (raw[i] == '*' || raw[i] == '\\') { s->rc = LSM_MS_PYTHON; return -1; }
    size_t ba, bb;
    if (!boundary(raw, ta, tb, &ba, &bb) || ba == bb) { s->rc = LSM_MS_REFERENCE; return -1; }
    /* delim = "--" + boundary, compared in place: raw[ba-2..] need not be "--", so keep a copy */
    size_t dn = bb - ba + 2;
    uint8_t stackbuf[256];
    uint8_t *delim = dn <= sizeof stackbuf ? stackbuf : NULL;
    if (!delim) { s->rc = LSM_MS_PYTHON; return -1; } /* a boundary over 254 bytes: rare, let Python do it */
    delim[0] = delim[1] = '-';
    memcpy(delim + 2, raw + ba, bb - ba);
    for (int k = 0; k < s->nouter; k++) {
        const uint8_t *d = s->outer[k];
        size_t n = s->outer_len[k];
        if ((n == dn && memcmp(d, delim, n) == 0)
            || (n == dn + 2 && memcmp(d, delim, dn) == 0 && d[dn] == '-' && d[dn + 1] == '-')
            || (dn == n + 2 && memcmp(delim, d, n) == 0 && delim[n] == '-' && delim[n + 1] == '-')) {
            s->rc = LSM_MS_REFERENCE;
            return -1;
        }
    }
    /* _delimiter_lines, consumed as found: line (start, next line start, is close) */
    size_t pos = (size_t)body, prev_next = 0;
    int have_prev = 0, first = 1;
    s->outer[s->nouter] = delim;
    s->outer_len[s->nouter] = dn;
    s->nouter++;
    int32_t result = me;
    for (;;) {
        size_t i = 0, lnext = 0;
        int close = 0, found = 0;
        while (!found) {
            if (pos + dn > end) break;
            const uint8_t *hit = memmem(raw + pos, end - pos, delim, dn);
            if (!hit) break;
            i = (size_t)(hit - raw);
            const uint8_t *nl = find_byte(raw, i, end, '\n');
            pos = nl ? (size_t)(nl - raw) + 1 : end;
            if (i != (size_t)body && raw[i - 1] != '\n') continue;
            size_t j = i + dn;
            int is_close = end - j >= 2 && raw[j] == '-' && raw[j + 1] == '-';
            for (int t = is_close ? 1 : 0; t >= 0 && !found; t--) {
                size_t k = t ? j + 2 : j;
                while (k < end && (raw[k] == ' ' || raw[k] == '\t')) k++;
                if (k == end) { lnext = k; close = t; found = 1; }
                else if (raw[k] == '\n') { lnext = k + 1; close = t; found = 1; }
                else if (raw[k] == '\r' && k + 1 < end && raw[k + 1] == '\n') { lnext = k + 2; close = t; found = 1; }
            }
        }
        if (first) {
            if (!found || close) { s->rc = LSM_MS_REFERENCE; result = -1; break; }
            first = 0;
        } else if (have_prev) {
            /* the previous delimiter line's part ends where this line starts (or at end) */
            size_t part_end = found ? i : end;
            if (part_end == prev_next) { s->rc = LSM_MS_REFERENCE; result = -1; break; }
            int32_t child = part(s, prev_next, part_end, me, depth + 1, is_digest);
            if (child < 0) { result = -1; break; }
            /* _drop_last_line_end: the line end before a delimiter line belongs to the delimiter */
            int32_t c = child;
            while (s->parts[7 * c + 1] == KIND_MESSAGE) c++; /* its only child follows it */
            if (s->parts[7 * c + 1] == KIND_LEAF) {
                int32_t *cp = s->parts + 7 * c;
                if (cp[4] - cp[3] >= 2 && raw[cp[4] - 2] == '\r' && raw[cp[4] - 1] == '\n') cp[4] -= 2;
                else if (cp[4] - cp[3] >= 1 && raw[cp[4] - 1] == '\n') cp[4] -= 1;
            }
        }
        if (!found || close) break;
        have_prev = 1;
        prev_next = lnext;
    }
    s->nouter--;
    return result;
}

int32_t lsm_mimescan(const uint8_t *raw, size_t len, int32_t *parts, int32_t max_parts, int32_t *fields,
                     int32_t max_fields, int32_t *nfields) {
    if (len > 0x7fffffff) return LSM_MS_PYTHON;
    const uint8_t *cr = memchr(raw, '\r', len);
    while (cr) { /* a lone CR ends a line for the feed parser */
        size_t i = (size_t)(cr - raw);
        if (i + 1 >= len || raw[i + 1] != '\n') return LSM_MS_REFERENCE;
        cr = i + 2 < len ? memchr(raw + i + 2, '\r', len - i - 2) : NULL;
    }
    scan_t s;
    s.raw = raw; s.parts = parts; s.max_parts = max_parts; s.nparts = 0;
    s.fields = fields; s.max_fields = max_fields; s.nfields = 0; s.nouter = 0; s.rc = 0;
    if (part(&s, 0, len, -1, 0, 0) < 0) return s.rc ? s.rc : LSM_MS_REFERENCE;
    *nfields = s.nfields;
    return s.nparts;
}

/* The base64 body of a part, decoded (mime_fast.Part.get_payload's twin for the common form).
 *
 * Handles exactly the bodies that, with every CR and LF removed, are a multiple of 4 characters of the
 * base64 alphabet with at most two '=' at the very end: for those, the stdlib's
 * `decode_b(b"".join(body.splitlines()))` is the plain decoding (its strict check passes and no padding
 * is added). Writes the bytes to out (cap >= len / 4 * 3) and returns their count; returns
 * LSM_MS_PYTHON (-5) for anything else (other characters, bad padding or length: the stdlib decides). */
static const int8_t *b64_table(void) {
    static int8_t t[256];
    static int ready = 0;
    if (!ready) {
        for (int c = 0; c < 256; c++) t[c] = -1;
        for (int c = 'A'; c <= 'Z'; c++) t[c] = (int8_t)(c - 'A');
        for (int c = 'a'; c <= 'z'; c++) t[c] = (int8_t)(c - 'a' + 26);
        for (int c = '0'; c <= '9'; c++) t[c] = (int8_t)(c - '0' + 52);
        t['+'] = 62;
        t['/'] = 63;
        ready = 1; /* idempotent: a racing second initialisation writes the same bytes */
    }
    return t;
}

int64_t lsm_b64_lines(const uint8_t *in, size_t len, uint8_t *out, size_t cap) {
    const int8_t *t = b64_table();
    uint32_t acc = 0;
    size_t o = 0, i = 0;
    int have = 0, pad = 0; /* characters in acc; '=' seen */
    while (i < len) {
        if (have == 0 && !pad) { /* whole groups of four alphabet characters: the bulk of a line */
            while (i + 4 <= len && o + 3 <= cap) {
                int32_t a = t[in[i]], b = t[in[i + 1]], c = t[in[i + 2]], d = t[in[i + 3]];
                if ((a | b | c | d) < 0) break;
                uint32_t w = ((uint32_t)a << 18) | ((uint32_t)b << 12) | ((uint32_t)c << 6) | (uint32_t)d;
                out[o] = (uint8_t)(w >> 16);
                out[o + 1] = (uint8_t)(w >> 8);
                out[o + 2] = (uint8_t)w;
                o += 3;
                i += 4;
            }
            if (i >= len) break;
        }
        uint8_t c = in[i++];
        int8_t v = t[c];
        if (v >= 0) {
            if (pad) return LSM_MS_PYTHON; /* data after '=' */
            acc = (acc << 6) | (uint32_t)v;
            if (++have == 4) {
                if (o + 3 > cap) return LSM_MS_PYTHON;
                out[o] = (uint8_t)(acc >> 16);
                out[o + 1] = (uint8_t)(acc >> 8);
                out[o + 2] = (uint8_t)acc;
                o += 3;
                acc = 0;
                have = 0;
            }
        } else if (c == '\n' || c == '\r') {
            continue;
        } else if (c == '=') {
            pad++;
            if (pad > 2 || have + pad > 4) return LSM_MS_PYTHON;
            if (have + pad == 4) { /* the last group: "xx==" or "xxx=" */
                if (have < 2) return LSM_MS_PYTHON;
                acc <<= 6 * pad;
                if (o + (size_t)(have - 1) > cap) return LSM_MS_PYTHON;
                out[o++] = (uint8_t)(acc >> 16);
                if (have == 3) out[o++] = (uint8_t)(acc >> 8);
                have = 4; /* complete: only line ends may follow */
            }
        } else {
            return LSM_MS_PYTHON;
        }
    }
    if (pad ? have != 4 : have != 0) return LSM_MS_PYTHON; /* not a multiple of 4 characters */
    return (int64_t)o;
}

/* Quoted-printable decoding, byte for byte what CPython's binascii.a2b_qp(data, header=False) does (the
 * stdlib's quopri.decodestring, which mime_fast.Part.get_payload calls), with the runs between '=' copied
 * by memchr/memcpy instead of one byte per step. out needs len bytes (the output is never longer).
 * Returns the output length. */
static int hexval(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int64_t lsm_qp_decode(const uint8_t *in, size_t len, uint8_t *out) {
    size_t i = 0, o = 0;
    while (i < len) {
        const uint8_t *eq = memchr(in + i, '=', len - i);
        size_t run = eq ? (size_t)(eq - in) - i : len - i;
        memcpy(out + o, in + i, run);
        o += run;
        i += run;
        if (!eq) break;
        i++; /* the '=' */
        if (i >= len) break; /* a trailing '=' is dropped */
        uint8_t c = in[i];
        if (c == '\n' || c == '\r') { /* soft line break: skip to after the next LF */
            if (c != '\n') {
                while (i < len && in[i] != '\n') i++;
            }
            if (i < len) i++;
        } else if (c == '=') { /* "==": one '=' (broken encoders) */
            out[o++] = '=';
            i++;
        } else if (i + 1 < len && hexval(c) >= 0 && hexval(in[i + 1]) >= 0) {
            out[o++] = (uint8_t)((hexval(c) << 4) | hexval(in[i + 1]));
            i += 2;
        } else {
            out[o++] = '=';
        }
    }
    return (int64_t)o;
}
