// Expected failures of the protocol library, as values.
//
// Every decoder, loader and validator in fieldsync::protocol reports failure through
// `Result<T>` (or `Status` when there is no value): an `Error` holding a `protocol_errc`
// (registered as a std::error_category, so it compares with std::error_code) and a message
// that names the offending field, e.g. "push.items[3].record.ctx: expected a map".
//
// Thread-compatible: distinct objects may be used on distinct threads; the category
// singletons are immutable and thread-safe.
#pragma once

#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace fieldsync::protocol {

/// Specific error codes. Values are stable: they travel on the wire (SPEC.md §7).
enum class protocol_errc {
    malformed = 1,              ///< bytes are not well-formed CBOR (truncated, reserved bytes, ...)
    limit_exceeded = 2,         ///< a size, depth or count limit was exceeded
    wrong_type = 3,             ///< a CBOR item has the wrong major type for its place
    missing_field = 4,          ///< a required map key is absent
    invalid_value = 5,          ///< a value is out of its domain (bad id length, bad enum, ...)
    unknown_message = 6,        ///< the message type is not known to this protocol version
    unsupported_version = 7,    ///< protocol or schema version not supported
    schema_invalid = 8,         ///< a survey schema document has problems
    validation_failed = 9,      ///< a write does not satisfy the survey schema
    clock_drift = 10,           ///< a timestamp is too far ahead of the local clock
    not_canonical = 11,         ///< input that must be canonical is not
    unauthenticated = 12,       ///< credentials missing or wrong (server)
    forbidden = 13,             ///< outside the user's role or scope (server)
    replica_conflict = 14,      ///< replica id claimed by another device (server)
    rebootstrap_required = 15,  ///< cursor older than the tombstone purge point (server)
    unexpected_message = 16,    ///< message not allowed in the session's current state
    internal = 17,              ///< a bug or an environment failure on the sender's side
    busy = 18,                  ///< the peer is overloaded; retry later with backoff
};

/// Groups of errors, for callers that react to a kind rather than a code.
enum class protocol_condition {
    malformed_input = 1,  ///< malformed, limit_exceeded, wrong_type, missing_field, invalid_value,
                          ///< not_canonical, unknown_message
    unsupported = 2,      ///< unsupported_version
    rejected = 3,         ///< validation_failed, forbidden, replica_conflict
    retryable = 4,        ///< clock_drift (after restamping), busy, rebootstrap_required
};

/// The category of protocol_errc. \note Thread-safe.
const std::error_category& protocol_category() noexcept;
/// The category of protocol_condition. \note Thread-safe.
const std::error_category& protocol_condition_category() noexcept;

std::error_code make_error_code(protocol_errc e) noexcept;
std::error_condition make_error_condition(protocol_condition c) noexcept;

/// The wire name of a code ("malformed", "limit_exceeded", ...); "unknown" for other values.
const char* to_string(protocol_errc e) noexcept;

/// A failure: a code plus a human-readable message naming what was wrong and, where it helps,
/// what to do.
struct Error {
    std::error_code code;
    std::string message;

    Error() = default;
    Error(protocol_errc c, std::string msg) : code(make_error_code(c)), message(std::move(msg)) {}
    Error(std::error_code c, std::string msg) : code(c), message(std::move(msg)) {}

    /// Returns a copy whose message is prefixed by `where` ("items[2]" + ": " + message).
    [[nodiscard]] Error at(const std::string& where) const {
        return Error{
            code, where + (message.empty() || message[0] == '.' || message[0] == '[' ? "" : ": ") +
                      message};
    }
};

/// Either a value or an Error. Accessing the wrong alternative throws std::bad_variant_access,
/// so check `ok()` first.
template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : m_v(std::in_place_index<0>, std::move(value)) {}      // NOLINT(implicit)
    Result(Error error) : m_v(std::in_place_index<1>, std::move(error)) {}  // NOLINT(implicit)

    bool ok() const noexcept { return m_v.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }

    T& value() & { return std::get<0>(m_v); }
    const T& value() const& { return std::get<0>(m_v); }
    /// By value, so `for (auto& x : f().value())` does not dangle.
    T value() && { return std::get<0>(std::move(m_v)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const Error& error() const& { return std::get<1>(m_v); }
    Error error() && { return std::get<1>(std::move(m_v)); }

private:
    std::variant<T, Error> m_v;
};

/// Success, or an Error. Default-constructed Status is success.
class [[nodiscard]] Status {
public:
    Status() = default;
    Status(Error error) : m_ok(false), m_error(std::move(error)) {}  // NOLINT(implicit)
    bool ok() const noexcept { return m_ok; }
    explicit operator bool() const noexcept { return m_ok; }
    const Error& error() const& { return m_error; }
    Error error() && { return std::move(m_error); }

private:
    bool m_ok = true;
    Error m_error;
};

}  // namespace fieldsync::protocol

namespace std {
template <>
struct is_error_code_enum<fieldsync::protocol::protocol_errc> : true_type {};
template <>
struct is_error_condition_enum<fieldsync::protocol::protocol_condition> : true_type {};
}  // namespace std
