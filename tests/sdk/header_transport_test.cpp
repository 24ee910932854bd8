// Compiles when fieldsync/transport.hpp is included on its own (it includes what it uses).
#include "fieldsync/transport.hpp"
