/* Device side of TPM attestation with tpm2-tss ESYS (see custos/tpmdev.h). */
#include <custos/tpmsvc.h>
#include <custos/tpmdev.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

struct cu_tpmdev {
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
    cu_tpmdev_opts opts;
    TSS2_RC last;
};

/* TCG EK policy: PolicySecret(TPM_RH_ENDORSEMENT), SHA-256. */
static const uint8_t EK_POLICY[32] = {0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8,
                                      0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
                                      0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64,
                                      0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa};

int cu_tpmdev_rc_is_integrity(uint32_t rc)
{
    /* TPM layer, format 1, error number 0x1F. */
    return (rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER && (rc & TPM2_RC_FMT1) &&
           (rc & (TPM2_RC_FMT1 | 0x3F)) == TPM2_RC_INTEGRITY;
}

/* Records a TSS failure: the function, the decoded code, the raw code. */
static cu_rc tss_fail(cu_tpmdev *dev, TSS2_RC r, const char *what)
{
    dev->last = r;
    cu_rc rc = CU_E_TOKEN;
    if (cu_tpmdev_rc_is_integrity(r))
        rc = CU_E_VERIFY;
    else if ((r & TSS2_RC_LAYER_MASK) == TSS2_TCTI_RC_LAYER)
        rc = CU_E_IO;
    return cu_err_set(rc, "%s: %s (TSS2_RC 0x%x)", what, Tss2_RC_Decode(r), (unsigned)r);
}

uint32_t cu_tpmdev_last_tpm_rc(const cu_tpmdev *dev) { return dev ? dev->last : 0; }

cu_rc cu_tpmdev_open(const char *tcti, const cu_tpmdev_opts *opts, cu_tpmdev **_out)
{
    if (_out == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmdev_open: no output");
    *_out = NULL;
    cu_tpmdev *dev = calloc(1, sizeof *dev);
    if (dev == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    if (opts != NULL)
        dev->opts = *opts;
    if (dev->opts.srk_handle == 0)
        dev->opts.srk_handle = CU_TPMDEV_SRK_HANDLE;
    if ((dev->opts.srk_handle >> 24) != 0x81) {
        uint32_t h = dev->opts.srk_handle;
        free(dev);
        return cu_err_set(CU_E_INVALID_ARG, "SRK handle 0x%08x is not a persistent handle", h);
    }
    if (dev->opts.ek != CU_TPMDEV_EK_RSA && dev->opts.ek != CU_TPMDEV_EK_ECC) {
        int kind = (int)dev->opts.ek;
        free(dev);
        return cu_err_set(CU_E_INVALID_ARG, "unknown EK kind %d", kind);
    }
    if (tcti == NULL)
        tcti = getenv("CUSTOS_TPM_TCTI");
    TSS2_RC r = Tss2_TctiLdr_Initialize(tcti, &dev->tcti);
    cu_rc rc = CU_OK;
    if (r != TSS2_RC_SUCCESS) {
        tss_fail(dev, r, "TPM connection");
        rc = cu_err_wrap(CU_E_IO, "no TPM at TCTI '%s'", tcti ? tcti : "(default)");
        goto fail;
    }
    if ((r = Esys_Initialize(&dev->esys, dev->tcti, NULL)) != TSS2_RC_SUCCESS) {
        rc = tss_fail(dev, r, "Esys_Initialize");
        goto fail;
    }
    r = Esys_Startup(dev->esys, TPM2_SU_CLEAR);
    if (r != TSS2_RC_SUCCESS && r != TPM2_RC_INITIALIZE) {
        rc = tss_fail(dev, r, "Esys_Startup");
        goto fail;
    }
    /* Hierarchy passwords, if any (ESYS uses them in password sessions). */
    if (opts != NULL && (opts->owner_auth_len > 0 || opts->endorsement_auth_len > 0)) {
        struct {
            ESYS_TR h;
            const uint8_t *v;
            size_t n;
        } a[2] = {{ESYS_TR_RH_OWNER, opts->owner_auth, opts->owner_auth_len},
                  {ESYS_TR_RH_ENDORSEMENT, opts->endorsement_auth, opts->endorsement_auth_len}};
        for (int i = 0; i < 2; i++) {
            if (a[i].n == 0)
                continue;
            TPM2B_AUTH auth = {0};
            if (a[i].v == NULL || a[i].n > sizeof auth.buffer) {
                rc = cu_err_set(CU_E_INVALID_ARG, "hierarchy authorization of %zu bytes (1..%zu)",
                                a[i].n, sizeof auth.buffer);
                goto fail;
            }
            auth.size = (UINT16)a[i].n;
            memcpy(auth.buffer, a[i].v, a[i].n);
            r = Esys_TR_SetAuth(dev->esys, a[i].h, &auth);
            OPENSSL_cleanse(&auth, sizeof auth);
            if (r != TSS2_RC_SUCCESS) {
                rc = tss_fail(dev, r, "Esys_TR_SetAuth");
                goto fail;
            }
        }
    }
    dev->opts.owner_auth = dev->opts.endorsement_auth = NULL; /* not kept: ESYS holds them */
    dev->last = 0;
    *_out = dev;
    return CU_OK;
fail:
    cu_tpmdev_close(dev);
    return rc;
}

void cu_tpmdev_close(cu_tpmdev *dev)
{
    if (dev == NULL)
        return;
    if (dev->esys != NULL)
        Esys_Finalize(&dev->esys);
    if (dev->tcti != NULL)
        Tss2_TctiLdr_Finalize(&dev->tcti);
    free(dev);
}

/* Whether a persistent handle is in use (GetCapability: no TSS error log
 * for a missing handle, unlike Esys_TR_FromTPMPublic). */
static cu_rc persistent_exists(cu_tpmdev *dev, TPM2_HANDLE h, bool *_yes)
{
    TPMS_CAPABILITY_DATA *cap = NULL;
    TPMI_YES_NO more = 0;
    *_yes = false;
    TSS2_RC r = Esys_GetCapability(dev->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   TPM2_CAP_HANDLES, h, 1, &more, &cap);
    if (r != TSS2_RC_SUCCESS)
        return tss_fail(dev, r, "Esys_GetCapability(handles)");
    *_yes = cap->data.handles.count > 0 && cap->data.handles.handle[0] == h;
    Esys_Free(cap);
    return CU_OK;
}

static cu_rc tr_from(cu_tpmdev *dev, TPM2_HANDLE h, ESYS_TR *_tr)
{
    TSS2_RC r = Esys_TR_FromTPMPublic(dev->esys, h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, _tr);
    if (r != TSS2_RC_SUCCESS) {
        cu_rc rc = tss_fail(dev, r, "Esys_TR_FromTPMPublic");
        return cu_err_wrap(rc, "TPM handle 0x%08x", (unsigned)h);
    }
    return CU_OK;
}

static void sym_aes128cfb(TPMT_SYM_DEF_OBJECT *s)
{
    s->algorithm = TPM2_ALG_AES;
    s->keyBits.aes = 128;
    s->mode.aes = TPM2_ALG_CFB;
}

static void ek_template(cu_tpmdev_ek_kind kind, TPM2B_PUBLIC *t)
{
    memset(t, 0, sizeof *t);
    TPMT_PUBLIC *p = &t->publicArea;
    p->nameAlg = TPM2_ALG_SHA256;
    p->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_ADMINWITHPOLICY |
                          TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT; /* 0x000300B2 */
    p->authPolicy.size = sizeof EK_POLICY;
    memcpy(p->authPolicy.buffer, EK_POLICY, sizeof EK_POLICY);
    if (kind == CU_TPMDEV_EK_RSA) {
        p->type = TPM2_ALG_RSA;
        sym_aes128cfb(&p->parameters.rsaDetail.symmetric);
        p->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.rsaDetail.keyBits = 2048;
        p->parameters.rsaDetail.exponent = 0;
        p->unique.rsa.size = 256; /* zeros (TCG template L-1) */
    } else {
        p->type = TPM2_ALG_ECC;
        sym_aes128cfb(&p->parameters.eccDetail.symmetric);
        p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
        p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
        p->unique.ecc.x.size = 32; /* zeros (TCG template L-2) */
        p->unique.ecc.y.size = 32;
    }
}

static void srk_template(TPM2B_PUBLIC *t)
{
    memset(t, 0, sizeof *t);
    TPMT_PUBLIC *p = &t->publicArea;
    p->type = TPM2_ALG_RSA;
    p->nameAlg = TPM2_ALG_SHA256;
    p->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                          TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED |
                          TPMA_OBJECT_DECRYPT; /* 0x00030472 */
    sym_aes128cfb(&p->parameters.rsaDetail.symmetric);
    p->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
    p->parameters.rsaDetail.keyBits = 2048;
}

/* Reads the public area of a persistent object, creating the primary from
 * tmpl under hierarchy and persisting it at h first when h is free. */
static cu_rc primary_public(cu_tpmdev *dev, TPM2_HANDLE h, ESYS_TR hierarchy,
                            const TPM2B_PUBLIC *tmpl, const char *what, uint8_t **_pub,
                            size_t *_len)
{
    cu_rc rc = CU_OK;
    bool exists = false;
    ESYS_TR tr = ESYS_TR_NONE, prim = ESYS_TR_NONE, persisted = ESYS_TR_NONE;
    TPM2B_PUBLIC *pub = NULL;
    TSS2_RC r;

    if (_pub == NULL || _len == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "%s: no output", what);
    *_pub = NULL;
    if ((rc = persistent_exists(dev, h, &exists)) != CU_OK)
        return rc;
    if (!exists) {
        TPM2B_SENSITIVE_CREATE sens = {0};
        TPM2B_DATA outside = {0};
        TPML_PCR_SELECTION pcrs = {0};
        r = Esys_CreatePrimary(dev->esys, hierarchy, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                               &sens, tmpl, &outside, &pcrs, &prim, NULL, NULL, NULL, NULL);
        if (r != TSS2_RC_SUCCESS) {
            rc = tss_fail(dev, r, "Esys_CreatePrimary");
            rc = cu_err_wrap(rc, "creating the %s", what);
            goto cleanup;
        }
        r = Esys_EvictControl(dev->esys, ESYS_TR_RH_OWNER, prim, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                              ESYS_TR_NONE, h, &persisted);
        if (r != TSS2_RC_SUCCESS) {
            rc = tss_fail(dev, r, "Esys_EvictControl");
            rc = cu_err_wrap(rc, "persisting the %s at 0x%08x", what, (unsigned)h);
            goto cleanup;
        }
        tr = persisted;
        persisted = ESYS_TR_NONE;
    } else if ((rc = tr_from(dev, h, &tr)) != CU_OK) {
        goto cleanup;
    }
    r = Esys_ReadPublic(dev->esys, tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL, NULL);
    if (r != TSS2_RC_SUCCESS) {
        rc = tss_fail(dev, r, "Esys_ReadPublic");
        goto cleanup;
    }
    uint8_t buf[sizeof(TPM2B_PUBLIC)];
    size_t off = 0;
    if ((r = Tss2_MU_TPM2B_PUBLIC_Marshal(pub, buf, sizeof buf, &off)) != TSS2_RC_SUCCESS) {
        rc = tss_fail(dev, r, "marshalling the public area");
        goto cleanup;
    }
    if ((*_pub = malloc(off)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    memcpy(*_pub, buf, off);
    *_len = off;
cleanup:
    Esys_Free(pub);
    if (prim != ESYS_TR_NONE)
        Esys_FlushContext(dev->esys, prim);
    if (tr != ESYS_TR_NONE)
        Esys_TR_Close(dev->esys, &tr);
    return rc;
}

cu_rc cu_tpmdev_ek(cu_tpmdev *dev, uint8_t **_pub, size_t *_len)
{
    if (dev == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmdev_ek: no TPM");
    TPM2B_PUBLIC t;
    ek_template(dev->opts.ek, &t);
    return primary_public(dev,
                          dev->opts.ek == CU_TPMDEV_EK_RSA ? CU_TPMDEV_EK_RSA_HANDLE
                                                          : CU_TPMDEV_EK_ECC_HANDLE,
                          ESYS_TR_RH_ENDORSEMENT, &t, "endorsement key", _pub, _len);
}

cu_rc cu_tpmdev_srk(cu_tpmdev *dev, uint8_t **_pub, size_t *_len)
{
    if (dev == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmdev_srk: no TPM");
    TPM2B_PUBLIC t;
    srk_template(&t);
    return primary_public(dev, dev->opts.srk_handle, ESYS_TR_RH_OWNER, &t, "storage root key",
                          _pub, _len);
}

static char *b64(const uint8_t *d, size_t n)
{
    char *o = malloc((n + 2) / 3 * 4 + 1);
    if (o != NULL)
        EVP_EncodeBlock((unsigned char *)o, d, (int)n);
    return o;
}

cu_rc cu_tpmdev_identity(cu_tpmdev *dev, char **_ek_b64, char **_srk_b64, char *regid)
{
    cu_rc rc = CU_OK;
    uint8_t *ek = NULL, *srk = NULL;
    size_t ek_len = 0, srk_len = 0;
    char *e = NULL, *s = NULL;
    if (_ek_b64)
        *_ek_b64 = NULL;
    if (_srk_b64)
        *_srk_b64 = NULL;
    if ((rc = cu_tpmdev_ek(dev, &ek, &ek_len)) != CU_OK)
        goto cleanup;
    if (_srk_b64 != NULL && (rc = cu_tpmdev_srk(dev, &srk, &srk_len)) != CU_OK)
        goto cleanup;
    if (regid != NULL && (rc = cu_tpmsvc_registration_id_raw(ek, ek_len, regid)) != CU_OK)
        goto cleanup;
    if ((_ek_b64 && (e = b64(ek, ek_len)) == NULL) ||
        (_srk_b64 && (s = b64(srk, srk_len)) == NULL)) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    if (_ek_b64)
        *_ek_b64 = e, e = NULL;
    if (_srk_b64)
        *_srk_b64 = s, s = NULL;
cleanup:
    free(ek);
    free(srk);
    free(e);
    free(s);
    return rc;
}

/* ---- the challenge ---- */

#define UNMARSHAL(type, field, len, out, name)                                                   \
    do {                                                                                         \
        size_t off_ = 0;                                                                         \
        TSS2_RC r_ = Tss2_MU_##type##_Unmarshal(field, len, &off_, out);                         \
        if (r_ != TSS2_RC_SUCCESS || off_ != (len)) {                                            \
            rc = cu_err_set(CU_E_INVALID_ARG, "authenticationKey: field '%s' is not a " #type,   \
                            name);                                                               \
            goto cleanup;                                                                        \
        }                                                                                        \
    } while (0)

cu_rc cu_tpmdev_import_blob_raw(cu_tpmdev *dev, const uint8_t *blob, size_t len)
{
    cu_rc rc = CU_OK;
    cu_tpmsvc_blob_fields f;
    TPM2B_ID_OBJECT cred = {0};
    TPM2B_ENCRYPTED_SECRET secret = {0}, seed = {0};
    TPM2B_PRIVATE dup = {0};
    TPM2B_PUBLIC key_pub = {0};
    TPM2B_DIGEST *w = NULL;
    TPM2B_PRIVATE *priv = NULL;
    ESYS_TR srk = ESYS_TR_NONE, ek = ESYS_TR_NONE, sess = ESYS_TR_NONE, key = ESYS_TR_NONE,
            old = ESYS_TR_NONE, persisted = ESYS_TR_NONE;
    TSS2_RC r;

    if (dev == NULL || blob == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmdev_import_blob: NULL argument");
    if ((rc = cu_tpmsvc_blob_split(blob, len, &f)) != CU_OK)
        return rc;
    /* Only an HMAC signing key is taken in (the device persists it). */
    cu_tpmsvc_pub *kp = NULL;
    if ((rc = cu_tpmsvc_pub_parse(f.key_public, f.key_public_len, &kp)) != CU_OK)
        return cu_err_wrap(rc, "authenticationKey: the key's public area");
    bool hmac_key = cu_tpmsvc_pub_type(kp) == CU_TPM_ALG_KEYEDHASH &&
                    (cu_tpmsvc_pub_attributes(kp) & CU_TPMA_SIGN) &&
                    !(cu_tpmsvc_pub_attributes(kp) & CU_TPMA_DECRYPT);
    cu_tpmsvc_pub_free(kp);
    if (!hmac_key)
        return cu_err_set(CU_E_KEY_TYPE,
                          "authenticationKey: the key is not an HMAC signing key: not imported");
    UNMARSHAL(TPM2B_ID_OBJECT, f.id_object, f.id_object_len, &cred, "credential blob");
    UNMARSHAL(TPM2B_ENCRYPTED_SECRET, f.enc_secret, f.enc_secret_len, &secret, "encrypted secret");
    UNMARSHAL(TPM2B_PRIVATE, f.dup_private, f.dup_private_len, &dup, "duplicate");
    UNMARSHAL(TPM2B_ENCRYPTED_SECRET, f.sym_seed, f.sym_seed_len, &seed, "encrypted seed");
    UNMARSHAL(TPM2B_PUBLIC, f.key_public, f.key_public_len, &key_pub, "key public area");

    /* Both keys were read (or made) when the device sent them. */
    TPM2_HANDLE ek_handle = dev->opts.ek == CU_TPMDEV_EK_RSA ? CU_TPMDEV_EK_RSA_HANDLE
                                                            : CU_TPMDEV_EK_ECC_HANDLE;
    bool have_srk = false, have_ek = false;
    if ((rc = persistent_exists(dev, dev->opts.srk_handle, &have_srk)) != CU_OK ||
        (rc = persistent_exists(dev, ek_handle, &have_ek)) != CU_OK)
        goto cleanup;
    if (!have_srk || !have_ek) {
        rc = cu_err_set(CU_E_OBJECT_NOT_FOUND,
                        "this TPM has no %s at 0x%08x: the challenge was made for the keys the "
                        "device sent, read them first (cu_tpmdev_identity)",
                        have_srk ? "endorsement key" : "storage root key",
                        have_srk ? (unsigned)ek_handle : (unsigned)dev->opts.srk_handle);
        goto cleanup;
    }
    if ((rc = tr_from(dev, dev->opts.srk_handle, &srk)) != CU_OK ||
        (rc = tr_from(dev,
                      dev->opts.ek == CU_TPMDEV_EK_RSA ? CU_TPMDEV_EK_RSA_HANDLE
                                                      : CU_TPMDEV_EK_ECC_HANDLE,
                      &ek)) != CU_OK)
        goto cleanup;

    /* The EK's policy: PolicySecret(TPM_RH_ENDORSEMENT). */
    TPMT_SYM_DEF none = {.algorithm = TPM2_ALG_NULL};
    r = Esys_StartAuthSession(dev->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                              ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &none, TPM2_ALG_SHA256, &sess);
    if (r != TSS2_RC_SUCCESS) {
        rc = tss_fail(dev, r, "Esys_StartAuthSession");
        goto cleanup;
    }
    r = Esys_PolicySecret(dev->esys, ESYS_TR_RH_ENDORSEMENT, sess, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                          ESYS_TR_NONE, NULL, NULL, NULL, 0, NULL, NULL);
    if (r != TSS2_RC_SUCCESS) {
        rc = tss_fail(dev, r, "Esys_PolicySecret(endorsement)");
        goto cleanup;
    }
    r = Esys_ActivateCredential(dev->esys, srk, ek, ESYS_TR_PASSWORD, sess, ESYS_TR_NONE, &cred,
                                &secret, &w);
    if (r != TSS2_RC_SUCCESS) {
        rc = tss_fail(dev, r, "Esys_ActivateCredential");
        rc = cu_err_wrap(rc, "the TPM refused the challenge's credential (not made for this "
                          "TPM's EK and SRK, or altered)");
        goto cleanup;
    }
    Esys_FlushContext(dev->esys, sess);
    sess = ESYS_TR_NONE;

    TPM2B_DATA inner = {.size = w->size};
    memcpy(inner.buffer, w->buffer, w->size);
    TPMT_SYM_DEF_OBJECT sym;
    sym_aes128cfb(&sym);
    sym.keyBits.aes = (TPMI_AES_KEY_BITS)(8 * w->size);
    r = Esys_Import(dev->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &inner, &key_pub,
                    &dup, &seed, &sym, &priv);
    OPENSSL_cleanse(&inner, sizeof inner);
    if (r != TSS2_RC_SUCCESS) {
        rc = tss_fail(dev, r, "Esys_Import");
        rc = cu_err_wrap(rc, "the TPM refused the challenge's key (altered or not for this SRK)");
        goto cleanup;
    }
    r = Esys_Load(dev->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, priv, &key_pub,
                  &key);
    if (r != TSS2_RC_SUCCESS) {
        rc = tss_fail(dev, r, "Esys_Load");
        goto cleanup;
    }
    bool exists = false;
    if ((rc = persistent_exists(dev, CU_TPMDEV_ID_KEY_HANDLE, &exists)) != CU_OK)
        goto cleanup;
    if (exists) {
        if ((rc = tr_from(dev, CU_TPMDEV_ID_KEY_HANDLE, &old)) != CU_OK)
            goto cleanup;
        ESYS_TR gone = ESYS_TR_NONE;
        r = Esys_EvictControl(dev->esys, ESYS_TR_RH_OWNER, old, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                              ESYS_TR_NONE, CU_TPMDEV_ID_KEY_HANDLE, &gone);
        if (r != TSS2_RC_SUCCESS) {
            rc = tss_fail(dev, r, "Esys_EvictControl(remove the old key)");
            goto cleanup;
        }
        /* The removed object's ESYS_TR must go too, or a later
         * Esys_TR_FromTPMPublic of the same handle fails (ESYS keeps it). */
        Esys_TR_Close(dev->esys, &old);
        old = ESYS_TR_NONE;
    }
    r = Esys_EvictControl(dev->esys, ESYS_TR_RH_OWNER, key, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                          ESYS_TR_NONE, CU_TPMDEV_ID_KEY_HANDLE, &persisted);
    if (r != TSS2_RC_SUCCESS) {
        rc = tss_fail(dev, r, "Esys_EvictControl(persist the key)");
        goto cleanup;
    }
    dev->last = 0;
cleanup:
    if (w != NULL)
        OPENSSL_cleanse(w, sizeof *w);
    Esys_Free(w);
    Esys_Free(priv);
    if (sess != ESYS_TR_NONE)
        Esys_FlushContext(dev->esys, sess);
    if (key != ESYS_TR_NONE)
        Esys_FlushContext(dev->esys, key);
    if (persisted != ESYS_TR_NONE)
        Esys_TR_Close(dev->esys, &persisted);
    if (old != ESYS_TR_NONE)
        Esys_TR_Close(dev->esys, &old);
    if (srk != ESYS_TR_NONE)
        Esys_TR_Close(dev->esys, &srk);
    if (ek != ESYS_TR_NONE)
        Esys_TR_Close(dev->esys, &ek);
    return rc;
}

cu_rc cu_tpmdev_import_blob(cu_tpmdev *dev, const char *blob_b64)
{
    if (blob_b64 == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "authenticationKey: missing");
    size_t n = strlen(blob_b64);
    if (n == 0 || n % 4 != 0 || n > 16384)
        return cu_err_set(CU_E_INVALID_ARG, "authenticationKey: not base64 (length %zu)", n);
    uint8_t *raw = malloc(n / 4 * 3);
    if (raw == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    int got = EVP_DecodeBlock(raw, (const unsigned char *)blob_b64, (int)n);
    if (got < 0) {
        free(raw);
        return cu_err_set(CU_E_INVALID_ARG, "authenticationKey: not base64");
    }
    size_t len = (size_t)got - (blob_b64[n - 1] == '=') - (blob_b64[n - 2] == '=');
    cu_rc rc = cu_tpmdev_import_blob_raw(dev, raw, len);
    free(raw);
    return rc;
}

/* ---- HMAC in the TPM ---- */

static size_t input_buffer(cu_tpmdev *dev)
{
    size_t max = sizeof(((TPM2B_MAX_BUFFER *)0)->buffer);
    if (dev->opts.hmac_chunk > 0)
        return dev->opts.hmac_chunk < max ? dev->opts.hmac_chunk : max;
    TPMS_CAPABILITY_DATA *cap = NULL;
    TPMI_YES_NO more = 0;
    if (Esys_GetCapability(dev->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                           TPM2_CAP_TPM_PROPERTIES, TPM2_PT_INPUT_BUFFER, 1, &more,
                           &cap) == TSS2_RC_SUCCESS &&
        cap->data.tpmProperties.count == 1 &&
        cap->data.tpmProperties.tpmProperty[0].property == TPM2_PT_INPUT_BUFFER &&
        cap->data.tpmProperties.tpmProperty[0].value > 0 &&
        cap->data.tpmProperties.tpmProperty[0].value < max)
        max = cap->data.tpmProperties.tpmProperty[0].value;
    Esys_Free(cap);
    return max;
}

cu_rc cu_tpmdev_hmac(cu_tpmdev *dev, const uint8_t *msg, size_t len, uint8_t mac[32])
{
    cu_rc rc = CU_OK;
    ESYS_TR key = ESYS_TR_NONE, seq = ESYS_TR_NONE;
    TPM2B_DIGEST *out = NULL;
    TPM2B_MAX_BUFFER buf;
    TSS2_RC r;
    if (dev == NULL || (msg == NULL && len > 0) || mac == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmdev_hmac: NULL argument");
    bool exists = false;
    if ((rc = persistent_exists(dev, CU_TPMDEV_ID_KEY_HANDLE, &exists)) != CU_OK)
        return rc;
    if (!exists)
        return cu_err_set(CU_E_OBJECT_NOT_FOUND,
                          "no identity key at TPM handle 0x%08x: import an authenticationKey first",
                          CU_TPMDEV_ID_KEY_HANDLE);
    if ((rc = tr_from(dev, CU_TPMDEV_ID_KEY_HANDLE, &key)) != CU_OK)
        return rc;
    size_t chunk = input_buffer(dev);
    if (len <= chunk) {
        buf.size = (UINT16)len;
        if (len)
            memcpy(buf.buffer, msg, len);
        r = Esys_HMAC(dev->esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &buf,
                      TPM2_ALG_SHA256, &out);
        if (r != TSS2_RC_SUCCESS) {
            rc = tss_fail(dev, r, "Esys_HMAC");
            goto cleanup;
        }
    } else {
        TPM2B_AUTH auth = {0};
        r = Esys_HMAC_Start(dev->esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &auth,
                            TPM2_ALG_SHA256, &seq);
        if (r != TSS2_RC_SUCCESS) {
            rc = tss_fail(dev, r, "Esys_HMAC_Start");
            goto cleanup;
        }
        size_t off = 0;
        /* Keep the last piece (possibly a full chunk) for SequenceComplete. */
        while (len - off > chunk) {
            buf.size = (UINT16)chunk;
            memcpy(buf.buffer, msg + off, chunk);
            r = Esys_SequenceUpdate(dev->esys, seq, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                    &buf);
            if (r != TSS2_RC_SUCCESS) {
                rc = tss_fail(dev, r, "Esys_SequenceUpdate");
                goto cleanup;
            }
            off += chunk;
        }
        buf.size = (UINT16)(len - off);
        memcpy(buf.buffer, msg + off, len - off);
        r = Esys_SequenceComplete(dev->esys, seq, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                  &buf, ESYS_TR_RH_NULL, &out, NULL);
        if (r != TSS2_RC_SUCCESS) {
            rc = tss_fail(dev, r, "Esys_SequenceComplete");
            goto cleanup;
        }
        seq = ESYS_TR_NONE; /* SequenceComplete flushes the sequence */
    }
    if (out->size != 32) {
        rc = cu_err_set(CU_E_TOKEN, "TPM HMAC of %u bytes (32 expected)", out->size);
        goto cleanup;
    }
    memcpy(mac, out->buffer, 32);
    dev->last = 0;
cleanup:
    Esys_Free(out);
    if (seq != ESYS_TR_NONE)
        Esys_FlushContext(dev->esys, seq);
    Esys_TR_Close(dev->esys, &key);
    return rc;
}

/* The C SDK's URL encoder: keeps A-Z a-z 0-9 ! ( ) * - . _, lower-case hex. */
static void url_encode(const char *in, size_t len, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            strchr("!()*-._", c) != NULL) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

cu_rc cu_tpmdev_sas_token(cu_tpmdev *dev, const char *id_scope, const char *registration_id,
                          uint64_t expiry, const char *key_name, char **_token)
{
    cu_rc rc = CU_OK;
    char *scope = NULL, *sr = NULL, *msg = NULL, *tok = NULL, *skn = NULL;
    uint8_t mac[32];
    char sig_b64[48], sig[3 * 48];
    if (_token == NULL || id_scope == NULL || registration_id == NULL || *id_scope == '\0' ||
        *registration_id == '\0' || strlen(id_scope) > 128 || strlen(registration_id) > 128)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmdev_sas_token: bad argument");
    *_token = NULL;
    if (key_name == NULL)
        key_name = "registration";
    if (strlen(key_name) > 128)
        return cu_err_set(CU_E_INVALID_ARG, "SAS key name too long");
    if (asprintf(&scope, "%s/registrations/%s", id_scope, registration_id) < 0) {
        scope = NULL;
        return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    size_t sl = strlen(scope);
    if ((sr = malloc(3 * sl + 1)) == NULL || (skn = malloc(3 * strlen(key_name) + 1)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    url_encode(scope, sl, sr);
    url_encode(key_name, strlen(key_name), skn);
    if (asprintf(&msg, "%s\n%llu", sr, (unsigned long long)expiry) < 0) {
        msg = NULL;
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    if ((rc = cu_tpmdev_hmac(dev, (const uint8_t *)msg, strlen(msg), mac)) != CU_OK)
        goto cleanup;
    EVP_EncodeBlock((unsigned char *)sig_b64, mac, 32);
    url_encode(sig_b64, strlen(sig_b64), sig);
    if (asprintf(&tok, "SharedAccessSignature sr=%s&sig=%s&se=%llu&skn=%s", sr, sig,
                 (unsigned long long)expiry, skn) < 0) {
        tok = NULL;
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    *_token = tok;
cleanup:
    free(scope);
    free(sr);
    free(skn);
    free(msg);
    return rc;
}

/* ---- extension: EK certificate in NV ---- */

cu_rc cu_tpmdev_ek_cert(cu_tpmdev *dev, uint8_t **_der, size_t *_len)
{
    cu_rc rc = CU_OK;
    ESYS_TR nv = ESYS_TR_NONE;
    TPM2B_NV_PUBLIC *npub = NULL;
    uint8_t *der = NULL;
    TSS2_RC r;
    if (dev == NULL || _der == NULL || _len == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmdev_ek_cert: NULL argument");
    *_der = NULL;
    TPM2_HANDLE idx = dev->opts.ek == CU_TPMDEV_EK_RSA ? CU_TPMDEV_EK_CERT_RSA_NV
                                                       : CU_TPMDEV_EK_CERT_ECC_NV;
    TPMS_CAPABILITY_DATA *cap = NULL;
    TPMI_YES_NO more = 0;
    r = Esys_GetCapability(dev->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES,
                           idx, 1, &more, &cap);
    if (r != TSS2_RC_SUCCESS)
        return tss_fail(dev, r, "Esys_GetCapability(NV)");
    bool present = cap->data.handles.count > 0 && cap->data.handles.handle[0] == idx;
    Esys_Free(cap);
    if (!present)
        return cu_err_set(CU_E_OBJECT_NOT_FOUND, "no EK certificate in NV index 0x%08x",
                          (unsigned)idx);
    if ((rc = tr_from(dev, idx, &nv)) != CU_OK)
        return rc;
    if ((r = Esys_NV_ReadPublic(dev->esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &npub,
                                NULL)) != TSS2_RC_SUCCESS) {
        rc = tss_fail(dev, r, "Esys_NV_ReadPublic");
        goto cleanup;
    }
    size_t size = npub->nvPublic.dataSize, off = 0;
    if (size == 0 || (der = malloc(size)) == NULL) {
        rc = size ? cu_err_set(CU_E_NOMEM, "out of memory")
                  : cu_err_set(CU_E_OBJECT_NOT_FOUND, "EK certificate NV index is empty");
        goto cleanup;
    }
    while (off < size) {
        UINT16 n = (UINT16)(size - off > 512 ? 512 : size - off);
        TPM2B_MAX_NV_BUFFER *data = NULL;
        r = Esys_NV_Read(dev->esys, ESYS_TR_RH_OWNER, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                         ESYS_TR_NONE, n, (UINT16)off, &data);
        if (r != TSS2_RC_SUCCESS) {
            rc = tss_fail(dev, r, "Esys_NV_Read");
            goto cleanup;
        }
        memcpy(der + off, data->buffer, data->size < n ? data->size : n);
        off += n;
        Esys_Free(data);
    }
    /* The index may be larger than the certificate: trim to the DER length. */
    if (size >= 4 && der[0] == 0x30 && der[1] == 0x82) {
        size_t dl = 4 + ((size_t)der[2] << 8 | der[3]);
        if (dl <= size)
            size = dl;
    }
    *_der = der;
    *_len = size;
    der = NULL;
cleanup:
    free(der);
    Esys_Free(npub);
    if (nv != ESYS_TR_NONE)
        Esys_TR_Close(dev->esys, &nv);
    return rc;
}
