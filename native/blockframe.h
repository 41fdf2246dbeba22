/* blockframe.c: an SSTable's data blocks compressed, checksummed and laid out as stored, a run per call
 * (lsmmail/engine/block_frame.py holds the pure twin). */
#ifndef LSM_BLOCKFRAME_H
#define LSM_BLOCKFRAME_H

#include <stddef.h>
#include <stdint.h>

int lsm_frame_set_codecs(void *lz4_reset_stream, void *lz4_compress_fast_continue, void *xxh3_64bits,
                         int lz4_state_size);
int lsm_frame_ready(void);
uint64_t lsm_frame_bound(const uint64_t *ends, size_t n);
int64_t lsm_frame_blocks(const uint8_t *src, const uint64_t *ends, size_t n, int compress, uint8_t *dst,
                         size_t cap, uint64_t *stored);

#endif
