/* Shared helpers of the `custos` command line. */
#ifndef CU_CLI_H
#define CU_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* A command group: `custos <name> ...`. Returns the process exit status. */
typedef struct cu_cli_group {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} cu_cli_group;

/* Exit statuses shared by every command. */
enum { CU_EXIT_OK = 0, CU_EXIT_FAIL = 1, CU_EXIT_USAGE = 2 };

/* Prints "custos: <message>" to stderr; returns CU_EXIT_FAIL. */
int cu_cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints a usage error and a hint; returns CU_EXIT_USAGE. */
int cu_cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* True if argv[i] is -h or --help. */
bool cu_cli_is_help(const char *arg);

/* Reads a PIN: from the file named by pin_source (if not NULL), else from the
 * environment variable env (CUSTOS_PIN / CUSTOS_SO_PIN), else from a prompt when
 * stdin is a terminal. Never from argv. Returns a heap string (free with
 * cu_cli_pin_free) or NULL with a message printed. */
char *cu_cli_read_pin(const char *pin_source, const char *env, const char *prompt);
void cu_cli_pin_free(char *pin);

/* One option of a command: "--name VALUE", "--name=VALUE", or a flag. */
typedef struct cu_cli_opt {
    const char *name;    /* "--type" */
    const char **value;  /* receives the value (NULL for a flag) */
    bool *flag;          /* set for a flag (NULL for a valued option) */
    const char **list;   /* repeatable: values appended here ... */
    size_t *n_list;      /* ... up to max_list */
    size_t max_list;
} cu_cli_opt;

/* Parses argv[1..] (argv[0] is the command name) against a NULL-terminated
 * option table; other arguments are positional (at most max_pos). Refuses
 * unknown options and any "--pin"/"--so-pin" option (PINs never come from
 * argv). Returns CU_EXIT_OK or prints a usage error and returns CU_EXIT_USAGE. */
int cu_cli_parse(const char *cmd, int argc, char **argv, const cu_cli_opt *opts, const char **pos,
                 size_t max_pos, size_t *_npos);

/* Runs `custos GROUP CMD ...`: argv[1] names one of cmds (n entries). With no
 * command or --help it prints usage (or, when usage is NULL, the commands and
 * their summaries). Returns the command's exit status. */
int cu_cli_dispatch(const char *group, const char *usage, const cu_cli_group *cmds, size_t n, int argc,
                    char **argv);

/* Who acts, for the audit log: "cli:<user>@<host>" (returns buf). */
const char *cu_cli_actor(char *buf, size_t len);

/* JSON string output with escaping. */
void cu_cli_json_str(FILE *f, const char *s);

#endif
