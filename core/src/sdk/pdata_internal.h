/* Internal to libsonde: what pdata.c shares with the OTLP-JSON codec. */
#ifndef SONDE_PDATA_INTERNAL_H
#define SONDE_PDATA_INTERNAL_H

#include "sonde/pdata.h"

/* Deepest nesting of protobuf messages accepted on decode (the request is depth 1). Keeps
 * protobuf-c's recursive unpack and our recursive encoders off the end of the stack, and keeps
 * any decodable message's JSON below the JSON parser's depth limit. */
#define SONDE__MAX_MSG_DEPTH 60

const ProtobufCMessageDescriptor *sonde__signal_descriptor(sonde_signal sig);
/* A zeroed, initialised message of type d in b's arena; NULL when out of memory. */
ProtobufCMessage *sonde__batch_new_msg(sonde_batch *b, const ProtobufCMessageDescriptor *d);
/* A batch with no message yet (for decoders that build the message themselves). */
sonde_batch *sonde__batch_empty(sonde_signal sig);
void sonde__batch_set_msg(sonde_batch *b, ProtobufCMessage *m);
void sonde__batch_destroy_unused(sonde_batch *b);
/* Bytes of one element of a repeated field of type t (protobuf-c's in-memory layout). */
size_t sonde__pb_elt_size(ProtobufCType t);

#endif
