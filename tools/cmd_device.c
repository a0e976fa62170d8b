/* custos device register: one device registration, as a device would make
 * it, with keys from files, tokens or a TPM. Exit status: 0 assigned, 3
 * refused, 4 failed (the service could not assign, e.g. no hub), 1 error, 2
 * usage. `custos device tpm-identity` is in cmd_device_tpm.c. */
#include "cli.h"

#include <custos/device.h>
#include <custos/fixture.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cu_cmd_device(int argc, char **argv);
/* cmd_device_tpm.c */
int cu_cmd_device_tpm_identity(int argc, char **argv);
int cu_cmd_device_tpm_dir(const char *dir, char *tcti, size_t n, cu_fixture **_fx);

enum { EXIT_REFUSED = 3, EXIT_FAILED = 4 };

static void usage(FILE *f)
{
    fputs("usage: custos device register --scope SCOPE --host HOST[:PORT] --ca FILE\n"
          "         (--x509 --cert FILE --key URI|FILE\n"
          "          | --symmetric-key URI | --key-file FILE\n"
          "          | --tpm [--tcti TCTI | --dir TOKEN_DIR] [--srk-handle H] [--ek rsa|ecc])\n"
          "         [--registration-id ID] [--group]\n"
          "         [--payload JSON] [--api-version V] [--timeout SECONDS] [--json]\n"
          "       custos device tpm-identity [--tcti TCTI | --dir TOKEN_DIR] [--ek rsa|ecc] [--json]\n\n"
          "Registers one device and polls until the service answers for good.\n"
          "  --x509             TLS client certificate: --cert is a PEM with the leaf first and\n"
          "                     the intermediates to send; --key a PEM file or a pkcs11: URI\n"
          "  --symmetric-key    the HMAC key in a token (pkcs11: URI)\n"
          "  --key-file         a file holding the base64 key\n"
          "  --group            the key is an enrollment group's: derive the device key\n"
          "  --tpm              TPM 2.0: EK and SRK sent, the challenge activated and the SAS\n"
          "                     signed inside the TPM, the hub key imported into it\n"
          "  --tcti TCTI        the TPM (default $CUSTOS_TPM_TCTI, else tpm2-tss's default)\n"
          "  --dir TOKEN_DIR    the swtpm of a tpm2 token directory (custos token init --kind tpm2)\n"
          "  --srk-handle H     persistent handle of the SRK (default 0x81000001, as the SDKs;\n"
          "                     an RSA-2048 SRK is created there if it is empty)\n"
          "  --ek rsa|ecc       the endorsement key: RSA-2048 (default, as the public service)\n"
          "                     or ECC P-256 (a Custos extension)\n"
          "  --registration-id  required for symmetric keys; X.509 default: the leaf's CN;\n"
          "                     TPM default: base32 of SHA-256 of the EK\n"
          "Exit status: 0 assigned, 3 refused, 4 failed (not assigned), 1 error, 2 usage.\n",
          f);
}

static void print_json(const cu_dev_result *r)
{
    printf("{\"result\":");
    cu_cli_json_str(stdout, cu_dev_outcome_str(r->outcome));
    printf(",\"httpStatus\":%d,\"registrationId\":", r->http_status);
    cu_cli_json_str(stdout, r->registration_id);
    printf(",\"status\":");
    cu_cli_json_str(stdout, r->status);
    printf(",\"assignedHub\":");
    cu_cli_json_str(stdout, r->assigned_hub);
    printf(",\"deviceId\":");
    cu_cli_json_str(stdout, r->device_id);
    printf(",\"substatus\":");
    cu_cli_json_str(stdout, r->substatus);
    printf(",\"operationId\":");
    cu_cli_json_str(stdout, r->operation_id);
    printf(",\"errorCode\":%d,\"message\":", r->error_code);
    cu_cli_json_str(stdout, r->message);
    printf(",\"polls\":%u}\n", r->polls);
}

static int cmd_register(int argc, char **argv)
{
    const char *scope = NULL, *host = NULL, *ca = NULL, *cert = NULL, *key = NULL, *symkey = NULL,
               *key_file = NULL, *regid = NULL, *payload = NULL, *apiv = NULL, *timeout = NULL,
               *tcti = NULL, *dir = NULL, *srk = NULL, *ek = NULL;
    bool x509 = false, group = false, json = false, help = false, tpm = false;
    char tcti_buf[96];
    cu_fixture *fx = NULL;
    unsigned long srk_handle = 0;
    cu_cli_opt opts[] = {
        {"--scope", &scope, NULL, NULL, NULL, 0},
        {"--host", &host, NULL, NULL, NULL, 0},
        {"--ca", &ca, NULL, NULL, NULL, 0},
        {"--x509", NULL, &x509, NULL, NULL, 0},
        {"--cert", &cert, NULL, NULL, NULL, 0},
        {"--key", &key, NULL, NULL, NULL, 0},
        {"--symmetric-key", &symkey, NULL, NULL, NULL, 0},
        {"--key-file", &key_file, NULL, NULL, NULL, 0},
        {"--tpm", NULL, &tpm, NULL, NULL, 0},
        {"--tcti", &tcti, NULL, NULL, NULL, 0},
        {"--dir", &dir, NULL, NULL, NULL, 0},
        {"--srk-handle", &srk, NULL, NULL, NULL, 0},
        {"--ek", &ek, NULL, NULL, NULL, 0},
        {"--registration-id", &regid, NULL, NULL, NULL, 0},
        {"--group", NULL, &group, NULL, NULL, 0},
        {"--payload", &payload, NULL, NULL, NULL, 0},
        {"--api-version", &apiv, NULL, NULL, NULL, 0},
        {"--timeout", &timeout, NULL, NULL, NULL, 0},
        {"--json", NULL, &json, NULL, NULL, 0},
        {"--help", NULL, &help, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("device register", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        usage(stdout);
        return CU_EXIT_OK;
    }
    if (scope == NULL || host == NULL || ca == NULL)
        return cu_cli_usage("device register", "--scope, --host and --ca are required");
    int kinds = (x509 ? 1 : 0) + (symkey ? 1 : 0) + (key_file ? 1 : 0) + (tpm ? 1 : 0);
    if (kinds != 1)
        return cu_cli_usage("device register", "give exactly one of --x509, --symmetric-key, --key-file, --tpm");
    if (x509 && (cert == NULL || key == NULL))
        return cu_cli_usage("device register", "--x509 needs --cert FILE and --key URI|FILE");
    if (!x509 && !tpm && regid == NULL)
        return cu_cli_usage("device register", "a symmetric key needs --registration-id");
    if ((x509 || tpm) && group)
        return cu_cli_usage("device register", "--group applies to symmetric keys");
    if (!tpm && (tcti || dir || srk || ek))
        return cu_cli_usage("device register", "--tcti, --dir, --srk-handle and --ek apply to --tpm");
    if (ek != NULL && strcmp(ek, "rsa") != 0 && strcmp(ek, "ecc") != 0)
        return cu_cli_usage("device register", "--ek takes rsa or ecc, not '%s'", ek);
    if (tcti && dir)
        return cu_cli_usage("device register", "--tcti and --dir exclude each other");
    if (srk != NULL) {
        char *end = NULL;
        errno = 0;
        srk_handle = strtoul(srk, &end, 0);
        /* A persistent handle (TPM 2.0 Part 2: 0x81000000-0x817FFFFF, the owner's range). */
        if (errno || end == srk || *end || srk_handle < 0x81000000ul || srk_handle > 0x817FFFFFul)
            return cu_cli_usage("device register", "--srk-handle takes a persistent handle "
                                "(0x81000000-0x817fffff), not '%s'", srk);
    }
    if (dir != NULL) {
        if ((rc = cu_cmd_device_tpm_dir(dir, tcti_buf, sizeof tcti_buf, &fx)) != CU_EXIT_OK)
            return rc;
        tcti = tcti_buf;
    }
    cu_dev_config cfg = {.host = host, .id_scope = scope, .ca_file = ca, .registration_id = regid,
                         .cert_file = x509 ? cert : NULL, .key = x509 ? key : NULL, .symkey_uri = symkey,
                         .key_file = key_file, .group = group, .payload_json = payload, .api_version = apiv,
                         .timeout = timeout ? (unsigned)strtoul(timeout, NULL, 10) : 0, .tpm = tpm,
                         .tpm_tcti = tcti, .tpm_srk_handle = (uint32_t)srk_handle,
                         .tpm_ek_ecc = ek != NULL && strcmp(ek, "ecc") == 0};
    cu_dev_result res;
    cu_dev_register(&cfg, &res);
    if (json) {
        print_json(&res);
    } else if (res.outcome == CU_DEV_ASSIGNED) {
        printf("assigned: %s -> %s (device id %s, %s)\n", res.registration_id, res.assigned_hub, res.device_id,
               res.substatus);
    } else if (res.outcome == CU_DEV_ERROR) {
        fprintf(stderr, "custos: registration%s%s failed: %s\n", res.registration_id[0] ? " of " : "",
                res.registration_id, res.message);
    } else {
        printf("%s: %s (HTTP %d, error %d: %s)\n", cu_dev_outcome_str(res.outcome), res.registration_id,
               res.http_status, res.error_code, res.message[0] ? res.message : res.status);
    }
    int status = res.outcome == CU_DEV_ASSIGNED  ? CU_EXIT_OK
                 : res.outcome == CU_DEV_REFUSED ? EXIT_REFUSED
                 : res.outcome == CU_DEV_FAILED  ? EXIT_FAILED
                                                 : CU_EXIT_FAIL;
    cu_dev_result_clear(&res);
    cu_fixture_free(fx); /* the token's swtpm keeps running */
    return status;
}

int cu_cmd_device(int argc, char **argv)
{
    if (argc < 2 || cu_cli_is_help(argv[1])) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CU_EXIT_USAGE : CU_EXIT_OK;
    }
    if (!strcmp(argv[1], "register"))
        return cmd_register(argc - 1, argv + 1);
    if (!strcmp(argv[1], "tpm-identity"))
        return cu_cmd_device_tpm_identity(argc - 1, argv + 1);
    return cu_cli_usage("device", "unknown subcommand '%s'", argv[1]);
}
