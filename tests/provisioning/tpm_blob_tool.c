/* Test helper: makes an activation for a real TPM's EK and SRK (TPM2B_PUBLIC
 * files as tpm2-tools writes them) and writes the pieces in the formats
 * tpm2_activatecredential / tpm2_import read, plus K for comparison. */
#include <custos/enrollment.h>
#include <custos/prov.h>
#include <custos/state.h>
#include <custos/tpm.h>

#include <openssl/evp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    uint8_t *b = malloc(4097);
    *n = fread(b, 1, 4096, f);
    fclose(f);
    return b;
}

static int spit(const char *dir, const char *name, const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    fwrite(a, 1, al, f);
    if (b)
        fwrite(b, 1, bl, f);
    return fclose(f);
}

static char *b64(const uint8_t *p, size_t n)
{
    char *o = malloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)o, p, (int)n);
    return o;
}

/* Splits an authenticationKey as a device does: six TPM2B fields. */
static int split_blob(const char *blob, const char *dir)
{
    size_t n = strlen(blob);
    uint8_t *raw = malloc(n);
    int len = EVP_DecodeBlock(raw, (const unsigned char *)blob, (int)n);
    if (len < 0)
        return -1;
    while (n > 0 && blob[n - 1] == '=') { /* EVP_DecodeBlock counts padding */
        len--;
        n--;
    }
    size_t off = 0, at[6], sz[6];
    for (int i = 0; i < 6; i++) {
        if (off + 2 > (size_t)len)
            return -1;
        sz[i] = 2 + ((size_t)raw[off] << 8 | raw[off + 1]);
        at[i] = off;
        off += sz[i];
        if (off > (size_t)len)
            return -1;
    }
    if (off != (size_t)len)
        return -1;
    uint8_t hdr[8] = {0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1};
    uint8_t *cred = malloc(8 + sz[0] + sz[1]);
    memcpy(cred, hdr, 8);
    memcpy(cred + 8, raw + at[0], sz[0]);
    memcpy(cred + 8 + sz[0], raw + at[1], sz[1]);
    int rc = spit(dir, "cred.blob", cred, 8 + sz[0] + sz[1], NULL, 0) | spit(dir, "dup.dpriv", raw + at[2], sz[2], NULL, 0) |
             spit(dir, "dup.seed", raw + at[3], sz[3], NULL, 0) | spit(dir, "id.pub", raw + at[4], sz[4], NULL, 0);
    free(cred);
    free(raw);
    return rc;
}

/* challenge STATE EK SRK DIR / register STATE EK SRK TOKENFILE: the engine's
 * TPM flow on a state directory, as custosd would run it. */
static int flow(int argc, char **argv)
{
    bool challenge = strcmp(argv[1], "challenge") == 0;
    size_t en = 0, sn = 0;
    uint8_t *eb = slurp(argv[3], &en), *sb = slurp(argv[4], &sn);
    char *ek = b64(eb, en), *srk = b64(sb, sn), *regid = NULL, reason[512];
    cu_state *st = NULL;
    cu_prov *p = NULL;
    int rc = 1;
    if (argc != 6 || cu_state_open(argv[2], NULL, &st) != CU_OK || cu_tpm_registration_id(ek, &regid) != CU_OK) {
        fprintf(stderr, "flow: %s\n", cu_err_last()->msg);
        return 1;
    }
    cu_prov_config cfg = {.id_scope = cu_state_id_scope(st), .use_default_skew = true};
    cu_prov_new(cu_state_get0_store(st), &cfg, &p);
    cu_prov_request req = {.registration_id = regid, .tpm_ek = ek, .tpm_srk = srk};
    char *token = NULL;
    if (challenge) {
        char js[2048];
        snprintf(js, sizeof js, "{\"registrationId\":\"%s\",\"attestation\":{\"type\":\"tpm\",\"tpm\":"
                 "{\"endorsementKey\":\"%s\"}}}", regid, ek);
        cu_enr *e = NULL;
        if (cu_enr_parse(CU_ENR_INDIVIDUAL, js, strlen(js), &e, reason, sizeof reason) != CU_OK ||
            cu_store_enr_put(cu_state_get0_store(st), e, NULL, 0, reason, sizeof reason) != CU_OK) {
            fprintf(stderr, "enroll: %s\n", reason);
            goto out;
        }
        cu_enr_free(e);
        cu_hub h = {"hub1.example.net", 1, true};
        cu_store_hub_put(cu_state_get0_store(st), &h, NULL, 0);
    } else {
        size_t tn = 0;
        token = (char *)slurp(argv[5], &tn);
        token[tn] = 0;
        req.authorization = token;
    }
    cu_prov_result res;
    if (cu_prov_register(p, &req, &res) != CU_OK) {
        fprintf(stderr, "register: %s\n", cu_err_last()->msg);
        goto out;
    }
    printf("outcome %d http %d: %s\n", res.outcome, res.http_status, res.explain.reason);
    if (challenge && res.outcome == CU_PROV_CHALLENGE && res.tpm_authentication_key != NULL) {
        char sr[300];
        snprintf(sr, sizeof sr, "%s%%2fregistrations%%2f%s", cu_state_id_scope(st), regid);
        rc = split_blob(res.tpm_authentication_key, argv[5]) | spit(argv[5], "sr", (uint8_t *)sr, strlen(sr), NULL, 0);
    } else if (!challenge && res.outcome == CU_PROV_PROVISION && res.tpm_authentication_key != NULL &&
               strcmp(res.record.status, "assigned") == 0) {
        printf("assigned to %s, second authenticationKey %zu chars\n", res.record.assigned_hub,
               strlen(res.tpm_authentication_key));
        rc = 0;
    }
    cu_prov_result_clear(&res);
out:
    free(token);
    free(regid);
    free(ek);
    free(srk);
    free(eb);
    free(sb);
    cu_prov_free(p);
    cu_state_close(st);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "challenge") == 0 || strcmp(argv[1], "register") == 0))
        return flow(argc, argv);
    if (argc != 4) {
        fprintf(stderr, "usage: %s EK.pub SRK.pub OUTDIR | challenge STATE EK SRK DIR | register STATE EK SRK TOKEN\n", argv[0]);
        return 2;
    }
    size_t en = 0, sn = 0;
    uint8_t *eb = slurp(argv[1], &en), *sb = slurp(argv[2], &sn);
    cu_tpm_pub *ek = NULL, *srk = NULL;
    cu_tpm_activation act;
    if (eb == NULL || sb == NULL || cu_tpm_pub_decode_raw(eb, en, &ek) != CU_OK ||
        cu_tpm_pub_decode_raw(sb, sn, &srk) != CU_OK || cu_tpm_activation_make(ek, srk, &act) != CU_OK) {
        fprintf(stderr, "tpm_blob_tool: %s\n", cu_err_last()->msg);
        return 1;
    }
    /* tpm2_makecredential's output: magic, version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET. */
    uint8_t hdr[8] = {0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1};
    size_t cl = act.cred_blob_len + act.enc_secret_len;
    uint8_t *cred = malloc(8 + cl);
    memcpy(cred, hdr, 8);
    memcpy(cred + 8, act.cred_blob, act.cred_blob_len);
    memcpy(cred + 8 + act.cred_blob_len, act.enc_secret, act.enc_secret_len);
    char *blob = cu_tpm_activation_blob(&act);
    int rc = spit(argv[3], "cred.blob", cred, 8 + cl, NULL, 0) | spit(argv[3], "dup.dpriv", act.dup_private, act.dup_private_len, NULL, 0) |
             spit(argv[3], "dup.seed", act.in_sym_seed, act.in_sym_seed_len, NULL, 0) |
             spit(argv[3], "id.pub", act.id_public, act.id_public_len, NULL, 0) |
             spit(argv[3], "key.bin", act.key, 32, NULL, 0) |
             spit(argv[3], "authkey.b64", (uint8_t *)blob, strlen(blob), NULL, 0);
    free(blob);
    free(cred);
    cu_tpm_activation_clear(&act);
    cu_tpm_pub_free(ek);
    cu_tpm_pub_free(srk);
    free(eb);
    free(sb);
    return rc ? 1 : 0;
}
