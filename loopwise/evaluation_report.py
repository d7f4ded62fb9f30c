"""The evaluation of a project's review as text and as a self-contained HTML report.

The figures come from :func:`services.quality.service.evaluation_of` (the stored label
events alone); this module only presents them. The HTML report embeds its plots as
inline SVG (matplotlib), so it reads offline, from a file, with no network.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

__all__ = ["render_text", "write_report"]


def _pct(rate: dict[str, Any]) -> str:
    if not rate or rate.get("rate") is None:
        return "—"
    low, high = rate["interval"]
    return f"{rate['rate']:.1%} [{low:.1%}, {high:.1%}] (n={rate['n']})"


def render_text(result: dict[str, Any]) -> str:
    """A plain summary: before review, each stage with its verdict, per labeler."""
    before = result["before_review"]
    lines = [
        f"project {result['project']}: {result['label_events']:,} label events, "
        f"{result['gold_items']} gold items, {result['audited_items']} audited items",
        "",
        "Label error before review",
        f"  model on gold            {_pct(before['model_on_gold'])}",
        f"  auto labels on audits    {_pct(before['auto_labels_on_audits'])}",
        "",
        "Stages (paired on gold items; planted gold excluded)",
    ]
    for name, stage in result["stages"].items():
        lines += [
            f"  {name}",
            f"    error before {_pct(stage['before'])} -> after {_pct(stage['after'])}",
            f"    errors caught {stage['errors_caught']}, introduced "
            f"{stage['errors_introduced']}; {stage['human_hours']:.2f} human hours",
            f"    verdict: {stage['verdict']} ({stage['test']}, p = {stage['p_value']:.3g})",
        ]
        if "cost" in stage:
            lines.append(f"    COST: {stage['cost']}")
    lines += ["", *_comparison_text(result.get("model_comparison"))]
    correction = result["correction"]
    lines += [
        "",
        f"Prelabel correction rate {_pct(correction['correction_rate'])} next to the "
        f"model's real error rate {_pct(correction['model_error_rate'])}",
        "",
        "Labelers (first answers)",
    ]
    for who, figures in result["labelers"].items():
        catch = figures["gold_catch"]
        catch_text = (f"{catch['catch_rate']:.0%} of {catch['planted']}"
                      if catch["catch_rate"] is not None else "—")
        accuracy = figures["gold_accuracy"]["rate"]
        correction_rate = figures["correction_rate"]
        lines.append(
            f"  {who:20s} labels {figures['labels']:6d}  gold accuracy "
            f"{'—' if accuracy is None else f'{accuracy:.0%}'}  planted caught {catch_text}  "
            f"correction {'—' if correction_rate is None else f'{correction_rate:.0%}'}")
    return "\n".join(lines)


ARMS = (("loop", "loop's labels"), ("single_unreviewed", "single unreviewed labels"),
        ("auto_only", "auto labels only"))


def _comparison_text(comparison: dict[str, Any] | None) -> list[str]:
    """The model on the loop's labels against its baselines, at the full budget."""
    if not comparison or not comparison.get("available"):
        reason = (comparison or {}).get("reason", "not computed")
        return [f"Model trained on the loop's labels vs baselines: none ({reason})"]
    arms = comparison["arms"]
    lines = [f"Model trained on the loop's labels vs baselines (budget {comparison['budget']} "
             f"labeled items; accuracy on {comparison['gold_items']} held-out gold items)"]
    for key, name in ARMS:
        arm = arms[key]
        versus = arm.get("versus_loop")
        tail = (f"; loop: {versus['verdict']} (p = {versus['p_value']:.3g})"
                if versus else "")
        accuracy = arm["accuracy"]
        lines.append(f"  {name:26s} {_pct(accuracy) if accuracy else '—'} "
                     f"({arm['labels']} labels){tail}")
    order = arms["random_sampling"]
    area = order.get("area_under_curve")
    if area:
        low_high = order["difference"]["interval"]
        spread = (f" [{low_high[0]:+.3f}, {low_high[1]:+.3f}]" if low_high else "")
        lines.append(f"  {'random order (' + str(order['seeds']) + ' seeds)':26s} area under "
                     f"the learning curve {area['random_mean']:.3f} against the loop's "
                     f"{area['loop']:.3f} (difference {order['difference']['mean']:+.3f}"
                     f"{spread}): {order['verdict']}")
    return lines


# --------------------------------------------------------------------------- HTML


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog: inline in the page


def _error_by_stage(result: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    stages = [(n, s) for n, s in result["stages"].items() if s["after"]["rate"] is not None]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = ["model (before review)"] + [n for n, _ in stages]
    model = result["before_review"]["model_on_gold"]
    rates = [model["rate"] or 0.0] + [s["after"]["rate"] for _, s in stages]
    intervals = [model["interval"] or (0.0, 0.0)] + [s["after"]["interval"] for _, s in stages]
    low = [r - i[0] for r, i in zip(rates, intervals, strict=True)]
    high = [i[1] - r for r, i in zip(rates, intervals, strict=True)]
    ax.barh(names, rates, xerr=[low, high], color="#4c78a8", capsize=3)
    ax.invert_yaxis()
    ax.set_xlabel("label error on gold (95% interval)")
    ax.set_title("Label error by stage and mode")
    return _svg(fig)


def _over_time(result: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    days = result["over_time"]["by_day"]
    fig, ax = plt.subplots(figsize=(7, 3))
    x = [d["day"] for d in days]
    ax.plot(x, [d["agreement"] for d in days], marker="o", label="pairwise agreement")
    ax.plot(x, [d["gold_catch"]["catch_rate"] for d in days], marker="s",
            label="planted gold caught")
    ax.set_ylim(0, 1.05)
    ax.set_title("Agreement and gold catch rate by day")
    ax.legend(loc="lower right")
    fig.autofmt_xdate()
    return _svg(fig)


def _labelers(result: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    labelers = result["labelers"]
    names = list(labelers)
    catch = [labelers[n]["gold_catch"]["catch_rate"] or 0.0 for n in names]
    correction = [labelers[n]["correction_rate"] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.35 * len(names) + 1)))
    ys = range(len(names))
    ax.barh([y - 0.2 for y in ys], catch, height=0.4, label="planted gold caught")
    ax.barh([y + 0.2 for y in ys], correction, height=0.4, label="pre-labels corrected")
    model_error = result["correction"]["model_error_rate"]["rate"]
    if model_error is not None:
        ax.axvline(model_error, color="#e45756", linestyle="--", label="model's real error")
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_title("Per labeler: catch and correction rates")
    ax.legend(loc="lower right", fontsize=8)
    return _svg(fig)


def _learning_curves(comparison: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    curves = comparison["curves"]
    budgets = curves["budgets"]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for key, name in ARMS:
        points = [(b, a) for b, a in zip(budgets, curves[key], strict=True) if a is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
    random_points = [(b, p) for b, p in zip(budgets, curves["random_sampling"], strict=True)
                     if p is not None]
    if random_points:
        xs = [b for b, _ in random_points]
        means = [p["mean"] for _, p in random_points]
        ax.plot(xs, means, marker="s", linestyle="--", label="loop's labels, random order")
        bands = [(b, p["interval"]) for b, p in random_points if p["interval"]]
        if bands:
            ax.fill_between([b for b, _ in bands], [iv[0] for _, iv in bands],
                            [iv[1] for _, iv in bands], alpha=0.2, color="#999999")
    ax.set_xlabel("labeled items trained on")
    ax.set_ylabel("accuracy on held-out gold")
    ax.set_title("Learning curves: the loop against the baselines")
    ax.legend(loc="lower right", fontsize=8)
    return _svg(fig)


def _comparison_table(comparison: dict[str, Any] | None) -> str:
    if not comparison or not comparison.get("available"):
        reason = (comparison or {}).get("reason", "not computed")
        return (f"<p id='model-comparison'>No model comparison: "
                f"{html.escape(str(reason))}</p>")
    rows = []
    for key, name in ARMS:
        arm = comparison["arms"][key]
        versus = arm.get("versus_loop")
        verdict = (f"{html.escape(versus['verdict'])} (p = {versus['p_value']:.3g})"
                   if versus else "—")
        accuracy = arm["accuracy"]
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{arm['labels']}</td>"
                    f"<td>{_pct(accuracy) if accuracy else '—'}</td><td>{verdict}</td></tr>")
    order = comparison["arms"]["random_sampling"]
    if order.get("area_under_curve"):
        rows.append(f"<tr><td>loop's labels, random order ({order['seeds']} seeds)</td>"
                    f"<td>{comparison['budget']}</td><td>area under curve "
                    f"{order['area_under_curve']['random_mean']:.3f} (loop's order "
                    f"{order['area_under_curve']['loop']:.3f})</td>"
                    f"<td>{html.escape(order['verdict'])}</td></tr>")
    return ("<table id='model-comparison'><tr><th>trained on</th><th>labels</th>"
            "<th>accuracy on held-out gold</th><th>against the loop</th></tr>"
            + "".join(rows) + "</table>")


def write_report(result: dict[str, Any], directory: Path) -> Path:
    """Write ``index.html`` (plots inline, no external resource) into ``directory``."""
    import matplotlib

    matplotlib.use("Agg")
    directory.mkdir(parents=True, exist_ok=True)
    plots = [("error-by-stage", _error_by_stage(result)),
             ("over-time", _over_time(result)),
             ("labelers", _labelers(result))]
    comparison = result.get("model_comparison")
    if comparison and comparison.get("available"):
        plots.insert(1, ("learning-curves", _learning_curves(comparison)))
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_pct(s['before'])}</td>"
        f"<td>{_pct(s['after'])}</td><td>{s['errors_caught']}</td>"
        f"<td>{s['errors_introduced']}</td><td>{s['human_hours']:.2f}</td>"
        f"<td class='verdict'>{html.escape(s['verdict'])} (p = {s['p_value']:.3g})"
        f"{'<br><b>cost</b>' if 'cost' in s else ''}</td></tr>"
        for name, s in result["stages"].items())
    figures = "".join(f"<figure id='{key}' class='plot'>{svg}</figure>" for key, svg in plots)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>loopwise evaluation: {html.escape(result['project'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .3rem; }}
figure.plot svg {{ max-width: 100%; height: auto; }}
</style></head><body>
<h1>Does review pay? Project {html.escape(result['project'])}</h1>
<p>{result['label_events']:,} label events, {result['gold_items']} gold items,
{result['audited_items']} audited items. Figures from the stored label events alone.</p>
<h2>Stages</h2>
<table id="stages"><tr><th>stage</th><th>error before</th><th>error after</th>
<th>caught</th><th>introduced</th><th>human hours</th><th>verdict</th></tr>{rows}</table>
<h2>The model trained on the loop's labels against baselines</h2>
<p>Each refitted by the scorer from the same stored items and labels, gold held out of
every training set.</p>
{_comparison_table(comparison)}
<pre id="summary">{html.escape(render_text(result))}</pre>
{figures}
</body></html>
"""
    path = directory / "index.html"
    path.write_text(page)
    return path
