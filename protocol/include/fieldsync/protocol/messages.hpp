// The sync protocol's wire messages: plain value structs and their codec. No I/O.
//
// Protocol versions (SPEC.md §8). One line per version; a decode branch added by version N is
// marked `// since protocol N` in messages.cpp.
//   1  first version: hello, welcome, push, push_ack, pull, changes, notify, revoke,
//      digest_request, digest, error.
//
// Framing (SPEC.md §2, §5): every WebSocket binary frame carries exactly one CBOR map. Its text
// key "t" names the message type; the other keys are per type. Keys unknown to the receiver are
// skipped (forward compatibility); an unknown "t" fails with unknown_message. Encoding is
// deterministic (RFC 8949 §4.2.1: map keys ordered by their encoded bytes, shortest forms,
// definite lengths), so equal messages are equal bytes and the vectors in protocol/vectors/ are
// byte-exact. Decoding accepts keys in any order but rejects duplicates.
//
// Decoding never trusts the input: sizes, depth, string lengths and item counts are checked
// against MessageLimits before anything is reserved; text must be UTF-8; every error names the
// path of the offending item, rooted at the message type:
//   "push.items[3].rec.ctx: expected a map, found a text string"
//
// Thread-compatible: the structs are plain values; the functions keep no state.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "fieldsync/protocol/cbor.hpp"
#include "fieldsync/protocol/error.hpp"
#include "fieldsync/protocol/ids.hpp"
#include "fieldsync/protocol/record.hpp"

namespace fieldsync::protocol {

/// The protocol version this library speaks (SPEC.md §8).
inline constexpr std::uint64_t protocol_version = 1;

// ---------------------------------------------------------------------------------------------
// Messages (SPEC.md §5). Member comments give the wire key.

/// Log in with a user name and password (SPEC.md §5.1).
struct PasswordAuth {
    std::string user;      ///< "user"
    std::string password;  ///< "password"
    bool operator==(const PasswordAuth&) const = default;
};
/// Log in with a session token from an earlier welcome (SPEC.md §5.1).
struct TokenAuth {
    std::string token;  ///< "token"
    bool operator==(const TokenAuth&) const = default;
};
using Auth = std::variant<PasswordAuth, TokenAuth>;

/// hello, client → server: the first message of every session (SPEC.md §5.1).
struct Hello {
    std::uint64_t version = protocol_version;      ///< "v": highest protocol version spoken
    std::uint64_t min_version = protocol_version;  ///< "v_min": lowest one (sent only when
                                                   ///< lower than "v"; absent means equal)
    Id128 device;                                  ///< "device": the tablet's id
    ReplicaId replica;                             ///< "replica": the client database's id
    std::string app;                               ///< "app": app name and version, for logs
    Auth auth;                                     ///< "auth"
    std::uint64_t schema_version = 0;              ///< "schema": schema version held, 0 = none
    std::uint64_t cursor = 0;                      ///< "cursor": last cursor stored, 0 = none
    std::uint64_t clock = 0;                       ///< "clock": device wall clock (Unix ms)
    bool operator==(const Hello&) const = default;
};

/// Server limits announced in welcome (SPEC.md §5.2).
struct SessionLimits {
    std::uint64_t max_frame = 0;  ///< "max_frame": largest frame the server accepts, bytes
    std::uint64_t max_batch = 0;  ///< "max_batch": most items in one push
    bool operator==(const SessionLimits&) const = default;
};

/// welcome, server → client: the reply to an accepted hello (SPEC.md §5.2).
struct Welcome {
    std::uint64_t version = protocol_version;  ///< "v": the protocol version of this session
    std::string user;                          ///< "user": the authenticated user name
    std::string role;                          ///< "role": "enumerator", "supervisor", "admin"
    std::vector<std::string> scope;            ///< "scope": area codes the user may see
    std::uint64_t schema_version = 0;          ///< "schema_version": the server's schema version
    std::optional<std::string> schema;         ///< "schema": JSON schema document, only when the
                                               ///< device's version differs
    std::uint64_t server_time = 0;             ///< "server_time": server wall clock, Unix ms
    std::optional<std::string> token;          ///< "token": session token for reconnects
    SessionLimits limits;                      ///< "limits"
    bool operator==(const Welcome&) const = default;
};

/// One record state in a push (SPEC.md §5.3).
struct PushItem {
    std::uint64_t schema_version = 0;  ///< "sv": schema version the write was made under
    RecordState record;                ///< "rec": the full record state (SPEC.md §3.4)
    bool operator==(const PushItem&) const = default;
};

/// push, client → server: a batch of record states to join (SPEC.md §5.3).
struct Push {
    std::uint64_t batch = 0;      ///< "batch": client-chosen id, echoed in push_ack
    std::vector<PushItem> items;  ///< "items"
    bool operator==(const Push&) const = default;
};

/// The outcome of one push item (SPEC.md §5.4). `code` and `reason` travel only when !ok.
struct ItemResult {
    bool ok = true;      ///< "ok"
    std::string code;    ///< "code": an error code name (SPEC.md §7), required when !ok
    std::string reason;  ///< "reason": human-readable, optional (omitted when empty)
    bool operator==(const ItemResult&) const = default;
};

/// push_ack, server → client: sent only after the batch is durably committed (SPEC.md §5.4).
struct PushAck {
    std::uint64_t batch = 0;          ///< "batch": the push's batch id
    std::vector<ItemResult> results;  ///< "results": one per pushed item, in order
    std::uint64_t cursor = 0;         ///< "cursor": server sequence after the commit
    std::uint64_t server_time = 0;    ///< "server_time": server wall clock, Unix ms
    bool operator==(const PushAck&) const = default;
};

/// pull, client → server: asks for one page of changes after a cursor (SPEC.md §5.5).
struct Pull {
    std::uint64_t since = 0;  ///< "since": the cursor the client holds (0 = from the start)
    std::uint64_t limit = 0;  ///< "limit": most records per page, >= 1
    bool operator==(const Pull&) const = default;
};

/// One changed record in changes or notify (SPEC.md §5.6).
struct ChangeItem {
    std::uint64_t seq = 0;             ///< "seq": the server sequence of this change
    std::uint64_t schema_version = 0;  ///< "sv": schema version of the state's latest write
    RecordState record;                ///< "rec": the server's full record state
    /// Sender side only, never decoded: the canonical encoding of the state when the sender
    /// already holds it (the server's stored bytes). When not empty, the encoder writes it as
    /// "rec" instead of encoding `record` (which may then stay empty): a page is sent without
    /// decoding and re-encoding every stored state. The caller vouches that it is canonical.
    Bytes encoded_record{};
    /// Compares what is sent (seq, sv and the state), not how the sender held it.
    bool operator==(const ChangeItem& o) const {
        return seq == o.seq && schema_version == o.schema_version && record == o.record;
    }
};

/// changes, server → client: one page, the reply to pull (SPEC.md §5.6).
struct Changes {
    std::uint64_t since = 0;        ///< "since": the pull's since
    std::uint64_t cursor = 0;       ///< "cursor": where the next pull resumes
    bool more = false;              ///< "more": another page follows a pull from cursor
    std::vector<ChangeItem> items;  ///< "items"
    bool operator==(const Changes&) const = default;
};

/// notify, server → client: live changes while connected (SPEC.md §5.7).
struct Notify {
    std::uint64_t since = 0;        ///< "since": cursor the changes follow (gap detection)
    std::uint64_t cursor = 0;       ///< "cursor": the cursor after these changes
    std::vector<ChangeItem> items;  ///< "items"
    bool operator==(const Notify&) const = default;
};

/// A record named by collection and id.
struct RecordRef {
    std::string collection;
    RecordId id;
    bool operator==(const RecordRef&) const = default;
};

/// revoke, server → client: records that left the device's scope (SPEC.md §5.8, §6).
struct Revoke {
    std::uint64_t cursor = 0;        ///< "cursor": the cursor at which they left
    std::vector<RecordRef> records;  ///< "records": [collection, id] pairs
    bool operator==(const Revoke&) const = default;
};

/// digest_request, client → server: asks for the scope digest (SPEC.md §5.9, §6.3).
struct DigestRequest {
    bool operator==(const DigestRequest&) const = default;
};

/// digest, server → client: the order-independent digest of the client's scope (SPEC.md §6.3).
struct Digest {
    std::uint64_t cursor = 0;               ///< "cursor": the server cursor the digest is valid at
    std::uint64_t count = 0;                ///< "count": number of records in scope
    std::array<std::uint8_t, 32> digest{};  ///< "digest": see ScopeDigest
    bool operator==(const Digest&) const = default;
};

/// error, either direction (SPEC.md §5.10, §7).
struct ErrorMessage {
    std::string code;                  ///< "code": to_string(protocol_errc) or a newer name
    std::string message;               ///< "message": human-readable, names the offending field
    std::optional<std::uint64_t> ref;  ///< "ref": the push batch it refers to
    bool fatal = false;                ///< "fatal": the sender closes the connection after it
    bool operator==(const ErrorMessage&) const = default;
};

using Message = std::variant<Hello, Welcome, Push, PushAck, Pull, Changes, Notify, Revoke,
                             DigestRequest, Digest, ErrorMessage>;

/// Chooses the session's protocol version: the highest version in both [hello.min_version,
/// hello.version] and [min_supported, max_supported]. Fails with unsupported_version, naming
/// both ranges, when they do not overlap (SPEC.md §8). \note Thread-safe.
Result<std::uint64_t> negotiate_version(const Hello& hello, std::uint64_t min_supported = 1,
                                        std::uint64_t max_supported = protocol_version);

/// The wire name of a message's type (its "t"): "hello", "push_ack", ... \note Thread-safe.
std::string_view message_type(const Message& m) noexcept;

/// An error message built from an Error: code = to_string(code), message = error.message.
ErrorMessage make_error_message(const Error& e, bool fatal, std::optional<std::uint64_t> ref = {});
/// The protocol_errc whose wire name is `name`, or nullopt for names this version does not know
/// (a newer peer's code: treat it by the `fatal` flag alone). \note Thread-safe.
std::optional<protocol_errc> parse_errc(std::string_view name) noexcept;

// ---------------------------------------------------------------------------------------------
// Codec

/// Decoding limits (SPEC.md §2.2). The defaults suit one message from a peer.
struct MessageLimits {
    std::size_t max_frame_bytes = 4u << 20;  ///< whole message
    std::size_t max_items = 1000;            ///< entries of any list of a message (push,
                                             ///< changes and notify items, results, revoke
                                             ///< records, scope)
    std::size_t max_entries = 1u << 16;      ///< entries of any other array or map: the
                                             ///< message's maps and everything inside record
                                             ///< states (ctx, fields, set elements, ...)
    std::size_t max_depth = 32;              ///< nesting of arrays and maps, records included
    std::size_t max_string = 1u << 20;       ///< one text or byte string
    /// The reader limits these imply (passed to CborReader and so to decode_record).
    CborLimits cbor_limits() const noexcept;
};

/// Deterministic encoding of `m` (SPEC.md §2.1). The encoder writes what it is given: a message
/// that breaks a rule of SPEC.md §5 (a non-UTF-8 text, a failed ItemResult without a code, ...)
/// is encoded as is, and the receiver's decoder will refuse it. \note Thread-safe.
Bytes encode_message(const Message& m);
/// Appends the encoding of `m` to `w`.
void encode_message(CborWriter& w, const Message& m);

/// Decodes one whole frame. Success: the message. Failure, with the path of the offending item:
/// limit_exceeded (frame, depth, string, count limits), malformed (not CBOR, outside the CBOR
/// profile, duplicate key, bytes after the map), wrong_type, missing_field (names the key),
/// invalid_value (id not 16 bytes, bad UTF-8, out-of-domain value, broken record state),
/// unknown_message (unknown "t"). Never reads past `bytes`; allocates only within the limits.
/// The result owns its data (no views into `bytes`). \note Thread-safe.
Result<Message> decode_message(ByteView bytes, const MessageLimits& limits = {});

// ---------------------------------------------------------------------------------------------
// Scope digest (SPEC.md §6.3)

/// The order-independent digest of a set of record states: the sum, modulo 2^256, of the
/// SHA-256 digests of their canonical encodings, each read as a 256-bit big-endian unsigned
/// integer; the result is written big-endian. The empty set's digest is 32 zero bytes.
/// Records can be added and removed in any order (remove subtracts), so a server can maintain
/// it incrementally. Thread-compatible.
class ScopeDigest {
public:
    /// Adds one record (its record_digest()).
    void add(const RecordState& s) { add(record_digest(s)); }
    void add(const std::array<std::uint8_t, 32>& record_sha256) noexcept;
    /// Removes one record previously added (the inverse of add).
    void remove(const RecordState& s) { remove(record_digest(s)); }
    void remove(const std::array<std::uint8_t, 32>& record_sha256) noexcept;

    const std::array<std::uint8_t, 32>& value() const noexcept { return m_sum; }
    std::uint64_t count() const noexcept { return m_count; }

private:
    std::array<std::uint8_t, 32> m_sum{};
    std::uint64_t m_count = 0;
};

}  // namespace fieldsync::protocol
