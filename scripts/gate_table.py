#!/usr/bin/env python3
"""Summarise gate reports (reports/MODEL/GATE.json) as Markdown tables for docs/results.md."""
import json, os, sys

def fmt(v):
    if v is None: return "-"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5): return "%.2e" % v
        return "%.4g" % v
    return str(v)

root = sys.argv[1] if len(sys.argv) > 1 else "reports"
for model in sorted(os.listdir(root)):
    d = os.path.join(root, model)
    if not os.path.isdir(d): continue
    print("\n### %s\n\n| gate | measured (threshold) | verdict |\n|---|---|---|" % model)
    for g in ["A1","A2","A3","A4","A5","B1","B2","B3","B4","B5","C1"]:
        p = os.path.join(d, g + ".json")
        if not os.path.exists(p): continue
        r = json.load(open(p))
        parts = []
        for c in r["checks"]:
            if c["verdict"] == "not-run":
                parts.append("%s: not run" % c["what"])
            else:
                parts.append("%s: **%s** (%s %s)" % (c["what"], fmt(c["value"]), c["op"], fmt(c["threshold"])))
        if not parts: parts.append(r["reason"])
        print("| %s | %s | %s |" % (g, "<br>".join(parts).replace("|", "\\|"), r["verdict"]))
