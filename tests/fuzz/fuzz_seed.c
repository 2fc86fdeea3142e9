/*
 * The libFuzzer initializer shared by the targets that need nothing but
 * jansson's hash seed fixed, so that a crashing input replays the same
 * way (object iteration order depends on the seed).
 */
#include <jansson.h>

int	 LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	json_object_seed(1);
	return 0;
}
