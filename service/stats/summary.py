"""The `summary` of /stats: the significant findings as plain sentences, in order, with their numbers."""

from __future__ import annotations

from collections.abc import Sequence

from service.stats.findings import FALSE_DISCOVERY_RATE, Finding, FindingKind

SUMMARY_FINDINGS = 5
"""At most this many findings are stated (the strongest); `findings` has the rest."""


def _finding_sentence(finding: Finding) -> str:
    others = finding.success_rate_others or 0.0
    if finding.kind is FindingKind.CHANGE:
        sentence = (
            f"{finding.description}: {finding.success_rate:.2f} succeeded against {others:.2f} before "
            f"({finding.match_count:,} and {finding.others_count:,} attempts)."
        )
    else:
        interval = finding.difference_interval
        bounds = f"; 95 % interval {interval.low * 100:+.0f} to {interval.high * 100:+.0f}" if interval else ""
        sentence = (
            f"{finding.description}: {finding.success_rate:.2f} of {finding.match_count:,} attempts succeeded "
            f"against {others:.2f} of the other {finding.others_count:,} "
            f"({finding.difference * 100:+.0f} points{bounds})."
        )
    if finding.same_attempts:
        sentence += f" The same attempts: {'; '.join(finding.same_attempts)}."
    return sentence


def summarize(
    findings: Sequence[Finding], *, finished_attempts: int, overall_success_rate: float, hypotheses: int
) -> list[str]:
    significant = [f for f in findings if f.significant]
    percent = f"{FALSE_DISCOVERY_RATE:.0%}".replace("%", " %")
    lines = [
        f"{finished_attempts:,} finished attempts, {overall_success_rate:.2f} of them succeeded; "
        f"{len(significant)} of {hypotheses} hypotheses tested stand out at a {percent} false-discovery rate."
    ]
    if not significant:
        lines.append("Nothing goes with success or failure beyond what chance explains.")
    lines += [_finding_sentence(f) for f in significant[:SUMMARY_FINDINGS]]
    lines += [
        f"{f.description} ({f.success_rate:.2f}) is explained by {f.explained_by}: within it the difference "
        f"vanishes (p = {f.stratified_p_value:.2f})."
        for f in findings
        if f.explained_by is not None and f.stratified_p_value is not None
    ][:SUMMARY_FINDINGS]
    return lines
