#!/usr/bin/env python3
"""Code a request touches, from two callgrind runs made with --dump-instr=yes (N and 3N requests).

Usage: footprint.py ONE THREE N

A 64-byte line of code counts when the extra 2N requests of the second run executed its
instructions at least N times (on average every other request, at least once): the code every
request runs through. Prints the lines in KB, the 4 KB pages they lie on, and where they are: by
object file, and by crate (the function each line belongs to; a C function's own name). Called by
instructions.sh --footprint.
"""
import collections
import re
import sys


def costs(path):
    """Instructions executed per (object, address), and the function of each address."""
    executed, function = collections.Counter(), {}
    obj = fn = ""
    after_call = False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("ob="):
                obj = line[3:].strip()
            elif line.startswith("fn="):
                fn = line[3:].strip()
            elif line.startswith("calls="):
                after_call = True  # the next cost line is the call's inclusive cost
            elif line.startswith("0x"):
                if after_call:
                    after_call = False
                    continue
                fields = line.split()  # address, source line, instructions
                if len(fields) > 2:
                    key = (obj, int(fields[0], 16))
                    executed[key] += int(fields[2])
                    function[key] = fn
    return executed, function


def crate(fn):
    m = re.match(r"<?([A-Za-z_][A-Za-z0-9_]*)::", fn)
    return m.group(1) if m else fn.split("/")[-1][:32]


def main():
    one, _ = costs(sys.argv[1])
    three, function = costs(sys.argv[2])
    n = int(sys.argv[3])
    lines, owner = collections.Counter(), {}
    for key, count in three.items():
        extra = count - one.get(key, 0)
        if extra > 0:
            line = (key[0], key[1] // 64)
            lines[line] += extra
            owner.setdefault(line, function[key])
    touched = [line for line, count in lines.items() if count >= n]
    pages = {(obj, line * 64 // 4096) for obj, line in touched}
    print(f"code per request: {len(touched)} lines of 64 bytes ({len(touched) * 64 / 1024:.1f} KB) on {len(pages)} pages of 4 KB")
    by_object = collections.Counter(obj.split("/")[-1] for obj, _ in touched)
    print("  by object: " + ", ".join(f"{o} {k * 64 / 1024:.1f} KB" for o, k in by_object.most_common(4)))
    by_crate = collections.Counter(crate(owner[line]) for line in touched)
    print("  by crate (or C function): " + ", ".join(f"{c} {k * 64 / 1024:.1f} KB" for c, k in by_crate.most_common(8)))


if __name__ == "__main__":
    main()
