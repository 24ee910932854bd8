// fieldsync coding style, as a file that compiles (after Realm's coding_style_guide.cpp).
//
// This file is built with the project's warnings (-Werror in the debug preset) and run as the
// CTest test `coding_style_example`, so everything it shows is true of the current compiler
// flags and of the real `Result<T>` in fieldsync/protocol/error.hpp. Formatting itself is
// .clang-format's job (Google base, 4-space indent, 100 columns); this file is about names,
// comments, and how failures travel.
//
// Summary of the rules shown below:
//   - Files:        snake_case.hpp / snake_case.cpp; `.h` only for the C API header.
//                   Public headers: <component>/include/fieldsync/<component>/...; private code
//                   in <component>/src/ is never installed. Tests mirror headers:
//                   tests/<component>/<header>_test.cpp.
//   - Namespaces:   snake_case, rooted at `fieldsync` (fieldsync::protocol, fieldsync::server).
//                   Private helpers of one .cpp go in an anonymous namespace.
//   - Types:        UpperCamel (RecordState, HybridClock), including aliases (using Bytes = ...).
//   - Functions, variables, parameters: snake_case.
//   - Members:      m_ prefix for private data members (m_entries); plain names for the public
//                   fields of aggregates (Dot::counter).
//   - Constants:    snake_case `constexpr` (deleted_field, max_batch_items); no macros.
//   - Enums:        `enum class` with snake_case enumerators (MergeRule::lww, error::closed),
//                   an explicit underlying type when the values travel on the wire.
//   - Macros:       FIELDSYNC_UPPER_CASE, and only when nothing else works.
//   - Comments:     every public declaration has a contract comment (`///`): what success
//                   returns, what failure reports, who owns what, and one thread-safety line.
//                   Files that implement a format or an algorithm open with a design header
//                   (layout, invariants, algorithm) or point to the spec section that has it.
//   - Failures:     expected failures are values (`Result<T>` / `Status`, never exceptions
//                   across an API); messages name the offending field ("items[2].id: ...").
//                   Exceptions are for bugs and for out-of-memory.

// Includes: the file's own header first (in a .cpp), then the standard library, then
// third-party, then fieldsync, each block sorted.
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fieldsync/protocol/error.hpp"

namespace fieldsync::example {  // namespaces: snake_case, nested with `::`

using protocol::Error;
using protocol::protocol_errc;
using protocol::Result;
using protocol::Status;

/// The largest batch a `VisitLog` accepts. Constants are snake_case constexpr, not macros.
inline constexpr std::size_t max_batch_items = 4;

/// The kind of a household visit. `enum class`, snake_case enumerators; the underlying type is
/// fixed because the numeric values are stored.
enum class VisitKind : std::uint8_t {
    identification = 1,  ///< first registration of the household
    look_back = 2,       ///< re-check of an identified household
    extensive = 3,       ///< the "extensive visit"
    exit_check = 4,      ///< verification before the household exits poverty
};

/// The wire name of a kind ("identification", ...). Free functions: snake_case.
/// \note Thread-safe.
constexpr std::string_view to_string(VisitKind k) noexcept {
    switch (k) {
        case VisitKind::identification: return "identification";
        case VisitKind::look_back: return "look_back";
        case VisitKind::extensive: return "extensive";
        case VisitKind::exit_check: return "exit_check";
    }
    return "unknown";
}

/// Parses a wire name. Returns nullopt for anything else (a lookup miss is not an error).
std::optional<VisitKind> parse_visit_kind(std::string_view s) noexcept {
    for (auto k : {VisitKind::identification, VisitKind::look_back, VisitKind::extensive,
                   VisitKind::exit_check}) {
        if (to_string(k) == s) return k;
    }
    return std::nullopt;
}

/// One visit. Aggregates keep public fields without a prefix, and default member initialisers.
struct Visit {
    std::string household;  ///< household record id, text form
    VisitKind kind = VisitKind::identification;
    std::uint32_t members_seen = 0;
};

/// An append-only log of visits, kept in arrival order.
///
/// A class comment says what the object is, what it guarantees, and how it may be shared.
/// Thread-compatible: distinct objects may be used on distinct threads; one object needs
/// external synchronisation (compare LevelDB's Status).
class VisitLog {  // types: UpperCamel
public:
    /// Creates an empty log that accepts at most `capacity` visits in total.
    explicit VisitLog(std::size_t capacity) : m_capacity(capacity) {}

    /// Appends a batch of visits, all or nothing.
    ///
    /// Success: every visit was appended. Failure: nothing was appended, and the error is
    /// `invalid_value` naming the first bad visit ("visits[1].household: empty") or
    /// `limit_exceeded` when the batch or the log is full. Takes ownership of nothing; copies.
    Status append(const std::vector<Visit>& visits) {
        if (visits.size() > max_batch_items) {
            return Error{protocol_errc::limit_exceeded,
                         "visits: at most " + std::to_string(max_batch_items) + " per batch"};
        }
        if (m_visits.size() + visits.size() > m_capacity) {
            return Error{protocol_errc::limit_exceeded, "visits: log is full"};
        }
        for (std::size_t i = 0; i < visits.size(); ++i) {
            if (Status s = check(visits[i]); !s) {
                // Errors gain their path on the way out: "visits[1]" + ".household: empty".
                return s.error().at("visits[" + std::to_string(i) + "]");
            }
        }
        m_visits.insert(m_visits.end(), visits.begin(), visits.end());
        return {};
    }

    /// The most recent visit of `household`, or `invalid_value` when it was never visited.
    /// The returned Visit is a copy; the caller owns it.
    Result<Visit> last_visit(std::string_view household) const {
        for (auto it = m_visits.rbegin(); it != m_visits.rend(); ++it) {
            if (it->household == household) return *it;
        }
        return Error{protocol_errc::invalid_value,
                     "household " + std::string(household) + " has no visit"};
    }

    std::size_t size() const noexcept { return m_visits.size(); }

private:
    // Private helpers are snake_case too; static when they need no state.
    static Status check(const Visit& v) {
        if (v.household.empty()) return Error{protocol_errc::invalid_value, ".household: empty"};
        return {};
    }

    std::size_t m_capacity;        // members: m_ prefix
    std::vector<Visit> m_visits;   // in arrival order
};

}  // namespace fieldsync::example

// The example, run: exercises every path above so the test fails if the conventions stop
// compiling or the Result/Status contract changes.
int main() {
    using fieldsync::example::Visit;
    using fieldsync::example::VisitKind;
    using fieldsync::example::VisitLog;

    VisitLog visits{8};
    Visit ok{"0190f3c2-0000-7000-8000-000000000001", VisitKind::look_back, 4};
    Visit bad{"", VisitKind::extensive, 0};

    if (!visits.append({ok})) return EXIT_FAILURE;

    auto s = visits.append({ok, bad});
    if (s || s.error().code != fieldsync::protocol::protocol_errc::invalid_value ||
        s.error().message != "visits[1].household: empty" || visits.size() != 1) {
        std::cerr << "unexpected: " << s.error().message << '\n';
        return EXIT_FAILURE;
    }

    // Result<T>: check ok() (or use it as a bool) before value(); never catch bad_variant_access.
    auto last = visits.last_visit(ok.household);
    if (!last || last->kind != VisitKind::look_back) return EXIT_FAILURE;
    if (auto missing = visits.last_visit("nobody"); missing.ok()) return EXIT_FAILURE;

    auto kind = fieldsync::example::parse_visit_kind("exit_check");
    if (!kind || *kind != VisitKind::exit_check) return EXIT_FAILURE;

    std::cout << "coding_style_example: ok\n";
    return EXIT_SUCCESS;
}
