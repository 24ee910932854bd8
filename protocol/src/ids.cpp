#include "fieldsync/protocol/ids.hpp"

#include <algorithm>

namespace fieldsync::protocol {

bool Id128::is_nil() const noexcept {
    return std::all_of(bytes.begin(), bytes.end(), [](std::uint8_t b) { return b == 0; });
}

std::string Id128::to_string() const {
    static const char* digits = "0123456789abcdef";
    std::string s;
    s.reserve(36);
    for (int i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
        s.push_back(digits[bytes[i] >> 4]);
        s.push_back(digits[bytes[i] & 15]);
    }
    return s;
}

Result<Id128> Id128::parse(std::string_view text) {
    Id128 id;
    int nibbles = 0;
    const bool dashed = text.size() == 36;
    if (!dashed && text.size() != 32) {
        return Error{protocol_errc::invalid_value,
                     "an id has 36 characters (8-4-4-4-12 hex digits) or 32 hex digits, got " +
                         std::to_string(text.size())};
    }
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (dashed && (i == 8 || i == 13 || i == 18 || i == 23)) {
            if (c != '-')
                return Error{protocol_errc::invalid_value,
                             "expected '-' at position " + std::to_string(i) + " of the id"};
            continue;
        }
        int v;
        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v = c - 'A' + 10;
        else
            return Error{protocol_errc::invalid_value,
                         "invalid character at position " + std::to_string(i) + " of the id"};
        id.bytes[nibbles / 2] =
            static_cast<std::uint8_t>(id.bytes[nibbles / 2] | (nibbles % 2 ? v : v << 4));
        ++nibbles;
    }
    return id;
}

Result<Id128> Id128::from_bytes(std::string_view raw) {
    if (raw.size() != 16) {
        return Error{protocol_errc::invalid_value,
                     "an id is 16 bytes, got " + std::to_string(raw.size())};
    }
    Id128 id;
    std::copy(raw.begin(), raw.end(), id.bytes.begin());
    return id;
}

RecordId make_uuid_v7(std::uint64_t unix_ms, const std::array<std::uint8_t, 10>& random) noexcept {
    RecordId id;
    for (int i = 0; i < 6; ++i)
        id.bytes[i] = static_cast<std::uint8_t>(unix_ms >> (40 - 8 * i));
    id.bytes[6] = static_cast<std::uint8_t>(0x70 | (random[0] & 0x0f));
    id.bytes[7] = random[1];
    id.bytes[8] = static_cast<std::uint8_t>(0x80 | (random[2] & 0x3f));
    for (int i = 9; i < 16; ++i)
        id.bytes[i] = random[i - 6];
    return id;
}

}  // namespace fieldsync::protocol
