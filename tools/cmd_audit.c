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
    int rc = cu_cli_dispatch("audit", NULL, cmds, sizeof cmds / sizeof cmds[0], argc, argv);
    cu_p11_shutdown();
    return rc;
}
