/* fail_alone: a helper of test_one_rank.sh, not a test. Rank 1 meets an error that the others
 * never see while they wait in a collective. Mode "fail": rank 1 calls comm_fail (a caller
 * breaking its contract); "if_any": comm_fail_if_any with rank 1's error. Either way the job
 * must end within seconds, non-zero, with rank 1's message. */
#include "comm.h"
#include <string.h>

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "fail_alone");
    const char *mode = argc > 1 ? argv[1] : "fail";
    if (comm_rank() == 1 && strcmp(mode, "fail") == 0) comm_fail("rank 1 alone: comm_fail");
    if (comm_rank() == 1) comm_fail_if_any("rank 1 alone: comm_fail_if_any");
    comm_barrier(); /* the others: a collective that rank 1 never joins */
    comm_finalize();
    return 0;
}
