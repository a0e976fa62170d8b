/* Custos: shared access signature (SAS) tokens of symmetric-key and TPM
 * attestation (PROTOCOL.md §2).
 *
 *   SharedAccessSignature sr=<scope>%2fregistrations%2f<id>&sig=<b64>&se=<unix>&skn=registration
 *
 * The parser accepts the pairs in any order and every escaping the device
 * SDKs produce; the verifier MACs `sr` exactly as received, compares in
 * constant time and says why on every refusal. */
#ifndef CUSTOS_SAS_H
#define CUSTOS_SAS_H

#include <custos/rc.h>

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest token accepted, in bytes. */
#define CU_SAS_MAX_LEN 4096

typedef struct cu_sas cu_sas;

/* Parses an Authorization header value. Rejects: a scheme other than
 * "SharedAccessSignature", unknown or duplicate keys, missing sr/sig/se, bad
 * percent-escapes, a non-decimal se. On error the reason is in cu_err_last().
 * @retval CU_OK, CU_E_INVALID_ARG (malformed), CU_E_NOMEM */
cu_rc cu_sas_parse(const char *token, size_t len, cu_sas **_out);
void cu_sas_free(cu_sas *sas);

/* Borrowed views. sr is as received; sr_decoded is percent-decoded. skn is
 * NULL when absent. */
const char *cu_sas_get0_sr(const cu_sas *sas);
const char *cu_sas_get0_sr_decoded(const cu_sas *sas);
const char *cu_sas_get0_skn(const cu_sas *sas);
uint64_t cu_sas_get_expiry(const cu_sas *sas);

/* What the token must prove. */
typedef struct cu_sas_check {
    const char *id_scope;        /* required */
    const char *registration_id; /* required; compared case-insensitively */
    const char *key_name;        /* expected skn when present ("registration"); NULL: any */
    time_t now;                  /* 0: the current time */
    unsigned skew;               /* seconds of clock skew tolerated on expiry */
} cu_sas_check;

/* One candidate key (raw bytes), e.g. "primary" or "secondary". */
typedef struct cu_sas_key {
    const uint8_t *key;
    size_t len;
    const char *label;
} cu_sas_key;

/* Verifies the token against each candidate key. *_matched (if not NULL) is
 * the index of the key whose MAC verified — set even when the token is then
 * refused for expiry or scope — or (size_t)-1 when none did. On refusal returns
 * CU_E_VERIFY and writes the reason into reason (if not NULL).
 * @retval CU_OK, CU_E_VERIFY, CU_E_INVALID_ARG, CU_E_CRYPTO */
cu_rc cu_sas_verify(const cu_sas *sas, const cu_sas_check *chk, const cu_sas_key *keys,
                    size_t nkeys, size_t *_matched, char *reason, size_t reason_len);

/* Decodes a base64 symmetric key and checks the 16..64 byte rule.
 * *_key is freed with cu_sas_key_free. */
cu_rc cu_sas_key_decode(const char *b64, uint8_t **_key, size_t *_len);
void cu_sas_key_free(uint8_t *key, size_t len);

/* Group-derived device key: HMAC-SHA256(group key, registration id as given). */
cu_rc cu_sas_derive_key(const uint8_t *group_key, size_t len, const char *registration_id,
                        uint8_t out[32]);
/* The same on base64 input and output (caller frees *_out with free()). */
cu_rc cu_sas_derive_key_b64(const char *group_key_b64, const char *registration_id, char **_out);

/* Makes a token the way the C SDK does (sr and sig percent-encoded with
 * lower-case hex), for tests and the device client. Caller frees *_token. */
cu_rc cu_sas_sign(const uint8_t *key, size_t len, const char *id_scope,
                  const char *registration_id, uint64_t expiry, const char *key_name,
                  char **_token);

#ifdef __cplusplus
}
#endif
#endif
