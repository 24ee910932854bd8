// Compiles when fieldsync/replica.hpp is included on its own (it includes what it uses).
#include "fieldsync/replica.hpp"
