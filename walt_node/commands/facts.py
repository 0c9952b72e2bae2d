"""`walt-node facts`: print what walt-node knows about this node, with sources."""

from __future__ import annotations

import argparse
import json

from walt_node.facts import FactInvalid, FactMissing, NodeFacts

DESCRIPTION = """\
Print the node facts walt-node reads (server IP, ports, model, MAC, image id,
boot mode, hostname) and the source each came from: environment variables,
/bin/walt-env, /proc/cmdline, the route to the server, or WalT defaults.
Unknown facts are listed with every source tried. Exits 1 if any is unknown."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON object instead")


def run(args: argparse.Namespace) -> int:
    facts = NodeFacts()
    found, problems = {}, {}
    for name in NodeFacts.FACT_NAMES:
        try:
            fact = facts.fact(name)
            found[name] = {"value": fact.value, "source": fact.source}
        except (FactMissing, FactInvalid) as error:
            problems[name] = str(error)
    if args.json:
        print(json.dumps({"facts": found, "problems": problems}, indent=2))
    else:
        for name, fact in found.items():
            print(f"{name:<10} {fact['value']:<20} ({fact['source']})")
        for name, problem in problems.items():
            print(f"{name:<10} ?  {problem}")
    return 1 if problems else 0
