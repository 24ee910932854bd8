// protocol_counts: instruction counts of the protocol library's hot paths, for callgrind.
//
// Timings on a shared virtual machine move by 20% from run to run; the number of instructions
// an operation executes does not. Run under callgrind, this program measures each hot path
// below `--iterations` times between a reset and a dump of callgrind's counters (client
// requests from <valgrind/callgrind.h>), so each dump holds that path's instructions and
// nothing of the set-up:
//
//   valgrind --tool=callgrind --callgrind-out-file=cg.out build/release/bin/protocol_counts
//
// scripts/bench.sh runs it so and prints instructions per operation (the dump's total divided
// by --iterations). Run without valgrind the requests do nothing: the program only proves that
// every path still runs (the smoke test, `ctest -L bench`).
//
//   decode_record      decode + invariant check of one household state (what the server's
//                      I/O threads and the SDK do for every pushed or pulled record)
//   encode_record      canonical encoding of it (the server stores this; replicas compare it)
//   join_diverged      RecordState::join of two concurrently edited copies (review conflicts)
//   join_converged     join with an equal copy (a device re-sending what the server has)
//   validate_record    Schema::validate_record against the bundled survey schema
//   decode_push_20     decode_message of a push frame of 20 new households (one tablet's
//                      outbox batch), the records included
//
// The households are those of household_fixture.hpp. Exit status 0 when every path ran.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#else  // without the header the program still runs, and measures nothing
#define CALLGRIND_ZERO_STATS
#define CALLGRIND_DUMP_STATS_AT(name) ((void)(name))
#define RUNNING_ON_VALGRIND 0
#endif

#include "fieldsync/protocol/messages.hpp"
#include "fieldsync/protocol/record.hpp"
#include "fieldsync/protocol/schema.hpp"
#include "household_fixture.hpp"

namespace {

using namespace fieldsync_bench;

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "protocol_counts: %s\n", what.c_str());
    std::exit(1);
}

// Counts `body` run `n` times under the dump name `name`. The counters are reset right
// before, so the dump holds only these runs.
template <class F>
void measure(const char* name, int n, F&& body) {
    CALLGRIND_ZERO_STATS;
    for (int i = 0; i < n; ++i)
        body();
    CALLGRIND_DUMP_STATS_AT(name);
    std::printf("%s\t%d\n", name, n);
}

}  // namespace

int main(int argc, char** argv) {
    int iterations = 200;
    std::string schema_path = FIELDSYNC_DEMO_SCHEMA;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--iterations" && i + 1 < argc) {
            iterations = std::atoi(argv[++i]);
            if (iterations < 1) fail("--iterations must be at least 1");
        } else if (a == "--schema" && i + 1 < argc) {
            schema_path = argv[++i];
        } else if (a == "--help" || a == "-h") {
            std::printf(
                "usage: protocol_counts [--iterations N] [--schema FILE]\n"
                "Run under valgrind --tool=callgrind; each hot path is one dump named after "
                "it,\nholding N runs. Prints one line per path: name, iterations.\n");
            return 0;
        } else {
            fail("unknown argument " + a + " (try --help)");
        }
    }
    std::ifstream in(schema_path);
    if (!in) fail("cannot read the schema " + schema_path + " (--schema FILE)");
    std::stringstream text;
    text << in.rdbuf();
    auto schema = fp::Schema::load(text.str());
    if (!schema) fail("schema " + schema_path + ": " + schema.error().message);

    // Inputs, made before any counting.
    const fp::RecordState joined = joined_household(1);
    const fp::Bytes bytes = fp::encode_record(joined);
    const Pair pair = diverged_household(1);
    const fp::RecordState first = identified_household(1);
    if (auto st = schema->validate_record(first); !st)
        fail("the fixture's household does not pass the schema: " + st.error().message);
    fp::Push push;
    push.batch = 7;
    for (std::uint32_t n = 0; n < 20; ++n)
        push.items.push_back(fp::PushItem{schema->version(), identified_household(n)});
    const fp::Bytes frame = fp::encode_message(fp::Message{push});
    if (!fp::decode_record(bytes) || !fp::decode_message(frame)) fail("the inputs do not decode");

    std::printf("# path\titerations (RUNNING_ON_VALGRIND=%d)\n",
                static_cast<int>(RUNNING_ON_VALGRIND));
    measure("decode_record", iterations, [&] {
        auto r = fp::decode_record(bytes);
        if (!r) fail("decode_record: " + r.error().message);
    });
    measure("encode_record", iterations, [&] {
        fp::Bytes b = fp::encode_record(joined);
        if (b.size() != bytes.size()) fail("encode_record: the size changed");
    });
    // join works in place: the left-hand copies are made before the counting starts.
    std::vector<fp::RecordState> lefts(static_cast<std::size_t>(iterations), pair.left);
    std::size_t next = 0;
    measure("join_diverged", iterations, [&] {
        if (!lefts[next++].join(pair.right)) fail("join_diverged failed");
    });
    if (lefts.front().conflicts().empty()) fail("join_diverged made no review conflict");
    lefts.assign(static_cast<std::size_t>(iterations), joined);
    next = 0;
    measure("join_converged", iterations, [&] {
        if (!lefts[next++].join(joined)) fail("join_converged failed");
    });
    measure("validate_record", iterations, [&] {
        if (!schema->validate_record(first)) fail("validate_record failed");
    });
    measure("decode_push_20", iterations, [&] {
        auto m = fp::decode_message(frame);
        if (!m) fail("decode_message: " + m.error().message);
    });
    return 0;
}
