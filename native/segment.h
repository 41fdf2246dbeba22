/* segment.c: building one user's flushed search segment from its memory segment (pure twin:
 * lsmmail/search/_segment_build.py). */
#ifndef LSM_SEGMENT_H
#define LSM_SEGMENT_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *keys;     /* the engine keys, concatenated */
    uint64_t *key_end; /* key i is keys[key_end[i-1] .. key_end[i]) */
    uint8_t *vals;     /* the posting blocks, concatenated */
    uint64_t *val_end;
    size_t nkeys;
} lsm_segment_result;

int64_t lsm_segment_build(size_t n, const uint32_t *ords, const uint8_t *fields, const uint8_t *tok_buf,
                          size_t tok_len, const uint64_t *tok_end, const uint32_t *ntok,
                          const uint8_t *spec_buf, size_t spec_len, const uint64_t *spec_end,
                          const uint32_t *nspec, const uint8_t *text_mask, uint8_t any_code,
                          const uint8_t *key_prefix, size_t prefix_len, const uint8_t *key_suffix,
                          size_t suffix_len, lsm_segment_result *res);
void lsm_segment_free(lsm_segment_result *res);

/* lsm_segment_build over forward records (search/postings.py, format 2) instead of entry arrays: record k
 * is buf[rec_end[k-1] .. rec_end[k]) (the whole buf, no gaps) and belongs to the doc of ordinal ords[k];
 * its fields become the entries. Same output; LSM_EINVAL also for a record that is not well-formed
 * format 2 (format byte, varints, lengths, trailing bytes). UTF-8 is not checked (the caller validated the
 * records when it read them: postings.decode_forward_raw). */
int64_t lsm_segment_build_fwd(size_t nrec, const uint32_t *ords, const uint8_t *buf, size_t buf_len,
                              const uint64_t *rec_end, const uint8_t *text_mask, uint8_t any_code,
                              const uint8_t *key_prefix, size_t prefix_len, const uint8_t *key_suffix,
                              size_t suffix_len, lsm_segment_result *res);

#endif
