#include "fieldsync/protocol/error.hpp"

namespace fieldsync::protocol {

const char* to_string(protocol_errc e) noexcept {
    switch (e) {
        case protocol_errc::malformed:
            return "malformed";
        case protocol_errc::limit_exceeded:
            return "limit_exceeded";
        case protocol_errc::wrong_type:
            return "wrong_type";
        case protocol_errc::missing_field:
            return "missing_field";
        case protocol_errc::invalid_value:
            return "invalid_value";
        case protocol_errc::unknown_message:
            return "unknown_message";
        case protocol_errc::unsupported_version:
            return "unsupported_version";
        case protocol_errc::schema_invalid:
            return "schema_invalid";
        case protocol_errc::validation_failed:
            return "validation_failed";
        case protocol_errc::clock_drift:
            return "clock_drift";
        case protocol_errc::not_canonical:
            return "not_canonical";
        case protocol_errc::unauthenticated:
            return "unauthenticated";
        case protocol_errc::forbidden:
            return "forbidden";
        case protocol_errc::replica_conflict:
            return "replica_conflict";
        case protocol_errc::rebootstrap_required:
            return "rebootstrap_required";
        case protocol_errc::unexpected_message:
            return "unexpected_message";
        case protocol_errc::internal:
            return "internal";
        case protocol_errc::busy:
            return "busy";
    }
    return "unknown";
}

namespace {

class ErrcCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "fieldsync.protocol"; }
    std::string message(int ev) const override { return to_string(static_cast<protocol_errc>(ev)); }
    std::error_condition default_error_condition(int ev) const noexcept override {
        switch (static_cast<protocol_errc>(ev)) {
            case protocol_errc::malformed:
            case protocol_errc::limit_exceeded:
            case protocol_errc::wrong_type:
            case protocol_errc::missing_field:
            case protocol_errc::invalid_value:
            case protocol_errc::unknown_message:
            case protocol_errc::not_canonical:
                return make_error_condition(protocol_condition::malformed_input);
            case protocol_errc::unsupported_version:
                return make_error_condition(protocol_condition::unsupported);
            case protocol_errc::validation_failed:
            case protocol_errc::forbidden:
            case protocol_errc::replica_conflict:
                return make_error_condition(protocol_condition::rejected);
            case protocol_errc::clock_drift:
            case protocol_errc::busy:
            case protocol_errc::rebootstrap_required:
                return make_error_condition(protocol_condition::retryable);
            default:
                return std::error_condition(ev, *this);
        }
    }
};

class ConditionCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "fieldsync.protocol.condition"; }
    std::string message(int ev) const override {
        switch (static_cast<protocol_condition>(ev)) {
            case protocol_condition::malformed_input:
                return "malformed input";
            case protocol_condition::unsupported:
                return "unsupported version";
            case protocol_condition::rejected:
                return "rejected";
            case protocol_condition::retryable:
                return "retryable";
        }
        return "unknown";
    }
};

}  // namespace

const std::error_category& protocol_category() noexcept {
    static const ErrcCategory c;
    return c;
}
const std::error_category& protocol_condition_category() noexcept {
    static const ConditionCategory c;
    return c;
}
std::error_code make_error_code(protocol_errc e) noexcept {
    return {static_cast<int>(e), protocol_category()};
}
std::error_condition make_error_condition(protocol_condition c) noexcept {
    return {static_cast<int>(c), protocol_condition_category()};
}

}  // namespace fieldsync::protocol
