"""Plotly figures for the Training page, built from plain rows (ui.queries), so each is
tested without Streamlit."""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Optional, Sequence

import plotly.graph_objects as go

_LAYOUT = dict(margin=dict(l=40, r=10, t=40, b=40), height=320, legend=dict(orientation="h", y=-0.25))


def _fig(title: str, x: str, y: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, **_LAYOUT)
    return fig


def success_vs_episodes(curve: Sequence[dict[str, Any]], title: str = "Success vs practice episodes",
                        evaluated: Optional[Sequence[dict[str, Any]]] = None) -> go.Figure:
    """Blocks of practice episodes (the sampling policy, judged by the detector or an override;
    ground truth dotted) and ``evaluated`` (ui.queries.evaluated_points): the greedy evaluations
    of checkpoints on fixed seeds with their 95 % intervals, the policy's actual progress."""
    fig = _fig(title, "practice episodes", "success rate")
    full, partial = _split_blocks(curve)
    xs = [c["episodes"] for c in full]
    fig.add_scatter(x=xs, y=[c["success"] for c in full], mode="lines+markers",
                    name="practice (detector, or override)")
    if any(c["gt_success"] is not None for c in full):
        fig.add_scatter(x=xs, y=[c["gt_success"] for c in full], mode="lines", line=dict(dash="dot"),
                        name="practice, ground truth")
    _add_partial(fig, partial, "success")
    if evaluated:
        pts = sorted(evaluated, key=lambda p: p["episodes"])
        fig.add_scatter(x=[p["episodes"] for p in pts], y=[p["success"] for p in pts], mode="lines+markers",
                        name="evaluated (greedy, fixed seeds)", line=dict(width=3),
                        text=[f"checkpoint #{p['checkpoint_id']}, n={p['n']}" for p in pts],
                        error_y=dict(type="data", symmetric=False,
                                     array=[(p["hi"] - p["success"]) if p["hi"] is not None else 0 for p in pts],
                                     arrayminus=[(p["success"] - p["lo"]) if p["lo"] is not None else 0
                                                 for p in pts]))
    fig.update_yaxes(range=[0, 1])
    return fig


def success_by_checkpoint(stats: Iterable[Any], evaluated: Optional[dict[int, tuple[float, Optional[int]]]] = None
                          ) -> go.Figure:
    """Bars per checkpoint from storage's SuccessStats (detector/override rate and ground truth),
    and ``evaluated`` {checkpoint id: (success, episodes)}: the greedy evaluations on fixed seeds
    (the practice job's every few iterations), a line across the bars. Practice episodes sample
    from the policy and a block of them is small; the evaluations are what shows a trend."""
    stats = list(stats)
    fig = _fig("Success per checkpoint", "checkpoint", "success rate")
    labels = [f"#{st.checkpoint_id}" if st.checkpoint_id is not None else "none" for st in stats]
    fig.add_bar(x=labels, y=[st.rate for st in stats], name="success",
                text=[f"n={st.episodes}" for st in stats])
    if any(st.gt_rate is not None for st in stats):
        fig.add_bar(x=labels, y=[st.gt_rate for st in stats], name="ground truth")
    if evaluated:
        ids = sorted(evaluated)
        fig.add_scatter(x=[f"#{i}" for i in ids], y=[evaluated[i][0] for i in ids], mode="lines+markers",
                        name="evaluated (greedy, fixed seeds)",
                        text=[f"n={evaluated[i][1]}" for i in ids], line=dict(width=3))
    fig.update_yaxes(range=[0, 1])
    return fig


def evaluated_checkpoints(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """Every evaluated checkpoint of a task (ui.evaluation.evaluated_rows), oldest first: its
    success with the 95 % interval, one trace per set of seeds (figures on different seeds are
    not paired; their intervals alone say whether two differ)."""
    fig = _fig("Evaluated checkpoints, 95 % intervals", "checkpoint", "success rate")
    labels = [f"{r['checkpoint']} {r['origin']}" for r in rows]
    for seeds in dict.fromkeys(r["seeds"] for r in rows):
        pts = [(lab, r) for lab, r in zip(labels, rows) if r["seeds"] == seeds]
        fig.add_scatter(x=[lab for lab, _ in pts], y=[r["success"] for _, r in pts], mode="markers",
                        marker=dict(size=10), name=f"{seeds} seeds" if seeds != "-" else "seeds not recorded",
                        text=[f"n={r['episodes']}" for _, r in pts],
                        error_y=dict(type="data", symmetric=False,
                                     array=[(r["hi"] - r["success"]) if r["hi"] is not None else 0 for _, r in pts],
                                     arrayminus=[(r["success"] - r["lo"]) if r["lo"] is not None else 0
                                                 for _, r in pts]))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels)
    fig.update_yaxes(range=[0, 1])
    return fig


def returns(curve: Sequence[dict[str, Any]]) -> go.Figure:
    fig = _fig("Mean return per block of episodes", "practice episodes", "return")
    full, partial = _split_blocks(curve)
    fig.add_scatter(x=[c["episodes"] for c in full], y=[c["mean_return"] for c in full], mode="lines+markers",
                    name="mean return")
    _add_partial(fig, partial, "mean_return")
    return fig


def _split_blocks(curve: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Full blocks (the trend) and the block still filling (blocks without the flag count as full)."""
    full = [c for c in curve if c.get("complete", True)]
    return full, [c for c in curve if not c.get("complete", True)]


def _add_partial(fig: go.Figure, partial: list[dict[str, Any]], key: str) -> None:
    """The block still filling: a hollow marker off the line, its size in the legend, so a
    handful of episodes does not read as a collapse (or a jump) of the trend."""
    for c in partial:
        if c.get(key) is not None:
            fig.add_scatter(x=[c["episodes"]], y=[c[key]], mode="markers",
                            marker=dict(symbol="circle-open", size=10), name=f"block in progress (n={c['n']})")


def series(named: dict[str, list[tuple[float, float]]], title: str, x: str = "step", y: str = "value") -> go.Figure:
    fig = _fig(title, x, y)
    for name, pts in named.items():
        fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name=name)
    return fig


def detector_quality(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """rows: {checkpoint, precision, recall, n}."""
    fig = _fig("Detector vs human labels", "checkpoint", "")
    labels = [r["checkpoint"] for r in rows]
    fig.add_bar(x=labels, y=[r["precision"] for r in rows], name="precision",
                text=[f"n={r['n']}" for r in rows])
    fig.add_bar(x=labels, y=[r["recall"] for r in rows], name="recall")
    fig.update_yaxes(range=[0, 1])
    return fig


def threshold_sweep(rows: Sequence[dict[str, Any]], current: Optional[float] = None,
                    best: Optional[float] = None) -> go.Figure:
    """Precision and recall of the detector replayed at each s on people-judged episodes
    (core.method.detector.sweep_judged rows), with the s in use and the suggested one marked."""
    fig = _fig("Detector vs people's labels, by threshold s", "threshold s (steps-to-go)", "")
    xs = [r["threshold"] for r in rows]
    fig.add_scatter(x=xs, y=[r["precision"] for r in rows], mode="lines+markers", name="precision")
    fig.add_scatter(x=xs, y=[r["recall"] for r in rows], mode="lines+markers", name="recall")
    n = max((int(r["tp"]) + int(r["fp"]) + int(r["fn"]) + int(r["tn"]) + int(r["censored"]) for r in rows), default=0)
    if n:
        fig.add_scatter(x=xs, y=[int(r["censored"]) / n for r in rows], mode="lines", line=dict(dash="dot"),
                        name="share it cannot tell (ended earlier)")
    if current is not None and best is not None and abs(current - best) < 1e-9:
        fig.add_vline(x=best, line_dash="solid", annotation_text=f"in use and suggested: {best:g}")
    else:
        for x, label, dash, where in ((current, "in use", "dash", "bottom right"),
                                      (best, "suggested", "solid", "top right")):
            if x is not None:  # labels at opposite ends, so two close lines do not overwrite each other
                fig.add_vline(x=x, line_dash=dash, annotation_text=f"{label}: {x:g}", annotation_position=where)
    fig.update_yaxes(range=[0, 1.05])
    return fig


def effort_and_gain(effort: Sequence[tuple[dt.datetime, int, int]],
                    per_hour: Sequence[tuple[dt.datetime, int, int]]) -> go.Figure:
    """Human effort (overrides + labels per hour, bars) beside the success rate per hour (line)."""
    fig = _fig("Human effort and success per hour", "hour (UTC)", "actions per hour")
    fig.add_bar(x=[h for h, _, _ in effort], y=[o for _, o, _ in effort], name="overrides")
    fig.add_bar(x=[h for h, _, _ in effort], y=[lab for _, _, lab in effort], name="labels")
    fig.add_scatter(x=[h for h, _, _ in per_hour], y=[(k / n) if n else None for _, n, k in per_hour],
                    name="success rate", yaxis="y2", mode="lines+markers")
    fig.update_layout(barmode="stack", yaxis2=dict(title="success rate", overlaying="y", side="right",
                                                   range=[0, 1]))
    fig.update_traces(width=0.8 * 3600 * 1000, selector=dict(type="bar"))  # an hour's bar (date axis: ms), not a hairline
    hours = sorted({h for h, _, _ in effort} | {h for h, _, _ in per_hour})
    if hours:  # whole hours on the axis (one point alone got a sub-millisecond range)
        fig.update_xaxes(type="date", tickformat="%d %b %H:%M",
                         range=[hours[0] - dt.timedelta(minutes=30), hours[-1] + dt.timedelta(minutes=30)])
    return fig


def success_gain(curve: Sequence[dict[str, Any]]) -> Optional[float]:
    """Success of the last block minus the first (None with fewer than two blocks)."""
    known = [c["success"] for c in curve if c["success"] is not None]
    return known[-1] - known[0] if len(known) >= 2 else None
