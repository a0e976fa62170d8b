/* Custos: X.509 attestation — certificates as enrollments carry them and as
 * devices present them, and chain verification against enrollment anchors. */
#ifndef CUSTOS_X509_H
#define CUSTOS_X509_H

#include <custos/rc.h>

#include <openssl/x509.h>
#include <stddef.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Most certificates a device may present (leaf + intermediates). */
#define CU_X509_MAX_CHAIN 10
/* Largest PEM bundle accepted from a device or a file. */
#define CU_X509_MAX_INPUT (64 * 1024)

/* Decodes one certificate given as PEM, base64 of PEM (the C service SDK) or
 * base64 of DER. *_out is a new reference to a certificate that may be
 * shared (decoded certificates are cached by the SHA-256 of their text):
 * never modify it. */
cu_rc cu_x509_decode(const char *text, size_t len, X509 **_out);
/* Drops the cached certificates (tests, shutdown). */
void cu_x509_cache_clear(void);
/* PEM text of cert (caller frees). */
char *cu_x509_to_pem(X509 *cert);
/* Lower-case hex SHA-256 of the DER (65 bytes) / SHA-1 upper hex as the public
 * service shows thumbprints (41 bytes). */
cu_rc cu_x509_sha256_hex(X509 *cert, char out[65]);
cu_rc cu_x509_sha1_hex_upper(X509 *cert, char out[41]);
/* Lower-case hex SHA-256 of the DER of the subject (or issuer) name: the key
 * by which anchors are looked up (exact, unlike OpenSSL's short name hash). */
cu_rc cu_x509_name_key(const X509_NAME *name, char out[65]);
/* The subject CN as UTF-8 (caller frees); CU_E_INVALID_ARG if none or several. */
cu_rc cu_x509_subject_cn(X509 *cert, char **_cn);
/* One-line subject / issuer in RFC 2253 form (caller frees). */
char *cu_x509_name_str(const X509_NAME *name);

/* What a device presented: leaf first, then intermediates in any order. */
typedef struct cu_x509_chain cu_x509_chain;

/* Parses a PEM bundle, leaf first; rejects anything that is not a
 * CERTIFICATE block, more than CU_X509_MAX_CHAIN certificates, or more than
 * CU_X509_MAX_INPUT bytes. */
cu_rc cu_x509_chain_from_pem(const char *pem, size_t len, cu_x509_chain **_out);
/* From what TLS handed over (references are taken; extra may be NULL). */
cu_rc cu_x509_chain_from_certs(X509 *leaf, STACK_OF(X509) *extra, cu_x509_chain **_out);
void cu_x509_chain_free(cu_x509_chain *chain);
X509 *cu_x509_chain_get0_leaf(const cu_x509_chain *chain);
/* The intermediates the device sent (borrowed). */
STACK_OF(X509) *cu_x509_chain_get0_extra(const cu_x509_chain *chain);

/* Verifies the chain against anchors (trusted certificates: group signing
 * certificates and verified CAs), at time now (0: current time), as a CA
 * would: signatures, validity periods, basic constraints (CA:TRUE on every
 * issuer, path length), key usage (keyCertSign on issuers), the TLS client
 * purpose on the leaf. An anchor need not be self-signed (a group on an
 * intermediate). On success *_path is the verified path leaf..anchor (caller
 * frees with OSSL_STACK_OF_X509_free / sk_X509_pop_free).
 * @retval CU_OK, CU_E_VERIFY (reason written), CU_E_NOMEM, CU_E_CRYPTO */
cu_rc cu_x509_verify(const cu_x509_chain *chain, STACK_OF(X509) *anchors, time_t now,
                     STACK_OF(X509) **_path, char *reason, size_t reason_len);

/* Checks only the leaf's validity period (for individual enrollments, where
 * the enrolled certificate itself is the anchor). */
cu_rc cu_x509_check_time(X509 *cert, time_t now, char *reason, size_t reason_len);

#ifdef __cplusplus
}
#endif
#endif
