/* custos audit: the custody report and the audit log (cmd_audit_log.c). */
#include "cli.h"

#include <custos/token.h>
#include <stdio.h>
#include <string.h>

int cu_cmd_audit_custody(int argc, char **argv);
int cu_cmd_audit_verify(int argc, char **argv);
int cu_cmd_audit_export(int argc, char **argv);
int cu_cmd_audit_sign(int argc, char **argv);
int cu_cmd_audit(int argc, char **argv);

int cu_cmd_audit(int argc, char **argv)
{
    static const cu_cli_group cmds[] = {
        {"custody", "where every key lives and whether it could have left its token", cu_cmd_audit_custody},
        {"verify", "check the audit log's hash chain and signed heads", cu_cmd_audit_verify},
        {"export", "the audit log as JSON lines (--since TIME | --since-seq N)", cu_cmd_audit_export},
        {"sign", "sign the audit log's head now with the audit key", cu_cmd_audit_sign},
    };
    int rc = cu_cli_dispatch("audit", NULL, cmds, sizeof cmds / sizeof cmds[0], argc, argv);
    cu_p11_shutdown();
    return rc;
}
