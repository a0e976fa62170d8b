/* The device side of tests/tpm/custosd.sh, on custos_tpmdev:
 *   test_tpm_devtool TCTI SRK_HANDLE ids                 EK, SRK (base64) and
 *                                                        the registration id
 *   test_tpm_devtool TCTI SRK_HANDLE import BLOB_FILE    the authenticationKey
 *                                                        (base64 in the file)
 *   test_tpm_devtool TCTI SRK_HANDLE sas SCOPE ID EXPIRY the TPM-signed SAS
 * Exit 0 on success, 3 when the TPM said TPM_RC_INTEGRITY, 1 otherwise (the
 * reason on stderr). */
#include <custos/tpmdev.h>
#include <custos/tpmsvc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s TCTI SRK_HANDLE ids|import FILE|sas SCOPE ID EXPIRY\n",
                argv[0]);
        return 2;
    }
    setenv("TSS2_LOG", "all+none", 0);
    cu_tpmdev_opts o = {.ek = CU_TPMDEV_EK_RSA,
                        .srk_handle = (uint32_t)strtoul(argv[2], NULL, 0)};
    cu_tpmdev *dev = NULL;
    cu_rc rc = cu_tpmdev_open(argv[1], &o, &dev);
    char *ek = NULL, *srk = NULL, *tok = NULL, regid[CU_TPM_REGID_LEN + 1];
    if (rc == CU_OK && strcmp(argv[3], "ids") == 0) {
        if ((rc = cu_tpmdev_identity(dev, &ek, &srk, regid)) == CU_OK)
            printf("%s\n%s\n%s\n", ek, srk, regid);
    } else if (rc == CU_OK && strcmp(argv[3], "import") == 0 && argc == 5) {
        FILE *f = fopen(argv[4], "r");
        char buf[16384];
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f)
            fclose(f);
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
            n--;
        buf[n] = '\0';
        rc = cu_tpmdev_import_blob(dev, buf);
    } else if (rc == CU_OK && strcmp(argv[3], "sas") == 0 && argc == 7) {
        if ((rc = cu_tpmdev_sas_token(dev, argv[4], argv[5], strtoull(argv[6], NULL, 10), NULL,
                                      &tok)) == CU_OK)
            printf("%s\n", tok);
    } else if (rc == CU_OK) {
        fprintf(stderr, "unknown command %s\n", argv[3]);
        rc = CU_E_INVALID_ARG;
    }
    int status = 0;
    if (rc != CU_OK) {
        fprintf(stderr, "device: %s\n", cu_err_last()->msg);
        status = cu_tpmdev_rc_is_integrity(cu_tpmdev_last_tpm_rc(dev)) ? 3 : 1;
    }
    free(ek);
    free(srk);
    free(tok);
    cu_tpmdev_close(dev);
    return status;
}
