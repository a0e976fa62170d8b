/* custos service: what clients need to reach this custosd (id scope, device
 * endpoint, service connection string, CA file), and service SAS tokens. */
#include "cli.h"

#include <custos/server.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cu_cmd_service(int argc, char **argv);

static int open_state(const char *state, const char *config, cu_srv_config *cfg, cu_srv_state **st)
{
    cu_srv_config_init(cfg);
    if (config != NULL && cu_srv_config_load(cfg, config) != CU_OK)
        return cu_cli_fail("%s", cu_err_last()->msg);
    if (state != NULL && cu_srv_config_set(cfg, "state", state) != CU_OK)
        return cu_cli_fail("%s", cu_err_last()->msg);
    if (cu_srv_state_open(cfg, false, st) != CU_OK)
        return cu_cli_fail("%s", cu_err_last()->msg);
    return CU_EXIT_OK;
}

static int cmd_info(int argc, char **argv)
{
    const char *state = NULL, *config = NULL;
    bool json = false, help = false;
    cu_cli_opt opts[] = {
        {"--state", &state, NULL, NULL, NULL, 0}, {"--config", &config, NULL, NULL, NULL, 0},
        {"--json", NULL, &json, NULL, NULL, 0},   {"--help", NULL, &help, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("service info", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos service info [--state DIR] [--config FILE] [--json]\n\n"
               "Prints the id scope, the device endpoint, the service connection string\n"
               "(it holds the policy key: treat the output as a secret) and the CA file\n"
               "clients must trust. The state must exist (start custosd once).\n");
        return CU_EXIT_OK;
    }
    cu_srv_config cfg;
    cu_srv_state *st = NULL;
    cu_srv_info info;
    if ((rc = open_state(state, config, &cfg, &st)) != CU_EXIT_OK)
        goto out;
    cu_srv_info_get(st, &info);
    if (json) {
        printf("{\"idScope\":");
        cu_cli_json_str(stdout, info.id_scope);
        printf(",\"deviceEndpoint\":");
        cu_cli_json_str(stdout, info.endpoint);
        printf(",\"serviceConnectionString\":");
        cu_cli_json_str(stdout, info.connection_string);
        printf(",\"caFile\":");
        cu_cli_json_str(stdout, info.ca_file);
        printf(",\"stateDir\":");
        cu_cli_json_str(stdout, info.state_dir);
        printf("}\n");
    } else {
        printf("id scope:           %s\n"
               "device endpoint:    %s\n"
               "connection string:  %s\n"
               "CA file:            %s\n"
               "state:              %s\n",
               info.id_scope, info.endpoint, info.connection_string, info.ca_file, info.state_dir);
    }
    OPENSSL_cleanse(&info, sizeof info);
out:
    cu_srv_state_free(st);
    cu_srv_config_clear(&cfg);
    return rc;
}

static int cmd_token(int argc, char **argv)
{
    const char *state = NULL, *config = NULL, *ttl_s = NULL;
    bool help = false;
    cu_cli_opt opts[] = {
        {"--state", &state, NULL, NULL, NULL, 0}, {"--config", &config, NULL, NULL, NULL, 0},
        {"--ttl", &ttl_s, NULL, NULL, NULL, 0},   {"--help", NULL, &help, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("service token", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos service token [--state DIR] [--config FILE] [--ttl SECONDS]\n\n"
               "Prints a service SAS token of the policy provisioningserviceowner (for\n"
               "curl: -H \"Authorization: $(custos service token)\"). Default lifetime 3600 s.\n");
        return CU_EXIT_OK;
    }
    long ttl = ttl_s ? strtol(ttl_s, NULL, 10) : 3600;
    if (ttl < 1 || ttl > 365L * 86400)
        return cu_cli_usage("service token", "--ttl must be 1..31536000");
    cu_srv_config cfg;
    cu_srv_state *st = NULL;
    if ((rc = open_state(state, config, &cfg, &st)) != CU_EXIT_OK)
        goto out;
    size_t kl = 0;
    const uint8_t *key = cu_srv_state_policy_key(st, &kl);
    const char *host = cu_srv_state_host(st);
    char msg[400], b64[64], sig[200];
    uint8_t mac[32];
    unsigned ml = 0;
    unsigned long long se = (unsigned long long)time(NULL) + (unsigned long long)ttl;
    snprintf(msg, sizeof msg, "%s\n%llu", host, se);
    HMAC(EVP_sha256(), key, (int)kl, (const unsigned char *)msg, strlen(msg), mac, &ml);
    EVP_EncodeBlock((unsigned char *)b64, mac, 32);
    size_t o = 0;
    for (const char *p = b64; *p && o + 4 < sizeof sig; p++) {
        if (*p == '+' || *p == '/' || *p == '=')
            o += (size_t)snprintf(sig + o, sizeof sig - o, "%%%02X", (unsigned char)*p);
        else
            sig[o++] = *p;
    }
    sig[o] = 0;
    printf("SharedAccessSignature sr=%s&sig=%s&se=%llu&skn=%s\n", host, sig, se, CU_SRV_POLICY);
    OPENSSL_cleanse(mac, sizeof mac);
out:
    cu_srv_state_free(st);
    cu_srv_config_clear(&cfg);
    return rc;
}

int cu_cmd_service(int argc, char **argv)
{
    if (argc < 2 || cu_cli_is_help(argv[1])) {
        FILE *f = argc < 2 ? stderr : stdout;
        fputs("usage: custos service <info|token> [options]\n"
              "  info    id scope, device endpoint, service connection string, CA file\n"
              "  token   a service SAS token for the service API\n",
              f);
        return argc < 2 ? CU_EXIT_USAGE : CU_EXIT_OK;
    }
    if (!strcmp(argv[1], "info"))
        return cmd_info(argc - 1, argv + 1);
    if (!strcmp(argv[1], "token"))
        return cmd_token(argc - 1, argv + 1);
    return cu_cli_usage("service", "unknown subcommand '%s'", argv[1]);
}
