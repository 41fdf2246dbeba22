/* block.c: point lookup in a raw data block, judged in place (lsmmail/native.py block_get_pure is the twin). */
#ifndef LSM_BLOCKGET_H
#define LSM_BLOCKGET_H
#include <stddef.h>
#include <stdint.h>

int64_t lsm_block_get(const uint8_t *blk, size_t len, const uint8_t *ukey, size_t ulen, uint64_t snap,
                      uint8_t *keybuf, size_t keycap, uint64_t *out);

#endif
