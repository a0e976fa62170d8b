/* The engine's TPM flow without a TPM (cu_prov_register on custos/tpmsvc.h):
 * the challenge, the pending key sealed in the store (bound to the id, the
 * EK and an expiry), the SAS, the second blob, and the refusals. The blob
 * itself is checked by tests/tpm (known answers, swtpm), and over HTTPS by
 * tpm_custosd and server_tpm. */
#include "fixture.h"

#include <custos/sas.h>
#include <custos/tpmsvc.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static EVP_PKEY *ek_key, *srk_key;
static uint8_t ek_raw[FX_TPM_PUB_LEN], srk_raw[FX_TPM_PUB_LEN];
static size_t ek_len, srk_len;
static char *ek_b64, *srk_b64;

static int setup(void)
{
    ek_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    srk_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    if (!ek_key || !srk_key)
        return -1;
    ek_len = fx_tpm_rsa_pub(ek_key, ek_raw);
    srk_len = fx_tpm_rsa_pub(srk_key, srk_raw);
    ek_b64 = fx_b64(ek_raw, ek_len);
    srk_b64 = fx_b64(srk_raw, srk_len);
    return ek_len && srk_len && ek_b64 && srk_b64 ? 0 : -1;
}

static int teardown(void)
{
    EVP_PKEY_free(ek_key);
    EVP_PKEY_free(srk_key);
    free(ek_b64);
    free(srk_b64);
    return 0;
}

/* The identity key of the pending challenge, as the engine will open it. */
static cu_rc pending_key(fx *f, const char *regid, const char *ek, time_t now, uint8_t key[CU_TPM_ID_KEY_LEN])
{
    char *sealed = NULL;
    cu_rc rc = cu_store_tpm_challenge_get(f->store, regid, &sealed);
    if (rc == CU_OK)
        rc = cu_tpmsvc_challenge_open(f->kr, "0ne00000001", regid, ek, now, sealed, key);
    free(sealed);
    return rc;
}

static void test_engine_refusals(void)
{
    fx f;
    char reason[512];
    CU_ASSERT_FATAL(fx_open(&f, "tpm") == 0);
    cu_prov_request req = {.registration_id = "tpm-dev", .tpm_ek = ek_b64, .tpm_srk = srk_b64};
    cu_prov_result res;
    /* No enrollment. */
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.explain.reason, "no TPM enrollment"));
    cu_prov_result_clear(&res);
    /* Another EK enrolled under this id. */
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                                      "{\"registrationId\":\"tpm-dev\",\"attestation\":{\"type\":\"tpm\",\"tpm\":"
                                      "{\"endorsementKey\":\"%s\"}}}", srk_b64), CU_OK);
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.explain.reason, "not the one enrolled"));
    cu_prov_result_clear(&res);
    /* The right EK, enrolled as other bytes of the same key (exponent 65537
     * spelled out instead of 0, userWithAuth set): matched by the key, so
     * a challenge, and K is kept for the SAS. */
    uint8_t alt_raw[FX_TPM_PUB_LEN];
    memcpy(alt_raw, ek_raw, ek_len);
    alt_raw[9] |= 0x40;
    memcpy(alt_raw + 54, "\x00\x01\x00\x01", 4);
    char *alt_b64 = fx_b64(alt_raw, ek_len);
    CU_ASSERT_NOT_EQUAL(strcmp(alt_b64, ek_b64), 0);
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                                      "{\"registrationId\":\"tpm-dev\",\"attestation\":{\"type\":\"tpm\",\"tpm\":"
                                      "{\"endorsementKey\":\"%s\"}}}", alt_b64), CU_OK);
    free(alt_b64);
    /* A SAS before any challenge is refused. */
    req.authorization = "SharedAccessSignature sr=x&sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3d&se=1";
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.explain.reason, "no TPM challenge"));
    cu_prov_result_clear(&res);
    req.authorization = NULL;
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_CHALLENGE);
    CU_ASSERT_EQUAL(res.http_status, 401);
    CU_ASSERT_PTR_NOT_NULL(res.tpm_authentication_key);
    cu_prov_result_clear(&res);
    /* K is sealed in the store: bound to the id and the EK, not readable
     * for another EK, expiring. */
    uint8_t key[32];
    CU_ASSERT_EQUAL_FATAL(pending_key(&f, "tpm-dev", ek_b64, 0, key), CU_OK);
    CU_ASSERT_EQUAL(pending_key(&f, "tpm-dev", srk_b64, 0, key), CU_E_VERIFY);
    CU_ASSERT_EQUAL(pending_key(&f, "other-dev", ek_b64, 0, key), CU_E_OBJECT_NOT_FOUND);
    CU_ASSERT_EQUAL(pending_key(&f, "tpm-dev", ek_b64, time(NULL) + CU_PROV_TPM_CHALLENGE_TTL + 5, key),
                    CU_E_VERIFY);
    CU_ASSERT_EQUAL_FATAL(pending_key(&f, "tpm-dev", ek_b64, 0, key), CU_OK);
    /* The device (here: us, holding K) signs a SAS; it provisions, with a second blob. */
    char *tok = NULL;
    CU_ASSERT_EQUAL(cu_sas_sign(key, 32, "0ne00000001", "tpm-dev", (uint64_t)time(NULL) + 600, "registration", &tok), CU_OK);
    req.authorization = tok;
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_PROVISION);
    CU_ASSERT_STRING_EQUAL(res.record.status, "assigned");
    CU_ASSERT_STRING_EQUAL(res.record.attestation, "tpm");
    CU_ASSERT_PTR_NOT_NULL(res.tpm_authentication_key);
    /* The second blob has the layout of a real one (PROTOCOL.md §3.3). */
    if (res.tpm_authentication_key != NULL)
        CU_ASSERT_EQUAL(strlen(res.tpm_authentication_key), 4 * ((766 + 2) / 3));
    cu_prov_result_clear(&res);
    /* The challenge answered one registration: the same SAS again, while
     * both it and the challenge would still be valid, is refused. */
    char *left = NULL;
    CU_ASSERT_EQUAL(cu_store_tpm_challenge_get(f.store, "tpm-dev", &left), CU_E_OBJECT_NOT_FOUND);
    free(left);
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.explain.reason, "no TPM challenge"));
    cu_prov_result_clear(&res);
    free(tok);
    tok = NULL;
    /* A new challenge, answered once it has expired: refused, and why. */
    req.authorization = NULL;
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_CHALLENGE);
    cu_prov_result_clear(&res);
    CU_ASSERT_EQUAL_FATAL(pending_key(&f, "tpm-dev", ek_b64, 0, key), CU_OK);
    CU_ASSERT_EQUAL(cu_sas_sign(key, 32, "0ne00000001", "tpm-dev", (uint64_t)time(NULL) + 600, "registration", &tok), CU_OK);
    req.authorization = tok;
    cu_prov *late = NULL;
    cu_prov_config lc = {.id_scope = "0ne00000001", .now = time(NULL) + CU_PROV_TPM_CHALLENGE_TTL + 5,
                         .sas_skew = 86400};
    CU_ASSERT_EQUAL_FATAL(cu_prov_new(f.store, &lc, &late), CU_OK);
    CU_ASSERT_EQUAL(cu_prov_register(late, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.explain.reason, "expired"));
    cu_prov_result_clear(&res);
    cu_prov_free(late);
    free(tok);
    tok = NULL;
    /* A live challenge, answered by a SAS token that has expired (no skew
     * allowed): refused as expired; the same key with a live expiry is
     * accepted, so it was the expiry that refused. */
    cu_prov *strict = NULL;
    cu_prov_config sc = {.id_scope = "0ne00000001", .sas_skew = 0};
    CU_ASSERT_EQUAL_FATAL(cu_prov_new(f.store, &sc, &strict), CU_OK);
    req.authorization = NULL;
    CU_ASSERT_EQUAL(cu_prov_register(strict, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_CHALLENGE);
    cu_prov_result_clear(&res);
    CU_ASSERT_EQUAL_FATAL(pending_key(&f, "tpm-dev", ek_b64, 0, key), CU_OK);
    CU_ASSERT_EQUAL(cu_sas_sign(key, 32, "0ne00000001", "tpm-dev", (uint64_t)time(NULL) - 2, "registration", &tok), CU_OK);
    req.authorization = tok;
    CU_ASSERT_EQUAL(cu_prov_register(strict, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.explain.reason, "expired"));
    cu_prov_result_clear(&res);
    free(tok);
    tok = NULL;
    CU_ASSERT_EQUAL(cu_sas_sign(key, 32, "0ne00000001", "tpm-dev", (uint64_t)time(NULL) + 600, "registration", &tok), CU_OK);
    req.authorization = tok;
    CU_ASSERT_EQUAL(cu_prov_register(strict, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_PROVISION);
    cu_prov_result_clear(&res);
    cu_prov_free(strict);
    free(tok);
    /* A challenge without the SRK, or with a signing key as SRK, is refused (400). */
    req.authorization = NULL;
    req.tpm_srk = NULL;
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_REFUSE);
    CU_ASSERT_EQUAL(res.http_status, 400);
    cu_prov_result_clear(&res);
    uint8_t sign_srk[FX_TPM_PUB_LEN];
    memcpy(sign_srk, srk_raw, srk_len);
    sign_srk[7] = 0x04; /* attributes 0x00040072: sign instead of restricted|decrypt */
    sign_srk[9] = 0x72;
    char *sign_b64 = fx_b64(sign_srk, srk_len);
    req.tpm_srk = sign_b64;
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_REFUSE);
    CU_ASSERT_EQUAL(res.http_status, 400);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.explain.reason, "tpm.storageRootKey"));
    CU_ASSERT_PTR_NULL(res.tpm_authentication_key);
    cu_prov_result_clear(&res);
    free(sign_b64);
    /* Disabled: refused before any challenge. */
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                                      "{\"registrationId\":\"tpm-dev\",\"provisioningStatus\":\"disabled\","
                                      "\"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":\"%s\"}}}",
                                      ek_b64), CU_OK);
    req.tpm_srk = srk_b64;
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.explain.reason, "disabled"));
    CU_ASSERT_PTR_NULL(res.tpm_authentication_key);
    cu_prov_result_clear(&res);
    /* With a token and no pending challenge, or another EK: the disabled
     * enrollment is still what decides. */
    req.authorization = "SharedAccessSignature sr=x&sig=eA%3D%3D&se=1";
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.explain.reason, "individual enrollment 'tpm-dev' is disabled"));
    cu_prov_result_clear(&res);
    req.authorization = NULL;
    req.tpm_ek = srk_b64;
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.explain.reason, "individual enrollment 'tpm-dev' is disabled"));
    cu_prov_result_clear(&res);
    fx_close(&f);
}

int main(void)
{
    static const cu_test_case cases[] = {
        {"engine: challenge, SAS with K, refusals", test_engine_refusals},
        {NULL, NULL},
    };
    if (cu_test_add_suite("prov_tpm", setup, teardown, cases) != 0)
        return 2;
    return cu_test_run();
}
