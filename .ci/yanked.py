#!/usr/bin/env python3
"""Fails when Cargo.lock locks a crates.io release its authors yanked.

Yanking is how crates.io marks a release that must not be used (most security fixes yank the
vulnerable releases). The check reads each locked crate's entry in the crates.io sparse index
(https://index.crates.io, the index cargo itself reads) and looks up the locked version's `yanked`
flag. It complements `cargo deny check advisories`, whose RustSec database (a git repository on
github.com) CI cannot always reach (README, Supply chain).

Usage: .ci/yanked.py [Cargo.lock]   exit 0: none yanked; 1: some yanked (listed); 2: could not check
"""

import concurrent.futures
import json
import sys
import time
import tomllib
import urllib.error
import urllib.request

CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"
INDEX = "https://index.crates.io"
ATTEMPTS = 4


def index_path(name: str) -> str:
    """The sparse index's path of a crate (the layout cargo's registry index uses)."""
    lower = name.lower()
    if len(lower) <= 2:
        return f"{len(lower)}/{lower}"
    if len(lower) == 3:
        return f"3/{lower[0]}/{lower}"
    return f"{lower[0:2]}/{lower[2:4]}/{lower}"


def fetch(name: str) -> str:
    url = f"{INDEX}/{index_path(name)}"
    last = None
    for attempt in range(ATTEMPTS):
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "cachew-rs-ci (yanked check)"})
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.read().decode("utf-8")
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            last = e
            time.sleep(0.5 * 2**attempt)
    raise RuntimeError(f"{url}: {last}")


def yanked(name: str, version: str) -> bool:
    """Whether crates.io lists `name` `version` as yanked; an error if it does not list it."""
    for line in fetch(name).splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        if entry.get("vers") == version:
            return bool(entry.get("yanked", False))
    raise RuntimeError(f"crates.io's index has no {name} {version}")


def main() -> int:
    lock_path = sys.argv[1] if len(sys.argv) > 1 else "Cargo.lock"
    with open(lock_path, "rb") as f:
        lock = tomllib.load(f)
    locked = sorted(
        {(p["name"], p["version"]) for p in lock.get("package", []) if p.get("source") == CRATES_IO}
    )
    if not locked:
        print(f"error: {lock_path} locks no crates.io package", file=sys.stderr)
        return 2
    found, errors = [], []
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        futures = {pool.submit(yanked, n, v): (n, v) for n, v in locked}
        for future in concurrent.futures.as_completed(futures):
            name, version = futures[future]
            try:
                if future.result():
                    found.append(f"{name} {version}")
            except Exception as e:  # noqa: BLE001 (each crate's failure is reported)
                errors.append(f"{name} {version}: {e}")
    if errors:
        print("error: the yanked check could not read crates.io's index:", file=sys.stderr)
        for e in sorted(errors):
            print(f"  {e}", file=sys.stderr)
        return 2
    if found:
        print("error: Cargo.lock locks releases crates.io lists as yanked:", file=sys.stderr)
        for f in sorted(found):
            print(f"  {f}", file=sys.stderr)
        print("  (`cargo update -p NAME` moves to a release that is not yanked)", file=sys.stderr)
        return 1
    print(f"yanked check: none of the {len(locked)} crates.io releases in {lock_path} is yanked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
