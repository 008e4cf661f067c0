"""CLI commands for keeping a home healthy: verify (and repair) the cache and the heads, forget a dataset, prune
the cache."""

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

    p = sub.add_parser("prune", parents=[common], help="delete cached features that no dataset needs")
    p.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    p.set_defaults(func=cmd_prune)


def datasets_rm_parser(dsub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    r = dsub.add_parser("rm", parents=[common],
                        help="forget a dataset (its cached vectors stay until `headstart prune`, or --prune)")
    r.add_argument("name")
    r.add_argument("--prune", action="store_true", help="then delete the cached features no dataset needs")
    r.set_defaults(func=cmd_datasets_rm)


def remove_dataset(store, name: str, also_prune: bool) -> dict:
    """`datasets rm` and `DELETE /datasets/{name}`: forget the dataset (extractor.prune.forget_dataset), name the
    heads trained on it, and with `also_prune` prune the cache."""
    from classifiers.persist import heads_dir, list_heads
    from extractor.prune import forget_dataset, prune

    result = forget_dataset(store, name)
    result["heads"] = sorted(m["name"] for m in list_heads(heads_dir(store)) if m.get("dataset") == name)
    if also_prune:
        result["pruned"] = prune(store)
    return result


def cmd_datasets_rm(args: argparse.Namespace) -> int:
    result = remove_dataset(existing_store(args.home), args.name, args.prune)
    lines = [f"forgot dataset {args.name!r}"]
    if result["heads"]:
        lines.append(f"heads trained on it still predict images: {', '.join(result['heads'])} (evaluating them on "
                     f"it needs it extracted again)")
    if args.prune:
        lines.append(_pruned(result["pruned"]))
    elif result["vectors_only_its"]:
        lines.append(f"{result['vectors_only_its']} cached vectors were its alone; they stay (an extract of the same "
                     f"images finds them) until `headstart prune` deletes what no dataset needs")
    emit(args, result, "\n".join(lines))
    return 1 if result.get("pruned", {}).get("busy") else 0


def cmd_prune(args: argparse.Namespace) -> int:
    from extractor.prune import prune

    report = prune(existing_store(args.home), dry_run=args.dry_run)
    emit(args, report, _pruned(report))
    return 1 if report["busy"] else 0


def _pruned(report: dict) -> str:
    verb = "would delete" if report["dry_run"] else "deleted"
    lines = [f"{verb} {report['shards']} shard files ({report['vectors']} vectors, {report['bytes'] / 2**20:.1f} MiB) "
             f"that no dataset needs, and {report['file_hashes']} remembered hashes of files below no dataset's "
             f"folder"]
    if report["unused_rows_kept"]:
        lines.append(f"{report['unused_rows_kept']} vectors no dataset needs stay, in shards that also hold vectors a "
                     f"dataset needs (a shard is deleted whole)")
    lines += [f"skipped {fp}: an extraction is writing it; run prune again after it" for fp in report["busy"]]
    return "\n".join(lines)


def cmd_verify(args: argparse.Namespace) -> int:
    from classifiers.persist import clean_leftovers, heads_dir, list_heads
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
