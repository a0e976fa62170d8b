/* A stand-in dispatcher for the provisioning commands, so that they are
 * tested before the lead's `custos` (tools/custos.c) links on this branch.
 * The real binary uses the same cu_cmd_* functions. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

int cu_cmd_enrollment(int argc, char **argv);
int cu_cmd_group(int argc, char **argv);
int cu_cmd_ca(int argc, char **argv);
int cu_cmd_registration(int argc, char **argv);
int cu_cmd_hub(int argc, char **argv);
int cu_cmd_pki(int argc, char **argv);

static const cu_cli_group groups[] = {
    {"enrollment", "", cu_cmd_enrollment}, {"group", "", cu_cmd_group},
    {"ca", "", cu_cmd_ca},                 {"registration", "", cu_cmd_registration},
    {"hub", "", cu_cmd_hub},               {"pki", "", cu_cmd_pki},
};

int main(int argc, char **argv)
{
    if (argc < 2)
        return CU_EXIT_USAGE;
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if (strcmp(argv[1], groups[i].name) == 0)
            return groups[i].run(argc - 1, argv + 1);
    fprintf(stderr, "custos-prov: unknown command '%s'\n", argv[1]);
    return CU_EXIT_USAGE;
}
