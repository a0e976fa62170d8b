/* custos group …: enrollment groups (the code is shared with `enrollment`). */
#include "cli.h"

#include <custos/enrollment.h>

int cu_pcli_enr(cu_enr_kind kind, int argc, char **argv);

int cu_cmd_group(int argc, char **argv)
{
    return cu_pcli_enr(CU_ENR_GROUP, argc, argv);
}
