"""Self cost per request by function from callgrind output files (bench/profile.sh).

Usage: cgself.py REQUESTS FILE            top functions by own instructions per request
       cgself.py REQUESTS BASE FILE       the functions whose own cost changed most, FILE - BASE

Self cost is what a function executes itself, without its callees. callgrind_annotate's own
self view is unreliable for dumps taken after `callgrind_control -z`, hence this reader.
"""
import collections
import re
import sys

NAME = re.compile(r"(c?fn)=\((\d+)\)(?: (.*))?")


def self_costs(path):
    names, costs = {}, collections.Counter()
    current, after_call = None, False
    with open(path, errors="replace") as f:
        for line in f:
            m = NAME.match(line)
            if m:
                if m.group(3):
                    names[m.group(2)] = m.group(3).strip()
                if m.group(1) == "fn":
                    current = names.get(m.group(2), m.group(2))
                    after_call = False
                continue
            if line.startswith("calls="):
                after_call = True  # the next cost line is the call's inclusive cost
                continue
            if line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                    continue
                parts = line.split()
                if len(parts) >= 2 and current is not None:
                    costs[current] += int(parts[1])
    return costs


def main():
    n = int(sys.argv[1])
    if len(sys.argv) == 3:
        costs = self_costs(sys.argv[2])
        print(f"{sum(costs.values()) / n:10.0f}  instructions per request (all functions)")
        for name, c in costs.most_common(30):
            print(f"{c / n:10.0f}  {name[:140]}")
        return
    base, new = self_costs(sys.argv[2]), self_costs(sys.argv[3])
    print(f"per request: {sum(base.values()) / n:.0f} -> {sum(new.values()) / n:.0f} instructions")
    delta = {k: new.get(k, 0) - base.get(k, 0) for k in set(base) | set(new)}
    for name, d in sorted(delta.items(), key=lambda kv: -abs(kv[1]))[:30]:
        print(f"{d / n:+9.0f} {base.get(name, 0) / n:9.0f} {new.get(name, 0) / n:9.0f}  {name[:120]}")


if __name__ == "__main__":
    main()
