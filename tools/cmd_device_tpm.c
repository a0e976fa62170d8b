/* custos device tpm-identity: what an operator needs to enroll a TPM device
 * before it first connects: its endorsement key in the form an enrollment
 * takes (attestation.tpm.endorsementKey, base64 of the marshalled
 * TPM2B_PUBLIC) and its default registration id (PROTOCOL.md §3.1).
 * tools/cmd_device.c calls cu_cmd_device_tpm_identity for
 * `custos device tpm-identity ...` with argv[0] = "tpm-identity". */
#include "cli.h"

#include <custos/fixture.h>
#include <custos/tpmsvc.h>
#include <custos/tpmdev.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cu_cmd_device_tpm_identity(int argc, char **argv);
int cu_cmd_device_tpm_dir(const char *dir, char *tcti, size_t n, cu_fixture **_fx);

/* The TCTI of a tpm2 token directory's swtpm (custos token init --kind
 * tpm2): started if it is not running; through its tpm2-abrmd when it has
 * one (the fixture puts its D-Bus address in the environment). *_fx stays
 * open while the TPM is used (free with cu_fixture_free). Also used by
 * `custos device register --tpm --dir`. */
int cu_cmd_device_tpm_dir(const char *dir, char *tcti, size_t n, cu_fixture **_fx)
{
    cu_fixture *fx = NULL;
    *_fx = NULL;
    if (cu_fixture_open(dir, &fx) != CU_OK)
        return cu_cli_fail("%s", cu_err_last()->msg);
    if (cu_fixture_get_kind(fx) != CU_FIXTURE_TPM2) {
        int rc = cu_cli_fail("%s is a %s token, not a tpm2 one", dir, cu_fixture_kind_str(cu_fixture_get_kind(fx)));
        cu_fixture_free(fx);
        return rc;
    }
    if (cu_fixture_tpm_has_rm(fx))
        snprintf(tcti, n, "tabrmd:bus_type=session");
    else
        snprintf(tcti, n, "swtpm:host=127.0.0.1,port=%d", cu_fixture_tpm_port(fx));
    *_fx = fx;
    return CU_EXIT_OK;
}

static void usage(FILE *f)
{
    fputs("usage: custos device tpm-identity [--tcti TCTI | --dir TOKEN_DIR] [--ek rsa|ecc]\n"
          "                                   [--ek-cert-out FILE] [--json]\n\n"
          "Prints the TPM's endorsement key as an individual enrollment takes it\n"
          "(attestation.tpm.endorsementKey: base64 of the marshalled TPM2B_PUBLIC) and\n"
          "the default registration id (lower-case base32 of SHA-256 of that key), so\n"
          "that the device can be enrolled before it first connects. The EK is read\n"
          "from its persistent handle (0x81010001 RSA, 0x81010002 ECC), or created from\n"
          "the TCG default template and persisted there if the TPM has none yet.\n\n"
          "  --tcti TCTI   the TPM, as tpm2-tss names it: swtpm:host=127.0.0.1,port=2321,\n"
          "                device:/dev/tpmrm0, tabrmd:bus_type=session\n"
          "                (default: $CUSTOS_TPM_TCTI, else tpm2-tss's default)\n"
          "  --dir DIR     the swtpm of a tpm2 token directory (custos token init --kind\n"
          "                tpm2), started if it is not running, through its resource\n"
          "                manager when it has one\n"
          "  --ek rsa|ecc  RSA-2048 (default, what the public service supports) or\n"
          "                ECC NIST P-256 (a Custos extension)\n"
          "  --ek-cert-out FILE  also write the EK certificate the manufacturer stored in\n"
          "                NV (PEM), for `custos enrollment create --ek-cert` (an error\n"
          "                when the TPM has none)\n"
          "  --json        {\"registrationId\",\"endorsementKey\",\"ekType\",\"tcti\"}\n",
          f);
}

/* The EK certificate from NV, as PEM. */
static int write_ek_cert(cu_tpmdev *dev, const char *path)
{
    uint8_t *der = NULL;
    size_t n = 0;
    cu_rc r = cu_tpmdev_ek_cert(dev, &der, &n);
    if (r == CU_E_OBJECT_NOT_FOUND)
        return cu_cli_fail("this TPM has no EK certificate in NV");
    if (r != CU_OK)
        return cu_cli_fail("%s", cu_err_last()->msg);
    const uint8_t *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)n);
    FILE *f = x ? fopen(path, "w") : NULL;
    int rc = CU_EXIT_OK;
    if (x == NULL)
        rc = cu_cli_fail("the EK certificate in NV is not DER X.509");
    else if (f == NULL)
        rc = cu_cli_fail("%s: cannot write", path);
    else if (PEM_write_X509(f, x) != 1)
        rc = cu_cli_fail("%s: cannot write the certificate", path);
    if (f != NULL && fclose(f) != 0 && rc == CU_EXIT_OK)
        rc = cu_cli_fail("%s: cannot write", path);
    X509_free(x);
    free(der);
    return rc;
}

int cu_cmd_device_tpm_identity(int argc, char **argv)
{
    const char *tcti = NULL, *ek_kind = "rsa", *dir = NULL, *cert_out = NULL;
    char tcti_buf[96];
    cu_fixture *fx = NULL;
    bool json = false, help = false;
    cu_cli_opt opts[] = {
        {"--tcti", &tcti, NULL, NULL, NULL, 0},  {"--ek", &ek_kind, NULL, NULL, NULL, 0},
        {"--dir", &dir, NULL, NULL, NULL, 0},    {"--ek-cert-out", &cert_out, NULL, NULL, NULL, 0},
        {"--json", NULL, &json, NULL, NULL, 0},  {"--help", NULL, &help, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("device tpm-identity", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        usage(stdout);
        return CU_EXIT_OK;
    }
    cu_tpmdev_opts o = {.ek = CU_TPMDEV_EK_RSA};
    if (strcmp(ek_kind, "ecc") == 0)
        o.ek = CU_TPMDEV_EK_ECC;
    else if (strcmp(ek_kind, "rsa") != 0)
        return cu_cli_usage("device tpm-identity", "--ek takes rsa or ecc, not '%s'", ek_kind);
    if (tcti != NULL && dir != NULL)
        return cu_cli_usage("device tpm-identity", "--tcti and --dir exclude each other");
    if (dir != NULL && (rc = cu_cmd_device_tpm_dir(dir, tcti_buf, sizeof tcti_buf, &fx)) != CU_EXIT_OK)
        return rc;
    if (dir != NULL)
        tcti = tcti_buf;
    if (tcti == NULL)
        tcti = getenv("CUSTOS_TPM_TCTI");
    /* tpm2-tss logs its own errors to stderr; ours say the same, once. */
    setenv("TSS2_LOG", "all+none", 0);

    cu_tpmdev *dev = NULL;
    char *ek = NULL, regid[CU_TPM_REGID_LEN + 1];
    if (cu_tpmdev_open(tcti, &o, &dev) != CU_OK ||
        cu_tpmdev_identity(dev, &ek, NULL, regid) != CU_OK) {
        rc = cu_cli_fail("%s", cu_err_last()->msg);
        goto cleanup;
    }
    if (cert_out != NULL && (rc = write_ek_cert(dev, cert_out)) != CU_EXIT_OK)
        goto cleanup;
    if (json) {
        fputs("{\"registrationId\":", stdout);
        cu_cli_json_str(stdout, regid);
        fputs(",\"endorsementKey\":", stdout);
        cu_cli_json_str(stdout, ek);
        printf(",\"ekType\":\"%s\",\"tcti\":", o.ek == CU_TPMDEV_EK_RSA ? "rsa2048" : "ecc-p256");
        if (tcti != NULL)
            cu_cli_json_str(stdout, tcti);
        else
            fputs("null", stdout);
        fputs("}\n", stdout);
    } else {
        printf("registration id:  %s\n", regid);
        printf("endorsement key:  %s\n", ek);
        printf("EK type:          %s\n", o.ek == CU_TPMDEV_EK_RSA ? "RSA-2048" : "ECC P-256");
    }
cleanup:
    free(ek);
    cu_tpmdev_close(dev);
    cu_fixture_free(fx); /* the swtpm keeps running, like after `token init` */
    return rc;
}
