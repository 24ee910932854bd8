// Compiles when fieldsync/replicator.hpp is included on its own (it includes what it uses).
#include "fieldsync/replicator.hpp"
