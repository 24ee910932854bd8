// Minimal CBOR building blocks over libcbor, with no I/O and no tree allocation.
//
// Writer: appends items to a byte vector using libcbor's `cbor_encode_*` head encoders, which
// always choose the shortest argument form (RFC 8949 §4.2.1, "preferred serialization").
// Definite lengths only. Map-key ordering is the caller's job; `canonical_map` helps when keys
// are not known in advance (it sorts entries by the bytes of their encoded keys, as §4.2.1
// requires for deterministic encoding).
//
// Reader: a pull parser over libcbor's streaming decoder (`cbor_stream_decode`). Each call
// decodes one item head; strings are views into the input. Before any work it checks the
// limits (input size, nesting depth, declared counts against remaining bytes), so hostile
// input can neither crash it nor make it allocate: nothing is allocated while reading.
// Indefinite-length items, floats, tags and `undefined` are outside the fieldsync profile
// (SPEC.md §2) and are reported as errors naming where they occurred.
//
// Thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fieldsync/protocol/error.hpp"

namespace fieldsync::protocol {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

/// Limits applied by Reader. The defaults suit one sync message (SPEC.md §2.2).
struct CborLimits {
    std::size_t max_input_bytes = 16u << 20;  ///< whole input
    std::size_t max_depth = 32;               ///< nesting of arrays and maps
    std::size_t max_items = 1u << 20;         ///< array or map count in any one header
    std::size_t max_string_bytes = 1u << 20;  ///< one text or byte string
};

/// Appends deterministic CBOR to an owned byte vector.
class CborWriter {
public:
    CborWriter() = default;
    explicit CborWriter(std::size_t reserve) { m_out.reserve(reserve); }

    void uint(std::uint64_t v);
    void int64(std::int64_t v);
    void boolean(bool v);
    void null();
    void text(std::string_view s);
    void bytes(ByteView b);
    void array(std::size_t count);
    void map(std::size_t count);
    /// Appends bytes that are already one or more well-formed CBOR items.
    void raw(ByteView encoded);

    const Bytes& data() const noexcept { return m_out; }
    Bytes take() noexcept { return std::move(m_out); }
    std::size_t size() const noexcept { return m_out.size(); }
    void clear() noexcept { m_out.clear(); }

private:
    Bytes m_out;
};

/// Kinds of item a Reader can return.
enum class CborType : std::uint8_t {
    unsigned_int,
    negative_int,
    bytes,
    text,
    array,
    map,
    boolean,
    null,
};

/// Readable name of a type ("unsigned integer", "map", ...), for error messages.
const char* to_string(CborType t) noexcept;

/// One decoded item head.
struct CborItem {
    CborType type = CborType::null;
    std::uint64_t uint_value = 0;  ///< unsigned_int: value; negative_int: -1 - value
    std::size_t count = 0;         ///< array: items; map: pairs
    std::string_view str;          ///< text or bytes: a view into the input
    bool bool_value = false;
};

/// Pull parser over one buffer. The buffer must outlive the Reader and every view it returns.
/// Errors carry no location; callers prefix them with the path they were reading.
class CborReader {
public:
    explicit CborReader(ByteView input, CborLimits limits = {}) noexcept
        : m_in(input), m_limits(limits) {}

    /// Decodes the next item head. Fails on malformed input, unsupported items, or limits.
    Result<CborItem> next();
    /// Peeks at the type of the next item without consuming it.
    Result<CborType> peek_type();

    // Typed helpers: each consumes one item and fails with wrong_type if it is another type.
    Result<std::uint64_t> read_uint();
    Result<std::int64_t> read_int();
    Result<bool> read_bool();
    Result<std::string_view> read_text();
    Result<std::string_view> read_bytes();
    Result<std::size_t> read_array();
    Result<std::size_t> read_map();
    /// Skips one whole item, including everything nested in it (within the depth limit).
    Status skip();
    /// Fails unless `n` more items follow (cheap bound used before reserving memory).
    Status check_count(std::size_t n) const;

    bool at_end() const noexcept { return m_pos >= m_in.size(); }
    std::size_t position() const noexcept { return m_pos; }
    std::size_t remaining() const noexcept { return m_in.size() - m_pos; }
    const CborLimits& limits() const noexcept { return m_limits; }

    /// The depth bookkeeping for callers that descend into containers.
    Status enter();
    void leave() noexcept {
        if (m_depth > 0) --m_depth;
    }

private:
    /// next() for every item its short path does not take: libcbor decodes the head, and
    /// every failure is reported here (out of line, so that next() stays small).
    Result<CborItem> next_in_full();

    ByteView m_in;
    CborLimits m_limits;
    std::size_t m_pos = 0;
    std::size_t m_depth = 0;
};

/// Encodes a map whose keys are not known in advance, in deterministic order.
/// Add (key bytes, value bytes) pairs; `write_to` sorts them by key bytes and emits the map.
/// Duplicate keys are a caller bug and are emitted as given.
class CanonicalMap {
public:
    void add(Bytes key, Bytes value) { m_entries.push_back({std::move(key), std::move(value)}); }
    void write_to(CborWriter& w);
    std::size_t size() const noexcept { return m_entries.size(); }

private:
    struct Entry {
        Bytes key;
        Bytes value;
    };
    std::vector<Entry> m_entries;
};

/// Lower-case hex of bytes, e.g. "a1636f6b". Thread-safe.
std::string to_hex(ByteView b);
/// Parses hex (whitespace ignored); fails with invalid_value on odd length or a non-hex digit.
Result<Bytes> from_hex(std::string_view hex);

/// CBOR diagnostic notation (RFC 8949 §8) of one or more items, for tools and test vectors.
/// Fails on malformed input with the reader's error.
Result<std::string> to_diagnostic(ByteView b, CborLimits limits = {});

}  // namespace fieldsync::protocol
