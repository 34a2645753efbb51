#!/usr/bin/python3
"""fuzz/make_seeds.py: writes the seed corpora in fuzz/corpus/ (docs/fuzzing.md).

Small valid files written by numpy (and zipfile), plus a few hand-made bad ones, so
that each fuzz target starts from inputs that reach deep into its reader. Run from
anywhere: /usr/bin/python3 fuzz/make_seeds.py (needs python3-numpy). The output is
deterministic: running it again rewrites the same bytes.
"""
import io
import json
import os
import struct
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def npy(a, version=None):
    b = io.BytesIO()
    if version is None:
        np.save(b, a)
    else:
        np.lib.format.write_array(b, a, version=version)
    return b.getvalue()


class Unseekable(io.RawIOBase):
    """A write-only stream: zipfile then writes data descriptors after each member."""

    def __init__(self):
        self.buf = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.buf += b
        return len(b)


def npz(members, compress=False, zip64=False, comment=b"", streamed=False):
    """An .npz with fixed times, so the bytes do not depend on the clock. zip64 also
    writes the zip64 end record and locator, as minitrax's own archives have."""
    b = Unseekable() if streamed else io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    limit = zipfile.ZIP64_LIMIT
    if zip64:
        zipfile.ZIP64_LIMIT = 0  # makes zipfile write every zip64 record it knows
    try:
        with zipfile.ZipFile(b, "w", method) as z:
            for name, a in members:
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = method
                with z.open(info, "w", force_zip64=zip64) as f:
                    f.write(npy(a))
            z.comment = comment
    finally:
        zipfile.ZIP64_LIMIT = limit
    return bytes(b.buf) if streamed else b.getvalue()


# ---- .npy -------------------------------------------------------------------------
put("npy", "f4_2x3", npy(np.arange(6, dtype="<f4").reshape(2, 3)))
put("npy", "f8_scalar", npy(np.float64(1.5)))
put("npy", "i4_empty_0x2", npy(np.zeros((0, 2), dtype="<i4")))
put("npy", "i8_1d", npy(np.array([1, -2, 3], dtype="<i8")))
put("npy", "f4_fortran_2x3x2", npy(np.asfortranarray(np.arange(12, dtype="<f4").reshape(2, 3, 2))))
put("npy", "f8_bigendian", npy(np.array([1.0, 2.0], dtype=">f8")))
put("npy", "i4_v2", npy(np.array([[7]], dtype="<i4"), version=(2, 0)))
put("npy", "f4_v3", npy(np.array([0.5], dtype="<f4"), version=(3, 0)))
put("npy", "bad_bool", npy(np.array([True, False])))
put("npy", "bad_truncated", npy(np.arange(4, dtype="<f4"))[:-3])
put("npy", "bad_magic", b"\x93NUMPX\x01\x00" + npy(np.float32(1))[8:])
hdr = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, ), }"
hdr += b" " * (64 - 10 - len(hdr) - 1) + b"\n"
put("npy", "hand_shape_trailing_comma", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr +
    b"\x00\x00\x80\x3f")

# ---- .npz -------------------------------------------------------------------------
w = np.arange(6, dtype="<f4").reshape(2, 3)
b = np.array([1, 2], dtype="<i8")
put("npz", "stored", npz([("w", w), ("b", b)]))
put("npz", "deflated", npz([("w", w), ("b", b)], compress=True))
put("npz", "zip64_comment", npz([("x", np.float64(2.0))], zip64=True, comment=b"hi"))
put("npz", "streamed", npz([("s", np.int32(5))], compress=True, streamed=True))
put("npz", "empty_archive", npz([]))
put("npz", "bad_not_zip", npy(w))
put("npz", "bad_truncated", npz([("w", w)])[:-30])

# ---- checkpoints (for the model Serial(Dense(3), LayerNorm) on [1, 2] float32) ------
model = [("weights/Serial/Dense_0/w", np.ones((2, 3), "<f4")),
         ("weights/Serial/Dense_0/b", np.zeros((3,), "<f4")),
         ("weights/Serial/LayerNorm_1/scale", np.ones((3,), "<f4")),
         ("weights/Serial/LayerNorm_1/bias", np.zeros((3,), "<f4"))]
put("checkpoint", "fits_model", npz([("step", np.int64(7))] + model))
put("checkpoint", "slots_keys", npz([("step", np.int64(1)),
                                     ("slots/Serial/Dense_0/w/m", np.zeros((2, 3), "<f4")),
                                     ("keys/train", np.array([1, 2], "<i8"))]))
put("checkpoint", "wrong_shape", npz([("step", np.int64(3)),
                                      ("weights/Serial/Dense_0/w", np.ones((3, 3), "<f4"))]))
put("checkpoint", "bad_no_step", npz([("weights/x", np.ones((1,), "<f4"))]))
put("checkpoint", "bad_key", npz([("step", np.int64(0)), ("keys/k", np.array([-1, 2], "<i8"))]))

# ---- JSON config ---------------------------------------------------------------------
put("config_json", "small", json.dumps({"length": 32, "chunk_len": 8, "steps": 3,
                                        "attention": ["lsh", "self"], "n_layers": 2}))
put("config_json", "all_types", json.dumps({"dropout": 0.1, "reversible": False,
                                            "schedule": "rsqrt", "eval_n_hashes": [1, 2],
                                            "output_dir": "out", "attention": "self"}))
put("config_json", "empty_object", "{}")
put("config_json", "bad_unknown_key", '{"lenght": 64}')
put("config_json", "bad_type", '{"steps": "many", "lr": 1e400}')
put("config_json", "bad_syntax", '{"steps": 3,')
# Deep nesting: 100,000 levels once overflowed the stack while the error message printed
# the value (nlohmann::json's dump recurses); 63 levels inside the object pass the depth
# check and reach the type check.
DEEP = '{"attention": ' + "[" * 100000 + "]" * 100000 + "}"
put("config_json", "deep_nesting", DEEP)
put("config_json", "nesting_at_limit", '{"eval_n_hashes": ' + "[" * 63 + "1" + "]" * 63 + "}")
put("config_json", "new_keys", json.dumps({"ff_activation": "gelu", "warmup_steps": "auto",
                                           "steps": 50, "eval_n_hashes": 4}))

# ---- command line: config file text, then NUL-separated arguments --------------------
def cli(config_text, *args):
    return "\0".join([config_text, *args])


put("cli", "flags", cli("", "--steps", "3", "--eval-every=0", "--n-hashes", "2"))
put("cli", "config_and_flags", cli('{"steps": 5, "length": 32}', "--config", "x.json",
                                   "--chunk-len=8", "--resume"))
put("cli", "lists", cli("", "--attention=lsh,self", "--eval-n-hashes", "1,2,4", "--n-layers", "4"))
put("cli", "help", cli("", "--help"))
put("cli", "bad_flag", cli("", "--no-such-flag", "1"))
put("cli", "bad_value", cli("", "--lr", "nan", "--steps"))
put("cli", "deep_nesting", cli(DEEP, "--config", "x.json"))
put("cli", "list_forms", cli("", "--eval-n-hashes", "[4]", "--attention", '["lsh", "self"]',
                             "--ff-activation=tanh", "--steps", "50"))
# With --resume the first piece is also the run's saved config (fuzz_cli.cpp).
put("cli", "resume_changes", cli('{"steps": 5, "length": 32, "chunk_len": 8, "schedule": "rsqrt"}',
                                 "--resume", "--steps", "7", "--eval-every=1", "--n-hashes", "2"))
put("cli", "resume_value", cli("", "--resume=yes", "--help"))
