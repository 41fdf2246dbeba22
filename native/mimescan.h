/* mimescan.c: the MIME structure of a message in one call (lsmmail/mail/mime_fast.py has the pure twin). */
#ifndef LSM_MIMESCAN_H
#define LSM_MIMESCAN_H
#include <stddef.h>
#include <stdint.h>

int32_t lsm_mimescan(const uint8_t *raw, size_t len, int32_t *parts, int32_t max_parts, int32_t *fields,
                     int32_t max_fields, int32_t *nfields);
int64_t lsm_b64_lines(const uint8_t *in, size_t len, uint8_t *out, size_t cap);
int64_t lsm_qp_decode(const uint8_t *in, size_t len, uint8_t *out);

#endif
