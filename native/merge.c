/* Merge of k sorted runs of versions (compaction inputs, the sources of a scan) into one order.
 * A version is (user key, sequence); runs are in internal order: user key ascending, sequence descending.
 * The result is a permutation of indices, so values never cross into C: Python reorders whatever it holds
 * per version. Equal (user key, sequence) pairs come out in run order, so list the newest run first. */
#include <stdlib.h>
#include <string.h>

#include "lsm_bytes.h"
#include "lsm_native.h"

typedef struct {
    const uint8_t *keys;
    const uint64_t *key_end;
    const uint64_t *seqs;
} keyset;

static inline int less(const keyset *ks, uint64_t a, uint32_t ra, uint64_t b, uint32_t rb) {
    uint64_t as = a ? ks->key_end[a - 1] : 0, bs = b ? ks->key_end[b - 1] : 0;
    size_t la = (size_t)(ks->key_end[a] - as), lb = (size_t)(ks->key_end[b] - bs);
    int c = lsm_key_cmp(ks->keys + as, la, ks->keys + bs, lb);
    if (c) return c < 0;
    if (ks->seqs[a] != ks->seqs[b]) return ks->seqs[a] > ks->seqs[b];
    return ra < rb;
}

typedef struct {
    uint64_t cur, end;
    uint32_t run;
} cursor;

static void sift_down(const keyset *ks, cursor *h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && less(ks, h[l].cur, h[l].run, h[m].cur, h[m].run)) m = l;
        if (r < n && less(ks, h[r].cur, h[r].run, h[m].cur, h[m].run)) m = r;
        if (m == i) return;
        cursor t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

int64_t lsm_merge_runs(const uint8_t *keys, const uint64_t *key_end, const uint64_t *seqs,
                       const uint64_t *run_end, size_t k, uint64_t *order, uint8_t *new_user_key) {
    /* Run j holds versions [run_end[j-1], run_end[j]); version i is user key keys[key_end[i-1]:key_end[i]]
     * at sequence seqs[i]. order[] and new_user_key[] receive run_end[k-1] items: new_user_key[j] is 1
     * where order[j]'s user key differs from the one before it (where compaction's per-user-key decisions
     * restart). Decreasing offsets are LSM_EINVAL: Python built these arrays. */
    uint64_t n = k ? run_end[k - 1] : 0, prev = 0;
    for (size_t j = 0; j < k; j++) {
        if (run_end[j] < prev) return LSM_EINVAL;
        prev = run_end[j];
    }
    prev = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (key_end[i] < prev) return LSM_EINVAL;
        prev = key_end[i];
    }
    cursor *h = malloc((k ? k : 1) * sizeof(cursor));
    if (!h) return LSM_ESPACE;
    keyset ks = {keys, key_end, seqs};
    size_t hn = 0;
    for (size_t j = 0; j < k; j++) {
        uint64_t s = j ? run_end[j - 1] : 0;
        if (s < run_end[j]) h[hn++] = (cursor){s, run_end[j], (uint32_t)j};
    }
    for (size_t i = hn / 2; i-- > 0;) sift_down(&ks, h, hn, i);
    uint64_t out = 0, last = 0;
    while (hn) {
        uint64_t i = h[0].cur;
        order[out] = i;
        if (out == 0) {
            new_user_key[out] = 1;
        } else {
            uint64_t as = last ? key_end[last - 1] : 0, bs = i ? key_end[i - 1] : 0;
            uint64_t ua = key_end[last] - as, ub = key_end[i] - bs;
            new_user_key[out] = (uint8_t)(ua != ub || memcmp(keys + as, keys + bs, (size_t)ua) != 0);
        }
        last = i;
        out++;
        if (++h[0].cur == h[0].end) h[0] = h[--hn];
        if (hn) sift_down(&ks, h, hn, 0);
    }
    free(h);
    return (int64_t)out;
}
