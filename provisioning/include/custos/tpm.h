/* Custos: the service side of TPM 2.0 attestation (PROTOCOL.md §3).
 *
 * The device sends its endorsement key (EK) and storage root key (SRK) as
 * base64 TPM2B_PUBLIC. The service answers 401 with an "authenticationKey":
 * a fresh 32-byte HMAC key K wrapped so that only that TPM can load it —
 * duplicated to the SRK with an inner AES-128 key W, and W itself sealed to
 * the EK with MakeCredential bound to the SRK's name — computed here in
 * software with OpenSSL. The device then signs a SAS token with K inside its
 * TPM; the service verifies it with K (cu_sas_verify). */
#ifndef CUSTOS_TPM_H
#define CUSTOS_TPM_H

#include <custos/rc.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A TPM's RSA public key (EK or SRK) as the device sent it. */
typedef struct cu_tpm_pub cu_tpm_pub;

/* Decodes a base64 TPM2B_PUBLIC (RSA-2048, SHA-256 name, AES-128-CFB
 * symmetric as both templates have). Anything else is refused with a reason. */
cu_rc cu_tpm_pub_decode(const char *b64, cu_tpm_pub **_out);
/* The same from raw TPM2B_PUBLIC bytes (size prefix included). */
cu_rc cu_tpm_pub_decode_raw(const uint8_t *buf, size_t len, cu_tpm_pub **_out);
void cu_tpm_pub_free(cu_tpm_pub *pub);
/* The object's Name: nameAlg (0x000B) || SHA-256(TPMT_PUBLIC). */
void cu_tpm_pub_name(const cu_tpm_pub *pub, uint8_t out[34]);
/* True if both are the same RSA key (modulus and exponent): an enrollment
 * matches a device by its EK key, not by the exact bytes. */
int cu_tpm_pub_same_key(const cu_tpm_pub *a, const cu_tpm_pub *b);

/* The default registration id of a TPM device: lower-case base32 (RFC
 * 4648, no padding) of SHA-256 of the EK's TPM2B_PUBLIC bytes (52 chars;
 * caller frees). */
cu_rc cu_tpm_registration_id(const char *ek_b64, char **_id);

/* The six fields of the activation blob, each TPM2B-marshalled. */
typedef struct cu_tpm_activation {
    uint8_t *cred_blob;     size_t cred_blob_len;     /* TPM2B_ID_OBJECT */
    uint8_t *enc_secret;    size_t enc_secret_len;    /* TPM2B_ENCRYPTED_SECRET to the EK */
    uint8_t *dup_private;   size_t dup_private_len;   /* TPM2B_PRIVATE: K duplicated to the SRK */
    uint8_t *in_sym_seed;   size_t in_sym_seed_len;   /* TPM2B_ENCRYPTED_SECRET to the SRK */
    uint8_t *id_public;     size_t id_public_len;     /* TPM2B_PUBLIC of K (KEYEDHASH, HMAC-SHA256) */
    uint8_t *enc_uri;       size_t enc_uri_len;       /* TPM2B_DATA, empty */
    uint8_t key[32];        /* K, to verify the device's SAS (keep it wrapped) */
    uint8_t wrap_key[16];   /* W, the credential (tests only; wiped on clear) */
} cu_tpm_activation;

/* Makes a fresh activation for the device's EK and SRK. */
cu_rc cu_tpm_activation_make(const cu_tpm_pub *ek, const cu_tpm_pub *srk, cu_tpm_activation *_act);
/* The "authenticationKey" value: base64 of the six fields in order (caller
 * frees). */
char *cu_tpm_activation_blob(const cu_tpm_activation *act);
void cu_tpm_activation_clear(cu_tpm_activation *act);

/* KDFa of TPM 2.0 Part 1 (SP 800-108 counter mode, HMAC-SHA256). */
cu_rc cu_tpm_kdfa(const uint8_t *key, size_t key_len, const char *label, const uint8_t *ctx_u,
                  size_t u_len, const uint8_t *ctx_v, size_t v_len, uint8_t *out, size_t bits);

#ifdef __cplusplus
}
#endif
#endif
