"""CLI command for keeping a home healthy: verify (and repair) the cache and the heads."""

from __future__ import annotations

import argparse

from service.cli import emit, existing_store


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("verify", parents=[common],
                       help="read every cached shard and head against the catalog; --repair drops what is damaged")
    p.add_argument("--repair", action="store_true",
                   help="drop damaged shards from the catalog (the next extract computes them again) and delete "
                        "leftover files")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from classifiers.persist import clean_leftovers, list_heads
    from classifiers.training import heads_dir
    from extractor.verify import verify

    store = existing_store(args.home)
    report = verify(store, repair=args.repair)
    bad_heads = [h for h in list_heads(heads_dir(store)) if "error" in h]
    report["heads_damaged"] = bad_heads
    if args.repair:
        report["heads_leftovers_removed"] = clean_leftovers(heads_dir(store))
    lines = [f"checked {report['shards']} shards ({report['vectors']} vectors) and the heads"]
    lines += [f"  damaged shard {d['file']} ({d['rows']} vectors): {d['problem']}" for d in report["damaged"]]
    lines += [f"  leftover file {p}" for p in report["leftovers"]]
    lines += [f"  head {h['name']}: {h['error']}" for h in bad_heads]
    problems = bool(report["damaged"] or report["leftovers"])
    if args.repair:
        if problems:
            lines.append(f"repaired: dropped {report['dropped_vectors']} vectors from the catalog (the next extract "
                         f"of their datasets computes them again) and deleted {len(report['leftovers'])} leftover "
                         f"files")
        lines += [f"  skipped {fp}: an extraction is writing it; run verify again after it" for fp in report["busy"]]
    elif problems:
        lines.append("run `headstart verify --repair` to drop the damaged shards and delete the leftovers")
    if not problems and not bad_heads:
        lines.append("no problems found")
    if bad_heads:
        lines.append("a damaged head is not repaired: `headstart heads rollback NAME` or `headstart heads rm NAME`")
    emit(args, report, "\n".join(lines))
    unresolved = (problems and not args.repair) or bool(report["busy"]) or bool(bad_heads)
    return 1 if unresolved else 0
