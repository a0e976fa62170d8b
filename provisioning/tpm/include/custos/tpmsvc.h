/* Custos: TPM 2.0 attestation, service side (PROTOCOL.md §3).
 *
 * Everything here is software (OpenSSL): no TPM is needed on the service.
 *   - parse and check the marshalled TPM2B_PUBLIC of an endorsement key (EK)
 *     and a storage root key (SRK) as the device sends them (base64 in JSON);
 *   - the TPM Name of an object, the default registration id of an EK, the
 *     enrollment match of two EKs by their public key (not by bytes);
 *   - the `authenticationKey` blob of the 401 challenge and of the final
 *     assignment: an HMAC key duplicated to the SRK with an inner AES wrapper
 *     whose key is a credential made to the EK (MakeCredential), so that only
 *     the TPM holding that EK, with that SRK, can import it;
 *   - optional: an EK certificate checked against TPM manufacturer roots.
 *
 * Supported keys: RSA-2048 EKs and SRKs (the public protocol), and, as an
 * extension, ECC NIST P-256 / P-384 EKs and SRKs (docs/tpm.md).
 *
 * Errors: every function returns a cu_rc and records the reason with
 * cu_err_set (read it with cu_err_last()). Parsers reject anything they do
 * not understand: CU_E_INVALID_ARG with the offset and the field.
 * Threads: no global state; any function may run on any thread (a
 * cu_tpmsvc_pub is read-only after parsing and may be shared). */
#ifndef CUSTOS_TPMSVC_H
#define CUSTOS_TPMSVC_H

#include <custos/rc.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* TPM_ALG_ID values used here (TPM 2.0 Part 2, Table 9). */
#define CU_TPM_ALG_RSA 0x0001u
#define CU_TPM_ALG_SHA1 0x0004u
#define CU_TPM_ALG_HMAC 0x0005u
#define CU_TPM_ALG_AES 0x0006u
#define CU_TPM_ALG_KEYEDHASH 0x0008u
#define CU_TPM_ALG_SHA256 0x000Bu
#define CU_TPM_ALG_SHA384 0x000Cu
#define CU_TPM_ALG_SHA512 0x000Du
#define CU_TPM_ALG_NULL 0x0010u
#define CU_TPM_ALG_ECC 0x0023u
#define CU_TPM_ALG_SYMCIPHER 0x0025u
#define CU_TPM_ALG_CFB 0x0043u
/* TPM_ECC_CURVE */
#define CU_TPM_ECC_NIST_P256 0x0003u
#define CU_TPM_ECC_NIST_P384 0x0004u

/* TPMA_OBJECT bits. */
#define CU_TPMA_FIXED_TPM 0x00000002u
#define CU_TPMA_ST_CLEAR 0x00000004u
#define CU_TPMA_FIXED_PARENT 0x00000010u
#define CU_TPMA_SENSITIVE_DATA_ORIGIN 0x00000020u
#define CU_TPMA_USER_WITH_AUTH 0x00000040u
#define CU_TPMA_ADMIN_WITH_POLICY 0x00000080u
#define CU_TPMA_NO_DA 0x00000400u
#define CU_TPMA_ENCRYPTED_DUPLICATION 0x00000800u
#define CU_TPMA_RESTRICTED 0x00010000u
#define CU_TPMA_DECRYPT 0x00020000u
#define CU_TPMA_SIGN 0x00040000u

/* Largest TPM2B_PUBLIC accepted (the TPM's own limit, sizeof TPMT_PUBLIC). */
#define CU_TPM_PUB_MAX 1024
/* A Name: 2-byte nameAlg + digest (SHA-512 at most). */
#define CU_TPM_NAME_MAX 66
/* The identity key the service issues (HMAC-SHA256 key). */
#define CU_TPM_ID_KEY_LEN 32
/* Longest HMAC-SHA256 key a TPM imports: the hash's block size (swtpm
 * answers TPM_RC_KEY_SIZE for 65 bytes). DPS keys are 32 or 64 bytes. */
#define CU_TPM_KEY_MAX 64
/* The default registration id: 52 characters of base32 + NUL. */
#define CU_TPM_REGID_LEN 52

struct cu_keyring; /* custos/keyring.h */

/* A parsed TPM2B_PUBLIC (opaque). */
typedef struct cu_tpmsvc_pub cu_tpmsvc_pub;

/* Parses a marshalled TPM2B_PUBLIC (2-byte big-endian size + TPMT_PUBLIC).
 * Object types RSA, ECC, KEYEDHASH and SYMCIPHER are understood; trailing
 * bytes, a size that does not match, unknown algorithms or schemes are
 * refused. Nothing is checked beyond the structure (see cu_tpmsvc_pub_check).
 * @retval CU_OK, CU_E_INVALID_ARG (malformed), CU_E_NOMEM */
cu_rc cu_tpmsvc_pub_parse(const uint8_t *buf, size_t len, cu_tpmsvc_pub **_out);
/* The same on the base64 form the device API and enrollments use. */
cu_rc cu_tpmsvc_pub_parse_b64(const char *b64, cu_tpmsvc_pub **_out);
void cu_tpmsvc_pub_free(cu_tpmsvc_pub *pub);

/* Fields (TPM_ALG_ID / TPMA_OBJECT values as above). */
uint16_t cu_tpmsvc_pub_type(const cu_tpmsvc_pub *pub);
uint16_t cu_tpmsvc_pub_name_alg(const cu_tpmsvc_pub *pub);
uint32_t cu_tpmsvc_pub_attributes(const cu_tpmsvc_pub *pub);
/* RSA modulus bits or ECC field bits (256/384); 0 for other types. */
unsigned cu_tpmsvc_pub_key_bits(const cu_tpmsvc_pub *pub);
/* The marshalled TPM2B_PUBLIC, size prefix included (borrowed). */
const uint8_t *cu_tpmsvc_pub_get0_raw(const cu_tpmsvc_pub *pub, size_t *_len);

/* The object's Name: nameAlg (2 bytes) || H_nameAlg(TPMT_PUBLIC).
 * name must hold CU_TPM_NAME_MAX bytes. */
cu_rc cu_tpmsvc_pub_name(const cu_tpmsvc_pub *pub, uint8_t *name, size_t *_len);

/* What a key must be for its role in the challenge. */
typedef enum cu_tpmsvc_role {
    /* Endorsement key: RSA-2048 or ECC P-256/P-384, restricted decryption
     * key, not a signing key, fixedTPM|fixedParent, with an AES-CFB
     * symmetric definition and a SHA-256/384 nameAlg. The authPolicy is
     * not fixed (the TCG templates differ); the policy the device must
     * satisfy is its business. */
    CU_TPM_ROLE_EK = 1,
    /* Storage root key: the same algorithms, restricted decryption key,
     * fixedTPM|fixedParent (a parent the imported key can live under). */
    CU_TPM_ROLE_SRK,
} cu_tpmsvc_role;

/* Checks that pub can serve in role; the refusal says which rule failed.
 * @retval CU_OK, CU_E_INVALID_ARG, CU_E_KEY_TYPE (unsupported algorithm) */
cu_rc cu_tpmsvc_pub_check(const cu_tpmsvc_pub *pub, cu_tpmsvc_role role);

/* True when a and b carry the same public key (type, parameters that define
 * the key, modulus and exponent, or curve and point): the enrollment match.
 * Attributes, policy and the marshalling of an exponent of 0 vs 65537 do
 * not matter. */
bool cu_tpmsvc_pub_same_key(const cu_tpmsvc_pub *a, const cu_tpmsvc_pub *b);

/* Decodes both base64 TPM2B_PUBLIC values and compares them with
 * cu_tpmsvc_pub_same_key. *_match is false on any parse error (also returned). */
cu_rc cu_tpmsvc_ek_match(const char *enrolled_b64, const char *presented_b64, bool *_match);

/* The default registration id of a device (PROTOCOL.md §3.1): lower-case
 * RFC 4648 base32 of SHA-256(TPM2B_PUBLIC bytes of the EK, size prefix
 * included), padding stripped. out must hold CU_TPM_REGID_LEN + 1 bytes. */
cu_rc cu_tpmsvc_registration_id(const cu_tpmsvc_pub *ek, char *out);
cu_rc cu_tpmsvc_registration_id_raw(const uint8_t *ek_tpm2b, size_t len, char *out);

/* ---- randomness ---- */

/* Fills buf with len random bytes. The default is RAND_priv_bytes. Tests
 * inject a fixed stream to get known answers. */
typedef cu_rc (*cu_tpmsvc_rng_fn)(void *ctx, uint8_t *buf, size_t len);

typedef struct cu_tpmsvc_blob_opts {
    cu_tpmsvc_rng_fn rng; /* NULL: OpenSSL's RAND_priv_bytes */
    void *rng_ctx;
    /* Seed length for RSA secret sharing: 0 = the protector's digest size
     * (what the TPM reference code uses); 16 = the AES key size, as some
     * software implementations do. Both activate on a TPM. */
    size_t rsa_seed_len;
} cu_tpmsvc_blob_opts;

/* ---- building blocks (exported for tests and benchmarks) ---- */

/* KDFa (TPM 2.0 Part 1 §11.4.10.2): SP 800-108 counter mode with HMAC;
 * label without its NUL (the KDF adds it). bits must be a multiple of 8.
 * hash_alg: CU_TPM_ALG_SHA1/256/384/512. */
cu_rc cu_tpmsvc_kdfa(uint16_t hash_alg, const uint8_t *key, size_t key_len, const char *label,
                     const uint8_t *ctx_u, size_t ctx_u_len, const uint8_t *ctx_v, size_t ctx_v_len,
                     unsigned bits, uint8_t *out);

/* KDFe (TPM 2.0 Part 1 §11.4.10.3): SP 800-56A concatenation KDF over the
 * ECDH x-coordinate z; label without its NUL (the KDF adds it). */
cu_rc cu_tpmsvc_kdfe(uint16_t hash_alg, const uint8_t *z, size_t z_len, const char *label,
                     const uint8_t *party_u, size_t party_u_len, const uint8_t *party_v,
                     size_t party_v_len, unsigned bits, uint8_t *out);

/* Secret sharing with a TPM key ("IDENTITY" for a credential, "DUPLICATE"
 * for an import): a fresh seed and its encryption to `to` (RSA-OAEP with the
 * label + NUL, or ECDH with a fresh ephemeral key and KDFe). seed receives
 * the digest size of to's nameAlg (or opts->rsa_seed_len) bytes, *_seed_len
 * says how many; *_enc is the TPM2B_ENCRYPTED_SECRET, size prefix included
 * (caller frees). RNG draws: RSA: seed, then the OAEP seed (hLen);
 * ECC: the ephemeral private key (field size, redrawn while out of range). */
cu_rc cu_tpmsvc_share_secret(const cu_tpmsvc_pub *to, const char *label,
                             const cu_tpmsvc_blob_opts *opts, uint8_t *seed, size_t *_seed_len,
                             uint8_t **_enc, size_t *_enc_len);

/* TPM2_MakeCredential in software: a credential (1..64 bytes) that only the
 * TPM holding ek can recover with ActivateCredential, and only for the
 * object whose Name is `name`. *_id_object is the TPM2B_ID_OBJECT and
 * *_enc_secret the TPM2B_ENCRYPTED_SECRET, size prefixes included (caller
 * frees both). RNG draws: those of cu_tpmsvc_share_secret. */
cu_rc cu_tpmsvc_make_credential(const cu_tpmsvc_pub *ek, const uint8_t *name, size_t name_len,
                                const uint8_t *credential, size_t credential_len,
                                const cu_tpmsvc_blob_opts *opts, uint8_t **_id_object,
                                size_t *_id_object_len, uint8_t **_enc_secret,
                                size_t *_enc_secret_len);

/* ---- the authenticationKey blob (PROTOCOL.md §3.3/3.4) ---- */

/* The six size-prefixed fields of a blob, each a view into it (size prefix
 * included). */
typedef struct cu_tpmsvc_blob_fields {
    const uint8_t *id_object; /* 1 TPM2B_ID_OBJECT (credential to the EK) */
    size_t id_object_len;
    const uint8_t *enc_secret; /* 2 TPM2B_ENCRYPTED_SECRET (to the EK) */
    size_t enc_secret_len;
    const uint8_t *dup_private; /* 3 TPM2B_PRIVATE (the duplicated key) */
    size_t dup_private_len;
    const uint8_t *sym_seed; /* 4 TPM2B_ENCRYPTED_SECRET (to the SRK) */
    size_t sym_seed_len;
    const uint8_t *key_public; /* 5 TPM2B_PUBLIC (the HMAC key) */
    size_t key_public_len;
    const uint8_t *uri_data; /* 6 TPM2B_DATA (encUriData; empty here) */
    size_t uri_data_len;
} cu_tpmsvc_blob_fields;

/* Splits a blob into its fields; refuses missing, short or trailing bytes. */
cu_rc cu_tpmsvc_blob_split(const uint8_t *blob, size_t len, cu_tpmsvc_blob_fields *_fields);

/* Builds the blob that gives the HMAC-SHA256 key `key` (1..CU_TPM_KEY_MAX
 * bytes) to the TPM of (ek, srk): the key as a KEYEDHASH object
 * (sign|userWithAuth|noDA, empty auth and policy), duplicated to the SRK
 * with an AES-128-CFB inner wrapper whose key W is a credential made to the
 * EK, bound to the SRK's Name. ek and srk must pass cu_tpmsvc_pub_check.
 * RNG draws, in this order: the object's seedValue (32), W (16), the
 * credential's secret sharing to the EK, the duplication's secret sharing
 * to the SRK. *_blob: caller frees (free()). */
cu_rc cu_tpmsvc_blob_build(const cu_tpmsvc_pub *ek, const cu_tpmsvc_pub *srk, const uint8_t *key,
                           size_t key_len, const cu_tpmsvc_blob_opts *opts, uint8_t **_blob,
                           size_t *_blob_len);
/* The same, base64-encoded (the JSON value); caller frees. */
cu_rc cu_tpmsvc_blob_build_b64(const cu_tpmsvc_pub *ek, const cu_tpmsvc_pub *srk,
                               const uint8_t *key, size_t key_len, const cu_tpmsvc_blob_opts *opts,
                               char **_b64);

/* ---- what custosd calls ---- */

/* The 401 challenge of a first TPM registration: decodes and checks the EK
 * and SRK of the request, generates a fresh identity key (written to key,
 * CU_TPM_ID_KEY_LEN bytes: keep it, wrapped, to verify the device's SAS
 * token with cu_sas_verify, then cleanse it) and returns the base64
 * `authenticationKey` (caller frees). RNG draws: the key, then those of
 * cu_tpmsvc_blob_build. */
cu_rc cu_tpmsvc_challenge_new(const char *ek_b64, const char *srk_b64,
                              const cu_tpmsvc_blob_opts *opts, uint8_t key[CU_TPM_ID_KEY_LEN],
                              char **_blob_b64);

/* The pending challenge as custosd keeps it between the 401 and the second
 * PUT (and the polls that reuse the same SAS token): the identity key
 * wrapped (AES-256-GCM) by the service's keyring, whose key stays in the
 * service's token, bound to the id scope, the registration id (both
 * case-insensitive), the EK bytes the device presented and the expiry.
 * *_sealed is one self-contained string ("tpmc1:<expiry>:cw1:...", caller
 * frees) to store with the registration attempt. */
cu_rc cu_tpmsvc_challenge_seal(struct cu_keyring *kr, const char *id_scope,
                               const char *registration_id, const char *ek_b64, uint64_t expires,
                               const uint8_t key[CU_TPM_ID_KEY_LEN], char **_sealed);
/* Recovers the identity key for the second PUT. now = 0: the current time.
 * @retval CU_OK
 * @retval CU_E_VERIFY expired, or another scope / registration id / EK, or
 *                     altered (the reason is recorded)
 * @retval CU_E_INVALID_ARG not a sealed challenge */
cu_rc cu_tpmsvc_challenge_open(struct cu_keyring *kr, const char *id_scope,
                               const char *registration_id, const char *ek_b64, time_t now,
                               const char *sealed, uint8_t key[CU_TPM_ID_KEY_LEN]);

/* ---- extension: EK certificate ---- */

/* Verifies an EK certificate (DER or PEM) against the PEM roots in
 * roots_file (a bundle) and/or roots_dir (hashed directory) with optional
 * untrusted intermediates (PEM bundle, may be NULL), and checks that it
 * certifies ek's public key. Unknown critical extensions that TCG EK
 * certificates carry (subjectAltName with TPM manufacturer attributes,
 * subjectDirectoryAttributes) are accepted.
 * @retval CU_OK, CU_E_VERIFY (chain or key mismatch, reason recorded),
 *         CU_E_INVALID_ARG (unreadable certificate), CU_E_IO */
cu_rc cu_tpmsvc_ekcert_verify(const cu_tpmsvc_pub *ek, const uint8_t *cert, size_t cert_len,
                              const char *roots_file, const char *roots_dir,
                              const char *intermediates_file);

#ifdef __cplusplus
}
#endif
#endif
