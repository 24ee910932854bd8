// Engine-independent parts of the store interface (store.hpp).
//
// Scope::covers is defined with the sync session (sync_session.cpp), next to its main user.
#include "fieldsync/server/store.hpp"

#include <string_view>

namespace fieldsync::server {

const char* to_string(Role r) noexcept {
    switch (r) {
        case Role::enumerator:
            return "enumerator";
        case Role::supervisor:
            return "supervisor";
        case Role::admin:
            return "admin";
    }
    return "unknown";
}

std::optional<Role> parse_role(std::string_view s) noexcept {
    for (auto r : {Role::enumerator, Role::supervisor, Role::admin}) {
        if (s == to_string(r)) return r;
    }
    return std::nullopt;
}

}  // namespace fieldsync::server
