/* Helper of vectors/make-vectors.sh: builds an authenticationKey blob with
 * the deterministic RNG (kat_rng.h) and writes it whole and in the file
 * formats tpm2-tools reads, so that swtpm can check it.
 *
 *   test_tpm_kat_tool blob EK.pub SRK.pub KEYHEX OUTPREFIX
 * writes OUTPREFIX.blob (the raw blob), .cred (tpm2-tools credential file:
 * BADCC0DE header + fields 1 and 2), .dup (field 3), .seed (field 4),
 * .keypub (field 5). */
#include "kat_rng.h"

#include <custos/tpmsvc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t *slurp(const char *path, size_t *_len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    uint8_t *b = malloc(65536);
    size_t n = b ? fread(b, 1, 65536, f) : 0;
    fclose(f);
    *_len = n;
    return b;
}

static int spit(const char *prefix, const char *ext, const void *a, size_t alen, const void *b,
                size_t blen)
{
    char path[1024];
    snprintf(path, sizeof path, "%s%s", prefix, ext);
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    int ok = fwrite(a, 1, alen, f) == alen && (blen == 0 || fwrite(b, 1, blen, f) == blen);
    return fclose(f) == 0 && ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 6 || strcmp(argv[1], "blob") != 0) {
        fprintf(stderr, "usage: %s blob EK.pub SRK.pub KEYHEX OUTPREFIX\n", argv[0]);
        return 2;
    }
    size_t ek_len = 0, srk_len = 0;
    uint8_t *ekb = slurp(argv[2], &ek_len), *srkb = slurp(argv[3], &srk_len);
    cu_tpmsvc_pub *ek = NULL, *srk = NULL;
    uint8_t key[CU_TPM_KEY_MAX];
    size_t key_len = strlen(argv[4]) / 2;
    for (size_t i = 0; i < key_len && i < sizeof key; i++)
        sscanf(argv[4] + 2 * i, "%2hhx", &key[i]);
    if (ekb == NULL || srkb == NULL || cu_tpmsvc_pub_parse(ekb, ek_len, &ek) != CU_OK ||
        cu_tpmsvc_pub_parse(srkb, srk_len, &srk) != CU_OK) {
        fprintf(stderr, "kat_tool: %s\n", cu_err_last()->msg);
        return 1;
    }
    kat_rng rng = {.label = KAT_LABEL};
    cu_tpmsvc_blob_opts opts = {.rng = kat_rng_fill, .rng_ctx = &rng};
    uint8_t *blob = NULL;
    size_t len = 0;
    cu_tpmsvc_blob_fields f;
    if (cu_tpmsvc_blob_build(ek, srk, key, key_len, &opts, &blob, &len) != CU_OK ||
        cu_tpmsvc_blob_split(blob, len, &f) != CU_OK) {
        fprintf(stderr, "kat_tool: %s\n", cu_err_last()->msg);
        return 1;
    }
    static const uint8_t hdr[8] = {0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1};
    uint8_t *cred = malloc(8 + f.id_object_len + f.enc_secret_len);
    memcpy(cred, hdr, 8);
    memcpy(cred + 8, f.id_object, f.id_object_len);
    memcpy(cred + 8 + f.id_object_len, f.enc_secret, f.enc_secret_len);
    int rc = spit(argv[5], ".blob", blob, len, NULL, 0) ||
             spit(argv[5], ".cred", cred, 8 + f.id_object_len + f.enc_secret_len, NULL, 0) ||
             spit(argv[5], ".dup", f.dup_private, f.dup_private_len, NULL, 0) ||
             spit(argv[5], ".seed", f.sym_seed, f.sym_seed_len, NULL, 0) ||
             spit(argv[5], ".keypub", f.key_public, f.key_public_len, NULL, 0);
    free(cred);
    free(blob);
    free(ekb);
    free(srkb);
    cu_tpmsvc_pub_free(ek);
    cu_tpmsvc_pub_free(srk);
    return rc ? 1 : 0;
}
