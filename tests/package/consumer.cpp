// Uses the installed fieldsync::protocol through its public headers only.
#include <cstdlib>
#include <iostream>

#include <fieldsync/protocol/cbor.hpp>
#include <fieldsync/protocol/error.hpp>
#include <fieldsync/protocol/hlc.hpp>
#include <fieldsync/protocol/ids.hpp>

int main() {
    namespace fp = fieldsync::protocol;
    fp::CborWriter w;
    w.map(1);
    w.text("ok");
    w.boolean(true);
    if (fp::to_hex(w.data()) != "a1626f6bf5") {
        std::cerr << "unexpected encoding " << fp::to_hex(w.data()) << '\n';
        return EXIT_FAILURE;
    }
    auto id = fp::Id128::parse("0190f3c2-0000-7000-8000-000000000001");
    if (!id) {
        std::cerr << id.error().message << '\n';
        return EXIT_FAILURE;
    }
    std::cout << "consumer: " << id->to_string() << " "
              << fp::HlcTimestamp::from_parts(1000, 1).to_string() << '\n';
    return EXIT_SUCCESS;
}
