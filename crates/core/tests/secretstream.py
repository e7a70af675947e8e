"""Reference libsodium secretstream (PyNaCl) for walg-core's interop tests.

    python secretstream.py encrypt|decrypt KEY_HEX < input > output

encrypt frames like WAL-G: 24-byte header, 8192-byte chunks tagged MESSAGE, last chunk
(0..8191 bytes) tagged FINAL. decrypt requires the FINAL tag on the last chunk and nothing after.
"""
import sys

from nacl import bindings as b

CHUNK = 8192
SEALED = CHUNK + b.crypto_secretstream_xchacha20poly1305_ABYTES


def encrypt(key, data):
    state = b.crypto_secretstream_xchacha20poly1305_state()
    out = [b.crypto_secretstream_xchacha20poly1305_init_push(state, key)]
    full = len(data) // CHUNK
    for i in range(full):
        out.append(b.crypto_secretstream_xchacha20poly1305_push(
            state, data[i * CHUNK:(i + 1) * CHUNK], None, b.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE))
    out.append(b.crypto_secretstream_xchacha20poly1305_push(
        state, data[full * CHUNK:], None, b.crypto_secretstream_xchacha20poly1305_TAG_FINAL))
    return b"".join(out)


def decrypt(key, data):
    header_len = b.crypto_secretstream_xchacha20poly1305_HEADERBYTES
    state = b.crypto_secretstream_xchacha20poly1305_state()
    b.crypto_secretstream_xchacha20poly1305_init_pull(state, data[:header_len], key)
    pos, out = header_len, []
    while True:
        chunk = data[pos:pos + SEALED]
        if not chunk:
            sys.exit("truncated: no FINAL chunk")
        msg, tag = b.crypto_secretstream_xchacha20poly1305_pull(state, chunk, None)
        out.append(msg)
        pos += len(chunk)
        if tag == b.crypto_secretstream_xchacha20poly1305_TAG_FINAL:
            if pos != len(data):
                sys.exit("data after the FINAL chunk")
            return b"".join(out)
        if len(msg) != CHUNK:
            sys.exit("short chunk without FINAL tag")


def main():
    mode, key = sys.argv[1], bytes.fromhex(sys.argv[2])
    data = sys.stdin.buffer.read()
    sys.stdout.buffer.write(encrypt(key, data) if mode == "encrypt" else decrypt(key, data))


if __name__ == "__main__":
    main()
