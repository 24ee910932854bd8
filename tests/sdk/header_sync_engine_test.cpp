// Compiles when fieldsync/sync_engine.hpp is included on its own (it includes what it uses).
#include "fieldsync/sync_engine.hpp"
