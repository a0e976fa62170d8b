/* Custos: the provisioning engine — attestation, precedence, allocation and
 * the registration record, with no network code of its own. custosd calls
 * cu_prov_register() for each device request; `custos enrollment explain`
 * calls cu_prov_explain() to show the same decision without writing. */
#ifndef CUSTOS_PROV_H
#define CUSTOS_PROV_H

#include <custos/rc.h>
#include <custos/record.h>
#include <custos/store.h>
#include <custos/x509.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Default tolerance for SAS expiry, seconds. */
#define CU_PROV_DEFAULT_SKEW 300
/* How long a TPM challenge (the 401's identity key) can be answered with a
 * SAS signed by it, seconds. A device answers within a second or so. */
#define CU_PROV_TPM_CHALLENGE_TTL 300

typedef struct cu_prov cu_prov;

typedef struct cu_prov_config {
    const char *id_scope;    /* the service's id scope (SAS sr check) */
    unsigned sas_skew;       /* seconds; CU_PROV_DEFAULT_SKEW if use_default_skew */
    bool use_default_skew;
    time_t now;              /* 0: the clock (tests set it) */
    long webhook_timeout_ms; /* custom allocation; 0: 5000 */
} cu_prov_config;

/* The store is borrowed and must outlive the engine. */
cu_rc cu_prov_new(cu_store *store, const cu_prov_config *cfg, cu_prov **_out);
void cu_prov_free(cu_prov *p);

/* What the device sent: a TLS client chain (X.509), an Authorization SAS
 * (symmetric key), or the TPM's keys (first without Authorization: a
 * challenge; then with the SAS signed by the activated key). */
typedef struct cu_prov_request {
    const char *registration_id;  /* from the URL */
    const char *authorization;    /* the SAS token (symmetric key) or NULL */
    const cu_x509_chain *chain;   /* the TLS client chain (X.509) or NULL */
    const char *payload_json;     /* the device's payload, or NULL */
    const char *tpm_ek;           /* TPM: body tpm.endorsementKey (base64 TPM2B_PUBLIC) */
    const char *tpm_srk;          /* TPM: body tpm.storageRootKey */
} cu_prov_request;

/* One entry considered, in precedence order. */
typedef struct cu_prov_candidate {
    char kind[16];            /* "individual" | "group" */
    char id[129];             /* the entry's id; empty when none exists */
    int depth;                /* X.509: 0 leaf, 1 first intermediate, ... up to the root */
    char cert_subject[256];   /* X.509: the certificate this position stands for */
    char cert_sha256[65];
    bool exists;              /* an entry exists for this position */
    bool matched;             /* it matched the device's evidence */
    bool enabled;
    bool decided;             /* this entry made the decision */
    char note[320];           /* why (not) matched, or why not consulted */
} cu_prov_candidate;

typedef enum cu_prov_outcome {
    CU_PROV_UNDECIDED = 0, /* explain without evidence */
    CU_PROV_PROVISION = 1,
    CU_PROV_REFUSE = 2,
    CU_PROV_CHALLENGE = 3, /* TPM: answer 401 with authenticationKey and keyName */
} cu_prov_outcome;

typedef struct cu_prov_explain {
    char registration_id[129];
    char attestation[16];     /* x509 | symmetricKey | tpm | "" */
    cu_prov_candidate *cand;
    size_t n;
    int decided;              /* index into cand, or -1 */
    cu_prov_outcome outcome;
    bool disabled;            /* REFUSE because the deciding entry is disabled */
    char reason[512];
} cu_prov_explain;

void cu_prov_explain_clear(cu_prov_explain *ex);
/* Human text, one line per candidate (caller frees). */
char *cu_prov_explain_to_text(const cu_prov_explain *ex);
/* JSON (caller frees). */
char *cu_prov_explain_to_json(const cu_prov_explain *ex, bool compact);

typedef struct cu_prov_result {
    cu_prov_outcome outcome;  /* PROVISION: record written (assigned or failed) */
    int http_status;          /* suggested: 200 on PROVISION, 401 on REFUSE */
    int error_code;           /* 401002 on REFUSE; 400208 when no hub */
    cu_reg_record record;     /* what was written, when PROVISION */
    cu_prov_explain explain;
    /* TPM: on CHALLENGE the 401 body's "authenticationKey" (keyName is
     * "registration"); on PROVISION registrationState.tpm.authenticationKey,
     * a second activation whose key is hub_key. Heap, or NULL. */
    char *tpm_authentication_key;
    uint8_t hub_key[32];      /* TPM: the key inside the second activation */
} cu_prov_result;

void cu_prov_result_clear(cu_prov_result *res);

/* Attests, resolves the enrollment by precedence, allocates a hub and writes
 * the registration record and its audit record (the decision: every
 * candidate, the deciding entry, the chain's fingerprints, the hub) in one
 * transaction. A refusal is CU_OK with outcome REFUSE and a reason; no
 * registration record is created, only the refusal's audit record is
 * written, except that a device refused by a disabled deciding entry that
 * already has a record gets it marked `disabled` (errorCode 401002, the
 * entry named in errorMessage; hub and device id kept) in the refusal's
 * transaction. See audit.h.
 * @retval CU_OK (decision made), CU_E_INVALID_ARG, store errors */
cu_rc cu_prov_register(cu_prov *p, const cu_prov_request *req, cu_prov_result *_res);

/* The decision the service would make, without writing anything. With no
 * evidence (neither chain nor authorization) it shows what the store knows
 * about the registration id and leaves the outcome UNDECIDED where the
 * evidence would decide. */
cu_rc cu_prov_explain_request(cu_prov *p, const cu_prov_request *req, cu_prov_explain *_ex);

#ifdef __cplusplus
}
#endif
#endif
