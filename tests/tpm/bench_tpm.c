/* TPM attestation throughput (docs/tpm.md, "Speed"):
 *   bench_tpm challenge SECONDS   challenges (parse EK+SRK, fresh key, blob)
 *                                 per second in software, RSA-2048 and ECC EK
 *   bench_tpm challenge-hsm SECONDS  the same plus sealing and opening the
 *                                 pending challenge with the keyring key in
 *                                 SoftHSM2 (an HMAC key on the token, through
 *                                 the token layer: the provider is not there yet)
 *   bench_tpm register SECONDS    full registrations per second against a
 *                                 swtpm of the token fixture: identity,
 *                                 challenge, ActivateCredential + Import +
 *                                 Load + EvictControl, TPM-signed SAS, verify */
#include "cu_test.h"

#include <custos/fixture.h>
#include <custos/keyring.h>
#include <custos/token.h>
#include <custos/sas.h>
#include <custos/tpmsvc.h>
#include <custos/tpmdev.h>

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *b64_file(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, CU_TPM_VECTORS "/%s", name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    unsigned char buf[2048];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    char *o = malloc(4 * n / 3 + 8);
    EVP_EncodeBlock((unsigned char *)o, buf, (int)n);
    return o;
}

static int bench_challenge(double secs)
{
    char *srk = b64_file("srk.pub");
    const char *eks[] = {"ek-rsa.pub", "ek-ecc.pub"};
    for (int i = 0; i < 2; i++) {
        char *ek = b64_file(eks[i]);
        unsigned n = 0;
        double t0 = now_s(), t;
        do {
            uint8_t key[CU_TPM_ID_KEY_LEN];
            char *blob = NULL;
            if (cu_tpmsvc_challenge_new(ek, srk, NULL, key, &blob) != CU_OK) {
                fprintf(stderr, "%s\n", cu_err_last()->msg);
                return 1;
            }
            free(blob);
            n++;
        } while ((t = now_s() - t0) < secs);
        printf("challenge (%s EK, RSA SRK): %u in %.2f s = %.0f/s\n", i ? "ECC P-256" : "RSA-2048",
               n, t, n / t);
        free(ek);
    }
    free(srk);
    return 0;
}

/* A keyring whose MAC key is an HMAC key in a SoftHSM2 token. */
static cu_rc token_mac(void *ctx, const uint8_t *data, size_t len, uint8_t out[32])
{
    cu_sig s = {.alg = CU_SIG_HMAC, .hash = CU_HASH_SHA256};
    size_t n = 32;
    return cu_sign((cu_object *)ctx, &s, data, len, out, &n);
}
static const cu_keyring_ops token_ops = {"softhsm2", token_mac, NULL};

static int bench_challenge_hsm(double secs)
{
    char *base = cu_test_mkdtemp("tpmbenchhsm"), d[512];
    snprintf(d, sizeof d, "%s/hsm", base);
    cu_fixture *fx = NULL;
    cu_token *t = NULL;
    cu_object *k = NULL;
    cu_keyring *kr = NULL;
    int ret = 1;
    char *srk = b64_file("srk.pub"), *ek = b64_file("ek-rsa.pub");
    if (cu_fixture_create(CU_FIXTURE_SOFTHSM2, d, "bench", "so-pin-1", "user-pin-1", NULL, &fx) !=
            CU_OK ||
        cu_fixture_token_open(fx, "user-pin-1", &t) != CU_OK ||
        cu_token_keygen(t, CU_KEYGEN_HMAC256, "keyring", NULL, 0, &k) != CU_OK ||
        cu_keyring_new(&token_ops, k, &kr) != CU_OK) {
        fprintf(stderr, "%s\n", cu_err_last()->msg);
        goto out;
    }
    unsigned n = 0;
    double t0 = now_s(), el;
    do {
        uint8_t key[CU_TPM_ID_KEY_LEN], back[CU_TPM_ID_KEY_LEN];
        char *blob = NULL, *sealed = NULL;
        time_t now = time(NULL);
        cu_rc rc = cu_tpmsvc_challenge_new(ek, srk, NULL, key, &blob);
        if (rc == CU_OK)
            rc = cu_tpmsvc_challenge_seal(kr, "0ne00BENCH", "dev", ek, (uint64_t)now + 300, key,
                                          &sealed);
        if (rc == CU_OK)
            rc = cu_tpmsvc_challenge_open(kr, "0ne00BENCH", "dev", ek, now, sealed, back);
        free(blob);
        free(sealed);
        if (rc != CU_OK) {
            fprintf(stderr, "%s\n", cu_err_last()->msg);
            goto out;
        }
        n++;
    } while ((el = now_s() - t0) < secs);
    printf("challenge + seal + open, keyring key in SoftHSM2: %u in %.2f s = %.0f/s\n", n, el,
           n / el);
    ret = 0;
out:
    cu_keyring_free(kr);
    cu_object_free(k);
    cu_token_unref(t);
    if (fx != NULL)
        cu_fixture_destroy(fx);
    cu_fixture_free(fx);
    cu_test_rmtree(base);
    free(base);
    free(ek);
    free(srk);
    return ret;
}

static int bench_register(double secs)
{
    char *base = cu_test_mkdtemp("tpmbench"), d[512];
    snprintf(d, sizeof d, "%s/tok", base);
    cu_fixture *fx = NULL;
    cu_fixture_opts fo = {.tpm_direct = true};
    int ret = 1;
    if (cu_fixture_create(CU_FIXTURE_TPM2, d, "bench", "so-pin-1", "user-pin-1", &fo, &fx) !=
        CU_OK) {
        fprintf(stderr, "%s\n", cu_err_last()->msg);
        goto out;
    }
    char tcti[128];
    snprintf(tcti, sizeof tcti, "swtpm:host=127.0.0.1,port=%d", cu_fixture_tpm_port(fx));
    unsigned n = 0;
    double t0 = now_s(), t;
    do {
        cu_tpmdev *dev = NULL;
        char *ek = NULL, *srk = NULL, *blob = NULL, *tok = NULL, regid[CU_TPM_REGID_LEN + 1];
        uint8_t key[CU_TPM_ID_KEY_LEN];
        cu_sas *sas = NULL;
        cu_rc rc = cu_tpmdev_open(tcti, NULL, &dev);
        if (rc == CU_OK)
            rc = cu_tpmdev_identity(dev, &ek, &srk, regid);
        if (rc == CU_OK)
            rc = cu_tpmsvc_challenge_new(ek, srk, NULL, key, &blob);
        if (rc == CU_OK)
            rc = cu_tpmdev_import_blob(dev, blob);
        if (rc == CU_OK)
            rc = cu_tpmdev_sas_token(dev, "0ne00BENCH", regid, (uint64_t)time(NULL) + 60, NULL,
                                     &tok);
        if (rc == CU_OK)
            rc = cu_sas_parse(tok, strlen(tok), &sas);
        if (rc == CU_OK) {
            cu_sas_check chk = {.id_scope = "0ne00BENCH", .registration_id = regid};
            cu_sas_key k = {.key = key, .len = sizeof key};
            rc = cu_sas_verify(sas, &chk, &k, 1, NULL, NULL, 0);
        }
        cu_sas_free(sas);
        free(ek);
        free(srk);
        free(blob);
        free(tok);
        cu_tpmdev_close(dev);
        if (rc != CU_OK) {
            fprintf(stderr, "%s\n", cu_err_last()->msg);
            goto out;
        }
        n++;
    } while ((t = now_s() - t0) < secs);
    printf("full TPM registration on swtpm (library level): %u in %.2f s = %.1f/s\n", n, t, n / t);
    ret = 0;
out:
    if (fx != NULL)
        cu_fixture_destroy(fx);
    cu_fixture_free(fx);
    cu_test_rmtree(base);
    free(base);
    return ret;
}

int main(int argc, char **argv)
{
    double secs = argc > 2 ? atof(argv[2]) : 3;
    if (argc > 1 && strcmp(argv[1], "challenge") == 0)
        return bench_challenge(secs);
    if (argc > 1 && strcmp(argv[1], "challenge-hsm") == 0)
        return bench_challenge_hsm(secs);
    if (argc > 1 && strcmp(argv[1], "register") == 0)
        return bench_register(secs);
    fprintf(stderr, "usage: %s challenge|challenge-hsm|register [SECONDS]\n", argv[0]);
    return 2;
}
