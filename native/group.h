/* group.c: grouping of a search field's token stream (lsmmail/search/_group.py has the pure twin). */
#ifndef LSM_GROUP_H
#define LSM_GROUP_H
#include <stddef.h>
#include <stdint.h>

int64_t lsm_group_tokens(const uint8_t *buf, size_t len, size_t ntok, uint32_t *scratch, uint32_t *table,
                         size_t table_size, uint32_t *offsets, uint8_t *enc_out, uint8_t *terms_out,
                         size_t *terms_len);

#endif
