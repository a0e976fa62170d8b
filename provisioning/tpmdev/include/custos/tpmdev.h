/* Custos: TPM 2.0 attestation, device side (PROTOCOL.md §3.1, §3.6, §3.7),
 * with tpm2-tss ESYS over any TCTI ("swtpm:host=127.0.0.1,port=N",
 * "device:/dev/tpmrm0", "tabrmd:bus_type=session", ...).
 *
 *   cu_tpmdev_open        connect; Startup(CLEAR) if the TPM needs it
 *   cu_tpmdev_ek/_srk     read the EK / SRK at their persistent handles, or
 *                         create them from the TCG / DPS templates and
 *                         persist them (EvictControl)
 *   cu_tpmdev_identity    EK and SRK as the device API sends them (base64
 *                         TPM2B_PUBLIC) and the default registration id
 *   cu_tpmdev_import_blob PolicySecret(endorsement) + ActivateCredential
 *                         (SRK, EK) + Import + Load + EvictControl to
 *                         0x81000100 (replacing what was there)
 *   cu_tpmdev_hmac        HMAC-SHA256 inside the TPM with that key (an
 *                         HMAC sequence when the input exceeds the TPM's
 *                         input buffer)
 *   cu_tpmdev_sas_token   the SAS token the C SDK sends, signed in the TPM
 *
 * The TPM is assumed to have no resource manager (swtpm, /dev/tpm0): every
 * transient object and session is flushed before a function returns.
 * One cu_tpmdev is single-threaded.
 *
 * Errors: a cu_rc and cu_err_last() with the ESYS function and the decoded
 * TPM response code (Tss2_RC_Decode); cu_tpmdev_last_tpm_rc() has the raw
 * TSS2_RC. An integrity failure of the TPM (a tampered or foreign blob:
 * TPM_RC_INTEGRITY) is CU_E_VERIFY, a TCTI failure CU_E_IO, any other TPM
 * refusal CU_E_TOKEN. */
#ifndef CUSTOS_TPMDEV_H
#define CUSTOS_TPMDEV_H

#include <custos/rc.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Persistent handles (PROTOCOL.md §3.1; TCG EK Credential Profile). */
#define CU_TPMDEV_EK_RSA_HANDLE 0x81010001u
#define CU_TPMDEV_EK_ECC_HANDLE 0x81010002u
#define CU_TPMDEV_SRK_HANDLE 0x81000001u
#define CU_TPMDEV_ID_KEY_HANDLE 0x81000100u
/* NV indices of the EK certificates (TCG EK Credential Profile). */
#define CU_TPMDEV_EK_CERT_RSA_NV 0x01c00002u
#define CU_TPMDEV_EK_CERT_ECC_NV 0x01c0000au

typedef enum cu_tpmdev_ek_kind {
    CU_TPMDEV_EK_RSA = 0, /* RSA-2048, TCG template L-1 (the public protocol) */
    CU_TPMDEV_EK_ECC,     /* ECC NIST P-256, TCG template L-2 (extension) */
} cu_tpmdev_ek_kind;

typedef struct cu_tpmdev_opts {
    cu_tpmdev_ek_kind ek; /* which EK to send and activate with */
    /* Largest input of one TPM2_HMAC (and chunk of a sequence); 0 = the
     * TPM's TPM_PT_INPUT_BUFFER (at most 1024). Tests lower it. */
    size_t hmac_chunk;
    /* Persistent handle of the SRK; 0 = CU_TPMDEV_SRK_HANDLE (0x81000001,
     * what the device SDKs use). A key already there is used whatever its
     * type: tpm2-pkcs11 puts an ECC P-256 primary there, which the public
     * service may not take (it expects RSA-2048): such a device can keep its
     * DPS SRK (RSA-2048, created here if missing) at another handle. */
    uint32_t srk_handle;
    /* Authorization values of the owner and endorsement hierarchies when the
     * TPM's owner set them (NULL / 0: empty, as the device SDKs assume):
     * the owner's for creating and persisting the SRK, EK and key, the
     * endorsement's for creating the EK and for the EK's PolicySecret. At
     * most 64 bytes each; handed to the ESYS context at open. */
    const uint8_t *owner_auth;
    size_t owner_auth_len;
    const uint8_t *endorsement_auth;
    size_t endorsement_auth_len;
} cu_tpmdev_opts;

typedef struct cu_tpmdev cu_tpmdev;

/* Connects to the TPM through tcti (NULL: $CUSTOS_TPM_TCTI, else the
 * tpm2-tss default). opts may be NULL.
 * @retval CU_OK, CU_E_IO (no TPM there), CU_E_TOKEN, CU_E_NOMEM */
cu_rc cu_tpmdev_open(const char *tcti, const cu_tpmdev_opts *opts, cu_tpmdev **_out);
void cu_tpmdev_close(cu_tpmdev *dev);

/* The TSS2_RC of the last TPM/TSS failure on dev (0 if none). */
uint32_t cu_tpmdev_last_tpm_rc(const cu_tpmdev *dev);
/* True when rc is TPM_RC_INTEGRITY (whatever handle/parameter it names). */
int cu_tpmdev_rc_is_integrity(uint32_t rc);

/* The marshalled TPM2B_PUBLIC of the EK of opts->ek / the SRK, created and
 * persisted first when missing. Caller frees *_pub (free()). */
cu_rc cu_tpmdev_ek(cu_tpmdev *dev, uint8_t **_pub, size_t *_len);
cu_rc cu_tpmdev_srk(cu_tpmdev *dev, uint8_t **_pub, size_t *_len);

/* EK and SRK in base64 (caller frees) and the default registration id
 * (52 characters + NUL). Any output may be NULL. */
cu_rc cu_tpmdev_identity(cu_tpmdev *dev, char **_ek_b64, char **_srk_b64, char *regid);

/* Runs the authenticationKey blob (base64, from the 401 body or from
 * registrationState.tpm.authenticationKey) through the TPM and persists the
 * key at CU_TPMDEV_ID_KEY_HANDLE, replacing an older one. */
cu_rc cu_tpmdev_import_blob(cu_tpmdev *dev, const char *blob_b64);
cu_rc cu_tpmdev_import_blob_raw(cu_tpmdev *dev, const uint8_t *blob, size_t len);

/* HMAC-SHA256 of msg with the key at CU_TPMDEV_ID_KEY_HANDLE. */
cu_rc cu_tpmdev_hmac(cu_tpmdev *dev, const uint8_t *msg, size_t len, uint8_t mac[32]);

/* The SAS token of the C SDK (PROTOCOL.md §3.7):
 *   SharedAccessSignature sr=<enc(scope/registrations/regid)>&sig=<enc(b64)>
 *                         &se=<expiry>&skn=<key_name>        (one line)
 * signed over sr-as-sent + "\n" + se inside the TPM. key_name NULL means
 * "registration". Caller frees *_token. */
cu_rc cu_tpmdev_sas_token(cu_tpmdev *dev, const char *id_scope, const char *registration_id,
                          uint64_t expiry, const char *key_name, char **_token);

/* Extension: the EK certificate from NV (DER; caller frees), when the
 * manufacturer (or swtpm_setup --create-ek-cert) stored one.
 * @retval CU_OK, CU_E_OBJECT_NOT_FOUND (no certificate), CU_E_TOKEN */
cu_rc cu_tpmdev_ek_cert(cu_tpmdev *dev, uint8_t **_der, size_t *_len);

#ifdef __cplusplus
}
#endif
#endif
