"""Extra results.md sections driven by row fields: a row with ``tables = ["ablation", ...]``
also appears in one table per name, with its loss terms, CPU inference time and the
discriminator's last-epoch accuracies when it has them, beside the paper's figures for the
same label (``[paper] label = { test_err, infer_s, params }``). ``[paper.tables.NAME]``
gives a table's ``title``, ``text`` (the paper's own table, printed under ours) and
optionally ``rows`` (label -> paper figures for this table only, instead of ``[paper]``'s);
tables come in the order of ``[paper.tables]``, then of first appearance."""
from __future__ import annotations


def _fmt(v, spec=".2f"):
    return "-" if v is None else (format(v, spec) if isinstance(v, (int, float)) else str(v))


def table_groups(summary: dict) -> list[tuple[str, str, list]]:
    """(name, title, rows) of every named table, in the order of ``[paper.tables]``, then
    of first appearance (results.md's sections and curves.png's panels)."""
    paper = summary.get("paper", {}) or {}
    meta = paper.get("tables", {}) if isinstance(paper.get("tables"), dict) else {}
    order = [name for name in meta if any(name in (r.get("tables") or []) for r in summary["results"])]
    for r in summary["results"]:
        for name in r.get("tables", []) or []:
            if name not in order:
                order.append(name)
    return [(name, (meta.get(name) or {}).get("title", name) if isinstance(meta.get(name), dict) else name,
             [r for r in summary["results"] if name in (r.get("tables") or [])]) for name in order]


def grouped_tables(summary: dict) -> list[str]:
    paper = summary.get("paper", {}) or {}
    meta = paper.get("tables", {}) if isinstance(paper.get("tables"), dict) else {}
    lines = []
    for name, _, rows in table_groups(summary):
        info = meta.get(name, {})
        timed = any("infer_s" in r for r in rows)
        adv = any(r.get("d_log") for r in rows)
        head = ["row", "student objective", "model", "params"]
        head += ["our CPU s / 100", "paper CPU s / 100"] if timed else []
        head += ["paper test err %", "our test err %", "best valid err % (epoch)"]
        head += ["D real / fake acc (last epoch)"] if adv else []
        head += ["wall s"]
        lines += ["", f"## {info.get('title', name)}", "", "| " + " | ".join(head) + " |",
                  "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
        for r in rows:
            p = info["rows"].get(r["label"], {}) if "rows" in info else paper.get(r["label"], {})
            p = p if isinstance(p, dict) else {"test_err": p}
            params = f"{r['params'] / 1e6:.2f}M" + (f" ({p['params']})" if "params" in p else "")
            cells = [r["label"], r.get("losses", r["method"]), r["model"], params]
            if timed:
                cells += [_fmt(r.get("infer_s"), ".3f"), _fmt(p.get("infer_s"))]
            cells += [_fmt(p.get("test_err")), _fmt(r["test_err"]), f"{r['valid_err']:.2f} ({r['best_epoch']})"]
            if adv:
                last = (r.get("d_log") or [{}])[-1]
                cells.append(f"{last['train_d_real_acc']:.2f} / {last['train_d_fake_acc']:.2f}"
                             if "train_d_real_acc" in last else "-")
            cells.append(" + ".join(map(str, r["seconds"])))
            lines.append("| " + " | ".join(cells) + " |")
        if info.get("text"):
            lines += ["", info["text"].rstrip()]
    return lines
