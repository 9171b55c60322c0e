"""``ray submit cluster.yaml tune/submit.py run SPEC [--storage URI] [--name NAME]``.

``ray submit`` copies this file to the head node and runs it there; it runs ``ebomlc study ...``
from the repository copy ``~/ebomlc`` (see ``cluster.yaml``), joining the cluster (``--address
auto``) for ``run`` and ``resume``. Spec paths are relative to ``~/ebomlc``.
"""
import os
import sys

from ebomlc.cli import main

if __name__ == "__main__":
    os.chdir(os.path.expanduser(os.environ.get("EBOMLC_HOME", "~/ebomlc")))
    args = sys.argv[1:] or ["--help"]
    if args[0] in ("run", "resume") and "--address" not in args:
        args.append("--address=auto")
    sys.exit(main(["study", *args]))
