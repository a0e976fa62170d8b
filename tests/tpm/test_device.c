/* TPM attestation end to end at the library level, against real swtpms
 * started through the token fixture (custos/fixture.h):
 *   device reads EK/SRK -> service builds the challenge -> device activates
 *   and imports -> device signs a SAS token in the TPM -> the service
 *   verifies it with the key it issued (custos/sas.h);
 * the second blob (assignment), HMAC sequences, a tampered blob refused by
 * the TPM (TPM_RC_INTEGRITY), a second swtpm (another EK) that cannot use
 * the first device's challenge, ECC endorsement keys, and the tpm2-pkcs11
 * token living on the same swtpm. */
#include "cu_test.h"
#include "fixture_child.h"

#include <custos/fixture.h>
#include <custos/sas.h>
#include <custos/token.h>
#include <custos/tpmsvc.h>
#include <custos/tpmdev.h>

#include <openssl/evp.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define USER_PIN "user-pin-1234"
#define SCOPE "0ne0012AB34"

/* Like CU_ASSERT_EQUAL on a cu_rc, printing the recorded reason on failure. */
#define CHECK_RC(expr, want)                                                                     \
    do {                                                                                         \
        cu_rc got_ = (expr);                                                                     \
        if (got_ != (want))                                                                      \
            printf("\n    %s -> %s: %s\n", #expr, cu_rc_str(got_), cu_err_last()->msg);         \
        CU_ASSERT_EQUAL(got_, want);                                                             \
    } while (0)

static char *base;
static cu_fixture *fx;    /* the device's swtpm, shared with a tpm2-pkcs11 token */
static cu_fixture *other; /* a second TPM (another EK) */
static char tcti[128], tcti_other[128];

static int suite_init(void)
{
    setenv("TSS2_LOG", "all+none", 0); /* negative tests make tpm2-tss chatty */
    base = cu_test_mkdtemp("tpmdev");
    if (base == NULL)
        return -1;
    char d[512];
    /* Both TPMs are made by children (fixture_child.h): this process never
     * loads tpm2-pkcs11 (one store per process; fast ASan unwinding). */
    snprintf(d, sizeof d, "%s/other", base);
    if ((other = fixture_in_child(d, "other-tpm")) == NULL)
        return -1;
    snprintf(d, sizeof d, "%s/dev", base);
    if ((fx = fixture_in_child(d, "custos-tpm")) == NULL)
        return -1;
    fixture_bus_env(fx); /* for "tabrmd:bus_type=session" */
    snprintf(tcti, sizeof tcti, "swtpm:host=127.0.0.1,port=%d", cu_fixture_tpm_port(fx));
    snprintf(tcti_other, sizeof tcti_other, "swtpm:host=127.0.0.1,port=%d",
             cu_fixture_tpm_port(other));
    return 0;
}

static int suite_cleanup(void)
{
    if (fx != NULL)
        cu_fixture_destroy(fx);
    if (other != NULL)
        cu_fixture_destroy(other);
    cu_fixture_free(fx);
    cu_fixture_free(other);
    cu_test_rmtree(base);
    free(base);
    return 0;
}

static cu_tpmdev *open_dev(const char *t, cu_tpmdev_ek_kind kind, size_t chunk)
{
    cu_tpmdev_opts o = {.ek = kind, .hmac_chunk = chunk};
    cu_tpmdev *dev = NULL;
    if (cu_tpmdev_open(t, &o, &dev) != CU_OK)
        fprintf(stderr, "tpmdev: %s\n", cu_err_last()->msg);
    return dev;
}

/* The service's side of the second PUT: verify the device's SAS token with
 * the identity key it issued. */
static cu_rc service_verify(const char *token, const char *regid, const uint8_t *key, time_t now)
{
    cu_sas *sas = NULL;
    cu_rc rc = cu_sas_parse(token, strlen(token), &sas);
    if (rc != CU_OK)
        return rc;
    cu_sas_check chk = {.id_scope = SCOPE, .registration_id = regid, .key_name = "registration",
                        .now = now, .skew = 30};
    cu_sas_key k = {.key = key, .len = CU_TPM_ID_KEY_LEN, .label = "tpm identity"};
    char reason[256] = "";
    size_t matched = 0;
    rc = cu_sas_verify(sas, &chk, &k, 1, &matched, reason, sizeof reason);
    cu_sas_free(sas);
    return rc;
}

/* One registration: identity, challenge, import, SAS, verify. */
static void register_once(const char *t, cu_tpmdev_ek_kind kind, uint32_t srk_handle)
{
    cu_tpmdev_opts o = {.ek = kind, .srk_handle = srk_handle};
    cu_tpmdev *dev = NULL;
    if (cu_tpmdev_open(t, &o, &dev) != CU_OK)
        fprintf(stderr, "tpmdev: %s\n", cu_err_last()->msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dev);
    char *ek = NULL, *srk = NULL, regid[CU_TPM_REGID_LEN + 1];
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_identity(dev, &ek, &srk, regid), CU_OK);

    /* Service: the 401 challenge. */
    uint8_t key[CU_TPM_ID_KEY_LEN];
    char *blob = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_challenge_new(ek, srk, NULL, key, &blob), CU_OK);

    /* Device: activate, import, sign. */
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_import_blob(dev, blob), CU_OK);
    uint64_t exp = (uint64_t)time(NULL) + 2400;
    char *token = NULL;
    CHECK_RC(cu_tpmdev_sas_token(dev, SCOPE, regid, exp, "registration", &token), CU_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(token);
    CU_ASSERT_PTR_NOT_NULL(strstr(token, "sr=" SCOPE "%2fregistrations%2f"));

    /* Service: the second PUT verifies with the issued key ... */
    CU_ASSERT_EQUAL(service_verify(token, regid, key, 0), CU_OK);
    /* ... not with another key, not after expiry, not for another id. */
    uint8_t wrong[CU_TPM_ID_KEY_LEN];
    memcpy(wrong, key, sizeof wrong);
    wrong[0] ^= 1;
    CU_ASSERT_EQUAL(service_verify(token, regid, wrong, 0), CU_E_VERIFY);
    CU_ASSERT_EQUAL(service_verify(token, regid, key, (time_t)exp + 3600), CU_E_VERIFY);
    CU_ASSERT_EQUAL(service_verify(token, "someone-else", key, 0), CU_E_VERIFY);

    /* The assignment's second blob (the hub key) replaces the key. */
    uint8_t hub[32], mac[32], want[32];
    RAND_bytes(hub, sizeof hub);
    char *blob2 = NULL;
    cu_tpmsvc_pub *ekp = NULL, *srkp = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse_b64(ek, &ekp), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse_b64(srk, &srkp), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_blob_build_b64(ekp, srkp, hub, sizeof hub, NULL, &blob2),
                          CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_import_blob(dev, blob2), CU_OK);
    static const uint8_t msg[] = "myhub.azure-devices.net/devices/dev1\n1999999999";
    CHECK_RC(cu_tpmdev_hmac(dev, msg, sizeof msg - 1, mac), CU_OK);
    EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, hub, sizeof hub, msg, sizeof msg - 1, want, 32,
              NULL);
    CU_ASSERT_EQUAL(memcmp(mac, want, 32), 0);

    cu_tpmsvc_pub_free(ekp);
    cu_tpmsvc_pub_free(srkp);
    free(blob2);
    free(token);
    free(blob);
    free(ek);
    free(srk);
    cu_tpmdev_close(dev);
}

static void test_identity_stable(void)
{
    cu_tpmdev *dev = open_dev(tcti, CU_TPMDEV_EK_RSA, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dev);
    char *ek1 = NULL, *ek2 = NULL, *srk1 = NULL, *srk2 = NULL;
    char id1[CU_TPM_REGID_LEN + 1], id2[CU_TPM_REGID_LEN + 1];
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_identity(dev, &ek1, &srk1, id1), CU_OK);
    cu_tpmdev_close(dev);
    dev = open_dev(tcti, CU_TPMDEV_EK_RSA, 0);
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_identity(dev, &ek2, &srk2, id2), CU_OK);
    CU_ASSERT_STRING_EQUAL(ek1, ek2);
    CU_ASSERT_STRING_EQUAL(srk1, srk2);
    CU_ASSERT_STRING_EQUAL(id1, id2);
    CU_ASSERT_EQUAL(strlen(id1), 52);
    /* What the service sees: an RSA-2048 TCG EK and a usable SRK. */
    cu_tpmsvc_pub *e = NULL, *s = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse_b64(ek1, &e), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse_b64(srk1, &s), CU_OK);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_attributes(e), 0x000300B2);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_check(e, CU_TPM_ROLE_EK), CU_OK);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_check(s, CU_TPM_ROLE_SRK), CU_OK);
    /* tpm2-pkcs11 made its primary at 0x81000001 first (ECC P-256, 0x00030072,
     * no noDA): the device uses it as its SRK; on a bare TPM ours (RSA-2048,
     * 0x00030472). Either way a restricted decryption key custos_tpm takes. */
    CU_ASSERT(cu_tpmsvc_pub_attributes(s) == 0x00030072 ||
              cu_tpmsvc_pub_attributes(s) == 0x00030472);
    char id3[CU_TPM_REGID_LEN + 1];
    CU_ASSERT_EQUAL(cu_tpmsvc_registration_id(e, id3), CU_OK);
    CU_ASSERT_STRING_EQUAL(id1, id3);
    cu_tpmsvc_pub_free(e);
    cu_tpmsvc_pub_free(s);
    free(ek1);
    free(ek2);
    free(srk1);
    free(srk2);
    cu_tpmdev_close(dev);
}

/* RSA EK with tpm2-pkcs11's ECC primary as SRK (0x81000001), and with a DPS
 * RSA SRK (0x81000002); ECC EK. */
static void test_register_rsa(void)
{
    register_once(tcti, CU_TPMDEV_EK_RSA, 0);
    register_once(tcti, CU_TPMDEV_EK_RSA, 0x81000002);
}
static void test_register_ecc(void) { register_once(tcti, CU_TPMDEV_EK_ECC, 0); }

/* The same through the token fixture's resource manager (tpm2-abrmd on its
 * private D-Bus, whose address the fixture put in the environment). */
static void test_register_rm(void)
{
    if (!cu_fixture_tpm_has_rm(fx)) {
        printf("(fixture without resource manager: skipped) ");
        return;
    }
    register_once("tabrmd:bus_type=session", CU_TPMDEV_EK_RSA, 0);
}

static void test_hmac_sequence(void)
{
    uint8_t key[32], msg[3000], mac[32], want[32];
    RAND_bytes(key, sizeof key);
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 7);
    cu_tpmdev *dev = open_dev(tcti, CU_TPMDEV_EK_RSA, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dev);
    uint8_t *ek = NULL, *srk = NULL;
    size_t el = 0, sl = 0;
    cu_tpmsvc_pub *e = NULL, *s = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_ek(dev, &ek, &el), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_srk(dev, &srk, &sl), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse(ek, el, &e), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse(srk, sl, &s), CU_OK);
    uint8_t *blob = NULL;
    size_t bl = 0;
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_blob_build(e, s, key, sizeof key, NULL, &blob, &bl), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_import_blob_raw(dev, blob, bl), CU_OK);
    cu_tpmdev_close(dev);
    /* TPM input buffer (1024 on swtpm): 0, 1, 1024 in one TPM2_HMAC,
     * 1025 and 3000 through HMAC_Start/SequenceUpdate/SequenceComplete;
     * and a 64-byte chunk to exercise many updates. */
    size_t chunks[] = {0, 64};
    size_t lens[] = {0, 1, 64, 65, 1024, 1025, 2048, 3000};
    for (size_t c = 0; c < 2; c++) {
        dev = open_dev(tcti, CU_TPMDEV_EK_RSA, chunks[c]);
        for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
            memset(mac, 0, sizeof mac);
            CU_ASSERT_EQUAL(cu_tpmdev_hmac(dev, msg, lens[i], mac), CU_OK);
            EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, sizeof key, msg, lens[i], want,
                      32, NULL);
            CU_ASSERT_EQUAL(memcmp(mac, want, 32), 0);
        }
        cu_tpmdev_close(dev);
    }
    free(blob);
    free(ek);
    free(srk);
    cu_tpmsvc_pub_free(e);
    cu_tpmsvc_pub_free(s);
}

/* Builds a challenge for the device on `t` (raw). */
static uint8_t *challenge_for(const char *t, uint8_t *key, size_t *_len)
{
    cu_tpmdev *dev = open_dev(t, CU_TPMDEV_EK_RSA, 0);
    uint8_t *ek = NULL, *srk = NULL, *blob = NULL;
    size_t el = 0, sl = 0;
    cu_tpmsvc_pub *e = NULL, *s = NULL;
    if (dev && cu_tpmdev_ek(dev, &ek, &el) == CU_OK && cu_tpmdev_srk(dev, &srk, &sl) == CU_OK &&
        cu_tpmsvc_pub_parse(ek, el, &e) == CU_OK && cu_tpmsvc_pub_parse(srk, sl, &s) == CU_OK)
        cu_tpmsvc_blob_build(e, s, key, 32, NULL, &blob, _len);
    free(ek);
    free(srk);
    cu_tpmsvc_pub_free(e);
    cu_tpmsvc_pub_free(s);
    cu_tpmdev_close(dev);
    return blob;
}

static void test_tampered_blob(void)
{
    uint8_t key[32], mac[32], want[32];
    RAND_bytes(key, sizeof key);
    size_t len = 0;
    uint8_t *blob = challenge_for(tcti, key, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(blob);
    cu_tpmsvc_blob_fields f;
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_blob_split(blob, len, &f), CU_OK);
    cu_tpmdev *dev = open_dev(tcti, CU_TPMDEV_EK_RSA, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dev);

    /* The duplicate's outer HMAC altered: Import says TPM_RC_INTEGRITY. */
    uint8_t *bad = malloc(len);
    memcpy(bad, blob, len);
    bad[(size_t)(f.dup_private - blob) + 4 + 5] ^= 0x01;
    CU_ASSERT_EQUAL(cu_tpmdev_import_blob_raw(dev, bad, len), CU_E_VERIFY);
    CU_ASSERT_TRUE(cu_tpmdev_rc_is_integrity(cu_tpmdev_last_tpm_rc(dev)));
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "Esys_Import"));
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "integrity"));
    printf("\n    tampered duplicate: %s\n", cu_err_last()->msg);

    /* The credential's HMAC altered: ActivateCredential refuses. */
    memcpy(bad, blob, len);
    bad[(size_t)(f.id_object - blob) + 4 + 3] ^= 0x80;
    CU_ASSERT_EQUAL(cu_tpmdev_import_blob_raw(dev, bad, len), CU_E_VERIFY);
    CU_ASSERT_TRUE(cu_tpmdev_rc_is_integrity(cu_tpmdev_last_tpm_rc(dev)));
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "Esys_ActivateCredential"));
    printf("    tampered credential: %s\n", cu_err_last()->msg);

    /* A key that is not an HMAC signing key is not taken in. */
    memcpy(bad, blob, len);
    bad[(size_t)(f.key_public - blob) + 2 + 2 + 2 + 1] = 0x02; /* sign -> decrypt */
    CU_ASSERT_EQUAL(cu_tpmdev_import_blob_raw(dev, bad, len), CU_E_KEY_TYPE);

    /* Structure broken: refused before the TPM sees it. */
    CU_ASSERT_EQUAL(cu_tpmdev_import_blob_raw(dev, blob, len - 1), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cu_tpmdev_import_blob(dev, "not base64"), CU_E_INVALID_ARG);

    /* Nothing leaked (3 object slots, no resource manager): the genuine
     * blob still goes through, more than three times. */
    for (int i = 0; i < 4; i++)
        CHECK_RC(cu_tpmdev_import_blob_raw(dev, blob, len), CU_OK);
    CU_ASSERT_EQUAL(cu_tpmdev_hmac(dev, (const uint8_t *)"x", 1, mac), CU_OK);
    EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, 32, (const uint8_t *)"x", 1, want, 32, NULL);
    CU_ASSERT_EQUAL(memcmp(mac, want, 32), 0);
    free(bad);
    free(blob);
    cu_tpmdev_close(dev);
}

static void test_other_tpm(void)
{
    uint8_t key[32];
    RAND_bytes(key, sizeof key);
    size_t len = 0;
    uint8_t *blob = challenge_for(tcti, key, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(blob);
    cu_tpmdev *a = open_dev(tcti, CU_TPMDEV_EK_RSA, 0),
              *b = open_dev(tcti_other, CU_TPMDEV_EK_RSA, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    char *ek_a = NULL, *ek_b = NULL, id_a[CU_TPM_REGID_LEN + 1], id_b[CU_TPM_REGID_LEN + 1];
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_identity(a, &ek_a, NULL, id_a), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_identity(b, &ek_b, NULL, id_b), CU_OK);
    CU_ASSERT_STRING_NOT_EQUAL(id_a, id_b);
    /* The enrollment of device A does not match TPM B's EK ... */
    bool m = true;
    CU_ASSERT_EQUAL(cu_tpmsvc_ek_match(ek_a, ek_b, &m), CU_OK);
    CU_ASSERT_FALSE(m);
    /* ... and B cannot use A's challenge even if the service sent it. */
    cu_rc rc = cu_tpmdev_import_blob_raw(b, blob, len);
    CU_ASSERT_NOT_EQUAL(rc, CU_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "Esys_ActivateCredential"));
    printf("\n    other TPM: %s\n", cu_err_last()->msg);
    /* B has made no ECC EK: said plainly, before the TPM is asked. */
    cu_tpmdev *b_ecc = open_dev(tcti_other, CU_TPMDEV_EK_ECC, 0);
    CU_ASSERT_EQUAL(cu_tpmdev_import_blob_raw(b_ecc, blob, len), CU_E_OBJECT_NOT_FOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "no endorsement key at 0x81010002"));
    cu_tpmdev_close(b_ecc);
    /* B is still a working TPM: its own challenge goes through. */
    size_t blen = 0;
    uint8_t *own = challenge_for(tcti_other, key, &blen);
    CU_ASSERT_PTR_NOT_NULL(own);
    if (own != NULL)
        CHECK_RC(cu_tpmdev_import_blob_raw(b, own, blen), CU_OK);
    free(own);
    free(ek_a);
    free(ek_b);
    free(blob);
    cu_tpmdev_close(a);
    cu_tpmdev_close(b);
}

/* The tpm2-pkcs11 token on the same swtpm still works next to the
 * attestation keys (both flush what they load); in a child, which loads
 * tpm2-pkcs11. */
static int token_keygen_sign(void *arg)
{
    cu_fixture *f = NULL;
    cu_token *t = NULL;
    cu_object *k = NULL;
    cu_sig s = {.alg = CU_SIG_ECDSA, .hash = CU_HASH_SHA256};
    uint8_t sig[132];
    size_t sl = sizeof sig;
    int r = 1;
    if (cu_fixture_open((const char *)arg, &f) == CU_OK &&
        cu_fixture_token_open(f, USER_PIN, &t) == CU_OK &&
        cu_token_keygen(t, CU_KEYGEN_EC_P256, "after-attestation", NULL, 0, &k) == CU_OK &&
        cu_sign(k, &s, (const uint8_t *)"m", 1, sig, &sl) == CU_OK && sl == 64)
        r = 0;
    else
        fprintf(stderr, "token: %s\n", cu_err_last()->msg);
    cu_object_free(k);
    cu_token_unref(t);
    cu_fixture_free(f);
    return r;
}

static void test_shared_with_token(void)
{
    CU_ASSERT_EQUAL(in_child(token_keygen_sign, (void *)cu_fixture_get0_dir(fx)), 0);
    /* ... and the attestation key is still there. */
    cu_tpmdev *dev = open_dev(tcti, CU_TPMDEV_EK_RSA, 0);
    uint8_t mac[32];
    CU_ASSERT_EQUAL(cu_tpmdev_hmac(dev, (const uint8_t *)"x", 1, mac), CU_OK);
    cu_tpmdev_close(dev);
}

static void test_bad_tcti(void)
{
    cu_tpmdev *dev = NULL;
    CU_ASSERT_EQUAL(cu_tpmdev_open("swtpm:host=127.0.0.1,port=1", NULL, &dev), CU_E_IO);
    CU_ASSERT_PTR_NULL(dev);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "no TPM"));
    cu_tpmdev_opts o = {.ek = (cu_tpmdev_ek_kind)7};
    CU_ASSERT_EQUAL(cu_tpmdev_open(tcti, &o, &dev), CU_E_INVALID_ARG);
}

/* Extension: the EK certificate. swtpm_setup manufactures the second TPM
 * anew (its state directory, swtpm stopped) with an EK certificate in NV,
 * issued by a private swtpm_localca CA; the device reads it, the service
 * checks it against that CA's root and the device's EK. */
static void test_ek_cert(void)
{
    if (cu_test_sh("command -v swtpm_setup >/dev/null && command -v swtpm_localca >/dev/null") !=
        0) {
        printf("(swtpm_setup not installed: skipped) ");
        return;
    }
    const char *d = cu_fixture_get0_dir(other);
    CU_ASSERT_EQUAL_FATAL(cu_fixture_stop(other), CU_OK);
    int rc = cu_test_sh(
        "cd '%s' && mkdir -p ca && "
        "printf 'create_certs_tool = /usr/bin/swtpm_localca\\ncreate_certs_tool_config = "
        "%s/localca.conf\\n"
        "create_certs_tool_options = /etc/swtpm-localca.options\\nactive_pcr_banks = sha256\\n' > "
        "setup.conf && "
        "printf 'statedir = %s/ca\\nsigningkey = %s/ca/signkey.pem\\nissuercert = "
        "%s/ca/issuercert.pem\\n"
        "certserial = %s/ca/certserial\\n' > localca.conf && "
        "swtpm_setup --tpm2 --tpmstate '%s/tpm' --create-ek-cert --config setup.conf --overwrite "
        ">setup.log 2>&1",
        d, d, d, d, d, d, d);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL_FATAL(cu_fixture_start(other), CU_OK);
    snprintf(tcti_other, sizeof tcti_other, "swtpm:host=127.0.0.1,port=%d",
             cu_fixture_tpm_port(other));
    if (rc != 0)
        return;

    cu_tpmdev *dev = open_dev(tcti_other, CU_TPMDEV_EK_RSA, 0),
              *mine = open_dev(tcti, CU_TPMDEV_EK_RSA, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dev);
    uint8_t *der = NULL, *ek = NULL, *ek2 = NULL;
    size_t dl = 0, el = 0, el2 = 0;
    CHECK_RC(cu_tpmdev_ek_cert(dev, &der, &dl), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_ek(dev, &ek, &el), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_ek(mine, &ek2, &el2), CU_OK);
    cu_tpmsvc_pub *p = NULL, *q = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse(ek, el, &p), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse(ek2, el2, &q), CU_OK);
    char root[600], inter[600];
    snprintf(root, sizeof root, "%s/ca/swtpm-localca-rootca-cert.pem", d);
    snprintf(inter, sizeof inter, "%s/ca/issuercert.pem", d);
    if (der != NULL) {
        CHECK_RC(cu_tpmsvc_ekcert_verify(p, der, dl, root, NULL, inter), CU_OK);
        /* Another TPM's EK is not what the certificate certifies. */
        CU_ASSERT_EQUAL(cu_tpmsvc_ekcert_verify(q, der, dl, root, NULL, inter), CU_E_VERIFY);
        /* Without the issuing CA the chain does not reach the root. */
        CU_ASSERT_EQUAL(cu_tpmsvc_ekcert_verify(p, der, dl, root, NULL, NULL), CU_E_VERIFY);
    }
    /* The first TPM has no EK certificate. */
    uint8_t *none = NULL;
    size_t nl = 0;
    CU_ASSERT_EQUAL(cu_tpmdev_ek_cert(mine, &none, &nl), CU_E_OBJECT_NOT_FOUND);
    cu_tpmsvc_pub_free(p);
    cu_tpmsvc_pub_free(q);
    free(der);
    free(ek);
    free(ek2);
    cu_tpmdev_close(dev);
    cu_tpmdev_close(mine);
}

/* HMAC key sizes the blob carries: 1..64 bytes (DPS: 32-byte identity keys,
 * 64-byte hub keys) import and sign; 65 is refused by the service side
 * before a TPM would (TPM_RC_KEY_SIZE). */
static void test_key_sizes(void)
{
    cu_tpmdev *dev = open_dev(tcti, CU_TPMDEV_EK_RSA, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dev);
    uint8_t *ek = NULL, *srk = NULL;
    size_t el = 0, sl = 0;
    cu_tpmsvc_pub *e = NULL, *s = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_ek(dev, &ek, &el), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_srk(dev, &srk, &sl), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse(ek, el, &e), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse(srk, sl, &s), CU_OK);
    size_t sizes[] = {1, 16, 32, 64};
    uint8_t key[CU_TPM_KEY_MAX + 1], mac[32], want[32], *blob = NULL;
    size_t bl = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        RAND_bytes(key, sizeof key);
        CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_blob_build(e, s, key, sizes[i], NULL, &blob, &bl), CU_OK);
        CHECK_RC(cu_tpmdev_import_blob_raw(dev, blob, bl), CU_OK);
        CHECK_RC(cu_tpmdev_hmac(dev, (const uint8_t *)"m", 1, mac), CU_OK);
        EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, sizes[i], (const uint8_t *)"m", 1, want,
                  32, NULL);
        CU_ASSERT_EQUAL(memcmp(mac, want, 32), 0);
        free(blob);
        blob = NULL;
    }
    CU_ASSERT_EQUAL(cu_tpmsvc_blob_build(e, s, key, CU_TPM_KEY_MAX + 1, NULL, &blob, &bl),
                    CU_E_INVALID_ARG);
    CU_ASSERT_PTR_NULL(blob);
    free(ek);
    free(srk);
    cu_tpmsvc_pub_free(e);
    cu_tpmsvc_pub_free(s);
    cu_tpmdev_close(dev);
}

/* The DPS SRK at another handle: on this shared swtpm 0x81000001 holds
 * tpm2-pkcs11's ECC primary, so a device that wants the RSA-2048 SRK of the
 * public SDKs keeps it at 0x81000002 (cu_tpmdev_opts.srk_handle), created
 * from the DPS template; the challenge made for it imports, and the SAS
 * verifies. */
static void test_dps_srk_handle(void)
{
    cu_tpmdev_opts o = {.ek = CU_TPMDEV_EK_RSA, .srk_handle = 0x81000002};
    cu_tpmdev *dev = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_open(tcti, &o, &dev), CU_OK);
    char *ek = NULL, *srk = NULL, regid[CU_TPM_REGID_LEN + 1], *blob = NULL, *token = NULL;
    uint8_t key[CU_TPM_ID_KEY_LEN];
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_identity(dev, &ek, &srk, regid), CU_OK);
    cu_tpmsvc_pub *sp = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse_b64(srk, &sp), CU_OK);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_type(sp), CU_TPM_ALG_RSA);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_attributes(sp), 0x00030472);
    cu_tpmsvc_pub_free(sp);
    CHECK_RC(cu_tpmsvc_challenge_new(ek, srk, NULL, key, &blob), CU_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(blob);
    CHECK_RC(cu_tpmdev_import_blob(dev, blob), CU_OK);
    CHECK_RC(cu_tpmdev_sas_token(dev, SCOPE, regid, (uint64_t)time(NULL) + 600, NULL, &token),
             CU_OK);
    if (token != NULL)
        CU_ASSERT_EQUAL(service_verify(token, regid, key, 0), CU_OK);
    free(blob);
    free(token);
    free(ek);
    free(srk);
    cu_tpmdev_close(dev);
    /* A bad handle is refused. */
    o.srk_handle = 0x01000001;
    CU_ASSERT_EQUAL(cu_tpmdev_open(tcti, &o, &dev), CU_E_INVALID_ARG);
}

/* Sets the owner and endorsement passwords of the TPM at t (old -> new). */
static int change_hierarchy_auth(const char *t, const char *old, const char *new)
{
    TSS2_TCTI_CONTEXT *tc = NULL;
    ESYS_CONTEXT *e = NULL;
    int ok = Tss2_TctiLdr_Initialize(t, &tc) == TSS2_RC_SUCCESS &&
             Esys_Initialize(&e, tc, NULL) == TSS2_RC_SUCCESS;
    ESYS_TR hs[2] = {ESYS_TR_RH_OWNER, ESYS_TR_RH_ENDORSEMENT};
    for (int i = 0; ok && i < 2; i++) {
        TPM2B_AUTH a = {.size = (UINT16)strlen(old)}, n = {.size = (UINT16)strlen(new)};
        memcpy(a.buffer, old, a.size);
        memcpy(n.buffer, new, n.size);
        ok = Esys_TR_SetAuth(e, hs[i], &a) == TSS2_RC_SUCCESS &&
             Esys_HierarchyChangeAuth(e, hs[i], ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &n) ==
                 TSS2_RC_SUCCESS;
    }
    if (e != NULL)
        Esys_Finalize(&e);
    if (tc != NULL)
        Tss2_TctiLdr_Finalize(&tc);
    return ok;
}

/* A TPM whose owner set hierarchy passwords: refused without them (the
 * EK's PolicySecret needs the endorsement password), imported with them. */
static void test_hierarchy_auth(void)
{
    uint8_t key[32];
    RAND_bytes(key, sizeof key);
    size_t len = 0;
    uint8_t *blob = challenge_for(tcti_other, key, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(blob);
    CU_ASSERT_FATAL(change_hierarchy_auth(tcti_other, "", "hier-secret"));
    cu_tpmdev *dev = open_dev(tcti_other, CU_TPMDEV_EK_RSA, 0);
    CU_ASSERT_EQUAL(cu_tpmdev_import_blob_raw(dev, blob, len), CU_E_TOKEN);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "Esys_PolicySecret"));
    printf("\n    without the password: %s\n", cu_err_last()->msg);
    cu_tpmdev_close(dev);
    cu_tpmdev_opts o = {.ek = CU_TPMDEV_EK_RSA,
                        .owner_auth = (const uint8_t *)"hier-secret", .owner_auth_len = 11,
                        .endorsement_auth = (const uint8_t *)"hier-secret",
                        .endorsement_auth_len = 11};
    dev = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_tpmdev_open(tcti_other, &o, &dev), CU_OK);
    CHECK_RC(cu_tpmdev_import_blob_raw(dev, blob, len), CU_OK);
    uint8_t mac[32], want[32];
    CHECK_RC(cu_tpmdev_hmac(dev, (const uint8_t *)"x", 1, mac), CU_OK);
    EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, 32, (const uint8_t *)"x", 1, want, 32,
              NULL);
    CU_ASSERT_EQUAL(memcmp(mac, want, 32), 0);
    cu_tpmdev_close(dev);
    CU_ASSERT(change_hierarchy_auth(tcti_other, "hier-secret", ""));
    free(blob);
}

static const cu_test_case cases[] = {
    {"identity is stable and what the service expects", test_identity_stable},
    {"register: RSA EK, challenge, import, TPM SAS, verify, 2nd blob", test_register_rsa},
    {"register: ECC P-256 EK (extension)", test_register_ecc},
    /* before any use of the tabrmd TCTI here: GDBus does not survive fork */
    {"tpm2-pkcs11 token shares the swtpm", test_shared_with_token},
    {"register through tpm2-abrmd, the token's resource manager", test_register_rm},
    {"HMAC in one command and as a sequence", test_hmac_sequence},
    {"HMAC key sizes", test_key_sizes},
    {"tampered blob: TPM_RC_INTEGRITY, reported, nothing leaked", test_tampered_blob},
    {"second swtpm cannot use the first device's challenge", test_other_tpm},
    {"the DPS RSA SRK at 0x81000002 next to tpm2-pkcs11's ECC primary", test_dps_srk_handle},
    {"no TPM / bad options", test_bad_tcti},
    {"owner and endorsement passwords", test_hierarchy_auth},
    {"EK certificate from NV, chain to the manufacturer root", test_ek_cert},
    {NULL, NULL},
};

int main(void)
{
    if (cu_test_add_suite("tpm_device", suite_init, suite_cleanup, cases) != 0)
        return 2;
    return cu_test_run();
}
