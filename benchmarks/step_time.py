"""Time one training step of every method side by side (same as ``ebomlc bench``).

    python benchmarks/step_time.py --models resnet32 --steps 20 --json step_time.json
"""
import sys

from ebomlc.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
