/* Custos: enrollments — individual enrollments and enrollment groups, in
 * the public REST API's JSON (PROTOCOL.md §5.6), which is also the engine's
 * own form. Parsing is strict: unknown keys, wrong types, bad enums, keys
 * that are not 16..64 bytes of base64, certificates that do not parse are
 * refused with a reason that names the JSON path (and the position for
 * syntax errors). */
#ifndef CUSTOS_ENROLLMENT_H
#define CUSTOS_ENROLLMENT_H

#include <custos/rc.h>

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cu_enr_kind { CU_ENR_INDIVIDUAL = 1, CU_ENR_GROUP = 2 } cu_enr_kind;

typedef enum cu_att_type {
    CU_ATT_NONE = 0,
    CU_ATT_TPM,
    CU_ATT_X509,
    CU_ATT_SYMMETRIC_KEY,
} cu_att_type;

typedef enum cu_enr_slot { CU_ENR_PRIMARY = 0, CU_ENR_SECONDARY = 1 } cu_enr_slot;

typedef struct cu_enr cu_enr;

/* Largest enrollment JSON accepted (the service's message size). */
#define CU_ENR_MAX_JSON (96 * 1024)

/* Parses and validates; normalises certificates to PEM and fills their
 * `info`, generates 64-byte symmetric keys when none are given, drops nulls.
 * Read-only fields (createdDateTimeUtc, registrationState, ...) are accepted
 * and ignored; `etag` is kept as the caller's If-Match.
 * @retval CU_OK, CU_E_INVALID_ARG (reason written), CU_E_NOMEM */
cu_rc cu_enr_parse(cu_enr_kind kind, const char *json, size_t len, cu_enr **_out, char *reason,
                   size_t reason_len);
void cu_enr_free(cu_enr *e);
cu_rc cu_enr_dup(const cu_enr *e, cu_enr **_out);

enum {
    CU_ENR_JSON_SHOW_KEYS = 1 << 0, /* include symmetric keys */
    CU_ENR_JSON_COMPACT = 1 << 1,   /* one line */
};
/* The enrollment as REST JSON (caller frees). Without SHOW_KEYS the
 * attestation carries no key material. */
char *cu_enr_to_json(const cu_enr *e, unsigned flags);

cu_enr_kind cu_enr_get_kind(const cu_enr *e);
/* registrationId or enrollmentGroupId. */
const char *cu_enr_get0_id(const cu_enr *e);
cu_att_type cu_enr_get_att_type(const cu_enr *e);
const char *cu_att_type_str(cu_att_type t);
bool cu_enr_is_enabled(const cu_enr *e);
cu_rc cu_enr_set_enabled(cu_enr *e, bool enabled);
/* NULL when not set. */
const char *cu_enr_get0_etag(const cu_enr *e);
const char *cu_enr_get0_device_id(const cu_enr *e);
const char *cu_enr_get0_created(const cu_enr *e);
const char *cu_enr_get0_updated(const cu_enr *e);
/* "hashed" when not set (the service default). */
const char *cu_enr_get0_allocation_policy(const cu_enr *e);
size_t cu_enr_get_hub_count(const cu_enr *e);
const char *cu_enr_get0_hub(const cu_enr *e, size_t i);
const char *cu_enr_get0_webhook_url(const cu_enr *e);
bool cu_enr_reprovision_update_hub(const cu_enr *e);
bool cu_enr_reprovision_migrate(const cu_enr *e);
bool cu_enr_has_reprovision_policy(const cu_enr *e);
/* X.509: the client certificate (individual) or signing certificate (group)
 * in PEM; NULL if that slot is empty. */
const char *cu_enr_get0_cert(const cu_enr *e, cu_enr_slot slot);
/* X.509 group: the name of a CA certificate registered with the service. */
const char *cu_enr_get0_ca_ref(const cu_enr *e, cu_enr_slot slot);
/* Symmetric key (base64); NULL if none. */
const char *cu_enr_get0_symkey(const cu_enr *e, cu_enr_slot slot);
const char *cu_enr_get0_tpm_ek(const cu_enr *e);

/* Registration-id rules of the public service (≤128 chars of A-Z a-z 0-9
 * - . _ :, alphanumeric first and last, '-' allowed last). */
bool cu_enr_regid_valid(const char *registration_id);

#ifdef __cplusplus
}
#endif
#endif
