/* custos audit: the custody report (the audit log commands join it). */
#include "cli.h"

#include <custos/token.h>
#include <stdio.h>
#include <string.h>

int cu_cmd_audit_custody(int argc, char **argv);
int cu_cmd_audit(int argc, char **argv);

int cu_cmd_audit(int argc, char **argv)
{
    static const cu_cli_group cmds[] = {
        {"custody", "where every key lives and whether it could have left its token", cu_cmd_audit_custody},
    };
    if (argc < 2 || cu_cli_is_help(argv[1])) {
        FILE *f = argc < 2 ? stderr : stdout;
        fputs("usage: custos audit <command> [options]\n\ncommands:\n", f);
        for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
            fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].summary);
        return argc < 2 ? CU_EXIT_USAGE : CU_EXIT_OK;
    }
    int rc = -1;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            rc = cmds[i].run(argc - 1, argv + 1);
    if (rc == -1)
        rc = cu_cli_usage("audit", "unknown audit command '%s'", argv[1]);
    cu_p11_shutdown();
    return rc;
}
