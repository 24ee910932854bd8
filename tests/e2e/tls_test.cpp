// End to end over TLS: the server with a fieldsync-mkcert certificate, tablets syncing over
// wss:// with the CA file configured (and with a certificate pin), and failing cleanly with an
// untrusted certificate (system store only) and with a wrong pin.
#include "e2e_support.hpp"
#include "fieldsync/transport.hpp"

using namespace e2e;

namespace {

struct Certs {
    fs::path ca, cert, key;
};

/// Runs fieldsync-mkcert --out DIR: DIR/cert.pem (self-signed, names 127.0.0.1 and
/// localhost) and DIR/key.pem. A self-signed certificate is its own CA file.
Certs make_certs(const fs::path& dir) {
    const auto out = dir / "certs";
    auto r = run(dir, bin("fieldsync-mkcert"),
                 {"--out", out.string(), "--host", "127.0.0.1", "--host", "localhost"});
    REQUIRE_MESSAGE(r.rc == 0, "fieldsync-mkcert failed: " << r.err << r.out);
    Certs c{out / "cert.pem", out / "cert.pem", out / "key.pem"};
    if (fs::exists(out / "ca.pem")) c.ca = out / "ca.pem";
    REQUIRE_MESSAGE(fs::exists(c.cert), "no " << c.cert);
    REQUIRE_MESSAGE(fs::exists(c.key), "no " << c.key);
    return c;
}

}  // namespace

TEST_CASE(
    "e2e: wss with a fieldsync-mkcert certificate; untrusted certificates and wrong pins fail "
    "cleanly") {
    if (!have_server() || !fs::exists(bin("fieldsync-mkcert"))) {
        MESSAGE("fieldsync-server or fieldsync-mkcert is not built; skipping");
        return;
    }
    TempDir dir("tls");
    const Certs certs = make_certs(dir.path());
    Server server(dir.path(), {"--tls-cert", certs.cert.string(), "--tls-key", certs.key.string()},
                  false);
    const std::string url = server.url(true);
    const std::string user = "enumerator-longhuqu";
    const std::string pw = server.password(user);

    SUBCASE("the CA file configured: sync works") {
        Tablet t(dir.path(), "trusting");
        t.init(url, user, pw, {"--ca-file", certs.ca.string()});
        t.ok({"add", "household", "village=ordos/ejin-horo/altan-xire/longhuqu", "head_name=Bater",
              "poverty_status=dibao_line"});
        t.sync();
        CHECK(t.ok({"status"}).at("pending").as_int64() == 0);
    }
    SUBCASE("the right pin (and the CA): sync works") {
        auto pin = fieldsync::spki_pin_from_pem(read_file(certs.cert));
        REQUIRE(pin.ok());
        Tablet t(dir.path(), "pinned");
        t.init(url, user, pw, {"--ca-file", certs.ca.string(), "--pin", *pin});
        t.sync();
    }
    SUBCASE("only the system store: the certificate is untrusted") {
        Tablet t(dir.path(), "untrusting");
        const auto pwfile = dir.path() / "pw";
        write_file(pwfile, pw + "\n");
        auto r = t.cmd(
            {"init", "--server", url, "--user", user, "--password-file", pwfile.string()}, 30s);
        CHECK(r.rc == 1);
        auto e = r.json().at("error");
        CHECK(e.at("code").as_string() == "tls_failed");
        CHECK(std::string(e.at("message").as_string()).find("certificate") != std::string::npos);
        CHECK(r.err.find("TLS handshake failed") != std::string::npos);
    }
    SUBCASE("a wrong pin: refused even though the chain is trusted") {
        Tablet t(dir.path(), "wrongpin");
        const auto pwfile = dir.path() / "pw";
        write_file(pwfile, pw + "\n");
        auto r = t.cmd({"init", "--server", url, "--user", user, "--password-file", pwfile.string(),
                        "--ca-file", certs.ca.string(), "--pin",
                        "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},
                       30s);
        CHECK(r.rc == 1);
        auto e = r.json().at("error");
        CHECK(e.at("code").as_string() == "pin_mismatch");
        CHECK(std::string(e.at("message").as_string()).find("matches none") != std::string::npos);
    }
}
