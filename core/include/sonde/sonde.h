/* sonde public SDK: everything a plug-in may use. */
#ifndef SONDE_SONDE_H
#define SONDE_SONDE_H
#include "sonde/errors.h"
#include "sonde/net.h"
#include "sonde/pdata.h"
#include "sonde/plugin.h"
#include "sonde/version.h"
#endif
