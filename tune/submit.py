"""``ray submit cluster.yaml tune/submit.py run SPEC [--storage URI] [--name NAME]``.

``ray submit`` copies this file to the head node and runs it there; it runs ``ebomlc study ...``
from the repository copy ``~/ebomlc`` (see ``cluster.yaml``), joining the cluster (``--address
auto``) for ``run`` and ``resume``. Spec paths are relative to ``~/ebomlc``.
"""
import os
import sys

from ebomlc.cli import main


def study_args(args: list[str]) -> list[str]:
    """The ``ebomlc study`` arguments: ``run`` and ``resume`` join the cluster unless given ``--address``."""
    args = list(args) or ["--help"]
    given = any(a == "--address" or a.startswith("--address=") for a in args)
    if args[0] in ("run", "resume") and not given:
        args.append("--address=auto")
    return args


if __name__ == "__main__":
    os.chdir(os.path.expanduser(os.environ.get("EBOMLC_HOME", "~/ebomlc")))
    sys.exit(main(["study", *study_args(sys.argv[1:])]))
