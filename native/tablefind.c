/* The in-table part of a point lookup before any block is read (lsmmail/native.py table_find_pure is the
 * twin): the bloom probe on the key's precomputed XXH3-64, then the binary search of the index block's
 * user keys, in one call instead of a bloom call plus a Python bisect over a list of bytes. */
#include <string.h>

#include "lsm_bytes.h"
#include "lsm_native.h"
#include "tablefind.h"

static inline int cmp_key(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    return lsm_key_cmp(a, alen, b, blen);
}

int64_t lsm_table_find(const uint8_t *filter, size_t flen, uint64_t h, const uint8_t *ikeys,
                       const uint64_t *ikey_end, const uint64_t *iseqs, size_t n, const uint8_t *ukey,
                       size_t ulen, uint64_t snap) {
    /* -1: the filter rules the key out. Otherwise the first data block that may hold (ukey, <= snap):
     * the first index entry whose user key is >= ukey, skipping entries that end with ukey at a sequence
     * above snap (such a block holds only versions too new); n if none. Index key i is
     * ikeys[ikey_end[i-1] : ikey_end[i]] (ikey_end[-1] = 0), ascending (the reader checked it). */
    if (!lsm_bloom_may_contain(filter, flen, h)) return -1;
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        size_t s = mid ? (size_t)ikey_end[mid - 1] : 0;
        if (cmp_key(ikeys + s, (size_t)ikey_end[mid] - s, ukey, ulen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    while (lo < n) {
        size_t s = lo ? (size_t)ikey_end[lo - 1] : 0;
        if (cmp_key(ikeys + s, (size_t)ikey_end[lo] - s, ukey, ulen) != 0 || iseqs[lo] <= snap) break;
        lo++;
    }
    return (int64_t)lo;
}
