#include "sonde/errors.h"

const char *sonde_strerror(int err) {
  switch (err) {
  case SONDE_OK:
    return "success";
#define SONDE__ERR_MSG(name, val, msg)                                                             \
  case SONDE_E##name:                                                                              \
    return msg;
    SONDE_ERRNO_MAP(SONDE__ERR_MSG)
#undef SONDE__ERR_MSG
  }
  return "unknown error";
}

const char *sonde_err_name(int err) {
  switch (err) {
  case SONDE_OK:
    return "SONDE_OK";
#define SONDE__ERR_NAME(name, val, msg)                                                            \
  case SONDE_E##name:                                                                              \
    return "SONDE_E" #name;
    SONDE_ERRNO_MAP(SONDE__ERR_NAME)
#undef SONDE__ERR_NAME
  }
  return "SONDE_E?";
}
