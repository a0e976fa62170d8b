/* custos: the command line. Each command group lives in cmd_<group>.c. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

int cu_cmd_token(int argc, char **argv);
int cu_cmd_pki(int argc, char **argv);
int cu_cmd_enrollment(int argc, char **argv);
int cu_cmd_group(int argc, char **argv);
int cu_cmd_ca(int argc, char **argv);
int cu_cmd_hub(int argc, char **argv);
int cu_cmd_registration(int argc, char **argv);
int cu_cmd_audit(int argc, char **argv);
int cu_cmd_bench(int argc, char **argv);
int cu_cmd_device(int argc, char **argv);
int cu_cmd_service(int argc, char **argv);
int cu_cmd_store(int argc, char **argv);

static const cu_cli_group groups[] = {
    {"token", "PKCS#11 tokens: init, list, keygen, import, objects, custody, check", cu_cmd_token},
    {"pki", "test certificate chains (root, factory, line, devices)", cu_cmd_pki},
    {"enrollment", "individual enrollments: create, show, list, update, delete, import, explain", cu_cmd_enrollment},
    {"group", "enrollment groups", cu_cmd_group},
    {"ca", "CA certificates and their proof of possession", cu_cmd_ca},
    {"hub", "hubs and their allocation weights", cu_cmd_hub},
    {"registration", "registration records", cu_cmd_registration},
    {"audit", "custody report", cu_cmd_audit},
    {"bench", "benchmarks: sign, load, tls, s_server", cu_cmd_bench},
    {"device", "device client: register a device with a provisioning service", cu_cmd_device},
    {"service", "custosd service: info (id scope, endpoint, connection string, CA), token", cu_cmd_service},
    {"store", "the store: migrate an SQLite state into PostgreSQL", cu_cmd_store},
};

static void usage(FILE *f)
{
    fputs("usage: custos <command> [options]\n\ncommands:\n", f);
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        fprintf(f, "  %-14s %s\n", groups[i].name, groups[i].summary);
    fputs("\nEvery command takes --help.\n", f);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CU_EXIT_USAGE;
    }
    if (cu_cli_is_help(argv[1])) {
        usage(stdout);
        return CU_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if (strcmp(argv[1], groups[i].name) == 0)
            return groups[i].run(argc - 1, argv + 1);
    fprintf(stderr, "custos: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return CU_EXIT_USAGE;
}
