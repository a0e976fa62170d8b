/* Custos: the device client — registers one device with custosd (or any
 * service that speaks the public device provisioning REST API) by X.509
 * (TLS client certificate), symmetric key (SAS token) or TPM 2.0, then polls the
 * operation until it is final. Keys come from files or from tokens through
 * the Custos OpenSSL provider (pkcs11: URIs); a token-held key never leaves
 * the token. */
#ifndef CUSTOS_DEVICE_H
#define CUSTOS_DEVICE_H

#include <custos/rc.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cu_dev_config {
    const char *host;            /* HOST or HOST:PORT (port 443 when absent) */
    const char *id_scope;
    const char *ca_file;         /* CA certificate(s) that issued the server's certificate */
    const char *registration_id; /* X.509: the leaf's CN when NULL */
    /* X.509 */
    const char *cert_file;       /* PEM: leaf first, then the intermediates to send */
    const char *key;             /* PEM file or pkcs11: URI */
    /* symmetric key: exactly one of these */
    const char *symkey_uri;      /* pkcs11: URI of an HMAC key in a token */
    const char *key_file;        /* a file holding the base64 key */
    bool group;                  /* the key is a group key: derive the device key */
    /* TPM 2.0 (PROTOCOL.md §3): send the TPM's EK and SRK, activate the 401
     * challenge and sign the SAS inside the TPM, import the final answer's
     * second blob (the hub key). The registration id defaults to the EK's
     * (base32 of its SHA-256). */
    bool tpm;
    const char *tpm_tcti;        /* NULL: $CUSTOS_TPM_TCTI, else tpm2-tss's default */
    uint32_t tpm_srk_handle;     /* 0: 0x81000001, the SDKs' SRK handle (docs/tpm.md) */
    bool tpm_ek_ecc;             /* an ECC P-256 EK instead of RSA-2048 (a Custos extension) */
    const char *payload_json;    /* sent as "payload", or NULL */
    const char *api_version;     /* NULL: 2021-06-01 (the C SDK's) */
    const char *provider_path;   /* where custos.so lives; NULL: OPENSSL_MODULES or default */
    unsigned timeout;            /* seconds for the whole registration; 0: 120 */
    bool no_wait;                /* poll at once instead of honouring Retry-After (benchmarks) */
} cu_dev_config;

typedef enum cu_dev_outcome {
    CU_DEV_ASSIGNED = 0, /* status assigned: hub and device id known */
    CU_DEV_REFUSED,      /* the service said no (401/403/404, disabled) */
    CU_DEV_FAILED,       /* status failed (e.g. no hub to assign) */
    CU_DEV_ERROR,        /* transport, TLS, protocol or local error */
} cu_dev_outcome;

typedef struct cu_dev_result {
    cu_dev_outcome outcome;
    int http_status;        /* of the last response */
    char registration_id[129];
    char status[32];
    char assigned_hub[256];
    char device_id[129];
    char substatus[40];
    char operation_id[128];
    int error_code;
    char message[512];      /* the service's message, or what went wrong locally */
    char *response_json;    /* the last response body (heap) or NULL */
    unsigned polls;
} cu_dev_result;

/* Registers and polls. CU_OK means a final answer was obtained (see
 * outcome); an error return means none was (outcome CU_DEV_ERROR, message
 * set). */
cu_rc cu_dev_register(const cu_dev_config *cfg, cu_dev_result *_res);
void cu_dev_result_clear(cu_dev_result *res);
const char *cu_dev_outcome_str(cu_dev_outcome o);

/* A SAS token for regid signed with the HMAC key named by uri (through the
 * provider) or with raw key bytes; group derives the device key first.
 * Caller frees *_token. */
cu_rc cu_dev_sas_token(const cu_dev_config *cfg, const char *regid, uint64_t expiry, char **_token);

#ifdef __cplusplus
}
#endif
#endif
