/* TPM attestation without a TPM: public-area parsing, the default
 * registration id, the blob's layout, and the engine's refusals. (The
 * blob is checked against a real TPM by prov_tpm_swtpm.) */
#include "fixture.h"

#include <custos/sas.h>
#include <custos/tpm.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* TPM2B_PUBLIC of an RSA-2048 restricted decryption key, EK template. */
static size_t make_pub(EVP_PKEY *rsa, uint8_t *out)
{
    size_t n = 0;
    BIGNUM *bn = NULL;
    EVP_PKEY_get_bn_param(rsa, OSSL_PKEY_PARAM_RSA_N, &bn);
    uint8_t mod[256];
    BN_bn2binpad(bn, mod, 256);
    BN_free(bn);
    static const uint8_t head[] = {0x00, 0x01, 0x00, 0x0B, 0x00, 0x03, 0x00, 0xB2, 0x00, 0x20};
    n = 2;
    memcpy(out + n, head, sizeof head);
    n += sizeof head;
    memset(out + n, 0x5A, 32); /* authPolicy */
    n += 32;
    static const uint8_t parms[] = {0x00, 0x06, 0x00, 0x80, 0x00, 0x43, 0x00, 0x10, 0x08, 0x00,
                                    0x00, 0x00, 0x00, 0x00, 0x01, 0x00};
    memcpy(out + n, parms, sizeof parms);
    n += sizeof parms;
    memcpy(out + n, mod, 256);
    n += 256;
    out[0] = (uint8_t)((n - 2) >> 8);
    out[1] = (uint8_t)(n - 2);
    return n;
}

static char *b64(const uint8_t *p, size_t n)
{
    char *o = malloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)o, p, (int)n);
    return o;
}

static EVP_PKEY *ek_key, *srk_key;
static uint8_t ek_raw[400], srk_raw[400];
static size_t ek_len, srk_len;
static char *ek_b64, *srk_b64;

static int setup(void)
{
    ek_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    srk_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    if (!ek_key || !srk_key)
        return -1;
    ek_len = make_pub(ek_key, ek_raw);
    srk_len = make_pub(srk_key, srk_raw);
    ek_b64 = b64(ek_raw, ek_len);
    srk_b64 = b64(srk_raw, srk_len);
    return 0;
}

static int teardown(void)
{
    EVP_PKEY_free(ek_key);
    EVP_PKEY_free(srk_key);
    free(ek_b64);
    free(srk_b64);
    return 0;
}

static void test_pub_and_blob(void)
{
    cu_tpm_pub *ek = NULL, *srk = NULL, *again = NULL;
    CU_ASSERT_EQUAL_FATAL(ek_len, 316); /* the size PROTOCOL.md gives for an EK */
    CU_ASSERT_EQUAL_FATAL(cu_tpm_pub_decode(ek_b64, &ek), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpm_pub_decode_raw(srk_raw, srk_len, &srk), CU_OK);
    CU_ASSERT_EQUAL(cu_tpm_pub_decode(ek_b64, &again), CU_OK);
    CU_ASSERT_TRUE(cu_tpm_pub_same_key(ek, again));
    CU_ASSERT_FALSE(cu_tpm_pub_same_key(ek, srk));
    cu_tpm_pub_free(again);
    /* Refusals: truncated, trailing byte, not RSA, bad base64. */
    cu_tpm_pub *x = NULL;
    CU_ASSERT_EQUAL(cu_tpm_pub_decode_raw(ek_raw, ek_len - 1, &x), CU_E_INVALID_ARG);
    uint8_t buf[400];
    memcpy(buf, ek_raw, ek_len);
    buf[3] = 0x23; /* ECC */
    CU_ASSERT_EQUAL(cu_tpm_pub_decode_raw(buf, ek_len, &x), CU_E_INVALID_ARG);
    buf[3] = 0x01;
    buf[1] = (uint8_t)(buf[1] + 1);
    CU_ASSERT_EQUAL(cu_tpm_pub_decode_raw(buf, ek_len, &x), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cu_tpm_pub_decode("@@@@", &x), CU_E_INVALID_ARG);
    CU_ASSERT_PTR_NULL(x);

    cu_tpm_activation act;
    CU_ASSERT_EQUAL_FATAL(cu_tpm_activation_make(ek, srk, &act), CU_OK);
    /* Field sizes of a real DPS blob (PROTOCOL.md §3.3), field 6 empty. */
    CU_ASSERT_EQUAL(act.cred_blob_len, 2 + 52);
    CU_ASSERT_EQUAL(act.enc_secret_len, 2 + 256);
    CU_ASSERT_EQUAL(act.dup_private_len, 2 + 142);
    CU_ASSERT_EQUAL(act.in_sym_seed_len, 2 + 256);
    CU_ASSERT_EQUAL(act.id_public_len, 2 + 48);
    CU_ASSERT_EQUAL(act.enc_uri_len, 2);
    static const uint8_t idpub_head[] = {0x00, 0x30, 0x00, 0x08, 0x00, 0x0b, 0x00, 0x04, 0x04, 0x40,
                                         0x00, 0x00, 0x00, 0x05, 0x00, 0x0b, 0x00, 0x20};
    CU_ASSERT_EQUAL(memcmp(act.id_public, idpub_head, sizeof idpub_head), 0);
    char *blob = cu_tpm_activation_blob(&act);
    CU_ASSERT_EQUAL(strlen(blob), 4 * ((766 + 2) / 3));
    free(blob);
    cu_tpm_activation_clear(&act);
    cu_tpm_pub_free(ek);
    cu_tpm_pub_free(srk);
}

static void test_registration_id(void)
{
    /* Computed independently with Python's base64.b32encode. */
    char *id = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_tpm_registration_id("AAEC", &id), CU_OK); /* bytes 00 01 02 */
    /* python3: base64.b32encode(hashlib.sha256(b"\x00\x01\x02").digest()).decode().lower().rstrip("=") */
    CU_ASSERT_STRING_EQUAL(id, "vzftfahfnyx27a7ucstohwv6tvp34gexmvcmax7ncinmzoc3kp6a");
    CU_ASSERT_EQUAL(strlen(id), 52);
    free(id);
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
    /* The right EK: a challenge, and K is kept for the SAS. */
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                                      "{\"registrationId\":\"tpm-dev\",\"attestation\":{\"type\":\"tpm\",\"tpm\":"
                                      "{\"endorsementKey\":\"%s\"}}}", ek_b64), CU_OK);
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
    uint8_t key[32];
    char fp[65];
    CU_ASSERT_EQUAL_FATAL(cu_store_tpm_key_get(f.store, "tpm-dev", key, fp), CU_OK);
    /* The device (here: us, holding K) signs a SAS; it provisions, with a second blob. */
    char *tok = NULL;
    CU_ASSERT_EQUAL(cu_sas_sign(key, 32, "0ne00000001", "tpm-dev", (uint64_t)time(NULL) + 600, "registration", &tok), CU_OK);
    req.authorization = tok;
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_PROVISION);
    CU_ASSERT_STRING_EQUAL(res.record.status, "assigned");
    CU_ASSERT_STRING_EQUAL(res.record.attestation, "tpm");
    CU_ASSERT_PTR_NOT_NULL(res.tpm_authentication_key);
    cu_prov_result_clear(&res);
    free(tok);
    /* A challenge without the SRK is refused (400). */
    req.authorization = NULL;
    req.tpm_srk = NULL;
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_REFUSE);
    CU_ASSERT_EQUAL(res.http_status, 400);
    cu_prov_result_clear(&res);
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
    fx_close(&f);
}

int main(void)
{
    static const cu_test_case cases[] = {
        {"TPM2B_PUBLIC parsing and the activation blob layout", test_pub_and_blob},
        {"default registration id (base32 of SHA-256)", test_registration_id},
        {"engine: challenge, SAS with K, refusals", test_engine_refusals},
        {NULL, NULL},
    };
    if (cu_test_add_suite("prov_tpm", setup, teardown, cases) != 0)
        return 2;
    return cu_test_run();
}
