/* lsmmail native kernels: the per-key loops of the engine, batch-shaped so one call from Python
 * (one cffi crossing, ~0.2 us) pays for many keys. Every function is pure C over caller-owned buffers:
 * no Python objects, no allocation that outlives the call, so cffi releases the GIL around each call.
 *
 * Return conventions: a count or size >= 0 on success, LSM_ECORRUPT when the input bytes are malformed
 * (the Python side raises Corruption), LSM_ESPACE when an output buffer is too small (the Python side
 * grows it and retries), LSM_EINVAL for arguments the caller should never pass.
 * Every length read from input bytes is checked against the buffer before use.
 */
#ifndef LSM_NATIVE_H
#define LSM_NATIVE_H

#include <stddef.h>
#include <stdint.h>

#define LSM_ECORRUPT (-1)
#define LSM_ESPACE (-2)
#define LSM_EINVAL (-3)

/* varint.c */
int64_t lsm_varint_encode(const uint64_t *vals, size_t n, uint8_t *out, size_t cap);
int64_t lsm_varint_decode(const uint8_t *buf, size_t len, uint64_t *out, size_t max_n, size_t *consumed);

/* bloom.c */
void lsm_bloom_build(const uint64_t *hashes, size_t n, uint8_t *bits, size_t nbytes, uint32_t k);
void lsm_bloom_probe(const uint8_t *filter, size_t len, const uint64_t *hashes, size_t n, uint8_t *out);
int lsm_bloom_may_contain(const uint8_t *filter, size_t len, uint64_t h);

/* block.c */
int64_t lsm_block_decode(const uint8_t *blk, size_t len, uint8_t *keybuf, size_t keycap, uint64_t *key_end,
                         uint64_t *val_off, uint64_t *val_len, size_t max_n, uint64_t *need);
int64_t lsm_block_decode_data(const uint8_t *blk, size_t len, uint8_t *keybuf, size_t keycap,
                              uint64_t *key_end, uint64_t *seq, uint8_t *kind, uint64_t *val_off,
                              uint64_t *val_len, size_t max_n, uint64_t *need);
int64_t lsm_block_seek(const uint8_t *blk, size_t len, const uint8_t *target, size_t tlen, int internal,
                       uint8_t *keyout, size_t keycap, uint64_t *found);
int64_t lsm_block_encode(const uint8_t *keys, const uint64_t *key_end, const uint8_t *vals,
                         const uint64_t *val_end, size_t n, uint32_t restart_interval, uint8_t *out,
                         size_t cap);

/* merge.c */
int64_t lsm_merge_runs(const uint8_t *keys, const uint64_t *key_end, const uint64_t *seqs,
                       const uint64_t *run_end, size_t k, uint64_t *order, uint8_t *new_user_key);
int lsm_compare_internal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);

/* wal.c */
int64_t lsm_wal_frame(const uint8_t *payloads, const uint64_t *payload_end, size_t nrec,
                      uint64_t block_offset, uint8_t *out, size_t cap, uint64_t *frag_start,
                      size_t max_frags, uint64_t *nfrags);

#endif
