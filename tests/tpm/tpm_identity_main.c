/* Stand-in for `custos device tpm-identity` until the lead's dispatcher
 * routes it: the same command function, built with the CLI helpers. */
int cu_cmd_device_tpm_identity(int argc, char **argv);

int main(int argc, char **argv)
{
    argv[0] = "tpm-identity";
    return cu_cmd_device_tpm_identity(argc, argv);
}
