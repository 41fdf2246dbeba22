/* tokenize.c: the search tokenizer's word splitting (lsmmail/search/tokenizer.py has the pure twin). */
#ifndef LSM_TOKENIZE_H
#define LSM_TOKENIZE_H
#include <stddef.h>
#include <stdint.h>

int64_t lsm_tokenize(const uint8_t *in, size_t len, const uint8_t *bmp_alnum, uint32_t max_tok_bytes,
                     uint8_t *out, size_t *out_len);

int64_t lsm_nonascii_lines(const uint8_t *in, size_t len, size_t gap, uint64_t *spans, size_t max_spans);

#endif
