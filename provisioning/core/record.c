/* Registration records: the public JSON shape. */
#include <custos/record.h>

#include "prov_int.h"

#include <stdlib.h>
#include <string.h>

void cu_reg_record_clear(cu_reg_record *r)
{
    if (r == NULL)
        return;
    free(r->payload_json);
    memset(r, 0, sizeof *r);
}

char *cu_reg_record_to_json(const cu_reg_record *r, bool compact)
{
    if (r == NULL)
        return NULL;
    json_t *j = cu_prov__reg_record_json(r, false);
    char *s = j ? json_dumps(j, JSON_PRESERVE_ORDER | (compact ? JSON_COMPACT : JSON_INDENT(2))) : NULL;
    json_decref(j);
    return s;
}
