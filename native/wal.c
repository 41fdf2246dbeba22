/* Log framing (docs/format.md "Log format"): cut records into fragments that never cross a 32 KiB block,
 * pad a block tail shorter than a header with zeros. Checksums are left as zero: the checksummed bytes
 * (type byte then payload) are contiguous in the output, so Python fills each one with one xxhash call
 * over a memoryview slice, and no third-party hash code lives here. */
#include <string.h>

#include "lsm_native.h"

#define BLOCK 32768
#define HEADER 7

int64_t lsm_wal_frame(const uint8_t *payloads, const uint64_t *payload_end, size_t nrec,
                      uint64_t block_offset, uint8_t *out, size_t cap, uint64_t *frag_start,
                      size_t max_frags, uint64_t *nfrags) {
    /* Record r is payloads[payload_end[r-1]:payload_end[r]]. block_offset is where the log's last
     * block currently ends (file size mod 32768). frag_start[] receives each fragment header's offset in
     * out[]; the new block offset is (block_offset + returned size) mod 32768. */
    if (block_offset >= BLOCK) return LSM_EINVAL;
    size_t pos = 0, nf = 0, start = 0;
    for (size_t r = 0; r < nrec; r++) {
        if (payload_end[r] < start) return LSM_EINVAL;
        size_t left = (size_t)payload_end[r] - start;
        const uint8_t *p = payloads + start;
        int begin = 1;
        do {
            size_t leftover = BLOCK - (size_t)block_offset;
            if (leftover < HEADER) {
                if (cap - pos < leftover) return LSM_ESPACE;
                memset(out + pos, 0, leftover);
                pos += leftover;
                block_offset = 0;
            }
            size_t avail = BLOCK - (size_t)block_offset - HEADER;
            size_t frag = left < avail ? left : avail;
            int end = frag == left;
            uint8_t type = begin && end ? 1 : begin ? 2 : end ? 4 : 3;
            if (cap - pos < HEADER || cap - pos - HEADER < frag || nf >= max_frags) return LSM_ESPACE;
            memset(out + pos, 0, 4);
            out[pos + 4] = (uint8_t)frag;
            out[pos + 5] = (uint8_t)(frag >> 8);
            out[pos + 6] = type;
            memcpy(out + pos + HEADER, p, frag);
            frag_start[nf++] = pos;
            pos += HEADER + frag;
            block_offset += HEADER + frag;
            p += frag;
            left -= frag;
            begin = 0;
        } while (left > 0);
        start = (size_t)payload_end[r];
    }
    *nfrags = nf;
    return (int64_t)pos;
}
