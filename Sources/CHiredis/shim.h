#ifndef CHIREDIS_SHIM_H
#define CHIREDIS_SHIM_H

// hiredis is used only as the RESP2 codec: redisFormatCommandArgv encodes,
// redisReader* decodes. Socket I/O is done in Swift.
#include <hiredis/hiredis.h>

#endif
