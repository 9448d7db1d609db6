#!/opt/oracle/bin/python
"""Write tests/fixtures/gguf/gguf_py.bin with gguf-py's GGUFWriter (the reference writer).

test_gguf reads it (values below) and checks that baton's writer, fed the same records, writes
the same bytes. Run: /opt/oracle/bin/python tools/oracle/gguf_fixture.py [OUT]
"""
import os
import sys

import numpy as np
import gguf

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests/fixtures/gguf/gguf_py.bin")

w = gguf.GGUFWriter(out, "llama")  # writes general.architecture = "llama" first
w.add_uint32("t.u32", 4000000000)
w.add_int32("t.i32", -7)
w.add_float32("t.f32", 0.25)
w.add_bool("t.bool", True)
w.add_string("t.str", "h\u00e9llo")
w.add_uint8("t.u8", 255)
w.add_int64("t.i64", -(2**40))
w.add_float64("t.f64", 1.5)
w.add_array("t.strs", ["a", "", b"x\x00y"])
w.add_array("t.i32s", [1, 2, -3])
w.add_array("t.f32s", [0.5, -1.0])
w.add_tensor("w", np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5)
q = np.zeros((2, 68), dtype=np.uint8)  # two rows of 64 Q8_0 elements (2 blocks of 34 bytes)
q[:, 0] = 0x3C  # d = 1.0 (f16 0x3c00)
q[:, 1] = 0x00
q[:, 2:34] = np.arange(32, dtype=np.uint8)
w.add_tensor("q", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(out, os.path.getsize(out))
