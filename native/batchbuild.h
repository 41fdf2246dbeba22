/* batchbuild.c: encoding many PUT entries of a write batch in one call (pure twin:
 * lsmmail/engine/batch.py `_pack_puts_pure`, used by WriteBatch.put_packed). */
#ifndef LSM_BATCHBUILD_H
#define LSM_BATCHBUILD_H
#include <stddef.h>
#include <stdint.h>

int64_t lsm_batch_pack_puts(size_t n, const uint8_t *keys, size_t keys_len, const uint64_t *key_end,
                            const uint8_t *vals, size_t vals_len, const uint64_t *val_end, uint8_t *out,
                            size_t out_cap);

#endif
