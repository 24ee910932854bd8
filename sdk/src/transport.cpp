// The transport-independent parts of transport.hpp: the error category, sync URLs and SPKI
// pins. No Beast here (sdk/src/beast_transport.cpp holds the only WebSocket code).
#include "fieldsync/transport.hpp"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <memory>

namespace fieldsync {

namespace p = fieldsync::protocol;

namespace {

class TransportCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "fieldsync.transport"; }
    std::string message(int ev) const override {
        switch (static_cast<transport_errc>(ev)) {
            case transport_errc::closed:
                return "connection closed";
            case transport_errc::connect_failed:
                return "cannot connect to the server";
            case transport_errc::tls_failed:
                return "TLS handshake failed";
            case transport_errc::pin_mismatch:
                return "server certificate does not match the pin";
            case transport_errc::handshake_failed:
                return "WebSocket upgrade refused";
            case transport_errc::timeout:
                return "timed out";
            case transport_errc::protocol_error:
                return "WebSocket protocol error";
            case transport_errc::invalid_url:
                return "invalid sync URL";
            case transport_errc::network:
                return "network error";
        }
        return "unknown transport error";
    }
};

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

int hex_digit(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string base64(const unsigned char* data, std::size_t n) {
    std::string out(4 * ((n + 2) / 3) + 1, '\0');
    int len =
        EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(n));
    out.resize(static_cast<std::size_t>(std::max(len, 0)));
    return out;
}

}  // namespace

const std::error_category& transport_category() noexcept {
    static const TransportCategory category;
    return category;
}

std::error_code make_error_code(transport_errc e) noexcept {
    return {static_cast<int>(e), transport_category()};
}

p::Result<SyncUrl> parse_sync_url(std::string_view url) {
    auto bad = [&](const std::string& why) {
        return p::Error{p::protocol_errc::invalid_value,
                        "sync URL \"" + std::string(url) + "\": " + why +
                            " (expected ws://host[:port][/path] or wss://host[:port][/path])"};
    };
    SyncUrl out;
    const auto sep = url.find("://");
    if (sep == std::string_view::npos) return bad("no scheme");
    const std::string scheme = lower(url.substr(0, sep));
    if (scheme == "ws" || scheme == "http") {
        out.tls = false;
    } else if (scheme == "wss" || scheme == "https") {
        out.tls = true;
    } else {
        return bad("unsupported scheme \"" + scheme + "\"");
    }
    std::string_view rest = url.substr(sep + 3);
    const auto slash = rest.find_first_of("/?");
    std::string_view authority = rest.substr(0, slash);
    out.target = slash == std::string_view::npos ? std::string() : std::string(rest.substr(slash));
    if (out.target.empty() || out.target == "/") out.target = "/sync";
    if (out.target[0] == '?') out.target = "/sync" + out.target;
    if (authority.find('@') != std::string_view::npos)
        return bad("user information in the URL is not supported (credentials go in hello)");
    if (authority.empty()) return bad("no host");
    std::string_view port;
    if (authority.front() == '[') {
        const auto close = authority.find(']');
        if (close == std::string_view::npos) return bad("unterminated IPv6 address");
        out.host = std::string(authority.substr(1, close - 1));
        std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') return bad("garbage after the IPv6 address");
            port = after.substr(1);
        }
    } else {
        const auto colon = authority.rfind(':');
        out.host = std::string(authority.substr(0, colon));
        if (colon != std::string_view::npos) port = authority.substr(colon + 1);
    }
    if (out.host.empty()) return bad("no host");
    if (port.empty()) {
        out.port = out.tls ? "443" : "80";
    } else {
        unsigned value = 0;
        auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
        if (ec != std::errc{} || ptr != port.data() + port.size() || value == 0 || value > 65535)
            return bad("invalid port \"" + std::string(port) + "\"");
        out.port = std::to_string(value);
    }
    return out;
}

p::Result<std::vector<std::uint8_t>> parse_spki_pin(std::string_view pin) {
    auto bad = [&](const std::string& why) {
        return p::Error{p::protocol_errc::invalid_value,
                        "certificate pin \"" + std::string(pin) + "\": " + why +
                            " (expected sha256/<base64 of 32 bytes> or 64 hex digits)"};
    };
    std::vector<std::uint8_t> out;
    if (pin.size() == 64 &&
        std::all_of(pin.begin(), pin.end(), [](char c) { return hex_digit(c) >= 0; })) {
        for (std::size_t i = 0; i < 64; i += 2)
            out.push_back(
                static_cast<std::uint8_t>(hex_digit(pin[i]) * 16 + hex_digit(pin[i + 1])));
        return out;
    }
    constexpr std::string_view prefix = "sha256/";
    if (pin.substr(0, prefix.size()) != prefix) return bad("unknown form");
    std::string_view b64 = pin.substr(prefix.size());
    if (b64.size() != 44) return bad("the base64 part must be 44 characters");
    unsigned char buf[48];
    const int n = EVP_DecodeBlock(buf, reinterpret_cast<const unsigned char*>(b64.data()),
                                  static_cast<int>(b64.size()));
    if (n != 33 || b64[43] != '=' || b64[42] == '=') return bad("invalid base64");
    // EVP_DecodeBlock counts the padding as a zero byte: 44 chars with one '=' hold 32 bytes.
    out.assign(buf, buf + 32);
    return out;
}

p::Result<std::string> spki_pin_from_pem(std::string_view pem) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
    if (!bio) return p::Error{p::protocol_errc::internal, "out of memory"};
    std::unique_ptr<X509, decltype(&X509_free)> cert(
        PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), &X509_free);
    if (!cert)
        return p::Error{p::protocol_errc::invalid_value,
                        "no PEM certificate found (expected -----BEGIN CERTIFICATE-----)"};
    unsigned char* der = nullptr;
    const int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert.get()), &der);
    if (len <= 0)
        return p::Error{p::protocol_errc::invalid_value, "the certificate has no public key"};
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(der, static_cast<std::size_t>(len), digest);
    OPENSSL_free(der);
    return "sha256/" + base64(digest, sizeof digest);
}

}  // namespace fieldsync
