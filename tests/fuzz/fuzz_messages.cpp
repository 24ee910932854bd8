// libFuzzer target for the wire-message decoder (SPEC.md §2, §5).
//
// For any input: decode_message must return (never crash, hang, leak or over-allocate), under
// the default limits and under tight ones. When it succeeds, the message must survive a round
// trip: re-encoding gives bytes that decode to an equal message and re-encode to the same bytes
// (merge law L4 for the record states inside). to_diagnostic must not crash either.
//
// Seeds: tests/fuzz/corpus/messages/ (one file per test vector, written by the vectors
// generator: tests/protocol/vectors_test.cpp).
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "fieldsync/protocol/messages.hpp"

using namespace fieldsync::protocol;

namespace {

void check_round_trip(const Message& m, const MessageLimits& limits) {
    const Bytes once = encode_message(m);
    auto again = decode_message(once, limits);
    if (!again.ok()) std::abort();                     // what we encode, we must decode
    if (!(*again == m)) std::abort();                  // and get the same message back
    if (encode_message(*again) != once) std::abort();  // deterministic encoding
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const ByteView input(data, size);

    const MessageLimits defaults;
    if (auto m = decode_message(input, defaults); m.ok()) check_round_trip(*m, defaults);

    MessageLimits tight;
    tight.max_frame_bytes = 4096;
    tight.max_items = 4;
    tight.max_entries = 16;
    tight.max_depth = 6;
    tight.max_string = 64;
    if (auto m = decode_message(input, tight); m.ok()) check_round_trip(*m, tight);

    (void)to_diagnostic(input);
    return 0;
}
