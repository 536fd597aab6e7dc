// libnftables (nftables' library; libnftables-dev): nft_ctx_new, nft_run_cmd_from_buffer with
// JSON input (libnftables-json(5)), buffered output and errors.
#include <nftables/libnftables.h>
