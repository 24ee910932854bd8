// 128-bit identifiers: replica ids and record ids.
//
// Text form: the 36-character UUID form, lower-case ("0190f3c2-...."). Binary form (on the wire
// and in canonical encodings): a 16-byte CBOR byte string.
// Record ids are UUIDv7 (RFC 9562 §5.7): 48 bits of Unix milliseconds, then version and random
// bits, so they sort by creation time and need no server. The protocol library never reads the
// clock or a random source itself: callers pass both in (the SDK uses OpenSSL's RAND_bytes).
//
// Thread-compatible value types.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "fieldsync/protocol/error.hpp"

namespace fieldsync::protocol {

/// 16 opaque bytes, ordered bytewise.
struct Id128 {
    std::array<std::uint8_t, 16> bytes{};

    auto operator<=>(const Id128&) const = default;
    bool is_nil() const noexcept;
    /// "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", lower-case.
    std::string to_string() const;
    /// Parses the 36-character form (either case) or 32 hex digits. Fails with invalid_value.
    static Result<Id128> parse(std::string_view text);
    /// From exactly 16 bytes; fails with invalid_value naming the length otherwise.
    static Result<Id128> from_bytes(std::string_view raw);
};

/// The id of one replica (one SDK database, or the server). Chosen at random when the replica
/// is created and kept forever.
using ReplicaId = Id128;
/// The id of a record, unique across all collections; UUIDv7 by convention.
using RecordId = Id128;

/// Builds a UUIDv7 from Unix milliseconds and 10 random bytes (only 74 bits are used).
RecordId make_uuid_v7(std::uint64_t unix_ms, const std::array<std::uint8_t, 10>& random) noexcept;

}  // namespace fieldsync::protocol

template <>
struct std::hash<fieldsync::protocol::Id128> {
    std::size_t operator()(const fieldsync::protocol::Id128& id) const noexcept {
        std::uint64_t a = 0, b = 0;
        for (int i = 0; i < 8; ++i)
            a = (a << 8) | id.bytes[i];
        for (int i = 8; i < 16; ++i)
            b = (b << 8) | id.bytes[i];
        return std::hash<std::uint64_t>{}(a ^ (b * 0x9e3779b97f4a7c15ull));
    }
};
