"""What a built din_ops._C was built from, so that a later run can reuse it instead of rebuilding.

  python .ci/build_info.py write   after a build: records the environment and a hash of the sources
                                   in din_ops/_C.build-info.json, beside the library
  python .ci/build_info.py check   exit 0 when the library and its record match this environment
                                   and these sources, 1 (and why, on stdout) otherwise
  python .ci/build_info.py show    print the record

"This environment" is the Python version, the torch version (with its CUDA version) and the
library file name; "these sources" is a SHA-256 over setup.py and every file under csrc/. Works
without git (a copied work tree has none).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD = os.path.join(ROOT, "din_ops", "_C.build-info.json")


def library_path() -> str:
    return os.path.join(ROOT, "din_ops", "_C" + sysconfig.get_config_var("EXT_SUFFIX"))


def source_hash() -> str:
    h = hashlib.sha256()
    paths = [os.path.join(ROOT, "setup.py")]
    for folder, dirs, files in os.walk(os.path.join(ROOT, "csrc")):
        dirs.sort()
        paths += [os.path.join(folder, f) for f in sorted(files)]
    for path in paths:
        h.update(os.path.relpath(path, ROOT).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read() + b"\0")
    return h.hexdigest()


def environment() -> dict:
    import torch

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "library": os.path.basename(library_path()),
    }


def current() -> dict:
    return {**environment(), "sources_sha256": source_hash()}


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "show"
    if command == "write":
        record = {**current(), "cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST", "")}
        with open(RECORD, "w") as f:
            json.dump(record, f, indent=1)
        print(f"build info: wrote {os.path.relpath(RECORD, ROOT)}")
        return 0
    if command == "check":
        if not os.path.exists(library_path()):
            print(f"no built library {os.path.relpath(library_path(), ROOT)}")
            return 1
        if not os.path.exists(RECORD):
            print(f"no build record {os.path.relpath(RECORD, ROOT)} beside the library")
            return 1
        with open(RECORD) as f:
            record = json.load(f)
        differ = [f"{k}: built {record.get(k)!r}, here {v!r}" for k, v in current().items() if record.get(k) != v]
        if differ:
            print("the built library does not match: " + "; ".join(differ))
            return 1
        print(f"the built library matches this environment and these sources "
              f"(architectures {record.get('cuda_arch_list') or 'of the build machine'})")
        return 0
    if command == "show":
        print(open(RECORD).read() if os.path.exists(RECORD) else "no build record")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
