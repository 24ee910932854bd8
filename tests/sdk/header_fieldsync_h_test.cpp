// Compiles when the C header fieldsync/fieldsync.h is included on its own by C++ (c_api_test.c
// includes it first, as C).
#include "fieldsync/fieldsync.h"
