"""The CLI process and the workers keep pandas out of pyarrow's way: same conversions, no import."""

from __future__ import annotations

import subprocess
import sys

_SNIPPET = """
import sys, numpy as np, pyarrow as pa
from synthfilter.io.shards import pandas_left_out, pyarrow_without_pandas
assert pyarrow_without_pandas() and pandas_left_out()
t = pa.table({"s": pa.array(["x", None, "é"], type=pa.string()), "i": np.arange(3, dtype=np.int64)})
s, i = t.column("s").to_numpy(zero_copy_only=False), t.column("i").to_numpy()
assert s.tolist() == ["x", None, "é"] and s.dtype == object and i.tolist() == [0, 1, 2]
assert pa.array(["a", "b"]).type == pa.string() and t.column("s").to_pylist() == ["x", None, "é"]
assert "pandas" not in sys.modules
try:
    import pandas
except ImportError:
    print("ok")
"""


def test_pyarrow_converts_without_importing_pandas():
    out = subprocess.run([sys.executable, "-c", _SNIPPET], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ok"


def test_a_process_that_imported_pandas_keeps_it():
    import pandas  # noqa: F401

    from synthfilter.io.shards import pandas_left_out, pyarrow_without_pandas

    assert not pyarrow_without_pandas() and not pandas_left_out()
