"""Key-encryption-key rotation (issue 16 target: 100,000 patient keys re-wrapped in < 10 s):
makes `--keys` patient data keys in a fresh datakeys.db under a local key ring, rotates the
KEK, then re-wraps every key in batches (`DataKeys.rewrap`, what `keys rotate --kek` runs
while the server serves), and reports wall and CPU time (`time.process_time`).

    .venv/bin/python -m bench.rewrap [--keys 100000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fhir_server.crypto import DataKeys, LocalKeyRing, create_key_ring, patient_scope


def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-rewrap-"))
    create_key_ring(folder / "keyring.json")
    keys = DataKeys(LocalKeyRing(folder / "keyring.json"), folder / "datakeys.db")
    for start in range(0, args.keys, 5000):  # one write of the file per 5,000 new patients
        keys.prepare(patient_scope(f"p{n}") for n in range(start, min(start + 5000, args.keys)))
    keys.provider.rotate()
    wall, cpu = time.perf_counter(), time.process_time()
    rewrapped = batches = 0
    while done := keys.rewrap(args.batch):
        rewrapped += done
        batches += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert keys.status().by_kek == {keys.provider.status().active: args.keys}
    print(f"re-wrapped {rewrapped:,} data keys in {batches} batches of {args.batch}: "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    main(parser.parse_args())
